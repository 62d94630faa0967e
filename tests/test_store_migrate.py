"""`farmd store migrate`: a farm moved from a SQLite state dir into PostgreSQL is the
same farm. A real state dir (a busy farm's live jobs, jobs moved to history by the
scheduler, users, worker tokens, an audit log partly pruned, the farm's token files)
is copied; a `PostgresStore` on the target then loads the same snapshot and reads the
same history, audit log and recalls as the `SqliteStore` did. Refusals (a target that
holds rows, a state dir a supervisor holds) are one line and change nothing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from farmd.core import KillJobs, Scheduler, SubmitJob, Tick
from farmd.rows import AuditRow, Changes
from farmd.store import SqliteStore, StoreError
from farmd.store_migrate import migrate
from farmd.store_postgres import POSTGRES_SCHEMA_VERSION, PostgresStore
from farmd.supervisor.shelf import RELEASES_DIR
from farmd.supervisor.tokens import USER_TOKEN_FILE, ensure_token
from tests.restore_support import busy_farm, token, user

ROOT = Path(__file__).resolve().parent.parent
AFTER = 60.0  # seconds after its end that a job moves to history


def entry(at: float, job_ids: str = "") -> AuditRow:
    return AuditRow(at, "admin", "alice", "127.0.0.1:1", "submit", "", "ok", job_ids)


def make_farm(state: Path) -> dict[str, int]:
    """A state dir as a supervisor leaves it; how many rows of each kind it holds."""
    farm, _, _ = busy_farm()
    store = SqliteStore(state)
    try:
        for changes in farm.changes:
            store.commit(changes)
        # two jobs of another scheduler's that ended and moved to history (ids after
        # the busy farm's: one farm, one id sequence)
        core = Scheduler(history_after=AFTER)
        first = farm.core.handle(SubmitJob(argv=("x",), now=1.0)).result
        for job_id in range(1, first + 2):
            out = core.handle(SubmitJob(argv=("x",), frames="1-2", now=1.0))
            if job_id >= first:
                store.commit(out.changes)
        store.commit(core.handle(KillJobs(job_ids=(first, first + 1), now=2.0)).changes)
        moved = core.handle(Tick(now=2.0 + AFTER)).changes
        assert {job.id for job in moved.jobs} == {first, first + 1}
        store.commit(Changes(jobs=moved.jobs, next_job_id=first + 2))
        store.commit(
            Changes(
                users=(user("alice", role="admin"), user("bob", revoked_at=3.0)),
                worker_tokens=(token(1), token(2)),
                audit=tuple(entry(float(at), f",{first},") for at in range(1, 6)),
                locks={"w1": "drain"},
                deployments={"/show1": {"releases": ["r"]}},
            )
        )
        store.commit(Changes(audit=(entry(10.0),)))  # id 6
        store.commit(Changes(audit=(entry(0.5),)))  # id 7, the highest given: the clock stepped
        store.commit(Changes(audit_before=3.0))  # prunes ids 1, 2 and 7
        snapshot = store.load()
        counts = {
            "jobs": len(snapshot.jobs) + len(store.history(1000, None)),
            "history frames": len(store.recall([first, first + 1]).frames),
            "frames": len(snapshot.frames),
        }
    finally:
        store.close()
    ensure_token(state)
    ensure_token(state, USER_TOKEN_FILE, 0o640)
    return counts


def test_a_migrated_farm_reads_the_same_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    state = tmp_path / "state"
    counts = make_farm(state)

    copied = migrate(state, postgres_url)
    assert counts["history frames"] > 0
    assert (copied.jobs, copied.frames) == (
        counts["jobs"],
        counts["frames"] + counts["history frames"],
    )
    assert (copied.users, copied.worker_tokens, copied.audit, copied.secrets) == (2, 2, 4, 2)

    lite, pg = SqliteStore(state), PostgresStore(postgres_url)
    try:
        assert pg.load() == lite.load()
        assert pg.history(1000, None) == lite.history(1000, None)
        assert sorted(pg.history_counts()) == sorted(lite.history_counts())
        assert pg.audit(100, None, None, None, 0.0) == lite.audit(100, None, None, None, 0.0)
        retired = [job["id"] for job in lite.history(1000, None)]
        assert len(retired) == 2
        assert pg.recall(retired) == lite.recall(retired)
        assert pg.expired(1e9, 100) == lite.expired(1e9, 100)
        farm_token = (state / "token").read_text().strip()
        assert pg.shared_secret("token", lambda: "new") == farm_token
        assert pg.meta_value("secret:user_token") == (state / USER_TOKEN_FILE).read_text().strip()
        # the next audit id is past every id SQLite gave, the pruned ones too
        assert [e["id"] for e in pg.audit(100, None, None, None, 0.0)] == [6, 5, 4, 3]
        pg.commit(Changes(audit=(entry(11.0),)))
        assert pg.audit(1, None, None, None, 0.0)[0]["id"] == 8
    finally:
        lite.close()
        pg.close()


def test_release_bundles_are_copied_into_the_bundles_table_and_a_damaged_one_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    state = tmp_path / "state"
    make_farm(state)
    releases = state / RELEASES_DIR
    releases.mkdir()
    kept = {}
    for text in (b"one bundle", b"another bundle"):
        digest = "sha256:" + hashlib.sha256(text).hexdigest()
        (releases / f"{digest.removeprefix('sha256:')}.tar.gz").write_bytes(text)
        kept[digest] = text
    (releases / "uploads").mkdir()  # what an upload cut short leaves: not a bundle
    (releases / "uploads" / "3.part").write_bytes(b"half")

    damaged = releases / f"{'0' * 64}.tar.gz"
    damaged.write_bytes(b"not what its name says")
    with pytest.raises(StoreError) as caught:
        migrate(state, postgres_url)
    assert f"the release bundle {damaged} is damaged" in str(caught.value)
    assert "nothing was copied" in str(caught.value)
    damaged.unlink()

    copied = migrate(state, postgres_url)
    assert copied.bundles == 2
    pg = PostgresStore(postgres_url)
    try:
        assert pg.bundle_digests() == sorted(kept)
        for digest, text in kept.items():
            assert pg.read_bundle(digest) == text
    finally:
        pg.close()
    with psycopg.connect(postgres_url) as db:
        sizes = db.execute("SELECT digest, size FROM bundles ORDER BY digest").fetchall()
    assert sizes == sorted((digest, len(text)) for digest, text in kept.items())


def test_a_target_that_holds_a_farm_is_refused_and_left_alone(
    tmp_path: Path, postgres_url: str
) -> None:
    state = tmp_path / "state"
    SqliteStore(state).close()
    pg = PostgresStore(postgres_url)
    try:
        pg.commit(Changes(next_job_id=7))
        pg.shared_secret("token", lambda: "theirs")
    finally:
        pg.close()

    with pytest.raises(StoreError) as caught:
        migrate(state, postgres_url)
    message = str(caught.value)
    assert "\n" not in message
    assert f"the farm database {postgres_url} already holds a farm (rows in meta)" in message
    assert "nothing was copied" in message
    with psycopg.connect(postgres_url) as db:
        rows = db.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    assert rows == [
        ("next_job_id", "7"),
        ("schema_version", str(POSTGRES_SCHEMA_VERSION)),
        ("secret:token", "theirs"),
    ]


def test_a_state_dir_a_supervisor_holds_is_refused(tmp_path: Path, postgres_url: str) -> None:
    state = tmp_path / "state"
    running = SqliteStore(state)
    try:
        with pytest.raises(StoreError, match="in use by another running farmd supervisor"):
            migrate(state, postgres_url)
    finally:
        running.close()
    with psycopg.connect(postgres_url) as db:  # not even the schema was made
        assert db.execute("SELECT to_regclass('meta')").fetchone() == (None,)
    with pytest.raises(StoreError, match="there is no farm database in"):
        migrate(tmp_path / "nowhere", postgres_url)
    assert not (tmp_path / "nowhere").exists()


def test_farmd_store_migrate_prints_what_it_copied(tmp_path: Path, postgres_url: str) -> None:
    state = tmp_path / "state"
    store = SqliteStore(state)
    try:
        store.commit(Changes(users=(user("alice"),), worker_tokens=(token(1),)))
    finally:
        store.close()
    ensure_token(state)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "farmd", "store", "migrate"]
    done = subprocess.run(
        [*argv, "--from", f"sqlite:{state}", "--to", postgres_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        f"copied the farm in {state} to {postgres_url}: 0 jobs, 0 frame rows, 1 user, "
        "1 worker token, 0 audit entries, 1 farm token, 0 release bundles\n"
    )
    again = subprocess.run(
        [*argv, "--from", f"sqlite:{state}", "--to", postgres_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert again.returncode == 1
    assert again.stderr.startswith("farmd: error: the farm database ")
    assert again.stderr.count("\n") == 1
