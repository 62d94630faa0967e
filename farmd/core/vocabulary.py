"""The words the core and its shell share: events in, commands out.

Theory of operation
-------------------
Every change to the farm arrives as an *event*: a frozen record that carries the time
it happened (`now`), since the core reads no clock. `Scheduler.handle(event)` answers
with an `Outcome`: the event's result (a new job id...), the *commands* the shell must
carry out (start or stop a frame on a worker, tell waiters a job ended, log a line, wake
the core later) and the rows it changed, which the shell makes durable before it carries
out a single command. Nothing here does anything: these are values, compared by field,
so tests assert on them directly.

`FarmStatistics` is the one record the core hands out for observability: the metrics
module pulls it at scrape time (`Scheduler.statistics`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from farmd.core.authority import ADMIN, Action, Principal
from farmd.jobs import Control, JobState
from farmd.jobspec import JobSpec, unchecked
from farmd.rows import Changes, Snapshot

if TYPE_CHECKING:
    from farmd.core.drafting import Draft
    from farmd.core.restore import Built
    from farmd.releases.model import Release


class PreemptPolicy(enum.Enum):
    """Qube's `supervisor_preempt_policy` (see the module docs)."""

    PASSIVE = "passive"
    AGGRESSIVE = "aggressive"
    DISABLED = "disabled"


# --------------------------------------------------------------------------- events


@attrs.frozen(kw_only=True, field_transformer=unchecked)
class SubmitJob(JobSpec):
    """A job submitted: the spec's fields (`farmd.jobspec`) taken as given, `draft_job`
    checks them, and what the submission carries besides."""

    now: float
    key: str | None = None  # idempotency: a repeat of a key gets the job it made
    by: Principal = ADMIN  # who asks (`farmd.core.authority`)
    # the job drafted from this very event off the loop (`draft`); None: drafted here
    prepared: Draft | None = attrs.field(default=None, eq=False, repr=False)
    # its `submission_digest`, computed off the loop with the draft; None: computed here
    digest: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class SubmitJobs:
    """Several submissions at once, all or none. The jobs' own `key` and `by` are
    not used: the batch's are."""

    jobs: tuple[SubmitJob, ...]
    now: float
    key: str | None = None
    by: Principal = ADMIN
    prepared: tuple[Draft, ...] | None = attrs.field(default=None, eq=False, repr=False)
    digest: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class KillJobs:
    job_ids: tuple[int, ...]
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class ControlFrames:
    """An admin's `kill|block|unblock|retry|suspend|resume` of targets `ID` or
    `ID:FRAMES`, all or none."""

    control: Control
    targets: tuple[str, ...]
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class RemoveJobs:
    """Forget ended jobs (an admin kills a job first to remove it)."""

    job_ids: tuple[int, ...]
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class ModifyJob:
    job_id: int
    now: float
    priority: int | None = None
    cluster: str | None = None
    restrictions: str | None = None
    cross_cluster: str | None = None
    instances: int | None = None
    retries: int | None = None
    retry_delay: float | None = None
    time_limit: float | None = None
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class WorkerJoined:
    name: str
    cluster: str
    slots: int
    now: float
    restrictions: str = ""
    running: tuple[tuple[int, int, int], ...] = ()  # (job, frame, attempt) still running
    types: tuple[str, ...] = ()
    properties: dict[str, Any] = attrs.field(factory=dict)
    resources: dict[str, float] = attrs.field(factory=dict)
    by: Principal = ADMIN  # the credential its session opened with


@attrs.frozen(kw_only=True)
class LockWorker:
    """`farmd lock`: no new work; `drain` lets running frames finish, `purge` stops and
    requeues them (no retry used). Locks are kept by name, across reconnects."""

    name: str
    now: float
    mode: str = "drain"
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class UnlockWorker:
    name: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class SetResourceTotal:
    """An admin changes the total of a global counter (`license.nuke`) at run time."""

    name: str
    total: float
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class WorkerReconfigured:
    """A reloaded configuration changes a connected worker: from its next pick it ranks
    and matches by these; what it runs is not disturbed."""

    name: str
    cluster: str
    slots: int
    now: float
    restrictions: str = ""
    types: tuple[str, ...] = ()
    properties: dict[str, Any] = attrs.field(factory=dict)
    resources: dict[str, float] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class WorkerLost:
    name: str
    now: float
    reason: str = "disconnected"


