"""The figures a listing shows of a job (issue 16): progress, elapsed time, the
estimate of what is left, and a pending job's reason, in the pure core. Time is a
number inside the events and the `now` a listing is given; no clock is read."""

from __future__ import annotations

import pytest

from farmd.core import (
    ControlFrames,
    LockWorker,
    Restore,
    Scheduler,
    WorkerLost,
)
from farmd.errors import JobSpecError
from farmd.jobs import Control
from tests.test_core import ended, joined, starts, submit
from tests.test_core_jobmodel import Recorder


def summary(core: Scheduler, job_id: int, now: float | None = None) -> dict[str, object]:
    (job,) = [j for j in core.jobs_page(now=now)["jobs"] if j["id"] == job_id]
    return job


def test_a_job_before_any_frame_started_has_no_times_and_no_estimate() -> None:
    core = Scheduler()
    core.handle(submit(frames="1-4", now=100.0))
    job = summary(core, 1, now=200.0)
    assert (job["started_at"], job["ended_at"], job["elapsed"]) == (None, None, None)
    assert (job["progress"], job["eta"]) == (0.0, None)


def test_progress_elapsed_and_eta_of_a_running_job_from_its_frames_times() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2, now=0.0))
    first = starts(core.handle(submit(frames="1-10", now=100.0)))  # frames 1, 2 at 100
    assert len(first) == 2
    # frame 1 takes 30 s, frame 2 50 s: the mean is 40 s a frame
    third = starts(core.handle(ended(first[0], now=130.0)))
    starts(core.handle(ended(first[1], now=150.0)))
    assert third
    job = summary(core, 1, now=160.0)
    assert job["state"] == "running"
    assert job["started_at"] == 100.0
    assert job["elapsed"] == 60.0  # from its first frame's start to now
    assert job["progress"] == pytest.approx(0.2)  # 2 of 10 frames
    # 8 frames not ended × 40 s ÷ 2 running at once
    assert job["eta"] == pytest.approx(160.0)
    assert core.job_view(1, now=160.0)["eta"] == job["eta"]  # `farmd job` shows the same


def test_without_now_a_listing_gives_no_elapsed_time_for_a_job_still_going() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    starts(core.handle(submit(frames="1-2", now=5.0)))
    assert summary(core, 1)["elapsed"] is None
    assert summary(core, 1, now=9.0)["elapsed"] == 4.0


def test_an_ended_job_keeps_its_elapsed_time_whatever_now_is() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    (start,) = starts(core.handle(submit(now=10.0)))
    core.handle(ended(start, now=70.0))
    job = summary(core, 1, now=1000.0)
    assert (job["state"], job["started_at"], job["ended_at"]) == ("complete", 10.0, 70.0)
    assert (job["elapsed"], job["progress"], job["eta"]) == (60.0, 1.0, None)
    assert summary(core, 1)["elapsed"] == 60.0  # no `now` needed once it has ended


def test_a_retried_job_runs_again_with_its_first_start_and_no_end() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    (start,) = starts(core.handle(submit(now=10.0)))
    core.handle(ended(start, 1, now=20.0))  # failed
    assert summary(core, 1)["ended_at"] == 20.0
    core.handle(ControlFrames(control=Control.RETRY, targets=("1",), now=50.0))
    job = summary(core, 1, now=60.0)
    assert (job["state"], job["started_at"], job["ended_at"], job["elapsed"]) == (
        "running",
        10.0,
        None,
        50.0,
    )


def test_a_chunk_counts_its_frames_in_progress_and_in_the_mean() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    (chunk,) = starts(core.handle(submit(frames="1-9", chunk=3, now=0.0)))
    (second,) = starts(core.handle(ended(chunk, now=30.0)))  # 3 frames in 30 s: 10 s each
    assert second.frame == 4
    job = summary(core, 1, now=30.0)
    assert job["progress"] == pytest.approx(3 / 9)
    assert job["eta"] == pytest.approx(6 * 10.0 / 3)  # 6 frames left, 3 running at once


