"""Job control in the supervisor core: kill, block, unblock, retry and remove.

Every (frame state, control) pair is tried on a frame named by the admin: it either
moves the frame to the state the table says, or is refused in one line and changes
nothing. The derived job state must agree with its frames throughout.
"""

from __future__ import annotations

import pytest

from farmd.core import (
    ControlFrames,
    KillJobs,
    KillOnWorker,
    RemoveJobs,
    ResumeOnWorker,
    Scheduler,
    SuspendOnWorker,
)
from farmd.errors import JobSpecError, UnknownJobError
from farmd.frames import FrameState
from farmd.jobs import CONTROLS, Control
from tests.test_core import actions, ended, frame_view, joined, starts, state, submit


def farm_with_frame_in(frame_state: FrameState) -> Scheduler:
    """Job 1, frame 1 in `frame_state` (frame 2 stays pending to keep the job open)."""
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(frames="1-2")))
    if frame_state is FrameState.PENDING:
        core.handle(ControlFrames(control=Control.BLOCK, targets=("1:1",), now=0.5))
        core.handle(ControlFrames(control=Control.UNBLOCK, targets=("1:1",), now=0.6))
    elif frame_state is FrameState.COMPLETE:
        core.handle(ended(start, 0, now=1.0))
    elif frame_state is FrameState.FAILED:
        core.handle(ended(start, 1, now=1.0))
    elif frame_state is FrameState.KILLED:
        core.handle(ControlFrames(control=Control.KILL, targets=("1:1",), now=1.0))
    elif frame_state is FrameState.BLOCKED:
        core.handle(ControlFrames(control=Control.BLOCK, targets=("1:1",), now=1.0))
    elif frame_state is FrameState.SUSPENDED:  # suspended while running: its process stopped
        core.handle(ControlFrames(control=Control.SUSPEND, targets=("1:1",), now=1.0))
    assert frame_view(core, 1, 1)["state"] == frame_state.value
    return core


@pytest.mark.parametrize("control", list(Control), ids=lambda c: c.value)
@pytest.mark.parametrize("frame_state", list(FrameState), ids=lambda s: s.value)
def test_every_state_and_control_moves_as_the_table_says_or_is_refused(
    frame_state: FrameState, control: Control
) -> None:
    core = farm_with_frame_in(frame_state)
    before = core.job_view(1)
    event = ControlFrames(control=control, targets=("1:1",), now=5.0)
    target = CONTROLS.get((frame_state, control))
    if target is None:
        with pytest.raises(JobSpecError) as refused:
            core.handle(event)
        assert str(refused.value).startswith(f"frame 1:1 is {frame_state.value}: it cannot be")
        assert "\n" not in str(refused.value)
        assert core.job_view(1) == before
        return
    out = core.handle(event)
    assert out.result == ["1:1"]
    after = frame_view(core, 1, 1)["state"]
    # a frame sent back to pending may have been dispatched again at once, and a
    # stopped process resumes running
    assert after == target.value or (target is FrameState.PENDING and after == "running")
    signals = [
        c for c in actions(out) if isinstance(c, KillOnWorker | SuspendOnWorker | ResumeOnWorker)
    ]
    # only a frame with a live process (running, or suspended while running) is signalled
    assert bool(signals) == (frame_state in (FrameState.RUNNING, FrameState.SUSPENDED))
    counts = core.job_view(1)["frames"]
    frames = core.job_view(1)["frame_list"]
    assert counts == {s.value: sum(f["state"] == s.value for f in frames) for s in FrameState}


def test_block_holds_a_whole_job_and_unblock_releases_it() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(frames="1-3")))
    out = core.handle(ControlFrames(control=Control.BLOCK, targets=("1",), now=1.0))
    assert out.result == ["1:1", "1:2", "1:3"]
    assert KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1) in actions(out)
    assert state(core, 1) == "blocked"
    # the stopped attempt's report frees the slot, and nothing else runs
    assert starts(core.handle(ended(start, -15, now=2.0))) == []
    assert frame_view(core, 1, 1)["failures"] == 0  # a block uses no retry
    out = core.handle(ControlFrames(control=Control.UNBLOCK, targets=("1",), now=3.0))
    assert [(s.frame, s.attempt) for s in starts(out)] == [(1, 2)]
    assert state(core, 1) == "running"


def test_retry_runs_failed_frames_again_and_reopens_the_job() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit()))
    core.handle(ended(start, 2, now=1.0))
    assert state(core, 1) == "failed"
    assert core.clusters_view()[0]["jobs_total"] == 0
    out = core.handle(ControlFrames(control=Control.RETRY, targets=("1",), now=2.0))
    assert [(s.frame, s.attempt) for s in starts(out)] == [(1, 2)]
    assert core.clusters_view()[0]["jobs_total"] == 1
    view = frame_view(core, 1, 1)
    assert (view["failures"], view["exit_code"]) == (0, None)


def test_a_request_with_one_bad_target_changes_nothing() -> None:
    core = Scheduler()
    core.handle(submit(frames="1-3"))
    before = core.job_view(1)
    for targets, error in (
        (("1:1", "1:9"), "job 1 has no frame 9"),
        (("1:1", "2"), "job 2 does not exist"),
        (("1:1", "x"), "bad target 'x'"),
    ):
        with pytest.raises((JobSpecError, UnknownJobError), match=error):
            core.handle(ControlFrames(control=Control.BLOCK, targets=targets, now=1.0))
        assert core.job_view(1) == before


def test_remove_forgets_ended_jobs_only() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(submit(depends_on=(1,)))
    with pytest.raises(JobSpecError, match="job 1 is pending: kill it before removing it"):
        core.handle(RemoveJobs(job_ids=(1,), now=1.0))
    core.handle(KillJobs(job_ids=(1,), now=2.0))
    with pytest.raises(JobSpecError, match="job 1 is a dependency of job 2"):
        core.handle(RemoveJobs(job_ids=(1,), now=3.0))
    core.handle(KillJobs(job_ids=(2,), now=4.0))
    out = core.handle(RemoveJobs(job_ids=(1, 2), now=5.0))
    assert (out.result, out.changes.removed) == ([1, 2], (1, 2))
    assert core.jobs_page()["jobs"] == []
    with pytest.raises(UnknownJobError):
        core.job_view(1)
