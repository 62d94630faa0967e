"""Matching work to hosts in the supervisor core: job types, requirements, reservations,
global counters (licenses), locking and `explain`."""

from __future__ import annotations

from typing import Any

import pytest

from farmd.core import (
    FrameEnded,
    KillOnWorker,
    LockWorker,
    ModifyJob,
    Restore,
    RunOnWorker,
    Scheduler,
    SetResourceTotal,
    UnlockWorker,
    WorkerLost,
)
from farmd.errors import JobSpecError, RequirementError, UnknownWorkerError
from farmd.rows import Changes, FrameRow, JobRow, Snapshot
from tests.test_core import actions, assert_refused, ended, joined, starts, state, submit, where

GiB = 1024**3


def host(name: str, cluster: str = "/", slots: int = 1, **fields: Any) -> Any:
    return joined(name, cluster, slots, **fields)


def running_on(core: Scheduler, worker: str) -> list[tuple[int, int]]:
    return sorted((j, n) for j, n, _ in core.workers[worker].running)


# --------------------------------------------------------------------------- types


def test_a_typed_job_runs_only_where_its_type_is_advertised() -> None:
    core = Scheduler()
    core.handle(host("plain"))
    core.handle(host("render", types=("blender", "ffmpeg")))
    out = core.handle(submit(job_type="blender", frames="1-2"))
    assert where(out) == [("render", 1, 1, 1)]
    # the untyped job runs anywhere: on the free plain worker
    assert where(core.handle(submit())) == [("plain", 2, 1, 1)]


def test_a_typed_job_does_not_stall_the_untyped_ones_behind_it() -> None:
    core = Scheduler()
    core.handle(submit(job_type="nuke", priority=1))
    core.handle(submit(priority=50))
    assert where(core.handle(host("w1"))) == [("w1", 2, 1, 1)]
    assert state(core, 1) == "pending"


def test_a_bad_type_is_refused() -> None:
    core = Scheduler()
    assert_refused(core, submit(job_type="Not A Type"), JobSpecError, "Not A Type")


# --------------------------------------------------------------------------- requirements


def test_requirements_are_checked_against_the_host() -> None:
    core = Scheduler()
    core.handle(host("small", properties={"os": "linux"}, resources={"memory": 8 * GiB}))
    core.handle(
        host(
            "big",
            properties={"os": "linux", "gpu_model": "a6000"},
            resources={"memory": 64 * GiB},
        )
    )
    out = core.handle(submit(requires="host.os == linux and host.memory >= 32G"))
    assert where(out) == [("big", 1, 1, 1)]
    out = core.handle(submit(requires="host.gpu_model in [a6000, a100] or job.priority < 10"))
    assert where(out) == []  # big is busy and small has no such GPU
    assert core.job_view(2)["requires"] == "host.gpu_model in [a6000, a100] or job.priority < 10"


def test_a_bad_requirement_is_refused_at_submit_with_its_column() -> None:
    core = Scheduler()
    error = assert_refused(
        core, submit(requires="host.memory >= 8G andd x"), RequirementError, "andd"
    )
    assert "column" in str(error)


# --------------------------------------------------------------------------- reservations


def test_a_frame_holds_its_reservation_while_it_runs() -> None:
    core = Scheduler()
    core.handle(host("w1", slots=4, resources={"gpu": 2, "memory": 32 * GiB}))
    out = core.handle(submit(frames="1-4", reserve="slots=2,gpu=1,memory=8G"))
    assert [s.env["FARMD_SLOTS"] for s in starts(out)] == ["2", "2"]
    assert core.workers["w1"].used == {"slots": 4, "gpu": 2, "memory": 16 * GiB}
    (first, _) = starts(out)
    (third,) = starts(core.handle(ended(first)))
    assert third.frame == 3
    # a one-slot job fits nowhere now: every slot is held
    assert where(core.handle(submit())) == []


def test_a_job_short_of_a_resource_does_not_stall_the_ones_behind_it() -> None:
    core = Scheduler()
    core.handle(host("w1", slots=4, resources={"gpu": 1}))
    core.handle(submit(reserve="gpu=1", frames="1-2", priority=1))  # 1: one frame at a time
    core.handle(submit(reserve="gpu=2", priority=2))  # 2: never fits this worker
    out = core.handle(submit(priority=3, frames="1-2"))  # 3: fits the free slots
    assert sorted(running_on(core, "w1")) == [(1, 1), (3, 1), (3, 2)]
    assert where(out) == [("w1", 3, 1, 1), ("w1", 3, 2, 1)]


