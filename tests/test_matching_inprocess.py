"""In-process: reservations of worker counters (`gpu`) and farm-wide licenses.

A real `Supervisor` in the test's trio run, with fake workers (tests/inprocess.py) that
run nothing and report a frame finished when the test says so: what runs together is
decided by the scheduler alone, and each step is a message, not a poll. What a user
sees is asserted through the same requests `farmd job`, `farmd workers`, `farmd explain`
and `farmd resources` make. The CLI's own options and tables are tests/test_matching_e2e.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from farmd.protocol import (
    Explain,
    GetJob,
    ListResources,
    ListWorkers,
    SetResource,
    Submit,
    Wait,
)
from tests.inprocess import FakeWorker, Farm, Peer, Runs, start_supervisor, supervisor_config


async def farm_with(
    nursery: trio.Nursery, tmp_path: Path, resources: dict[str, float] | None = None
) -> tuple[Farm, Peer, Runs]:
    config = supervisor_config(tmp_path, store="memory", resources=resources or {})
    farm = await start_supervisor(nursery, config)
    return farm, await farm.admin(), Runs()


async def add_worker(
    nursery: trio.Nursery, farm: Farm, runs: Runs, name: str, **fields: Any
) -> FakeWorker:
    worker = await farm.worker(name, **fields)
    await nursery.start(runs.read, worker)
    return worker


async def counts(admin: Peer, job_id: int) -> dict[str, int]:
    """A job's frame counts, leaving out the zeros (`farmd job`)."""
    job = await admin.ask(GetJob, job_id=job_id)
    return {state: n for state, n in job["frames"].items() if n}


async def running(admin: Peer, job_id: int) -> list[int]:
    job = await admin.ask(GetJob, job_id=job_id)
    return sorted(f["frame"] for f in job["frame_list"] if f["state"] == "running")


async def reasons_on(admin: Peer, job_id: int, worker: str) -> list[str]:
    (entry,) = (await admin.ask(Explain, job_id=job_id, worker=worker))["workers"]
    return list(entry["reasons"])


async def finish_in_turn(admin: Peer, runs: Runs, job_id: int, limit: int) -> None:
    """Finish the lowest running frame of `job_id`, one at a time, until the job ends;
    after each, `limit` frames run again as long as enough are left (never more)."""
    frames = await counts(admin, job_id)
    left = sum(n for state, n in frames.items() if state != "complete")
    for remaining in range(left, 0, -1):
        now = await running(admin, job_id)
        assert len(now) == min(limit, remaining), await counts(admin, job_id)
        await runs.finish(job_id, now[0])
    assert (await admin.ask(Wait, job_ids=(job_id,)))["ended"] == {str(job_id): "complete"}


async def licensed(nursery: trio.Nursery, tmp_path: Path, total: float) -> tuple[Peer, Runs]:
    """A farm with `total` of license.nuke, and three workers of two slots each."""
    farm, admin, runs = await farm_with(nursery, tmp_path, {"license.nuke": total})
    for name in ("w1", "w2", "w3"):
        await add_worker(nursery, farm, runs, name, slots=2)
    return admin, runs


def nuke(total: float, used: float) -> dict[str, dict[str, float]]:
    return {"license.nuke": {"total": total, "used": used, "free": max(0, total - used)}}


# --------------------------------------------------------------------------- counters


async def test_a_job_reserving_the_only_gpu_runs_one_frame_at_a_time_and_others_pass_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm, admin, runs = await farm_with(nursery, tmp_path)
    await add_worker(nursery, farm, runs, "gpu", slots=4, resources={"gpu": 1})
    (worker,) = await admin.ask(ListWorkers)
    assert worker["resources"]["gpu"] == [0, 1]

    gpu_job = (await admin.ask(Submit, argv=("render",), frames="1-3", reserve="gpu=1"))["id"]
    assert (await admin.ask(GetJob, job_id=gpu_job))["reserve"] == "slots=1,gpu=1"
    assert await counts(admin, gpu_job) == {"running": 1, "pending": 2}

    # submitted after it, a plain job takes the three free slots: the gpu job, blocked
    # on its resource, does not stall the queue behind it
    plain = (await admin.ask(Submit, argv=("render",), frames="1-3"))["id"]
    assert await counts(admin, plain) == {"running": 3}
    assert await counts(admin, gpu_job) == {"running": 1, "pending": 2}
    (worker,) = await admin.ask(ListWorkers)
    assert (worker["used"], worker["resources"]["gpu"]) == (4, [1, 1])
    assert await reasons_on(admin, gpu_job, "gpu") == [
        "resources short: needs gpu=1, 0 free on this worker"
    ]

    for frame in (1, 2, 3):
        await runs.finish(plain, frame)
    assert (await admin.ask(Wait, job_ids=(plain,)))["ended"] == {str(plain): "complete"}
    # the three free slots are no use to the gpu job: still one frame at a time
    assert await counts(admin, gpu_job) == {"running": 1, "pending": 2}
    await finish_in_turn(admin, runs, gpu_job, 1)
    (worker,) = await admin.ask(ListWorkers)
    assert worker["resources"]["gpu"] == [0, 1]


