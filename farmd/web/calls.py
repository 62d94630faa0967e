"""One API call as the handlers see it, and the table that declares every endpoint.

Theory of operation
-------------------
An `Endpoint` declares a route once: method, path, its path and query parameters
(`Param`: a type and bounds), its JSON body's schema, the handler and a summary. The
app's routes (`farmd.web.app`) and the OpenAPI document (`farmd.web.openapi`) are both
built from the same table, so the document lists every route and each parameter as it
is checked. A handler receives a `Call`: who asks (already authenticated), the checked
parameters, the body, and `perform`, its one way to the farm: every endpoint builds a
protocol `Request` and hands it to the backend, which answers it as a socket session
would (authorisation, audit, durability). The HTTP layer holds no scheduling rule.

Errors: anything refused is a `FarmdError`; `status_of` maps its wire code to an HTTP
status (`bad_*` 400, `bad_token` 401, `forbidden` 403, `unknown_*` 404, conflicts 409,
`too_large` 413, `unavailable` 503, anything else 500) and the body is always
`{"error": {"code": ..., "message": ...}}`, the message FarmdError's one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
from starlette.requests import Request as HttpRequest

from farmd.core import Principal
from farmd.errors import FarmdError, UserError
from farmd.protocol import Request
from farmd.values import show

MAX_BODY_BYTES: Final = 1 << 20  # a request's JSON body, at most (413 beyond)
MAX_QUERY_CHARS: Final = 4096  # one query parameter's value, at most (400 beyond)

# wire codes whose HTTP status is not the default for their kind (below)
STATUS: Final[Mapping[str, int]] = {
    "bad_token": 401,
    "unauthorized": 401,
    "forbidden": 403,
    "csrf": 403,
    "unknown_job": 404,
    "unknown_worker": 404,
    "unknown_user": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "bad_deployment": 409,
    "name_in_use": 409,
    "too_large": 413,
    "unavailable": 503,
}


class ApiError(FarmdError):
    """A refusal of the HTTP layer itself (no token, a bad query value, a body too
    large...), with its wire code."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


def status_of(exc: FarmdError) -> int:
    """The HTTP status of a refusal with `exc`'s code: `bad_*` and any other user error
    400, a refusal of the farm's own (internal, protocol) 500."""
    code = exc.code
    if code in STATUS:
        return STATUS[code]
    if code.startswith("bad_") or isinstance(exc, UserError):
        return 400
    return 500


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@attrs.frozen(kw_only=True)
class Param:
    """A path or query parameter: `kind` int, number, str or bool; ints within `low`..`high`,
    strings at most `max_chars` long, or one of `choices`."""

    name: str
    kind: str = "int"
    help: str = ""
    low: int = 0
    high: int = 2**63 - 1
    max_chars: int = 256
    choices: tuple[str, ...] = ()
    default: int | str | bool | None = None

    def parse(self, text: str) -> int | float | str | bool:
        """The parameter's value from its text; ApiError (400) naming the parameter."""
        if len(text) > MAX_QUERY_CHARS:
            msg = f"bad {self.name!r}: {len(text)} characters, at most {MAX_QUERY_CHARS}"
            raise ApiError(msg)
        if self.kind == "int":
            if not (text.isascii() and text.lstrip("-").isdigit() and len(text) <= 20):
                msg = f"bad {self.name!r}: {show(text)} is not an integer"
                raise ApiError(msg)
            value = int(text)
            if not self.low <= value <= self.high:
                msg = f"bad {self.name!r}: {value} is not in {self.low}..{self.high}"
                raise ApiError(msg)
            return value
        if self.kind == "number":
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if not (math.isfinite(number) and number >= 0):
                msg = f"bad {self.name!r}: {show(text)} is not a number >= 0"
                raise ApiError(msg)
            return number
        if self.kind == "bool":
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no", ""):
                return False
            msg = f"bad {self.name!r}: {show(text)} is not true or false"
            raise ApiError(msg)
        if len(text) > self.max_chars:
            msg = f"bad {self.name!r}: {len(text)} characters, at most {self.max_chars}"
            raise ApiError(msg)
        if self.choices and text not in self.choices:
            msg = f"bad {self.name!r}: {show(text)} is not one of {', '.join(self.choices)}"
            raise ApiError(msg)
        return text