def test_slots_at_least_take_every_free_slot_and_idle_host_waits_for_an_empty_one() -> None:
    core = Scheduler()
    core.handle(host("w1", slots=4))
    (one,) = starts(core.handle(submit()))  # 1: takes one slot
    (many,) = starts(core.handle(submit(reserve="slots=2+")))  # 2: takes the three left
    assert many.env["FARMD_SLOTS"] == "3"
    core.handle(submit(reserve="slots=1*", priority=1))  # 3: needs the whole host
    core.handle(submit(priority=2))  # 4
    (nxt,) = starts(core.handle(ended(one)))
    assert nxt.job_id == 4  # the idle-host job waits; the next job takes the slot
    core.handle(ended(many))
    (last,) = starts(core.handle(ended(nxt)))
    assert (last.job_id, last.env["FARMD_SLOTS"]) == (3, "4")


@pytest.mark.parametrize(
    ("reserve", "bad"),
    [("slots=0", "slots"), ("gpu", "gpu"), ("gpu=x", "x"), ("license.maya=1", "license.maya")],
)
def test_a_bad_reservation_is_refused(reserve: str, bad: str) -> None:
    core = Scheduler(resources={"license.nuke": 2})
    assert_refused(core, submit(reserve=reserve), JobSpecError, bad)


# --------------------------------------------------------------------------- licenses


def test_a_license_is_never_held_by_more_frames_than_its_total() -> None:
    core = Scheduler(resources={"license.nuke": 2})
    for name in ("w1", "w2", "w3"):
        core.handle(host(name, slots=2))
    out = core.handle(submit(frames="1-5", reserve="license.nuke=1"))
    assert len(starts(out)) == 2
    assert core.resources_view()["license.nuke"] == {"total": 2, "used": 2, "free": 0}
    # other work still takes the free slots
    assert len(starts(core.handle(submit(frames="1-4")))) == 4
    (first, _second) = starts(out)
    (again,) = starts(core.handle(ended(first)))
    assert again.job_id == 1
    assert core.dispatch.pool.used["license.nuke"] == 2


def test_a_license_frees_when_its_process_ends_even_after_a_kill() -> None:
    core = Scheduler(resources={"license.nuke": 1})
    core.handle(host("w1"))
    core.handle(host("w2"))
    (frame,) = starts(core.handle(submit(reserve="license.nuke=1")))
    core.handle(submit(reserve="license.nuke=1"))
    from farmd.core import ControlFrames
    from farmd.jobs import Control

    out = core.handle(ControlFrames(control=Control.KILL, targets=("1",), now=1.0))
    assert starts(out) == []  # the killed process still holds it until it ends
    (nxt,) = starts(core.handle(ended(frame, -15)))
    assert nxt.job_id == 2


def test_raising_a_total_at_run_time_lets_waiting_frames_start() -> None:
    core = Scheduler(resources={"license.nuke": 1})
    core.handle(host("w1", slots=3))
    assert len(starts(core.handle(submit(frames="1-3", reserve="license.nuke=1")))) == 1
    out = core.handle(SetResourceTotal(name="license.nuke", total=3, now=1.0))
    assert len(starts(out)) == 2
    # the answer shows the pool after the frames the new total let start
    assert out.result == {"total": 3, "used": 3, "free": 0}
    assert_refused(
        core, SetResourceTotal(name="license.maya", total=3, now=1.0), JobSpecError, "maya"
    )


def test_global_resources_must_have_dotted_names() -> None:
    with pytest.raises(JobSpecError, match="dot"):
        Scheduler(resources={"nuke": 3})


# --------------------------------------------------------------------------- locks


