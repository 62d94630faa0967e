"""Durable supervisor state: the store interface, SQLite (the default) and memory.

Theory of operation
-------------------
The scheduler core reports, with every event it handles, the rows that event changed
(`Changes`: whole job rows and whole frame rows, plus the next job id). The supervisor
hands them to a `Store` and lets nothing the event caused leave the process (a reply, a
`run_frame`, a `result_ack`) until the store has made them durable. A job's row names
all of its frames as a frame range; a frame has a row of its own only once it has
changed, so submitting a million-frame job writes one row, not a million. So anything a peer
has seen acknowledged survives a crash, and a restart restores exactly that state.

A store only needs three operations: `load` everything, `commit` a batch atomically and
durably, `close`. Batches are idempotent upserts of whole rows, so merging several into
one commit (group commit) is just "last row wins". That keeps the interface small enough
for `farmd.store_postgres` to hold the same rows (through the row mapping this module
shares: `job_values`, `job_from`, `frame_values`, `snapshot_of`, `recalled`, ...) with
`INSERT ... ON CONFLICT DO UPDATE`, for a standby supervisor that loads on takeover.

`SqliteStore` keeps `STATE/farmd.db` in WAL mode with `synchronous=FULL` (a commit is on
disk, not only in the OS cache, when it returns). The schema is versioned with
`PRAGMA user_version` and migrated forward on open; a database from a newer farmd, a
corrupt one, or a state dir locked by another running supervisor is refused with one
line before anything is written. `commit` blocks: the supervisor calls it from a thread.

Every file of the state dir is its owner's alone (mode 0600, `STATE_FILE_MODE`): the
queue holds every job's command line, and the tokens open the farm. The database is
created with that mode before SQLite opens it, so the `-wal` and `-shm` files SQLite
makes beside it get the same; a file an older farmd (or a loose umask) left readable
to others is tightened when the store opens (`restrict_mode`). The process umask is
left alone: frames that `farmd up` runs in this process inherit it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Final, Protocol

import attrs

from farmd.errors import UserError
from farmd.rows import (
    AuditRow,
    Changes,
    FrameRow,
    JobRow,
    Snapshot,
    UserRow,
    WorkerTokenRow,
)

DATABASE_FILE = "farmd.db"
LOCK_FILE = "supervisor.lock"
STATE_FILE_MODE = 0o600


class StoreError(UserError):
    """The state dir cannot be used: newer schema, corrupt database, locked, unreadable."""

    code = "bad_state"


def restrict_mode(path: Path, allowed: int = STATE_FILE_MODE) -> None:
    """Take every permission bit outside `allowed` off `path`, if it exists; never
    adds one (an owner who made a file stricter keeps it so)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & ~allowed:
            path.chmod(mode & allowed)
    except FileNotFoundError:
        pass
    except OSError as exc:
        msg = f"cannot make {path} private to its owner: {exc.strerror}"
        raise StoreError(msg) from None


