"""Submissions in the supervisor core: drafting off the loop, idempotency keys, compact
frame storage, and who may add sub-jobs at which priority.

A submission is drafted (`draft_job`: validated, frames built) by a pure function the
supervisor runs in a thread for a large job; the core then only checks it against the
farm and attaches it. Keys make a repeat of a submission return the jobs the first one
made, durably (the key travels in the job rows), until those jobs are removed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmd.cluster import parse_cluster, parse_patterns, parse_restrictions
from farmd.core import (
    KillJobs,
    Principal,
    RemoveJobs,
    Restore,
    Scheduler,
    SubmitJob,
    SubmitJobs,
    draft_batch,
    draft_job,
)
from farmd.errors import ForbiddenError, JobSpecError
from farmd.frames import (
    MAX_FRAMES_PER_JOB,
    FrameNumbers,
    FrameState,
    FrameTable,
    compact_frame_range,
    parse_frame_range,
)
from farmd.jobs import FrameEvent, Job
from farmd.rows import Changes
from farmd.store import SqliteStore
from tests.strategies import PROPERTY_SETTINGS
from tests.test_core import joined


def submit(**fields: object) -> SubmitJob:
    values: dict[str, object] = {"argv": ("render", "{frame}"), "now": 1.0}
    values.update(fields)
    return SubmitJob(**values)  # type: ignore[arg-type]


USER = Principal.shared_user(highest_priority=10)


# --------------------------------------------------------------------------- keys


def test_a_repeated_key_returns_the_first_job_and_changes_nothing() -> None:
    core = Scheduler()
    first = core.handle(submit(frames="1-3", key="k-1"))
    assert first.result == 1
    again = core.handle(submit(frames="1-3", key="k-1", now=9.0))
    assert again.result == 1
    assert not again.changes  # nothing to store: the job is the first one's
    assert [job["id"] for job in core.jobs_page()["jobs"]] == [1]
    assert core.next_job_id == 2
    notes = [c for c in again.commands if getattr(c, "event", "") == "submission repeated"]
    assert [n.fields for n in notes] == [{"key": "k-1", "jobs": [1]}]  # type: ignore[attr-defined]


def test_a_key_reused_for_a_different_submission_is_refused() -> None:
    core = Scheduler()
    core.handle(submit(frames="1-3", key="k-1"))
    with pytest.raises(JobSpecError) as refused:
        core.handle(submit(frames="1-4", key="k-1"))
    assert str(refused.value) == (
        "request key 'k-1' was already used for a different submission (job 1): nothing "
        "was submitted; use a new key for a new submission"
    )
    assert [job["id"] for job in core.jobs_page()["jobs"]] == [1]
    # a batch is a different submission too, and so is the same job from someone else
    with pytest.raises(JobSpecError, match="already used for a different submission"):
        core.handle(SubmitJobs(jobs=(submit(frames="1-3"),), now=1.0, key="k-1"))
    with pytest.raises(JobSpecError, match="already used for a different submission"):
        core.handle(submit(frames="1-3", key="k-1", by=USER))


def test_a_batch_key_returns_every_job_of_the_batch() -> None:
    core = Scheduler()
    batch = SubmitJobs(jobs=(submit(), submit(depends_on=("1",))), now=1.0, key="b")
    assert core.handle(batch).result == [1, 2]
    assert core.handle(batch).result == [1, 2]
    assert len(core.jobs) == 2


def test_a_key_is_forgotten_when_its_jobs_are_removed() -> None:
    core = Scheduler()
    core.handle(submit(key="k"))
    core.handle(KillJobs(job_ids=(1,), now=2.0))
    core.handle(RemoveJobs(job_ids=(1,), now=3.0))
    assert not core.knows_key("k")
    assert core.handle(submit(key="k", frames="5")).result == 2  # any submission, now


@PROPERTY_SETTINGS
@given(order=st.permutations(range(1, 9)), groups=st.lists(st.integers(1, 3), max_size=8))
def test_a_batch_key_lives_exactly_as_long_as_any_of_its_jobs(
    order: list[int], groups: list[int]
) -> None:
    """Whatever order a batch's jobs leave in (one at a time or several at once), its key
    still returns the batch while any of them is left, and is free once none is."""
    core = Scheduler()
    batch = SubmitJobs(jobs=tuple(submit() for _ in range(8)), now=1.0, key="b")
    assert core.handle(batch).result == list(range(1, 9))
    core.handle(KillJobs(job_ids=tuple(range(1, 9)), now=2.0))
    left = list(order)
    for size in [*groups, 8]:  # the last group takes whatever is left
        leaving, left = left[:size], left[size:]
        if not leaving:
            break
        core.handle(RemoveJobs(job_ids=tuple(leaving), now=3.0))
        assert core.knows_key("b") == bool(left), (leaving, left)
        if left:
            assert core.handle(batch).result == list(range(1, 9))
    assert not core.knows_key("b")


def test_keys_survive_the_store_and_go_with_their_jobs(tmp_path: Path) -> None:
    core = Scheduler()
    store = SqliteStore(tmp_path)
    try:
        for event in (
            submit(frames="1-1000", key="big"),
            SubmitJobs(jobs=(submit(), submit()), now=1.0, key="pair"),
            submit(key="gone"),
            KillJobs(job_ids=(4,), now=2.0),
            RemoveJobs(job_ids=(4,), now=3.0),
        ):
            store.commit(core.handle(event).changes)
    finally:
        store.close()
    reopened = SqliteStore(tmp_path)
    try:
        restored = Scheduler()
        restored.handle(Restore(snapshot=reopened.load(), now=0.0))
    finally:
        reopened.close()
    assert restored.handle(submit(frames="1-1000", key="big")).result == 1
    batch = SubmitJobs(jobs=(submit(), submit()), now=5.0, key="pair")
    assert restored.handle(batch).result == [2, 3]
    assert not restored.knows_key("gone")
    with pytest.raises(JobSpecError, match="'big' was already used"):
        restored.handle(submit(frames="1-999", key="big"))


# --------------------------------------------------------------------------- size


def test_a_new_job_is_one_row_and_its_frames_a_range() -> None:
    core = Scheduler()
    out = core.handle(submit(frames=f"1-{MAX_FRAMES_PER_JOB - 1}x2,8", chunk=3))
    (row,) = out.changes.jobs
    assert row.frames == "1-999999x2,8"
    assert out.changes.frames == ()
    # a frame that changes gets a row of its own: the chunk a worker starts
    started = core.handle(joined("w1"))
    assert [(f.number, f.members, f.state) for f in started.changes.frames] == [
        (1, "1,3,5", "running")
    ]


def test_a_drafted_job_is_attached_as_built() -> None:
    """What the supervisor does for a large job: draft in a thread, then handle."""
    core = Scheduler()
    event = submit(frames="1-100000", chunk=10)
    out = core.handle(attrs.evolve(event, prepared=draft_job(event)))
    summary = core.jobs[out.result].summary()
    assert summary["frames"]["pending"] == 100000
    assert len(core.jobs[out.result].frames) == 10000
    assert core.jobs[out.result].unit(99995) is core.jobs[out.result].frames[99991]


def test_a_batch_names_at_most_a_jobs_worth_of_frames() -> None:
    half = submit(frames=f"1-{MAX_FRAMES_PER_JOB // 2}")
    draft_batch((half, half))
    with pytest.raises(JobSpecError) as refused:
        draft_batch((half, half, submit(frames="1-2")))
    assert str(refused.value).startswith(
        "bad batch: its jobs name more than 1000000 frames in all (by job 3)"
    )


@given(st.lists(st.integers(0, 60), max_size=40))
@PROPERTY_SETTINGS
def test_compact_frame_ranges_read_back_the_same(numbers: list[int]) -> None:
    unique = tuple(dict.fromkeys(numbers))
    if unique:
        assert parse_frame_range(compact_frame_range(unique)) == unique


# --------------------------------------------------------------------------- who asks


def test_a_user_token_adds_no_sub_jobs() -> None:
    core = Scheduler()
    core.handle(submit(priority=1))
    with pytest.raises(ForbiddenError) as refused:
        core.handle(submit(parent=1, by=USER))
    assert str(refused.value) == (
        "a user token may not add sub-jobs (parent 1): only an admin or a frame of job 1 may"
    )
    assert core.job(1).children == {}
    assert core.handle(submit(parent=1)).result == 2  # an admin may


def test_an_inherited_priority_is_clamped_to_the_submitters_floor() -> None:
    core = Scheduler()
    core.handle(submit(priority=1))
    frame = Principal.job_token(1, highest_priority=10)
    child = core.handle(submit(by=frame)).result
    assert (core.job(child).parent, core.job(child).priority) == (1, 10)
    grandchild = core.handle(submit(parent=child, by=frame)).result
    assert core.job(grandchild).priority == 10
    admins = core.handle(submit(parent=1)).result
    assert core.job(admins).priority == 1  # an admin's sub-job inherits as it is
    with pytest.raises(ForbiddenError, match="priority 5 is more urgent than a frame's job"):
        core.handle(submit(priority=5, by=frame))


def test_a_job_token_adds_sub_jobs_only_under_its_own_job() -> None:
    core = Scheduler()
    core.handle(submit())
    core.handle(submit())
    with pytest.raises(ForbiddenError) as refused:
        core.handle(submit(parent=1, by=Principal.job_token(2)))
    assert str(refused.value) == "bad parent 1: a frame of job 2 may only add sub-jobs under job 2"
    # in a batch, under an earlier job of the batch that is under the token's job
    batch = SubmitJobs(jobs=(submit(), submit(parent=3)), now=1.0, by=Principal.job_token(2))
    assert core.handle(batch).result == [3, 4]
    assert (core.job(3).parent, core.job(4).parent) == (2, 3)


def test_a_job_token_works_while_its_job_has_not_ended() -> None:
    core = Scheduler()
    core.handle(submit())
    assert core.job_token_refusal(1) is None
    core.handle(KillJobs(job_ids=(1,), now=2.0))
    assert core.job_token_refusal(1) == (
        "the job token of job 1 no longer works: the job has ended (killed)"
    )
    core.handle(RemoveJobs(job_ids=(1,), now=3.0))
    assert core.job_token_refusal(1) == (
        "the job token of job 1 no longer works: the job does not exist"
    )


def test_merge_of_a_new_job_is_its_row() -> None:
    core = Scheduler()
    changes = core.handle(submit(frames="1-500000")).changes
    merged = Changes.merge([changes, Changes()])
    assert (len(merged.jobs), merged.frames) == (1, ())


# --------------------------------------------------------------------------- lazy frames

operations = st.lists(
    st.tuples(
        st.sampled_from(["run", "finish", "fail", "kill", "look", "block", "unblock"]),
        st.integers(0, 50),
    ),
    max_size=60,
)


@given(
    numbers=st.lists(st.integers(0, 80), min_size=1, max_size=40).map(
        lambda n: tuple(dict.fromkeys(n))
    )
    | st.builds(
        lambda a, n, s: tuple(range(a, a + n * s, s)),
        st.integers(0, 9),
        st.integers(1, 30),
        st.integers(1, 4),
    ),
    chunk=st.integers(1, 4),
    ops=operations,
)
@PROPERTY_SETTINGS
def test_a_lazy_frame_table_behaves_as_a_frame_per_number(
    numbers: tuple[int, ...], chunk: int, ops: list[tuple[str, int]]
) -> None:
    """A job whose frames are made only when touched keeps the ready stack, the counts
    and the dispatch order a job with a `Frame` per unit would: reading a frame (which
    makes it) changes nothing, and the next frame is always the first ready one."""
    job = Job(
        id=1,
        name="j",
        cluster=parse_cluster("/"),
        priority=1,
        restrictions=parse_restrictions(""),
        cross_cluster=parse_patterns(""),
        argv=("x",),
        frames=FrameTable(FrameNumbers(numbers), chunk),
        depends_on=(),
        submitted_at=0.0,
        chunk=chunk,
    )
    keys = [numbers[i] for i in range(0, len(numbers), chunk)]
    state = dict.fromkeys(keys, FrameState.PENDING)
    for op, pick in ops:
        key = keys[pick % len(keys)]
        if op == "run" and job.pending:
            frame = job.next_frame("w")
            assert state[frame.number] is FrameState.PENDING
            ready = [k for k in keys if state[k] is FrameState.PENDING]
            assert frame.number == ready[0]  # the first ready one, in submission order
            job.move(frame, FrameEvent.DISPATCH)
            state[frame.number] = FrameState.RUNNING
        elif op in ("finish", "fail") and state[key] is FrameState.RUNNING:
            target = FrameState.COMPLETE if op == "finish" else FrameState.PENDING
            job.move(job.frames[key], FrameEvent.SUCCEED if op == "finish" else FrameEvent.REQUEUE)
            state[key] = target
        elif op in ("kill", "block") and state[key] in (FrameState.PENDING, FrameState.RUNNING):
            target = FrameState.KILLED if op == "kill" else FrameState.BLOCKED
            job.move(job.frames[key], FrameEvent.KILL if op == "kill" else FrameEvent.BLOCK)
            state[key] = target
        elif op == "unblock" and state[key] is FrameState.BLOCKED:
            job.move(job.frames[key], FrameEvent.UNBLOCK)
            state[key] = FrameState.PENDING
        elif op == "look":
            assert job.frames[key].state is state[key]
        ready = [k for k in keys if state[k] is FrameState.PENDING]
        assert sorted(job.pending) == sorted(ready)
        assert len(job.pending) == len(ready)
        if ready:
            assert job.pending.top() == ready[0]
            assert job.pending.first(3) == ready[:3]
        assert {s: n for s, n in job.counts.items() if n} == dict(Counter(state.values()))
        assert sum(job.frame_counts.values()) == len(numbers)
    assert [f.number for f in job.frames.views()] == keys
    assert parse_frame_range(job.frames.numbers.text()) == numbers
