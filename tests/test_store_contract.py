"""The store contract, run against every durable store: SQLite and PostgreSQL.

What the supervisor relies on, whichever store holds its farm: every kind of row comes
back from a fresh open exactly as committed; batches are whole-row upserts where the
last row wins, so a merged batch (group commit) equals its batches in turn; a failed
commit leaves nothing; removed jobs go; history, recall, the audit log and pruning
read what was written; and a farm restored from the store shows what the farm it
came from showed. Each test gets an empty farm (`place`): a new state dir, or the
module's PostgreSQL database cleared. What is one store's own (SQLite's files and
migrations, PostgreSQL's migration lock and fencing) is tested beside it, in
`test_store` and `test_store_postgres`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from farmd.core import KillJobs, ReclaimOrphans, RemoveJobs, Scheduler, SubmitJob
from farmd.rows import AuditRow, Changes, Snapshot
from farmd.store import SqliteStore, Store, StoreError
from tests.pg_support import clear_farm
from tests.restore_support import (
    RandomFarm,
    busy_farm,
    frame_row,
    job_row,
    requeued_by_hand,
    restored,
    running_frames,
    seen,
    token,
    user,
)


class Place:
    """Where the store under test keeps a farm: opened there, and opened again."""

    def __init__(self, kind: str, directory: Path, url: str) -> None:
        self.kind = kind
        self.directory = directory
        self.url = url
        self.where = str(directory) if kind == "sqlite" else url
        self._opened: list[Store] = []
        self._fresh = itertools.count(1)

    def open(self) -> Store:
        if self.kind == "sqlite":
            store: Store = SqliteStore(self.directory)
        else:
            from farmd.store_postgres import PostgresStore

            store = PostgresStore(self.url)
        self._opened.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        store.close()
        return self.open()

    def load_fresh(self) -> Snapshot:
        """What a new supervisor would load: a fresh open's `load`."""
        store = self.open()
        try:
            return store.load()
        finally:
            store.close()

    def fresh(self) -> None:
        """Move to an empty farm (every store opened so far must be closed)."""
        if self.kind == "sqlite":
            self.directory = self.directory.with_name(f"state{next(self._fresh)}")
        else:
            clear_farm(self.url)

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def place(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Place]:
    url = ""
    if store_kind == "postgresql":
        url = request.getfixturevalue("module_postgres_url")
        clear_farm(url)
    opened = Place(store_kind, tmp_path / "state", url)
    try:
        yield opened
    finally:
        opened.close_all()


@pytest.fixture
def store(place: Place) -> Store:
    return place.open()


def entry(at: float, who: str = "admin", name: str = "", job_ids: str = "") -> AuditRow:
    return AuditRow(
        at=at,
        who=who,
        user=name,
        peer="127.0.0.1:5000",
        request="submit",
        target="name=shot",
        result="ok",
        job_ids=job_ids,
    )


def retired(job_id: int, at: float, state: str = "complete", **fields: object) -> object:
    """A job row in history: moved at `at`, with its summary."""
    summary = json.dumps({"id": job_id, "state": state, "name": f"job{job_id}"})
    return job_row(job_id, retired_at=at, summary=summary, **fields)


# --------------------------------------------------------------------------- round trip


