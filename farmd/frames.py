"""A job's frames: their numbers, the text they are written in, and the records made
for them.

Theory of operation
-------------------
A job is a command run once per frame, or once per chunk of frames (`--chunk N`): the
unit of dispatch is a `Frame` keyed by its first frame number, whose `members` are the
frames it covers. A frame's `attempts` counts its dispatches and doubles as the fencing
token: only a result for the latest attempt may change it.

Frame numbers are written as Qube's frame ranges (`1-100`, `1,3,5`, `1-10x3`):
`parse_frame_range` reads them, `format_frame_range` and `compact_frame_range` write them
back so that they read back the same.

A job's frames cost nothing per frame until something touches them: its `FrameTable` is
over `FrameNumbers` (a `range`, or flat arrays), and makes a `Frame` the first time a
frame is looked up (to run it, control it, gate it); a frame nothing has touched is
pending and ready. So a 1,000,000-frame job is a range and a few counters until its
frames start, and its ready stack (`ReadyStack`) holds only the frames that were made.

A frame's `state` is only ever changed by `farmd.jobs.Job.move`, by the row of the
transition table there, which also keeps the job's counts and this module's
`ReadyStack` true; nothing here changes a state. Pure: no I/O, no clock.
"""

from __future__ import annotations

import array
import bisect
import enum
import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from sortedcontainers import SortedList

from farmd.errors import JobSpecError
from farmd.resources import Taken

MAX_FRAMES_PER_JOB = 1_000_000
# Work over a job's frames is done at most this many at a time in one C call: a thread
# building a large job (the supervisor drafts one off its loop) then lets the loop's
# thread take the GIL between steps, instead of holding it for a whole million.
_SLICE = 1 << 15

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
    """`parse_frame_range(text)` as `FrameNumbers`. A lone `N`, `N-M` or `N-MxS` (the
    usual range) becomes a `range` without building its frames: a million frames cost
    nothing here; anything else, or anything refused, goes through `parse_frame_range`."""
    match = _RANGE_ITEM.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is not None:
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
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


# --------------------------------------------------------------------------- frames


class FrameState(enum.Enum):
    """Where a frame is. Which state may follow which is `farmd.jobs.TRANSITIONS`, and
    `farmd.jobs.Job.move` makes every change."""

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


def is_ready(frame: Frame) -> bool:
    """Pending, not waiting out a retry delay, and waiting for no frame of another job."""
    return frame.state is FrameState.PENDING and frame.retry_at is None and not frame.waits_on


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

    def views(self, start: int = 0) -> Iterator[Frame]:
        """Each unit's frame in order from place `start` on, for reading: fresh ones are
        made and dropped, so a page of a million-frame job costs the page, not the job."""
        made, chunk, numbers = self.made, self.chunk, self.numbers
        for index in range(start, self._units):
            key = numbers[index * chunk]
            yield made.get(key) or self._fresh_frame(key, index)

    def place_after(self, number: int) -> int | None:
        """The place of the unit after the one that runs frame `number` (what a page of
        frames after `number` starts at), or None if the job has no such frame."""
        at = self.numbers.position(number)
        return None if at is None else at // self.chunk + 1


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
        return frame is None or is_ready(frame)

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
