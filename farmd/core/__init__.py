"""The scheduler core: the farm's state and the rules that change it, with no I/O.

Theory of operation
-------------------
The core is a package with one room per concern; nothing in it imports trio, reads a
clock, opens a socket or logs:

- `vocabulary`: the events the shell feeds in and the commands it gets back (`Outcome`);
- `scheduler`: `Scheduler`, whose one door is `handle(event) -> Outcome`: it routes
  each event, carries out frame changes, results and retries, and answers the named
  queries the shell asks;
- `dispatch`: the `Dispatcher` the scheduler holds, which owns the ranking index, the
  farm-wide resource pool, the hungry and starved workers, instance caps, sticky slots,
  preemption and starting and stopping frames;
- `dependencies`: `Dependencies`, which jobs wait for which (whole-job and frame by
  frame), blocks with a reason, and what a removed job releases;
- `submission`: `Submissions`, a drafted job checked against the farm (parent, who
  asks, dependencies, resources), and idempotency keys;
- `workforce`: `Workforce`, the connected workers' records, joins (with readoption),
  reconfigurations, losses, locks, and the orphans a restart left;
- `controls`: kills, controls and removals planned whole before anything changes;
- `authority`: who may do what (`Principal`, the rules, the cluster scope);
- `views`: read-only, wire-shaped views of the farm and `explain`;
- `stuck`: which jobs cannot end without an admin;
- `drafting`: a submission checked for all that does not depend on the farm;
- `restore`: rows to jobs (with quarantine) and back.

This module re-exports the names other code imports, so `from farmd.core import X`
keeps working wherever X now lives.
"""

from farmd.core.authority import ADMIN, RESERVED_NAMES, Action, Credential, Principal, Role
from farmd.core.drafting import (
    MAX_COMMAND_BYTES,
    Draft,
    draft_batch,
    draft_job,
    submission_digest,
)
from farmd.core.scheduler import Scheduler
from farmd.core.stuck import MAX_STUCK_NODES
from farmd.core.vocabulary import (
    EMPTY_STATISTICS,
    AddUser,
    AddWorkerToken,
    Command,
    ControlFrames,
    Event,
    FarmSize,
    FarmStatistics,
    FrameEnded,
    JobEnded,
    JobHeld,
    KillJobs,
    KillOnWorker,
    LockWorker,
    ModifyJob,
    ModifyUser,
    Note,
    Outcome,
    PreemptPolicy,
    PruneJobs,
    RecallJobs,
    ReclaimOrphans,
    RemoveJobs,
    ReplyRoom,
    Restore,
    ResumeOnWorker,
    RevokeUser,
    RevokeWorkerToken,
    RunOnWorker,
    SetResourceTotal,
    SubmitJob,
    SubmitJobs,
    SuspendOnWorker,
    Tick,
    UnlockWorker,
    WakeAt,
    WorkerJoined,
    WorkerLoad,
    WorkerLost,
    WorkerReconfigured,
)

__all__ = [
    "ADMIN",
    "EMPTY_STATISTICS",
    "MAX_COMMAND_BYTES",
    "MAX_STUCK_NODES",
    "RESERVED_NAMES",
    "Action",
    "AddUser",
    "AddWorkerToken",
    "Command",
    "ControlFrames",
    "Credential",
    "Draft",
    "Event",
    "FarmSize",
    "FarmStatistics",
    "FrameEnded",
    "JobEnded",
    "JobHeld",
    "KillJobs",
    "KillOnWorker",
    "LockWorker",
    "ModifyJob",
    "ModifyUser",
    "Note",
    "Outcome",
    "PreemptPolicy",
    "Principal",
    "PruneJobs",
    "RecallJobs",
    "ReclaimOrphans",
    "RemoveJobs",
    "ReplyRoom",
    "Restore",
    "ResumeOnWorker",
    "RevokeUser",
    "RevokeWorkerToken",
    "Role",
    "RunOnWorker",
    "Scheduler",
    "SetResourceTotal",
    "SubmitJob",
    "SubmitJobs",
    "SuspendOnWorker",
    "Tick",
    "UnlockWorker",
    "WakeAt",
    "WorkerJoined",
    "WorkerLoad",
    "WorkerLost",
    "WorkerReconfigured",
    "draft_batch",
    "draft_job",
    "submission_digest",
]
