"""The API's OpenAPI 3.1 document, built from the endpoint table (`api.ENDPOINTS`) and
the protocol requests' own fields, so it cannot forget a route or a body field.

The bodies' schemas come from the attrs fields of the request each endpoint builds
(`Submit` for `POST /api/v1/jobs`, `Modify`, `ControlRequest`, `Lock`): a field's type
annotation becomes its JSON type, its default says whether it is required, and a job
field's help text (`farmd.jobspec`) its description. The results are described by name
and by the protocol document's section (docs/protocol.md 6.1), their exact shape being
the protocol's: this document does not restate them field by field.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import attrs

from farmd import __version__
from farmd.jobspec import DOC
from farmd.protocol import ControlRequest, Lock, Modify, Request, Submit
from farmd.web.calls import STATUS, Endpoint, Param

_SCALARS: Final = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}


def schema_of_type(annotation: str) -> dict[str, Any]:
    """A JSON schema for an attrs field's annotation text (`int | None`, `tuple[str,
    ...]`, `tuple[int | str, ...]`); anything else: any value."""
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        return {"type": "array", "items": schema_of_type(annotation[6:-6])}
    parts = [part.strip() for part in annotation.split("|")]
    if all(part in _SCALARS or part == "None" for part in parts):
        types = [_SCALARS.get(part, "null") for part in parts]
        return {"type": types[0] if len(types) == 1 else types}
    return {}


def request_schema(kind: type[Request], fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON body that makes a `kind` request: its fields but `request_id` and those
    the path gives (`fixed`)."""
    properties: dict[str, Any] = {}
    required = []
    for field in attrs.fields(kind):  # type: ignore[arg-type]
        if field.name == "request_id" or field.name in fixed:
            continue
        schema = schema_of_type(str(field.type))
        doc = field.metadata.get(DOC)
        if doc is not None:
            schema["description"] = doc.help
        if field.default is attrs.NOTHING:
            required.append(field.name)
        properties[field.name] = schema
    document: dict[str, Any] = {"type": "object", "properties": properties}
    document["additionalProperties"] = False
    if required:
        document["required"] = required
    return document


def _result(description: str, kind: str = "object") -> dict[str, Any]:
    return {"type": kind, "description": description}


def schemas() -> dict[str, Any]:
    """The document's named schemas: bodies (from the requests) and results."""
    return {
        "JobSpec": request_schema(Submit),
        "Modify": request_schema(Modify, ("job_id",)),
        "Control": request_schema(ControlRequest),
        "Lock": request_schema(Lock, ("worker",)),
        "Login": {
            "type": "object",
            "properties": {"token": {"type": "string"}},
            "required": ["token"],
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    "required": ["code", "message"],
                }
            },
            "required": ["error"],
        },
        "Me": _result("who the token stands for: who, user, role, admin, clusters, actions"),
        "JobPage": _result(
            "a job page (docs/protocol.md 6.1): jobs, next, counts, total; with filters, "
            "scanned too"
        ),
        "JobSummary": _result("a job summary (docs/protocol.md 6.1)"),
        "JobDetail": _result("a job detail with a page of its frames (docs/protocol.md 6.1)"),
        "Log": _result("a frame's log: job_id, frame, attempt, worker, text"),
        "IdList": {"type": "array", "items": {"type": "integer"}},
        "StringList": {"type": "array", "items": {"type": "string"}},
        "Any": {"description": "the protocol's result (docs/protocol.md 6.1, 6.2)"},
    }


def _parameter(param: Param, where: str) -> dict[str, Any]:
    schema: dict[str, Any]
    if param.kind == "int":
        schema = {"type": "integer", "minimum": param.low, "maximum": param.high}
    elif param.kind == "number":
        schema = {"type": "number", "minimum": 0}
    elif param.kind == "bool":
        schema = {"type": "boolean"}
    else:
        schema = {"type": "string", "maxLength": param.max_chars}
        if param.choices:
            schema["enum"] = list(param.choices)
    if param.default is not None:
        schema["default"] = param.default
    return {
        "name": param.name,
        "in": where,
        "required": where == "path",
        "description": param.help or param.name,
        "schema": schema,
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
        "security": [{"bearer": []}, {"cookie": []}],
        "responses": {
            str(endpoint.status): {
                "description": "done",
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{endpoint.result}"}
                    }
                },
            },
            **{str(status): _error(code) for code, status in _ERRORS.items()},
        },
    }
    parameters = [_parameter(p, "path") for p in endpoint.path_params]
    parameters += [_parameter(p, "query") for p in endpoint.query]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{endpoint.body}"}}
            },
        }
    return operation


# one error response per status (the code named is an example of it)
_ERRORS: Final = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "unknown_job": 404,
    "too_large": 413,
    "unavailable": 503,
}
assert all(STATUS.get(code, 400) == status for code, status in _ERRORS.items())


def _plain(summary: str, body: str | None = None, kind: str = "application/json") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "done", "content": {kind: {}}}},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return operation


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once: it depends on nothing but the code)."""
    from farmd.web.api import ENDPOINTS, V1  # the table imports the calls, not this

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    paths[f"{V1}/login"] = {
        "post": _plain("Set the session cookie from a token (needs X-Farmd-Request: 1)", "Login")
    }
    paths[f"{V1}/logout"] = {"post": _plain("Clear the session cookie")}
    paths[f"{V1}/events"] = {
        "get": {
            **_plain("Change notices, as server-sent events", kind="text/event-stream"),
            "security": [{"bearer": []}, {"cookie": []}],
        }
    }
    paths[f"{V1}/openapi.json"] = {"get": _plain("This document")}
    paths["/metrics"] = {"get": _plain("Prometheus metrics", kind="text/plain")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "farmd",
            "version": __version__,
            "description": (
                "The farmd supervisor's HTTP API: every endpoint is a protocol request "
                "(docs/protocol.md 6), decided as a socket session's would be."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "farmd_token"},
            },
        },
    }