def test_drain_lets_frames_finish_and_takes_no_new_work() -> None:
    core = Scheduler()
    core.handle(host("w1"))
    (frame,) = starts(core.handle(submit(frames="1-2")))
    out = core.handle(LockWorker(name="w1", mode="drain", now=1.0))
    assert actions(out) == []
    assert starts(core.handle(ended(frame))) == []
    assert core.workers_view()[0]["state"] == "locked"
    assert where(core.handle(UnlockWorker(name="w1", now=2.0))) == [("w1", 1, 2, 1)]


def test_purge_stops_frames_and_requeues_them_without_a_retry() -> None:
    core = Scheduler()
    core.handle(host("w1"))
    core.handle(host("w2"))
    (frame, _) = starts(core.handle(submit(frames="1-2")))
    out = core.handle(LockWorker(name="w1", mode="purge", now=1.0))
    assert out.result == ["1:1"]
    assert actions(out) == [KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1)]
    core.handle(ended(frame, -15))
    view = next(f for f in core.job_view(1)["frame_list"] if f["frame"] == 1)
    assert (view["state"], view["failures"]) == ("pending", 0)


def test_a_lock_holds_across_a_reconnect_and_a_restart() -> None:
    core = Scheduler()
    core.handle(host("w1"))
    out = core.handle(LockWorker(name="w1", now=1.0))
    assert out.changes.locks == {"w1": "drain"}
    core.handle(WorkerLost(name="w1", now=2.0))
    core.handle(host("w1"))
    assert where(core.handle(submit())) == []
    restarted = Scheduler()
    restarted.handle(Restore(snapshot=Snapshot(locks={"w1": "drain"}), now=0.0))
    restarted.handle(host("w1"))
    assert where(restarted.handle(submit())) == []
    assert_refused(core, UnlockWorker(name="w9", now=3.0), UnknownWorkerError, "w9")
    assert_refused(core, LockWorker(name="w9", now=3.0), UnknownWorkerError, "w9")


# --------------------------------------------------------------------------- explain


def reasons(core: Scheduler, job_id: int) -> dict[str, list[str]]:
    return {e["worker"]: e["reasons"] for e in core.explain(job_id)["workers"]}


def test_explain_names_every_reason_a_job_does_not_run() -> None:
    core = Scheduler(resources={"license.nuke": 1})
    core.handle(host("locked"))
    core.handle(LockWorker(name="locked", now=0.0))
    core.handle(host("picky", "/a", restrictions="/a/*"))
    core.handle(host("notype", "/b"))
    core.handle(host("small", "/b", types=("nuke",), resources={"memory": 8 * GiB}))
    core.handle(host("nogpu", "/b", types=("nuke",), resources={"memory": 64 * GiB}))
    core.handle(
        submit(
            cluster="/b",
            job_type="nuke",
            requires="host.memory >= 32G",
            reserve="gpu=1",
            restrictions="/b",
        )
    )
    why = reasons(core, 1)
    assert why["locked"][0] == "the worker is locked (drain): it takes no new work"
    assert any("worker's side" in r and "'/a/*'" in r for r in why["picky"])
    assert any("job's side" in r and "'/b'" in r for r in why["picky"])
    assert why["notype"] == [
        "type missing: the job is a 'nuke' job; the worker runs no typed jobs",
        "requirement not met: host.memory >= 32G",  # it reports no memory: 0
    ]
    assert why["small"] == ["requirement not met: host.memory >= 32G"]
    assert why["nogpu"] == ["resources short: needs gpu=1, 0 free on this worker"]


def test_explain_says_how_many_jobs_outrank_it_and_which_comes_first() -> None:
    core = Scheduler()
    core.handle(host("w1", "/show"))
    core.handle(submit(cluster="/show", priority=5))  # 1: runs
    core.handle(submit(cluster="/show", priority=10))  # 2
    core.handle(submit(cluster="/", priority=1))  # 3: order 3 on /show
    core.handle(submit(cluster="/", priority=2))  # 4
    (entry,) = core.explain(4)["workers"]
    assert entry["rank"] == {"order": 3, "priority": 2, "ahead": 2}
    assert entry["reasons"] == [
        "outranked by 2 jobs that fit here; the first is job 2 (cluster order 1, priority 10)"
    ]
    (entry,) = core.explain(1)["workers"]
    assert (entry["runs"], entry["running"]) == (True, ["1:1"])


