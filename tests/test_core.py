"""The supervisor core driven by events, as a farm admin would see it.

Each test builds the events the shell would feed `Scheduler.handle` and asserts the
commands it returns and what the views then show. Nothing here opens a socket or reads a
clock: time is a number inside the events (dask's `tests/test_worker_state_machine.py`
is the model). The state machine at the end drives random event sequences against a
model of the worker hosts and checks the core's invariants after every step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from farmd.core import (
    Command,
    Event,
    FrameEnded,
    JobEnded,
    KillJobs,
    KillOnWorker,
    ModifyJob,
    Note,
    Outcome,
    RunOnWorker,
    Scheduler,
    SubmitJob,
    SubmitJobs,
    WorkerJoined,
    WorkerLost,
)
from farmd.errors import (
    ClusterPathError,
    JobSpecError,
    PatternError,
    RestrictionError,
    UnknownJobError,
    UnknownWorkerError,
    UserError,
    WorkerSettingsError,
)
from farmd.frames import FrameState
from farmd.jobs import JobState
from farmd.ranking import DEFAULT_PRIORITY, admits, rank_key
from farmd.workers import Worker
from tests.strategies import (
    oracle_order,
    pattern_texts,
    priorities,
    restriction_texts,
    sometimes,
)

ROOT = Path(__file__).resolve().parents[1]
ARGV = ("render", "--frame", "{frame}")

# --------------------------------------------------------------------------- helpers


def submit(*, now: float = 0.0, argv: Sequence[str] = ARGV, **fields: Any) -> SubmitJob:
    return SubmitJob(argv=tuple(argv), now=now, **fields)


def joined(
    name: str, cluster: str = "/", slots: int = 1, *, now: float = 0.0, **fields: Any
) -> WorkerJoined:
    return WorkerJoined(name=name, cluster=cluster, slots=slots, now=now, **fields)


def ended(
    start: RunOnWorker, exit_code: int = 0, *, error: str = "", now: float = 0.0
) -> FrameEnded:
    """The result of the attempt `start` began, as its worker reports it."""
    return FrameEnded(
        worker=start.worker,
        job_id=start.job_id,
        frame=start.frame,
        attempt=start.attempt,
        exit_code=exit_code,
        error=error,
        now=now,
    )


def actions(outcome: Outcome) -> list[Command]:
    """The commands the shell must carry out: everything but log lines."""
    return [c for c in outcome.commands if not isinstance(c, Note)]


def starts(outcome: Outcome) -> list[RunOnWorker]:
    return [c for c in outcome.commands if isinstance(c, RunOnWorker)]


def notes(outcome: Outcome) -> list[str]:
    return [c.event for c in outcome.commands if isinstance(c, Note)]


def where(outcome: Outcome) -> list[tuple[str, int, int, int]]:
    """Each RunOnWorker as (worker, job, frame, attempt)."""
    return [(s.worker, s.job_id, s.frame, s.attempt) for s in starts(outcome)]


def state(core: Scheduler, job_id: int) -> str:
    return str(core.job_view(job_id)["state"])


def frame_view(core: Scheduler, job_id: int, number: int) -> dict[str, Any]:
    (view,) = [f for f in core.job_view(job_id)["frame_list"] if f["frame"] == number]
    return dict(view)


def frame_counts(**counts: int) -> dict[str, int]:
    """A job's frame counts as `jobs_page` shows them: `counts`, zero elsewhere."""
    return {s.value: counts.get(s.value, 0) for s in FrameState}


def worker_view(core: Scheduler, name: str) -> dict[str, Any]:
    (view,) = [w for w in core.workers_view() if w["name"] == name]
    return dict(view)


def order_ids(core: Scheduler, worker: str) -> list[int]:
    return [entry["id"] for entry in core.order_view(worker, 100)]


def run_one_at_a_time(core: Scheduler, outcome: Outcome) -> list[RunOnWorker]:
    """Complete each frame `outcome` started, and each frame those completions start, in
    turn; return every RunOnWorker in the order it came."""
    queue = deque(starts(outcome))
    started = []
    for _ in range(10_000):  # bounded: far more frames than any test submits
        if not queue:
            break
        start = queue.popleft()
        started.append(start)
        queue.extend(starts(core.handle(ended(start))))
    return started


def drain_order(
    worker_cluster: str, *jobs: SubmitJob, restrictions: str = ""
) -> list[tuple[int, int, int]]:
    """Submit `jobs` to an empty farm, then let one one-slot worker in `worker_cluster`
    run until it idles; the rank keys (order, priority, id) of what it ran, in order."""
    core = Scheduler()
    for event in jobs:
        core.handle(event)
    started = run_one_at_a_time(
        core, core.handle(joined("w1", worker_cluster, restrictions=restrictions))
    )
    return [s.rank for s in started]


def snapshot(core: Scheduler) -> tuple[Any, ...]:
    """Everything an admin can see of the farm."""
    return (
        core.jobs_page()["jobs"],
        [core.job_view(job_id) for job_id in core.jobs],
        core.workers_view(),
        core.clusters_view(),
        {name: core.order_view(name, 1000) for name in core.workers},
    )


def assert_refused(core: Scheduler, event: Event, error: type[UserError], bad: object) -> UserError:
    """`event` is refused with `error`, a one-line message naming `bad`, and the farm is
    exactly as it was."""
    before = snapshot(core)
    with pytest.raises(error) as caught:
        core.handle(event)
    message = str(caught.value)
    assert "\n" not in message
    assert str(bad) in message, message
    assert snapshot(core) == before
    return caught.value


# --------------------------------------------------------------------------- dispatch


def test_a_submitted_frame_starts_at_once_on_a_free_worker() -> None:
    core = Scheduler()
    assert actions(core.handle(joined("w1", "/A", now=1.0))) == []
    out = core.handle(
        submit(
            name="shot010",
            cluster="/A/B",
            priority=20,
            frames="7",
            argv=("render", "-f", "{frame}", "out.{frame}.exr"),
            now=2.0,
        )
    )
    assert out.result == 1
    assert actions(out) == [
        RunOnWorker(
            worker="w1",
            job_id=1,
            job_name="shot010",
            frame=7,
            attempt=1,
            argv=("render", "-f", "7", "out.7.exr"),
            env={
                "FARMD_JOB_ID": "1",
                "FARMD_JOB_NAME": "shot010",
                "FARMD_OWNER": "farm",
                "FARMD_FRAME": "7",
                "FARMD_FRAME_START": "7",
                "FARMD_FRAME_END": "7",
                "FARMD_FRAMES": "7",
                "FARMD_ATTEMPT": "1",
                "FARMD_SLOTS": "1",
                "FARMD_WORKER": "w1",
                "FARMD_CLUSTER": "/A/B",
                "FARMD_WORKER_CLUSTER": "/A",
            },
            rank=(2, 20, 1),  # /A/B is one boundary below the worker's /A
        )
    ]
    (job,) = core.jobs_page()["jobs"]
    assert job["state"] == "running"
    assert job["frames"] == frame_counts(running=1)
    assert frame_view(core, 1, 7) == {
        "frame": 7,
        "state": "running",
        "worker": "w1",
        "attempts": 1,
        "started_at": 2.0,
        "finished_at": None,
        "exit_code": None,
        "failures": 0,
        "retry_at": None,
        "frames": "7",
        "stopped": False,
        "waits": 0,
    }
    assert worker_view(core, "w1")["running"] == ["1:7"]


def test_a_job_without_name_priority_cluster_or_frames_gets_the_defaults() -> None:
    core = Scheduler(default_priority=500, default_cluster="/farm")
    core.handle(joined("w1", "/farm"))
    (start,) = starts(core.handle(submit()))
    assert (start.job_name, start.frame, start.rank) == ("job1", 1, (1, 500, 1))
    assert start.argv == ("render", "--frame", "1")
    assert start.env["FARMD_CLUSTER"] == "/farm"
    assert Scheduler().jobs_page()["jobs"] == []
    plain = Scheduler()
    plain.handle(submit())
    (job,) = plain.jobs_page()["jobs"]
    assert (job["cluster"], job["priority"]) == ("/", DEFAULT_PRIORITY)


