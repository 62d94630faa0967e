"""The supervisor's HTTP app: the JSON API, its live change notices, its OpenAPI
document and Prometheus's `/metrics`, as one Starlette (ASGI) app.

Theory of operation
-------------------
`create_app(backend)` builds the app around a `FarmBackend`, the supervisor seen from
outside: it answers protocol requests (`perform`), turns tokens into principals
(`authenticate`), exposes the metrics and the change notices. The app holds no
scheduling logic: every API endpoint (`farmd.web.api.ENDPOINTS`) builds a protocol
request and calls `perform`, which decides it as a socket session would (the same
authorisation, audit row and durability). So the app can be tested against a fake
backend, and the supervisor's backend (`farmd.supervisor.web_backend`) is a few lines.

Who asks, on every request (nothing is remembered between requests, so a revoked or
replaced token is refused at its next request):

- `Authorization: Bearer TOKEN`: any token the socket protocol accepts (the farm
  token, a personal token, the shared user token, a frame's job token);
- else the `farmd_token` cookie that `POST /api/v1/login` (`{"token": ...}`) set:
  HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
  Secure over HTTPS, for the browser session; `POST /api/v1/logout` clears it. A
  request authenticated by the cookie that changes something (any method but GET and
  HEAD), login and logout included, must carry `X-Farmd-Request: 1`: a cross-site
  form cannot set a header, so it cannot make a logged-in browser act (CSRF). 403
  otherwise.
- None: 401, with a JSON error, as every refusal: `{"error": {"code", "message"}}`
  (`farmd.web.calls.status_of` maps codes to statuses).

Bounds, each a constant here or in `calls` (hypercorn bounds the rest: header size,
handshake and keep-alive times, `farmd.web.server`):

- a request body at most `MAX_BODY_BYTES` (1 MiB): 413;
- query values checked by type and bounds (`Param`): ints in their range, strings at
  most 256 characters (4096 for any value): 400;
- a token at most `MAX_TOKEN_CHARS`: 401;
- at most `max_subscribers` (256) event streams open at once: 503 beyond;
- a filtered job list reads at most `api.MAX_SCANNED` jobs per call.

The dashboard's files (`/` and `/static/NAME`, `farmd.web.page`) are served to anyone:
they hold nothing of the farm; the page logs in through the API.

`GET /api/v1/events` is a server-sent event stream of change notices
(`farmd.web.events`): `event: jobs` with `data: {"ids": [...]}` (null: fetch the list
again), `event: workers`, `event: clusters`, coalesced per reader, with a comment line
every `heartbeat` seconds (15). The page fetches what changed; it never polls. The
stream checks its token again at each heartbeat and ends once it is refused. Known
debt: a notice names job ids outside a scoped user's clusters (ids only; fetching the
job is refused); filtering notices per reader would cost a lookup per id.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from farmd.core import Principal
from farmd.errors import FarmdError
from farmd.logs import log_event
from farmd.protocol import Request
from farmd.web.api import ENDPOINTS, V1
from farmd.web.calls import (
    ApiError,
    Call,
    Endpoint,
    error_body,
    read_body,
    read_params,
    status_of,
)
from farmd.web.events import Subscription
from farmd.web.openapi import openapi_document
from farmd.web.page import PageFiles

log = logging.getLogger("farmd.web")

COOKIE: Final = "farmd_token"
CSRF_HEADER: Final = "x-farmd-request"
MAX_TOKEN_CHARS: Final = 1024
HEARTBEAT: Final = 15.0  # seconds between two comment lines of an idle event stream
SAFE_METHODS: Final = frozenset({"GET", "HEAD"})


class FarmBackend(Protocol):
    """The farm as the HTTP app sees it (module docs)."""

    async def perform(self, request: Request, who: Principal, peer: str, session: int) -> Any:
        """`request`'s result once durable; a FarmdError refuses it, changing nothing."""
        ...

    async def authenticate(self, token: str, host: str) -> Principal:
        """Who `token` stands for now; a FarmdError (`bad_token`) if no one."""
        ...

    def metrics(self) -> tuple[bytes, str]:
        """Prometheus's exposition: the body and its Content-Type."""
        ...

    def events(self) -> Subscription:
        """A new subscription to change notices; `TooManySubscribers` if none is left."""
        ...


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode(), status_code=status, media_type="application/json")


def refusal(exc: FarmdError) -> Response:
    """The JSON error answer to `exc`; an internal one is logged."""
    status = status_of(exc)
    if status >= 500 and status != 503:
        log_event(log, "error", "http request failed", code=exc.code, error=str(exc))
    return json_response(error_body(exc.code, str(exc)), status)


def _peer(http: HttpRequest) -> tuple[str, str]:
    """The peer as `host:port` (for the audit log) and its host (for the token
    throttle); "?" when the server does not say."""
    client = http.client
    if client is None:
        return "?", "?"
    host = f"[{client.host}]" if ":" in client.host else client.host
    return f"{host}:{client.port}", client.host