def test_every_kind_of_row_survives_commit_close_and_a_fresh_open(place: Place) -> None:
    jobs = (
        job_row(1),
        job_row(
            2, name="", cluster="/", priority=1, restrictions="", cross_cluster="", argv=("x",)
        ),
        job_row(3, depends_on=("1:complete", "2:frames"), submitted_at=0.1 + 0.2, waiting_on=(1,)),
        job_row(4, chunk=10, parent=3, uninterruptible=True, waiting_on=()),
        job_row(
            2**62, instances=3, retries=2, retry_delay=1e-300, time_limit=math.inf,
            job_type="blender-render", requires="gpu>=1 && os=linux", reserve="slots=2",
            frames="1-10x3", request_key="k-ünï", request_digest="d" * 64, owner="bob",
            env=("A=1", "EMPTY=", "Ü=☃"), release='{"name": "b", "version": 3}',
            params='{"scene": "/a.blend"}', notify="http://127.0.0.1:9/done",
            started_at=12.5, ended_at=1.7976931348623157e308,
        ),
    )  # fmt: skip
    frames = (
        # positions follow the range as written: "5,1,3"
        frame_row(1, 5, 0, state="complete", worker="w1", attempts=2, started_at=10.5,
                  finished_at=11.25, exit_code=0),
        frame_row(1, 1, 1, state="running", worker="w2", attempts=1, started_at=12.0,
                  taken="slots=2,gpu=1"),
        frame_row(1, 3, 2, state="failed", worker="w1", attempts=1, started_at=1.0,
                  finished_at=2.0, exit_code=-9, failures=3, failed_on="w1,w3", retry_at=99.5),
        frame_row(2, 1, 0, state="killed", worker="w3", attempts=1, finished_at=3.0),
        frame_row(3, 1, 0),
        frame_row(4, 1, 0, members="1-10", state="suspended", worker="w1", attempts=1,
                  stopped=True),
        frame_row(4, 11, 1, members="11-13,15"),
        frame_row(2**62, 2**40, 0, exit_code=2**31),
    )  # fmt: skip
    users = (user("alice", role="admin"), user("bob", clusters="/show1,/show2", revoked_at=5.0))
    tokens = (token(1), token(2, clusters=None, revoked_at=7.0))
    locks = {"w1": "drain", "w2": "purge"}
    deployments = {"/show1": {"releases": ["a", "ü"], "n": 2, "f": 0.5}}
    kept = Snapshot(jobs, frames, 2**62 + 1, locks, users, tokens, deployments)

    store = place.open()
    store.commit(
        Changes(
            jobs,
            frames,
            2**62 + 1,
            locks=locks,
            users=users,
            worker_tokens=tokens,
            deployments=deployments,
        )
    )
    assert store.load() == kept
    store.close()
    assert place.load_fresh() == kept


def test_a_new_farm_loads_empty_with_next_job_id_1(store: Store) -> None:
    assert store.load() == Snapshot((), (), 1)


def test_frames_load_in_range_order_not_number_order(store: Store) -> None:
    rows = tuple(frame_row(1, n, i) for i, n in enumerate((30, 10, 20)))
    store.commit(Changes((job_row(1),), tuple(reversed(rows)), 2))
    assert store.load().frames == rows


def test_upserts_keep_the_last_row_and_the_last_next_job_id(store: Store) -> None:
    store.commit(Changes((job_row(1), job_row(2)), (frame_row(1, 1, 0), frame_row(2, 1, 0)), 3))
    running = frame_row(1, 1, 0, state="running", worker="w1", attempts=1, started_at=5.0)
    store.commit(Changes((job_row(1, priority=7),), (running,), 3))
    done = attrs.evolve(running, state="complete", finished_at=6.0, exit_code=0)
    store.commit(Changes((), (done,), None))  # no next_job_id: it stays
    store.commit(Changes((job_row(3),), (frame_row(3, 1, 0),), 4))

    snapshot = store.load()
    assert snapshot.jobs == (job_row(1, priority=7), job_row(2), job_row(3))
    assert snapshot.frames == (done, frame_row(2, 1, 0), frame_row(3, 1, 0))
    assert snapshot.next_job_id == 4


def test_a_row_given_twice_in_one_batch_is_the_last_one(store: Store) -> None:
    # The core's changes are merged per key, but a store must not rely on it.
    store.commit(
        Changes(
            (job_row(1, priority=1), job_row(1, priority=2)),
            (frame_row(1, 1, 0), frame_row(1, 1, 0, state="running", attempts=1)),
            2,
            users=(user("bob"), user("bob", role="admin")),
            worker_tokens=(token(1), token(1, hosts="gpu-*")),
        )
    )
    snapshot = store.load()
    assert snapshot.jobs == (job_row(1, priority=2),)
    assert snapshot.frames == (frame_row(1, 1, 0, state="running", attempts=1),)
    assert snapshot.users == (user("bob", role="admin"),)
    assert snapshot.worker_tokens == (token(1, hosts="gpu-*"),)