@attrs.frozen(kw_only=True)
class ReclaimOrphans:
    """The grace period after a restart is over: frames whose worker has not come back
    to claim them go back to pending."""

    now: float


@attrs.frozen(kw_only=True)
class Tick:
    """The time the core asked to be woken at (`WakeAt`) has come."""

    now: float


@attrs.frozen(kw_only=True)
class FrameEnded:
    worker: str
    job_id: int
    frame: int
    attempt: int
    exit_code: int
    now: float
    error: str = ""
    by: Principal = ADMIN  # the credential its worker's session opened with


@attrs.frozen(kw_only=True)
class Restore:
    """Rebuild the farm from the store's `snapshot`: the first event a scheduler
    handles, before any worker joins (refused, as our bug, once it holds jobs or
    workers). Through the door like any other, so the one place that changes the
    farm stays `handle`; it yields no commands (no worker is connected yet)."""

    snapshot: Snapshot
    now: float
    # jobs a warm standby built ahead from these rows (`restore.prebuild`), taken as
    # they are when their rows are the very same objects; the others are built here
    prebuilt: Mapping[int, Built] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class RecallJobs:
    """Take jobs back from history (`farmd.core.history`): the store's rows of the jobs
    a request names, their families and what they depend on. Rows of jobs already in
    memory are ignored, so a recall that raced another one changes nothing."""

    snapshot: Snapshot
    now: float


@attrs.frozen(kw_only=True)
class PruneJobs:
    """Remove jobs in history for good (`farmd history prune`): their rows go. A job
    read back into memory unchanged goes with its family; one that changed since (a
    retry made it live again) is kept, and is not among the ids the event answers."""

    job_ids: tuple[int, ...]
    now: float


@attrs.frozen(kw_only=True)
class AddUser:
    """`farmd user add`: a person, their role and scope, and the salted hash of the token
    the shell made for them (`farmd.core.identities`)."""

    name: str
    role: str
    clusters: str | None
    salt: str
    digest: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class ModifyUser:
    """`farmd user modify`: a new role, scope ("" for the whole farm) or token (a new
    salt and digest); None (or "" for the token) keeps what there is."""

    name: str
    now: float
    role: str | None = None
    clusters: str | None = None
    salt: str = ""
    digest: str = ""
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class RevokeUser:
    """`farmd user revoke`: the user's token opens nothing any more, open sessions too."""

    name: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class AddWorkerToken:
    """`farmd worker-token add`: the hosts a new enrolment token registers (a host
    pattern), into which clusters, and the salted hash of the secret the shell made for
    token `token_id` (the next one: `Scheduler.next_worker_token_id`)."""

    token_id: int
    hosts: str
    clusters: str | None
    salt: str
    digest: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class RevokeWorkerToken:
    """`farmd worker-token revoke`: the token registers nothing any more."""

    token_id: int
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class AddRelease:
    """`farmd release deploy` uploaded a release: its bundle is durable in the state dir
    (the shell wrote it before this event), by its digest (`farmd.core.rollout`)."""

    release: Release
    digest: str
    size: int
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class DeployRelease:
    """Deploy (name, version) at a cluster: it serves that subtree, unless deeper."""

    name: str
    version: str
    cluster: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class UndeployRelease:
    name: str
    cluster: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class RollbackRelease:
    """Back to the version deployed at that cluster before the current one."""

    name: str
    cluster: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class RemoveRelease:
    """Forget a version deployed nowhere; its bundle file goes after the commit."""

    name: str
    version: str
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class WorkerReleases:
    """A worker says which of the releases it was told of it has ready (fetched,
    verified, unpacked) and which it could not get, with why."""

    name: str
    ready: tuple[tuple[str, str], ...]  # (release name, version)
    failed: tuple[tuple[str, str, str], ...]  # (release name, version, why)
    now: float
    by: Principal = ADMIN


