"""The render job model in the supervisor core: chunks, dependency modes, sub-jobs,
suspend/resume and preemption, driven by events as the shell would feed them."""

from __future__ import annotations

from typing import Any

import pytest

from farmd.core import (
    ControlFrames,
    JobHeld,
    KillJobs,
    KillOnWorker,
    ModifyJob,
    Outcome,
    PreemptPolicy,
    RemoveJobs,
    Restore,
    ResumeOnWorker,
    RunOnWorker,
    Scheduler,
    SuspendOnWorker,
    WorkerLost,
)
from farmd.errors import JobSpecError, UnknownJobError
from farmd.jobs import Control, JobState
from farmd.rows import Changes, FrameRow, JobRow, Snapshot
from tests.test_core import (
    actions,
    assert_refused,
    ended,
    frame_view,
    joined,
    starts,
    state,
    submit,
    where,
)


def control(action: Control, *targets: str, now: float = 1.0) -> ControlFrames:
    return ControlFrames(control=action, targets=targets, now=now)


def reason(core: Scheduler, job_id: int) -> str:
    return str(core.job_view(job_id)["reason"])


class Recorder:
    """A store in a dict: what a restart would load after these outcomes."""

    def __init__(self) -> None:
        self.jobs: dict[int, JobRow] = {}
        self.frames: dict[tuple[int, int], FrameRow] = {}
        self.next_job_id = 1

    def __call__(self, outcome: Outcome) -> Outcome:
        changes: Changes = outcome.changes
        for row in changes.jobs:
            self.jobs[row.id] = row
        for frame in changes.frames:
            self.frames[(frame.job_id, frame.number)] = frame
        for job_id in changes.removed:
            self.jobs.pop(job_id, None)
            self.frames = {k: v for k, v in self.frames.items() if k[0] != job_id}
        if changes.next_job_id is not None:
            self.next_job_id = changes.next_job_id
        return outcome

    def snapshot(self) -> Snapshot:
        frames = sorted(self.frames.values(), key=lambda f: (f.job_id, f.position))
        return Snapshot(tuple(self.jobs.values()), tuple(frames), self.next_job_id)


def restored(record: Recorder) -> Scheduler:
    core = Scheduler()
    core.handle(Restore(snapshot=record.snapshot(), now=0.0))
    return core


def job_views(core: Scheduler) -> list[dict[str, Any]]:
    """Every job's view, but a pending job's reason: it depends on the workers
    connected, which a restart does not bring back."""
    views = [core.job_view(job_id) for job_id in sorted(core.jobs)]
    return [{**v, "reason": None} if v["state"] == "pending" else v for v in views]


# --------------------------------------------------------------------------- chunks


def test_a_chunked_job_runs_n_frames_per_dispatch_with_start_and_end_filled_in() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=3))
    out = core.handle(
        submit(frames="1-10", chunk=4, argv=("render", "-s", "{start}", "-e", "{end}", "{frame}"))
    )
    chunks = starts(out)
    assert [(s.frame, s.argv) for s in chunks] == [
        (1, ("render", "-s", "1", "-e", "4", "1")),
        (5, ("render", "-s", "5", "-e", "8", "5")),
        (9, ("render", "-s", "9", "-e", "10", "9")),
    ]
    env = chunks[1].env
    assert (env["FARMD_FRAME_START"], env["FARMD_FRAME_END"], env["FARMD_FRAMES"]) == (
        "5",
        "8",
        "5-8",
    )
    job = core.job_view(1)
    assert job["frames"]["running"] == 10  # counted in frames, not chunks
    assert [f["frames"] for f in job["frame_list"]] == ["1-4", "5-8", "9-10"]
    for start in chunks:
        core.handle(ended(start))
    assert state(core, 1) == "complete"
    assert core.job_view(1)["frames"]["complete"] == 10


def test_a_stepped_range_chunks_the_frames_it_has() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(frames="1-20x3", chunk=3)))
    assert start.env["FARMD_FRAMES"] == "1,4,7"
    assert (start.env["FARMD_FRAME_START"], start.env["FARMD_FRAME_END"]) == ("1", "7")


def test_a_frame_inside_a_chunk_names_its_chunk() -> None:
    core = Scheduler()
    core.handle(submit(frames="1-10", chunk=5))
    out = core.handle(control(Control.BLOCK, "1:7"))
    assert out.result == ["1:6"]  # the chunk 6-10, by its first frame
    assert frame_view(core, 1, 6)["state"] == "blocked"
    assert frame_view(core, 1, 1)["state"] == "pending"
    assert core.job_view(1)["frames"]["blocked"] == 5


