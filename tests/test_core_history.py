"""History in the core (`farmd.core.history`): which families leave memory when, what
rows that writes, and how a recall brings them back. Events through the door only; the
SQLite store makes the round trip a restart or a recall would."""

from __future__ import annotations

from pathlib import Path

from farmd.core import Event, Outcome, RecallJobs, Scheduler, Tick
from farmd.rows import Changes
from farmd.store import SqliteStore
from tests.test_core import ended, joined, starts, submit

AFTER = 60.0


def farm() -> Scheduler:
    return Scheduler(history_after=AFTER)


def run(core: Scheduler, store: SqliteStore, event: Event) -> Changes:
    """Handle `event` and commit what it changed, as the supervisor does."""
    return handled(core, store, event).changes


def handled(core: Scheduler, store: SqliteStore, event: Event) -> Outcome:
    outcome = core.handle(event)
    store.commit(outcome.changes)
    return outcome


def test_a_family_moves_whole_once_its_top_level_job_has_ended(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    try:
        core = farm()
        run(core, store, joined("w1", slots=2))
        (parent_start,) = starts(handled(core, store, submit(now=1.0)))
        (child_start,) = starts(handled(core, store, submit(now=1.0, parent=1)))
        assert core.next_wake() is None  # nothing has ended
        run(core, store, ended(parent_start, 0, now=2.0))
        assert core.next_wake() is None  # the parent waits for its sub-job
        run(core, store, ended(child_start, 0, now=3.0))
        assert core.next_wake() == 3.0 + AFTER
        assert run(core, store, Tick(now=3.0 + AFTER - 1)) == Changes()
        assert sorted(core.jobs_page()["jobs"], key=lambda j: j["id"])  # still live
        moved = run(core, store, Tick(now=3.0 + AFTER))
        assert sorted(row.id for row in moved.jobs) == [1, 2]
        assert all(row.retired_at == 3.0 + AFTER and row.summary for row in moved.jobs)
        assert core.jobs_page()["total"] == 0
        assert core.unknown_jobs([1, 2, 3]) == [1, 2, 3]
        assert store.load().jobs == ()  # a restart reads none of them
        assert [job["id"] for job in store.history(10, None)] == [1, 2]
    finally:
        store.close()


def test_a_recalled_family_moves_back_without_a_row_unless_it_changed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    try:
        core = farm()
        run(core, store, joined("w1"))
        (start,) = starts(handled(core, store, submit(now=1.0)))
        run(core, store, ended(start, 1, now=2.0))  # failed
        run(core, store, Tick(now=2.0 + AFTER))
        before = store.history(10, None)

        recalled = handled(core, store, RecallJobs(snapshot=store.recall([1]), now=100.0))
        assert recalled.result == [1]
        assert core.job_view(1)["state"] == "failed"
        again = core.handle(RecallJobs(snapshot=store.recall([1]), now=101.0))
        assert again.result == []  # already in memory: nothing changes
        assert run(core, store, Tick(now=100.0 + AFTER)) == Changes()  # no row written
        assert core.unknown_jobs([1]) == [1]
        assert store.history(10, None) == before
    finally:
        store.close()


def test_without_history_nothing_ever_moves() -> None:
    core = Scheduler()  # history_after None: the memory store's farm
    core.handle(joined("w1"))
    (start,) = starts(core.handle(submit(now=1.0)))
    core.handle(ended(start, 0, now=2.0))
    assert core.next_wake() is None
    core.handle(Tick(now=1e9))
    assert core.jobs_page()["total"] == 1
