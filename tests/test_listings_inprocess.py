"""In-process: the listings that grow with the farm come by page, and every page fits one
frame of the supervisor's limit (docs/protocol.md, section 6, "Pages").

The admin's codec takes the supervisor's frame limit from `welcome`, as farmd's client
does, so a reply larger than the limit would fail the test (`frame_too_large`) instead of
passing unnoticed. A real `Supervisor` in the test's trio run; the real clock.
"""

from __future__ import annotations

from pathlib import Path

import trio

from farmd.codec import encode
from farmd.protocol import (
    MAX_PAGE,
    MIN_FRAME_BYTES,
    GetJob,
    Kill,
    ListJobs,
    Refused,
    Remove,
    Reply,
    Submit,
)
from tests.inprocess import Farm, Peer, start_supervisor, supervisor_config

FRAMES = 300_000


async def admin_of(farm: Farm) -> Peer:
    """An admin session whose codec refuses what the supervisor's limit refuses."""
    admin = farm.connect("admin")
    welcome = await admin.hello(farm.token)
    admin.codec.max_frame_bytes = welcome.max_frame_bytes
    return admin


async def test_a_300000_frame_job_answers_get_job_in_pages_that_each_fit_one_frame(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = supervisor_config(tmp_path, store="memory", max_frame_bytes=MIN_FRAME_BYTES)
    farm = await start_supervisor(nursery, config)
    admin = await admin_of(farm)
    job = await admin.ask(Submit, argv=("true",), frames=f"1-{FRAMES}", cluster="/nowhere")
    job_id = job["id"]

    first = await admin.request(GetJob, job_id=job_id)  # the default page
    assert isinstance(first, Reply), first
    detail = first.result
    assert detail["frames"]["pending"] == FRAMES  # counts are of every frame, always
    assert detail["frame_list_total"] == FRAMES
    assert [f["frame"] for f in detail["frame_list"]][:3] == [1, 2, 3]
    assert len(encode(first)) <= MIN_FRAME_BYTES + 4  # 4: the length prefix

    # as many as the protocol allows: cut short to fit 64 KiB, not refused
    full = await admin.request(GetJob, job_id=job_id, frame_limit=MAX_PAGE, frame_after=1000)
    assert isinstance(full, Reply), full
    listed = [f["frame"] for f in full.result["frame_list"]]
    assert 100 < len(listed) < MAX_PAGE
    assert listed == list(range(1001, 1001 + len(listed)))
    assert full.result["frame_next"] == listed[-1]
    assert len(encode(full)) <= MIN_FRAME_BYTES + 4

    last = await admin.ask(GetJob, job_id=job_id, frame_after=FRAMES - 5)
    assert [f["frame"] for f in last["frame_list"]] == list(range(FRAMES - 4, FRAMES + 1))
    assert last["frame_next"] is None

    stranger = await admin.request(GetJob, job_id=job_id, frame_after=FRAMES + 1)
    assert isinstance(stranger, Refused), stranger
    assert (stranger.code, stranger.message) == (
        "bad_job",
        f"job {job_id} has no frame {FRAMES + 1} to list its frames after",
    )


async def test_following_next_lists_every_chunk_once_in_order(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))
    admin = await admin_of(farm)
    spec = {"argv": ("true",), "frames": "1-30000", "chunk": 7, "cluster": "/nowhere"}
    job_id = (await admin.ask(Submit, **spec))["id"]
    firsts: list[int] = []
    after = None
    for _ in range(10):  # 4286 chunks: five pages
        page = await admin.ask(GetJob, job_id=job_id, frame_after=after)
        firsts.extend(f["frame"] for f in page["frame_list"])
        after = page["frame_next"]
        if after is None:
            break
    assert firsts == list(range(1, 30001, 7))
    assert page["frame_list_total"] == len(firsts)
    # a frame inside a chunk names that chunk: the page starts with the next one
    inside = await admin.ask(GetJob, job_id=job_id, frame_limit=1, frame_after=10)
    assert [f["frames"] for f in inside["frame_list"]] == ["15-21"]


async def test_list_jobs_pages_by_id_past_a_removed_job_with_every_jobs_counts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))
    admin = await admin_of(farm)
    ids = [
        (await admin.ask(Submit, argv=("true",), name=f"j{n}", cluster="/nowhere"))["id"]
        for n in range(5)
    ]
    await admin.ask(Kill, job_ids=(ids[1],))
    await admin.ask(Remove, job_ids=(ids[1],))

    page = await admin.ask(ListJobs, limit=2)
    assert [j["id"] for j in page["jobs"]] == [ids[0], ids[2]]
    assert page["next"] == ids[2]
    assert (page["total"], page["counts"]["pending"]) == (4, 4)
    rest = await admin.ask(ListJobs, limit=2, after=ids[1])  # a removed id is a place too
    assert [j["id"] for j in rest["jobs"]] == [ids[2], ids[3]]
    end = await admin.ask(ListJobs, limit=2, after=ids[3])
    assert ([j["id"] for j in end["jobs"]], end["next"]) == ([ids[4]], None)