def test_users_tokens_locks_and_deployments_are_replaced_whole(store: Store) -> None:
    store.commit(
        Changes(
            users=(user("bob"), user("alice")),
            worker_tokens=(token(1), token(2)),
            locks={"w1": "drain"},
            deployments={"/": {"a": 1}},
        )
    )
    store.commit(
        Changes(
            users=(user("bob", revoked_at=9.0),),
            worker_tokens=(token(2, revoked_at=9.5),),
            locks={},
            deployments={"/": {"b": [2]}},
        )
    )
    store.commit(Changes(next_job_id=5))  # None leaves locks and deployments as they were
    snapshot = store.load()
    assert snapshot.users == (user("alice"), user("bob", revoked_at=9.0))  # by name
    assert snapshot.worker_tokens == (token(1), token(2, revoked_at=9.5))
    assert snapshot.locks == {}
    assert snapshot.deployments == {"/": {"b": [2]}}
    assert snapshot.next_job_id == 5


def test_users_load_in_code_point_order_of_their_names(store: Store) -> None:
    names = ("bob", "Zoë", "alice", "Ärger", "_x", "a-b", "ab")
    store.commit(Changes(users=tuple(user(name) for name in names)))
    assert [u.name for u in store.load().users] == sorted(names)


def test_an_empty_commit_changes_nothing(store: Store) -> None:
    store.commit(Changes((job_row(1),), (frame_row(1, 1, 0),), 2))
    store.commit(Changes())
    assert store.load() == Snapshot((job_row(1),), (frame_row(1, 1, 0),), 2)


def test_a_commit_that_fails_leaves_nothing_behind(place: Place, store: Store) -> None:
    store.commit(Changes((job_row(1),), (frame_row(1, 1, 0),), 2))
    orphan_frame = frame_row(99, 1, 0)  # no job 99: the foreign key refuses the batch
    with pytest.raises(StoreError) as caught:
        store.commit(
            Changes(
                (job_row(2),),
                (frame_row(2, 1, 0), orphan_frame),
                3,
                users=(user("bob"),),
                audit=(entry(1.0),),
                locks={"w": "drain"},
            )
        )
    message = str(caught.value)
    assert message.startswith(f"cannot write the farm database {place.where}"), message
    assert "\n" not in message
    assert store.load() == Snapshot((job_row(1),), (frame_row(1, 1, 0),), 2)
    assert store.audit(10, None, None, None, 0.0) == []
    store.commit(Changes((job_row(2),), (frame_row(2, 1, 0),), 3))  # still usable
    assert store.load().next_job_id == 3


def test_committing_merged_batches_equals_committing_them_in_turn(place: Place) -> None:
    batches = [
        Changes((job_row(1),), (frame_row(1, 1, 0), frame_row(1, 2, 1)), 2),
        Changes((), (frame_row(1, 1, 0, state="running", worker="w", attempts=1),), 2),
        Changes((job_row(2, depends_on=("1",)),), (frame_row(2, 1, 0),), 3, users=(user("a"),)),
        Changes((job_row(1, priority=3),), (frame_row(1, 1, 0, state="complete", attempts=1),), 3),
        Changes((job_row(3),), (frame_row(3, 1, 0),), 4, locks={"w": "drain"}),
        Changes(removed=(3,), users=(user("a", revoked_at=1.0),), locks={}),
    ]
    store = place.open()
    for batch in batches:
        store.commit(batch)
    in_turn = store.load()
    store.close()
    place.fresh()
    store = place.open()
    store.commit(Changes.merge(batches))
    assert store.load() == in_turn


def test_removed_jobs_are_deleted_for_good(place: Place) -> None:
    core = Scheduler()
    store = place.open()
    for event in (
        SubmitJob(argv=("a",), frames="1-3", now=1.0),
        SubmitJob(argv=("b",), now=1.0),
        KillJobs(job_ids=(1,), now=2.0),
        RemoveJobs(job_ids=(1,), now=3.0),
    ):
        store.commit(core.handle(event).changes)
    store.close()
    snapshot = place.load_fresh()
    assert [job.id for job in snapshot.jobs] == [2]
    # job 1's killed frames had rows of their own; job 2's untouched frame never had one
    assert {frame.job_id for frame in snapshot.frames} == set()
    assert snapshot.next_job_id == 3


