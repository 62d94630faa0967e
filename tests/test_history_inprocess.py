"""In-process: jobs that ended move to history (docs/protocol.md, 6.7) and are still
there for every request that names them; restarts read only the live queue.

A real `Supervisor` on the SQLite store in the test's trio run, on a MockClock: the
`history_after` delay passes in virtual time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from farmd.protocol import (
    ControlRequest,
    GetJob,
    ListJobs,
    PruneHistory,
    Refused,
    RunFrame,
    Submit,
    Wait,
)
from tests.inprocess import FakeWorker, Farm, Peer, start_supervisor, supervisor_config

AFTER = 60.0  # history_after, in virtual seconds


async def farm_of(nursery: trio.Nursery, tmp_path: Path, **settings: Any) -> Farm:
    config = supervisor_config(tmp_path, **{"history_after": AFTER, **settings})
    return await start_supervisor(nursery, config, clock=trio.current_time)


async def worker_of(nursery: trio.Nursery, farm: Farm) -> FakeWorker:
    """A fake worker "w1" that keeps heartbeating, so no timeout loses it."""
    worker = await farm.worker("w1")
    await nursery.start(worker.beat, 5.0)
    return worker


async def started(
    nursery: trio.Nursery, tmp_path: Path, **settings: Any
) -> tuple[Farm, Peer, FakeWorker]:
    """A farm (`settings` over `farm_of`'s), an admin session and a heartbeating worker."""
    farm = await farm_of(nursery, tmp_path, **settings)
    return farm, await farm.admin(), await worker_of(nursery, farm)


async def live_ids(admin: Peer) -> list[int]:
    return [job["id"] for job in (await admin.ask(ListJobs))["jobs"]]


async def run_all(worker: FakeWorker, frames: int, exit_code: int = 0) -> None:
    for _ in range(frames):
        await worker.finish(await worker.expect(RunFrame), exit_code)


async def moved(admin: Peer, job_id: int) -> None:
    """Until job `job_id` has left the live queue (at most `history_after` later)."""
    for _ in range(100):  # each poll lets virtual time run on
        if job_id not in await live_ids(admin):
            return
        await trio.sleep(AFTER / 10)
    raise AssertionError(f"job {job_id} never moved to history")


async def test_an_ended_job_moves_to_history_and_is_still_shown_listed_and_waited_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm, admin, worker = await started(nursery, tmp_path)
    job = await admin.ask(Submit, argv=("true",), frames="1-2", name="shot")
    await run_all(worker, 2)
    ended_at = trio.current_time()
    await moved(admin, job["id"])
    assert trio.current_time() - ended_at >= AFTER - 1  # not before its time

    live = await admin.ask(ListJobs)
    assert live["jobs"] == []
    assert live["total"] == 0
    every = await admin.ask(ListJobs, history=True)
    assert [(j["id"], j["name"], j["state"]) for j in every["jobs"]] == [
        (job["id"], "shot", "complete")
    ]
    assert every["jobs"][0]["frames"]["complete"] == 2
    assert every["total"] == 1
    assert every["counts"]["complete"] == 1

    detail = await admin.ask(GetJob, job_id=job["id"])
    assert detail["state"] == "complete"
    assert [(f["frame"], f["state"], f["worker"]) for f in detail["frame_list"]] == [
        (1, "complete", "w1"),
        (2, "complete", "w1"),
    ]
    waited = await admin.ask(Wait, job_ids=[job["id"]], timeout=0)
    assert waited == {"ended": {str(job["id"]): "complete"}, "pending": [], "stuck": {}}
    # read back for those answers, it is still history's: not in the live queue, and
    # out of memory again `history_after` later
    assert await live_ids(admin) == []
    assert (await admin.ask(ListJobs))["total"] == 0
    assert (await admin.ask(ListJobs, history=True))["total"] == 1
    for _ in range(100):
        if farm.supervisor.core.size().jobs == 0:
            break
        await trio.sleep(AFTER / 10)
    assert farm.supervisor.core.size().jobs == 0


async def test_a_retry_brings_a_failed_job_back_from_history_for_good(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    _farm, admin, worker = await started(nursery, tmp_path)
    job = await admin.ask(Submit, argv=("false",), name="fails")
    await run_all(worker, 1, exit_code=1)
    await moved(admin, job["id"])

    assert await admin.ask(ControlRequest, action="retry", targets=[str(job["id"])])
    run = await worker.expect(RunFrame)  # it runs again
    assert (run.job_id, run.attempt) == (job["id"], 2)
    assert job["id"] in await live_ids(admin)
    await trio.sleep(AFTER * 2)  # running: it stays in the live queue however long
    assert job["id"] in await live_ids(admin)
    await worker.finish(run, 0)
    await moved(admin, job["id"])
    detail = await admin.ask(GetJob, job_id=job["id"])
    assert (detail["state"], detail["frame_list"][0]["attempts"]) == ("complete", 2)


async def test_a_dependency_stays_live_while_a_live_job_depends_on_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    _farm, admin, worker = await started(nursery, tmp_path)
    first = await admin.ask(Submit, argv=("true",), name="first")
    second = await admin.ask(Submit, argv=("true",), name="second", depends_on=[first["id"]])
    await run_all(worker, 1)  # first
    run = await worker.expect(RunFrame)
    assert run.job_id == second["id"]
    await trio.sleep(AFTER * 2)
    assert await live_ids(admin) == [first["id"], second["id"]]  # second still reads it
    await worker.finish(run)
    await moved(admin, second["id"])
    await moved(admin, first["id"])

    # a new job depending on a job in history: met, it runs
    third = await admin.ask(Submit, argv=("true",), name="third", depends_on=[f"{second['id']}"])
    run = await worker.expect(RunFrame)
    assert run.job_id == third["id"]
    await worker.finish(run)


async def test_a_restart_reads_only_the_live_queue_and_history_is_still_there(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm, admin, worker = await started(nursery, tmp_path)
    done = await admin.ask(Submit, argv=("true",), frames="1-3", name="done", key="k-done")
    await run_all(worker, 3)
    await moved(admin, done["id"])
    queued = await admin.ask(Submit, argv=("true",), frames="1-1000", job_type="never")
    await farm.stop()

    farm = await farm_of(nursery, tmp_path)
    assert farm.supervisor.core.size().jobs == 1  # the queued one only
    admin = await farm.admin()
    assert await live_ids(admin) == [queued["id"]]
    every = await admin.ask(ListJobs, history=True)
    assert [j["id"] for j in every["jobs"]] == [done["id"], queued["id"]]
    assert (await admin.ask(GetJob, job_id=done["id"]))["frames"]["complete"] == 3
    # the key it was submitted under still names it: no second job
    again = await admin.ask(Submit, argv=("true",), frames="1-3", name="done", key="k-done")
    assert again["id"] == done["id"]
    new = await admin.ask(Submit, argv=("true",), job_type="never")
    assert new["id"] == queued["id"] + 1  # no id is given out twice


async def test_list_jobs_with_history_merges_both_by_id_a_page_at_a_time(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    _farm, admin, worker = await started(nursery, tmp_path)
    ids = []
    for n in range(6):  # even: ended and moved; odd: of a type no worker runs, queued
        if n % 2 == 0:
            job = await admin.ask(Submit, argv=("true",))
            await run_all(worker, 1)
        else:
            job = await admin.ask(Submit, argv=("true",), job_type="never")
        ids.append(job["id"])
    await moved(admin, ids[4])
    listed: list[int] = []
    after = None
    for _ in range(10):
        page = await admin.ask(ListJobs, history=True, limit=2, after=after)
        assert len(page["jobs"]) <= 2
        listed += [job["id"] for job in page["jobs"]]
        after = page["next"]
        if after is None:
            break
    every = await admin.ask(ListJobs, history=True)
    assert listed == [job["id"] for job in every["jobs"]]
    assert set(ids) <= set(listed)
    assert listed == sorted(listed)
    assert every["total"] == len(listed)
    assert sum(every["counts"].values()) == every["total"]


async def test_prune_removes_old_history_and_only_the_farm_token_may(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm, admin, worker = await started(nursery, tmp_path, history_days=1.0)
    old = await admin.ask(Submit, argv=("true",), name="old")
    await run_all(worker, 1)
    await moved(admin, old["id"])
    user = farm.connect("user")
    await user.hello(farm.user_token)
    refused = await user.request(PruneHistory, days=0)
    assert isinstance(refused, Refused)
    assert refused.code == "forbidden"

    kept = await admin.ask(PruneHistory)  # history_days: a day; it moved a minute ago
    assert kept["removed"] == 0
    assert (await admin.ask(PruneHistory, days=0))["removed"] == 1
    gone = await admin.request(GetJob, job_id=old["id"])
    assert isinstance(gone, Refused)
    assert gone.message == f"job {old['id']} does not exist"
    assert (await admin.ask(ListJobs, history=True))["total"] == 0


async def test_on_the_memory_store_ended_jobs_stay_in_the_live_queue(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm, admin, worker = await started(nursery, tmp_path, store="memory")
    job = await admin.ask(Submit, argv=("true",))
    await run_all(worker, 1)
    await trio.sleep(AFTER * 3)
    assert await live_ids(admin) == [job["id"]]
    assert farm.supervisor.core.size().jobs == 1


async def test_a_wait_outlives_a_job_that_ends_and_moves_to_history_before_the_others(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # a shorter delay: the test's peer waits at most a minute for the answer
    farm, admin, worker = await started(nursery, tmp_path, history_after=AFTER / 4)
    quick = await admin.ask(Submit, argv=("true",), name="quick")
    slow = await admin.ask(Submit, argv=("sleep", "600"), name="slow")
    quick_run = await worker.expect(RunFrame)
    waiter = await farm.admin()
    answers: list[Any] = []

    async def wait_both() -> None:
        answers.append(await waiter.ask(Wait, job_ids=[quick["id"], slow["id"]]))

    nursery.start_soon(wait_both)
    await worker.finish(quick_run)
    slow_run = await worker.expect(RunFrame)  # one slot: the slow one runs after it
    await moved(admin, quick["id"])  # while the wait goes on
    assert answers == []
    await worker.finish(slow_run, 1)
    for _ in range(100):
        if answers:
            break
        await trio.sleep(1)
    assert answers == [
        {
            "ended": {str(quick["id"]): "complete", str(slow["id"]): "failed"},
            "pending": [],
            "stuck": {},
        }
    ]