def write_state_file(path: Path, text: str) -> None:
    """Write `text` to `path`, created (or replaced) with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, STATE_FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, STATE_FILE_MODE)  # it may have existed with another mode
        handle.write(text)


class Store(Protocol):
    # whether ended jobs can move out of memory into this store's history
    keeps_history: bool

    def load(self) -> Snapshot:
        """Every live job (not those in history), for a restore."""

    def commit(self, changes: Changes) -> None:
        """Make `changes` durable, atomically; returns only once they are."""

    def recall(self, job_ids: Iterable[int], keys: Iterable[str] = ()) -> Snapshot:
        """The rows of the jobs named (by id, or by the idempotency key they were
        submitted under), with their families and the jobs they depend on, of those in
        history only (a live job's rows are the scheduler's, and may be a million frame
        rows): what it needs to take them back from history (`farmd.core.history`)."""

    def history(self, limit: int, after: int | None) -> list[dict[str, Any]]:
        """The summaries of at most `limit` jobs in history with an id above `after`
        (from the first, when None), by id."""

    def history_counts(self) -> list[tuple[str, str, int]]:
        """How many jobs history holds, by cluster and state: (cluster, state, count)."""

    def audit(
        self, limit: int, before: int | None, user: str | None, job: int | None, since: float
    ) -> list[dict[str, Any]]:
        """At most `limit` audit entries, newest first, with an id below `before` (from
        the newest, when None), of `user` and naming `job` if given, at `since` or after."""

    def expired(self, before: float, limit: int) -> list[int]:
        """At most `limit` ids of jobs that moved to history at or before `before`, oldest
        first: what a prune removes (with `Changes.removed`)."""

    def close(self) -> None: ...


class MemoryStore:
    """Keeps nothing: a farm on it forgets everything when it stops. For throwaway farms
    and as the in-memory baseline of the benchmarks. It has no history: ended jobs stay
    in memory."""

    keeps_history = False

    def load(self) -> Snapshot:
        return Snapshot()

    def commit(self, changes: Changes) -> None:
        pass

    def recall(self, job_ids: Iterable[int], keys: Iterable[str] = ()) -> Snapshot:
        return Snapshot()

    def history(self, limit: int, after: int | None) -> list[dict[str, Any]]:
        return []

    def history_counts(self) -> list[tuple[str, str, int]]:
        return []

    def audit(
        self, limit: int, before: int | None, user: str | None, job: int | None, since: float
    ) -> list[dict[str, Any]]:
        return []

    def expired(self, before: float, limit: int) -> list[int]:
        return []

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- sqlite

# The column of a `JobRow` field (a job spec's field) whose column is older than the
# field's name: renaming a column would be a schema migration for a name alone.
COLUMN_OF: Final = {"cross_cluster": "patterns", "job_type": "type"}

# Each entry migrates from version i to i + 1; the schema version is len(MIGRATIONS).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        cluster TEXT NOT NULL,
        priority INTEGER NOT NULL,
        restrictions TEXT NOT NULL,
        patterns TEXT NOT NULL,
        argv TEXT NOT NULL,          -- JSON array of strings
        depends_on TEXT NOT NULL,    -- JSON array of job ids
        submitted_at REAL NOT NULL
    );
    CREATE TABLE frames (
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        number INTEGER NOT NULL,
        position INTEGER NOT NULL,
        state TEXT NOT NULL,
        worker TEXT,
        attempts INTEGER NOT NULL,
        started_at REAL,
        finished_at REAL,
        exit_code INTEGER,
        PRIMARY KEY (job_id, number)
    ) WITHOUT ROWID;
    """,
    # 2: retries, retry delay, instances and time limits (farmd 0.2)
    """
    ALTER TABLE jobs ADD COLUMN instances INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN retry_delay REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN time_limit REAL NOT NULL DEFAULT 0;
    ALTER TABLE frames ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE frames ADD COLUMN failed_on TEXT;
    ALTER TABLE frames ADD COLUMN retry_at REAL;
    """,
    # 3: chunks, dependency modes, sub-jobs, suspend, uninterruptible jobs (farmd 0.3).
    # depends_on now holds "ID:MODE" strings; a bare id (from before) means complete.
    """
    ALTER TABLE jobs ADD COLUMN chunk INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN parent INTEGER;
    ALTER TABLE jobs ADD COLUMN uninterruptible INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN waiting_on TEXT;  -- JSON array of ids; NULL: recompute
    ALTER TABLE frames ADD COLUMN members TEXT;   -- a chunk's frames; NULL: one frame
    ALTER TABLE frames ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: job types, requirements and reservations; what a running frame holds (0.4)
    """
    ALTER TABLE jobs ADD COLUMN type TEXT;
    ALTER TABLE jobs ADD COLUMN requires TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN reserve TEXT NOT NULL DEFAULT '';
    ALTER TABLE frames ADD COLUMN taken TEXT;
    """,
    # 5: a job's frames as a range, a row only for a frame that changed; idempotency
    # keys of submissions (0.5)
    """
    ALTER TABLE jobs ADD COLUMN frames TEXT;          -- NULL: the frame rows are all
    ALTER TABLE jobs ADD COLUMN request_key TEXT;
    ALTER TABLE jobs ADD COLUMN request_digest TEXT NOT NULL DEFAULT '';
    """,
    # 6: history: a job that ended moves out of the live queue, its rows kept (0.6)
    """
    ALTER TABLE jobs ADD COLUMN retired_at REAL;    -- NULL: live, loaded on restore
    ALTER TABLE jobs ADD COLUMN summary TEXT;       -- JSON, as `farmd jobs` lists it
    CREATE INDEX jobs_retired ON jobs (retired_at) WHERE retired_at IS NOT NULL;
    CREATE INDEX jobs_parent ON jobs (parent) WHERE parent IS NOT NULL;
    CREATE INDEX jobs_request_key ON jobs (request_key) WHERE request_key IS NOT NULL;
    """,
    # 7: who submitted each job, and the farm's users (personal identities; 0.7)
    """
    ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN env TEXT NOT NULL DEFAULT '[]';  -- JSON: NAME=VALUE
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        clusters TEXT,               -- NULL: the whole farm
        salt TEXT NOT NULL,
        digest TEXT NOT NULL,        -- scrypt of the token's secret; never the token
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        who TEXT NOT NULL,
        user TEXT NOT NULL,
        peer TEXT NOT NULL,
        request TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        job_ids TEXT NOT NULL        -- ",12,13,": for `farmd audit --job`
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE TABLE worker_tokens (
        id INTEGER PRIMARY KEY,
        hosts TEXT NOT NULL,         -- a host pattern: node07, gpu-*, render[001-120]
        clusters TEXT,               -- NULL: any cluster
        salt TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
    # 8: releases and notifications (0.8): a job of a release's type records its pinned
    # release and its parameters, any job its notify URL; the farm's releases and
    # deployments are one JSON document in `meta` (`Deployments.snapshot`; bounded by
    # MAX_KNOWN_RELEASES), and each bundle is a file of its own, STATE/releases/HEX.tar.gz
    """
    ALTER TABLE jobs ADD COLUMN release TEXT;                  -- JSON; NULL: no release
    ALTER TABLE jobs ADD COLUMN params TEXT NOT NULL DEFAULT '{}';  -- JSON object
    ALTER TABLE jobs ADD COLUMN notify TEXT NOT NULL DEFAULT '';     -- a URL told at the end
    """,
    # 9: a job's times (issue 16): when its first frame started, when it ended; NULL in
    # rows from before (restore takes its frames' earliest start)
    """
    ALTER TABLE jobs ADD COLUMN started_at REAL;
    ALTER TABLE jobs ADD COLUMN ended_at REAL;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
FRAME_COLUMNS = tuple(field.name for field in attrs.fields(FrameRow))
# the `jobs` columns in `JobRow`'s field order (`job_values` writes, `job_from` reads)
JOB_FIELDS = tuple(field.name for field in attrs.fields(JobRow))
JOB_COLUMNS = tuple(COLUMN_OF.get(name, name) for name in JOB_FIELDS)
_JSON_AT = tuple(
    JOB_FIELDS.index(name) for name in ("argv", "depends_on", "waiting_on", "env")
)  # the columns kept as JSON arrays
_FLAG_AT = JOB_FIELDS.index("uninterruptible")
USER_COLUMNS = tuple(field.name for field in attrs.fields(UserRow))
TOKEN_COLUMNS = tuple(field.name for field in attrs.fields(WorkerTokenRow))
# `user` is a reserved word in PostgreSQL: quoted, as SQLite also reads it
AUDIT_COLUMNS = tuple(
    '"user"' if field.name == "user" else field.name for field in attrs.fields(AuditRow)
)
USER_SELECT = f"SELECT {', '.join(USER_COLUMNS)} FROM users"
TOKEN_SELECT = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM worker_tokens"
JOB_SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
FRAME_SELECT = f"SELECT {', '.join(FRAME_COLUMNS)} FROM frames"
# Every job id that has frame rows, one index probe per id (not per row); and the
# frames of the live jobs plus those of ids without a job row (`load`).
_FRAME_JOBS = (
    "frame_jobs(j) AS (SELECT min(job_id) FROM frames UNION ALL"
    " SELECT (SELECT min(job_id) FROM frames WHERE job_id > j) FROM frame_jobs"
    " WHERE j IS NOT NULL)"
)
_LIVE_FRAMES = (
    f"WITH RECURSIVE {_FRAME_JOBS} {FRAME_SELECT} WHERE job_id IN"
    " (SELECT id FROM jobs WHERE retired_at IS NULL UNION"
    " SELECT j FROM frame_jobs WHERE j IS NOT NULL AND j NOT IN (SELECT id FROM jobs))"
    " ORDER BY job_id, position"
)
# The most jobs one recall brings back (a family and what it depends on, transitively):
# a recall is for a person looking at a job, not a way to load history wholesale.
MAX_RECALL = 10_000


class SqliteStore:
    """The embedded default store: `STATE/farmd.db` (see module docs)."""

    keeps_history = True

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DATABASE_FILE
        self._lock = StateLock(state_dir)
        created = False
        try:
            if self.path.exists():
                self._check()
                for path in (self.path, *self._side_files()):
                    restrict_mode(path)  # before SQLite opens them: the side files copy it
            else:
                self._create()
                created = True
            self._db = self._open()
            self._reader = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
            )
            self._reading = threading.Lock()
        except BaseException:
            if created:  # a refusal leaves nothing behind
                for path in (self.path, *self._side_files()):
                    with contextlib.suppress(OSError):
                        path.unlink()
            self._lock.release(keep=False)
            raise
        self._lock.claim()

    def _side_files(self) -> list[Path]:
        return [self.path.with_name(self.path.name + end) for end in ("-wal", "-shm")]

    def _create(self) -> None:
        """An empty database file, owner-only: SQLite gives its -wal and -shm files the
        database file's mode."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, STATE_FILE_MODE))
        except OSError as exc:
            msg = f"cannot create the farm database {self.path}: {exc.strerror}"
            raise StoreError(msg) from None

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            msg = f"cannot open the farm database {self.path}: {exc}"
            raise StoreError(msg) from None
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            for target in range(version, SCHEMA_VERSION):
                db.executescript(
                    f"BEGIN; {MIGRATIONS[target]} PRAGMA user_version={target + 1}; COMMIT;"
                )
        except sqlite3.DatabaseError as exc:
            db.close()
            msg = (
                f"the farm database {self.path} is corrupt or unreadable ({exc}); "
                "nothing was changed"
            )
            raise StoreError(msg) from None
        except BaseException:
            db.close()
            raise
        return db

    def _check(self) -> None:
        """Refuse an existing database that cannot be used. Read-only, so a refused
        database (and the WAL a crashed farmd left beside it) is left as it was; the
        side files a reader needs are removed again if the check created them."""
        missing = [path for path in self._side_files() if not path.exists()]
        try:
            self._check_read_only()
        except StoreError:
            for path in missing:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise

    def _check_read_only(self) -> None:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            msg = f"cannot open the farm database {self.path}: {exc}; nothing was changed"
            raise StoreError(msg) from None
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                msg = (
                    f"the farm database {self.path} was written by a newer farmd (schema "
                    f"{version}; this farmd knows up to {SCHEMA_VERSION}); nothing was changed"
                )
                raise StoreError(msg)
            result = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            msg = (
                f"the farm database {self.path} is corrupt or unreadable ({exc}); "
                "nothing was changed"
            )
            raise StoreError(msg) from None
        finally:
            db.close()
        if result != "ok":
            result = " ".join(str(result).split())  # SQLite's report spans lines: one
            msg = f"the farm database {self.path} is corrupt ({result}); nothing was changed"
            raise StoreError(msg)

    def load(self) -> Snapshot:
        db = self._db
        jobs = tuple(
            map(job_from, db.execute(f"{JOB_SELECT} WHERE retired_at IS NULL ORDER BY id"))
        )
        # the live jobs' frames, and those of job ids with no job row at all (a hand
        # edit: `Restore` quarantines them), found by skipping from one job id to the next
        # rather than by reading every frame row history keeps
        frames = tuple(map(frame_from, db.execute(_LIVE_FRAMES)))
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        users = tuple(UserRow(*row) for row in db.execute(f"{USER_SELECT} ORDER BY name"))
        worker_tokens = tuple(
            WorkerTokenRow(*row) for row in db.execute(f"{TOKEN_SELECT} ORDER BY id")
        )
        return snapshot_of(jobs, frames, meta, users, worker_tokens, str(self.path))

    def commit(self, changes: Changes) -> None:
        try:
            self._commit(changes)
        except (sqlite3.Error, OSError) as exc:
            # Nothing after this can be acknowledged: the supervisor stops, and a restart
            # resumes from the last commit.
            full = (
                getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                or getattr(exc, "errno", None) == errno.ENOSPC
            )
            why = f"the disk is full ({exc})" if full else str(exc)
            msg = f"cannot write the farm database {self.path}: {why}"
            raise StoreError(msg) from None

    def _commit(self, changes: Changes) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._write(changes)
            db.execute("COMMIT")
        except BaseException:
            # SQLite rolls the transaction back itself after some errors (a full disk,
            # an I/O error, or any failed COMMIT): a ROLLBACK then fails, and its error
            # must not replace the one that says what went wrong.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _write(self, changes: Changes) -> None:
        """The statements of one commit, inside its transaction."""
        db = self._db
        db.executemany(
            f"INSERT OR REPLACE INTO jobs ({', '.join(JOB_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(JOB_COLUMNS))})",
            [job_values(j) for j in changes.jobs],
        )
        db.executemany(
            f"INSERT OR REPLACE INTO frames ({', '.join(FRAME_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(FRAME_COLUMNS))})",
            [frame_values(f) for f in changes.frames],
        )
        for job_id in changes.removed:
            db.execute("DELETE FROM frames WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        db.executemany(
            f"INSERT OR REPLACE INTO users ({', '.join(USER_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(USER_COLUMNS))})",
            [attrs.astuple(user) for user in changes.users],
        )
        db.executemany(
            f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
            [attrs.astuple(entry) for entry in changes.audit],
        )
        db.executemany(
            f"INSERT OR REPLACE INTO worker_tokens ({', '.join(TOKEN_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(TOKEN_COLUMNS))})",
            [attrs.astuple(token) for token in changes.worker_tokens],
        )
        if changes.audit_before is not None:
            db.execute("DELETE FROM audit WHERE at < ?", (changes.audit_before,))
        if changes.locks is not None:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('locks', ?)",
                (json.dumps(changes.locks, sort_keys=True),),
            )
        if changes.deployments is not None:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('deployments', ?)",
                (json.dumps(changes.deployments, sort_keys=True),),
            )
        if changes.next_job_id is not None:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('next_job_id', ?)",
                (str(changes.next_job_id),),
            )

    # ------------------------------------------------------------------ history
    # Read on a connection of their own, from worker threads, while commits go on: WAL
    # lets a reader see the last commit without waiting for the writer.

    def recall(self, job_ids: Iterable[int], keys: Iterable[str] = ()) -> Snapshot:
        with self._reading:
            db = self._reader
            wanted = [int(i) for i in job_ids]
            for key in keys:
                found = db.execute("SELECT id FROM jobs WHERE request_key = ?", (key,))
                wanted.extend(row[0] for row in found)
            return recalled(
                wanted,
                lambda job_id: db.execute(family_sql("?"), (job_id,)),
                lambda job_id: db.execute(
                    f"{FRAME_SELECT} WHERE job_id = ? ORDER BY position", (job_id,)
                ),
            )

    def history(self, limit: int, after: int | None) -> list[dict[str, Any]]:
        with self._reading:
            found = self._reader.execute(
                "SELECT id, summary FROM jobs WHERE retired_at IS NOT NULL AND id > ?"
                " ORDER BY id LIMIT ?",
                (0 if after is None else after, limit),
            ).fetchall()
        return [stored_summary(job_id, text) for job_id, text in found]

    def history_counts(self) -> list[tuple[str, str, int]]:
        with self._reading:
            found = self._reader.execute(
                "SELECT cluster, json_extract(summary, '$.state'), count(*) FROM jobs"
                " WHERE retired_at IS NOT NULL GROUP BY 1, 2"
            ).fetchall()
        return [(str(cluster), str(state), count) for cluster, state, count in found]

    def expired(self, before: float, limit: int) -> list[int]:
        with self._reading:
            found = self._reader.execute(
                "SELECT id FROM jobs WHERE retired_at IS NOT NULL AND retired_at <= ?"
                " ORDER BY retired_at LIMIT ?",
                (before, limit),
            ).fetchall()
        return [job_id for (job_id,) in found]

    def audit(
        self, limit: int, before: int | None, user: str | None, job: int | None, since: float
    ) -> list[dict[str, Any]]:
        with self._reading:
            found = self._reader.execute(
                "SELECT id, at, who, user, peer, request, target, result FROM audit"
                " WHERE id < ? AND at >= ? AND (? IS NULL OR user = ?)"
                " AND (? IS NULL OR job_ids LIKE ?) ORDER BY id DESC LIMIT ?",
                (
                    2**63 - 1 if before is None else before,
                    since,
                    user,
                    user,
                    job,
                    f"%,{job},%",
                    limit,
                ),
            ).fetchall()
        names = ("id", "at", "who", "user", "peer", "request", "target", "result")
        return [dict(zip(names, row, strict=True)) for row in found]

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._reader.close()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._lock.release(keep=True)