# --------------------------------------------------------------------------- history


def history_farm(store: Store) -> None:
    """Jobs 1-6 in history, 7 and its sub-job 8 live: 2 is 1's sub-job and 3 is 2's, 4
    depends on 1, 5 on 4 (and on the live 7), 6 was submitted under a key and has an
    unreadable summary."""
    store.commit(
        Changes(
            (
                retired(1, at=50.0, cluster="/a", request_key="k1"),
                retired(2, at=50.0, cluster="/a", parent=1, state="failed"),
                retired(3, at=50.0, cluster="/a/b", parent=2),
                retired(4, at=40.0, cluster="/b", depends_on=("1:complete",)),
                retired(5, at=60.0, cluster="/b", depends_on=("4", "7:frames"), state="killed"),
                job_row(6, cluster="/b", retired_at=30.0, summary="{not json", request_key="k6"),
                job_row(7, cluster="/b"),
                job_row(8, parent=7, cluster="/b"),
            ),
            (
                frame_row(1, 3, 1, state="complete", attempts=1),
                frame_row(1, 1, 0, state="complete", attempts=1),
                frame_row(3, 1, 0, state="complete", attempts=2, exit_code=0),
                frame_row(7, 1, 0, state="running", worker="w", attempts=1),
            ),
            9,
        )
    )


def ids(snapshot: Snapshot) -> list[int]:
    return [job.id for job in snapshot.jobs]


def test_history_lists_the_summaries_of_jobs_in_history_by_id(store: Store) -> None:
    history_farm(store)
    assert [job.id for job in store.load().jobs] == [7, 8]  # history is not loaded
    assert [f.job_id for f in store.load().frames] == [7]
    listed = store.history(100, None)
    assert [job["id"] for job in listed] == [1, 2, 3, 4, 5, 6]
    assert listed[1] == {"id": 2, "state": "failed", "name": "job2"}
    assert listed[5] == {"id": 6, "state": "unknown", "reason": "its stored summary is unreadable"}
    assert [job["id"] for job in store.history(2, None)] == [1, 2]
    assert [job["id"] for job in store.history(2, 2)] == [3, 4]
    assert store.history(10, 6) == []


def test_history_counts_by_cluster_and_state(store: Store) -> None:
    history_farm(store)
    store.commit(Changes(removed=(6,)))  # its summary is unreadable
    assert sorted(store.history_counts()) == [
        ("/a", "complete", 1),
        ("/a", "failed", 1),
        ("/a/b", "complete", 1),
        ("/b", "complete", 1),
        ("/b", "killed", 1),
    ]


def test_expired_gives_the_oldest_moved_by_a_time_first(store: Store) -> None:
    history_farm(store)
    assert store.expired(45.0, 10) == [6, 4]
    assert store.expired(50.0, 10)[:2] == [6, 4]
    assert sorted(store.expired(50.0, 10)) == [1, 2, 3, 4, 6]
    assert store.expired(1000.0, 1) == [6]
    assert store.expired(29.0, 10) == []


def test_recall_brings_the_family_and_what_it_depends_on_from_history(store: Store) -> None:
    history_farm(store)
    # 3's family is 1, 2, 3 (up to the top, then down); 5 depends on 4, which depends on
    # 1; the live 7 and 8 are the scheduler's, never recalled
    assert ids(store.recall([3])) == [1, 2, 3]
    recalled = store.recall([5])
    assert ids(recalled) == [1, 2, 3, 4, 5]
    assert [(f.job_id, f.number) for f in recalled.frames] == [(1, 1), (1, 3), (3, 1)]
    assert recalled.jobs[4] == retired(
        5, at=60.0, cluster="/b", depends_on=("4", "7:frames"), state="killed"
    )
    assert ids(store.recall([7, 8, 404])) == []
    assert ids(store.recall([], ["k6"])) == [6]
    assert ids(store.recall([], ["k1", "no-such-key"])) == [1, 2, 3]
    assert store.recall([], ["k6"]).next_job_id == 1  # a recall is rows, not the farm