def test_a_joining_worker_picks_up_queued_work() -> None:
    core = Scheduler()
    out = core.handle(submit(frames="1-3"))
    assert actions(out) == []
    assert state(core, 1) == "pending"
    assert core.jobs_page()["jobs"][0]["frames"] == frame_counts(pending=3)

    out = core.handle(joined("w1", slots=2))
    assert where(out) == [("w1", 1, 1, 1), ("w1", 1, 2, 1)]
    assert state(core, 1) == "running"
    assert core.jobs_page()["jobs"][0]["frames"] == frame_counts(running=2, pending=1)
    view = worker_view(core, "w1")
    assert (view["state"], view["used"], view["running"]) == ("busy", 2, ["1:1", "1:2"])


def test_a_worker_never_runs_more_frames_than_its_slots() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    first = starts(core.handle(submit(frames="1-5")))
    assert len(first) == 2
    assert starts(core.handle(submit(frames="1-3"))) == []  # no slot free
    assert order_ids(core, "w1") == [1, 2]

    out = core.handle(ended(first[0]))
    assert where(out) == [("w1", 1, 3, 1)]  # one slot freed, one frame started
    assert worker_view(core, "w1")["used"] == 2


def test_frames_spread_over_free_workers_in_the_order_they_joined() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=1, now=1.0))
    core.handle(joined("w2", slots=2, now=2.0))
    out = core.handle(submit(frames="1-4"))
    assert where(out) == [("w1", 1, 1, 1), ("w2", 1, 2, 1), ("w2", 1, 3, 1)]
    assert core.jobs_page()["jobs"][0]["frames"] == frame_counts(running=3, pending=1)


def test_frames_start_in_the_order_the_range_lists_them() -> None:
    core = Scheduler()
    core.handle(submit(frames="10,1-7x3,4,0"))  # 10, 1, 4, 7, 0: the repeated 4 is dropped
    started = run_one_at_a_time(core, core.handle(joined("w1")))
    assert [s.frame for s in started] == [10, 1, 4, 7, 0]
    assert [s.argv[-1] for s in started] == ["10", "1", "4", "7", "0"]
    assert [s.env["FARMD_FRAME"] for s in started] == ["10", "1", "4", "7", "0"]


def test_the_same_events_give_the_same_commands_in_every_process() -> None:
    # Four idle workers joined at the same instant; a job of two frames arrives. Which
    # workers get them must follow from the events alone (the join order, say), not from
    # the order of a set of names, which string hashing changes from process to process.
    script = textwrap.dedent(
        """
        from farmd.core import Scheduler, RunOnWorker, SubmitJob, WorkerJoined
        core = Scheduler()
        for name in ("w1", "w2", "w3", "w4"):
            core.handle(WorkerJoined(name=name, cluster="/", slots=1, now=0.0))
        out = core.handle(SubmitJob(argv=("render",), frames="1-2", now=1.0))
        print(*(c.worker for c in out.commands if isinstance(c, RunOnWorker)))
        """
    )
    seen = {
        seed: subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        for seed in ("0", "1", "2", "3")
    }
    assert set(seen.values()) == {"w1 w2"}, seen


# --------------------------------------------------------------------------- rank order


def test_a_one_slot_worker_drains_the_queue_in_qube_rank_order() -> None:
    # The example: a worker in /A/B/C, a job in each cluster around it. They are
    # submitted in a shuffled order, so ids do not follow rank.
    queue = [  # (cluster, priority, cluster order for a worker in /A/B/C)
        ("/A", 1, 4),
        ("/G", 1, 5),
        ("/A/B/C/D/E", 5, 2),
        ("/A/B/F", 2, 3),
        ("/", 1, 5),
        ("/A/B/C", 50, 1),  # the least urgent job, but at home: first
        ("/A/B", 2, 3),
        ("/A/B/C/D", 10, 2),
    ]
    core = Scheduler()
    for cluster, priority, _ in queue:
        core.handle(submit(cluster=cluster, priority=priority))
    expected = sorted(
        (order, priority, job_id) for job_id, (_, priority, order) in enumerate(queue, start=1)
    )
    assert [order for order, _, _ in expected] == [1, 2, 2, 3, 3, 4, 5, 5]

    out = core.handle(joined("w1", "/A/B/C"))
    # The worker took the first job; the view lists the rest in the order it will run them.
    assert core.order_view("w1", 100) == [
        {
            "id": job_id,
            "name": f"job{job_id}",
            "cluster": queue[job_id - 1][0],
            "order": order,
            "priority": priority,
        }
        for order, priority, job_id in expected[1:]
    ]
    assert core.order_view("w1", 3) == core.order_view("w1", 100)[:3]
    started = run_one_at_a_time(core, out)
    assert [s.job_id for s in started] == [6, 3, 8, 4, 7, 1, 2, 5]
    assert [s.rank for s in started] == expected
    assert {job["state"] for job in core.jobs_page()["jobs"]} == {"complete"}
    assert core.order_view("w1", 100) == []


def test_seed_a_job_in_a_runs_before_a_job_in_b_on_a_worker_in_a_c() -> None:
    # job1 in /B crosses two boundaries to reach /A/C, job2 in /A only one: job2 wins
    # even though job1 is far more urgent.
    ranks = drain_order(
        "/A/C", submit(cluster="/B", priority=1), submit(cluster="/A", priority=500)
    )
    assert ranks == [(3, 500, 2), (4, 1, 1)]


def test_seed_jobs_in_a_b_and_the_root_rank_alike_on_a_worker_in_c() -> None:
    ranks = drain_order(
        "/C",
        submit(cluster="/A", priority=3),
        submit(cluster="/B", priority=2),
        submit(cluster="/", priority=2),
    )
    assert ranks == [(3, 2, 2), (3, 2, 3), (3, 3, 1)]  # same order: priority, then id


@pytest.mark.parametrize("worker_cluster", ["/A/C", "/", "/B/x/y", "/Z"])
def test_a_job_with_pattern_all_ranks_as_order_one_everywhere(worker_cluster: str) -> None:
    jobs = [
        submit(cluster="/A/C/D", priority=1),
        submit(cluster="/B", priority=5, cross_cluster="/+"),
        submit(cluster=worker_cluster, priority=9),
    ]
    ranks = drain_order(worker_cluster, *jobs)
    assert ranks[:2] == [(1, 5, 2), (1, 9, 3)]  # the pattern job ties with the home job
    assert ranks[2][2] == 1


def test_a_prefix_pattern_is_a_string_prefix() -> None:
    jobs = [
        submit(cluster="/other", priority=7, cross_cluster="/showA+"),
        submit(cluster="/showAB"),
    ]
    assert drain_order("/showAB", *jobs) == [(1, 7, 1), (1, DEFAULT_PRIORITY, 2)]
    assert drain_order("/showB", *jobs) == [(3, 7, 1), (3, DEFAULT_PRIORITY, 2)]


def test_a_job_that_no_worker_admits_is_never_started() -> None:
    core = Scheduler()
    core.handle(joined("wa", "/A", now=1.0))
    core.handle(joined("wc", "/C/x", now=2.0))
    out = core.handle(submit(cluster="/A", restrictions="/B/+"))
    assert starts(out) == []
    out = core.handle(submit(cluster="/C"))  # an unrestricted job still runs
    assert where(out) == [("wa", 2, 1, 1)]
    run_one_at_a_time(core, out)
    assert state(core, 1) == "pending"
    assert order_ids(core, "wa") == order_ids(core, "wc") == []
    assert [w["state"] for w in core.workers_view()] == ["idle", "idle"]

    out = core.handle(joined("wb", "/B/x"))
    assert where(out) == [("wb", 1, 1, 1)]


def test_a_restricted_worker_only_takes_jobs_in_matching_clusters() -> None:
    core = Scheduler()
    for cluster, priority in [("/A/x/y", 1), ("/C", 9), ("/A", 1), ("/A/x", 5)]:
        core.handle(submit(cluster=cluster, priority=priority))
    started = run_one_at_a_time(core, core.handle(joined("w1", "/A/x", restrictions="/A/x || /C")))
    assert [s.job_id for s in started] == [4, 2]
    assert [state(core, job_id) for job_id in (1, 2, 3, 4)] == [
        "pending",
        "complete",
        "pending",
        "complete",
    ]
    assert order_ids(core, "w1") == []
    assert worker_view(core, "w1")["state"] == "idle"

    out = core.handle(joined("w2", "/A/x"))  # unrestricted: takes the rest
    assert [s.job_id for s in run_one_at_a_time(core, out)] == [1, 3]


