"""End-to-end: the supervisor's preemption policy (Qube's supervisor_preempt_policy).

A real `farmd serve --preempt-policy aggressive|passive|disabled` (or `preempt_policy` in
its config file) and real `farmd worker` processes. A low-priority job holds a worker's
only slot with a frame that blocks until the test releases it; then a better job is
submitted, and the test checks what a user sees: whether the running frame's process is
killed (its pid is gone), which frame runs next (the order of the lines the frames
append to a trace file), and the frames' states, attempts and failures.

That a worse frame is stopped, requeued with no retry used, and that one better frame
stops one running frame, is proven in process with fake workers
(tests/test_preemption_inprocess.py); here, with real processes, the rules of when not
to preempt and the other policies.

The preemption decision is taken while the supervisor handles the request that made the
better job runnable (`submit`, `unblock`, `modify`), before it answers: once that request
has returned, a frame it decided to stop is no longer running its first attempt. So "no
preemption" is checked right after the request (the frame still runs attempt 1, its
process is alive), without waiting for something not to happen.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e_support import Farm, gated, trace, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def farm(bare_farm: Farm) -> Farm:
    """A farm directory with nothing started yet: each test starts its supervisor."""
    return bare_farm


def frames(farm: Farm, job_id: int) -> dict[int, tuple[Any, ...]]:
    """Frame number -> (state, attempts, failures) as `farmd job --json` shows them."""
    job = farm.cli_json("job", str(job_id))
    return {f["frame"]: (f["state"], f["attempts"], f["failures"]) for f in job["frame_list"]}


def running_pid(farm: Farm, worker: str, job_id: int, frame: int = 1, attempt: int = 1) -> int:
    """The pid of a frame attempt once it has started (and written its pid file)."""
    return farm.wait_frame_pid(f"{worker}-{job_id}-{frame}-{attempt}")


def preempted_log(farm: Farm) -> list[str]:
    """The supervisor's `frame preempted` log lines."""
    assert farm.supervisor is not None
    return [line for line in farm.supervisor.stderr().splitlines() if "frame preempted" in line]


# --------------------------------------------------------------------------- aggressive


def test_aggressive_never_preempts_for_a_smaller_job_id_alone(farm: Farm) -> None:
    farm.serve("--preempt-policy", "aggressive")
    # `older` gets the smaller id but is held back (blocked) until `newer` is running
    older = farm.submit(gated(farm, "A", "older"), name="older", priority=100)
    farm.cli_ok("block", str(older))
    farm.worker("w1")
    newer = farm.submit(gated(farm, "B", "newer"), name="newer", priority=100)
    pid = running_pid(farm, "w1", newer)

    farm.cli_ok("unblock", str(older))  # now it outranks `newer` by its id only
    assert frames(farm, newer) == {1: ("running", 1, 0)}
    assert frames(farm, older) == {1: ("pending", 0, 0)}
    assert farm.frame_alive(pid)

    # a strictly better priority does preempt
    farm.cli_ok("modify", str(older), "--priority", "99")
    wait_for(lambda: not farm.frame_alive(pid), "newer's frame to be killed")
    running_pid(farm, "w1", older)
    assert frames(farm, newer) == {1: ("pending", 1, 0)}

    farm.release("older")
    farm.release("newer")
    assert farm.wait_jobs([older, newer]) == {str(older): "complete", str(newer): "complete"}
    assert trace(farm) == ["B1 start", "A1 start", "A1 end", "B1 start", "B1 end"]
    assert frames(farm, newer) == {1: ("complete", 2, 0)}
    assert len(preempted_log(farm)) == 1


def test_aggressive_never_preempts_an_uninterruptible_job(farm: Farm) -> None:
    farm.serve("--preempt-policy", "aggressive")
    farm.worker("w1")
    low = farm.submit_cli(
        "--name",
        "low",
        "--priority",
        "100",
        "--frames",
        "1-2",
        "--uninterruptible",
        "--",
        *gated(farm, "L", "low"),
    )
    assert farm.cli_json("job", str(low))["uninterruptible"] is True
    pid = running_pid(farm, "w1", low)

    high = farm.submit(gated(farm, "H", "high"), name="high", priority=10)
    assert frames(farm, low) == {1: ("running", 1, 0), 2: ("pending", 0, 0)}
    assert frames(farm, high) == {1: ("pending", 0, 0)}
    assert farm.frame_alive(pid)

    farm.release("high")
    farm.release("low")  # low's frame 1 ends; the slot goes to the better job first
    assert farm.wait_jobs([low, high]) == {str(low): "complete", str(high): "complete"}
    assert trace(farm) == ["L1 start", "L1 end", "H1 start", "H1 end", "L2 start", "L2 end"]
    assert frames(farm, low) == {1: ("complete", 1, 0), 2: ("complete", 1, 0)}
    assert preempted_log(farm) == []


