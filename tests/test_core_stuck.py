"""`Scheduler.stuck`: the jobs that cannot end without an admin, and why.

`farmd wait` stops waiting for such a job (exit 1) instead of running to its timeout.
The rule is checked case by case (blocked, suspended, waiting on a stuck job, `frames`
dependencies on a frozen job, a parent waiting for a stuck sub-job, a deadlock), for the
`JobHeld` command that wakes the shell's waiters, and by a property: on random farms, a
job called stuck never ends however the frames that can still run end, as long as no
admin acts.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmd.core import MAX_STUCK_NODES, ControlFrames, FrameEnded, JobHeld, Scheduler, Tick
from farmd.errors import UnknownJobError, UserError
from farmd.jobs import Control, JobState
from tests.strategies import PROPERTY_SETTINGS
from tests.test_core import actions, ended, joined, starts, submit

FAILED_1 = "job 1 is failed but must be complete (retry it to release this job)"


def control(action: Control, *targets: str) -> ControlFrames:
    return ControlFrames(control=action, targets=targets, now=1.0)


def fail_job_1(core: Scheduler) -> None:
    """Job 1 runs its one frame on w1 and fails."""
    (start,) = [s for s in starts(core.handle(joined("w1"))) if s.job_id == 1]
    core.handle(ended(start, exit_code=1))


def test_a_job_whose_dependency_failed_is_stuck_with_the_reason_it_shows() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(submit(depends_on=(1,)))
    assert core.stuck([2]) == {}  # job 1 may still complete
    fail_job_1(core)
    assert core.job(2).state is JobState.BLOCKED
    assert core.stuck([1, 2]) == {2: FAILED_1}  # job 1 has ended: it is not stuck
    assert core.job_view(2)["reason"] == FAILED_1


def test_becoming_blocked_suspended_or_waiting_is_announced_to_waiters() -> None:
    core = Scheduler()
    out = core.handle(submit(depends_on=()))
    assert [c for c in actions(out) if isinstance(c, JobHeld)] == []  # pending
    out = core.handle(submit(depends_on=(1,)))
    assert JobHeld(job_id=2, state=JobState.WAITING) in actions(out)
    (start,) = starts(core.handle(joined("w1")))
    out = core.handle(ended(start, exit_code=1))
    assert JobHeld(job_id=2, state=JobState.BLOCKED) in actions(out)
    core.handle(submit())
    out = core.handle(control(Control.SUSPEND, "3"))
    assert JobHeld(job_id=3, state=JobState.SUSPENDED) in actions(out)


def test_jobs_that_can_still_run_are_not_stuck() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(submit())  # running
    core.handle(submit())  # pending
    core.handle(submit(depends_on=(1,)))  # waiting for a running job
    core.handle(submit(depends_on=("3:done",)))  # waiting for a waiting job
    core.handle(submit(depends_on=("1:frames",)))  # frames wait for a running job
    assert [core.job(j).state for j in (1, 2, 3, 4, 5)] == [
        JobState.RUNNING,
        JobState.PENDING,
        JobState.WAITING,
        JobState.WAITING,
        JobState.WAITING,
    ]
    assert core.stuck([1, 2, 3, 4, 5]) == {}


def test_a_chain_of_waiting_jobs_names_the_first_link_and_what_holds_the_end() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(submit(depends_on=(1,)))
    core.handle(submit(depends_on=(2,)))
    core.handle(submit(depends_on=("3:done",)))
    fail_job_1(core)
    why = core.stuck([4, 3])
    assert why == {
        3: f"waiting for job 2, which cannot end without an admin (job 2 is blocked: {FAILED_1})",
        4: f"waiting for job 3, which cannot end without an admin (job 2 is blocked: {FAILED_1})",
    }
    assert list(why) == [4, 3]  # in the order asked
    # a retry of job 1 releases the whole chain
    core.handle(control(Control.RETRY, "1"))
    assert core.stuck([2, 3, 4]) == {}


def test_admin_held_jobs_are_stuck_until_released() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(submit(frames="1-2"))
    core.handle(submit(frames="1-2"))
    core.handle(control(Control.SUSPEND, "1"))
    core.handle(control(Control.BLOCK, "2"))
    assert core.stuck([1, 2]) == {
        1: "suspended by an admin (farmd resume)",
        2: "frames blocked by an admin (farmd unblock)",
    }
    core.handle(control(Control.RESUME, "1"))
    core.handle(control(Control.UNBLOCK, "2"))
    assert core.stuck([1, 2]) == {}


def test_a_job_with_one_blocked_frame_is_stuck_only_once_its_other_frames_ran() -> None:
    core = Scheduler()
    core.handle(submit(frames="1-2"))
    core.handle(control(Control.BLOCK, "1:2"))
    assert core.stuck([1]) == {}  # frame 1 can still run
    (start,) = starts(core.handle(joined("w1")))
    core.handle(ended(start))
    assert core.stuck([1]) == {1: "frames blocked by an admin (farmd unblock)"}


def test_frames_that_wait_for_a_frozen_job_are_stuck() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    core.handle(submit(frames="1-2"))  # frame 1 runs on w1, frame 2 pending
    core.handle(submit(frames="1-2", depends_on=("1:frames",)))
    core.handle(control(Control.SUSPEND, "1"))
    assert core.stuck([2]) == {
        2: "frames wait for frames of job 1, which cannot run without an admin "
        "(job 1 is suspended: suspended by an admin (farmd resume))"
    }


def test_a_frame_waiting_for_two_jobs_is_stuck_when_the_live_one_is_done_with() -> None:
    """Job 3's frame waits for job 1 (suspended) and job 2 (running); job 4's frame for
    job 3's. When job 2's frame completes, job 3 still waits, only for frozen job 1: job 4
    becomes stuck although no job changed state, and waiters hear of it."""
    core = Scheduler()
    core.handle(joined("w1", slots=2))
    core.handle(submit())
    (start_2,) = starts(core.handle(submit()))
    core.handle(submit(depends_on=("1:frames", "2:frames")))
    core.handle(submit(depends_on=("3:frames",)))
    core.handle(control(Control.SUSPEND, "1"))
    assert core.stuck([4]) == {}  # job 3 is not frozen while job 2 runs the frame it awaits
    out = core.handle(ended(start_2))
    assert core.job(3).state is JobState.WAITING
    assert JobHeld(job_id=3, state=JobState.WAITING) in actions(out)
    assert core.stuck([4]) == {
        4: "frames wait for frames of job 3, which cannot run without an admin "
        "(job 1 is suspended: suspended by an admin (farmd resume))"
    }


def test_a_parent_waiting_for_a_stuck_sub_job_is_stuck() -> None:
    core = Scheduler()
    core.handle(submit())  # 1
    core.handle(submit())  # 2, the parent
    core.handle(submit(parent=2, depends_on=(1,)))  # 3
    first, second = starts(core.handle(joined("w1", slots=2)))
    assert (first.job_id, second.job_id) == (1, 2)
    core.handle(ended(first, exit_code=1))
    core.handle(ended(second))
    assert core.job(2).state is JobState.WAITING  # its frames are done, its sub-job is not
    assert core.stuck([2]) == {
        2: "waiting for sub-job 3, which cannot end without an admin "
        f"(job 3 is blocked: {FAILED_1})"
    }


def test_a_sub_job_that_waits_for_its_own_parent_deadlocks_them_both() -> None:
    core = Scheduler()
    core.handle(submit())  # 1, the parent
    core.handle(submit(parent=1, depends_on=(1,)))  # 2: waits for 1, which waits for 2
    (start,) = starts(core.handle(joined("w1")))
    core.handle(ended(start))
    assert core.job(1).state is JobState.WAITING
    assert core.stuck([1, 2]) == {
        1: "waiting for sub-job 2, which cannot end without an admin "
        "(jobs 1, 2 wait for each other)",
        2: "waiting for job 1, which cannot end without an admin (jobs 1, 2 wait for each other)",
    }


def chain(length: int) -> Scheduler:
    """Jobs 1..length, each depending on the one before; job 1 has failed."""
    core = Scheduler()
    core.handle(submit())
    for job_id in range(2, length + 1):
        core.handle(submit(depends_on=(job_id - 1,)))
    fail_job_1(core)
    return core


def test_a_check_looks_at_no_more_than_its_bound_of_jobs() -> None:
    # job 1 has ended: the other jobs are one node each
    longest = chain(MAX_STUCK_NODES + 1)
    assert list(longest.stuck([MAX_STUCK_NODES + 1])) == [MAX_STUCK_NODES + 1]
    too_long = chain(MAX_STUCK_NODES + 2)
    assert too_long.stuck([MAX_STUCK_NODES + 2]) == {}  # past the bound: not called stuck
    assert too_long.stuck([3]) == {
        3: f"waiting for job 2, which cannot end without an admin (job 2 is blocked: {FAILED_1})"
    }


def test_settled_is_every_job_ended_or_stuck() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(submit(depends_on=(1,)))
    core.handle(submit())
    assert not core.settled([2])
    fail_job_1(core)  # w1 now runs job 3
    assert core.settled([1, 2])
    assert not core.settled([1, 2, 3])
    assert core.settled([])


def test_an_unknown_job_is_refused() -> None:
    core = Scheduler()
    core.handle(submit())
    with pytest.raises(UnknownJobError, match="job 7"):
        core.stuck([1, 7])


# --------------------------------------------------------------------------- property


MODES = ("complete", "done", "failed", "frames")


def finish(core: Scheduler, worker: str, key: tuple[int, int, int], exit_code: int) -> None:
    job_id, frame, attempt = key
    core.handle(
        FrameEnded(
            worker=worker,
            job_id=job_id,
            frame=frame,
            attempt=attempt,
            exit_code=exit_code,
            error="",
            now=2.0,
        )
    )


def finish_everything(core: Scheduler, exit_codes: list[int]) -> None:
    """Let the farm run without an admin: a worker that takes every job, and every
    attempt ends with the next exit code of `exit_codes` (cycled), until nothing runs.
    A suspended frame's stopped process does not run, so it does not end."""
    core.handle(joined("everything", slots=64, now=2.0))
    for step in range(1000):  # bounded: far more attempts than these farms have
        running = [
            (w.name, key)
            for w in core.workers.values()
            for key in w.running
            if not core.job(key[0]).frames[key[1]].stopped
        ]
        if not running:
            wake = core.next_wake()
            if wake is None:
                return
            core.handle(Tick(now=wake))  # a retry delay is over
            continue
        name, key = running[0]
        finish(core, name, key, exit_codes[step % len(exit_codes)])
    raise AssertionError("the farm never went quiet")