@attrs.frozen(kw_only=True)
class WorkerLoad:
    """A worker's agent says how busy its host is (`host_load`, version 6): kept on
    its record for the listings and the metrics; it changes no decision."""

    name: str
    cpu: float  # 0 to 1: the share of all cores busy over the agent's last interval
    memory_used: int  # bytes
    memory_total: int  # bytes
    load_average: tuple[float, float, float]  # 1, 5 and 15 minutes
    now: float
    by: Principal = ADMIN


Event = (
    SubmitJob
    | SubmitJobs
    | KillJobs
    | ControlFrames
    | RemoveJobs
    | ModifyJob
    | WorkerJoined
    | WorkerLost
    | FrameEnded
    | ReclaimOrphans
    | Tick
    | LockWorker
    | UnlockWorker
    | SetResourceTotal
    | WorkerReconfigured
    | Restore
    | RecallJobs
    | PruneJobs
    | AddUser
    | ModifyUser
    | RevokeUser
    | AddWorkerToken
    | RevokeWorkerToken
    | AddRelease
    | DeployRelease
    | UndeployRelease
    | RollbackRelease
    | RemoveRelease
    | WorkerReleases
    | WorkerLoad
)

# What each event that an outside party causes asks to do, as the rules name it
# (`authority.RULES`): an admin's or a user's request, a worker's registration and its
# results. The events the shell makes itself (a worker lost, a reconfiguration after a
# reload, a tick, orphans reclaimed, a restore) come from no one and are not checked.
ACTION_OF: dict[type, Action] = {
    SubmitJob: Action.SUBMIT,
    SubmitJobs: Action.SUBMIT,
    KillJobs: Action.CONTROL,
    ControlFrames: Action.CONTROL,
    RemoveJobs: Action.REMOVE,
    ModifyJob: Action.MODIFY,
    LockWorker: Action.LOCK,
    UnlockWorker: Action.LOCK,
    SetResourceTotal: Action.SET_RESOURCE,
    WorkerJoined: Action.WORK,
    FrameEnded: Action.WORK,
    AddUser: Action.MANAGE_USERS,
    ModifyUser: Action.MANAGE_USERS,
    RevokeUser: Action.MANAGE_USERS,
    AddWorkerToken: Action.MANAGE_USERS,
    RevokeWorkerToken: Action.MANAGE_USERS,
    AddRelease: Action.RELEASE,
    RemoveRelease: Action.RELEASE,
    DeployRelease: Action.DEPLOY,
    UndeployRelease: Action.DEPLOY,
    RollbackRelease: Action.DEPLOY,
    WorkerReleases: Action.WORK,
    WorkerLoad: Action.WORK,
}


# --------------------------------------------------------------------------- commands


@attrs.frozen(kw_only=True)
class RunOnWorker:
    worker: str
    job_id: int
    job_name: str
    frame: int
    attempt: int
    argv: tuple[str, ...]
    env: dict[str, str]
    time_limit: float = 0.0
    # why this job: its rank key for this worker, for the dispatch log
    rank: tuple[int, int, int]
    release: dict[str, Any] | None = None  # a release job's pinned release


@attrs.frozen(kw_only=True)
class KillOnWorker:
    worker: str
    job_id: int
    frame: int
    attempt: int


@attrs.frozen(kw_only=True)
class SuspendOnWorker:
    """SIGSTOP the process group of a running attempt; it keeps its slot."""

    worker: str
    job_id: int
    frame: int
    attempt: int


@attrs.frozen(kw_only=True)
class ResumeOnWorker:
    """SIGCONT the process group of a suspended attempt."""

    worker: str
    job_id: int
    frame: int
    attempt: int


@attrs.frozen(kw_only=True)
class WakeAt:
    """Send a `Tick` at this time (seconds since the epoch, as events carry)."""

    at: float