def job_values(job: JobRow) -> tuple[object, ...]:
    """A job's row as the `jobs` columns of `JOB_COLUMNS`, in order (`job_from` reads
    them back): arrays as JSON, the flag as an integer. Positions found once: a batch
    of submissions writes hundreds of rows per commit."""
    values = [getattr(job, name) for name in JOB_FIELDS]
    for index in _JSON_AT:
        if values[index] is not None:  # waiting_on may be None: recompute
            values[index] = json.dumps(values[index])
    values[_FLAG_AT] = int(values[_FLAG_AT])
    return tuple(values)


def job_from(row: tuple[Any, ...]) -> JobRow:
    """A `jobs` row read with `JOB_SELECT` as a `JobRow` (JSON columns as tuples)."""
    fields = dict(zip(JOB_FIELDS, row, strict=True))
    fields["argv"] = _array(fields["argv"])
    fields["depends_on"] = _array(fields["depends_on"], str)
    fields["env"] = _array(fields["env"], str)
    fields["uninterruptible"] = bool(fields["uninterruptible"])
    waiting_on = fields["waiting_on"]
    fields["waiting_on"] = None if waiting_on is None else _array(waiting_on)
    return JobRow(**fields)


def stored_summary(job_id: int, text: object) -> dict[str, Any]:
    """A history row's stored summary; one that cannot be read (a hand edit) is listed
    as what it is rather than failing the whole page."""
    try:
        summary = json.loads(text)  # type: ignore[arg-type]  # a column may hold anything
    except (TypeError, ValueError, RecursionError):
        summary = None
    if not isinstance(summary, dict):
        return {"id": job_id, "state": "unknown", "reason": "its stored summary is unreadable"}
    return summary


