"""What is the PostgreSQL store's own (the contract it shares with SQLite is
`test_store_contract`'s): its schema matches SQLite's; a newer schema is refused and left
alone; supervisors opening a fresh database at once migrate it once; fencing by epoch
(a commit in flight holds the epoch, a deposed store writes nothing); shared secrets;
one-line refusals that name the URL with its password masked; reads that reconnect.

Every test has a database of its own (`postgres_url`), made and dropped on the local
server. Waits are bounded: a thread that must block is seen blocked in `pg_locks` (or
`pg_stat_activity`) before the test goes on, within `WAIT` seconds.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from farmd.rows import Changes, Snapshot
from farmd.store import DATABASE_FILE, SqliteStore, StoreError
from farmd.store_postgres import (
    MIGRATION_LOCK,
    POSTGRES_MIGRATIONS,
    POSTGRES_SCHEMA_VERSION,
    Deposed,
    PostgresStore,
    describe_url,
)
from tests.pg_support import SERVER, fresh_database
from tests.restore_support import frame_row, job_row, user

WAIT = 10.0  # seconds a bounded wait may take before the test fails


@pytest.fixture
def opened(postgres_url: str) -> Iterator[Callable[[], PostgresStore]]:
    """Opens stores on the test's database; each is closed at the end."""
    stores: list[PostgresStore] = []

    def open_store() -> PostgresStore:
        stores.append(PostgresStore(postgres_url))
        return stores[-1]

    try:
        yield open_store
    finally:
        for store in stores:
            store.close()


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own, committed; its rows, if any."""
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(statement, params)  # type: ignore[arg-type]  # tests' own SQL
        return cursor.fetchall() if cursor.description else []


def contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every farm table, in order: to show that nothing changed."""
    tables = ("meta", "jobs", "frames", "users", "worker_tokens", "audit")
    return {table: sql(url, f"SELECT * FROM {table} ORDER BY 1, 2") for table in tables}


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT} s for {what}")
        time.sleep(0.01)


def waiting_on_locks(url: str) -> int:
    """How many sessions of `url`'s database wait for a lock now."""
    rows = sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'",
    )
    return int(rows[0][0])


