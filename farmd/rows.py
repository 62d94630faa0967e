"""What the store keeps: plain frozen rows, built by the core from its jobs, frames and
worker locks, and read back by it on restore.

A row holds only plain values (strings, numbers, and tuples and dicts of them): frame
ranges, dependencies, restrictions, requirements and reservations are kept as the text
their parsers read back, so the store needs none of the core's types.
`Changes` is what one or more events changed, merged so that the last row for a job or
frame wins and nothing follows a removed job; `Snapshot` is everything live, for a
restore, or the rows of jobs recalled from history.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class JobRow:
    id: int
    name: str
    cluster: str
    priority: int
    restrictions: str
    cross_cluster: str  # column `patterns` (farmd.store.COLUMN_OF)
    argv: tuple[str, ...]
    depends_on: tuple[str, ...]  # "ID:MODE" (a bare id, from schema 1 and 2: complete)
    submitted_at: float
    instances: int = 0
    retries: int = 0
    retry_delay: float = 0.0
    time_limit: float = 0.0
    chunk: int = 1
    parent: int | None = None
    uninterruptible: bool = False
    waiting_on: tuple[int, ...] | None = None  # None (rows before schema 3): recompute
    job_type: str | None = None  # column `type`
    requires: str = ""
    reserve: str = ""
    # every frame number in order (a frame range); a frame with no row is pending and
    # untouched. None (rows before schema 5): the frame rows are the whole job.
    frames: str | None = None
    request_key: str | None = None  # the submitter's idempotency key, if it gave one
    request_digest: str = ""  # what was submitted under that key
    # set once the job has moved to history (`farmd.core.history`): when it did, and its
    # summary as `farmd jobs` lists it (JSON), so history is listed without its frames.
    # A row with `retired_at` set is not loaded on restore.
    retired_at: float | None = None
    summary: str | None = None
    owner: str = ""  # who submitted it; "" in rows from before owners (schema 7)
    env: tuple[str, ...] = ()  # NAME=VALUE for each frame's environment
    # a release job's pinned release and its parameters, as JSON (schema 8)
    release: str | None = None
    params: str = "{}"
    notify: str = ""  # the URL told when the job ends


@attrs.frozen
class FrameRow:
    job_id: int
    number: int
    position: int  # order in the job's frame range
    state: str
    worker: str | None
    attempts: int
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    failures: int = 0
    failed_on: str | None = None
    retry_at: float | None = None
    members: str | None = None  # a chunk's frames as a frame range; None for a lone frame
    stopped: bool = False
    taken: str | None = None  # what a running attempt holds ("slots=2,gpu=1"); None: 1 slot


@attrs.frozen
class UserRow:
    """A person (`farmd.core.identities.User`): role, scope, and the salted hash of
    their token, never the token."""

    name: str
    role: str
    clusters: str | None
    salt: str
    digest: str
    created_at: float
    revoked_at: float | None = None


@attrs.frozen
class WorkerTokenRow:
    """A worker enrolment token: the hosts it may register as (a host pattern), the
    clusters it may register into, and the salted hash of its secret."""

    id: int
    hosts: str
    clusters: str | None
    salt: str
    digest: str
    created_at: float
    revoked_at: float | None = None


@attrs.frozen
class AuditRow:
    """One entry of the audit log: an accepted change, or a request refused for want of
    permission; who (as a refusal names them), their user name ("" for a token that is
    not a person's), from where, when, the request and its result, in one line each."""

    at: float
    who: str
    user: str
    peer: str
    request: str  # the request's type
    target: str  # what it named: jobs, frames, a worker, a user (bounded)
    result: str  # "ok", or the refusal
    job_ids: str = ""  # ",12,13,": the jobs it named, for `farmd audit --job`


@attrs.frozen
class Changes:
    """What one or more events changed: whole rows (last one wins) and removed jobs."""

    jobs: tuple[JobRow, ...] = ()
    frames: tuple[FrameRow, ...] = ()
    next_job_id: int | None = None
    removed: tuple[int, ...] = ()  # job ids whose rows (job and frames) go
    locks: dict[str, str] | None = None  # every locked worker's mode, when that changed
    users: tuple[UserRow, ...] = ()
    audit: tuple[AuditRow, ...] = ()  # appended, never replaced
    audit_before: float | None = None  # audit entries older than this go (retention)
    worker_tokens: tuple[WorkerTokenRow, ...] = ()
    # the farm's releases and deployments, whole, when they changed (plain data)
    deployments: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.jobs
            or self.frames
            or self.next_job_id is not None
            or self.removed
            or self.locks is not None
            or self.users
            or self.audit
            or self.audit_before is not None
            or self.worker_tokens
            or self.deployments is not None
        )

    @staticmethod
    def merge(batches: list[Changes]) -> Changes:
        if len(batches) == 1:
            return batches[0]
        jobs: dict[int, JobRow] = {}
        frames: dict[tuple[int, int], FrameRow] = {}
        removed: dict[int, None] = {}
        next_job_id = None
        locks = None
        users: dict[str, UserRow] = {}
        audit: list[AuditRow] = []
        audit_before = None
        worker_tokens: dict[int, WorkerTokenRow] = {}
        deployments = None
        for batch in batches:
            if batch.deployments is not None:
                deployments = batch.deployments
            for token in batch.worker_tokens:
                worker_tokens[token.id] = token
            audit.extend(batch.audit)
            if batch.audit_before is not None:
                audit_before = batch.audit_before
            if batch.locks is not None:
                locks = batch.locks
            for user in batch.users:
                users[user.name] = user
            for job in batch.jobs:
                jobs[job.id] = job
            for frame in batch.frames:
                frames[(frame.job_id, frame.number)] = frame
            for job_id in batch.removed:  # ids are never reused: no row follows a removal
                removed[job_id] = None
                jobs.pop(job_id, None)
            if batch.next_job_id is not None:
                next_job_id = batch.next_job_id
        if removed:
            frames = {key: row for key, row in frames.items() if key[0] not in removed}
        return Changes(
            tuple(jobs.values()),
            tuple(frames.values()),
            next_job_id,
            tuple(removed),
            locks,
            tuple(users.values()),
            tuple(audit),
            audit_before,
            tuple(worker_tokens.values()),
            deployments,
        )


@attrs.frozen
class Snapshot:
    jobs: tuple[JobRow, ...] = ()
    frames: tuple[FrameRow, ...] = ()
    next_job_id: int = 1
    locks: dict[str, str] = attrs.field(factory=dict)  # locked workers, by name
    users: tuple[UserRow, ...] = ()
    worker_tokens: tuple[WorkerTokenRow, ...] = ()
    deployments: Any = None  # `Deployments.snapshot()` as stored; None: none yet
