"""The listings by page in the core: `jobs_page` (jobs by id, with every job's counts)
and the frame page of `job_view`, driven by events as the shell would feed them."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from farmd.core import KillJobs, RemoveJobs, ReplyRoom, Scheduler
from farmd.errors import JobSpecError
from farmd.jobs import JobState
from tests.test_core import ended, joined, starts, submit
from tests.test_core_jobmodel import Recorder, restored


def farm_of(count: int, **fields: Any) -> Scheduler:
    core = Scheduler()
    for _ in range(count):
        core.handle(submit(cluster="/nowhere", **fields))
    return core


def size(entry: Any) -> int:
    return len(json.dumps(entry))


def ids(page: dict[str, Any]) -> list[int]:
    return [job["id"] for job in page["jobs"]]


def every_state(**counts: int) -> dict[str, int]:
    return {state.value: counts.get(state.value, 0) for state in JobState}


def test_pages_list_jobs_by_id_and_next_names_the_last_one_listed() -> None:
    core = farm_of(7)
    first = core.jobs_page(limit=3)
    assert (ids(first), first["next"]) == ([1, 2, 3], 3)
    second = core.jobs_page(limit=3, after=first["next"])
    assert (ids(second), second["next"]) == ([4, 5, 6], 6)
    last = core.jobs_page(limit=3, after=second["next"])
    assert (ids(last), last["next"]) == ([7], None)
    for page in (first, second, last):
        assert (page["total"], page["counts"]) == (7, every_state(pending=7))


def test_a_page_that_ends_exactly_at_the_last_job_has_no_next() -> None:
    core = farm_of(4)
    assert core.jobs_page(limit=4)["next"] is None
    assert core.jobs_page(limit=2, after=2)["next"] is None
    assert (ids(core.jobs_page(after=4)), core.jobs_page(after=4)["next"]) == ([], None)
    assert ids(core.jobs_page(after=0)) == [1, 2, 3, 4]  # no bound: every job
    empty = Scheduler().jobs_page(limit=10)
    assert empty == {"jobs": [], "next": None, "counts": every_state(), "total": 0}


def test_a_page_after_a_removed_id_starts_at_the_next_id_that_is_left() -> None:
    core = farm_of(6)
    core.handle(KillJobs(job_ids=(3, 4), now=1.0))
    core.handle(RemoveJobs(job_ids=(3, 4), now=1.0))
    page = core.jobs_page(limit=2, after=3)
    assert (ids(page), page["next"]) == ([5, 6], None)
    assert ids(core.jobs_page(limit=2, after=2)) == [5, 6]
    assert (page["total"], page["counts"]) == (4, every_state(pending=4))
    assert ids(core.jobs_page()) == [1, 2, 5, 6]


def test_counts_follow_every_job_through_its_states_and_a_restart() -> None:
    record = Recorder()
    core = Scheduler()
    for fields in ({}, {"depends_on": ("1",)}, {"frames": "1-2"}, {"cluster": "/nowhere"}):
        record(core.handle(submit(**fields)))
    start = starts(record(core.handle(joined("w"))))[0]
    assert core.jobs_page(limit=1)["counts"] == every_state(running=1, waiting=1, pending=2)
    record(core.handle(ended(start, 1)))  # job 1 fails: job 2 is blocked for good
    record(core.handle(KillJobs(job_ids=(4,), now=1.0)))
    states = Counter(job.state.value for job in core.jobs.values())
    assert core.jobs_page(limit=1)["counts"] == every_state(**states)
    assert states == {"failed": 1, "blocked": 1, "running": 1, "killed": 1}
    assert restored(record).jobs_page(limit=1)["counts"] == core.jobs_page()["counts"]


def test_a_page_is_cut_short_to_fit_its_room_but_never_empty() -> None:
    core = farm_of(10)
    one = len(json.dumps(core.job_summary(1)))
    room = ReplyRoom(bytes=3 * one + 5, size=size)
    page = core.jobs_page(limit=10, room=room)
    assert (ids(page), page["next"]) == ([1, 2, 3], 3)
    tiny = ReplyRoom(bytes=1, size=room.size)
    assert ids(core.jobs_page(limit=10, after=8, room=tiny)) == [9]  # one, whatever the room


def test_a_frame_page_makes_no_frame_it_keeps_and_counts_every_frame() -> None:
    core = farm_of(1, frames="1-1000000")
    view = core.job_view(1, frame_limit=3, frame_after=999_996)
    assert [f["frame"] for f in view["frame_list"]] == [999_997, 999_998, 999_999]
    assert (view["frame_next"], view["frame_list_total"]) == (999_999, 1_000_000)
    assert view["frames"]["pending"] == 1_000_000
    assert core.jobs[1].frames.made == {}  # a million-frame job is still a range
    last = core.job_view(1, frame_limit=3, frame_after=999_999)
    assert ([f["frame"] for f in last["frame_list"]], last["frame_next"]) == ([1_000_000], None)


def test_frame_pages_of_a_chunked_job_follow_its_chunks_and_the_room_counts_the_job() -> None:
    core = farm_of(1, frames="1-10", chunk=3)
    view = core.job_view(1, frame_limit=2)
    assert ([f["frames"] for f in view["frame_list"]], view["frame_next"]) == (["1-3", "4-6"], 4)
    after = core.job_view(1, frame_limit=2, frame_after=5)  # inside the chunk 4-6
    assert ([f["frames"] for f in after["frame_list"]], after["frame_next"]) == (
        ["7-9", "10"],
        None,
    )
    size = lambda entry: len(json.dumps(entry))  # noqa: E731 - a measure, named once
    bare = size(core.job_view(1, frame_limit=1) | {"frame_list": []})
    one_frame = size(view["frame_list"][0])
    room = ReplyRoom(bytes=bare + 2 * one_frame + 2, size=size)
    assert len(core.job_view(1, room=room)["frame_list"]) == 2


@pytest.mark.parametrize("after", [0, 11, -1])
def test_a_frame_page_after_a_frame_the_job_does_not_have_is_refused(after: int) -> None:
    core = farm_of(1, frames="1-10")
    with pytest.raises(JobSpecError, match=f"job 1 has no frame {after} to list its frames after"):
        core.job_view(1, frame_after=after)