def test_a_worker_restricted_to_children_skips_the_parent() -> None:
    core = Scheduler()
    core.handle(submit(cluster="/A", priority=1))
    core.handle(submit(cluster="/A/y/z", priority=1))
    core.handle(submit(cluster="/A/y", priority=9))
    started = run_one_at_a_time(core, core.handle(joined("w1", "/A/x", restrictions="/A/*")))
    assert [s.job_id for s in started] == [3]


# --------------------------------------------------------------------------- frame results


def test_exit_zero_completes_frames_and_the_job_ends_once() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    first, second = starts(core.handle(submit(frames="1-2")))

    out = core.handle(ended(first, now=5.0))
    assert actions(out) == []
    assert frame_view(core, 1, 1) | {"started_at": None} == {
        "frame": 1,
        "state": "complete",
        "worker": "w1",
        "attempts": 1,
        "started_at": None,
        "finished_at": 5.0,
        "exit_code": 0,
        "failures": 0,
        "retry_at": None,
        "frames": "1",
        "stopped": False,
        "waits": 0,
    }
    assert state(core, 1) == "running"
    assert core.ended([1]) == {}

    out = core.handle(ended(second))
    assert actions(out) == [JobEnded(job_id=1, state=JobState.COMPLETE)]
    assert state(core, 1) == "complete"
    assert core.ended([1]) == {1: JobState.COMPLETE}
    assert worker_view(core, "w1")["state"] == "idle"
    # The same result again is stale: nothing ends twice.
    out = core.handle(ended(second))
    assert actions(out) == []
    assert notes(out) == ["stale result ignored"]


def test_a_non_zero_exit_fails_the_frame_and_the_job_when_nothing_else_runs() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    first, second = starts(core.handle(submit(frames="1-2")))

    out = core.handle(ended(first, exit_code=3))
    assert actions(out) == []
    assert frame_view(core, 1, 1)["state"] == "failed"
    assert frame_view(core, 1, 1)["exit_code"] == 3
    assert state(core, 1) == "running"  # frame 2 still runs

    out = core.handle(ended(second))
    assert actions(out) == [JobEnded(job_id=1, state=JobState.FAILED)]
    assert core.jobs_page()["jobs"][0]["frames"] == frame_counts(complete=1, failed=1)
    assert state(core, 1) == "failed"


def test_an_error_fails_a_frame_even_with_exit_code_zero() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit()))
    out = core.handle(ended(start, error="cannot execute 'render': not found"))
    assert actions(out) == [JobEnded(job_id=1, state=JobState.FAILED)]
    assert frame_view(core, 1, 1)["state"] == "failed"


def test_every_job_state_as_a_jobs_page_shows_it() -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A", slots=3, restrictions="/A"))
    running, complete, failed = starts(
        core.handle(submit(cluster="/A", frames="1-3", name="mixed"))
    )
    core.handle(ended(complete))
    core.handle(ended(failed, exit_code=1))
    core.handle(submit(cluster="/B"))  # 2: no worker takes /B
    core.handle(submit(cluster="/B", depends_on=(1,)))  # 3: waits for 1
    core.handle(submit(cluster="/B"))  # 4: killed
    core.handle(KillJobs(job_ids=(4,), now=0.0))
    assert {job["id"]: job["state"] for job in core.jobs_page()["jobs"]} == {
        1: "running",
        2: "pending",
        3: "waiting",
        4: "killed",
    }
    core.handle(ended(running))
    assert state(core, 1) == "failed"  # one frame failed; nothing pends or runs
    assert core.ended([1, 2, 3, 4]) == {1: JobState.FAILED, 4: JobState.KILLED}


# --------------------------------------------------------------------------- dependencies


def test_a_dependent_waits_until_all_its_dependencies_complete_across_clusters() -> None:
    core = Scheduler()
    core.handle(joined("wa", "/A", restrictions="/A", now=1.0))
    core.handle(joined("wb", "/B", restrictions="/B", now=2.0))
    core.handle(joined("wc", "/C", now=3.0))
    (start_a,) = starts(core.handle(submit(cluster="/A")))
    (start_b,) = starts(core.handle(submit(cluster="/B")))
    out = core.handle(submit(cluster="/C", depends_on=(1, 2)))
    assert out.result == 3
    assert starts(out) == []
    assert state(core, 3) == "waiting"
    assert core.job_view(3)["waiting_on"] == [1, 2]
    assert core.jobs_page()["jobs"][2]["depends_on"] == ["1:complete", "2:complete"]
    assert order_ids(core, "wc") == []
    assert worker_view(core, "wc")["state"] == "idle"

    out = core.handle(ended(start_a))
    assert actions(out) == [JobEnded(job_id=1, state=JobState.COMPLETE)]
    assert state(core, 3) == "waiting"
    assert core.job_view(3)["waiting_on"] == [2]

    out = core.handle(ended(start_b))
    assert actions(out)[0] == JobEnded(job_id=2, state=JobState.COMPLETE)
    assert where(out) == [("wc", 3, 1, 1)]  # in the same outcome
    assert core.job_view(3)["waiting_on"] == []
    assert state(core, 3) == "running"


def test_a_chain_of_dependencies_runs_one_after_the_other() -> None:
    core = Scheduler()
    core.handle(submit(cluster="/A"))
    core.handle(submit(cluster="/B", depends_on=(1,)))
    core.handle(submit(cluster="/", depends_on=(2, 1)))
    assert [state(core, job_id) for job_id in (1, 2, 3)] == ["pending", "waiting", "waiting"]
    started = run_one_at_a_time(core, core.handle(joined("w1", slots=4)))
    assert [s.job_id for s in started] == [1, 2, 3]


def test_an_already_complete_dependency_counts() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit()))
    core.handle(ended(start))
    out = core.handle(submit(depends_on=(1, 1)))
    assert where(out) == [("w1", 2, 1, 1)]
    assert core.job_view(2)["waiting_on"] == []
    assert core.job_view(2)["depends_on"] == ["1:complete"]  # repeats dropped


def test_an_unknown_dependency_is_refused_and_no_job_id_is_used() -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A", restrictions="/A"))
    core.handle(submit(cluster="/B"))
    assert_refused(core, submit(depends_on=(1, 42)), UnknownJobError, 42)
    assert core.handle(submit(cluster="/B", depends_on=(1,))).result == 2


# --------------------------------------------------------------------------- lost workers


def test_a_lost_workers_frames_go_back_to_pending_and_run_elsewhere() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(submit(frames="1-2"))
    out = core.handle(WorkerLost(name="w1", now=3.0))
    assert actions(out) == []
    assert out.result == ["1:1"]
    assert state(core, 1) == "pending"  # not failed: losing a worker is not the job's fault
    lost = frame_view(core, 1, 1)
    assert (lost["state"], lost["attempts"], lost["started_at"]) == ("pending", 1, None)
    assert core.workers_view() == []

    out = core.handle(joined("w2", slots=2))
    assert where(out) == [("w2", 1, 1, 2), ("w2", 1, 2, 1)]  # the lost frame first
    (start,) = [s for s in starts(out) if s.frame == 1]
    assert start.env["FARMD_ATTEMPT"] == "2"
    assert frame_view(core, 1, 1)["worker"] == "w2"


def test_a_lost_worker_frames_go_at_once_to_an_idle_worker() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(submit(cluster="/A"))
    core.handle(joined("w2", "/B"))  # idle: nothing left to run
    out = core.handle(WorkerLost(name="w1", now=1.0))
    assert where(out) == [("w2", 1, 1, 2)]


def test_a_result_from_the_lost_attempt_is_ignored() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (old,) = starts(core.handle(submit()))
    core.handle(joined("w2"))
    (new,) = starts(core.handle(WorkerLost(name="w1", now=1.0)))
    assert (new.worker, new.attempt) == ("w2", 2)

    out = core.handle(ended(old))  # from a worker that is gone
    assert actions(out) == []
    assert notes(out) == ["stale result ignored"]
    core.handle(joined("w1"))  # back, holding nothing
    out = core.handle(ended(old))  # the agent resends the old result
    assert actions(out) == []
    assert notes(out) == ["stale result ignored"]
    assert frame_view(core, 1, 1)["state"] == "running"
    assert worker_view(core, "w2")["running"] == ["1:1"]

    out = core.handle(ended(new))
    assert actions(out) == [JobEnded(job_id=1, state=JobState.COMPLETE)]
    assert frame_view(core, 1, 1)["attempts"] == 2


