"""The SQLite store and the core's restore, without a network or a process.

What every store must do (rows round trip, upserts, history, audit, restore of a busy
farm) is `test_store_contract`'s, run against SQLite and PostgreSQL alike; here is what
is SQLite's own. `SqliteStore` is driven directly: rows committed, the directory opened
again, rows loaded. Refusals (a newer schema, a file that is not a database, corrupt
pages, a state dir another store holds) are checked for their one-line message and for
leaving every file of the state dir as it was, byte for byte and mtime for mtime.

Restoring (`Restore`) is checked the way the supervisor uses it: every outcome's `changes`
are committed (one by one, and merged in groups as the committer does), loaded into a
fresh scheduler, and everything a user can see (job lists, job details, the ranking of
each worker) must be equal. Frames that were running come back as orphans, which a
`ReclaimOrphans` event or their worker's registration settles.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmd.core import KillOnWorker, ReclaimOrphans, SubmitJob, WorkerJoined
from farmd.rows import Changes, Snapshot
from farmd.store import (
    DATABASE_FILE,
    LOCK_FILE,
    SCHEMA_VERSION,
    MemoryStore,
    SqliteStore,
    StoreError,
)
from tests.restore_support import (
    Recorder,
    busy_farm,
    frame_of,
    frame_row,
    job_row,
    notes,
    requeued_by_hand,
    restored,
    result,
    row_of,
    running_frames,
    seen,
    starts,
    stops,
)
from tests.state_files import FileState, changed, files
from tests.strategies import PROPERTY_SETTINGS, cluster_paths, pattern_texts, restriction_texts

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(state)
    try:
        yield opened
    finally:
        opened.close()


def assert_unchanged(before: FileState, after: FileState) -> None:
    """Nothing changed. The contents of `farmd.db-shm` are the one exception: it is
    SQLite's WAL index, shared-memory scratch that any reader of a crashed database
    rebuilds from the WAL and that holds no data; its creation or deletion still counts."""
    everything = changed(before, after)
    scratch = (f"{DATABASE_FILE}-shm: bytes changed", f"{DATABASE_FILE}-shm: mtime changed")
    serious = [line for line in everything if line not in scratch]
    assert not serious, f"the refusal changed the state dir: {serious}"


def refuse(state: Path) -> str:
    """Open `state`, which must be refused; the message, checked to be one line."""
    with pytest.raises(StoreError) as caught:
        SqliteStore(state)
    message = str(caught.value)
    assert "\n" not in message, message
    assert "nothing was changed" in message, message
    return message


def make_database(state: Path, jobs: int = 60, frames: int = 8) -> None:
    """A state dir with a store of several pages, closed cleanly."""
    store = SqliteStore(state)
    try:
        store.commit(
            Changes(
                tuple(job_row(j) for j in range(1, jobs + 1)),
                tuple(
                    frame_row(j, n, n - 1) for j in range(1, jobs + 1) for n in range(1, frames + 1)
                ),
                jobs + 1,
            )
        )
    finally:
        store.close()


def pragma(path: Path, name: str) -> Any:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


# --------------------------------------------------------------------------- round trip


def test_the_memory_store_keeps_nothing() -> None:
    store = MemoryStore()
    store.commit(Changes((job_row(1),), (frame_row(1, 1, 0),), 2))
    assert store.load() == Snapshot()
    store.close()


# --------------------------------------------------------------------------- Changes.merge


def test_merge_keeps_the_last_row_of_each_key_and_the_last_next_job_id() -> None:
    first = Changes((job_row(1), job_row(2)), (frame_row(1, 1, 0), frame_row(2, 1, 0)), 3)
    running = frame_row(1, 1, 0, state="running", worker="w", attempts=1)
    second = Changes((job_row(1, priority=1),), (running,), None)
    third = Changes((), (frame_row(2, 2, 1),), 5)

    merged = Changes.merge([first, second, third])
    assert merged.jobs == (job_row(1, priority=1), job_row(2))
    assert merged.frames == (running, frame_row(2, 1, 0), frame_row(2, 2, 1))
    assert merged.next_job_id == 5
    assert Changes.merge([third, second]).next_job_id == 5  # None never overrides


def test_merge_of_one_batch_is_that_batch_and_of_none_is_empty() -> None:
    only = Changes((job_row(1),), (), 2)
    assert Changes.merge([only]) is only
    assert Changes.merge([]) == Changes()
    assert not Changes.merge([])
    assert not Changes()
    assert Changes(next_job_id=1)
    assert Changes(frames=(frame_row(1, 1, 0),))


# --------------------------------------------------------------------------- schema


def test_a_new_database_is_migrated_to_the_current_schema_in_wal_mode(
    store: SqliteStore, state: Path
) -> None:
    path = state / DATABASE_FILE
    assert store.path == path
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert pragma(path, "journal_mode") == "wal"
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert {"meta", "jobs", "frames"} <= tables


def test_an_existing_version_0_database_is_migrated(state: Path) -> None:
    state.mkdir()
    db = sqlite3.connect(state / DATABASE_FILE)
    db.execute("CREATE TABLE unrelated (x)")  # a valid database at user_version 0
    db.commit()
    db.close()
    assert pragma(state / DATABASE_FILE, "user_version") == 0

    store = SqliteStore(state)
    try:
        assert store.load() == Snapshot()
        store.commit(Changes((job_row(1),), (frame_row(1, 1, 0),), 2))
    finally:
        store.close()
    assert pragma(state / DATABASE_FILE, "user_version") == SCHEMA_VERSION


def test_a_current_database_opens_again_without_migrating(state: Path) -> None:
    make_database(state, jobs=3, frames=2)
    store = SqliteStore(state)
    try:
        assert len(store.load().jobs) == 3
    finally:
        store.close()
    assert pragma(state / DATABASE_FILE, "user_version") == SCHEMA_VERSION


# --------------------------------------------------------------------------- refusals


def test_a_database_from_a_newer_farmd_is_refused_and_left_alone(state: Path) -> None:
    make_database(state)
    db = sqlite3.connect(state / DATABASE_FILE)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = files(state)

    message = refuse(state)
    assert "newer farmd" in message
    assert f"schema {SCHEMA_VERSION + 1}" in message
    assert f"up to {SCHEMA_VERSION}" in message
    assert_unchanged(before, files(state))


def crash_image(tmp_path: Path, *, newer: bool = False) -> Path:
    """A state dir as `kill -9` leaves it: the last commits only in `farmd.db-wal`.

    Taken by copying the files while a store still holds them open (so nothing is
    checkpointed). With `newer`, the last commit is a newer farmd's schema bump."""
    live = tmp_path / "live"
    make_database(live)
    holder = SqliteStore(live)
    try:
        holder.commit(Changes((job_row(1000),), (frame_row(1000, 1, 0),), 1001))
        if newer:
            db = sqlite3.connect(live / DATABASE_FILE, isolation_level=None)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            db.close()  # not the last connection: no checkpoint
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for name in (DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm", LOCK_FILE):
            shutil.copy2(live / name, crashed / name)
    finally:
        holder.close()
    assert (crashed / f"{DATABASE_FILE}-wal").stat().st_size > 0
    return crashed


def test_a_newer_schema_in_the_wal_of_a_crashed_farmd_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    # A newer farmd bumped the schema and was killed: the bump is only in the WAL.
    crashed = crash_image(tmp_path, newer=True)
    before = files(crashed)

    message = refuse(crashed)
    assert "newer farmd" in message
    assert_unchanged(before, files(crashed))


def test_a_corrupt_database_with_a_wal_from_a_crash_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    # The supervisor was killed (its last commits are in the WAL), then a page of the
    # database was damaged. The WAL is the newest good data there is: a refusal must
    # neither delete it nor copy it into the damaged file.
    crashed = crash_image(tmp_path)
    clobber_middle_page(crashed / DATABASE_FILE)
    before = files(crashed)

    message = refuse(crashed)
    assert "corrupt" in message
    assert_unchanged(before, files(crashed))


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(state: Path) -> None:
    make_database(state)
    path = state / DATABASE_FILE
    path.write_bytes(random.Random(1).randbytes(path.stat().st_size))
    before = files(state)

    message = refuse(state)
    assert "corrupt or unreadable" in message
    assert "not a database" in message
    assert_unchanged(before, files(state))


def page_size(path: Path) -> int:
    return int(pragma(path, "page_size"))


def clobber_middle_page(path: Path) -> None:
    """Overwrite a whole page in the middle of the database file with garbage.

    quick_check verifies the structure of every b-tree page, not the bytes of the rows in
    them: garbage inside a row's payload goes unnoticed (SQLite's design, not farmd's).
    A whole page of garbage destroys the page's b-tree header, which it does detect."""
    size = page_size(path)
    pages = path.stat().st_size // size
    assert pages >= 6, pages
    with path.open("r+b") as handle:
        handle.seek(pages // 2 * size)
        handle.write(b"\xa5" * size)


def test_a_corrupt_page_in_the_middle_is_refused_and_left_alone(state: Path) -> None:
    make_database(state)
    clobber_middle_page(state / DATABASE_FILE)
    before = files(state)

    message = refuse(state)
    assert "corrupt" in message
    assert_unchanged(before, files(state))


def test_a_truncated_database_is_refused_and_left_alone(state: Path) -> None:
    make_database(state)
    path = state / DATABASE_FILE
    size = page_size(path)
    os.truncate(path, (path.stat().st_size // size // 2) * size)
    before = files(state)

    message = refuse(state)
    assert "corrupt" in message
    assert_unchanged(before, files(state))


def test_a_state_dir_held_by_another_store_is_refused_naming_its_pid(state: Path) -> None:
    first = SqliteStore(state)
    try:
        first.commit(Changes((job_row(1),), (frame_row(1, 1, 0),), 2))
        before = files(state)
        message = refuse(state)
        assert "in use by another running farmd supervisor" in message
        assert f"(pid {os.getpid()})" in message
        assert_unchanged(before, files(state))
        # the holder is unaffected
        first.commit(Changes((job_row(2),), (frame_row(2, 1, 0),), 3))
        assert first.load().next_job_id == 3
    finally:
        first.close()
    # once it let go, the dir opens again
    second = SqliteStore(state)
    try:
        assert [j.id for j in second.load().jobs] == [1, 2]
    finally:
        second.close()


def test_a_refused_state_dir_does_not_get_a_lock_file(state: Path) -> None:
    # A state dir copied without its lock file, holding a newer farmd's database.
    make_database(state)
    db = sqlite3.connect(state / DATABASE_FILE)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    (state / LOCK_FILE).unlink()
    before = files(state)

    refuse(state)
    assert_unchanged(before, files(state))


# --------------------------------------------------------------------------- restore


def through_store(directory: Path, batches: list[Changes], *, group: int = 1) -> Snapshot:
    """Commit `batches` (merged `group` at a time, as the group committer may) to a new
    store in `directory`, close it and load it from a fresh open."""
    store = SqliteStore(directory)
    try:
        for i in range(0, len(batches), group):
            store.commit(Changes.merge([c for c in batches[i : i + group] if c]))
    finally:
        store.close()
    reopened = SqliteStore(directory)
    try:
        return reopened.load()
    finally:
        reopened.close()


def test_busy_farm_has_every_kind_of_state() -> None:
    farm, _, running = busy_farm()
    states = {job["state"] for job in farm.core.jobs_page()["jobs"]}
    frame_states = {
        frame["state"]
        for job in farm.core.jobs_page()["jobs"]
        for frame in farm.core.job_view(job["id"])["frame_list"]
    }
    assert {"waiting", "running", "killed"} <= states, states
    assert frame_states == {"pending", "running", "complete", "failed", "killed"}
    assert running
    requeued = [
        frame
        for job in farm.core.jobs_page()["jobs"]
        for frame in farm.core.job_view(job["id"])["frame_list"]
        if frame["state"] == "pending" and frame["attempts"] > 0
    ]
    assert requeued, "no frame was requeued from a lost worker"


def test_a_worker_joining_a_restored_farm_gets_the_same_frames_and_order(tmp_path: Path) -> None:
    farm, _, _ = busy_farm()
    core = restored(through_store(tmp_path / "state", farm.changes))
    offered = 0
    for name, cluster, restrictions in [
        ("p1", "/show1/comp", ""),
        ("p2", "/show2/fx/sim", ""),
        ("p3", "/", "/show3 || /"),
    ]:
        probe = WorkerJoined(
            name=name, cluster=cluster, slots=1, restrictions=restrictions, now=farm.now()
        )
        assert starts(core.handle(probe)) == starts(farm.core.handle(probe))
        assert core.order_view(name, 100) == farm.core.order_view(name, 100)
        offered += len(core.order_view(name, 100))
    assert offered, "the probes saw empty queues: the comparison proved nothing"
    assert seen(core) == seen(farm.core)


def test_reclaiming_orphans_puts_exactly_the_running_frames_back(tmp_path: Path) -> None:
    farm, _, running = busy_farm()
    snapshot = through_store(tmp_path / "a", farm.changes)
    core = restored(snapshot)

    out = core.handle(ReclaimOrphans(now=farm.now()))
    assert sorted(out.result) == sorted(f"{s.job_id}:{s.frame}" for s in running)
    assert "unclaimed frames requeued" in notes(out)
    assert {(f.job_id, f.number) for f in out.changes.frames} == {
        (s.job_id, s.frame) for s in running
    }
    assert core.orphans == 0
    assert running_frames(core) == set()
    assert seen(core) == seen(restored(requeued_by_hand(snapshot)))

    # and that is durable: the reclaim's changes, committed, load as pending
    again = restored(through_store(tmp_path / "b", [*farm.changes, out.changes]))
    assert seen(again) == seen(core)
    assert again.orphans == 0


def test_reclaim_with_no_orphans_changes_nothing(tmp_path: Path) -> None:
    farm, _, _ = busy_farm()
    core = restored(through_store(tmp_path / "state", farm.changes))
    core.handle(ReclaimOrphans(now=farm.now()))
    out = core.handle(ReclaimOrphans(now=farm.now()))
    assert out.result == []
    assert not out.changes


def test_a_worker_returning_with_its_frame_keeps_it_and_completes_it(tmp_path: Path) -> None:
    farm, _, running = busy_farm()
    core = restored(through_store(tmp_path / "state", farm.changes))
    mine = [s for s in running if s.worker == "w1"]
    assert mine
    held = tuple((s.job_id, s.frame, s.attempt) for s in mine)

    out = core.handle(
        WorkerJoined(name="w1", cluster="/show1/comp", slots=2, running=held, now=farm.now())
    )
    assert stops(out) == []
    assert starts(out) == []  # both slots are taken by the frames it kept
    assert "unclaimed frames requeued" not in notes(out)
    assert core.orphans == len(running) - len(mine)
    for start in mine:
        view = frame_of(core, start.job_id, start.frame)
        assert (view["state"], view["worker"], view["attempts"]) == (
            "running",
            "w1",
            start.attempt,
        )
    # the grace period's end leaves them alone
    reclaimed = core.handle(ReclaimOrphans(now=farm.now())).result
    assert not {f"{s.job_id}:{s.frame}" for s in mine} & set(reclaimed)
    # its results complete the frames, on that worker, with that attempt
    for start in mine:
        out = core.handle(result(start, farm.now()))
        row = row_of(out.changes, start.job_id, start.frame)
        assert (row.state, row.worker, row.attempts) == ("complete", "w1", start.attempt)


def test_a_worker_returning_without_its_frame_gets_it_requeued_at_once(tmp_path: Path) -> None:
    farm, _, running = busy_farm()
    core = restored(through_store(tmp_path / "state", farm.changes))
    mine = [s for s in running if s.worker == "w1"]
    assert mine
    # It comes back with nothing running (its host rebooted), admitting nothing, so the
    # requeued frames stay pending where a test can see them.
    out = core.handle(
        WorkerJoined(
            name="w1", cluster="/show1/comp", slots=2, restrictions="/nowhere", now=farm.now()
        )
    )
    assert "unclaimed frames requeued" in notes(out)
    assert core.orphans == len(running) - len(mine)
    for start in mine:
        view = frame_of(core, start.job_id, start.frame)
        assert (view["state"], view["attempts"], view["started_at"]) == (
            "pending",
            start.attempt,
            None,
        )
        assert (start.job_id, start.frame) in {(f.job_id, f.number) for f in out.changes.frames}


def test_a_worker_returning_without_its_frame_runs_the_next_attempt(tmp_path: Path) -> None:
    farm, _, running = busy_farm()
    core = restored(through_store(tmp_path / "state", farm.changes))
    mine = sorted((s for s in running if s.worker == "w1"), key=lambda s: (s.job_id, s.frame))
    out = core.handle(WorkerJoined(name="w1", cluster="/show1/comp", slots=2, now=farm.now()))
    again = {(s.job_id, s.frame): s.attempt for s in starts(out)}
    rerun = [s for s in mine if (s.job_id, s.frame) in again]
    assert rerun, "w1 took none of its requeued frames"
    for start in rerun:
        assert again[(start.job_id, start.frame)] == start.attempt + 1


def test_a_stale_result_after_restart_is_ignored_and_logged(tmp_path: Path) -> None:
    # w1's frame is reclaimed after the grace period and runs again on w4 (attempt + 1).
    # w1 then returns still holding the old attempt: it is told to stop it, and its
    # result is ignored; the frame completes once, with w4's result.
    farm, _, running = busy_farm()
    core = restored(through_store(tmp_path / "state", farm.changes))
    (old, *_) = sorted((s for s in running if s.worker == "w1"), key=lambda s: s.job_id)
    core.handle(ReclaimOrphans(now=farm.now()))
    out = core.handle(WorkerJoined(name="w4", cluster="/show1/comp", slots=8, now=farm.now()))
    (new,) = [s for s in starts(out) if (s.job_id, s.frame) == (old.job_id, old.frame)]
    assert new.attempt == old.attempt + 1

    held = ((old.job_id, old.frame, old.attempt),)
    out = core.handle(
        WorkerJoined(
            name="w1", cluster="/show1/comp", slots=1, restrictions="/nowhere", running=held,
            now=farm.now(),
        )
    )  # fmt: skip
    assert stops(out) == [
        KillOnWorker(worker="w1", job_id=old.job_id, frame=old.frame, attempt=old.attempt)
    ]
    out = core.handle(result(old, farm.now()))
    assert "stale result ignored" in notes(out)
    assert not out.changes
    out = core.handle(result(new, farm.now()))
    row = row_of(out.changes, old.job_id, old.frame)
    assert (row.state, row.worker, row.attempts) == ("complete", "w4", new.attempt)
    out = core.handle(result(new, farm.now()))  # repeated until acknowledged: harmless
    assert "stale result ignored" in notes(out)
    assert not out.changes


def test_a_worker_returning_after_the_grace_period_readopts_a_pending_frame(
    tmp_path: Path,
) -> None:
    # The frame went back to pending, but no one took it before w1 returned with it.
    farm, _, running = busy_farm()
    core = restored(through_store(tmp_path / "state", farm.changes))
    mine = [s for s in running if s.worker == "w1"]
    core.handle(ReclaimOrphans(now=farm.now()))
    held = tuple((s.job_id, s.frame, s.attempt) for s in mine)
    out = core.handle(
        WorkerJoined(name="w1", cluster="/show1/comp", slots=2, running=held, now=farm.now())
    )
    assert stops(out) == []
    assert notes(out).count("frame readopted") == len(mine)
    for start in mine:
        view = frame_of(core, start.job_id, start.frame)
        assert (view["state"], view["worker"], view["attempts"]) == ("running", "w1", start.attempt)


# --------------------------------------------------------------------------- random farms


# --------------------------------------------------------------------------- rank fields


@PROPERTY_SETTINGS
@given(
    cluster=cluster_paths(),
    restrictions=restriction_texts(),
    patterns=pattern_texts(),
    priority=st.integers(1, 99_999),
)
def test_rank_fields_survive_the_store_exactly(
    cluster: str, restrictions: str, patterns: str, priority: int
) -> None:
    farm = Recorder()
    job_id = farm(
        SubmitJob(
            argv=("x",),
            cluster=cluster,
            restrictions=restrictions,
            cross_cluster=patterns,
            priority=priority,
            now=farm.now(),
        )
    ).result
    with tempfile.TemporaryDirectory() as directory:
        core = restored(through_store(Path(directory) / "state", farm.changes))
    assert core.dispatch.index.get(job_id) == farm.core.dispatch.index.get(job_id)
    assert core.job_view(job_id) == farm.core.job_view(job_id)


def test_a_version_1_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    import sqlite3

    from farmd.store import MIGRATIONS

    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "farmd.db")
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version=1;")
    db.execute("INSERT INTO jobs VALUES (1, 'old', '/show1', 5, '', '', '[\"true\"]', '[]', 1.5)")
    db.execute("INSERT INTO frames VALUES (1, 1, 0, 'pending', NULL, 0, NULL, NULL, NULL)")
    db.execute("INSERT INTO meta VALUES ('next_job_id', '2')")
    db.commit()
    db.close()
    store = SqliteStore(state)
    try:
        snapshot = store.load()
    finally:
        store.close()
    (job,) = snapshot.jobs
    (frame,) = snapshot.frames
    assert (job.name, job.cluster, job.priority, job.retries, job.instances) == (
        "old",
        "/show1",
        5,
        0,
        0,
    )
    assert (frame.state, frame.failures, frame.retry_at) == ("pending", 0, None)
    check = sqlite3.connect(state / "farmd.db")
    assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    check.close()