def test_a_lost_frame_adds_nothing_to_the_mean() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    core.handle(joined("w2", now=0.0))
    first = starts(core.handle(submit(frames="1-4", now=0.0)))
    done = next(s for s in first if s.worker == "w1")
    core.handle(ended(done, now=10.0))
    core.handle(WorkerLost(name="w2", now=500.0))  # its frame goes back, no time counted
    job = core.jobs[1]
    assert (job.done_frames, job.done_seconds) == (1, 10.0)


def test_times_and_sums_survive_a_restart() -> None:
    record = Recorder()
    core = Scheduler()
    record(core.handle(joined("w1", now=0.0)))
    (start,) = starts(record(core.handle(submit(frames="1-2", now=1.0))))
    (start2,) = starts(record(core.handle(ended(start, now=21.0))))
    record(core.handle(submit(now=2.0)))
    record(core.handle(ended(start2, now=41.0)))
    after = Scheduler()
    after.handle(Restore(snapshot=record.snapshot(), now=50.0))
    for field in ("started_at", "ended_at", "elapsed", "progress", "eta"):
        assert summary(after, 1, now=99.0)[field] == summary(core, 1, now=99.0)[field], field
    assert (after.jobs[1].done_frames, after.jobs[1].done_seconds) == (2, 40.0)
    assert summary(after, 1)["ended_at"] == 41.0


# --------------------------------------------------------------------------- reasons


@pytest.mark.parametrize(
    ("workers", "job", "why"),
    [
        ([], {}, "no worker connected"),
        ([{"types": ("blender",)}], {"job_type": "nuke"}, "no worker runs type 'nuke'"),
        ([{"slots": 8}], {"reserve": "slots=16"}, "needs slots=16; the largest host has 8"),
        ([{}], {"restrictions": "/show9/+"}, "restrictions '/show9/+' match no worker"),
        (
            [{"restrictions": "/show1/+"}],
            {"cluster": "/show2"},
            "no worker accepts jobs in /show2 (its restrictions)",
        ),
        (
            [{"resources": {"gpu": 1}}],
            {"reserve": "slots=1,gpu=2"},
            "needs gpu=2; the most a host has is 1",
        ),
        (
            [{"cluster": "/a", "types": ("nuke",)}, {"cluster": "/b"}],
            {"job_type": "nuke", "restrictions": "/b"},
            "no worker it may run on runs type 'nuke'",
        ),
    ],
)
def test_a_pending_job_no_worker_can_take_says_why(
    workers: list[dict[str, object]], job: dict[str, object], why: str
) -> None:
    core = Scheduler()
    for n, fields in enumerate(workers):
        cluster = str(fields.pop("cluster", "/"))
        core.handle(joined(f"w{n}", cluster, now=0.0, **fields))
    job_id = core.handle(submit(now=1.0, **job)).result
    got = summary(core, job_id)
    assert (got["state"], got["reason"]) == ("pending", why)
    assert core.job_view(job_id)["reason"] == why
    assert core.job_summary(job_id)["reason"] == why  # what a submit answers


def test_a_pending_job_that_fits_somewhere_waits_for_a_slot() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    starts(core.handle(submit(now=0.0)))
    core.handle(submit(now=1.0))
    assert summary(core, 2)["reason"] == "waiting for a free slot"
    core.handle(LockWorker(name="w1", now=2.0))
    assert summary(core, 2)["reason"] == "every worker that could run it is locked"


def test_a_listing_judges_the_workers_shapes_not_each_worker() -> None:
    core = Scheduler()
    for n in range(50):  # fifty hosts of two shapes
        core.handle(joined(f"w{n}", "/a" if n % 2 else "/b", slots=1, now=0.0))
    from farmd.core import placement

    assert len(placement.shapes(core.workers.values())) == 2


# --------------------------------------------------------------------------- logs


def test_any_frame_of_a_chunk_names_the_chunk_for_its_log() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    starts(core.handle(submit(frames="1-6", chunk=3, now=0.0)))
    for number in (1, 2, 3):
        frame, worker = core.frame_holder(1, number)
        assert (frame.number, worker) == (1, "w1")
    with pytest.raises(JobSpecError, match="has not run yet"):
        core.frame_holder(1, 5)  # in the chunk 4-6, which has not run
    with pytest.raises(JobSpecError, match="has no frame 7"):
        core.frame_holder(1, 7)
