"""Jobs, frames and workers as the supervisor core holds them.

Theory of operation
-------------------
A job is a command run once per frame, or once per chunk of frames (`--chunk N`): the
unit of dispatch is a `Frame` keyed by its first frame number, whose `members` are the
frames it covers. Frames carry their own state; the job's state is never stored, it is
derived from its frames, its unmet dependencies and its open sub-jobs by `Job.state`,
so they cannot disagree. A frame's `attempts` counts its dispatches and doubles as the
fencing token: only a result for the latest attempt may change it.

A pending frame is *ready* (on the job's `pending` stack, the next to run last) unless
it waits out a retry delay (`retry_at`) or for frames of another job (`waits`, the
frame-by-frame dependencies). `Job.move` is the one way a frame changes state.

A job's frames cost nothing per frame until something touches them: `Job.frames` is a
`FrameTable` over the frame numbers (a `range`, or flat arrays), which makes a `Frame`
the first time a frame is looked up (to run it, control it, gate it); a frame nothing
has touched is pending and ready. So a 1,000,000-frame job is a range and a few
counters until its frames start, and its ready stack (`ReadyStack`) holds only the
frames that were made.

These are plain mutable records owned by `farmd.core.Scheduler`; nothing else mutates
them. Pure: no I/O, no clock.
"""

from __future__ import annotations

import array
import bisect
import enum
import functools
import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from sortedcontainers import SortedList

from farmd.cluster import ClusterPath, CrossClusterPatterns, Restrictions
from farmd.errors import InvalidTransition, JobSpecError
from farmd.ranking import QueuedJob, WorkerView
from farmd.requirements import NO_REQUIREMENT, Requirement
from farmd.resources import ONE_SLOT, Reservation, Taken

MAX_FRAMES_PER_JOB = 1_000_000
# Work over a job's frames is done at most this many at a time in one C call: a thread
# building a large job (the supervisor drafts one off its loop) then lets the loop's
# thread take the GIL between steps, instead of holding it for a whole million.
_SLICE = 1 << 15


class FrameState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    KILLED = "killed"
    BLOCKED = "blocked"  # held by an admin until unblocked
    SUSPENDED = "suspended"  # held by an admin; its process, if it had one, is stopped

    # Members are singletons: hash them by identity, in C. Enum's own hash is a Python
    # call, and frame states are counted at every dispatch and result.
    __hash__ = object.__hash__


class JobState(enum.Enum):
    WAITING = "waiting"  # for a dependency, or (its frames done) for its sub-jobs
    PENDING = "pending"
    RUNNING = "running"
    BLOCKED = "blocked"  # held by an admin, or a dependency that can no longer hold
    SUSPENDED = "suspended"  # nothing running or ready but suspended frames

    __hash__ = object.__hash__  # as FrameState's
    COMPLETE = "complete"
    FAILED = "failed"
    KILLED = "killed"

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


# At most 19 digits a number: frame numbers are stored as SQLite integers (< 2**63), and
# Python refuses to convert a string of over 4300 digits (ValueError, not a refusal).
_RANGE_ITEM = re.compile(r"(\d{1,19})(?:-(\d{1,19})(?:x(\d{1,19}))?)?")
MAX_FRAME_NUMBER = 2**63 - 1


