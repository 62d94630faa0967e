"""The admin session: a person's or a script's requests, answered.

`AdminRequests` is the part of the `Supervisor` that serves a session opened with the
farm token, a person's token, the shared user token or a job token. It reads each
request (closing a session idle past `idle_timeout`), refreshes who asks (a revoked
user's session ends), brings back from history what the request names, hands the
request to the core (`translate.answer`), or to the parts that read the store (history,
the audit log) or make tokens (people), and answers once what it changed is durable:
an accepted change with its audit row in the same commit (`_reply`), a refusal in one
line (`_refuse`). `wait` and `get_log` are answered by tasks of their own, a few at a
time per session. It is a mixin, so that the supervisor stays one object: the
attributes it reads are the supervisor's, named below.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from farmd.config import SupervisorConfig
from farmd.core import (
    Action,
    Outcome,
    Principal,
    Scheduler,
)
from farmd.errors import (
    FarmdError,
    ForbiddenError,
    ProtocolError,
    UnavailableError,
)
from farmd.jobs import JobState
from farmd.protocol import (
    RELEASE_VERSION,
    Error,
    FetchLog,
    GetLog,
    ListAudit,
    ListJobs,
    LogData,
    Message,
    PruneHistory,
    Refused,
    Reply,
    Request,
    RevokeWorkerToken,
    Status,
    Submit,
    SubmitBatch,
    Wait,
)
from farmd.rows import Changes
from farmd.supervisor import audit
from farmd.supervisor.archive import Archive
from farmd.supervisor.connection import (
    Connection,
    Goodbye,
)
from farmd.supervisor.people import PEOPLE_REQUESTS, People, Revoked
from farmd.supervisor.shelf import RELEASE_REQUESTS, ReleaseShelf
from farmd.supervisor.standby import farm_status
from farmd.supervisor.translate import (
    answer,
    draft_submission,
    is_large,
    reply_room,
    submit_event,
)

log = logging.getLogger("farmd.supervisor")

LOG_FETCH_TIMEOUT = 10.0  # seconds a worker has to send a frame's log


# jobs of a batch whose warnings its answer lists, at most: with lines of at most 300
# characters, an answer to 10,000 jobs still fits the smallest frame (64 KiB)
MAX_BATCH_WARNINGS = 50


def batch_answer(ids: list[int], warnings: dict[int, list[str]]) -> dict[str, Any]:
    """`submit_batch`'s answer (docs/protocol.md 6.2): the ids, and the warnings of the
    first `MAX_BATCH_WARNINGS` jobs that have any, by id; how many more had some."""
    listed = dict(list(warnings.items())[:MAX_BATCH_WARNINGS])
    return {
        "ids": ids,
        "warnings": {str(job_id): lines for job_id, lines in listed.items()},
        "warnings_omitted": len(warnings) - len(listed),
    }


class AdminRequests:
    """The supervisor's admin sessions (see module docs)."""

    config: SupervisorConfig
    core: Scheduler
    people: People
    shelf: ReleaseShelf
    archive: Archive
    _clock: Callable[[], float]
    _drafting: trio.CapacityLimiter
    _jobs_changed: trio.Event
    _workers: dict[str, Connection]
    _log_requests: dict[int, trio.MemorySendChannel[LogData]]
    _next_log_request: int

    if TYPE_CHECKING:  # the supervisor's own

        def _apply(self, outcome: Outcome, after: Callable[[], None] | None = None) -> None: ...

        def reload(self) -> dict[str, Any]: ...

    async def _admin_session(self, conn: Connection, nursery: trio.Nursery) -> None:
        while True:
            await conn.wait_for_room(self.config.idle_timeout)
            message = await self._next_request(conn)
            if not isinstance(message, Request):
                msg = f"an admin may not send {message.TYPE!r}"
                raise ProtocolError(msg, code="bad_message")
            try:  # the user's role and scope as they are now; revoked: the session ends
                conn.principal = self.people.current(conn.who, conn.token_digest)
            except Revoked as exc:
                error = Error(code="bad_token", message=str(exc))
                raise Goodbye("info", "session revoked", error) from None
            if isinstance(message, Wait | GetLog):
                conn.slow += 1
                nursery.start_soon(self._answer_slow, conn, message)
            else:
                # awaited here, in order: this session's next request sees what this one
                # changed (a submitted job, a deployed release)
                await self._answer(conn, message)

    async def _next_request(self, conn: Connection) -> Message:
        """The session's next message; a session with no request in flight for
        `idle_timeout` is closed (a pending `wait` or log fetch keeps it open)."""
        timeout = self.config.idle_timeout
        while True:
            with trio.CancelScope(deadline=conn.idle_deadline(timeout)) as conn.idle:
                return await conn.receive()  # a partial frame stays in the codec
            if conn.idle_deadline(timeout) <= trio.current_time():
                msg = (
                    f"session closed after {timeout:g} s without a request (connect again to go on)"
                )
                raise Goodbye("info", "session idle", Error(code="idle", message=msg))

    async def _decide(
        self, request: Request, who: Principal, session: int
    ) -> tuple[Any, Outcome | None]:
        """A request's result and the outcome it must wait for (None: a query), or a
        FarmdError refusing it, changing nothing. The one way a request is answered:
        an admin session's (`_answer`) and the HTTP API's (`perform`)."""
        if isinstance(request, Wait | GetLog):
            self.core.authorize(who, Action.READ)
            await self.archive.recall(request)
            ids = request.job_ids if isinstance(request, Wait) else [request.job_id]
            self.core.readable(who, dict.fromkeys(ids))
            if isinstance(request, Wait):
                return await self._wait(request), None
            return await self._fetch_log(request), None
        if isinstance(request, Submit | SubmitBatch):
            return await self._submit(request, who)
        if isinstance(request, PEOPLE_REQUESTS):
            result, outcome = await self.people.answer(request, who)
            if isinstance(request, RevokeWorkerToken):
                self._drop_token_workers(request.token_id)
            return result, outcome
        if isinstance(request, RELEASE_REQUESTS):
            return await self.shelf.answer(request, who, session, self._clock())
        if isinstance(request, ListJobs) and request.history:
            self.core.authorize(who, Action.READ)
            room = reply_room(self.config.max_frame_bytes)
            return await self.archive.jobs_page(request, room, who), None
        if isinstance(request, ListAudit):
            self.core.authorize(who, Action.READ_AUDIT)
            return await self.archive.audit(request), None
        if isinstance(request, Status):
            self.core.authorize(who, Action.READ)
            return await farm_status(self), None  # type: ignore[arg-type]  # a mixin's self
        if isinstance(request, PruneHistory):
            self.core.authorize(who, Action.PRUNE)
            return await self.archive.prune(request.days), None
        await self.archive.recall(request)  # what it names, back from history
        return self._request(request, who)

    def _drop_token_workers(self, token_id: int) -> None:
        """A revoked worker token's workers register no more: their sessions end."""
        why = Error(code="bad_token", message=f"worker token {token_id} was revoked")
        for worker in list(self._workers.values()):
            if worker.principal is not None and worker.principal.token_id == token_id:
                worker.send(why)
                worker.close()

    async def _answer(self, conn: Connection, request: Request) -> None:
        try:
            result, outcome = await self._decide(request, conn.who, id(conn))
        except FarmdError as exc:
            self._refuse(conn, request, exc)
            return
        self._reply(conn, request, result, outcome)

    async def perform(self, request: Request, who: Principal, peer: str, session: int) -> Any:
        """A request from outside an admin session (the HTTP API): its result once what
        it changed is durable, with its audit row; a refusal raises the FarmdError, a
        refusal for want of permission audited, as in a session."""
        now = self._clock()
        try:
            result, outcome = await self._decide(request, who, session)
        except ForbiddenError as exc:
            row = audit.entry(request, who, peer, now, None, str(exc))
            self._apply(Outcome(changes=Changes(audit=(row,))))
            raise
        outcome = outcome or Outcome()
        if audit.recorded(request):
            row = audit.entry(request, who, peer, now, result)
            outcome = attrs.evolve(outcome, changes=audit.with_entry(outcome.changes, row))
        durable = trio.Event()
        self._apply(outcome, after=durable.set)
        await durable.wait()
        return result

    async def _submit(
        self, request: Submit | SubmitBatch, who: Principal
    ) -> tuple[Any, Outcome | None]:
        """A submission: drafted (validated, its frames built) in a worker thread when
        it is large, so the loop keeps serving heartbeats and other clients; then
        checked against the farm and inserted in one step."""
        self.core.authorize(who, Action.SUBMIT)  # before any drafting
        await self.archive.recall(request)  # its dependencies, parent, or repeated key
        event = submit_event(request, who, self._clock())
        if not self.core.knows_key(event.key) and is_large(event):
            # one at a time: concurrent huge submissions queue, not multiply memory
            draft = functools.partial(draft_submission, event, self.core.max_command_bytes)
            event = await trio.to_thread.run_sync(draft, limiter=self._drafting)
        outcome = self.core.handle(event)
        if isinstance(request, Submit):
            result = self.core.job_summary(outcome.result)
            result["warnings"] = self.core.submit_warnings([outcome.result]).get(outcome.result, [])
            return result, outcome
        return batch_answer(outcome.result, self.core.submit_warnings(outcome.result)), outcome

    async def _answer_slow(self, conn: Connection, request: Wait | GetLog) -> None:
        try:
            result, _ = await self._decide(request, conn.who, id(conn))
        except FarmdError as exc:
            self._refuse(conn, request, exc)
        else:
            self._reply(conn, request, result, None)
        finally:
            conn.slow -= 1
            conn.quiet_since = trio.current_time()  # idle from this answer on
            if conn.idle is not None:
                conn.idle.deadline = conn.idle_deadline(self.config.idle_timeout)
            conn.made_room()

    def _reply(
        self, conn: Connection, request: Request, result: Any, outcome: Outcome | None
    ) -> None:
        """Answer `request` once everything handled so far is durable: a reply shows
        nothing a crash could still take back (a query included: it may show an
        uncommitted change). An accepted change commits with its audit row."""
        outcome = outcome or Outcome()
        if audit.recorded(request):
            row = audit.entry(request, conn.who, conn.peer, self._clock(), result)
            outcome = attrs.evolve(outcome, changes=audit.with_entry(outcome.changes, row))
        self._apply(outcome, after=functools.partial(self._respond, conn, request, result))

    def _refuse(self, conn: Connection, request: Request, exc: FarmdError) -> None:
        """Refuse `request` in one line; a refusal for want of permission is audited."""
        conn.send(Refused(request_id=request.request_id, code=exc.code, message=str(exc)))
        if isinstance(exc, ForbiddenError):
            row = audit.entry(request, conn.who, conn.peer, self._clock(), None, str(exc))
            self._apply(Outcome(changes=Changes(audit=(row,))))

    @staticmethod
    def _respond(conn: Connection, request: Request, result: Any) -> None:
        try:
            conn.send(Reply(request_id=request.request_id, result=result))
        except ProtocolError as exc:
            msg = f"the answer to {request.TYPE!r} does not fit in one frame: {exc}"
            conn.send(
                Refused(request_id=request.request_id, code=UnavailableError.code, message=msg)
            )

    def _request(self, request: Request, by: Principal) -> tuple[Any, Outcome | None]:
        """A request's answer, and the outcome it must wait for (None for a query):
        `translate.answer`, with this supervisor's core, clock and reload."""
        frame_bytes = self.config.max_frame_bytes
        return answer(self.core, request, by, self._clock(), self.reload, frame_bytes)

    async def _wait(self, request: Wait) -> dict[str, Any]:
        """Until every job has ended or cannot end without an admin (`Scheduler.stuck`),
        or the timeout. A job may end and move to history meanwhile: its end is kept
        as seen, and one that left before it was seen is read back."""
        ids = tuple(dict.fromkeys(request.job_ids))
        self.core.ended(ids)  # refuses unknown ids at once
        ended: dict[int, JobState] = {}
        timeout = math.inf if request.timeout is None else request.timeout
        with trio.move_on_after(timeout):
            while True:
                changed = self._jobs_changed
                await self.archive.recall_ids(self.core.unknown_jobs(ids))
                ended.update(self.core.ended(i for i in ids if i not in ended))
                if self.core.settled(i for i in ids if i not in ended):
                    break
                await changed.wait()
        await self.archive.recall_ids(self.core.unknown_jobs(ids))
        ended.update(self.core.ended(i for i in ids if i not in ended))
        pending = [i for i in ids if i not in ended]
        return {
            "ended": {str(k): v.value for k, v in sorted(ended.items())},
            "pending": pending,
            "stuck": {str(k): why for k, why in self.core.stuck(pending).items()},
        }

    async def _fetch_log(self, request: GetLog) -> dict[str, Any]:
        frame, worker_name = self.core.frame_holder(request.job_id, request.frame)
        conn = self._workers.get(worker_name)
        label = f"{request.job_id}:{frame.number}"
        if conn is None:
            msg = f"the log of frame {label} is on worker {worker_name!r}, which is not connected"
            raise UnavailableError(msg)
        request_id = self._next_log_request
        self._next_log_request += 1
        send, receive = trio.open_memory_channel[LogData](1)
        self._log_requests[request_id] = send
        conn.send(
            FetchLog(
                request_id=request_id,
                job_id=request.job_id,
                frame=frame.number,
                attempt=frame.attempts,
                # a worker before version 6 sends the end only
                offset=(
                    request.offset
                    if request.offset is not None and conn.version >= RELEASE_VERSION
                    else -1
                ),
            )
        )
        try:
            with trio.move_on_after(LOG_FETCH_TIMEOUT):
                data = await receive.receive()
                if not data.found:
                    msg = f"worker {worker_name!r} has no log for frame {label}"
                    raise UnavailableError(msg)
                return {
                    "job_id": request.job_id,
                    "frame": frame.number,
                    "attempt": frame.attempts,
                    "worker": worker_name,
                    "text": data.text,
                    # where the next ask starts (`offset`), and whether more may come
                    "size": data.size,
                    "running": frame.state.value == "running",
                }
        finally:
            self._log_requests.pop(request_id, None)
        msg = f"worker {worker_name!r} did not send the log of frame {label} in time"
        raise UnavailableError(msg)
