"""Rows in, jobs out (and back): what the store keeps, checked on the way in.

Theory of operation
-------------------
The store keeps plain rows (`JobRow`, `FrameRow`), built here from the scheduler's jobs
and frames (`job_row`, `frame_row`) as an event changes them. On a restart
`read_snapshot` turns the rows back into jobs, trusting none of them: a row that a hand
edit, a bad disk or an older farmd's looser checks left unusable (a cluster path over
the bounds, an unknown frame state, an unparsable range...) must not keep the farm from
starting. Its job is *quarantined*: kept out of the scheduler, with why. Its rows are
left as they are (nothing this farmd writes names its id, so a fixed farmd restores it)
and its id is never reused. A job's family goes with it, as a parent's state derives
from its sub-jobs': the job's parent and sub-jobs are quarantined too, and so on.

This module is pure and knows nothing of the scheduler's indexes: `Scheduler` installs
what `read_snapshot` returns when it handles a `Restore` event.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from typing import TypeGuard

from farmd.cluster import parse_cluster, parse_patterns, parse_restrictions
from farmd.core.drafting import (
    _check_options,
    parse_env,
    release_params,
    release_pin,
)
from farmd.errors import FarmdError, JobSpecError
from farmd.frames import (
    Frame,
    FrameNumbers,
    FrameState,
    FrameTable,
    format_frame_range,
    frame_numbers,
    parse_frame_range,
)
from farmd.jobs import Job, JobState, parse_dependency
from farmd.requirements import parse_requirement
from farmd.resources import check_name, parse_reservation, parse_taken, taken_text
from farmd.rows import FrameRow, JobRow, Snapshot
from farmd.values import check_notify


def missing_job(job_id: int, quarantined: dict[int, str]) -> str:
    """Why there is no job `job_id`, in one line: none was made, or `read_snapshot`
    quarantined it (`quarantined`: the scheduler's, by id, with why)."""
    why = quarantined.get(job_id)
    if why is None:
        return f"job {job_id} does not exist"
    return f"job {job_id} is quarantined: its stored rows could not be restored ({why})"


# A job built ahead from its rows (`prebuild`): the job row, its frame rows, the job.
Built = tuple[JobRow, tuple[FrameRow, ...], Job]


def _frames_by_job(snapshot: Snapshot) -> dict[int, list[FrameRow]]:
    frame_rows: dict[int, list[FrameRow]] = {}
    for f in snapshot.frames:
        frame_rows.setdefault(f.job_id, []).append(f)
    return frame_rows


def _same_rows(built: Built | None, row: JobRow, frames: list[FrameRow]) -> bool:
    """Whether `built` was made from these very row objects (identity: a warm store
    hands back the same object for a row that did not change)."""
    return (
        built is not None
        and built[0] is row
        and len(built[1]) == len(frames)
        and all(a is b for a, b in zip(built[1], frames, strict=True))
    )


def prebuild(snapshot: Snapshot, before: Mapping[int, Built]) -> dict[int, Built]:
    """The jobs of `snapshot`'s rows, built ahead (a warm standby, off the event loop):
    those `before` built from the same rows are kept, the others made again; a job
    whose rows are refused is left out (`read_snapshot` quarantines it, saying why).
    Pure: each job is built exactly as `read_snapshot` would, and not linked to its
    family yet. Each built job must go to one restore only (it is taken as it is)."""
    frame_rows = _frames_by_job(snapshot)
    built: dict[int, Built] = {}
    for row in snapshot.jobs:
        frames = frame_rows.get(row.id, [])
        kept = before.get(row.id)
        if kept is not None and _same_rows(kept, row, frames):
            built[row.id] = kept
            continue
        try:
            built[row.id] = (row, tuple(frames), _restored_job(row, frames))
        except Exception:  # quarantined by the restore itself, saying why
            continue
    return built


def read_snapshot(
    snapshot: Snapshot, prebuilt: Mapping[int, Built] | None = None
) -> tuple[dict[int, Job], dict[int, str]]:
    """The jobs the snapshot's rows make, sub-jobs linked to their parents, and the
    jobs quarantined with why (by id, in order). Changes nothing but what it builds,
    and the `prebuilt` jobs (`prebuild`) made from the same rows, which it takes."""
    frame_rows = _frames_by_job(snapshot)
    prebuilt = prebuilt or {}
    restored: dict[int, Job] = {}
    quarantined: dict[int, str] = {}
    family: dict[int, list[int]] = {}  # job -> its parent and sub-jobs, as rows say
    for row in snapshot.jobs:
        frames = frame_rows.pop(row.id, [])
        built = prebuilt.get(row.id)
        try:
            if built is not None and _same_rows(built, row, frames):
                restored[row.id] = built[2]
            else:
                restored[row.id] = _restored_job(row, frames)
        except Exception as exc:  # anything in a row may be wrong: never fatal here
            quarantined[row.id] = _why(exc)
        if _is_id(row.parent):
            family.setdefault(row.id, []).append(row.parent)
            family.setdefault(row.parent, []).append(row.id)
    for job_id in frame_rows:  # frames whose job row is gone
        quarantined[job_id] = "it has frame rows but no job row"
    stack = list(quarantined)
    while stack:  # bounded: each job is quarantined (and pushed) at most once
        job_id = stack.pop()
        for kin in family.get(job_id, ()):
            if kin in restored:
                relation = "parent" if restored.pop(kin).parent == job_id else "sub-job"
                quarantined[kin] = f"its {relation} (job {job_id}) is quarantined"
                stack.append(kin)
    # A sub-job's id is above its parent's: from the highest id down, every job's
    # sub-jobs have their final state before the job's own is read.
    for job in restored.values():
        if job.parent in restored:
            restored[job.parent].children[job.id] = None
    for job_id in sorted(restored, reverse=True):
        job = restored[job_id]
        state = job.state
        if job.parent in restored and not state.ended:
            restored[job.parent].open_children.add(job_id)
        elif job.parent in restored and state is not JobState.COMPLETE:
            restored[job.parent].failed_children[job_id] = state
    return restored, dict(sorted(quarantined.items()))


def _why(exc: Exception) -> str:
    """A refused row's exception as one bounded line (a row may hold anything)."""
    text = str(exc) if isinstance(exc, FarmdError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _row_field(ok: bool, what: str, value: object) -> None:
    if not ok:
        msg = f"bad stored {what} {reprlib.repr(value)}"
        raise JobSpecError(msg)


def _restored_frame(f: FrameRow) -> Frame:
    """A frame from its stored row, every field checked (it may have been edited)."""
    _row_field(_is_id(f.number), "frame number", f.number)
    _row_field(_is_id(f.attempts) and f.attempts >= 0, "attempts", f.attempts)
    _row_field(_is_id(f.failures) and f.failures >= 0, "failures", f.failures)
    for what, name in (("worker", f.worker), ("failed_on", f.failed_on)):
        _row_field(name is None or isinstance(name, str), what, name)
    for what, time in (
        ("started_at", f.started_at),
        ("finished_at", f.finished_at),
        ("retry_at", f.retry_at),
    ):
        _row_field(time is None or _is_time(time), what, time)
    _row_field(f.exit_code is None or _is_id(f.exit_code), "exit code", f.exit_code)
    _row_field(isinstance(f.stopped, bool), "stopped flag", f.stopped)
    members = parse_frame_range(f.members) if f.members is not None else ()
    _row_field(not members or members[0] == f.number, "chunk", f.members)
    frame = Frame(
        number=f.number,
        state=FrameState(f.state),
        worker=f.worker,
        attempts=f.attempts,
        started_at=f.started_at,
        finished_at=f.finished_at,
        exit_code=f.exit_code,
        failures=f.failures,
        failed_on=f.failed_on,
        retry_at=f.retry_at,
        members=members,
        stopped=f.stopped,
        taken=parse_taken(f.taken) if f.taken else None,
    )
    _row_field(not frame.holds_process or frame.worker is not None, "worker", f.worker)
    return frame


def _restored_job(row: JobRow, frame_rows: list[FrameRow]) -> Job:
    """A job from its stored rows, checked as a submit is: raises whatever it finds
    wrong (the caller quarantines the job), changes nothing."""
    _row_field(_is_id(row.id) and row.id >= 1, "job id", row.id)
    _row_field(isinstance(row.name, str), "name", row.name)
    argv_ok = isinstance(row.argv, tuple) and bool(row.argv)
    _row_field(argv_ok and all(isinstance(a, str) for a in row.argv), "command", row.argv)
    _row_field(isinstance(row.depends_on, tuple), "dependencies", row.depends_on)
    _row_field(_is_time(row.submitted_at), "submit time", row.submitted_at)
    _row_field(_is_id(row.chunk) and row.chunk >= 1, "chunk", row.chunk)
    # a sub-job's id is above its parent's (restore relies on it): no cycle either
    parent_ok = row.parent is None or (_is_id(row.parent) and 1 <= row.parent < row.id)
    _row_field(parent_ok, "parent", row.parent)
    _row_field(isinstance(row.uninterruptible, bool), "uninterruptible flag", row.uninterruptible)
    waiting_ok = row.waiting_on is None or (
        isinstance(row.waiting_on, tuple) and all(_is_id(i) for i in row.waiting_on)
    )
    _row_field(waiting_ok, "waiting_on", row.waiting_on)
    _check_options(row.instances, row.retries, row.retry_delay, row.time_limit)
    made: dict[int, Frame] = {}
    for f in frame_rows:
        frame = _restored_frame(f)
        made[frame.number] = frame
    if row.frames is not None:  # schema 5: the range; untouched frames have no row
        _row_field(isinstance(row.frames, str), "frame range", row.frames)
        numbers = frame_numbers(row.frames)
    else:  # rows from before schema 5: one per frame
        _row_field(bool(made), "frames", "none")
        numbers = FrameNumbers(tuple(n for frame in made.values() for n in frame.numbers))
    outside = [key for key in made if numbers.position(key) is None]
    _row_field(not outside, "frame rows", f"{outside[:3]} outside the frame range")
    frames = FrameTable(numbers, row.chunk, made)
    for name, at in (("start time", row.started_at), ("end time", row.ended_at)):
        _row_field(at is None or _is_time(at), name, at)
    started_at = row.started_at
    if started_at is None:  # a row from before schema 9: its frames' earliest start
        started_at = min((f.started_at for f in made.values() if f.started_at), default=None)
    key_ok = row.request_key is None or isinstance(row.request_key, str)
    _row_field(key_ok, "request key", row.request_key)
    job = Job(
        id=row.id,
        name=row.name,
        cluster=parse_cluster(row.cluster),
        priority=row.priority,
        restrictions=parse_restrictions(row.restrictions),
        cross_cluster=parse_patterns(row.cross_cluster),
        argv=tuple(row.argv),
        frames=frames,
        depends_on=tuple(parse_dependency(d) for d in row.depends_on),
        submitted_at=row.submitted_at,
        instances=row.instances,
        retries=row.retries,
        retry_delay=row.retry_delay,
        time_limit=row.time_limit,
        chunk=row.chunk,
        parent=row.parent,
        uninterruptible=row.uninterruptible,
        job_type=check_name(row.job_type, "job type") if row.job_type is not None else None,
        requires=parse_requirement(row.requires),
        reserve=parse_reservation(row.reserve),
        request_key=row.request_key,
        request_digest=row.request_digest or "",
        owner=row.owner if isinstance(row.owner, str) else "",
        env=parse_env(row.env),
        pinned=release_pin(row.release),
        params=release_params(row.params),
        notify=check_notify(row.notify) if isinstance(row.notify, str) else "",
        started_at=started_at,
        ended_at=row.ended_at,
    )
    job.frame_range = row.frames or numbers.text()
    job.queued()  # checks the priority, as a submit does
    return job


def job_row(job: Job) -> JobRow:
    return JobRow(
        id=job.id,
        name=job.name,
        cluster=job.cluster,
        priority=job.priority,
        restrictions=str(job.restrictions),
        cross_cluster=str(job.cross_cluster),
        argv=job.argv,
        depends_on=tuple(str(dep) for dep in job.depends_on),
        submitted_at=job.submitted_at,
        instances=job.instances,
        retries=job.retries,
        retry_delay=job.retry_delay,
        time_limit=job.time_limit,
        chunk=job.chunk,
        parent=job.parent,
        uninterruptible=job.uninterruptible,
        waiting_on=tuple(sorted(job.waiting_on)),
        job_type=job.job_type,
        requires=str(job.requires),
        reserve="" if job.reserve.plain else str(job.reserve),
        frames=job.frame_range,
        request_key=job.request_key,
        request_digest=job.request_digest,
        owner=job.owner,
        env=tuple(f"{name}={value}" for name, value in job.env.items()),
        release=json.dumps(job.pinned, sort_keys=True) if job.pinned is not None else None,
        params=json.dumps(job.params, sort_keys=True),
        notify=job.notify,
        started_at=job.started_at,
        ended_at=job.ended_at,
    )


def frame_row(job: Job, frame: Frame) -> FrameRow:
    return FrameRow(
        job_id=job.id,
        number=frame.number,
        position=job.frames.position(frame.number) or 0,
        state=frame.state.value,
        worker=frame.worker,
        attempts=frame.attempts,
        started_at=frame.started_at,
        finished_at=frame.finished_at,
        exit_code=frame.exit_code,
        failures=frame.failures,
        failed_on=frame.failed_on,
        retry_at=frame.retry_at,
        members=format_frame_range(frame.members) if frame.members else None,
        stopped=frame.stopped,
        taken=taken_text(frame.taken) if frame.taken is not None else None,
    )