# --------------------------------------------------------------------------- licenses


async def test_a_license_limit_holds_across_workers_until_every_frame_ran(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    admin, runs = await licensed(nursery, tmp_path, 2)
    assert await admin.ask(ListResources) == nuke(2, 0)
    job_id = (await admin.ask(Submit, argv=("nuke",), frames="1-8", reserve="license.nuke=1"))["id"]
    # six free slots, two licenses: two frames run
    assert await counts(admin, job_id) == {"running": 2, "pending": 6}
    assert await admin.ask(ListResources) == nuke(2, 2)
    idle = [w["name"] for w in await admin.ask(ListWorkers) if w["used"] < w["slots"]]
    assert idle, "free slots are left on the farm"
    assert await reasons_on(admin, job_id, idle[0]) == [
        "resources short: needs license.nuke=1, 0 free farm-wide"
    ]

    # a plain job is not held back by the licenses
    plain = (await admin.ask(Submit, argv=("true",), frames="1-4"))["id"]
    assert await counts(admin, plain) == {"running": 4}
    for frame in range(1, 5):
        await runs.finish(plain, frame)
    assert (await admin.ask(Wait, job_ids=(plain,)))["ended"] == {str(plain): "complete"}

    await finish_in_turn(admin, runs, job_id, 2)
    assert await admin.ask(ListResources) == nuke(2, 0)


async def test_raising_a_license_total_at_run_time_lets_more_frames_run(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    admin, runs = await licensed(nursery, tmp_path, 2)
    job_id = (await admin.ask(Submit, argv=("nuke",), frames="1-6", reserve="license.nuke=1"))["id"]
    assert await counts(admin, job_id) == {"running": 2, "pending": 4}
    # what `farmd resources license.nuke=3` does: set, then list; the reply shows the
    # figures after the frame the new license let start, not those before it
    reply = await admin.ask(SetResource, name="license.nuke", total=3)
    assert reply == nuke(3, 3)["license.nuke"]
    assert await admin.ask(ListResources) == nuke(3, 3)
    assert await counts(admin, job_id) == {"running": 3, "pending": 3}
    await finish_in_turn(admin, runs, job_id, 3)
    assert await admin.ask(ListResources) == nuke(3, 0)


async def test_lowering_a_license_total_lets_running_frames_finish_and_starts_none(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    admin, runs = await licensed(nursery, tmp_path, 2)
    job_id = (await admin.ask(Submit, argv=("nuke",), frames="1-4", reserve="license.nuke=1"))["id"]
    assert await counts(admin, job_id) == {"running": 2, "pending": 2}
    await admin.ask(SetResource, name="license.nuke", total=1)
    assert await admin.ask(ListResources) == {"license.nuke": {"total": 1, "used": 2, "free": 0}}
    first, _ = await running(admin, job_id)
    await runs.finish(job_id, first)
    # one license held, the total is one: nothing new starts
    assert await counts(admin, job_id) == {"complete": 1, "running": 1, "pending": 2}
    assert await admin.ask(ListResources) == nuke(1, 1)
    await finish_in_turn(admin, runs, job_id, 1)
    assert await admin.ask(ListResources) == nuke(1, 0)


async def test_a_lost_worker_gives_its_license_back_and_its_frame_runs_elsewhere(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    admin, runs = await licensed(nursery, tmp_path, 1)
    job_id = (await admin.ask(Submit, argv=("nuke",), frames="1-2", reserve="license.nuke=1"))["id"]
    (first,) = await running(admin, job_id)
    lost, _ = runs.sent.pop((job_id, first))
    await lost.aclose()  # its connection ends: the worker is lost

    worker, run = await runs.sent_to(job_id, first)  # once more, to another worker
    assert worker.name != lost.name
    assert run.attempt == 2
    assert await counts(admin, job_id) == {"running": 1, "pending": 1}
    assert await admin.ask(ListResources) == nuke(1, 1)
    await finish_in_turn(admin, runs, job_id, 1)
    assert await admin.ask(ListResources) == nuke(1, 0)