Handler = Callable[["Call"], Awaitable[Any]]


@attrs.frozen(kw_only=True)
class Endpoint:
    """One route (see module docs). `path` is written as OpenAPI writes it
    (`/api/v1/jobs/{job_id}`); `body` is the name of its JSON body's schema
    (`farmd.web.openapi.SCHEMAS`), None for none; `status` is the status of success."""

    method: str
    path: str
    handler: Handler
    summary: str
    path_params: tuple[Param, ...] = ()
    query: tuple[Param, ...] = ()
    body: str | None = None
    body_required: bool = True
    result: str = "Any"
    status: int = 200


@attrs.define
class Call:
    """An authenticated call to one endpoint, its parameters checked (see module docs)."""

    http: HttpRequest
    who: Principal
    peer: str
    session: int
    params: dict[str, Any]
    body: dict[str, Any]
    perform_request: Callable[[Request, Principal, str, int], Awaitable[Any]]

    async def perform(self, request: Request) -> Any:
        """`request`'s result, answered by the farm as a socket session would be."""
        return await self.perform_request(request, self.who, self.peer, self.session)


def read_params(endpoint: Endpoint, http: HttpRequest) -> dict[str, Any]:
    """The endpoint's path and query parameters, checked; the defaults for those left
    out (a query parameter given twice: the last counts)."""
    values: dict[str, Any] = {}
    for param in endpoint.path_params:
        values[param.name] = param.parse(str(http.path_params[param.name]))
    for param in endpoint.query:
        text = http.query_params.get(param.name)
        values[param.name] = param.default if text is None else param.parse(text)
    return values


def _no_constant(name: str) -> float:
    msg = f"bad JSON body: {name} is not a number JSON allows"
    raise ApiError(msg)


async def read_body(http: HttpRequest, required: bool) -> dict[str, Any]:
    """The request's JSON object body, at most MAX_BODY_BYTES (413 beyond, counted as
    it comes: a client's Content-Length is not trusted); {} for none if not required."""
    length = http.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        msg = f"the request body is {int(length)} bytes, at most {MAX_BODY_BYTES} are accepted"
        raise ApiError(msg, code="too_large")
    chunks = []
    size = 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            msg = f"the request body is over {MAX_BODY_BYTES} bytes, the most accepted"
            raise ApiError(msg, code="too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if required:
            raise ApiError("a JSON object body is required")
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        msg = f"bad JSON body: {exc}"
        raise ApiError(msg) from None
    if not isinstance(body, dict):
        msg = f"bad JSON body: expected an object, got {type(body).__name__}"
        raise ApiError(msg)
    return body


def build(kind: type[Request], fields: Mapping[str, Any], **fixed: Any) -> Request:
    """A protocol request of `kind` from a JSON body's `fields` and the `fixed` ones
    (from the path); an unknown or missing field is refused (400) by name, and a bad
    value by the request's own validators (their `bad field ...` line)."""
    names = {field.name: field for field in attrs.fields(kind)}  # type: ignore[arg-type]
    allowed = sorted(set(names) - {"request_id"} - set(fixed))
    for name in fields:
        if name not in allowed:
            msg = f"unknown field {show(name)} for {kind.TYPE!r} (fields: {', '.join(allowed)})"
            raise ApiError(msg)
    values = {**fields, **fixed}
    for name, field in names.items():
        if name != "request_id" and field.default is attrs.NOTHING and name not in values:
            msg = f"missing field {name!r} for {kind.TYPE!r}"
            raise ApiError(msg)
    maker: Any = kind  # every request class takes its fields as keywords
    return maker(request_id=0, **values)  # type: ignore[no-any-return]
