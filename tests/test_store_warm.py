"""A warm standby's copy of the farm (`farmd.store_warm`, `restore.prebuild`): it reads
what `load` reads, fetching only the changed rows, and a farm restored with the jobs it
built ahead shows exactly what the farm showed, and what a cold restore shows.

A random farm is committed to a PostgreSQL database of the test's own in checkpoints;
after each, the warm copy is refreshed and compared with a fresh `load`. A standby whose
refresh fails tries again. Nothing sleeps.
"""

from __future__ import annotations

import logging

import pytest
import trio

from farmd.core import Restore, Scheduler
from farmd.core.restore import Built, prebuild, read_snapshot
from farmd.rows import Changes, Snapshot
from farmd.store import StoreError
from farmd.store_postgres import PostgresStore
from farmd.store_warm import WarmRows
from farmd.supervisor import standby
from tests.restore_support import RandomFarm, job_row, running_frames, seen


@pytest.mark.parametrize("seed", range(3))
def test_a_warm_copy_reads_what_load_reads_and_restores_the_same_farm(
    postgres_url: str, seed: int
) -> None:
    model = RandomFarm(seed)
    farm = model.farm
    store = PostgresStore(postgres_url)
    warm = WarmRows(store.where)
    built: dict[int, Built] = {}
    committed = 0
    try:
        for checkpoint in range(6):
            for _ in range(40):
                model.step()
            store.commit(Changes.merge([c for c in farm.changes[committed:] if c]))
            committed = len(farm.changes)
            before = dict(warm._jobs)
            snapshot = store.load_warm(warm)
            assert snapshot == store.load(), f"checkpoint {checkpoint}"
            # an unchanged row is the same object as last time; only changed ones came
            unchanged = [row for row in snapshot.jobs if row.id in before]
            kept = [row for row in unchanged if row is before[row.id][1]]
            assert warm.fetched <= len(snapshot.jobs) - len(kept) + len(snapshot.frames)
            # the jobs built ahead (at the last checkpoint, then refreshed) restore the
            # farm as it is, and as a cold restore does
            core = Scheduler()
            core.handle(Restore(snapshot=snapshot, now=0.0, prebuilt=prebuild(snapshot, built)))
            assert seen(core) == seen(farm.core), f"checkpoint {checkpoint}"
            assert core.orphans == len(running_frames(farm.core))
            cold = Scheduler()
            cold.handle(Restore(snapshot=snapshot, now=0.0))
            assert seen(core) == seen(cold)
            built = prebuild(snapshot, {})  # fresh ones for the next checkpoint's reuse
    finally:
        store.close()


def test_unchanged_rows_are_not_fetched_again_and_prebuilt_jobs_are_taken(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    try:
        store.commit(Changes(tuple(job_row(i, frames="1-3") for i in range(1, 51)), (), 51))
        warm = WarmRows(store.where)
        first = store.load_warm(warm)
        assert warm.fetched == 50
        built = prebuild(first, {})
        assert set(built) == set(range(1, 51))
        store.commit(Changes((job_row(7, frames="1-3", priority=9),), (), None))
        second = store.load_warm(warm)
        assert warm.fetched == 1
        assert second == store.load()
        for old, new in zip(first.jobs, second.jobs, strict=True):
            assert (old is new) == (old.id != 7)
        jobs, quarantined = read_snapshot(second, built)
        assert quarantined == {}
        assert all((jobs[i] is built[i][2]) == (i != 7) for i in jobs)  # 7 built again
        assert jobs[7].priority == 9
    finally:
        store.close()


def test_a_job_whose_rows_are_refused_is_not_built_ahead_and_still_quarantined() -> None:
    rows = (job_row(1, frames="1-3"), job_row(2, frames="1-3", cluster="not a path"))
    snapshot = Snapshot(rows, (), 3)
    built = prebuild(snapshot, {})
    assert set(built) == {1}
    jobs, quarantined = read_snapshot(snapshot, built)
    assert set(jobs) == {1}
    assert set(quarantined) == {2}
    assert quarantined == read_snapshot(snapshot)[1]


class FlakyStore:
    """A store whose first read fails, as while the database restarts."""

    where = "postgresql://db"

    def __init__(self) -> None:
        self.reads = 0
        self.third = trio.Event()  # set (from the refresh's thread) at the third read

    def load_warm(self, rows: WarmRows) -> Snapshot:
        self.reads += 1
        if self.reads == 3:
            trio.from_thread.run_sync(self.third.set)
        if self.reads == 1:
            msg = "cannot read the farm database postgresql://db: the server restarts"
            raise StoreError(msg)
        return Snapshot((job_row(1, frames="1-3"),), (), 2)


async def test_a_standby_whose_refresh_fails_tries_again_and_gets_warm(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the real clock (the refresh runs in a worker thread), refreshing every 10 ms
    monkeypatch.setattr(standby, "WARM_SECONDS", 0.01)
    caplog.set_level(logging.INFO, logger="farmd.supervisor")
    store = FlakyStore()
    warm = standby.WarmStandby(store)  # type: ignore[arg-type]  # a fake of its one read
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(warm.keep)
            await store.third.wait()
            nursery.cancel_scope.cancel()
    assert set(warm.built) == {1}
    events = [r.getMessage() for r in caplog.records if "standby" in r.getMessage()]
    assert events.count("standby refresh failed") == 1, events
    assert events.count("standby warm") == 1, events