def test_a_result_for_an_older_attempt_on_the_same_worker_is_ignored() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (old,) = starts(core.handle(submit()))
    core.handle(WorkerLost(name="w1", now=1.0))
    (new,) = starts(core.handle(joined("w1")))  # came back empty-handed
    assert (new.worker, new.attempt) == ("w1", 2)
    out = core.handle(ended(old, exit_code=1))
    assert actions(out) == []
    assert frame_view(core, 1, 1)["state"] == "running"
    assert actions(core.handle(ended(new))) == [JobEnded(job_id=1, state=JobState.COMPLETE)]


def test_a_rejoining_worker_readopts_a_frame_still_pending() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(frames="1-2")))
    core.handle(WorkerLost(name="w1", now=1.0))
    out = core.handle(joined("w1", running=((1, 1, 1),)))
    assert actions(out) == []  # frame 1 is its own again, and its one slot is used
    assert "frame readopted" in notes(out)
    assert frame_view(core, 1, 1) | {"started_at": None} == {
        "frame": 1,
        "state": "running",
        "worker": "w1",
        "attempts": 1,
        "started_at": None,
        "finished_at": None,
        "exit_code": None,
        "failures": 0,
        "retry_at": None,
        "frames": "1",
        "stopped": False,
        "waits": 0,
    }
    assert worker_view(core, "w1")["running"] == ["1:1"]
    out = core.handle(ended(start))  # the result of the first attempt counts
    assert where(out) == [("w1", 1, 2, 1)]
    assert frame_view(core, 1, 1)["state"] == "complete"


def test_a_replaced_worker_keeps_its_frames() -> None:
    # The host reconnected before its old session's silence was noticed.
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    core.handle(submit(frames="1-3"))
    out = core.handle(joined("w1", slots=2, running=((1, 1, 1), (1, 2, 1))))
    assert actions(out) == []
    assert worker_view(core, "w1")["running"] == ["1:1", "1:2"]
    assert core.jobs_page()["jobs"][0]["frames"] == frame_counts(running=2, pending=1)


def test_a_rejoining_worker_is_told_to_stop_a_frame_someone_else_took() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (old,) = starts(core.handle(submit(frames="1")))
    core.handle(WorkerLost(name="w1", now=1.0))
    (new,) = starts(core.handle(joined("w2")))
    core.handle(submit())  # job 2 waits for a slot

    out = core.handle(joined("w1", running=((1, 1, 1),)))
    assert actions(out) == [KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1)]
    assert "stale frame stopped" in notes(out)
    assert worker_view(core, "w1")["used"] == 1  # until the process has stopped
    assert frame_view(core, 1, 1)["worker"] == "w2"

    out = core.handle(ended(old, exit_code=-15))
    assert where(out) == [("w1", 2, 1, 1)]  # the slot is free again
    assert frame_view(core, 1, 1)["state"] == "running"
    assert actions(core.handle(ended(new))) == [JobEnded(job_id=1, state=JobState.COMPLETE)]


def test_a_rejoining_worker_is_told_to_stop_a_frame_that_completed() -> None:
    # The result arrived, but its acknowledgement was lost with the connection: the agent
    # still lists the attempt when it registers, and sends the result again.
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit()))
    core.handle(ended(start))
    core.handle(WorkerLost(name="w1", now=1.0))
    out = core.handle(joined("w1", running=((1, 1, 1),)))
    assert actions(out) == [KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1)]
    out = core.handle(ended(start))
    assert actions(out) == []  # no second JobEnded
    assert worker_view(core, "w1")["state"] == "idle"
    assert state(core, 1) == "complete"


def test_a_rejoining_worker_is_told_to_stop_frames_of_unknown_jobs() -> None:
    core = Scheduler()
    out = core.handle(joined("w1", slots=2, running=((7, 1, 1),)))
    assert actions(out) == [KillOnWorker(worker="w1", job_id=7, frame=1, attempt=1)]
    assert worker_view(core, "w1")["used"] == 1


def test_a_stopped_attempt_and_a_new_attempt_of_one_frame_each_hold_a_slot() -> None:
    # w1 (2 slots) runs frame 1:1 and loses its connection; w2 takes the frame (attempt
    # 2) and is lost too. w1 returns, still running attempt 1: it is told to stop it, and
    # in the same outcome it is given the frame again (attempt 3). Until attempt 1 has
    # stopped, w1 runs two processes, so both of its slots are in use.
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    core.handle(submit())
    core.handle(WorkerLost(name="w1", now=1.0))
    core.handle(joined("w2"))
    core.handle(WorkerLost(name="w2", now=2.0))
    out = core.handle(joined("w1", slots=2, running=((1, 1, 1),)))
    assert [c for c in actions(out) if isinstance(c, KillOnWorker)] == [
        KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1)
    ]
    assert where(out) == [("w1", 1, 1, 3)]
    # So a second job must wait for a slot, not become a third process on a 2-slot host.
    used = worker_view(core, "w1")["used"]
    assert (used, where(core.handle(submit()))) == (2, [])


def test_the_stopped_attempts_result_frees_its_slot_and_nothing_else() -> None:
    # The same story, until both attempts have reported: the stopped one frees its own
    # slot, and the new one's result completes the frame.
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    core.handle(submit())
    core.handle(WorkerLost(name="w1", now=1.0))
    core.handle(joined("w2"))
    core.handle(WorkerLost(name="w2", now=2.0))
    (new,) = starts(core.handle(joined("w1", slots=2, running=((1, 1, 1),))))
    stopped = FrameEnded(worker="w1", job_id=1, frame=1, attempt=1, exit_code=-15, now=3.0)
    assert actions(core.handle(stopped)) == []
    assert worker_view(core, "w1")["running"] == ["1:1"]  # attempt 3 still runs
    assert actions(core.handle(ended(new))) == [JobEnded(job_id=1, state=JobState.COMPLETE)]
    assert worker_view(core, "w1")["used"] == 0


@pytest.mark.parametrize(
    "running", [((1, 1, 1), (1, 1, 3)), ((1, 1, 3), (1, 1, 1))], ids=["stale-first", "live-first"]
)
def test_a_host_returning_with_two_attempts_of_a_frame_keeps_the_live_one(
    running: tuple[tuple[int, int, int], ...],
) -> None:
    # w1 holds attempt 1 (told to stop) and attempt 3 of frame 1:1 when it loses its
    # connection again; it returns listing both. Attempt 3 is readopted and attempt 1
    # stopped, whichever it lists first, and each keeps its slot until it reports.
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    core.handle(submit())
    core.handle(WorkerLost(name="w1", now=1.0))
    core.handle(joined("w2"))
    core.handle(WorkerLost(name="w2", now=2.0))
    core.handle(joined("w1", slots=2, running=((1, 1, 1),)))  # attempt 3 starts on w1
    core.handle(WorkerLost(name="w1", now=3.0))
    out = core.handle(joined("w1", slots=2, running=running))
    assert actions(out) == [KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1)]
    assert frame_view(core, 1, 1)["state"] == "running"
    live = FrameEnded(worker="w1", job_id=1, frame=1, attempt=3, exit_code=0, now=4.0)
    assert actions(core.handle(live)) == [JobEnded(job_id=1, state=JobState.COMPLETE)]
    assert worker_view(core, "w1")["running"] == ["1:1"]  # attempt 1 has not stopped yet


def test_losing_an_unknown_worker_is_refused() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    assert_refused(core, WorkerLost(name="ghost", now=0.0), UnknownWorkerError, "'ghost'")


# --------------------------------------------------------------------------- kill


def test_kill_ends_pending_frames_and_stops_running_ones() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(frames="1-3")))
    core.handle(submit())  # job 2 waits for the slot

    out = core.handle(KillJobs(job_ids=(1,), now=4.0))
    assert out.result == [1]
    assert actions(out) == [
        KillOnWorker(worker="w1", job_id=1, frame=1, attempt=1),
        JobEnded(job_id=1, state=JobState.KILLED),
    ]
    assert state(core, 1) == "killed"
    assert core.jobs_page()["jobs"][0]["frames"] == frame_counts(killed=3)
    assert frame_view(core, 1, 1)["finished_at"] == 4.0
    # The slot frees only when the worker says the process has stopped.
    assert worker_view(core, "w1")["running"] == ["1:1"]
    assert state(core, 2) == "pending"

    out = core.handle(ended(start, exit_code=-15))
    assert where(out) == [("w1", 2, 1, 1)]
    assert frame_view(core, 1, 1)["state"] == "killed"
    assert state(core, 1) == "killed"


