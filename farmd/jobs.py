"""Jobs as the supervisor core holds them, and the frame state machine: the one place
a frame's state changes.

Theory of operation
-------------------
Every way a frame changes state is a row of `TRANSITIONS`, keyed by (`FrameState`,
`FrameEvent`): dispatch, readoption, success, failure, requeue, loss, purge, preemption
and the admin controls. `Job.move` is the one way a frame changes state: it looks the
pair up, raises `InvalidTransition` (our bug, naming job, frame, state and event) for a
pair that is not a row, and keeps the job's counts, gate counts and ready stack true as
the frame moves. Nothing else assigns `Frame.state`. An admin's `Control` is checked
against `CONTROLS` (the table's rows for the control events) before anything changes,
so a control that does not apply is refused in one line (`refusal`), not raised.

A job's state is never stored: `Job.state` derives it from its frame counts, its unmet
dependencies and its open sub-jobs, so they cannot disagree. A pending frame is *ready*
(on the job's `pending` stack) unless it waits out a retry delay (`retry_at`) or for
frames of another job (`waits_on`, the frame-by-frame dependencies, `Dependency` with
`DependencyMode.FRAMES`).

These are plain mutable records owned by `farmd.core.Scheduler`; nothing else mutates
them. Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from typing import Any

import attrs

from farmd.cluster import ClusterPath, CrossClusterPatterns, Restrictions
from farmd.errors import InvalidTransition, JobSpecError
from farmd.frames import (
    Frame,
    FrameNumbers,
    FrameState,
    FrameTable,
    ReadyStack,
    is_ready,
    parse_frame_range,
)
from farmd.ranking import QueuedJob
from farmd.requirements import NO_REQUIREMENT, Requirement
from farmd.resources import ONE_SLOT, Reservation


class JobState(enum.Enum):
    WAITING = "waiting"  # for a dependency, or (its frames done) for its sub-jobs
    PENDING = "pending"
    RUNNING = "running"
    BLOCKED = "blocked"  # held by an admin, or a dependency that can no longer hold
    SUSPENDED = "suspended"  # nothing running or ready but suspended frames
    COMPLETE = "complete"
    FAILED = "failed"
    KILLED = "killed"

    __hash__ = object.__hash__  # as FrameState's

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.KILLED})


class Control(enum.Enum):
    """What an admin does to frames: `farmd kill|block|unblock|retry`."""

    KILL = "kill"
    BLOCK = "block"  # stop (if running) and hold
    UNBLOCK = "unblock"
    RETRY = "retry"  # failed or killed frames run again
    SUSPEND = "suspend"  # SIGSTOP the running ones, hold the rest
    RESUME = "resume"  # SIGCONT the stopped ones, release the rest


class FrameEvent(enum.Enum):
    """What happens to a frame. Every (state, event) pair the core may meet is a row of
    `TRANSITIONS`; `Job.move` refuses any other pair as our bug (`InvalidTransition`)."""

    DISPATCH = "dispatch"  # a free slot takes it
    READOPT = "readopt"  # a worker that came back still runs it (after the orphan grace)
    SUCCEED = "succeed"  # its process exited 0
    FAIL = "fail"  # it failed with no retry left
    REQUEUE = "requeue"  # it failed with a retry left (a suspended one stays held)
    LOSE = "lose"  # its worker was lost: it runs again, using no retry
    PURGE = "purge"  # its worker was locked with purge: likewise
    PREEMPT = "preempt"  # a better job took its slot: likewise
    # the admin controls, by the name of their `Control`
    KILL = "kill"
    BLOCK = "block"
    UNBLOCK = "unblock"
    RETRY = "retry"
    SUSPEND = "suspend"
    RESUME = "resume"  # a suspended frame that had not started runs when its turn comes
    CONTINUE = "continue"  # a resumed frame whose process was SIGSTOPped: SIGCONT, running

    __hash__ = object.__hash__  # as FrameState's: looked up at every dispatch and result

    @classmethod
    def of(cls, control: Control) -> FrameEvent:
        return cls(control.value)


_F, _E = FrameState, FrameEvent

# The frame state machine, whole. A pair that is missing never happens when the core is
# right: `Job.move` raises `InvalidTransition` for it. Controls an admin asks for are checked
# against `CONTROLS` (the rows of the control events) before anything changes, so a
# control that does not apply is refused in one line (`refusal`), not raised.
TRANSITIONS: dict[tuple[FrameState, FrameEvent], FrameState] = {
    (_F.PENDING, _E.DISPATCH): _F.RUNNING,
    (_F.PENDING, _E.READOPT): _F.RUNNING,
    (_F.RUNNING, _E.SUCCEED): _F.COMPLETE,
    (_F.RUNNING, _E.FAIL): _F.FAILED,
    (_F.RUNNING, _E.REQUEUE): _F.PENDING,
    # a process that ends while SIGSTOPped (killed from outside, or its result crossed
    # the suspend) ends the frame as it would have; a retry stays held
    (_F.SUSPENDED, _E.SUCCEED): _F.COMPLETE,
    (_F.SUSPENDED, _E.FAIL): _F.FAILED,
    (_F.SUSPENDED, _E.REQUEUE): _F.SUSPENDED,
    (_F.RUNNING, _E.LOSE): _F.PENDING,
    (_F.RUNNING, _E.PURGE): _F.PENDING,
    (_F.RUNNING, _E.PREEMPT): _F.PENDING,
    (_F.PENDING, _E.KILL): _F.KILLED,
    (_F.RUNNING, _E.KILL): _F.KILLED,
    (_F.BLOCKED, _E.KILL): _F.KILLED,
    (_F.SUSPENDED, _E.KILL): _F.KILLED,
    (_F.PENDING, _E.BLOCK): _F.BLOCKED,
    (_F.RUNNING, _E.BLOCK): _F.BLOCKED,
    (_F.SUSPENDED, _E.BLOCK): _F.BLOCKED,
    (_F.BLOCKED, _E.UNBLOCK): _F.PENDING,
    (_F.FAILED, _E.RETRY): _F.PENDING,
    (_F.KILLED, _E.RETRY): _F.PENDING,
    (_F.PENDING, _E.SUSPEND): _F.SUSPENDED,
    (_F.RUNNING, _E.SUSPEND): _F.SUSPENDED,
    (_F.SUSPENDED, _E.RESUME): _F.PENDING,
    (_F.SUSPENDED, _E.CONTINUE): _F.RUNNING,
}

# Where each admin control takes a frame: the table's rows for the control events. A
# frame whose process was stopped resumes to RUNNING instead (`FrameEvent.CONTINUE`).
CONTROLS: dict[tuple[FrameState, Control], FrameState] = {
    (state, Control(event.value)): target
    for (state, event), target in TRANSITIONS.items()
    if event.value in {control.value for control in Control}
}


def refusal(label: str, state: FrameState, control: Control) -> str:
    """Why `control` does not apply to a frame in `state`, in one line."""
    return f"frame {label} is {state.value}: it cannot be {_PAST[control]}"


DONE = {
    Control.KILL: "killed",
    Control.BLOCK: "blocked",
    Control.UNBLOCK: "unblocked",
    Control.RETRY: "retried",
    Control.SUSPEND: "suspended",
    Control.RESUME: "resumed",
}
_PAST = {
    **DONE,
    Control.UNBLOCK: "unblocked (it is not blocked)",
    Control.RETRY: "retried (only failed or killed frames are)",
    Control.RESUME: "resumed (it is not suspended)",
}


class DependencyMode(enum.Enum):
    """What a dependent waits for (Qube's link-complete / link-done / link-failed)."""

    COMPLETE = "complete"  # the job completed
    DONE = "done"  # the job ended, whatever the end
    FAILED = "failed"  # the job failed (a clean-up or a notification)
    FRAMES = "frames"  # frame N waits for frame N of the job to complete


@attrs.frozen
class Dependency:
    job_id: int
    mode: DependencyMode = DependencyMode.COMPLETE

    def __str__(self) -> str:
        return f"{self.job_id}:{self.mode.value}"

    def holds(self, state: JobState) -> bool:
        """The whole-job condition is met by a job in `state`."""
        if self.mode is DependencyMode.DONE:
            return state.ended
        if self.mode is DependencyMode.FAILED:
            return state is JobState.FAILED
        return state is JobState.COMPLETE

    def broken(self, state: JobState) -> bool:
        """The job has ended so that this can never hold (unless it is retried)."""
        if self.mode is DependencyMode.DONE:
            return False
        return state.ended and not self.holds(state)

    def why_broken(self, state: JobState) -> str:
        wanted = "complete" if self.mode is DependencyMode.FRAMES else self.mode.value
        why = f"job {self.job_id} is {state.value} but must be {wanted}"
        if wanted == "complete":  # `farmd retry` of the job (and its sub-jobs) can mend it
            why += " (retry it to release this job)"
        return why


_DEPENDENCY = re.compile(r"(\d+)(?::([a-z]+))?")


def parse_dependency(value: int | str) -> Dependency:
    """`12`, `12:complete`, `12:done`, `12:failed` or `12:frames`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Dependency(value)
    match = _DEPENDENCY.fullmatch(value.strip()) if isinstance(value, str) else None
    modes = ", ".join(m.value for m in DependencyMode)
    if match is None:
        msg = f"bad dependency {value!r}: expected ID or ID:MODE, MODE one of {modes}"
        raise JobSpecError(msg)
    try:
        mode = DependencyMode(match.group(2) or "complete")
    except ValueError:
        msg = f"bad dependency {value!r}: unknown mode {match.group(2)!r} (one of {modes})"
        raise JobSpecError(msg) from None
    return Dependency(int(match.group(1)), mode)


_TARGET = re.compile(r"(\d+)(?::(.+))?")


def parse_target(text: str) -> tuple[int, tuple[int, ...] | None]:
    """`ID` (the whole job) or `ID:FRAMES` with a Qube frame range (`3:7`, `3:1-10x2`)."""
    match = _TARGET.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        msg = f"bad target {text!r}: expected ID, ID:FRAME or ID:RANGE such as 12:1-10"
        raise JobSpecError(msg)
    frames = parse_frame_range(match.group(2)) if match.group(2) is not None else None
    return int(match.group(1)), frames


@attrs.define
class Job:
    id: int
    name: str
    cluster: ClusterPath
    priority: int
    restrictions: Restrictions
    cross_cluster: CrossClusterPatterns
    argv: tuple[str, ...]
    frames: FrameTable  # (a dict of every frame is taken too, and made a table)
    depends_on: tuple[Dependency, ...]
    submitted_at: float
    instances: int = 0  # frames running at once at most; 0: as many as slots take it
    retries: int = 0  # failed attempts retried per frame
    retry_delay: float = 0.0  # seconds before a failed frame runs again
    time_limit: float = 0.0  # seconds an attempt may run; 0: no limit
    chunk: int = 1  # frames per dispatch
    parent: int | None = None  # the job whose frame submitted this one (a sub-job)
    uninterruptible: bool = False  # never preempted
    job_type: str | None = None  # runs only on workers that advertise this job type
    requires: Requirement = NO_REQUIREMENT  # what a host must satisfy
    reserve: Reservation = ONE_SLOT  # what a frame holds while it runs
    # whole-job dependencies not yet met: once met, a dependency stays met
    waiting_on: set[int] = attrs.field(factory=set)
    # dependencies that can no longer hold (they ended otherwise), with why; the
    # scheduler keeps it true. They block the job while it still waits for them.
    broken: dict[int, str] = attrs.field(factory=dict)
    gates: dict[int, int] = attrs.field(factory=dict)  # dependency -> pending frames it gates
    children: dict[int, None] = attrs.field(factory=dict)  # sub-jobs, in submission order
    open_children: set[int] = attrs.field(factory=set)  # sub-jobs that have not ended
    # sub-jobs that ended incomplete, with their end (failed or killed)
    failed_children: dict[int, JobState] = attrs.field(factory=dict)
    # dispatch units per state, and frames per state (the same object unless chunked)
    counts: Counter[FrameState] = attrs.field(init=False)
    frame_counts: Counter[FrameState] = attrs.field(init=False)
    gated: int = 0  # pending frames waiting for frames of another job
    stopped: int = 0  # suspended frames whose process is stopped (each holds an instance)
    pending: ReadyStack = attrs.field(init=False)  # ready frames, next to run last
    synced: JobState = JobState.PENDING  # the state the scheduler last acted on
    frame_range: str = ""  # every frame number in order, as a frame range (the store's)
    # the submitter's idempotency key and the digest of what it submitted (6.2)
    request_key: str | None = None
    request_digest: str = ""
    # taken back from history and unchanged since: it moves back without a row written
    recalled: bool = False
    owner: str = ""  # who submitted it (`Principal.owner`); "" from before owners
    env: dict[str, str] = attrs.field(factory=dict)  # added to each frame's environment
    # a job of a release's type: the release it is pinned to (name, version, digest,
    # size, and the type's `python` task if it has one) and its parameters' values
    pinned: dict[str, Any] | None = None
    params: dict[str, Any] = attrs.field(factory=dict)
    notify: str = ""  # an http(s) URL told when the job ends; "": the farm's default

    def __attrs_post_init__(self) -> None:
        if isinstance(self.frames, dict):
            numbers = tuple(n for f in self.frames.values() for n in f.numbers)
            self.frames = FrameTable(FrameNumbers(numbers), self.chunk, dict(self.frames))
        made = self.frames.made.values()
        self.counts = Counter(f.state for f in made)
        self.counts[FrameState.PENDING] += self.frames.fresh  # untouched: pending
        self.frame_counts = self.counts
        if self.chunk > 1:
            self.frame_counts = Counter()
            for frame in made:
                self.frame_counts[frame.state] += len(frame.numbers)
            touched = sum(len(frame.numbers) for frame in made)
            self.frame_counts[FrameState.PENDING] += len(self.frames.numbers) - touched
        self.stopped = sum(1 for f in made if f.stopped)
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the ready stack and the gate counts from the frames made so far
        (the others are pending and ready)."""
        made = self.frames.made.values()
        self.gated = 0
        self.gates = {}
        for frame in made:
            if frame.waits_on and frame.state is FrameState.PENDING:
                self.gated += 1
                self._count_gates(frame.waits_on, 1)
        self.pending = ReadyStack(self.frames, [f.number for f in made if is_ready(f)])

    @property
    def state(self) -> JobState:
        counts = self.counts
        if counts[FrameState.RUNNING]:
            return JobState.RUNNING
        if counts[FrameState.PENDING]:
            if self.waiting_on or counts[FrameState.PENDING] == self.gated:
                return JobState.BLOCKED if self.blocker() else JobState.WAITING
            return JobState.PENDING
        if counts[FrameState.SUSPENDED]:
            return JobState.SUSPENDED
        if counts[FrameState.BLOCKED]:
            return JobState.BLOCKED
        if self.open_children:
            return JobState.WAITING
        # an admin who killed a job (or a sub-job of it) sees it killed, even if a
        # frame had failed before
        if counts[FrameState.KILLED] or JobState.KILLED in self.failed_children.values():
            return JobState.KILLED
        if counts[FrameState.COMPLETE] == len(self.frames) and not self.failed_children:
            return JobState.COMPLETE
        return JobState.FAILED

    @property
    def demanding(self) -> bool:
        """Needs more of a worker than a free slot (so dispatch must check it)."""
        return (
            self.job_type is not None
            or self.requires is not NO_REQUIREMENT
            or not self.reserve.plain
            or self.instances > 0
        )

    def facts(self) -> dict[str, Any]:
        """What a requirement reads as `job.*`."""
        return {
            "id": self.id,
            "name": self.name,
            "cluster": self.cluster,
            "priority": self.priority,
            "type": self.job_type,  # `job.type` in a requirement
            "frames": len(self.frames),
        }

    def blocker(self) -> str | None:
        """Why a dependency that can no longer hold blocks the job, if one does: one it
        still waits for as a whole, or one that gates a pending frame."""
        for job_id, why in self.broken.items():
            if job_id in self.waiting_on or self.gates.get(job_id, 0) > 0:
                return why
        return None

    def unit(self, number: int) -> Frame | None:
        """The frame, or the chunk, that runs frame `number`."""
        key = self.frames.unit_key(number)
        return None if key is None else self.frames[key]

    @property
    def runnable(self) -> bool:
        """Belongs in the ranking index: has a frame to hand out and nothing to wait on."""
        return bool(self.pending) and not self.waiting_on

    @property
    def at_cap(self) -> bool:
        """Runs as many frames as its `instances` allow (a stopped one counts: its
        process still exists and resumes without asking)."""
        return 0 < self.instances <= self.counts[FrameState.RUNNING] + self.stopped

    def move(self, frame: Frame, event: FrameEvent) -> FrameState:
        """The one way a frame changes state, by the row of `TRANSITIONS` for its state
        and `event`, keeping counts and the pending stack true. Returns the new state."""
        state = TRANSITIONS.get((frame.state, event))
        if state is None:
            raise InvalidTransition(job=self.id, frame=frame.number, state=frame.state, event=event)
        if frame.state is state:
            return state
        self.counts[frame.state] -= 1
        self.counts[state] += 1
        if frame.members:
            self.frame_counts[frame.state] -= len(frame.members)
            self.frame_counts[state] += len(frame.members)
        if frame.state is FrameState.PENDING:
            if frame.waits_on:
                self.gated -= 1
                self._count_gates(frame.waits_on, -1)
            elif frame.retry_at is None:
                self.pending.discard(frame.number)
        frame.state = state
        if state is FrameState.PENDING:
            if frame.waits_on:
                self.gated += 1
                self._count_gates(frame.waits_on, 1)
            elif frame.retry_at is None:
                self._push_pending(frame.number)
        return state

    def release(self, frame: Frame) -> None:
        """A frame held for its retry delay may run again."""
        if frame.retry_at is not None:
            frame.retry_at = None
            if is_ready(frame):
                self._push_pending(frame.number)

    def _count_gates(self, waits_on: dict[int, int], change: int) -> None:
        for dependency in waits_on:
            self.gates[dependency] = self.gates.get(dependency, 0) + change

    def ungate(self, frame: Frame, dependency: int) -> None:
        """A frame this one waited for (of job `dependency`) has completed."""
        assert frame.waits_on is not None
        frame.waits_on[dependency] -= 1
        if frame.waits_on[dependency]:
            return
        del frame.waits_on[dependency]
        if frame.state is not FrameState.PENDING:
            return
        self.gates[dependency] -= 1
        if not frame.waits_on:
            self.gated -= 1
            if frame.retry_at is None:
                self._push_pending(frame.number)

    def next_frame(self, worker: str) -> Frame:
        """The pending frame to give `worker`: the next in order, unless that one last
        failed on this worker and another near the top did not (a retry prefers a
        different worker)."""
        top = self.frames[self.pending.top()]
        if top.failed_on != worker:
            return top
        for number in self.pending.first(32):
            frame = self.frames.peek(number)
            if frame is not None and frame.failed_on != worker:
                return self.frames[number]
        return top

    def _push_pending(self, number: int) -> None:
        # A frame back from a lost worker runs before later frames: keep the stack in
        # submission order, lowest position last.
        self.pending.push(number)

    def queued(self) -> QueuedJob:
        return QueuedJob(
            id=self.id,
            cluster=self.cluster,
            priority=self.priority,
            patterns=self.cross_cluster,
            restrictions=self.restrictions,
        )

    def summary(self) -> dict[str, Any]:
        state = self.state
        return {
            "id": self.id,
            "name": self.name,
            "cluster": self.cluster,
            "priority": self.priority,
            "state": state.value,
            "frames": {s.value: self.frame_counts[s] for s in FrameState},
            "submitted_at": self.submitted_at,
            "depends_on": [str(d) for d in self.depends_on],
            "instances": self.instances,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "time_limit": self.time_limit,
            "chunk": self.chunk,
            "parent": self.parent,
            "subjobs": len(self.children),
            "uninterruptible": self.uninterruptible,
            "job_type": self.job_type,
            "requires": str(self.requires),
            "reserve": str(self.reserve),
            "reason": self.reason(state),
            "owner": self.owner,
            "release": (f"{self.pinned['name']} {self.pinned['version']}" if self.pinned else None),
        }

    def reason(self, state: JobState) -> str:
        """Why a job that is not running is not, in one line ("" when it needs none)."""
        if state is JobState.BLOCKED:
            blocker = self.blocker()
            if blocker:
                return blocker
            return "frames blocked by an admin (farmd unblock)"
        if state is JobState.WAITING:
            if self.counts[FrameState.PENDING]:
                waits = [
                    str(d.job_id) if d.mode is not DependencyMode.FRAMES else str(d)
                    for d in self.depends_on
                    if (d.job_id in self.waiting_on and d.mode is not DependencyMode.FRAMES)
                    or (self.gates.get(d.job_id, 0) > 0 and d.mode is DependencyMode.FRAMES)
                ]
                return "waiting for job " + ", ".join(waits)
            return "waiting for sub-jobs " + ", ".join(map(str, sorted(self.open_children)))
        if state is JobState.SUSPENDED:
            return "suspended by an admin (farmd resume)"
        return ""

    def detail(self) -> dict[str, Any]:
        """The summary and the job's own fields; not its frames, which are listed by
        page (`farmd.core.views.job_view`)."""
        out = self.summary()
        out.update(
            restrictions=str(self.restrictions),
            cross_cluster=str(self.cross_cluster),
            argv=list(self.argv),
            env=[f"{name}={value}" for name, value in self.env.items()],
            params=dict(self.params),
            notify=self.notify,
            waiting_on=sorted(self.waiting_on),
            subjob_ids=list(self.children),
        )
        return out
