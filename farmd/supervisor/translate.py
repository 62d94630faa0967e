"""Translation between the wire's vocabulary and the core's: requests to events and
queries, commands to messages.

Most requests that change the farm share their field names with the core event they
ask for (`Kill` and `KillJobs`, `Submit` and `SubmitJob`...), so `event_from` copies the
fields and stamps the event with the time it arrived and who asks: the core's door
checks that principal against its rules. The requests that are not events (queries, a
reload) are authorised through `Scheduler.authorize` with the action `REQUEST_ACTIONS`
names. `answer` is the table from a request to the core call that answers it; the
`Supervisor` calls it with its core and decides when the answer goes out.

A large submission is drafted (validated, its frames built) in a worker thread, so the
loop keeps serving heartbeats and other clients: `is_large` decides, `draft_submission`
does the pure work. `worker_message` is the message a frame command becomes on the
wire. Everything here is a plain function of its arguments, which is why it is apart
from the `Supervisor`: it holds no connection and no state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from farmd.codec import REPLY_SLACK, encoded_size
from farmd.core import (
    Action,
    ControlFrames,
    KillJobs,
    KillOnWorker,
    LockWorker,
    ModifyJob,
    Outcome,
    Principal,
    RemoveJobs,
    ReplyRoom,
    ResumeOnWorker,
    RunOnWorker,
    Scheduler,
    SetResourceTotal,
    SubmitJob,
    SubmitJobs,
    SuspendOnWorker,
    UnlockWorker,
    draft_batch,
    draft_job,
    submission_digest,
)
from farmd.errors import UserError
from farmd.frames import frames_named
from farmd.jobs import Control
from farmd.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    ControlRequest,
    Explain,
    GetJob,
    GetLog,
    Kill,
    KillFrame,
    ListClusters,
    ListJobs,
    ListResources,
    ListWorkers,
    Lock,
    Message,
    Modify,
    Order,
    Reload,
    Remove,
    Request,
    ResumeFrame,
    RunFrame,
    SetResource,
    Submit,
    SubmitBatch,
    SuspendFrame,
    Unlock,
    Wait,
)
from farmd.supervisor.tokens import job_token

E = TypeVar("E", SubmitJob, KillJobs, ModifyJob, RemoveJobs)
E_SUBMIT = TypeVar("E_SUBMIT", SubmitJob, SubmitJobs)

# What the requests that are not core events ask to do, for `Scheduler.authorize`; the
# others become events, which carry their principal and are checked by the core's door.
REQUEST_ACTIONS: dict[type, Action] = {
    ListJobs: Action.READ,
    GetJob: Action.READ,
    ListWorkers: Action.READ,
    ListClusters: Action.READ,
    Order: Action.READ,
    GetLog: Action.READ,
    Wait: Action.READ,
    Explain: Action.READ,
    ListResources: Action.READ,
    Reload: Action.RELOAD,
}

# A submission is drafted on the loop below these sizes (a thread hop costs more than
# the work), and in a worker thread above them.
_INLINE_JOBS = 16
_INLINE_FRAMES = 2000
_INLINE_FRAME_TEXT = 4096


def event_from(event: type[E], request: Request, now: float, by: Principal) -> E:
    """The core event a request asks for: the request's fields (they share names), the
    time it arrived and who asks."""
    fields = attrs.asdict(request, recurse=False)  # type: ignore[arg-type]
    del fields["request_id"]
    return event(now=now, by=by, **fields)


def submit_event(request: Submit | SubmitBatch, by: Principal, now: float) -> Any:
    """The core event of a submission, stamped with the time it arrived."""
    if isinstance(request, Submit):
        return event_from(SubmitJob, request, now, by)
    jobs = tuple(event_from(SubmitJob, job, now, by) for job in request.jobs)
    return SubmitJobs(jobs=jobs, now=now, key=request.key, by=by)


def draft_submission(event: E_SUBMIT, max_command_bytes: int) -> E_SUBMIT:
    """`event` with its jobs drafted and its digest computed: pure, for a worker thread."""
    digest = submission_digest(event) if event.key is not None else None
    if isinstance(event, SubmitJob):
        return attrs.evolve(event, prepared=draft_job(event, max_command_bytes), digest=digest)
    drafts = draft_batch(event.jobs, max_command_bytes)
    return attrs.evolve(event, prepared=drafts, digest=digest)


def is_large(event: SubmitJob | SubmitJobs) -> bool:
    """Worth drafting in a thread: many jobs, or many frames (counted without building
    them, over a bounded amount of text)."""
    jobs = event.jobs if isinstance(event, SubmitJobs) else (event,)
    if len(jobs) > _INLINE_JOBS:
        return True
    texts = [job.frames for job in jobs]
    if sum(len(text) for text in texts) > _INLINE_FRAME_TEXT:
        return True
    return sum(frames_named(text) for text in texts) > _INLINE_FRAMES


def answer(
    core: Scheduler,
    request: Request,
    by: Principal,
    now: float,
    reload: Callable[[], dict[str, Any]],
    frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[Any, Outcome | None]:
    """A request's answer, and the outcome it must wait for (None for a query). A
    query or a reload is authorised here by the core; an event by the core's door.
    A listing is a page cut short to fit a reply of `frame_bytes` (the frame limit)."""
    action = REQUEST_ACTIONS.get(type(request))
    if action is not None:
        core.authorize(by, action)
    match request:
        case ListJobs():
            room = reply_room(frame_bytes)
            return core.jobs_page(request.limit, request.after, room, by, now), None
        case GetJob():
            core.readable(by, [request.job_id])
            page = (request.frame_limit, request.frame_after, reply_room(frame_bytes))
            return core.job_view(request.job_id, *page, now=now), None
        case ListWorkers():
            return core.workers_view(by), None
        case ListClusters():
            return core.clusters_view(by), None
        case Kill():
            outcome = core.handle(event_from(KillJobs, request, now, by))
            return outcome.result, outcome
        case ControlRequest():
            control = ControlFrames(
                control=Control(request.action), targets=request.targets, now=now, by=by
            )
            outcome = core.handle(control)
            return outcome.result, outcome
        case Remove():
            outcome = core.handle(event_from(RemoveJobs, request, now, by))
            return outcome.result, outcome
        case Modify():
            outcome = core.handle(event_from(ModifyJob, request, now, by))
            return outcome.result, outcome
        case Order():
            return core.order_view(request.worker, request.limit), None
        case Explain():
            core.readable(by, [request.job_id])
            return core.explain(request.job_id, request.worker), None
        case ListResources():
            return core.resources_view(), None
        case Lock():
            lock = LockWorker(name=request.worker, mode=request.mode, now=now, by=by)
            outcome = core.handle(lock)
            return outcome.result, outcome
        case Unlock():
            outcome = core.handle(UnlockWorker(name=request.worker, now=now, by=by))
            return outcome.result, outcome
        case Reload():
            return reload(), None
        case SetResource():
            change = SetResourceTotal(name=request.name, total=request.total, now=now, by=by)
            outcome = core.handle(change)
            return outcome.result, outcome
    msg = f"request {request.TYPE!r} is not served here"
    raise UserError(msg)


def reply_room(frame_bytes: int) -> ReplyRoom:
    """What a page may fill of a reply frame of `frame_bytes`, weighed as it is sent."""
    return ReplyRoom(bytes=frame_bytes - REPLY_SLACK, size=encoded_size)


def worker_message(
    command: RunOnWorker | KillOnWorker | SuspendOnWorker | ResumeOnWorker, farm_token: str
) -> Message:
    """What a frame command is on the wire, to its worker."""
    match command:
        case RunOnWorker():
            return RunFrame(
                job_id=command.job_id,
                job_name=command.job_name,
                frame=command.frame,
                attempt=command.attempt,
                argv=command.argv,
                # what a frame needs to submit sub-jobs of its job
                env={**command.env, "FARMD_TOKEN": job_token(farm_token, command.job_id)},
                time_limit=command.time_limit,
                release=command.release,
            )
        case KillOnWorker():
            return KillFrame(job_id=command.job_id, frame=command.frame, attempt=command.attempt)
        case SuspendOnWorker():
            return SuspendFrame(job_id=command.job_id, frame=command.frame, attempt=command.attempt)
        case ResumeOnWorker():
            return ResumeFrame(job_id=command.job_id, frame=command.frame, attempt=command.attempt)
