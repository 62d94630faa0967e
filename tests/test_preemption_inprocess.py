"""In-process: the aggressive preemption policy, with fake workers.

A real `Supervisor` (`preempt_policy: aggressive`) in the test's trio run, and fake
workers (tests/inprocess.py) that run nothing: the test sees each `run_frame` and
`kill_frame` the supervisor sends, and reports a killed frame's end as the agent does
(killed by SIGTERM, -15). That a `kill_frame` really ends the process is the agent's
(tests/test_agent_inprocess.py); the CLI and real processes are
tests/test_preemption_e2e.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from farmd.protocol import GetJob, Submit, Wait
from tests.inprocess import Peer, Runs, start_supervisor, supervisor_config

SIGTERM_STATUS = -15  # what the agent reports for a frame it killed


async def aggressive(
    nursery: trio.Nursery, tmp_path: Path, workers: tuple[str, ...]
) -> tuple[Peer, Runs]:
    config = supervisor_config(tmp_path, store="memory", preempt_policy="aggressive")
    farm = await start_supervisor(nursery, config)
    runs = Runs()
    for name in workers:
        await nursery.start(runs.read, await farm.worker(name))
    return await farm.admin(), runs


async def frames(admin: Peer, job_id: int) -> dict[int, tuple[Any, ...]]:
    """Frame number -> (state, attempts, failures), as `farmd job` shows them."""
    job = await admin.ask(GetJob, job_id=job_id)
    return {f["frame"]: (f["state"], f["attempts"], f["failures"]) for f in job["frame_list"]}


async def submit(admin: Peer, name: str, priority: int, frames: str = "1") -> int:
    job = await admin.ask(Submit, argv=("render",), name=name, priority=priority, frames=frames)
    return int(job["id"])


async def test_aggressive_stops_a_worse_frame_and_requeues_it_without_using_a_retry(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    admin, runs = await aggressive(nursery, tmp_path, ("w1",))
    low = await submit(admin, "low", 100, "1-2")
    await runs.sent_to(low, 1)

    high = await submit(admin, "high", 10)
    await runs.until(lambda: bool(runs.killed))
    assert [(worker, kill.job_id, kill.frame, kill.attempt) for worker, kill in runs.killed] == [
        ("w1", low, 1, 1)
    ]
    # the preempted frame waits, with no retry used
    assert await frames(admin, low) == {1: ("pending", 1, 0), 2: ("pending", 0, 0)}
    # the frame's process ends, killed; once the worker says so, the slot is free
    await runs.finish(low, 1, SIGTERM_STATUS)
    worker, _ = await runs.sent_to(high, 1)  # the better job holds the slot
    assert worker.name == "w1"
    assert await frames(admin, high) == {1: ("running", 1, 0)}
    assert await frames(admin, low) == {1: ("pending", 1, 0), 2: ("pending", 0, 0)}

    await runs.finish(high, 1)
    _, again = await runs.sent_to(low, 1)  # low's frame 1 runs again
    assert again.attempt == 2
    await runs.finish(low, 1)
    await runs.finish(low, 2)
    ended = await admin.ask(Wait, job_ids=(low, high))
    assert ended["ended"] == {str(low): "complete", str(high): "complete"}
    assert await frames(admin, low) == {1: ("complete", 2, 0), 2: ("complete", 1, 0)}
    assert len(runs.killed) == 1


async def test_aggressive_one_better_frame_preempts_one_running_frame(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The freed slot goes to the better job: a job with one frame stops one frame."""
    admin, runs = await aggressive(nursery, tmp_path, ("w1", "w2"))
    low = await submit(admin, "low", 100, "1-2")
    await runs.sent_to(low, 1)
    await runs.sent_to(low, 2)

    high = await submit(admin, "high", 10)
    await runs.until(lambda: bool(runs.killed))
    ((worker, kill),) = runs.killed
    await runs.finish(low, kill.frame, SIGTERM_STATUS)
    busy, _ = await runs.sent_to(high, 1)
    assert busy.name == worker  # on the slot the kill freed

    await runs.finish(high, 1)
    await runs.finish(low, 3 - kill.frame)
    await runs.finish(low, kill.frame)
    ended = await admin.ask(Wait, job_ids=(low, high))
    assert ended["ended"] == {str(low): "complete", str(high): "complete"}
    assert sorted(attempts for _, attempts, _ in (await frames(admin, low)).values()) == [1, 2]
    assert len(runs.killed) == 1