def test_aggressive_stops_the_worst_of_the_running_frames(farm: Farm) -> None:
    farm.serve("--preempt-policy", "aggressive")
    farm.worker("w1", slots=2)
    low = farm.submit(gated(farm, "L", "low"), name="low", priority=100)
    mid = farm.submit(gated(farm, "M", "mid"), name="mid", priority=50)
    low_pid = running_pid(farm, "w1", low)
    mid_pid = running_pid(farm, "w1", mid)

    high = farm.submit(gated(farm, "H", "high"), name="high", priority=10)
    wait_for(lambda: not farm.frame_alive(low_pid), "low's frame to be killed")
    running_pid(farm, "w1", high)
    assert farm.frame_alive(mid_pid)
    assert frames(farm, low) == {1: ("pending", 1, 0)}
    assert frames(farm, mid) == {1: ("running", 1, 0)}

    for gate in ("high", "mid", "low"):
        farm.release(gate)
    ended = farm.wait_jobs([low, mid, high])
    assert ended == {str(low): "complete", str(mid): "complete", str(high): "complete"}
    assert frames(farm, low) == {1: ("complete", 2, 0)}
    assert frames(farm, mid) == {1: ("complete", 1, 0)}


def test_aggressive_ranks_by_cluster_order_before_priority(farm: Farm) -> None:
    config = farm.root / "farm.yaml"
    config.write_text("supervisor:\n  preempt_policy: aggressive\n")
    farm.serve("--config", str(config))
    farm.worker("w1", "/show1")
    # for a worker in /show1, a job in / has cluster order 2, one in /show1 order 1
    root_job = farm.submit(gated(farm, "R", "root"), name="root", cluster="/", priority=1)
    pid = running_pid(farm, "w1", root_job)

    show = farm.submit(gated(farm, "S", "show"), name="show", cluster="/show1", priority=500)
    wait_for(lambda: not farm.frame_alive(pid), "the / job's frame to be killed")
    running_pid(farm, "w1", show)
    assert frames(farm, root_job) == {1: ("pending", 1, 0)}

    # the other way round: a / job of priority 1 does not preempt the /show1 job
    other = farm.submit(gated(farm, "O", "root"), name="other", cluster="/", priority=1)
    assert frames(farm, show) == {1: ("running", 1, 0)}
    assert frames(farm, other) == {1: ("pending", 0, 0)}

    farm.release("root")
    farm.release("show")
    ended = farm.wait_jobs([root_job, show, other])
    assert set(ended.values()) == {"complete"}
    runs = ["R1 start", "S1 start", "S1 end", "R1 start", "R1 end", "O1 start", "O1 end"]
    assert trace(farm) == runs
    assert frames(farm, root_job) == {1: ("complete", 2, 0)}


def test_aggressive_does_not_preempt_while_another_worker_is_free(farm: Farm) -> None:
    """`conf/farm.yaml`: preemption is for a better job whose every usable slot is busy."""
    farm.serve("--preempt-policy", "aggressive")
    farm.worker("w1")
    low = farm.submit(gated(farm, "L", "low"), name="low", priority=100)
    pid = running_pid(farm, "w1", low)
    farm.worker("w2")  # idle

    high = farm.submit(gated(farm, "H", "high"), name="high", priority=10)
    running_pid(farm, "w2", high)
    assert preempted_log(farm) == []
    assert farm.frame_alive(pid), "low's frame was killed although high ran on idle w2"
    assert frames(farm, low) == {1: ("running", 1, 0)}

    farm.release("high")
    farm.release("low")
    assert farm.wait_jobs([low, high]) == {str(low): "complete", str(high): "complete"}
    assert frames(farm, low) == {1: ("complete", 1, 0)}


# --------------------------------------------------------------------------- passive


def test_passive_by_default_lets_the_frame_end_then_the_better_job_goes_first(
    farm: Farm,
) -> None:
    farm.serve()  # passive is the default
    farm.worker("w1")
    low = farm.submit(gated(farm, "L", "low"), name="low", priority=100, frames="1-2")
    pid = running_pid(farm, "w1", low)

    high = farm.submit_cli("--name", "high", "--priority", "10", "--", *gated(farm, "H", "high"))
    assert frames(farm, low) == {1: ("running", 1, 0), 2: ("pending", 0, 0)}
    assert frames(farm, high) == {1: ("pending", 0, 0)}
    assert farm.frame_alive(pid)

    farm.release("high")
    farm.release("low")  # low's frame 1 ends: the slot goes to high before low's frame 2
    assert farm.wait_jobs([low, high]) == {str(low): "complete", str(high): "complete"}
    assert trace(farm) == ["L1 start", "L1 end", "H1 start", "H1 end", "L2 start", "L2 end"]
    assert frames(farm, low) == {1: ("complete", 1, 0), 2: ("complete", 1, 0)}
    assert preempted_log(farm) == []


# --------------------------------------------------------------------------- disabled


def test_disabled_keeps_the_slot_with_its_job_while_it_has_frames(farm: Farm) -> None:
    farm.serve("--preempt-policy", "disabled")
    farm.worker("w1")
    low = farm.submit(gated(farm, "L", "low"), name="low", priority=100, frames="1-3")
    pid = running_pid(farm, "w1", low)

    high = farm.submit_cli("--name", "high", "--priority", "10", "--", *gated(farm, "H", "high"))
    assert frames(farm, low)[1] == ("running", 1, 0)
    assert frames(farm, high) == {1: ("pending", 0, 0)}
    assert farm.frame_alive(pid)

    farm.release("high")
    farm.release("low")
    assert farm.wait_jobs([low, high]) == {str(low): "complete", str(high): "complete"}
    assert trace(farm) == [
        "L1 start",
        "L1 end",
        "L2 start",
        "L2 end",
        "L3 start",
        "L3 end",
        "H1 start",
        "H1 end",
    ]
    assert frames(farm, low) == dict.fromkeys((1, 2, 3), ("complete", 1, 0))
    assert preempted_log(farm) == []
