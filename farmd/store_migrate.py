"""`farmd store migrate`: move a farm from a SQLite state dir into PostgreSQL.

Theory of operation
-------------------
Both stores hold the same rows in the same tables and columns, so a migration is a
copy, row for row, of every table: live jobs and jobs in history, their frames, users,
worker tokens, the audit log with its ids, and `meta` (the next job id, worker locks,
releases and deployments). The source is opened as a supervisor would open it
(`SqliteStore`: a state dir a running supervisor holds is refused, and an older schema
is brought up to date first), then read in one read transaction; the target is opened
as `PostgresStore` (which creates its schema) and written in one transaction, with
PostgreSQL's COPY, which holds the migration lock the schema's own migrations take.
So the copy is whole or nothing. Only an empty farm database is written to: a copy
into a farm that already has rows would mix two farms' job ids.

The farm's tokens are files in the state dir (`farmd.supervisor.tokens`); on
PostgreSQL they are the `meta` rows every supervisor of the farm shares
(`PostgresStore.shared_secret`), so they are copied there too and the workers, users
and scripts that hold them keep working. The audit ids' sequence is moved past the
highest id SQLite ever gave (`sqlite_sequence`), so no id is given twice.

The release bundles, files in STATE/releases on SQLite, are rows of the `bundles`
table on PostgreSQL (whichever supervisor is active serves them): each is copied, in the
same transaction, after its bytes are checked against the digest its name gives (a
damaged one refuses the migration). Not copied: the farm's TLS authority in STATE/tls,
which a PostgreSQL farm keeps in the database once its first supervisor starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from farmd.store import (
    AUDIT_COLUMNS,
    DATABASE_FILE,
    FRAME_COLUMNS,
    JOB_COLUMNS,
    TOKEN_COLUMNS,
    USER_COLUMNS,
    SqliteStore,
    StoreError,
)
from farmd.store_postgres import MIGRATION_LOCK, PostgresStore, one_line
from farmd.supervisor.shelf import RELEASES_DIR

if TYPE_CHECKING:
    import psycopg

# the token files of a state dir, and the shared secrets they become
# (`farmd.supervisor.tokens`: TOKEN_FILE and USER_TOKEN_FILE)
TOKEN_SECRETS = {"token": "secret:token", "user_token": "secret:user_token"}
# every table, its columns, in an order the foreign key accepts (a job before its frames)
COPIED = (
    ("meta", ("key", "value")),
    ("jobs", JOB_COLUMNS),
    ("frames", FRAME_COLUMNS),
    ("users", USER_COLUMNS),
    ("worker_tokens", TOKEN_COLUMNS),
    ("audit", ("id", *AUDIT_COLUMNS)),
)


@attrs.frozen
class Copied:
    """How many rows of each kind a migration copied."""

    jobs: int
    frames: int
    users: int
    worker_tokens: int
    audit: int
    secrets: int
    bundles: int = 0

    def line(self, source: Path, target: str) -> str:
        counts = ", ".join(
            f"{count} {noun if count == 1 else plural}"
            for count, noun, plural in (
                (self.jobs, "job", "jobs"),
                (self.frames, "frame row", "frame rows"),
                (self.users, "user", "users"),
                (self.worker_tokens, "worker token", "worker tokens"),
                (self.audit, "audit entry", "audit entries"),
                (self.secrets, "farm token", "farm tokens"),
                (self.bundles, "release bundle", "release bundles"),
            )
        )
        return f"copied the farm in {source} to {target}: {counts}"


def parse_source(text: str) -> Path:
    """The state dir `sqlite:STATE` names."""
    kind, colon, where = text.partition(":")
    if not colon or kind != "sqlite" or not where:
        msg = f"--from must be sqlite:STATE (a supervisor's state dir), not {text!r}"
        raise StoreError(msg)
    return Path(where).expanduser().resolve()


def migrate(state_dir: Path, url: str) -> Copied:
    """Copy the farm in `state_dir` (SQLite) into the empty farm database at `url`."""
    if not (state_dir / DATABASE_FILE).is_file():
        msg = f"there is no farm database in {state_dir} (no {DATABASE_FILE}); nothing was copied"
        raise StoreError(msg)
    source = SqliteStore(state_dir)  # holds the state dir: no supervisor starts on it meanwhile
    try:
        rows, sequence = _read_sqlite(state_dir)
        for name, secret in TOKEN_SECRETS.items():
            with contextlib.suppress(FileNotFoundError):
                value = (state_dir / name).read_text().strip()
                if value:
                    rows["meta"].append((secret, value))
        bundles = sorted((state_dir / RELEASES_DIR).glob("*.tar.gz"))
        target = PostgresStore(url)
        target.close()  # its schema is made; the copy is one transaction of its own
        _write_postgres(url, target.where, rows, sequence, bundles)
    finally:
        source.close()
    return Copied(
        jobs=len(rows["jobs"]),
        frames=len(rows["frames"]),
        users=len(rows["users"]),
        worker_tokens=len(rows["worker_tokens"]),
        audit=len(rows["audit"]),
        secrets=sum(1 for key, _ in rows["meta"] if str(key).startswith("secret:")),
        bundles=len(bundles),
    )


def _read_sqlite(state_dir: Path) -> tuple[dict[str, list[tuple[object, ...]]], int]:
    """Every row of every table, as stored, read in one transaction; and the highest
    audit id SQLite ever gave."""
    db = sqlite3.connect(f"file:{state_dir / DATABASE_FILE}?mode=ro", uri=True)
    try:
        db.execute("BEGIN")
        rows = {
            table: db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            for table, columns in COPIED
        }
        found = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    except sqlite3.Error as exc:
        msg = f"cannot read the farm database in {state_dir}: {exc}; nothing was copied"
        raise StoreError(msg) from None
    finally:
        db.close()
    highest = max([int(found[0]) if found else 0, *(int(row[0]) for row in rows["audit"])])
    return rows, highest


def _write_postgres(
    url: str,
    where: str,
    rows: dict[str, list[tuple[object, ...]]],
    sequence: int,
    bundles: list[Path],
) -> None:
    import psycopg

    try:
        with psycopg.connect(url) as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            held = _held(db)
            if held:
                msg = (
                    f"the farm database {where} already holds a farm (rows in {', '.join(held)}); "
                    "farmd store migrate copies into an empty one only; nothing was copied"
                )
                raise StoreError(msg)
            for table, columns in COPIED:
                with db.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
            if sequence:
                db.execute("SELECT setval(pg_get_serial_sequence('audit', 'id'), %s)", (sequence,))
            for path in bundles:  # one at a time: a bundle is up to 64 MiB
                digest, data = _bundle(path)
                db.execute(
                    "INSERT INTO bundles (digest, size, bytes) VALUES (%s, %s, %s)",
                    (digest, len(data), data),
                )
    except psycopg.Error as exc:
        msg = f"cannot copy into the farm database {where}: {one_line(exc)}; nothing was copied"
        raise StoreError(msg) from None


def _bundle(path: Path) -> tuple[str, bytes]:
    """A bundle file's digest (from its name, `<hex of its sha256>.tar.gz`) and bytes,
    checked against each other."""
    digest = "sha256:" + path.name.removesuffix(".tar.gz")
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the release bundle {path}: {exc.strerror}; nothing was copied"
        raise StoreError(msg) from None
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        msg = f"the release bundle {path} is damaged (its bytes hash to {got}); nothing was copied"
        raise StoreError(msg)
    return digest, data


def _held(db: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """The tables of the farm database that hold rows (its schema version aside)."""
    held = []
    for table in (*(name for name, _ in COPIED), "bundles"):
        rows = f"SELECT 1 FROM {table}"
        if table == "meta":
            rows += " WHERE key <> 'schema_version'"
        if db.execute(f"SELECT EXISTS ({rows})").fetchone() != (False,):
            held.append(table)
    return held
