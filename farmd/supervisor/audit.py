"""The audit log's entries: who changed what, from where, and who was refused.

Every accepted request that changes the farm, and every request refused for want of
permission (`forbidden`), gets one `AuditRow`: who asked (as a refusal names them: the
user with role and scope, or the token), their user name, the peer's address, when,
the request's type and what it named (bounded), and "ok" or the refusal. An accepted
change's row rides in the same `Changes` as the change itself (`with_entry`), so one
SQLite transaction writes both: no change is ever durable without its row, nor a row
without its change. A refusal changes nothing, and its row is committed on its own.
Reads are not logged. `farmd audit` reads the log back, newest first
(`Archive.audit`), and entries older than `audit_days` are pruned hourly.
"""

from __future__ import annotations

from typing import Any

import attrs

from farmd.core import Principal
from farmd.protocol import (
    ControlRequest,
    Explain,
    GetJob,
    GetLog,
    ListAudit,
    ListClusters,
    ListJobs,
    ListResources,
    ListUsers,
    ListWorkers,
    Order,
    Request,
    Submit,
    SubmitBatch,
    Wait,
)
from farmd.protocol_releases import ListJobTypes, ListReleases, UploadRelease
from farmd.rows import AuditRow, Changes
from farmd.supervisor.archive import named_jobs

# the requests that change nothing: logged only when refused
READS = (
    ListJobs,
    GetJob,
    ListWorkers,
    ListClusters,
    Order,
    Explain,
    ListResources,
    GetLog,
    Wait,
    ListUsers,
    ListAudit,
    ListReleases,
    ListJobTypes,
)
MAX_TARGET = 300  # characters of what a request named, kept per entry
# a job's env may hold secrets; an upload's data is the bundle itself
_NOT_SHOWN = frozenset({"request_id", "env", "data"})


def recorded(request: Request) -> bool:
    """Whether an accepted `request` gets an audit entry: every change, and of an
    upload only its last chunk, which adds the release."""
    if isinstance(request, UploadRelease):
        return request.done
    return not isinstance(request, READS)


def entry(
    request: Request, by: Principal, peer: str, at: float, result: Any, refusal: str = ""
) -> AuditRow:
    """The audit row of `request`, accepted with `result` or refused with `refusal`."""
    ids, _ = named_jobs(request)
    if not refusal:
        ids += _made(request, result)
    kind = request.TYPE
    if isinstance(request, ControlRequest):
        kind = f"{kind} {request.action}"
    return AuditRow(
        at=at,
        who=by.who,
        user=by.user,
        peer=peer,
        request=kind,
        target=_target(request),
        result=refusal or "ok",
        job_ids="," + ",".join(map(str, dict.fromkeys(ids))) + "," if ids else "",
    )


def with_entry(changes: Changes, row: AuditRow) -> Changes:
    """`changes` and the audit row of the request that made them: one commit."""
    return attrs.evolve(changes, audit=(*changes.audit, row))


def _made(request: Request, result: Any) -> list[int]:
    """The jobs a submit made (its answer names them)."""
    if isinstance(request, Submit) and isinstance(result, dict) and "id" in result:
        return [int(result["id"])]
    if isinstance(request, SubmitBatch) and isinstance(result, dict):
        return [int(i) for i in result.get("ids", ()) if isinstance(i, int)]
    return []


def _target(request: Request) -> str:
    """What `request` named, its fields other than their defaults, in one bounded line."""
    fields = []
    for field in attrs.fields(type(request)):  # type: ignore[arg-type]  # every message is attrs
        value = getattr(request, field.name)
        if field.name in _NOT_SHOWN or value == field.default or value is None:
            continue
        if field.name == "jobs":  # a batch: how many, the fields of each are too much
            value = f"{len(value)} jobs"
        shown = value if isinstance(value, str) else repr(value)
        fields.append(f"{field.name}={shown}")
    text = " ".join(" ".join(fields).split())
    return text if len(text) <= MAX_TARGET else text[: MAX_TARGET - 3] + "..."