class App:
    """The app's state: its backend and how it authenticates (module docs)."""

    def __init__(self, backend: FarmBackend, heartbeat: float) -> None:
        self.backend = backend
        self.heartbeat = heartbeat
        self._sessions = itertools.count(1)  # each HTTP request is a session of its own

    async def principal(self, http: HttpRequest) -> tuple[Principal, bool]:
        """Who asks, and whether the cookie said so (module docs); refused with 401,
        or 403 for a cookie request that changes something without the CSRF header."""
        header = http.headers.get("authorization")
        by_cookie = header is None
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError("bad Authorization header: expected 'Bearer TOKEN'", "bad_token")
            token = token.strip()
        else:
            token = http.cookies.get(COOKIE, "")
            if not token:
                msg = "no token: send 'Authorization: Bearer TOKEN', or log in"
                raise ApiError(msg, "unauthorized")
        if by_cookie and http.method not in SAFE_METHODS:
            self.check_csrf(http)
        return await self.authenticate(token, _peer(http)[1]), by_cookie

    async def authenticate(self, token: str, host: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise ApiError(f"wrong token (over {MAX_TOKEN_CHARS} characters)", "bad_token")
        return await self.backend.authenticate(token, host)

    @staticmethod
    def check_csrf(http: HttpRequest) -> None:
        if http.headers.get(CSRF_HEADER) != "1":
            msg = (
                "a browser request that changes something must carry the header "
                "'X-Farmd-Request: 1' (cross-site request refused)"
            )
            raise ApiError(msg, "csrf")

    def route(self, endpoint: Endpoint) -> Route:
        """A Starlette route running `endpoint` (authenticated, checked, refused as JSON)."""

        async def run(http: HttpRequest) -> Response:
            try:
                who, _ = await self.principal(http)
                params = read_params(endpoint, http)
                body = {}
                if endpoint.body is not None:
                    body = await read_body(http, endpoint.body_required)
                call = Call(
                    http=http,
                    who=who,
                    peer=_peer(http)[0],
                    session=next(self._sessions),
                    params=params,
                    body=body,
                    perform_request=self.backend.perform,
                )
                return json_response(await endpoint.handler(call), endpoint.status)
            except FarmdError as exc:
                return refusal(exc)
            except Exception as exc:  # a bug: this request's 500, never the server's end
                return internal_error(http, exc)

        return Route(endpoint.path, run, methods=[endpoint.method], name=endpoint.handler.__name__)

    async def login(self, http: HttpRequest) -> Response:
        try:
            self.check_csrf(http)
            body = await read_body(http, True)
            token = body.get("token")
            if not isinstance(token, str) or not token:
                raise ApiError('the body must be {"token": TOKEN}', "bad_request")
            who = await self.authenticate(token, _peer(http)[1])
        except FarmdError as exc:
            return refusal(exc)
        response = json_response({"who": who.who})
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=http.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, http: HttpRequest) -> Response:
        try:
            self.check_csrf(http)
        except FarmdError as exc:
            return refusal(exc)
        response = json_response({})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def metrics(self, http: HttpRequest) -> Response:
        try:
            body, kind = self.backend.metrics()
        except Exception as exc:  # a scrape must not take the supervisor down
            log_event(log, "error", "metrics failed", error=repr(exc))
            return json_response(error_body("internal", "metrics failed"), 500)
        return Response(body, media_type=kind)

    async def openapi(self, http: HttpRequest) -> Response:
        return json_response(openapi_document())

    async def events(self, http: HttpRequest) -> Response:
        try:
            await self.principal(http)
            subscription = self.backend.events()
        except FarmdError as exc:
            return refusal(exc)
        token_of: Callable[[], str] = lambda: (  # noqa: E731 (read again at each heartbeat)
            http.headers.get("authorization", "").partition(" ")[2].strip()
            or http.cookies.get(COOKIE, "")
        )
        stream = self._stream(subscription, token_of, _peer(http)[1])
        return EventStream(subscription, stream)

    async def _stream(
        self, subscription: Subscription, token_of: Callable[[], str], host: str
    ) -> AsyncIterator[str]:
        yield f"retry: 3000\n: farmd events, a comment every {self.heartbeat:g} s\n\n"
        while True:
            notices = await subscription.next(self.heartbeat)
            if notices is None:
                try:  # a token revoked meanwhile ends the stream
                    await self.authenticate(token_of(), host)
                except FarmdError:
                    return
                yield ": heartbeat\n\n"
                continue
            yield "".join(
                f"event: {notice.kind}\ndata: {json.dumps(notice.data())}\n\n" for notice in notices
            )


class EventStream(StreamingResponse):
    """A server-sent event stream that gives its subscription back however it ends
    (the client gone before the first byte included)."""

    def __init__(self, subscription: Subscription, content: AsyncIterator[str]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._subscription.close()


async def _http_error(http: HttpRequest, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route has not) as JSON."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return json_response(error_body(code, str(exc.detail)), exc.status_code)


def internal_error(http: HttpRequest, exc: Exception) -> Response:
    """A bug: logged with its traceback, answered 500 in one line."""
    log.error("http request failed: %s %s", http.method, http.url.path, exc_info=exc)
    message = f"internal error ({type(exc).__name__}): see the supervisor's log"
    return json_response(error_body("internal", message), 500)


def create_app(backend: FarmBackend, *, heartbeat: float = HEARTBEAT) -> Starlette:
    """The HTTP app serving `backend` (module docs)."""
    app = App(backend, heartbeat)
    routes: list[BaseRoute] = [app.route(endpoint) for endpoint in ENDPOINTS]
    routes += [
        Route(f"{V1}/login", app.login, methods=["POST"]),
        Route(f"{V1}/logout", app.logout, methods=["POST"]),
        Route(f"{V1}/events", app.events, methods=["GET"]),
        Route(f"{V1}/openapi.json", app.openapi, methods=["GET"]),
        Route("/metrics", app.metrics, methods=["GET"]),
    ]
    page = PageFiles.load()  # the dashboard (farmd.web.page): no token needed to load it
    routes += [
        Route("/", page.index, methods=["GET"]),
        Route("/static/{name}", page.static, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
    )