class Worker(threading.Thread):
    """Runs `call` in a thread, keeping its result or its exception."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> object:
        self.join(WAIT)
        assert not self.is_alive(), f"{self.call} still runs after {WAIT} s"
        if self.error is not None:
            raise self.error
        return self.result


# --------------------------------------------------------------------------- schema


def test_the_schema_has_sqlites_tables_and_columns_and_no_epoch(
    opened: Callable[[], PostgresStore], postgres_url: str, tmp_path: Path
) -> None:
    opened()
    SqliteStore(tmp_path).close()
    lite = sqlite3.connect(tmp_path / DATABASE_FILE)
    try:
        tables = [
            name
            for (name,) in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        columns = {t: [row[1] for row in lite.execute(f"PRAGMA table_info({t})")] for t in tables}
        indexes = {
            name
            for (name,) in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    finally:
        lite.close()
    found = sql(
        postgres_url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    )
    pg_columns: dict[str, list[str]] = {}
    for table, column in found:
        pg_columns.setdefault(table, []).append(column)
    # and one table of its own: the supervisors sharing the database (farmd status)
    assert pg_columns.pop("supervisors") == [
        "address",
        "role",
        "epoch",
        "pid",
        "host",
        "started_at",
        "seen_at",
    ]
    # and the release bundles, which SQLite keeps as files (farmd.supervisor.shelf)
    assert pg_columns.pop("bundles") == ["digest", "size", "bytes"]
    assert pg_columns == columns
    pg_indexes = {name for (name,) in sql(postgres_url, "SELECT indexname FROM pg_indexes")}
    assert indexes <= pg_indexes
    assert sql(postgres_url, "SELECT key, value FROM meta") == [
        ("schema_version", str(POSTGRES_SCHEMA_VERSION))
    ]


def test_a_database_from_a_newer_farmd_is_refused_and_left_alone(
    opened: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store = opened()
    store.commit(Changes((job_row(1),), (frame_row(1, 1, 0),), 2, users=(user("bob"),)))
    store.close()
    newer = POSTGRES_SCHEMA_VERSION + 1
    sql(postgres_url, "UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(newer),))
    before = contents(postgres_url)
    with_password = postgres_url.replace("postgres@", "postgres:hunter2@")  # trust: ignored

    with pytest.raises(StoreError) as caught:
        PostgresStore(with_password)
    message = str(caught.value)
    assert "\n" not in message
    assert "hunter2" not in message
    assert describe_url(with_password) in message
    assert "postgres:***@" in message
    assert f"schema {newer}" in message
    assert f"up to {POSTGRES_SCHEMA_VERSION}" in message
    assert "nothing was changed" in message
    assert contents(postgres_url) == before


def test_a_schema_1_database_gains_the_bundles_table_and_keeps_its_rows(
    postgres_url: str,
) -> None:
    # a farm database as a farmd of schema 1 left it: its tables, its rows, no bundles
    with psycopg.connect(postgres_url, autocommit=True) as db, db.transaction():
        db.execute(POSTGRES_MIGRATIONS[0])
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', '1'), ('next_job_id', '7')"
        )
    store = PostgresStore(postgres_url)
    try:
        assert store.load().next_job_id == 7
        store.keep_bundle("sha256:" + "ab" * 32, b"bundle")
        assert store.read_bundle("sha256:" + "ab" * 32) == b"bundle"
    finally:
        store.close()
    assert POSTGRES_SCHEMA_VERSION == 2
    assert sql(postgres_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]


def test_supervisors_opening_a_fresh_database_at_once_migrate_it_once(postgres_url: str) -> None:
    # Hold the migration lock so that both stores wait at the same point, then let go:
    # without the lock, both would create the tables and one would fail.
    blocker = psycopg.connect(postgres_url)
    try:
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        workers = [Worker(lambda: PostgresStore(postgres_url)) for _ in range(2)]
        for worker in workers:
            worker.start()
        wait_until(lambda: waiting_on_locks(postgres_url) == 2, "both stores to wait")
        blocker.rollback()
        stores = [worker.outcome() for worker in workers]
    finally:
        blocker.close()
    try:
        first, second = stores
        assert isinstance(first, PostgresStore)
        assert isinstance(second, PostgresStore)
        first.commit(Changes((job_row(1),), (), 2))
        assert second.load().jobs == (job_row(1),)  # one farm, whichever opened it
    finally:
        for store in stores:
            if isinstance(store, PostgresStore):
                store.close()
    assert sql(postgres_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(POSTGRES_SCHEMA_VERSION),)
    ]


def test_users_load_in_code_point_order_under_a_locale_collation() -> None:
    # A database whose default collation is a language's (not "C", as on this server)
    # would sort "Zoë" after "bob"; SQLite, and so the snapshot, sort by code point.
    names = ("bob", "Zoë", "alice", "_x", "Ärger")
    with fresh_database("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' TEMPLATE template0") as url:
        store = PostgresStore(url)
        try:
            store.commit(Changes(users=tuple(user(name) for name in names)))
            assert [u.name for u in store.load().users] == sorted(names)
        finally:
            store.close()


# --------------------------------------------------------------------------- fencing


def test_a_fenced_store_commits_under_its_epoch_and_nothing_once_deposed(
    opened: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store = opened()
    store.fence(1)
    with pytest.raises(Deposed) as caught:  # no epoch yet: not this store's
        store.commit(Changes((job_row(1),), (), 2))
    assert "the farm's epoch is now unset, this supervisor's was 1" in str(caught.value)

    store = opened()
    sql(postgres_url, "INSERT INTO meta (key, value) VALUES ('epoch', '1')")
    store.fence(1)
    store.commit(Changes((job_row(1),), (frame_row(1, 1, 0),), 2))
    kept = Snapshot((job_row(1),), (frame_row(1, 1, 0),), 2)
    assert opened().load() == kept  # the epoch row is not the snapshot's

    sql(postgres_url, "UPDATE meta SET value = '2' WHERE key = 'epoch'")  # another took over
    before = contents(postgres_url)
    with pytest.raises(Deposed) as caught:
        store.commit(Changes((job_row(2),), (frame_row(2, 1, 0),), 3, users=(user("x"),)))
    assert str(caught.value) == (
        "this supervisor was deposed: the farm's epoch is now 2, this supervisor's was 1; "
        "it writes nothing more"
    )
    assert isinstance(caught.value, StoreError)
    assert contents(postgres_url) == before
    sql(postgres_url, "UPDATE meta SET value = '1' WHERE key = 'epoch'")
    with pytest.raises(Deposed):  # once deposed, for good
        store.commit(Changes(next_job_id=9))
    assert contents(postgres_url)["jobs"] == before["jobs"]

    unfenced = opened()  # `farmd store migrate`, tests: no epoch asked
    unfenced.commit(Changes((job_row(2),), (), 3))
    assert [job.id for job in opened().load().jobs] == [1, 2]


def test_an_epoch_bump_waits_for_a_commit_in_flight(
    opened: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store = opened()
    sql(postgres_url, "INSERT INTO meta (key, value) VALUES ('epoch', '1'), ('next_job_id', '1')")
    store.fence(1)
    # Another session holds the next_job_id row: a commit that writes it gets as far as
    # holding the epoch (FOR SHARE) and then waits, in flight.
    blocker = psycopg.connect(postgres_url)
    bumper = psycopg.connect(postgres_url, autocommit=True)
    try:
        blocker.execute("SELECT value FROM meta WHERE key = 'next_job_id' FOR UPDATE")
        commit = Worker(lambda: store.commit(Changes((job_row(1),), (), 5)))
        commit.start()
        wait_until(lambda: waiting_on_locks(postgres_url) == 1, "the commit to wait")
        bump = Worker(lambda: bumper.execute("UPDATE meta SET value = '2' WHERE key = 'epoch'"))
        bump.start()
        wait_until(lambda: waiting_on_locks(postgres_url) == 2, "the bump to wait")
        assert bump.is_alive()  # the epoch cannot move while the commit is in flight
        blocker.rollback()
        commit.outcome()  # the commit began under epoch 1: it completes
        bump.outcome()
    finally:
        blocker.close()
        bumper.close()
    assert opened().load().jobs == (job_row(1),)
    assert opened().load().next_job_id == 5
    with pytest.raises(Deposed):  # and after the bump, nothing more
        store.commit(Changes((job_row(2),), (), 6))
    assert opened().meta_value("epoch") == "2"


def test_bundles_are_kept_read_and_dropped_under_the_epoch(
    opened: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store, other = opened(), opened()
    digest = "sha256:" + "ab" * 32
    assert store.read_bundle(digest) is None
    store.drop_bundle(digest)  # none there: nothing done
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    store.keep_bundle(digest, data)
    store.keep_bundle(digest, data)  # a digest names its bytes: kept once
    assert other.read_bundle(digest) == data  # another supervisor's store reads it
    assert sql(postgres_url, "SELECT digest, size FROM bundles") == [(digest, len(data))]
    assert store.bundle_digests() == [digest]
    store.drop_bundle(digest)
    assert other.read_bundle(digest) is None

    sql(postgres_url, "INSERT INTO meta (key, value) VALUES ('epoch', '1')")
    store.fence(1)
    store.keep_bundle(digest, b"one")
    sql(postgres_url, "UPDATE meta SET value = '2' WHERE key = 'epoch'")  # another took over
    with pytest.raises(Deposed, match="the farm's epoch is now 2, this supervisor's was 1"):
        store.keep_bundle("sha256:" + "cd" * 32, b"two")
    with pytest.raises(Deposed):
        store.drop_bundle(digest)
    with pytest.raises(Deposed):  # and its commits too: deposed for good
        store.commit(Changes(next_job_id=9))
    assert sql(postgres_url, "SELECT digest, bytes FROM bundles") == [(digest, b"one")]
    assert store.read_bundle(digest) == b"one"  # reads are not fenced


def test_a_bundle_is_kept_while_a_commit_waits(
    opened: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store = opened()
    sql(postgres_url, "INSERT INTO meta (key, value) VALUES ('epoch', '1'), ('next_job_id', '1')")
    store.fence(1)
    blocker = psycopg.connect(postgres_url)
    try:
        blocker.execute("SELECT value FROM meta WHERE key = 'next_job_id' FOR UPDATE")
        commit = Worker(lambda: store.commit(Changes((job_row(1),), (), 5)))
        commit.start()
        wait_until(lambda: waiting_on_locks(postgres_url) == 1, "the commit to wait")
        # an upload's bundle (up to 64 MiB) goes on a connection of its own: it neither
        # waits for the group commit nor makes it wait
        keep = Worker(lambda: store.keep_bundle("sha256:" + "ab" * 32, b"bundle"))
        keep.start()
        keep.outcome()
        assert commit.is_alive()
        blocker.rollback()
        commit.outcome()
    finally:
        blocker.close()
    assert opened().read_bundle("sha256:" + "ab" * 32) == b"bundle"
    assert opened().load().jobs == (job_row(1),)


def test_a_shared_secret_is_made_once_for_every_store(
    opened: Callable[[], PostgresStore],
) -> None:
    first, second = opened(), opened()
    assert first.shared_secret("token", lambda: "made-by-first") == "made-by-first"
    assert second.shared_secret("token", lambda: "made-by-second") == "made-by-first"
    assert second.shared_secret("user_token", lambda: "u2") == "u2"
    assert first.meta_value("secret:user_token") == "u2"
    assert first.meta_value("no-such-key") is None
    assert first.load() == Snapshot()  # secrets are not the snapshot's


# --------------------------------------------------------------------------- failures


def test_an_unreachable_server_is_one_line_naming_the_url() -> None:
    url = "postgresql://postgres:hunter2@127.0.0.1:1/farm"  # nothing listens on port 1
    with pytest.raises(StoreError) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot reach the farm database postgresql://postgres:***@127.0.0.1:1/farm: "
    ), message
    assert "Connection refused" in message
    assert "hunter2" not in message


def test_what_is_not_a_postgresql_url_is_refused() -> None:
    with pytest.raises(StoreError, match="not a PostgreSQL URL: sqlite:/var/farm"):
        PostgresStore("sqlite:/var/farm")
    with pytest.raises(StoreError, match="cannot reach the farm database postgresql://"):
        PostgresStore(f"postgresql://{SERVER}/farm?no_such_option=1")


def test_reads_reconnect_after_the_server_dropped_the_session_and_writes_fail(
    opened: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store = opened()
    store.commit(Changes((job_row(1, retired_at=1.0, summary='{"id": 1}'),), (), 2))
    assert store.history(10, None) == [{"id": 1}]
    sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE 'farmd store %%'",
    )
    assert store.history(10, None) == [{"id": 1}]  # a new session
    with pytest.raises(StoreError) as caught:  # the supervisor stops: a standby resumes
        store.commit(Changes(next_job_id=3))
    message = str(caught.value)
    assert message.startswith(f"cannot write the farm database {postgres_url}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@db:5432/farm", "postgresql://u:***@db:5432/farm"),
        ("postgresql://u@db/farm", "postgresql://u@db/farm"),
        ("postgresql://db/farm?password=secret&sslmode=require",
         "postgresql://db/farm?password=***&sslmode=require"),
        ("postgresql://u:p%40ss@db/farm?PASSWORD=x", "postgresql://u:***@db/farm?PASSWORD=***"),
        ("host=db password='a b' dbname=farm", "host=db password=*** dbname=farm"),
    ],
)  # fmt: skip
def test_describe_url_masks_the_password(url: str, shown: str) -> None:
    assert describe_url(url) == shown