def frame_from(row: tuple[Any, ...]) -> FrameRow:
    fields = dict(zip(FRAME_COLUMNS, row, strict=True))
    fields["stopped"] = bool(fields["stopped"])
    return FrameRow(**fields)


def frame_values(frame: FrameRow) -> tuple[object, ...]:
    """A frame's row as the `frames` columns of `FRAME_COLUMNS`, in order."""
    return (*attrs.astuple(frame)[:-2], int(frame.stopped), frame.taken)


def snapshot_of(
    jobs: tuple[JobRow, ...],
    frames: tuple[FrameRow, ...],
    meta: dict[str, str],
    users: tuple[UserRow, ...],
    worker_tokens: tuple[WorkerTokenRow, ...],
    where: str,
) -> Snapshot:
    """What `load` returns, from the rows it read and the `meta` table's rows; meta keys
    it does not know (a PostgreSQL farm's epoch and shared secrets) are not its own. An
    unreadable next id or locks refuse the farm, naming the database `where`."""
    try:
        next_job_id = int(meta.get("next_job_id", 1))
        locks = json.loads(meta.get("locks", "{}"))
        if not isinstance(locks, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in locks.items()
        ):
            raise TypeError(locks)
    except (TypeError, ValueError, RecursionError):
        # not one job's: without the next id, ids of removed jobs could be reused. Only
        # these keys are shown: others may be secrets.
        shown = str({key: meta[key] for key in ("next_job_id", "locks") if key in meta})[:120]
        msg = f"the farm database {where} has an unreadable meta table ({shown}); "
        msg += "nothing was changed"
        raise StoreError(msg) from None
    try:
        deployments = json.loads(meta["deployments"]) if "deployments" in meta else None
    except (TypeError, ValueError, RecursionError):
        msg = f"the farm database {where} has unreadable deployments; nothing was changed"
        raise StoreError(msg) from None
    return Snapshot(
        jobs,
        frames,
        next_job_id,
        locks=locks,
        users=users,
        worker_tokens=worker_tokens,
        deployments=deployments,
    )


