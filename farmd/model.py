"""The supervisor core's data model, by the names it has always been imported under.

The model lives in four modules, one per concern; this module only re-exports them, so
that `from farmd.model import X` keeps working for every importer while they move:

- `farmd.frames`: frame numbers and Qube frame ranges (`parse_frame_range`,
  `FrameNumbers`), a job's lazily made `Frame` records (`FrameTable`) and its ready
  frames (`ReadyStack`).
- `farmd.jobs`: the frame state machine (`TRANSITIONS`, `FrameEvent`, `Job.move`, the
  one place a frame's state changes), admin controls, dependencies and `Job`.
- `farmd.workers`: `Worker`, a worker host as the core holds it.
- `farmd.rows`: what the store keeps (`JobRow`, `FrameRow`, `Changes`, `Snapshot`).

New code imports from the home module. Design debt: once no importer names
`farmd.model`, delete it.
"""

from __future__ import annotations

from farmd.frames import (
    MAX_FRAME_NUMBER,
    MAX_FRAMES_PER_JOB,
    Frame,
    FrameNumbers,
    FrameState,
    FrameTable,
    ReadyStack,
    chunked,
    compact_frame_range,
    format_frame_range,
    frame_numbers,
    frames_named,
    is_ready,
    parse_frame_range,
)
from farmd.jobs import (
    CONTROLS,
    DONE,
    TRANSITIONS,
    Control,
    Dependency,
    DependencyMode,
    FrameEvent,
    Job,
    JobState,
    parse_dependency,
    parse_target,
    refusal,
)
from farmd.rows import Changes, FrameRow, JobRow, Snapshot
from farmd.workers import Worker

__all__ = [
    "CONTROLS",
    "DONE",
    "MAX_FRAMES_PER_JOB",
    "MAX_FRAME_NUMBER",
    "TRANSITIONS",
    "Changes",
    "Control",
    "Dependency",
    "DependencyMode",
    "Frame",
    "FrameEvent",
    "FrameNumbers",
    "FrameRow",
    "FrameState",
    "FrameTable",
    "Job",
    "JobRow",
    "JobState",
    "ReadyStack",
    "Snapshot",
    "Worker",
    "chunked",
    "compact_frame_range",
    "format_frame_range",
    "frame_numbers",
    "frames_named",
    "is_ready",
    "parse_dependency",
    "parse_frame_range",
    "parse_target",
    "refusal",
]