@pytest.mark.parametrize("chunk", [0, -1, True, 1.5])
def test_a_bad_chunk_is_refused(chunk: Any) -> None:
    core = Scheduler()
    assert_refused(core, submit(chunk=chunk), JobSpecError, "chunk")


# --------------------------------------------------------------------------- dependencies


def test_a_complete_dependency_that_fails_blocks_with_a_reason_until_retried() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (first,) = starts(core.handle(submit()))
    core.handle(submit(depends_on=("1:complete",)))
    assert state(core, 2) == "waiting"
    assert reason(core, 2) == "waiting for job 1"
    core.handle(ended(first, 1))
    assert state(core, 1) == "failed"
    assert state(core, 2) == "blocked"
    assert reason(core, 2) == "job 1 is failed but must be complete (retry it to release this job)"
    out = core.handle(control(Control.RETRY, "1"))
    assert state(core, 2) == "waiting"
    (again,) = starts(out)
    assert again.job_id == 1
    (then,) = starts(core.handle(ended(again)))
    assert then.job_id == 2


def test_done_runs_after_any_end_and_failed_only_after_a_failure() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (first,) = starts(core.handle(submit()))  # 1 fails
    core.handle(joined("w2"))
    (second,) = starts(core.handle(submit()))  # 2 completes
    core.handle(submit(depends_on=("1:done",)))  # 3
    core.handle(submit(depends_on=("1:failed",)))  # 4
    core.handle(submit(depends_on=("2:failed",)))  # 5
    core.handle(submit(depends_on=("2:done", "1:failed")))  # 6: both must hold
    assert {state(core, i) for i in (3, 4, 5, 6)} == {"waiting"}
    core.handle(ended(first, 1))
    core.handle(ended(second, 0))
    assert state(core, 5) == "blocked"
    assert reason(core, 5).startswith("job 2 is complete but must be failed")
    views = {i: core.job_view(i) for i in (3, 4, 6)}
    assert all(v["state"] in ("pending", "running") for v in views.values()), views


def test_killed_is_not_failed_for_a_failed_dependency() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(submit(depends_on=("1:failed",)))
    core.handle(KillJobs(job_ids=(1,), now=1.0))
    assert state(core, 2) == "blocked"
    assert reason(core, 2).startswith("job 1 is killed but must be failed")


def test_a_met_dependency_stays_met_when_its_job_is_retried() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (first,) = starts(core.handle(submit()))
    core.handle(submit(depends_on=("1:done",), frames="1-2"))
    (dependent,) = starts(core.handle(ended(first, 1)))
    assert dependent.job_id == 2
    core.handle(control(Control.RETRY, "1"))
    assert core.job_view(2)["waiting_on"] == []
    assert state(core, 2) == "running"


def test_a_dependency_mode_is_checked() -> None:
    core = Scheduler()
    core.handle(submit())
    assert_refused(core, submit(depends_on=("1:sometimes",)), JobSpecError, "sometimes")
    assert_refused(core, submit(depends_on=("1:done", "1:failed")), JobSpecError, "twice")
    assert_refused(core, submit(depends_on=("9:frames",)), UnknownJobError, 9)
    assert core.handle(submit(depends_on=("1:complete", "1:frames"))).result == 2
    assert reason(core, 2) == "waiting for job 1, 1:frames"


def test_frame_by_frame_releases_frame_n_when_frame_n_completes() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=3))
    a = starts(core.handle(submit(frames="1-3")))
    core.handle(submit(frames="0-3", depends_on=("1:frames",)))
    # frame 0 has no counterpart: it does not wait
    assert [f["state"] for f in core.job_view(2)["frame_list"]] == ["pending"] * 4
    assert [f["waits"] for f in core.job_view(2)["frame_list"]] == [0, 1, 1, 1]
    assert reason(core, 2) == "waiting for a free slot"
    out = core.handle(ended(a[1]))  # frame 2 of job 1
    assert where(out) == [("w1", 2, 0, 1)]  # the free slot takes the ready frame 0
    core.handle(joined("w2"))
    assert frame_view(core, 2, 2)["state"] == "running"
    assert frame_view(core, 2, 1)["state"] == "pending"
    assert frame_view(core, 2, 3)["state"] == "pending"


def test_frame_by_frame_with_nothing_ready_waits_and_blocks_when_the_other_fails() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (a,) = starts(core.handle(submit(frames="1")))
    core.handle(submit(frames="1", depends_on=("1:frames",)))
    assert state(core, 2) == "waiting"
    assert reason(core, 2) == "waiting for job 1:frames"
    core.handle(ended(a, 1))
    assert state(core, 2) == "blocked"
    assert "job 1 is failed but must be complete" in reason(core, 2)