def test_killing_a_waiting_job_ends_it() -> None:
    core = Scheduler()
    core.handle(submit(cluster="/A"))
    core.handle(submit(depends_on=(1,)))
    out = core.handle(KillJobs(job_ids=(2,), now=0.0))
    assert actions(out) == [JobEnded(job_id=2, state=JobState.KILLED)]
    assert state(core, 2) == "killed"


def test_killing_an_ended_job_changes_nothing() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit()))
    core.handle(ended(start))
    before = snapshot(core)
    out = core.handle(KillJobs(job_ids=(1, 1), now=0.0))
    assert out.result == [1]
    assert actions(out) == []
    assert snapshot(core) == before


def test_kill_of_an_unknown_id_is_refused_and_kills_nothing() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(submit(frames="1-2"))
    assert_refused(core, KillJobs(job_ids=(1, 99), now=0.0), UnknownJobError, 99)
    assert state(core, 1) == "running"


# --------------------------------------------------------------------------- modify


def busy_worker(core: Scheduler, name: str, cluster: str = "/") -> RunOnWorker:
    """Join a one-slot worker to an empty farm and keep it busy with a job (job 1), so
    that what is submitted next queues and `order_view` shows it."""
    core.handle(joined(name, cluster))
    (start,) = starts(core.handle(submit(cluster=cluster, name="hog")))
    return start


def test_modify_priority_takes_effect_at_the_next_pick() -> None:
    core = Scheduler()
    hog = busy_worker(core, "w1", "/A")
    core.handle(submit(cluster="/A", priority=10))  # 2
    core.handle(submit(cluster="/A", priority=20))  # 3
    assert order_ids(core, "w1") == [2, 3]

    out = core.handle(ModifyJob(job_id=3, priority=1, now=0.0))
    assert actions(out) == []  # no slot is free: nothing starts
    assert out.result["priority"] == 1
    assert [(e["id"], e["priority"]) for e in core.order_view("w1", 10)] == [(3, 1), (2, 10)]
    assert where(core.handle(ended(hog))) == [("w1", 3, 1, 1)]


def test_modify_cluster_takes_effect_at_the_next_pick() -> None:
    core = Scheduler()
    hog = busy_worker(core, "w1", "/A")
    core.handle(submit(cluster="/A", priority=5))  # 2: order 1 for w1
    core.handle(submit(cluster="/B", priority=1))  # 3: order 3 for w1
    assert [(e["id"], e["order"]) for e in core.order_view("w1", 10)] == [(2, 1), (3, 3)]

    out = core.handle(ModifyJob(job_id=3, cluster="/A/", now=0.0))
    assert out.result["cluster"] == "/A"  # normalised
    assert [(e["id"], e["order"], e["cluster"]) for e in core.order_view("w1", 10)] == [
        (3, 1, "/A"),
        (2, 1, "/A"),
    ]
    assert [n["path"] for n in core.clusters_view()] == ["/", "/A"]  # /B had only job 3
    assert where(core.handle(ended(hog))) == [("w1", 3, 1, 1)]


def test_modify_patterns_takes_effect_at_the_next_pick() -> None:
    core = Scheduler()
    hog = busy_worker(core, "w1", "/A")
    core.handle(submit(cluster="/A", priority=5))  # 2
    core.handle(submit(cluster="/B", priority=1))  # 3
    core.handle(ModifyJob(job_id=3, cross_cluster="/A+", now=0.0))
    assert [(e["id"], e["order"]) for e in core.order_view("w1", 10)] == [(3, 1), (2, 1)]
    assert core.job_view(3)["cross_cluster"] == "/A+"
    assert where(core.handle(ended(hog))) == [("w1", 3, 1, 1)]


def test_modify_restrictions_wakes_a_starved_worker() -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A"))
    core.handle(submit(cluster="/A", restrictions="/B/+"))
    assert worker_view(core, "w1")["state"] == "idle"
    assert order_ids(core, "w1") == []

    out = core.handle(ModifyJob(job_id=1, restrictions="", now=0.0))
    assert where(out) == [("w1", 1, 1, 1)]
    assert core.job_view(1)["restrictions"] == ""


def test_modify_cluster_wakes_a_restricted_starved_worker() -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A", restrictions="/A/+"))
    core.handle(submit(cluster="/B"))
    assert starts(core.handle(ModifyJob(job_id=1, priority=3, now=0.0))) == []
    out = core.handle(ModifyJob(job_id=1, cluster="/A/x", now=0.0))
    assert [(s.worker, s.job_id, s.rank) for s in starts(out)] == [("w1", 1, (2, 3, 1))]
    assert starts(out)[0].env["FARMD_CLUSTER"] == "/A/x"


def test_modify_of_a_running_job_applies_to_its_next_frames() -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A"))
    (first,) = starts(core.handle(submit(cluster="/A", frames="1-2")))
    core.handle(ModifyJob(job_id=1, cluster="/B", priority=7, now=0.0))
    assert first.env["FARMD_CLUSTER"] == "/A"  # the running frame is left alone
    (second,) = starts(core.handle(ended(first)))
    assert (second.env["FARMD_CLUSTER"], second.rank) == ("/B", (3, 7, 1))


def test_modify_of_an_ended_job_is_refused() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(KillJobs(job_ids=(1,), now=0.0))
    error = assert_refused(core, ModifyJob(job_id=1, priority=5, now=0.0), JobSpecError, "job 1")
    assert "ended" in str(error)


def test_modify_of_an_unknown_job_is_refused() -> None:
    core = Scheduler()
    core.handle(submit())
    assert_refused(core, ModifyJob(job_id=5, priority=5, now=0.0), UnknownJobError, 5)


@pytest.mark.parametrize(
    ("change", "error", "bad"),
    [
        ({"priority": 0}, JobSpecError, 0),
        ({"priority": -3}, JobSpecError, -3),
        ({"priority": 2**31}, JobSpecError, 2**31),
        ({"cluster": "A/B"}, ClusterPathError, "A/B"),
        ({"cluster": "/A//B"}, ClusterPathError, "/A//B"),
        ({"cluster": ""}, ClusterPathError, "''"),
        ({"restrictions": "/A ||"}, RestrictionError, "/A ||"),
        ({"restrictions": "A"}, RestrictionError, "'A'"),
        ({"cross_cluster": "/A,,/B"}, PatternError, "/A,,/B"),
        # A good value does not let a bad one through.
        ({"priority": 2, "cluster": "/A/../B"}, ClusterPathError, "/A/../B"),
        ({"cluster": "/C", "priority": 0}, JobSpecError, 0),
    ],
)
def test_modify_with_a_bad_value_is_refused_and_changes_nothing(
    change: dict[str, Any], error: type[UserError], bad: object
) -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A", restrictions="/A"))
    core.handle(submit(cluster="/B", priority=4))
    assert_refused(core, ModifyJob(job_id=1, now=0.0, **change), error, bad)


# --------------------------------------------------------------------------- views


def test_clusters_view_counts_workers_and_active_jobs_at_and_below_each_cluster() -> None:
    core = Scheduler()

    def counts(core: Scheduler) -> list[dict[str, Any]]:  # the shares: test_core_shares.py
        return [{k: v for k, v in n.items() if k != "shares"} for n in core.clusters_view()]

    assert counts(core) == []
    core.handle(joined("w1", "/A/x"))
    core.handle(joined("w2", "/A/y"))
    core.handle(submit(cluster="/B", restrictions="/B/+"))  # 1: never starts
    core.handle(submit(cluster="/A/x/r", restrictions="/Q"))  # 2: never starts

    def node(path: str, here: tuple[int, int], total: tuple[int, int]) -> dict[str, Any]:
        return {
            "path": path,
            "workers_here": here[0],
            "jobs_here": here[1],
            "workers_total": total[0],
            "jobs_total": total[1],
        }

    assert counts(core) == [
        node("/", (0, 0), (2, 2)),
        node("/A", (0, 0), (2, 1)),
        node("/A/x", (1, 0), (1, 1)),
        node("/A/x/r", (0, 1), (0, 1)),
        node("/A/y", (1, 0), (1, 0)),
        node("/B", (0, 1), (0, 1)),
    ]
    core.handle(WorkerLost(name="w2", now=0.0))  # /A/y's last member leaves
    core.handle(KillJobs(job_ids=(1,), now=0.0))  # an ended job is no longer counted
    assert counts(core) == [
        node("/", (0, 0), (1, 1)),
        node("/A", (0, 0), (1, 1)),
        node("/A/x", (1, 0), (1, 1)),
        node("/A/x/r", (0, 1), (0, 1)),
    ]
    core.handle(KillJobs(job_ids=(2,), now=0.0))
    core.handle(WorkerLost(name="w1", now=0.0))
    assert counts(core) == []