def parse_frame_range(text: str) -> tuple[int, ...]:
    """Qube's frame ranges: `1-100`, `1,3,5`, `1-10x3` (every third), combined with
    commas. Frames keep the order written; repeats are dropped."""
    if not isinstance(text, str) or not text.strip():
        msg = f"bad frame range {text!r}: expected something like '1-100', '1,3,5' or '1-10x3'"
        raise JobSpecError(msg)
    frames: dict[int, None] = {}
    for item in text.split(","):
        match = _RANGE_ITEM.fullmatch(item.strip())
        if match is None:
            msg = (
                f"bad frame range {text!r}: {item.strip()!r} is not N, N-M or N-MxS "
                "(frames are whole numbers >= 0)"
            )
            raise JobSpecError(msg)
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last > MAX_FRAME_NUMBER:
            msg = f"bad frame range {text!r}: frame numbers are at most {MAX_FRAME_NUMBER}"
            raise JobSpecError(msg)
        if last < first:
            msg = f"bad frame range {text!r}: {item.strip()!r} ends before it starts"
            raise JobSpecError(msg)
        if step < 1:
            msg = f"bad frame range {text!r}: step in {item.strip()!r} must be at least 1"
            raise JobSpecError(msg)
        if len(frames) + (last - first) // step + 1 > MAX_FRAMES_PER_JOB:
            msg = f"bad frame range {text!r}: more than {MAX_FRAMES_PER_JOB} frames"
            raise JobSpecError(msg)
        for start in range(first, last + 1, step * _SLICE):  # see _SLICE
            frames.update(dict.fromkeys(range(start, min(last + 1, start + step * _SLICE), step)))
    return tuple(frames)


def frames_named(text: str) -> int:
    """How many frames `text` names, repeats counted, without building them: cheap,
    to bound a request before its frames are built (0 for text that does not parse,
    which `parse_frame_range` then refuses)."""
    named = 0
    for item in text.split(","):
        match = _RANGE_ITEM.fullmatch(item.strip())
        if match is None:
            return named
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last >= first and step >= 1:
            named += (last - first) // step + 1
    return named if text.strip() else 1


def format_frame_range(numbers: Iterable[int]) -> str:
    """The inverse of `parse_frame_range` for frames in order: runs as `N-M`."""
    parts: list[str] = []
    run: list[int] = []
    for number in numbers:
        if run and number == run[-1] + 1:
            run.append(number)
            continue
        if run:
            parts.append(_run_text(run))
        run = [number]
    if run:
        parts.append(_run_text(run))
    return ",".join(parts)


