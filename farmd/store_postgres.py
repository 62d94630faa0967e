"""The PostgreSQL store: the farm's rows in a database several supervisors share.

Theory of operation
-------------------
`PostgresStore` keeps exactly the rows `SqliteStore` keeps, in the same tables and
columns (SQLite's schema 9, in PostgreSQL's types), read and written through the row
mapping `farmd.store` shares (`job_values`, `job_from`, `frame_values`, ...), so a farm
loads the same `Snapshot` from either and `farmd store migrate` copies one into the
other row for row. It stands behind the same `Store` protocol: the supervisor's group
committer calls `commit` from a worker thread with everything that accumulated while
the last commit ran, and lets nothing out before it returns. A commit is one
transaction of whole-row upserts (`INSERT ... ON CONFLICT DO UPDATE`, last row wins, as
merging batches assumes), one statement per table that reads all of the batch's rows
from one JSON parameter (`_Table`), sent as a pipeline: a batch of hundreds of rows
costs about one round trip to the server, not one per row. psycopg 3 is used
synchronously (its async mode is asyncio's, and the supervisor runs trio) and imported
only here, when a farm uses PostgreSQL. Reads (history, recall, audit, `load`) run on a
second connection under a lock of their own, each in a read-only transaction that
starts after the last commit returned, so it sees that commit.

The schema is versioned by the `meta` row `schema_version` and migrated forward on open
(`POSTGRES_MIGRATIONS`; the first entry creates the whole schema), in one transaction
that holds a transaction-level advisory lock (`MIGRATION_LOCK`), so supervisors opening
a fresh database at once migrate it once between them. A database from a newer farmd
is refused, and the refusal changes nothing (the transaction rolls back).

Fencing. Several supervisors may point at one database; an election outside this
module (a session advisory lock) makes one active and bumps the `meta` row `epoch`,
then tells that supervisor's store its epoch (`fence`). From then on every commit
first reads the epoch row `FOR SHARE` and goes on only if it is still this store's:
a bump (an `UPDATE` of that row) waits for a commit in flight to end, and any commit
after the bump sees the new epoch, rolls back and raises `Deposed`. So a supervisor
that was deposed while it was paused or cut off never writes another row. Before
`fence`, commits are unfenced (`farmd store migrate`, tests).

Release bundles. SQLite's supervisor keeps them as files in its state dir; here they
are rows of their own (`bundles`: digest, size, bytes), written by `keep_bundle` once an
upload is verified and before the release is known, and deleted by `drop_bundle` once
a removed release's commit is durable, each in a transaction fenced like a commit, on
a writing connection of its own (a bundle of 64 MiB takes about half a second to
write, which the group commits do not wait for). So a standby that takes over serves
every release the farm knows (`read_bundle`, on the reading connection), caching each
in its own state dir (`farmd.supervisor.shelf`).

The farm's shared secrets (the farm and user tokens every supervisor must agree on)
are `meta` rows `secret:NAME` (`shared_secret`); `load` ignores meta keys it does not
know, such as these and the epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, LiteralString, TypeVar

import attrs

from farmd.rows import Changes, Snapshot, UserRow, WorkerTokenRow
from farmd.store import (
    AUDIT_COLUMNS,
    FRAME_COLUMNS,
    FRAME_SELECT,
    JOB_COLUMNS,
    JOB_SELECT,
    TOKEN_COLUMNS,
    TOKEN_SELECT,
    USER_COLUMNS,
    USER_SELECT,
    StoreError,
    family_sql,
    frame_from,
    frame_values,
    job_from,
    job_values,
    recalled,
    snapshot_of,
    stored_summary,
)

if TYPE_CHECKING:
    import psycopg

    from farmd.store_warm import WarmRows

    _Connection = psycopg.Connection[tuple[Any, ...]]

_T = TypeVar("_T")

URL_SCHEMES: Final = ("postgresql://", "postgres://")
# The key of the transaction-level advisory lock a schema migration holds (any fixed
# 64-bit number no other user of the database takes: "farmd" in ASCII, then 1).
MIGRATION_LOCK: Final = 0x6661726D6401
# Seconds to wait for the server when the URL does not say (libpq would wait forever).
CONNECT_TIMEOUT: Final = 10

# Each entry migrates from version i to i + 1; the schema version is their number. The
# first creates SQLite's schema 9 as a whole: the same tables, columns and indexes; the
# second adds the release bundles, which SQLite keeps as files beside its database.
# a writer session left inside a transaction this long is ended by the server (ms)
STUCK_TRANSACTION_MS: Final = 5000

POSTGRES_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        cluster TEXT NOT NULL,
        priority BIGINT NOT NULL,
        restrictions TEXT NOT NULL,
        patterns TEXT NOT NULL,
        argv TEXT NOT NULL,
        depends_on TEXT NOT NULL,
        submitted_at DOUBLE PRECISION NOT NULL,
        instances BIGINT NOT NULL DEFAULT 0,
        retries BIGINT NOT NULL DEFAULT 0,
        retry_delay DOUBLE PRECISION NOT NULL DEFAULT 0,
        time_limit DOUBLE PRECISION NOT NULL DEFAULT 0,
        chunk BIGINT NOT NULL DEFAULT 1,
        parent BIGINT,
        uninterruptible BIGINT NOT NULL DEFAULT 0,
        waiting_on TEXT,
        type TEXT,
        requires TEXT NOT NULL DEFAULT '',
        reserve TEXT NOT NULL DEFAULT '',
        frames TEXT,
        request_key TEXT,
        request_digest TEXT NOT NULL DEFAULT '',
        retired_at DOUBLE PRECISION,
        summary TEXT,
        owner TEXT NOT NULL DEFAULT '',
        env TEXT NOT NULL DEFAULT '[]',
        release TEXT,
        params TEXT NOT NULL DEFAULT '{}',
        notify TEXT NOT NULL DEFAULT '',
        started_at DOUBLE PRECISION,
        ended_at DOUBLE PRECISION
    );
    CREATE INDEX jobs_retired ON jobs (retired_at) WHERE retired_at IS NOT NULL;
    CREATE INDEX jobs_parent ON jobs (parent) WHERE parent IS NOT NULL;
    CREATE INDEX jobs_request_key ON jobs (request_key) WHERE request_key IS NOT NULL;
    CREATE TABLE frames (
        job_id BIGINT NOT NULL REFERENCES jobs (id),
        number BIGINT NOT NULL,
        position BIGINT NOT NULL,
        state TEXT NOT NULL,
        worker TEXT,
        attempts BIGINT NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        exit_code BIGINT,
        failures BIGINT NOT NULL DEFAULT 0,
        failed_on TEXT,
        retry_at DOUBLE PRECISION,
        members TEXT,
        stopped BIGINT NOT NULL DEFAULT 0,
        taken TEXT,
        PRIMARY KEY (job_id, number)
    );
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        clusters TEXT,
        salt TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    );
    CREATE TABLE audit (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        who TEXT NOT NULL,
        "user" TEXT NOT NULL,
        peer TEXT NOT NULL,
        request TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        job_ids TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE TABLE worker_tokens (
        id BIGINT PRIMARY KEY,
        hosts TEXT NOT NULL,
        clusters TEXT,
        salt TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    );
    -- the supervisors sharing this database, for `farmd status` (farmd.supervisor.election):
    -- each refreshes its own row; times are the database's clock
    CREATE TABLE supervisors (
        address TEXT PRIMARY KEY,     -- HOST:PORT, as it advertises itself
        role TEXT NOT NULL,           -- active or standby
        epoch BIGINT,                 -- the active one's; NULL for a standby
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: release bundles (the .tar.gz of each release, by its digest), so that whichever
    # supervisor is active serves them (`keep_bundle`); SQLite keeps them as files
    """
    CREATE TABLE bundles (
        digest TEXT PRIMARY KEY,      -- sha256:HEX of its bytes
        size BIGINT NOT NULL,
        bytes BYTEA NOT NULL
    );
    ALTER TABLE bundles ALTER COLUMN bytes SET STORAGE EXTERNAL;  -- compressed already
    """,
)
POSTGRES_SCHEMA_VERSION = len(POSTGRES_MIGRATIONS)


class Deposed(StoreError):
    """Another supervisor became active (the farm's epoch moved on): this one must stop."""

    code = "deposed"


def describe_url(url: str) -> str:
    """`url` as messages and logs show it: its password, if it has one, masked."""
    masked = re.sub(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", r"\1***", url)
    parts = urllib.parse.urlsplit(masked)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return masked


def one_line(exc: BaseException) -> str:
    """A driver's message (libpq's span lines and tabs) as one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


@attrs.frozen
class _Table:
    """How a commit writes one table's rows: all of a batch's in one statement, which
    reads them from a JSON array of objects (`json_populate_recordset` types each value
    by the table's own column). psycopg would pipeline an `executemany`, but that costs
    the committer's thread (holding the GIL, beside the event loop) about twice the
    time per row. Upserts are whole-row: every column but the key replaced, last row
    wins; a statement may not touch a row twice, so a batch's rows are first reduced to
    the last of each key (the key is each row's first `key` values)."""

    name: str
    columns: tuple[str, ...]
    key: int  # how many leading columns are the primary key; 0: appended, never replaced
    statement: str = attrs.field(init=False)

    @statement.default
    def _statement(self) -> str:
        names = ", ".join(self.columns)
        text = (
            f"INSERT INTO {self.name} ({names}) SELECT {names}"
            f" FROM json_populate_recordset(NULL::{self.name}, %s::json)"
        )
        if self.key:
            keys = ", ".join(self.columns[: self.key])
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns[self.key :])
            text += f" ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        return text

    def write(self, cursor: psycopg.Cursor[tuple[Any, ...]], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        names = [column.strip('"') for column in self.columns]
        objects: Iterable[dict[str, Any]]
        if self.key:
            last = {row[: self.key]: row for row in rows}
            objects = [dict(zip(names, row, strict=True)) for row in last.values()]
        else:
            objects = [dict(zip(names, row, strict=True)) for row in rows]
        try:
            document = json.dumps(objects, allow_nan=False)
        except ValueError:
            # a float that JSON cannot spell: as a string, which PostgreSQL reads
            document = json.dumps([{k: _spelled(v) for k, v in o.items()} for o in objects])
        cursor.execute(self.statement, (document,))


def _spelled(value: Any) -> Any:
    """An infinite or NaN float as the name PostgreSQL's float input reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


_JOBS = _Table("jobs", JOB_COLUMNS, key=1)
_FRAMES = _Table("frames", FRAME_COLUMNS, key=2)
_USERS = _Table("users", USER_COLUMNS, key=1)
_AUDIT = _Table("audit", AUDIT_COLUMNS, key=0)
_WORKER_TOKENS = _Table("worker_tokens", TOKEN_COLUMNS, key=1)
_META = _Table("meta", ("key", "value"), key=1)
_META_SELECT = "SELECT key, value FROM meta"
_EPOCH_FOR_SHARE = "SELECT value FROM meta WHERE key = 'epoch' FOR SHARE"


class PostgresStore:
    """The farm's rows in PostgreSQL, at `url` (`postgresql://...`; see module docs)."""

    keeps_history = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = describe_url(url)  # the url as messages name it
        if not url.startswith(URL_SCHEMES):
            msg = f"not a PostgreSQL URL: {self.where} (postgresql://USER@HOST:PORT/DATABASE)"
            raise StoreError(msg)
        self._epoch: int | None = None  # None: unfenced
        self._deposed = ""  # once deposed, why: no commit is tried again
        self._writing = threading.Lock()
        self._bundling = threading.Lock()  # the bundles' writes (`_fenced`)
        self._bundle_db: _Connection | None = None
        self._reading = threading.Lock()
        self._db = self._connect()
        try:
            self._migrate()
            self._reader: _Connection | None = self._connect(reader=True)
        except BaseException:
            self._db.close()
            raise

    def _connect(self, *, reader: bool = False) -> _Connection:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = conninfo_to_dict(self.url)
            # named with the pid: `pg_stat_activity` (and a test) tell whose session it is
            defaults: dict[str, Any] = {"application_name": f"farmd store {os.getpid()}"}
            if "connect_timeout" not in given:
                defaults["connect_timeout"] = CONNECT_TIMEOUT
            db = psycopg.connect(
                self.url, autocommit=False, **{k: v for k, v in defaults.items() if k not in given}
            )
        except psycopg.Error as exc:
            msg = f"cannot reach the farm database {self.where}: {one_line(exc)}"
            raise StoreError(msg) from None
        if reader:
            # one snapshot per read: a recall's family and its frames agree
            db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            db.read_only = True
        else:
            try:
                # a supervisor paused inside a commit (SIGSTOP, a hung host) must not hold
                # the epoch row against a standby's takeover: the server ends the session
                db.execute(f"SET idle_in_transaction_session_timeout = {STUCK_TRANSACTION_MS}")
                db.commit()
            except psycopg.Error as exc:
                db.close()
                msg = f"cannot use the farm database {self.where}: {one_line(exc)}"
                raise StoreError(msg) from None
        return db

    def _migrate(self) -> None:
        import psycopg

        db = self._db
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                version = self._schema_version()
                if version > POSTGRES_SCHEMA_VERSION:
                    msg = (
                        f"the farm database {self.where} was written by a newer farmd "
                        f"(schema {version}; this farmd knows up to "
                        f"{POSTGRES_SCHEMA_VERSION}); nothing was changed"
                    )
                    raise StoreError(msg)
                for target in range(version, POSTGRES_SCHEMA_VERSION):
                    db.execute(POSTGRES_MIGRATIONS[target])
                    _META.write(db.cursor(), [("schema_version", str(target + 1))])
        except psycopg.Error as exc:
            msg = f"cannot open the farm database {self.where}: {one_line(exc)}"
            raise StoreError(msg) from None

    def _schema_version(self) -> int:
        """The database's schema version: 0 for one without farmd's tables."""
        db = self._db
        (table,) = db.execute("SELECT to_regclass('meta')").fetchone() or (None,)
        if table is None:
            return 0
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        text = str(row[0]) if row else ""
        if not text.isdigit():
            msg = (
                f"the farm database {self.where} has a meta table without a readable "
                f"schema_version ({text[:40]!r}); nothing was changed"
            )
            raise StoreError(msg)
        return int(text)

    # ------------------------------------------------------------------ writing

    def fence(self, epoch: int) -> None:
        """From now on, commit only while the farm's epoch (the `meta` row `epoch`) is
        `epoch`, and raise `Deposed` once it is not (see module docs)."""
        self._epoch = epoch

    def commit(self, changes: Changes) -> None:
        import psycopg

        with self._writing:
            if self._deposed:
                raise Deposed(self._deposed)
            db = self._db
            try:
                try:
                    # the statements in one pipeline (BEGIN with them), then COMMIT: two
                    # round trips (three when fenced), measured faster than a
                    # transaction block inside the pipeline, which syncs more often
                    with db.pipeline():
                        if self._epoch is not None:
                            self._check_epoch(self._epoch)
                        self._write(changes)
                    db.commit()
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        db.rollback()  # a lost connection has nothing to roll back
                    raise
            except psycopg.Error as exc:
                # Nothing after this can be acknowledged: the supervisor stops, and a
                # restart (or a standby) resumes from the last commit.
                msg = f"cannot write the farm database {self.where}: {one_line(exc)}"
                raise StoreError(msg) from None

    def _check_epoch(self, mine: int, db: _Connection | None = None) -> None:
        """Hold the epoch row (`FOR SHARE`, to this transaction's end, on `db`: the
        writing connection unless named) and raise `Deposed`, which rolls the
        transaction back, unless it is still `mine`."""
        row = (db or self._db).execute(_EPOCH_FOR_SHARE).fetchone()
        stored = row[0] if row else None
        if stored != str(mine):
            self._deposed = (
                f"this supervisor was deposed: the farm's epoch is now "
                f"{stored if stored is not None else 'unset'}, this supervisor's was {mine}; "
                "it writes nothing more"
            )
            raise Deposed(self._deposed)

    def _write(self, changes: Changes) -> None:
        """The statements of one commit, inside its transaction, in SQLite's order."""
        cursor = self._db.cursor()
        _JOBS.write(cursor, [job_values(job) for job in changes.jobs])
        _FRAMES.write(cursor, [frame_values(frame) for frame in changes.frames])
        if changes.removed:
            removed = list(changes.removed)
            cursor.execute("DELETE FROM frames WHERE job_id = ANY(%s::bigint[])", (removed,))
            cursor.execute("DELETE FROM jobs WHERE id = ANY(%s::bigint[])", (removed,))
        _USERS.write(cursor, [attrs.astuple(user) for user in changes.users])
        _AUDIT.write(cursor, [attrs.astuple(entry) for entry in changes.audit])
        _WORKER_TOKENS.write(cursor, [attrs.astuple(token) for token in changes.worker_tokens])
        if changes.audit_before is not None:
            cursor.execute("DELETE FROM audit WHERE at < %s", (changes.audit_before,))
        meta: list[tuple[Any, ...]] = []
        if changes.locks is not None:
            meta.append(("locks", json.dumps(changes.locks, sort_keys=True)))
        if changes.deployments is not None:
            meta.append(("deployments", json.dumps(changes.deployments, sort_keys=True)))
        if changes.next_job_id is not None:
            meta.append(("next_job_id", str(changes.next_job_id)))
        _META.write(cursor, meta)

    # ------------------------------------------------------------------ bundles

    def keep_bundle(self, digest: str, data: bytes) -> None:
        """Keep a release bundle's bytes under `digest` (once: a digest names its
        bytes), fenced like a commit (see module docs)."""
        self._fenced(
            "INSERT INTO bundles (digest, size, bytes) VALUES (%s, %s, %s)"
            " ON CONFLICT (digest) DO NOTHING",
            (digest, len(data), data),
        )

    def drop_bundle(self, digest: str) -> None:
        """Delete the bundle `digest`, fenced like a commit (none there: nothing done)."""
        self._fenced("DELETE FROM bundles WHERE digest = %s", (digest,))

    def read_bundle(self, digest: str) -> bytes | None:
        """The bytes of the bundle `digest`, as of the last write; None when there is none."""
        found = self._read(
            lambda db: db.execute(
                # in binary: the bytes as they are, not twice as many hex digits
                "SELECT bytes FROM bundles WHERE digest = %s",
                (digest,),
                binary=True,
            ).fetchone()
        )
        return None if found is None else bytes(found[0])

    def bundle_digests(self) -> list[str]:
        """The digests of every bundle kept, in order."""
        found = self._read(
            lambda db: db.execute("SELECT digest FROM bundles ORDER BY digest").fetchall()
        )
        return [str(digest) for (digest,) in found]

    def _fenced(self, statement: LiteralString, params: tuple[Any, ...]) -> None:
        """One statement in a transaction of its own, under the epoch check a commit
        makes: `Deposed` once another supervisor is active. On a connection of its own
        (opened on first use, again once the server dropped it): a 64 MiB bundle takes
        a good half second to write, which the group commits need not wait for."""
        import psycopg

        with self._bundling:
            if self._deposed:
                raise Deposed(self._deposed)
            try:
                if self._bundle_db is None or self._bundle_db.broken:
                    self._bundle_db = None
                    self._bundle_db = self._connect()
                db = self._bundle_db
                try:
                    if self._epoch is not None:
                        self._check_epoch(self._epoch, db)
                    db.execute(statement, params)
                    db.commit()
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        db.rollback()
                    raise
            except psycopg.Error as exc:
                msg = f"cannot write the farm database {self.where}: {one_line(exc)}"
                raise StoreError(msg) from None

    def shared_secret(self, name: str, make: Callable[[], str]) -> str:
        """The farm's secret `name` (the `meta` row `secret:NAME`), which every
        supervisor on this database shares: `make()`'s value if there was none yet."""
        import psycopg

        key = f"secret:{name}"
        with self._writing:
            db = self._db
            try:
                with db.transaction():
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (key, make()),
                    )
                    row = db.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
            except psycopg.Error as exc:
                msg = f"cannot write the farm database {self.where}: {one_line(exc)}"
                raise StoreError(msg) from None
        assert row is not None  # inserted, or there before, in this transaction
        return str(row[0])

    # ------------------------------------------------------------------ reading

    def load(self) -> Snapshot:
        def read(db: _Connection) -> Snapshot:
            jobs = tuple(
                map(job_from, db.execute(f"{JOB_SELECT} WHERE retired_at IS NULL ORDER BY id"))
            )
            # frames always have their job's row here (PostgreSQL enforces the foreign
            # key): the live jobs' frames are all there is to load
            found = db.execute(
                f"{FRAME_SELECT} WHERE job_id IN (SELECT id FROM jobs WHERE retired_at IS NULL)"
                " ORDER BY job_id, position"
            )
            frames = tuple(map(frame_from, found))
            meta = {str(key): str(value) for key, value in db.execute(_META_SELECT)}
            # by code point, as SQLite sorts, whatever the database's collation
            users = tuple(
                UserRow(*row) for row in db.execute(f'{USER_SELECT} ORDER BY name COLLATE "C"')
            )
            worker_tokens = tuple(
                WorkerTokenRow(*row) for row in db.execute(f"{TOKEN_SELECT} ORDER BY id")
            )
            return snapshot_of(jobs, frames, meta, users, worker_tokens, self.where)

        return self._read(read)

    def load_warm(self, warm: WarmRows) -> Snapshot:
        """`load`, fetching only the rows changed since `warm` last read them (a
        standby's copy, `farmd.store_warm`)."""
        return self._read(warm.read)

    def meta_value(self, key: str) -> str | None:
        """The `meta` row `key`'s value, as of the last commit; None when there is none."""
        found = self._read(
            lambda db: db.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        )
        return None if found is None else str(found[0])

    def recall(self, job_ids: Iterable[int], keys: Iterable[str] = ()) -> Snapshot:
        named, keys = [int(i) for i in job_ids], list(keys)

        def read(db: _Connection) -> Snapshot:
            wanted = list(named)
            for key in keys:
                found = db.execute("SELECT id FROM jobs WHERE request_key = %s", (key,))
                wanted.extend(row[0] for row in found)
            return recalled(
                wanted,
                lambda job_id: db.execute(family_sql("%s"), (job_id,)),
                lambda job_id: db.execute(
                    f"{FRAME_SELECT} WHERE job_id = %s ORDER BY position", (job_id,)
                ),
            )

        return self._read(read)

    def history(self, limit: int, after: int | None) -> list[dict[str, Any]]:
        found = self._read(
            lambda db: db.execute(
                "SELECT id, summary FROM jobs WHERE retired_at IS NOT NULL AND id > %s"
                " ORDER BY id LIMIT %s",
                (0 if after is None else after, limit),
            ).fetchall()
        )
        return [stored_summary(job_id, text) for job_id, text in found]

    def history_counts(self) -> list[tuple[str, str, int]]:
        found = self._read(
            lambda db: db.execute(
                "SELECT cluster, summary::json ->> 'state', count(*) FROM jobs"
                " WHERE retired_at IS NOT NULL GROUP BY 1, 2"
            ).fetchall()
        )
        return [(str(cluster), str(state), int(count)) for cluster, state, count in found]

    def expired(self, before: float, limit: int) -> list[int]:
        found = self._read(
            lambda db: db.execute(
                "SELECT id FROM jobs WHERE retired_at IS NOT NULL AND retired_at <= %s"
                " ORDER BY retired_at LIMIT %s",
                (before, limit),
            ).fetchall()
        )
        return [int(job_id) for (job_id,) in found]

    def audit(
        self, limit: int, before: int | None, user: str | None, job: int | None, since: float
    ) -> list[dict[str, Any]]:
        where = ["id < %s", "at >= %s"]
        params: list[object] = [2**63 - 1 if before is None else before, since]
        if user is not None:
            where.append('"user" = %s')
            params.append(user)
        if job is not None:
            where.append("job_ids LIKE %s")
            params.append(f"%,{job},%")
        found = self._read(
            lambda db: db.execute(
                'SELECT id, at, who, "user", peer, request, target, result FROM audit'
                f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
                (*params, limit),
            ).fetchall()
        )
        names = ("id", "at", "who", "user", "peer", "request", "target", "result")
        return [dict(zip(names, row, strict=True)) for row in found]

    def _read(self, query: Callable[[_Connection], _T]) -> _T:
        """`query` on the reading connection, in a read-only transaction of its own, one
        reader at a time. A session the server dropped (it restarted, or an admin ended
        it) is opened again and the query run once more: a read changes nothing."""
        import psycopg

        with self._reading:
            for attempt in (1, 2):
                try:
                    if self._reader is None or self._reader.broken:
                        self._reader = None
                        self._reader = self._connect(reader=True)
                    with self._reader.transaction():
                        return query(self._reader)
                except psycopg.Error as exc:
                    if attempt == 1 and self._reader is not None and self._reader.broken:
                        continue
                    msg = f"cannot read the farm database {self.where}: {one_line(exc)}"
                    raise StoreError(msg) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        for db in (self._reader, self._bundle_db, self._db):
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