def test_workers_view_shows_what_each_worker_runs() -> None:
    core = Scheduler()
    core.handle(joined("w2", "/B", slots=3, restrictions="/B/+", now=1.5))
    core.handle(joined("w1", "/A", slots=2, now=2.5))
    core.handle(submit(cluster="/A", frames="4-6"))
    assert core.workers_view() == [
        {
            "name": "w1",
            "cluster": "/A",
            "restrictions": "",
            "state": "busy",
            "locked": None,
            "slots": 2,
            "used": 2,
            "types": [],
            "releases": {},
            "release_failures": {},
            "properties": {},
            "resources": {},
            "running": ["1:4", "1:5"],
            "connected_at": 2.5,
            "load": None,
        },
        {
            "name": "w2",
            "cluster": "/B",
            "restrictions": "/B/+",
            "state": "idle",
            "locked": None,
            "slots": 3,
            "used": 0,
            "types": [],
            "releases": {},
            "release_failures": {},
            "properties": {},
            "resources": {},
            "running": [],
            "connected_at": 1.5,
            "load": None,
        },
    ]


def test_order_view_lists_only_runnable_jobs_this_worker_admits() -> None:
    core = Scheduler()
    hog = busy_worker(core, "w1", "/A")  # job 1
    core.handle(submit(cluster="/A", priority=3))  # 2
    core.handle(submit(cluster="/", priority=1, depends_on=(1,)))  # 3: waiting
    core.handle(submit(cluster="/B", restrictions="/B"))  # 4: not for w1
    core.handle(submit(cluster="/A/x", priority=2, name="comp"))  # 5
    core.handle(submit(cluster="/C", priority=2))  # 6
    assert core.order_view("w1", 10) == [
        {"id": 2, "name": "job2", "cluster": "/A", "order": 1, "priority": 3},
        {"id": 5, "name": "comp", "cluster": "/A/x", "order": 2, "priority": 2},
        {"id": 6, "name": "job6", "cluster": "/C", "order": 3, "priority": 2},
    ]
    assert [e["id"] for e in core.order_view("w1", 1)] == [2]
    assert core.order_view("w1", 0) == []
    core.handle(ended(hog))  # job 1 completes: job 3 may run; w1 took job 2
    assert order_ids(core, "w1") == [5, 3, 6]
    with pytest.raises(UnknownWorkerError, match="'nobody'"):
        core.order_view("nobody", 10)


def test_frame_holder_names_the_worker_that_ran_a_frame_last() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(submit(frames="1-2"))
    frame, worker = core.frame_holder(1, None)
    assert (frame.number, worker) == (1, "w1")
    with pytest.raises(JobSpecError, match="1:2 has not run yet"):
        core.frame_holder(1, 2)
    with pytest.raises(JobSpecError, match="no frame 9"):
        core.frame_holder(1, 9)
    with pytest.raises(UnknownJobError, match="job 3 does not exist"):
        core.job_view(3)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("fields", "error", "bad"),
    [
        ({"argv": ()}, JobSpecError, "command"),
        ({"argv": ("",)}, JobSpecError, "command"),
        ({"cluster": "show1"}, ClusterPathError, "show1"),
        ({"cluster": "/a b"}, ClusterPathError, "/a b"),
        ({"priority": 0}, JobSpecError, 0),
        ({"priority": 2**31}, JobSpecError, 2**31),
        ({"priority": True}, JobSpecError, True),
        ({"restrictions": "/A |"}, RestrictionError, "/A |"),
        ({"cross_cluster": "showA+"}, PatternError, "showA+"),
        ({"frames": "3-1"}, JobSpecError, "3-1"),
        ({"frames": "1-x"}, JobSpecError, "1-x"),
        ({"frames": "1-10x0"}, JobSpecError, "1-10x0"),
        ({"frames": " "}, JobSpecError, "' '"),
        ({"depends_on": (7,)}, UnknownJobError, 7),
    ],
)
def test_a_bad_submit_is_refused_and_uses_no_job_id(
    fields: dict[str, Any], error: type[UserError], bad: object
) -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A", restrictions="/A"))
    core.handle(submit(cluster="/B"))
    assert_refused(core, submit(**fields), error, bad)
    assert core.handle(submit(cluster="/B")).result == 2


@pytest.mark.parametrize(
    ("fields", "error", "bad"),
    [
        ({"slots": 0}, WorkerSettingsError, "got 0"),
        ({"cluster": "nowhere"}, ClusterPathError, "nowhere"),
        ({"restrictions": "/A or"}, RestrictionError, "/A or"),
    ],
)
def test_a_bad_worker_is_refused_and_a_connected_one_of_that_name_stays(
    fields: dict[str, Any], error: type[UserError], bad: object
) -> None:
    core = Scheduler()
    core.handle(joined("w1", "/A"))
    core.handle(submit(cluster="/A", frames="1-2"))
    event = joined(**({"name": "w1", "cluster": "/A", "running": ((1, 1, 1),)} | fields))
    assert_refused(core, event, error, bad)
    assert worker_view(core, "w1")["running"] == ["1:1"]
    assert_refused(core, joined(**({"name": "w9", "cluster": "/A"} | fields)), error, bad)


# --------------------------------------------------------------------------- state machine

HOST_SLOTS = {"h1": 1, "h2": 2, "h3": 3}
# A small tree, so that workers and jobs meet in the same clusters and restrictions and
# patterns often match; `/ab` is a string prefix of nothing but shares `/a`'s first letter.
TREE = ("/", "/a", "/a/b", "/a/c", "/ab", "/b")
MACHINE_CLUSTERS = st.sampled_from(TREE)
MACHINE_RESTRICTIONS = sometimes(restriction_texts(TREE))
MACHINE_PATTERNS = sometimes(pattern_texts(TREE))
# Hosts mostly keep their processes across a lost connection: that is where attempts of
# one frame meet on one host.
RARELY = st.sampled_from([False, False, False, True])
FRAME_RANGES = st.sampled_from(["1", "1", "1-2", "3,1", "1-7x3"])
TERMINAL = frozenset({FrameState.COMPLETE, FrameState.FAILED, FrameState.KILLED})

Attempt = tuple[int, int, int]  # (job, frame, attempt)


@dataclass
class Host:
    """A render host as its agent sees it: the attempts it holds (running, or finished
    with a result not yet acknowledged) and those it was told to stop."""

    slots: int
    connected: bool = False
    held: set[Attempt] = field(default_factory=set)
    stopping: set[Attempt] = field(default_factory=set)


def attempts_held(worker: Worker) -> set[Attempt]:
    """What the core counts as running on a worker, as (job, frame, attempt): the one
    place that reads `Worker.running` itself."""
    return set(worker.running)


def segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def up_to_root(path: str) -> list[str]:
    parts = segments(path)
    return ["/" + "/".join(parts[:n]) for n in range(len(parts), -1, -1)]