def test_frame_by_frame_gates_chunks_on_every_frame_they_cover() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=4))
    a = starts(core.handle(submit(frames="1-4")))
    core.handle(submit(frames="1-4", chunk=2, depends_on=("1:frames",)))
    assert [f["waits"] for f in core.job_view(2)["frame_list"]] == [2, 2]
    assert starts(core.handle(ended(a[0]))) == []
    assert [f["waits"] for f in core.job_view(2)["frame_list"]] == [1, 2]
    (chunk,) = starts(core.handle(ended(a[1])))
    assert (chunk.job_id, chunk.env["FARMD_FRAMES"]) == (2, "1-2")


# --------------------------------------------------------------------------- sub-jobs


def test_a_parent_completes_once_its_frames_and_sub_jobs_have() -> None:
    core = Scheduler()
    core.handle(joined("w1", "/show1", slots=2))
    (frame,) = starts(core.handle(submit(cluster="/show1", priority=50)))
    out = core.handle(submit(parent=1, frames="1-2"))
    sub = core.job_view(2)
    assert (sub["parent"], sub["cluster"], sub["priority"]) == (1, "/show1", 50)
    assert core.job_view(1)["subjob_ids"] == [2]
    assert core.job_view(1)["subjobs"] == 1
    (sub_frame,) = starts(out)
    (last,) = starts(core.handle(ended(frame)))  # the freed slot takes the sub-job's frame 2
    assert state(core, 1) == "waiting"
    assert reason(core, 1) == "waiting for sub-jobs 2"
    core.handle(ended(sub_frame))
    out = core.handle(ended(last))
    assert [c.job_id for c in actions(out) if not isinstance(c, RunOnWorker)] == [2, 1]
    assert state(core, 1) == "complete"


def test_a_failed_sub_job_fails_its_parent_and_a_retry_reopens_both() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    (frame,) = starts(core.handle(submit()))
    (sub_frame,) = starts(core.handle(submit(parent=1, cluster="/other")))
    assert core.job_view(2)["cluster"] == "/other"
    core.handle(ended(sub_frame, 3))
    core.handle(ended(frame))
    assert (state(core, 2), state(core, 1)) == ("failed", "failed")
    core.handle(control(Control.RETRY, "2"))
    assert state(core, 1) == "waiting"


def test_killing_a_parent_kills_its_sub_jobs_and_removing_it_removes_them() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=3))
    (_frame,) = starts(core.handle(submit()))
    core.handle(submit(parent=1))
    core.handle(submit(parent=2))
    assert_refused(core, RemoveJobs(job_ids=(1,), now=1.0), JobSpecError, "kill it")
    out = core.handle(control(Control.KILL, "1"))
    assert set(out.result) == {"1:1", "2:1", "3:1"}
    assert {state(core, i) for i in (1, 2, 3)} == {"killed"}
    assert_refused(core, RemoveJobs(job_ids=(3,), now=2.0), JobSpecError, "sub-job of job 2")
    assert core.handle(RemoveJobs(job_ids=(1,), now=2.0)).result == [1, 2, 3]
    assert core.jobs == {}


def test_a_killed_sub_job_ends_its_parent_killed_and_retry_reaches_sub_jobs() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    (frame,) = starts(core.handle(submit()))
    (sub_frame,) = starts(core.handle(submit(parent=1)))
    core.handle(ended(frame))
    core.handle(control(Control.KILL, "2"))
    assert (state(core, 2), state(core, 1)) == ("killed", "killed")
    core.handle(ended(sub_frame, -15))
    out = core.handle(control(Control.RETRY, "1"))  # the parent's frames are all complete
    assert out.result == ["2:1"]
    assert (state(core, 2), state(core, 1)) == ("running", "waiting")


def test_a_sub_job_of_an_ended_job_is_refused() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(KillJobs(job_ids=(1,), now=1.0))
    assert_refused(core, submit(parent=1), JobSpecError, "job 1 has ended")
    assert_refused(core, submit(parent=7), UnknownJobError, 7)


def test_kill_jobs_takes_sub_jobs_along() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(submit(parent=1))
    assert core.handle(KillJobs(job_ids=(1,), now=1.0)).result == [1]
    assert state(core, 2) == "killed"


# --------------------------------------------------------------------------- suspend