def family_sql(mark: str) -> str:
    """The rows in history of the family of the job whose id is the one parameter
    (written `mark`: "?" for SQLite, "%s" for psycopg): up to its top-level job, then
    down to every descendant. A live job's rows are the scheduler's: it holds them, newer."""
    return (
        "WITH RECURSIVE up(id, parent) AS (SELECT id, parent FROM jobs WHERE id = "
        f"{mark} UNION SELECT j.id, j.parent FROM jobs j JOIN up ON j.id = up.parent),"
        " family(id) AS (SELECT id FROM up WHERE parent IS NULL"
        " UNION SELECT j.id FROM jobs j JOIN family ON j.parent = family.id)"
        f" {JOB_SELECT} WHERE id IN (SELECT id FROM family) AND retired_at IS NOT NULL"
    )


def recalled(
    wanted: list[int],
    family: Callable[[int], Iterable[tuple[Any, ...]]],
    frames_of: Callable[[int], Iterable[tuple[Any, ...]]],
) -> Snapshot:
    """`recall`'s answer: the history rows of the jobs `wanted`, their families (the
    rows `family` reads for an id) and, transitively, the jobs they depend on, up to
    `MAX_RECALL` jobs; with each one's frame rows (`frames_of`), in range order."""
    jobs: dict[int, JobRow] = {}
    while wanted and len(jobs) < MAX_RECALL:
        job_id = wanted.pop()
        if job_id in jobs:
            continue
        for job in map(job_from, family(job_id)):
            jobs[job.id] = job
            for dep in job.depends_on if isinstance(job.depends_on, tuple) else ():
                head = str(dep).split(":", 1)[0]
                if head.isdigit() and int(head) not in jobs:
                    wanted.append(int(head))
    frames = [frame for job_id in sorted(jobs) for frame in map(frame_from, frames_of(job_id))]
    return Snapshot(tuple(jobs[i] for i in sorted(jobs)), tuple(frames))