class FarmMachine(RuleBasedStateMachine):
    """Random submits, joins, losses, results, kills and modifies against the core, with
    the hosts modelled on the agent's side: what each runs, and what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.core = Scheduler()
        self.now = 0.0
        self.next_id = 1
        self.hosts = {name: Host(slots) for name, slots in HOST_SLOTS.items()}
        self.last_attempt: dict[tuple[int, int], int] = {}
        self.job_ended: dict[int, JobState] = {}
        self.completions: Counter[tuple[int, int]] = Counter()

    # ------------------------------------------------------------------ driving

    def frame_states(self) -> dict[tuple[int, int], FrameState]:
        return {
            (job.id, f.number): f.state
            for job in self.core.jobs.values()
            for f in job.frames.values()
        }

    def handle(self, event: Event) -> Outcome:
        before_frames = self.frame_states()
        before_jobs = {job.id: job.state for job in self.core.jobs.values()}
        out = self.core.handle(event)
        ended_now: dict[int, JobState] = {}
        for command in out.commands:
            match command:
                case RunOnWorker(worker=name, job_id=job_id, frame=number, attempt=attempt):
                    host = self.hosts[name]
                    assert host.connected, command
                    key = (job_id, number)
                    assert attempt == self.last_attempt.get(key, 0) + 1, command
                    self.last_attempt[key] = attempt
                    assert command.env["FARMD_ATTEMPT"] == str(attempt)
                    assert command.env["FARMD_FRAME"] == str(number)
                    job = self.core.jobs[job_id]
                    view = self.core.workers[name].view
                    assert admits(job.queued(), view), command
                    assert command.rank == rank_key(job.queued(), view)
                    host.held.add((job_id, number, attempt))
                case KillOnWorker(worker=name, job_id=job_id, frame=number, attempt=attempt):
                    host = self.hosts[name]
                    assert host.connected, command
                    assert (job_id, number, attempt) in host.held, command
                    host.stopping.add((job_id, number, attempt))
                case JobEnded(job_id=job_id, state=end):
                    assert job_id not in self.job_ended, command
                    assert job_id not in ended_now, command
                    ended_now[job_id] = end
                case Note(event="frame finished", fields=fields) if not fields["error"]:
                    if fields["exit_code"] == 0:
                        self.completions[fields["job"], fields["frame"]] += 1
        # JobEnded exactly when a job's state became an end state, with that state.
        for job in self.core.jobs.values():
            was = before_jobs.get(job.id)
            if job.state.ended and not (was is not None and was.ended):
                assert ended_now.get(job.id) is job.state, (job.id, job.state, ended_now)
        assert set(ended_now) <= {j.id for j in self.core.jobs.values() if j.state.ended}
        self.job_ended.update(ended_now)
        # An ended frame never changes again; a frame completes at most once.
        after = self.frame_states()
        for key, was in before_frames.items():
            if was in TERMINAL:
                assert after[key] is was, (key, was, after[key])
        assert all(n <= 1 for n in self.completions.values()), self.completions
        return out

    def refuse(self, event: Event, error: type[UserError]) -> None:
        self.tick()
        before = snapshot(self.core)
        with pytest.raises(error) as caught:
            self.core.handle(event)
        assert "\n" not in str(caught.value)
        assert snapshot(self.core) == before

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def connected(self) -> list[str]:
        return sorted(name for name, host in self.hosts.items() if host.connected)

    # ------------------------------------------------------------------ jobs

    @rule(
        cluster=MACHINE_CLUSTERS,
        priority=priorities,
        frames=FRAME_RANGES,
        restrictions=MACHINE_RESTRICTIONS,
        patterns=MACHINE_PATTERNS,
        data=st.data(),
    )
    def submit(
        self,
        cluster: str,
        priority: int,
        frames: str,
        restrictions: str,
        patterns: str,
        data: st.DataObject,
    ) -> None:
        ids = sorted(self.core.jobs)
        deps = data.draw(st.lists(st.sampled_from(ids), max_size=2) if ids else st.just([]))
        event = SubmitJob(
            argv=("render", "{frame}"),
            now=self.tick(),
            cluster=cluster,
            priority=priority,
            frames=frames,
            restrictions=restrictions,
            cross_cluster=patterns,
            depends_on=tuple(deps),
        )
        out = self.handle(event)
        assert out.result == self.next_id
        self.next_id += 1

    @rule(data=st.data())
    def refused(self, data: st.DataObject) -> None:
        """A bad submit, kill, modify or loss: refused, and nothing changes."""
        unknown = self.next_id + 3
        some = sorted(self.core.jobs)[-1:]
        events: list[Event] = [
            SubmitJob(argv=("render",), now=self.now, depends_on=(*some, unknown)),
            SubmitJob(argv=("render",), now=self.now, priority=0),
            SubmitJob(argv=("render",), now=self.now, cluster="nope"),
            SubmitJob(argv=("render",), now=self.now, frames="2-1"),
            SubmitJob(argv=("render",), now=self.now, restrictions="/a ||"),
            KillJobs(job_ids=(*some, unknown), now=self.now),
            WorkerLost(name="nobody", now=self.now),
        ]
        for job_id in some:
            events += [
                ModifyJob(job_id=job_id, now=self.now, priority=0),
                ModifyJob(job_id=job_id, now=self.now, cluster="/a//b"),
                ModifyJob(job_id=job_id, now=self.now, priority=1, restrictions="or /a"),
            ]
        self.refuse(data.draw(st.sampled_from(events)), UserError)

    @precondition(lambda self: self.core.jobs)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.core.jobs)), min_size=1, max_size=2))
        out = self.handle(KillJobs(job_ids=tuple(ids), now=self.tick()))
        assert out.result == list(dict.fromkeys(ids))
        for job_id in ids:
            job = self.core.jobs[job_id]
            assert job.state.ended
            assert not any(
                f.state in (FrameState.PENDING, FrameState.RUNNING) for f in job.frames.values()
            )

    @precondition(lambda self: self.core.jobs)
    @rule(
        data=st.data(),
        priority=st.none() | priorities,
        cluster=st.none() | MACHINE_CLUSTERS,
        restrictions=st.none() | MACHINE_RESTRICTIONS,
        patterns=st.none() | MACHINE_PATTERNS,
    )
    def modify(
        self,
        data: st.DataObject,
        priority: int | None,
        cluster: str | None,
        restrictions: str | None,
        patterns: str | None,
    ) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.core.jobs)))
        event = ModifyJob(
            job_id=job_id,
            now=self.tick(),
            priority=priority,
            cluster=cluster,
            restrictions=restrictions,
            cross_cluster=patterns,
        )
        job = self.core.jobs[job_id]
        if job.state.ended:
            self.refuse(event, JobSpecError)
            return
        self.handle(event)
        if priority is not None:
            assert job.priority == priority
        if cluster is not None:
            assert job.cluster == cluster

    # ------------------------------------------------------------------ workers

    @precondition(lambda self: len(self.connected()) < len(HOST_SLOTS))
    @rule(
        data=st.data(),
        cluster=MACHINE_CLUSTERS,
        restrictions=MACHINE_RESTRICTIONS,
        restarted=RARELY,
    )
    def join(self, data: st.DataObject, cluster: str, restrictions: str, restarted: bool) -> None:
        """A host connects (again), listing what it still holds; a restarted one holds
        nothing."""
        away = [name for name in sorted(self.hosts) if not self.hosts[name].connected]
        self._register(data.draw(st.sampled_from(away)), cluster, restrictions, restarted)

    @precondition(lambda self: self.connected())
    @rule(data=st.data(), restarted=RARELY)
    def reconnect_before_the_loss_is_noticed(self, data: st.DataObject, restarted: bool) -> None:
        """A connected host registers again: its new session replaces the old one."""
        name = data.draw(st.sampled_from(self.connected()))
        worker = self.core.workers[name]
        self._register(name, worker.cluster, str(worker.restrictions), restarted)

    def _register(self, name: str, cluster: str, restrictions: str, restarted: bool) -> None:
        host = self.hosts[name]
        if restarted:
            host.held.clear()
            host.stopping.clear()
        event = WorkerJoined(
            name=name,
            cluster=cluster,
            slots=host.slots,
            restrictions=restrictions,
            running=tuple(sorted(host.held)),
            now=self.tick(),
        )
        host.connected = True  # before handle: the core may start frames on it at once
        self.handle(event)

    @precondition(lambda self: any(host.connected for host in self.hosts.values()))
    @rule(data=st.data(), crashed=RARELY)
    def lose(self, data: st.DataObject, crashed: bool) -> None:
        """A host's connection drops; a crashed host loses its processes too."""
        name = data.draw(st.sampled_from(self.connected()))
        self.handle(WorkerLost(name=name, now=self.tick()))
        host = self.hosts[name]
        host.connected = False
        if crashed:
            host.held.clear()
            host.stopping.clear()

    # ------------------------------------------------------------------ results

    @precondition(lambda self: any(h.connected and h.held for h in self.hosts.values()))
    @rule(
        data=st.data(),
        exit_code=st.sampled_from([0, 0, 0, 1]),
        error=st.sampled_from(["", "", "", "lost"]),
    )
    def report(self, data: st.DataObject, exit_code: int, error: str) -> None:
        """A connected host reports an attempt it holds; the supervisor acknowledges it."""
        name = data.draw(st.sampled_from([n for n in self.connected() if self.hosts[n].held]))
        host = self.hosts[name]
        job_id, number, attempt = data.draw(st.sampled_from(sorted(host.held)))
        if (job_id, number, attempt) in host.stopping:
            exit_code, error = -15, ""
        frame = self.core.jobs[job_id].frames[number] if job_id in self.core.jobs else None
        live = (
            frame is not None
            and frame.state is FrameState.RUNNING
            and frame.worker == name
            and frame.attempts == attempt
        )
        self.handle(
            FrameEnded(
                worker=name,
                job_id=job_id,
                frame=number,
                attempt=attempt,
                exit_code=exit_code,
                error=error,
                now=self.tick(),
            )
        )
        host.held.discard((job_id, number, attempt))
        host.stopping.discard((job_id, number, attempt))
        if live:
            assert frame is not None
            ok = exit_code == 0 and not error
            assert frame.state is (FrameState.COMPLETE if ok else FrameState.FAILED)
            assert frame.exit_code == exit_code

    @precondition(lambda self: self.last_attempt)
    @rule(data=st.data(), exit_code=st.sampled_from([0, 1]))
    def report_stale(self, data: st.DataObject, exit_code: int) -> None:
        """A result the core must ignore: an attempt this host does not hold now (an old
        one, one another host runs) or a result from a host that is away."""
        candidates = [
            (name, job_id, number, attempt)
            for name, host in sorted(self.hosts.items())
            for (job_id, number), last in sorted(self.last_attempt.items())
            for attempt in range(1, last + 2)
            if not host.connected or (job_id, number, attempt) not in host.held
        ]
        name, job_id, number, attempt = data.draw(st.sampled_from(candidates))
        before = snapshot(self.core)
        out = self.handle(
            FrameEnded(
                worker=name,
                job_id=job_id,
                frame=number,
                attempt=attempt,
                exit_code=exit_code,
                now=self.tick(),
            )
        )
        assert actions(out) == []
        assert notes(out) == ["stale result ignored"]
        assert snapshot(self.core) == before

    # ------------------------------------------------------------------ invariants

    @invariant()
    def job_states_agree_with_their_frames(self) -> None:
        jobs = self.core.jobs
        for job in jobs.values():
            counts = Counter(f.state for f in job.frames.values())
            unmet = {
                d.job_id for d in job.depends_on if jobs[d.job_id].state is not JobState.COMPLETE
            }
            assert job.waiting_on == unmet, job.id
            # a dependency that ended otherwise can no longer complete: blocked
            broken = any(jobs[d].state.ended for d in unmet)
            if counts[FrameState.RUNNING]:
                expected = JobState.RUNNING
            elif counts[FrameState.PENDING] and unmet:
                expected = JobState.BLOCKED if broken else JobState.WAITING
            elif counts[FrameState.PENDING]:
                expected = JobState.PENDING
            elif counts[FrameState.COMPLETE] == len(job.frames):
                expected = JobState.COMPLETE
            elif counts[FrameState.KILLED]:
                expected = JobState.KILLED
            else:
                expected = JobState.FAILED
            assert job.state is expected, (job.id, job.state, expected)
            assert job.summary()["frames"] == {s.value: counts[s] for s in FrameState}
            pending = [n for n, f in job.frames.items() if f.state is FrameState.PENDING]
            assert sorted(job.pending) == sorted(pending), job.id
            if job.state.ended:
                assert self.job_ended.get(job.id) is job.state, job.id
            else:
                assert job.id not in self.job_ended

    @invariant()
    def the_index_holds_exactly_the_runnable_jobs(self) -> None:
        jobs = self.core.jobs
        runnable = {
            job.id
            for job in jobs.values()
            if any(f.state is FrameState.PENDING for f in job.frames.values())
            and all(jobs[d.job_id].state is JobState.COMPLETE for d in job.depends_on)
        }
        assert {queued.id for queued in self.core.dispatch.index} == runnable
        for queued in self.core.dispatch.index:
            assert queued == jobs[queued.id].queued()

    @invariant()
    def workers_hold_exactly_what_their_hosts_run(self) -> None:
        core = self.core
        assert sorted(core.workers) == self.connected()
        for job in core.jobs.values():
            for f in job.frames.values():
                if f.state is FrameState.RUNNING:
                    worker = core.workers.get(f.worker or "")
                    assert worker is not None, (job.id, f)
                    assert (job.id, f.number, f.attempts) in attempts_held(worker), (job.id, f)
        for name, worker in core.workers.items():
            host = self.hosts[name]
            held = attempts_held(worker)
            for job_id, number, attempt in held:
                job = core.jobs.get(job_id)
                f = job.frames.get(number) if job is not None else None
                live = (
                    f is not None
                    and f.state is FrameState.RUNNING
                    and f.worker == name
                    and f.attempts == attempt
                )
                assert live or (job_id, number, attempt) in host.stopping, (name, job_id, number)
            assert held == host.held, (name, held, host.held)
            assert len(held) <= worker.slots, name
            assert len(host.held) <= host.slots, name

    @invariant()
    def no_free_slot_idles_beside_work_it_admits(self) -> None:
        for worker in self.core.workers.values():
            if worker.free > 0:
                best = self.core.dispatch.index.best(worker.view)
                assert best is None, (worker.name, best)

    @invariant()
    def clusters_view_counts_the_members(self) -> None:
        here: Counter[tuple[str, int]] = Counter()
        total: Counter[tuple[str, int]] = Counter()
        members = [(w.cluster, 0) for w in self.core.workers.values()] + [
            (job.cluster, 1) for job in self.core.jobs.values() if not job.state.ended
        ]
        for cluster, kind in members:
            here[cluster, kind] += 1
            for node in up_to_root(cluster):
                total[node, kind] += 1
        expected = {
            node: (here[node, 0], here[node, 1], total[node, 0], total[node, 1])
            for node in {node for node, _ in total}
        }
        got = {
            n["path"]: (n["workers_here"], n["jobs_here"], n["workers_total"], n["jobs_total"])
            for n in self.core.clusters_view()
        }
        assert got == expected

    @invariant()
    def order_view_follows_the_rank_key(self) -> None:
        for name, worker in self.core.workers.items():
            entries = self.core.order_view(name, 1000)
            keys = [(e["order"], e["priority"], e["id"]) for e in entries]
            assert keys == sorted(keys)
            for e in entries:
                job = self.core.jobs[e["id"]]
                if not job.cross_cluster.matches(worker.cluster):
                    assert e["order"] == oracle_order(job.cluster, worker.cluster)