@attrs.frozen(kw_only=True)
class TellReleases:
    """Tell a worker the releases effective at its cluster now (`ReleaseRef` data:
    name, version, digest, size), after they changed for it."""

    worker: str
    releases: tuple[dict[str, Any], ...]


@attrs.frozen(kw_only=True)
class DropBundle:
    """A removed release's bundle file may go: no version the farm knows uses it."""

    digest: str


@attrs.frozen(kw_only=True)
class JobEnded:
    job_id: int
    state: JobState


@attrs.frozen(kw_only=True)
class JobHeld:
    """A job became waiting, blocked or suspended, or what a waiting job waits for
    changed: the shell's `wait`s check again whether their jobs can still end
    (`Scheduler.stuck`)."""

    job_id: int
    state: JobState


@attrs.frozen(kw_only=True)
class Note:
    """A line for the shell's log: the core decides what is worth saying, not how."""

    level: str
    event: str
    fields: dict[str, Any] = attrs.field(factory=dict)


Command = (
    RunOnWorker
    | KillOnWorker
    | SuspendOnWorker
    | ResumeOnWorker
    | JobEnded
    | JobHeld
    | Note
    | WakeAt
    | TellReleases
    | DropBundle
)


@attrs.frozen
class Outcome:
    result: Any = None
    commands: tuple[Command, ...] = ()
    # the rows the event changed: durable before any command is carried out
    changes: Changes = attrs.field(factory=Changes)


# --------------------------------------------------------------------------- pages


@attrs.frozen(kw_only=True)
class ReplyRoom:
    """How much a listing's page may hold beyond its entry count: `bytes` in all, each
    entry weighed by `size`. The shell passes its encoder's measure and what its frame
    limit leaves (the core knows no wire format), so a page is cut short to fit one
    frame instead of being refused."""

    bytes: int
    size: Callable[[Any], int]


# --------------------------------------------------------------------------- statistics


@attrs.frozen(kw_only=True)
class FarmStatistics:
    """What the scheduler tells the metrics module (`farmd.metrics`) at one scrape.

    Counts are of jobs that have not been removed. The `frames_*` totals are cumulative
    since the supervisor started (they reset with it, which Prometheus counters allow).
    """

    frames: tuple[tuple[str, str, int], ...]  # (job cluster, frame state, count)
    jobs: tuple[tuple[str, str, int], ...]  # (job cluster, job state, count)
    workers: tuple[tuple[str, str, int], ...]  # (worker cluster, idle|busy|locked, count)
    slots: tuple[tuple[str, float, float], ...]  # (worker cluster, used, total)
    resources: tuple[tuple[str, float, float], ...]  # (global counter name, used, total)
    frames_started: int
    frames_completed: int
    frames_failed: int
    frames_retried: int
    frames_preempted: int
    # releases: (cluster of workers, release, version) effective there; (release,
    # version, workers that have it ready); workers' releases they could not get
    releases_effective: tuple[tuple[str, str, str], ...] = ()
    release_workers: tuple[tuple[str, str, int], ...] = ()
    release_fetch_failures: int = 0
    # each cluster's share of the farm (`farmd.core.shares`): (cluster, figure, value)
    shares: tuple[tuple[str, str, float], ...] = ()
    # the host load its workers last reported, by worker cluster: (cluster, workers
    # that reported one, sum of their CPU fractions, memory used, memory in all)
    host_load: tuple[tuple[str, int, float, int, int], ...] = ()


@attrs.frozen(kw_only=True)
class FarmSize:
    """How much the farm holds (`Scheduler.size`): jobs not removed, their frames,
    frames found running after a restart and not yet claimed, quarantined jobs."""

    jobs: int
    frames: int
    orphans: int
    quarantined: int


EMPTY_STATISTICS = FarmStatistics(
    frames=(),
    jobs=(),
    workers=(),
    slots=(),
    resources=(),
    frames_started=0,
    frames_completed=0,
    frames_failed=0,
    frames_retried=0,
    frames_preempted=0,
)