def test_suspend_stops_running_frames_keeps_their_slots_and_holds_the_rest() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    running = starts(core.handle(submit(frames="1-4")))
    out = core.handle(control(Control.SUSPEND, "1"))
    assert list(actions(out)) == [
        SuspendOnWorker(worker="w1", job_id=1, frame=1, attempt=1),
        SuspendOnWorker(worker="w1", job_id=1, frame=2, attempt=1),
        JobHeld(job_id=1, state=JobState.SUSPENDED),  # a `wait` for it checks again
    ]
    assert state(core, 1) == "suspended"
    assert reason(core, 1) == "suspended by an admin (farmd resume)"
    assert core.job_view(1)["frames"]["suspended"] == 4
    # the stopped processes keep their slots: a new job does not start
    assert starts(core.handle(submit())) == []
    out = core.handle(control(Control.RESUME, "1", now=2.0))
    assert list(actions(out)) == [
        ResumeOnWorker(worker="w1", job_id=1, frame=1, attempt=1),
        ResumeOnWorker(worker="w1", job_id=1, frame=2, attempt=1),
    ]
    assert [frame_view(core, 1, n)["state"] for n in (1, 2, 3, 4)] == [
        "running",
        "running",
        "pending",
        "pending",
    ]
    assert where(core.handle(ended(running[0]))) == [("w1", 1, 3, 1)]


def test_a_suspended_frame_that_ends_counts_and_a_retry_stays_held() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(frames="1-2", retries=1)))
    core.handle(control(Control.SUSPEND, "1"))
    assert starts(core.handle(ended(start, 1))) == []  # the slot is free, the job held
    view = frame_view(core, 1, 1)
    assert (view["state"], view["failures"], view["stopped"]) == ("suspended", 1, False)
    # the retry prefers a frame that did not fail on w1
    assert where(core.handle(control(Control.RESUME, "1"))) == [("w1", 1, 2, 1)]


def test_a_stopped_frame_keeps_its_instance_so_a_resume_stays_within_the_cap() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    (first,) = starts(core.handle(submit(frames="1-3", instances=1)))
    assert starts(core.handle(control(Control.SUSPEND, "1:1"))) == []  # frame 2 waits
    out = core.handle(control(Control.RESUME, "1:1", now=2.0))
    assert starts(out) == []
    assert frame_view(core, 1, 1)["state"] == "running"
    (nxt,) = starts(core.handle(ended(first)))
    assert nxt.frame == 2


def test_kill_of_a_suspended_frame_stops_its_process() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    starts(core.handle(submit()))
    core.handle(control(Control.SUSPEND, "1:1"))
    out = core.handle(control(Control.KILL, "1:1"))
    assert actions(out)[0] == KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1)
    assert state(core, 1) == "killed"


def test_a_lost_worker_leaves_its_suspended_frame_held() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    starts(core.handle(submit()))
    core.handle(control(Control.SUSPEND, "1"))
    core.handle(WorkerLost(name="w1", now=2.0))
    view = frame_view(core, 1, 1)
    assert (view["state"], view["stopped"]) == ("suspended", False)
    core.handle(joined("w2"))
    assert where(core.handle(control(Control.RESUME, "1"))) == [("w2", 1, 1, 2)]


# --------------------------------------------------------------------------- preemption


def busy_farm(policy: PreemptPolicy, **low: Any) -> tuple[Scheduler, RunOnWorker]:
    """One one-slot worker running frame 1 of job 1 (priority 100, frames 1-2)."""
    core = Scheduler(preempt_policy=policy)
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(priority=100, frames="1-2", **low)))
    return core, start


def test_aggressive_stops_an_outranked_frame_and_requeues_it_without_a_retry() -> None:
    core, low = busy_farm(PreemptPolicy.AGGRESSIVE)
    out = core.handle(submit(priority=10))
    assert actions(out) == [KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1)]
    assert frame_view(core, 1, 1)["state"] == "pending"
    # the stopped process's report frees the slot for the better job
    (high,) = starts(core.handle(ended(low, -15)))
    assert high.job_id == 2
    (again,) = starts(core.handle(ended(high)))
    assert (again.job_id, again.frame, again.attempt) == (1, 1, 2)
    assert frame_view(core, 1, 1)["failures"] == 0


def test_aggressive_never_preempts_on_id_alone_or_an_uninterruptible_job() -> None:
    core, _ = busy_farm(PreemptPolicy.AGGRESSIVE)
    assert actions(core.handle(submit(priority=100))) == []  # equal but for the id
    core, _ = busy_farm(PreemptPolicy.AGGRESSIVE, uninterruptible=True)
    assert actions(core.handle(submit(priority=1))) == []