TestFarmMachine = FarmMachine.TestCase
TestFarmMachine.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
)


def test_killing_a_job_with_a_failed_frame_ends_it_killed() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=1))
    (first,) = starts(core.handle(submit(frames="1-3")))
    core.handle(
        FrameEnded(worker="w1", job_id=1, frame=first.frame, attempt=1, exit_code=2, now=2.0)
    )
    out = core.handle(KillJobs(job_ids=(1,), now=3.0))
    assert JobEnded(job_id=1, state=JobState.KILLED) in actions(out)
    assert core.jobs_page()["jobs"][0]["state"] == "killed"


def test_a_batch_submits_every_job_or_none() -> None:
    core = Scheduler()
    good = SubmitJob(argv=("render",), frames="1-2", now=1.0)
    bad = SubmitJob(argv=("render",), cluster="no-slash", now=1.0)
    before = (core.jobs_page()["jobs"], core.clusters_view())
    with pytest.raises(ClusterPathError, match="job 2 of the batch: bad cluster path 'no-slash'"):
        core.handle(SubmitJobs(jobs=(good, bad, good), now=1.0))
    assert (core.jobs_page()["jobs"], core.clusters_view()) == before
    out = core.handle(SubmitJobs(jobs=(good, good), now=2.0))
    assert out.result == [1, 2]
    assert [row.id for row in out.changes.jobs] == [1, 2]
    # untouched frames are stored as a range in their job's row, not a row each
    assert [row.frames for row in out.changes.jobs] == ["1-2", "1-2"]
    assert out.changes.frames == ()


def test_a_batch_job_may_depend_on_an_earlier_one_of_the_batch() -> None:
    core = Scheduler()
    first = SubmitJob(argv=("render",), now=1.0)
    second = SubmitJob(argv=("comp",), depends_on=(1,), now=1.0)
    assert core.handle(SubmitJobs(jobs=(first, second), now=1.0)).result == [1, 2]
    assert core.job_view(2)["state"] == "waiting"
    with pytest.raises(UnknownJobError):
        core.handle(SubmitJobs(jobs=(SubmitJob(argv=("x",), depends_on=(9,), now=2.0),), now=2.0))
