"""The supervisor core's job options: instances, retries, retry delay, time limits.

Driven by events, asserting the commands and views an admin would see (as in
tests/test_core.py, whose helpers these tests share).
"""

from __future__ import annotations

import pytest

from farmd.core import (
    FrameEnded,
    ModifyJob,
    Restore,
    RunOnWorker,
    Scheduler,
    Tick,
    WakeAt,
    WorkerLost,
)
from farmd.errors import JobSpecError
from farmd.rows import Snapshot
from tests.test_core import actions, ended, frame_view, joined, starts, state, submit, where


def test_instances_cap_the_frames_a_job_runs_at_once() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    core.handle(joined("w2", slots=2))
    out = core.handle(submit(frames="1-4", instances=1, priority=1))
    assert where(out) == [("w1", 1, 1, 1)]
    # the other slots go to the next job, not to more frames of the capped one
    assert [s.job_id for s in starts(core.handle(submit(frames="1-5", now=1.0)))] == [2, 2, 2]
    (first,) = starts(out)
    out = core.handle(ended(first, now=2.0))
    assert where(out) == [("w1", 1, 2, 1)]  # the freed slot takes the capped job's next frame


def test_raising_the_cap_wakes_idle_workers() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=3))
    assert len(starts(core.handle(submit(frames="1-3", instances=1)))) == 1
    out = core.handle(ModifyJob(job_id=1, instances=0, now=1.0))
    assert [s.frame for s in starts(out)] == [2, 3]


def test_a_retry_prefers_a_worker_it_did_not_fail_on() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(joined("w2"))
    first, second = starts(core.handle(submit(frames="1-3", retries=1)))
    assert (first.worker, first.frame, second.worker, second.frame) == ("w1", 1, "w2", 2)
    # frame 1 fails on w1: w1 is given frame 3 instead, and frame 1 waits for another
    (third,) = starts(core.handle(ended(first, 3, now=1.0)))
    assert (third.worker, third.frame) == ("w1", 3)
    view = frame_view(core, 1, 1)
    assert (view["state"], view["failures"], view["attempts"]) == ("pending", 1, 1)
    (retry,) = starts(core.handle(ended(second, now=2.0)))
    assert (retry.worker, retry.frame, retry.attempt) == ("w2", 1, 2)


def test_a_worker_retries_a_frame_that_failed_on_it_when_nothing_else_is_left() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (first,) = starts(core.handle(submit(retries=1)))
    assert where(core.handle(ended(first, 3, now=1.0))) == [("w1", 1, 1, 2)]


def test_retries_count_failures_only_and_then_the_frame_fails() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (attempt1,) = starts(core.handle(submit(retries=1)))
    core.handle(WorkerLost(name="w1", now=1.0))  # a lost worker uses no retry
    (attempt2,) = starts(core.handle(joined("w2", now=2.0)))
    assert frame_view(core, 1, 1)["failures"] == 0
    (attempt3,) = starts(core.handle(ended(attempt2, 1, now=3.0)))
    assert (attempt3.attempt, frame_view(core, 1, 1)["failures"]) == (3, 1)
    core.handle(ended(attempt3, 1, now=4.0))
    view = frame_view(core, 1, 1)
    assert (view["state"], view["failures"], view["attempts"]) == ("failed", 2, 3)
    assert state(core, 1) == "failed"
    assert attempt1.attempt == 1


def test_a_retry_delay_holds_the_frame_until_a_tick_after_it() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (first,) = starts(core.handle(submit(retries=2, retry_delay=30.0)))
    out = core.handle(ended(first, 1, now=100.0))
    assert actions(out) == [WakeAt(at=130.0)]
    assert core.next_wake() == 130.0
    assert frame_view(core, 1, 1)["retry_at"] == 130.0
    assert starts(core.handle(Tick(now=129.0))) == []
    out = core.handle(Tick(now=130.0))
    assert where(out) == [("w1", 1, 1, 2)]
    assert core.next_wake() is None
    assert frame_view(core, 1, 1)["retry_at"] is None


def test_killing_a_job_drops_its_held_retries() -> None:
    from farmd.core import KillJobs

    core = Scheduler()
    core.handle(joined("w1"))
    (first,) = starts(core.handle(submit(retries=1, retry_delay=5.0)))
    core.handle(ended(first, 1, now=1.0))
    core.handle(KillJobs(job_ids=(1,), now=2.0))
    assert core.next_wake() is None
    assert state(core, 1) == "killed"


def test_the_time_limit_travels_with_each_attempt() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(time_limit=90.0)))
    assert isinstance(start, RunOnWorker)
    assert start.time_limit == 90.0


def test_held_retries_survive_a_restart() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    outcomes = [core.handle(submit(retries=1, retry_delay=60.0, instances=2))]
    (first,) = starts(outcomes[0])
    outcomes.append(core.handle(ended(first, 1, now=10.0)))
    jobs = {row.id: row for o in outcomes for row in o.changes.jobs}
    frames = {(row.job_id, row.number): row for o in outcomes for row in o.changes.frames}
    restored = Scheduler()
    restored.handle(
        Restore(snapshot=Snapshot(tuple(jobs.values()), tuple(frames.values()), 2), now=0.0)
    )
    assert restored.next_wake() == 70.0
    assert restored.job_view(1)["instances"] == 2
    restored.handle(joined("w2", now=11.0))
    assert where(restored.handle(Tick(now=70.0))) == [("w2", 1, 1, 2)]


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("instances", -1, "bad instances -1"),
        ("retries", 1001, "bad retries 1001: at most 1000"),
        ("retry_delay", float("inf"), "bad retry delay inf"),
        ("time_limit", -0.5, "bad frame time limit -0.5"),
        ("instances", True, "bad instances True"),
    ],
)
def test_bad_options_are_refused_and_change_nothing(field: str, value: object, shown: str) -> None:
    core = Scheduler()
    with pytest.raises(JobSpecError, match=shown):
        core.handle(submit(**{field: value}))
    assert core.jobs_page()["jobs"] == []
    core.handle(submit())
    before = core.job_view(1)
    with pytest.raises(JobSpecError, match=shown):
        core.handle(ModifyJob(job_id=1, now=1.0, **{field: value}))
    assert core.job_view(1) == before


def test_frame_ended_for_a_lost_attempt_uses_no_retry() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (first,) = starts(core.handle(submit(retries=0)))
    core.handle(WorkerLost(name="w1", now=1.0))
    stale = FrameEnded(worker="w1", job_id=1, frame=1, attempt=1, exit_code=1, now=2.0)
    core.handle(stale)
    assert frame_view(core, 1, 1)["failures"] == 0
    assert state(core, 1) == "pending"
    assert first.attempt == 1