def test_aggressive_goes_by_cluster_order_first() -> None:
    core = Scheduler(preempt_policy=PreemptPolicy.AGGRESSIVE)
    core.handle(joined("w1", "/show1"))
    starts(core.handle(submit(cluster="/", priority=1)))  # order 2 on /show1
    out = core.handle(submit(cluster="/show1", priority=5000))  # order 1
    assert [type(c) for c in actions(out)] == [KillOnWorker]


def test_aggressive_stops_one_frame_per_worker_at_a_time() -> None:
    core = Scheduler(preempt_policy=PreemptPolicy.AGGRESSIVE)
    core.handle(joined("w1", slots=2))
    starts(core.handle(submit(priority=100, frames="1-2")))
    out = core.handle(submit(priority=10, frames="1-2"))
    assert len([c for c in actions(out) if isinstance(c, KillOnWorker)]) == 1
    out = core.handle(ModifyJob(job_id=2, priority=5, now=1.0))
    assert [c for c in actions(out) if isinstance(c, KillOnWorker)] == []


def test_aggressive_leaves_running_frames_alone_while_a_free_slot_takes_the_job() -> None:
    core, _ = busy_farm(PreemptPolicy.AGGRESSIVE)
    core.handle(joined("w2"))  # takes frame 2 of job 1
    core.handle(joined("w3"))  # idle
    out = core.handle(submit(priority=10))
    assert where(out) == [("w3", 2, 1, 1)]
    assert [c for c in actions(out) if isinstance(c, KillOnWorker)] == []


def test_aggressive_stops_only_as_many_frames_as_the_better_job_can_use() -> None:
    core = Scheduler(preempt_policy=PreemptPolicy.AGGRESSIVE)
    for name in ("w1", "w2", "w3"):
        core.handle(joined(name))
    starts(core.handle(submit(priority=100, frames="1-3")))
    out = core.handle(submit(priority=10, frames="1-2"))
    stops = [c for c in actions(out) if isinstance(c, KillOnWorker)]
    assert [c.worker for c in stops] == ["w1", "w2"]
    # a later event does not stop a third frame for the two already on their way back
    assert [
        c for c in actions(core.handle(submit(priority=100))) if isinstance(c, KillOnWorker)
    ] == []


def test_passive_lets_the_frame_finish_and_gives_the_slot_to_the_better_job() -> None:
    core, low = busy_farm(PreemptPolicy.PASSIVE)
    assert actions(core.handle(submit(priority=10))) == []
    (nxt,) = starts(core.handle(ended(low)))
    assert nxt.job_id == 2


def test_disabled_keeps_the_slot_with_its_job_while_it_has_frames() -> None:
    core, low = busy_farm(PreemptPolicy.DISABLED)
    assert actions(core.handle(submit(priority=10))) == []
    (nxt,) = starts(core.handle(ended(low)))
    assert (nxt.job_id, nxt.frame) == (1, 2)
    (last,) = starts(core.handle(ended(nxt)))
    assert last.job_id == 2


# --------------------------------------------------------------------------- restart


def test_a_restart_restores_chunks_dependencies_sub_jobs_and_suspended_frames() -> None:
    record = Recorder()
    core = Scheduler()
    record(core.handle(joined("w1", slots=3)))
    first = starts(record(core.handle(submit(frames="1-6", chunk=2))))  # 1: three chunks
    record(core.handle(submit(frames="1-6", depends_on=("1:frames",))))  # 2
    record(core.handle(submit(parent=1)))  # 3
    record(core.handle(submit(depends_on=("1:complete",))))  # 4
    record(core.handle(control(Control.SUSPEND, "1:3")))
    record(core.handle(ended(first[0])))  # chunk 1-2 completes: frames 1, 2 of job 2 ready
    before = job_views(core)
    after = restored(record)
    assert job_views(after) == before
    # the running chunk, the stopped one and job 2's frame 1, until w1 returns
    assert after.orphans == 3


def test_a_restart_keeps_a_met_dependency_met() -> None:
    record = Recorder()
    core = Scheduler()
    record(core.handle(joined("w1")))
    (first,) = starts(record(core.handle(submit())))
    record(core.handle(submit(depends_on=("1:done",), frames="1-2")))
    record(core.handle(ended(first, 1)))
    record(core.handle(control(Control.RETRY, "1")))
    after = restored(record)
    assert after.job_view(2)["waiting_on"] == []
    assert job_views(after) == job_views(core)
