"""Operational paper cuts, without a network: a full disk, the state dir's file modes and
where the state dir is.

A full disk is made with `PRAGMA max_page_count` on the store's own connection (no tiny
file system needed): SQLite then answers SQLITE_FULL and, for a statement that cannot
roll back alone, rolls the whole transaction back itself, as it does on a real full
disk. The supervisor must stop with the one line that names the full disk.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from farmd.cli import first_farmd_error
from farmd.cli.ops import farm_config
from farmd.config import SupervisorConfig, parse_address
from farmd.core import SubmitJob
from farmd.rows import Changes
from farmd.store import DATABASE_FILE, LOCK_FILE, SqliteStore, StoreError
from farmd.supervisor import Supervisor

FULL = "the disk is full (database or disk is full)"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fill(store: SqliteStore) -> None:
    """No page may be added to the store's database any more."""
    db = store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")


# --------------------------------------------------------------------------- full disk


def test_a_full_disk_is_named_not_the_failed_rollback_after_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    try:
        store.commit(Changes(locks={"w1": "drain"}))
        fill(store)
        big = {f"{'w' * 3000}{i}": "drain" for i in range(40)}  # more than the free pages
        with pytest.raises(StoreError) as caught:
            store.commit(Changes(locks=big))
        assert str(caught.value) == (
            f"cannot write the farm database {tmp_path / DATABASE_FILE}: {FULL}"
        )
        assert store.load().locks == {"w1": "drain"}  # nothing of the failed batch
        store._db.execute("PRAGMA max_page_count=1073741823")  # room again: still usable
        store.commit(Changes(locks={"w2": "purge"}))
        assert store.load().locks == {"w2": "purge"}
    finally:
        store.close()


async def test_the_supervisor_stops_with_one_line_on_a_full_disk(tmp_path: Path) -> None:
    config = SupervisorConfig(listen=parse_address("127.0.0.1:0"), state_dir=tmp_path)
    supervisor = Supervisor(config)
    with pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                assert isinstance(supervisor.store, SqliteStore)
                fill(supervisor.store)
                submit = SubmitJob(argv=("render", "x" * 200_000), now=1.0)
                supervisor._apply(supervisor.core.handle(submit))
    error = first_farmd_error(caught.value)
    assert isinstance(error, StoreError)
    assert str(error) == f"cannot write the farm database {tmp_path / DATABASE_FILE}: {FULL}"


# --------------------------------------------------------------------------- file modes


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask most systems start with: files 0644 unless farmd says otherwise."""
    old = os.umask(0o022)
    yield None
    os.umask(old)


@pytest.mark.usefixtures("loose_umask")
def test_the_store_files_are_the_owners_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    try:
        store.commit(Changes(locks={"w1": "drain"}))
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == sorted(
            [DATABASE_FILE, f"{DATABASE_FILE}-shm", f"{DATABASE_FILE}-wal", LOCK_FILE]
        )
        assert {name: mode(tmp_path / name) for name in names} == dict.fromkeys(names, 0o600)
    finally:
        store.close()


@pytest.mark.usefixtures("loose_umask")
def test_store_files_left_readable_by_others_are_tightened_on_open(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.commit(Changes(locks={"w1": "drain"}))
    # a crash leaves the WAL and its index behind; an older farmd made them all 0644
    side = [tmp_path / f"{DATABASE_FILE}-wal", tmp_path / f"{DATABASE_FILE}-shm"]
    for path in [tmp_path / DATABASE_FILE, tmp_path / LOCK_FILE, *side]:
        path.chmod(0o644)
    store._lock.release(keep=True)  # as if the process had died: the WAL stays
    reopened = SqliteStore(tmp_path)
    try:
        assert reopened.load().locks == {"w1": "drain"}
        modes = {path.name: mode(path) for path in tmp_path.iterdir()}
        assert modes == dict.fromkeys(modes, 0o600)
        assert len(modes) == 4
    finally:
        reopened.close()
        store._db.close()


# --------------------------------------------------------------------------- state dir


def serve_args(config: Path, state: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        config=str(config),
        listen=None,
        state=state,
        store=None,
        preempt_policy=None,
        metrics=None,
    )


def test_the_state_flag_and_farmd_state_win_over_the_config_files_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "farm.yaml"
    config.write_text(f"supervisor:\n  state_dir: {tmp_path / 'from-file'}\n")
    monkeypatch.delenv("FARMD_STATE", raising=False)
    assert farm_config(serve_args(config))[0].state_dir == tmp_path / "from-file"
    monkeypatch.setenv("FARMD_STATE", str(tmp_path / "from-env"))
    assert farm_config(serve_args(config))[0].state_dir == tmp_path / "from-env"
    flag = farm_config(serve_args(config, str(tmp_path / "from-flag")))[0]
    assert flag.state_dir == tmp_path / "from-flag"
    monkeypatch.setenv("FARMD_STATE", "")  # empty: as if unset
    assert farm_config(serve_args(config))[0].state_dir == tmp_path / "from-file"