def _run_text(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def compact_frame_range(numbers: tuple[int, ...]) -> str:
    """Frames in any order as a frame range that `parse_frame_range` reads back the
    same: evenly spaced ascending runs as `N-M` or `N-MxS`, so `1-1000000x2` stays
    short where `format_frame_range` would list every frame."""
    parts: list[str] = []
    i, count = 0, len(numbers)
    while i < count:
        first = numbers[i]
        step = numbers[i + 1] - first if i + 1 < count else 0
        end = i + 1
        if step > 0:
            while end < count and numbers[end] - numbers[end - 1] == step:
                end += 1
        if step <= 0 or (step > 1 and end - i < 3):
            parts.append(str(first))
            i += 1
            continue
        last = numbers[end - 1]
        parts.append(f"{first}-{last}" if step == 1 else f"{first}-{last}x{step}")
        i = end
    return ",".join(parts)


def chunked(numbers: tuple[int, ...], size: int) -> list[tuple[int, ...]]:
    """The frames in order, `size` at a time (the last chunk may be shorter)."""
    return [numbers[i : i + size] for i in range(0, len(numbers), size)]


@attrs.define
class Frame:
    number: int
    state: FrameState = FrameState.PENDING
    worker: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    failures: int = 0  # failed attempts: a lost worker or a preemption is not one
    failed_on: str | None = None  # the worker of the last failure: a retry avoids it
    retry_at: float | None = None  # a failed frame waiting out the retry delay
    members: tuple[int, ...] = ()  # a chunk's frames, in order; () for a lone frame
    stopped: bool = False  # suspended while running: its process is SIGSTOPped, holding a slot
    taken: Taken | None = None  # what its latest attempt holds while it runs (None: one slot)
    # frame-by-frame dependencies: job -> its frames (or chunks) this one still waits for
    waits_on: dict[int, int] | None = None

    @property
    def waits(self) -> int:
        return sum(self.waits_on.values()) if self.waits_on else 0

    @property
    def numbers(self) -> tuple[int, ...]:
        return self.members or (self.number,)

    @property
    def label(self) -> str:
        return format_frame_range(self.members) if self.members else str(self.number)

    @property
    def holds_process(self) -> bool:
        """Its latest attempt's process is alive on `worker` (running or stopped)."""
        return self.state is FrameState.RUNNING or self.stopped

    def view(self) -> dict[str, Any]:
        return {
            "frame": self.number,
            "frames": self.label,
            "state": self.state.value,
            "worker": self.worker,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "failures": self.failures,
            "retry_at": self.retry_at,
            "stopped": self.stopped,
            "waits": self.waits,
        }


@attrs.define
class Job:
    id: int
    name: str
    cluster: ClusterPath
    priority: int
    restrictions: Restrictions
    patterns: CrossClusterPatterns
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
    type: str | None = None  # runs only on workers that advertise this job type
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
        self.pending = ReadyStack(self.frames, [f.number for f in made if _ready(f)])

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
            self.type is not None
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
            "type": self.type,
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
            if _ready(frame):
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
            patterns=self.patterns,
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
            "job_type": self.type,
            "requires": str(self.requires),
            "reserve": str(self.reserve),
            "reason": self.reason(state),
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
        out = self.summary()
        out.update(
            restrictions=str(self.restrictions),
            cross_cluster=str(self.patterns),
            argv=list(self.argv),
            waiting_on=sorted(self.waiting_on),
            subjob_ids=list(self.children),
            frame_list=[f.view() for f in self.frames.views()],
        )
        return out


def _ready(frame: Frame) -> bool:
    return frame.state is FrameState.PENDING and frame.retry_at is None and not frame.waits_on


# --------------------------------------------------------------------------- frame tables
# A job's frames without a Python object per frame while they wait: the numbers are a
# range (or flat arrays), and a `Frame` is made only when something touches the frame.


class FrameNumbers:
    """A job's frame numbers in order, and each one's position, in constant memory per
    frame and no object per frame: a `range` when they are evenly spaced (`1-1000000`,
    `1-999x2`), else an array of them with a sorted copy to look positions up in."""

    __slots__ = ("_range", "_sorted", "_values", "_where")

    def __init__(self, numbers: Sequence[int]) -> None:
        self._range: range | None = numbers if isinstance(numbers, range) else _as_range(numbers)
        self._values: Sequence[int] = ()
        self._sorted: Sequence[int] = ()
        self._where: Sequence[int] = ()
        if self._range is None:
            count, at = len(numbers), numbers.__getitem__
            runs = [
                sorted(range(i, min(i + _SLICE, count)), key=at) for i in range(0, count, _SLICE)
            ]
            order = list(heapq.merge(*runs, key=at))  # a sort in slices (see _SLICE)
            self._values = _flat(numbers)
            self._sorted = _flat([numbers[i] for i in order])
            self._where = _flat(order)

    def __len__(self) -> int:
        return len(self._range if self._range is not None else self._values)

    def __getitem__(self, index: int) -> int:
        return (self._range if self._range is not None else self._values)[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._range if self._range is not None else self._values)

    def slice(self, start: int, stop: int) -> tuple[int, ...]:
        return tuple((self._range if self._range is not None else self._values)[start:stop])

    def position(self, number: int) -> int | None:
        """Where `number` is in the order, or None if it is not one of them."""
        if self._range is not None:
            return self._range.index(number) if number in self._range else None
        at = bisect.bisect_left(self._sorted, number)
        if at < len(self._sorted) and self._sorted[at] == number:
            return self._where[at]
        return None

    def text(self) -> str:
        """As a frame range that `parse_frame_range` reads back the same."""
        if self._range is not None and len(self._range) > 1:
            first, last, step = self._range[0], self._range[-1], self._range.step
            return f"{first}-{last}" if step == 1 else f"{first}-{last}x{step}"
        return compact_frame_range(tuple(self))


def frame_numbers(text: str) -> FrameNumbers:
    """`parse_frame_range(text)` as `FrameNumbers`. A lone `N-M` or `N-MxS` (the usual
    range) becomes a `range` without building its frames: a million frames cost
    nothing here; anything else, or anything refused, goes through `parse_frame_range`."""
    match = _RANGE_ITEM.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is not None and match.group(2) is not None:
        first, last = int(match.group(1)), int(match.group(2))
        step = int(match.group(3)) if match.group(3) is not None else 1
        fits = first <= last <= MAX_FRAME_NUMBER and step >= 1
        if fits and (last - first) // step < MAX_FRAMES_PER_JOB:
            return FrameNumbers(range(first, last + 1, step))
    return FrameNumbers(parse_frame_range(text))


def _as_range(numbers: Sequence[int]) -> range | None:
    """`numbers` as a range, if they are evenly spaced and ascending."""
    if not numbers:
        return range(0)
    first = numbers[0]
    step = numbers[1] - first if len(numbers) > 1 else 1
    if step < 1:
        return None
    candidate = range(first, numbers[-1] + 1, step)
    if len(candidate) != len(numbers):
        return None
    for i in range(0, len(numbers), _SLICE):
        if tuple(numbers[i : i + _SLICE]) != tuple(candidate[i : i + _SLICE]):
            return None
    return candidate


def _flat(values: Sequence[int]) -> Sequence[int]:
    """8 bytes per number (a tuple where one does not fit in 64 bits)."""
    flat = array.array("q")
    try:
        for i in range(0, len(values), _SLICE):
            flat.extend(values[i : i + _SLICE])
    except OverflowError:
        return tuple(values)
    return flat


class FrameTable(Mapping[int, Frame]):
    """A job's dispatch units (frames, or chunks of `chunk` frames) by their first frame
    number, in order. A unit nothing has touched has no `Frame` yet: it is pending and
    ready to run. Looking a unit up (`[]`, `get`, `values`) makes its `Frame` once, and
    calls `on_make` with it; `peek` and `views` only read."""

    def __init__(
        self, numbers: FrameNumbers, chunk: int = 1, made: dict[int, Frame] | None = None
    ) -> None:
        self.numbers = numbers
        self.chunk = chunk
        self.made: dict[int, Frame] = made if made is not None else {}
        self._units = -(-len(numbers) // chunk)
        self.on_make: Callable[[Frame], None] | None = None

    @property
    def fresh(self) -> int:
        """Units nothing has touched (no `Frame` yet)."""
        return self._units - len(self.made)

    def __len__(self) -> int:
        return self._units

    def key_at(self, index: int) -> int:
        return self.numbers[index * self.chunk]

    def position(self, key: int) -> int | None:
        """The unit `key` starts: its place in the order, or None."""
        at = self.numbers.position(key)
        if at is None or at % self.chunk:
            return None
        return at // self.chunk

    def unit_key(self, number: int) -> int | None:
        """The key of the unit that runs frame `number`, or None."""
        at = self.numbers.position(number)
        return None if at is None else self.key_at(at // self.chunk)

    def _fresh_frame(self, key: int, index: int) -> Frame:
        if self.chunk == 1:
            return Frame(key)
        return Frame(key, members=self.numbers.slice(index * self.chunk, (index + 1) * self.chunk))

    def __getitem__(self, key: int) -> Frame:
        frame = self.made.get(key)
        if frame is not None:
            return frame
        index = self.position(key) if isinstance(key, int) else None
        if index is None:
            raise KeyError(key)
        frame = self.made[key] = self._fresh_frame(key, index)
        if self.on_make is not None:
            self.on_make(frame)
        return frame

    def __contains__(self, key: object) -> bool:
        return key in self.made or (isinstance(key, int) and self.position(key) is not None)

    def __iter__(self) -> Iterator[int]:
        if self.chunk == 1:
            return iter(self.numbers)
        return (self.key_at(index) for index in range(self._units))

    def peek(self, key: int) -> Frame | None:
        """The unit's frame as it is, without making one that is kept."""
        frame = self.made.get(key)
        if frame is not None:
            return frame
        index = self.position(key)
        return None if index is None else self._fresh_frame(key, index)

    def views(self) -> Iterator[Frame]:
        """Every unit's frame, in order, for reading: fresh ones are made and dropped."""
        made = self.made
        for index, key in enumerate(self):
            yield made.get(key) or self._fresh_frame(key, index)


class ReadyStack:
    """A job's ready frames (next to run first), kept in submission order without a
    list of every frame. A cursor walks the table: every ready unit at or after it is
    found there (an untouched unit is ready; a made one is if its frame is), and
    `behind` holds the positions of ready frames before it (a frame requeued after the
    cursor passed it). Frames made or moved in order, as dispatch and whole-job controls
    do, cost O(1) each."""

    def __init__(self, table: FrameTable, ready: Iterable[int]) -> None:
        self.table = table
        self.behind: SortedList[int] = SortedList()
        self._cursor = 0  # the units before it are made, and ready only if in `behind`
        self._ahead = 0  # made frames at or after the cursor that are ready
        for key in ready:
            self.push(key)
        table.on_make = self._made

    def _position(self, key: int) -> int:
        position = self.table.position(key)
        assert position is not None, key
        return position

    def _made(self, frame: Frame) -> None:
        self._ahead += 1  # an untouched unit, made: ready, and at or after the cursor

    def _ready_at(self, index: int) -> bool:
        frame = self.table.made.get(self.table.key_at(index))
        return frame is None or _ready(frame)

    def _advance(self) -> None:
        """Move the cursor to the next ready unit (past made frames that are not)."""
        table = self.table
        while self._cursor < len(table) and not self._ready_at(self._cursor):
            self._cursor += 1

    def __len__(self) -> int:
        return len(self.behind) + self.table.fresh + self._ahead

    def __bool__(self) -> bool:
        return len(self) > 0

    def top(self) -> int:
        """The key of the next frame to run (the stack must not be empty)."""
        if self.behind:
            return self.table.key_at(self.behind[0])
        self._advance()
        return self.table.key_at(self._cursor)

    def first(self, count: int) -> list[int]:
        """The keys of the next `count` frames to run, the next first."""
        table = self.table
        keys = [table.key_at(p) for p in self.behind.islice(0, count)]
        self._advance()
        index = self._cursor
        while len(keys) < count and index < len(table):
            if self._ready_at(index):
                keys.append(table.key_at(index))
            index += 1
        return keys

    def push(self, key: int) -> None:
        """A made frame became ready."""
        position = self._position(key)
        if position < self._cursor:
            self.behind.add(position)
        else:
            self._ahead += 1

    def discard(self, key: int) -> None:
        """A made frame is no longer ready."""
        position = self._position(key)
        if position < self._cursor:
            self.behind.remove(position)
        else:
            self._ahead -= 1

    def __iter__(self) -> Iterator[int]:
        table = self.table
        yield from (table.key_at(p) for p in self.behind)
        yield from (table.key_at(i) for i in range(self._cursor, len(table)) if self._ready_at(i))


@attrs.define
class Worker:
    name: str
    cluster: ClusterPath
    restrictions: Restrictions
    slots: int
    connected_at: float
    seq: int = 0  # join order: ties between workers resolve by it, the same in every run
    types: frozenset[str] = frozenset()  # the job types it runs
    properties: dict[str, Any] = attrs.field(factory=dict)  # host facts: os, cpus, memory...
    resources: dict[str, float] = attrs.field(factory=dict)  # totals, besides slots
    used: dict[str, float] = attrs.field(factory=dict)  # what running frames hold, slots too
    locked: str | None = None  # "drain" or "purge": takes no new work
    # (job, frame, attempt) of each process the worker runs, and what it holds
    running: dict[tuple[int, int, int], Taken] = attrs.field(factory=dict)
    # preemption disabled: jobs whose frame just ended here, to keep the freed slots
    sticky: list[int] = attrs.field(factory=list)

    @property
    def free(self) -> float:
        """Free slots."""
        return self.slots - self.used.get("slots", 0)

    def available(self, name: str) -> float:
        total = self.slots if name == "slots" else self.resources.get(name, 0)
        return total - self.used.get(name, 0)

    def hold(self, key: tuple[int, int, int], taken: Taken) -> None:
        self.running[key] = taken
        used = self.used
        for name, amount in taken.items():
            used[name] = used.get(name, 0) + amount

    def release(self, key: tuple[int, int, int]) -> Taken:
        taken = self.running.pop(key)
        used = self.used
        for name, amount in taken.items():
            used[name] -= amount
        return taken

    @functools.cached_property
    def facts(self) -> dict[str, Any]:
        """What a requirement reads as `host.*`: its properties, then what farmd knows.
        A property never has one of farmd's names (`worker_settings.RESERVED_PROPERTIES`);
        `memory` is the `memory` counter, which farmd's agent sets to the host's."""
        return {
            **self.properties,
            "name": self.name,
            "cluster": self.cluster,
            "slots": self.slots,
            "types": sorted(self.types),
            **self.resources,
            "memory": self.resources.get("memory", 0),
        }

    @functools.cached_property
    def view(self) -> WorkerView:
        """What the ranking index needs of it; cluster and restrictions never change
        while it is connected, so this is built once, not at every pick."""
        return WorkerView(cluster=self.cluster, restrictions=self.restrictions)

    def settings(self) -> dict[str, Any]:
        """What it was configured with, in the form the supervisor computes for a
        registration (to tell whether a reload changes it)."""
        return {
            "cluster": self.cluster,
            "restrictions": str(self.restrictions),
            "slots": self.slots,
            "types": tuple(sorted(self.types)),
            "properties": dict(self.properties),
            "resources": dict(self.resources),
        }

    @property
    def summary_state(self) -> str:
        return "locked" if self.locked else "busy" if self.running else "idle"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cluster": self.cluster,
            "restrictions": str(self.restrictions),
            "state": self.summary_state,
            "locked": self.locked,
            "slots": self.slots,
            "used": self.used.get("slots", 0),
            "types": sorted(self.types),
            "properties": dict(self.properties),
            "resources": {n: [self.used.get(n, 0), t] for n, t in sorted(self.resources.items())},
            "running": sorted({f"{job}:{frame}" for job, frame, _ in self.running}),
            "connected_at": self.connected_at,
        }


# --------------------------------------------------------------------------- rows
# What the store keeps: plain rows, built by the core from its jobs and frames.


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
class Changes:
    """What one or more events changed: whole rows (last one wins) and removed jobs."""

    jobs: tuple[JobRow, ...] = ()
    frames: tuple[FrameRow, ...] = ()
    next_job_id: int | None = None
    removed: tuple[int, ...] = ()  # job ids whose rows (job and frames) go
    locks: dict[str, str] | None = None  # every locked worker's mode, when that changed

    def __bool__(self) -> bool:
        return bool(
            self.jobs
            or self.frames
            or self.next_job_id is not None
            or self.removed
            or self.locks is not None
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
        for batch in batches:
            if batch.locks is not None:
                locks = batch.locks
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
            tuple(jobs.values()), tuple(frames.values()), next_job_id, tuple(removed), locks
        )


@attrs.frozen
class Snapshot:
    jobs: tuple[JobRow, ...] = ()
    frames: tuple[FrameRow, ...] = ()
    next_job_id: int = 1
    locks: dict[str, str] = attrs.field(factory=dict)  # locked workers, by name