def _array(text: object, item: Callable[[Any], Any] | None = None) -> Any:
    """A JSON array column as a tuple (each element through `item`). A value that is not
    one is passed on as it is, for the scheduler's `Restore` to quarantine that job
    naming it: one bad row must not keep the farm from loading."""
    try:
        value = json.loads(text)  # type: ignore[arg-type]  # a column may hold anything
    except (TypeError, ValueError, RecursionError):
        return text
    if not isinstance(value, list):
        return text
    return tuple(value) if item is None else tuple(map(item, value))


class StateLock:
    """An exclusive lock on STATE/supervisor.lock for the supervisor's lifetime. The pid
    is written only once the state dir is accepted, and a lock file this supervisor
    created for a state dir it then refused is removed: a refusal changes nothing."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self.created = not self.path.exists()
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, STATE_FILE_MODE)
            self._handle: IO[str] = os.fdopen(fd, "a+")
        except OSError as exc:
            msg = f"cannot use the state dir {state_dir}: {exc.strerror}"
            raise StoreError(msg) from None
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            msg = (
                f"the state dir {state_dir} is in use by another running farmd supervisor "
                f"(pid {holder}); nothing was changed"
            )
            raise StoreError(msg) from None

    def claim(self) -> None:
        restrict_mode(self.path)
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()

    def release(self, *, keep: bool) -> None:
        if not keep and self.created:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._handle.close()