def test_explain_of_a_waiting_job_says_so_everywhere() -> None:
    core = Scheduler()
    core.handle(host("w1"))
    core.handle(host("w2"))
    starts(core.handle(submit()))
    core.handle(submit(depends_on=(1,)))
    report = core.explain(2)
    assert report["everywhere"] == ["waiting for job 1"]
    assert all(e["reasons"] == ["waiting for job 1"] for e in report["workers"])
    assert [e["worker"] for e in core.explain(2, "w2")["workers"]] == ["w2"]


# --------------------------------------------------------------------------- restart


def test_a_restart_keeps_held_reservations_until_frames_are_claimed_or_requeued() -> None:
    record: dict[str, Any] = {"jobs": {}, "frames": {}}

    def keep(changes: Changes) -> None:
        for row in changes.jobs:
            record["jobs"][row.id] = row
        for frame in changes.frames:
            record["frames"][(frame.job_id, frame.number)] = frame

    core = Scheduler(resources={"license.nuke": 1})
    keep(core.handle(host("w1", slots=2, resources={"gpu": 1})).changes)
    out = core.handle(submit(reserve="slots=2,gpu=1,license.nuke=1"))
    keep(out.changes)
    (frame,) = starts(out)
    jobs: list[JobRow] = list(record["jobs"].values())
    frames: list[FrameRow] = list(record["frames"].values())
    after = Scheduler(resources={"license.nuke": 1})
    after.handle(Restore(snapshot=Snapshot(tuple(jobs), tuple(frames), 2), now=0.0))
    assert after.dispatch.pool.used == {"license.nuke": 1}
    after.handle(host("w1", slots=2, resources={"gpu": 1}, running=((1, 1, 1),)))
    assert after.workers["w1"].used == {"slots": 2, "gpu": 1, "license.nuke": 1}
    after.handle(FrameEnded(worker="w1", job_id=1, frame=1, attempt=1, exit_code=0, now=5.0))
    assert after.dispatch.pool.used == {"license.nuke": 0}
    assert state(after, 1) == "complete"
    assert isinstance(frame, RunOnWorker)


def test_modify_keeps_the_demanding_set_true() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(ModifyJob(job_id=1, instances=2, now=1.0))
    assert 1 in core.dispatch._demanding
    core.handle(ModifyJob(job_id=1, instances=0, now=2.0))
    assert 1 not in core.dispatch._demanding


# --------------------------------------------------------------------------- reconfigure


def test_a_reconfigured_worker_ranks_by_its_new_cluster_from_its_next_pick() -> None:
    from farmd.core import WorkerReconfigured

    core = Scheduler()
    core.handle(host("w1", "/show1"))
    (running,) = starts(core.handle(submit(cluster="/show1", frames="1-2")))
    core.handle(submit(cluster="/show2", frames="1-2"))
    out = core.handle(WorkerReconfigured(name="w1", cluster="/show2", slots=1, now=1.0))
    assert actions(out) == []  # the running frame is not disturbed
    assert core.workers["w1"].running  # and still holds its slot
    assert {n["path"]: n["workers_here"] for n in core.clusters_view()}["/show2"] == 1
    (nxt,) = starts(core.handle(ended(running)))
    assert nxt.job_id == 2  # the new cluster's job ranks first now


def test_statistics_count_frames_jobs_workers_slots_and_licenses() -> None:
    core = Scheduler(resources={"license.nuke": 2})
    core.handle(host("w1", "/show1", slots=2))
    core.handle(host("w2", "/show2"))
    core.handle(LockWorker(name="w2", now=0.5))
    (frame, _) = starts(
        core.handle(submit(cluster="/show1", frames="1-3", reserve="license.nuke=1"))
    )
    core.handle(ended(frame, 1))
    stats = core.statistics()
    # the failure freed a license: frame 3 took it
    assert stats.frames == (("/show1", "failed", 1), ("/show1", "running", 2))
    assert stats.jobs == (("/show1", "running", 1),)
    assert stats.workers == (("/show1", "busy", 1), ("/show2", "locked", 1))
    assert stats.slots == (("/show1", 2, 2), ("/show2", 0, 1))
    assert stats.resources == (("license.nuke", 2, 2),)
    assert (stats.frames_started, stats.frames_failed, stats.frames_completed) == (3, 1, 0)
