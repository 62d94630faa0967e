"""PostgreSQL for the tests that need it: a database of their own, made and dropped.

The server is the machine's, on 127.0.0.1:5432 (trust authentication, user postgres).
`postgres_url` gives a test a fresh, empty database `farmd_t_<random hex>`, dropped
after it (`WITH (FORCE)`: a connection the test left open does not keep it); a module
that can share one between its tests uses `module_postgres_url` and `clear_farm`,
since making a database takes a tenth of a second. On a machine without the server
these tests skip, saying why, unless FARMD_REQUIRE_POSTGRES=1 (CI on a machine that
runs PostgreSQL sets it): then they fail, for a skip there would hide a broken farm.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Iterator

import pytest

SERVER = "127.0.0.1:5432"
ADMIN_URL = f"postgresql://postgres@{SERVER}/postgres"
FARM_TABLES = ("frames", "jobs", "users", "worker_tokens", "audit", "bundles")


@functools.cache
def _unreachable() -> str | None:
    """Why the server cannot be used, or None when it can (asked once per process)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a dependency of farmd
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3, autocommit=True) as db:
            db.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


def need_postgres() -> None:
    """Skip the calling test, saying why, when the server is not reachable (fail
    instead under FARMD_REQUIRE_POSTGRES=1)."""
    why = _unreachable()
    if why is None:
        return
    reason = f"PostgreSQL is not reachable at {SERVER}: {why}; these tests need it"
    if os.environ.get("FARMD_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (FARMD_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


@contextlib.contextmanager
def fresh_database(options: str = "") -> Iterator[str]:
    """A new, empty database's URL (made with CREATE DATABASE's `options`); the
    database is dropped on exit."""
    import psycopg

    need_postgres()
    name = f"farmd_t_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} {options}")
    try:
        yield f"postgresql://postgres@{SERVER}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def clear_farm(url: str) -> None:
    """Empty the farm database at `url` (if it has farmd's tables), keeping its schema:
    as a new farm, for the next test sharing the database."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        (meta,) = db.execute("SELECT to_regclass('meta')").fetchone() or (None,)
        if meta is None:
            return
        with db.transaction():
            for table in FARM_TABLES:
                db.execute(f"DELETE FROM {table}")
            db.execute("ALTER TABLE audit ALTER COLUMN id RESTART")
            db.execute("DELETE FROM meta WHERE key <> 'schema_version'")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of this test's own (dropped after it)."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A PostgreSQL database the module's tests share: each clears it (`clear_farm`)."""
    with fresh_database() as url:
        yield url