@PROPERTY_SETTINGS
@given(st.data())
def test_a_stuck_job_never_ends_without_an_admin(data: st.DataObject) -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=data.draw(st.integers(1, 2), label="slots")))
    jobs = data.draw(st.integers(1, 6), label="jobs")
    for job_id in range(1, jobs + 1):
        deps = (
            data.draw(
                st.lists(
                    st.tuples(st.integers(1, job_id - 1), st.sampled_from(MODES)),
                    max_size=2,
                    unique_by=lambda dep: dep[0],
                ),
                label="dependencies",
            )
            if job_id > 1
            else []
        )
        open_parents = [j for j in range(1, job_id) if not core.job(j).state.ended]
        parent = data.draw(st.sampled_from([None, *open_parents]), label="parent")
        core.handle(
            submit(
                frames=data.draw(st.sampled_from(["1", "1-2", "1-3"]), label="frames"),
                depends_on=tuple(f"{j}:{m}" for j, m in deps),
                parent=parent,
                retries=data.draw(st.integers(0, 1), label="retries"),
                retry_delay=data.draw(st.sampled_from([0.0, 5.0]), label="retry delay"),
            )
        )
        for _ in range(data.draw(st.integers(0, 3), label="steps")):
            running = list(core.workers["w1"].running)
            action = data.draw(st.sampled_from(["finish", "control"]), label="action")
            if action == "finish" and running:
                key = data.draw(st.sampled_from(running), label="which")
                finish(core, "w1", key, data.draw(st.sampled_from([0, 1]), label="exit code"))
            elif action == "control":
                verb = data.draw(
                    st.sampled_from([Control.BLOCK, Control.SUSPEND, Control.KILL]), label="verb"
                )
                target = data.draw(st.integers(1, job_id), label="target")
                frame = data.draw(st.sampled_from(["", ":1"]), label="frame")
                with contextlib.suppress(UserError):  # a refusal changes nothing
                    core.handle(control(verb, f"{target}{frame}"))
    live = [j for j in core.jobs if not core.job(j).state.ended]
    stuck = core.stuck(live)
    for why in stuck.values():
        assert why
        assert "\n" not in why
    for exit_codes in ([0], [1], [0, 1]):
        future = copy.deepcopy(core)
        finish_everything(future, exit_codes)
        for job_id in stuck:
            assert not future.job(job_id).state.ended, (job_id, stuck[job_id], exit_codes)