def test_a_commit_is_seen_by_the_next_read(store: Store) -> None:
    for job_id in range(1, 6):
        store.commit(Changes((retired(job_id, at=float(job_id)),), (), job_id + 1))
        assert [job["id"] for job in store.history(10, None)][-1] == job_id
        assert ids(store.recall([job_id]))[-1] == job_id
        assert store.expired(100.0, 10)[-1] == job_id


# --------------------------------------------------------------------------- audit


def test_audit_filters_newest_first_and_prunes(store: Store) -> None:
    store.commit(
        Changes(
            audit=(
                entry(10.0, name="bob", job_ids=",1,12,"),
                entry(20.0, name="alice", job_ids=",2,"),
                entry(30.0, name="bob", job_ids=",12,"),
            )
        )
    )
    store.commit(Changes(audit=(entry(40.0, who="token", job_ids=",112,"),)))
    every = store.audit(100, None, None, None, 0.0)
    assert [e["at"] for e in every] == [40.0, 30.0, 20.0, 10.0]
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    assert every[1] == {
        "id": every[1]["id"],
        "at": 30.0,
        "who": "admin",
        "user": "bob",
        "peer": "127.0.0.1:5000",
        "request": "submit",
        "target": "name=shot",
        "result": "ok",
    }
    assert [e["at"] for e in store.audit(100, None, "bob", None, 0.0)] == [30.0, 10.0]
    assert [e["at"] for e in store.audit(100, None, None, 12, 0.0)] == [30.0, 10.0]
    assert [e["at"] for e in store.audit(100, None, "bob", 1, 0.0)] == [10.0]
    assert [e["at"] for e in store.audit(100, None, None, None, 20.0)] == [40.0, 30.0, 20.0]
    assert [e["at"] for e in store.audit(2, None, None, None, 0.0)] == [40.0, 30.0]
    assert [e["at"] for e in store.audit(2, every[1]["id"], None, None, 0.0)] == [20.0, 10.0]
    assert store.audit(100, None, "carol", None, 0.0) == []

    newest = every[0]["id"]
    store.commit(Changes(audit_before=30.0))
    assert [e["at"] for e in store.audit(100, None, None, None, 0.0)] == [40.0, 30.0]
    store.commit(Changes(audit_before=100.0))
    assert store.audit(100, None, None, None, 0.0) == []
    store.commit(Changes(audit=(entry(50.0),)))
    (last,) = store.audit(100, None, None, None, 0.0)
    assert last["id"] > newest  # ids are never reused, even once pruned


# --------------------------------------------------------------------------- restore


@pytest.mark.parametrize("group", [1, 3, 1000], ids=["one-by-one", "groups-of-3", "all-at-once"])
def test_restore_shows_the_same_farm(place: Place, group: int) -> None:
    farm, _, running = busy_farm()
    store = place.open()
    batches = farm.changes
    for i in range(0, len(batches), group):
        store.commit(Changes.merge([c for c in batches[i : i + group] if c]))
    store.close()
    core = restored(place.load_fresh())

    assert seen(core) == seen(farm.core)
    assert core.orphans == len(running) == len(running_frames(farm.core))
    # the next job gets the same id in both
    submit = SubmitJob(argv=("x",), now=farm.now())
    assert core.handle(submit).result == farm.core.handle(submit).result


@pytest.mark.parametrize("seed", range(6))
def test_random_farms_restore_to_what_they_showed(place: Place, seed: int) -> None:
    model = RandomFarm(seed)
    farm = model.farm
    store = place.open()
    committed = 0
    for checkpoint in range(8):
        for _ in range(40):
            model.step()
        store.commit(Changes.merge([c for c in farm.changes[committed:] if c]))
        committed = len(farm.changes)
        core = restored(store.load())
        assert seen(core) == seen(farm.core), f"checkpoint {checkpoint}"
        assert core.orphans == len(running_frames(farm.core))
    store.close()
    snapshot = place.load_fresh()
    core = restored(snapshot)
    assert seen(core) == seen(farm.core)
    core.handle(ReclaimOrphans(now=farm.now()))
    assert seen(core) == seen(restored(requeued_by_hand(snapshot)))
