"""Restore never dies on a stored row it cannot use: the job is quarantined.

A farm is built through the real scheduler and committed to a real `SqliteStore`; then
rows are corrupted by hand with sqlite3 (as a bad disk, a hand edit or an older farmd's
looser checks would leave them), the state dir is opened again and restored. Every
healthy job must come back as it was; each unusable one is kept out with why, its rows
untouched and its id never reused; its family goes with it; what depends on it is
blocked, naming it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from farmd.core import (
    ControlFrames,
    FarmSize,
    FrameEnded,
    KillJobs,
    ModifyJob,
    RemoveJobs,
    Restore,
    RunOnWorker,
    Scheduler,
    SubmitJob,
    WorkerJoined,
)
from farmd.errors import InternalError, JobSpecError, UnknownJobError
from farmd.jobs import Control
from farmd.rows import Changes, Snapshot
from farmd.store import DATABASE_FILE, SqliteStore

POISON = "/a" * 20_000  # 20,000 levels: the 40 KB submit that poisoned a state dir


class Farm:
    """A scheduler whose every change is committed to a store in `state`."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.core = Scheduler(resources={"license.nuke": 4})
        self.store = SqliteStore(state)
        self.clock = 1_700_000_000.0

    def now(self) -> float:
        self.clock += 0.5
        return self.clock

    def submit(self, **fields: Any) -> int:
        event = SubmitJob(argv=("render", "{frame}"), now=self.now(), **fields)
        job_id: int = self.apply(event).result
        return job_id

    def apply(self, event: Any) -> Any:
        outcome = self.core.handle(event)
        self.store.commit(outcome.changes)
        return outcome

    def close(self) -> None:
        self.store.close()


def corrupt(state: Path, sql: str, *args: Any) -> None:
    """Change the database by hand, as an editor (or a bad disk) would."""
    db = sqlite3.connect(state / DATABASE_FILE, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute(sql, args)
    finally:
        db.close()


def rows(state: Path, job_id: int) -> tuple[list[Any], list[Any]]:
    db = sqlite3.connect(state / DATABASE_FILE)
    try:
        job = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchall()
        frames = db.execute(
            "SELECT * FROM frames WHERE job_id = ? ORDER BY number", (job_id,)
        ).fetchall()
    finally:
        db.close()
    return job, frames


def reopen(state: Path) -> tuple[Scheduler, SqliteStore]:
    store = SqliteStore(state)
    core = Scheduler(resources={"license.nuke": 4})
    core.handle(Restore(snapshot=store.load(), now=0.0))
    return core, store


def views(core: Scheduler, ids: list[int]) -> dict[int, Any]:
    return {i: core.job_view(i) for i in ids}


# --------------------------------------------------------------------------- one bad row

# (what is corrupted, the SQL, what the reason says): each makes one job unusable
CORRUPTIONS: list[tuple[str, str, str]] = [
    ("a 20,000-level cluster", f"UPDATE jobs SET cluster = '{POISON}' WHERE id = ?", "256"),
    ("a relative cluster", "UPDATE jobs SET cluster = 'show1' WHERE id = ?", "start with '/'"),
    (
        "a too deep restriction",
        "UPDATE jobs SET restrictions = '" + "/r" * 17 + "/+' WHERE id = ?",
        "17 levels deep",
    ),
    ("a malformed restriction", "UPDATE jobs SET restrictions = '|| /x' WHERE id = ?", "column"),
    (
        "an over-long pattern prefix",
        "UPDATE jobs SET patterns = '" + "/p" * 200 + "+' WHERE id = ?",
        "longer than 256",
    ),
    ("an unknown frame state", "UPDATE frames SET state = 'exploded' WHERE job_id = ?", "exploded"),
    ("an unparsable chunk", "UPDATE frames SET members = '1-x' WHERE job_id = ?", "frame range"),
    ("a command that is not JSON", "UPDATE jobs SET argv = '[\"render' WHERE id = ?", "command"),
    ("an empty command", "UPDATE jobs SET argv = '[]' WHERE id = ?", "command"),
    ("a bad dependency", "UPDATE jobs SET depends_on = '[\"x:y\"]' WHERE id = ?", "x:y"),
    ("a dependency list that is a number", "UPDATE jobs SET depends_on = '12' WHERE id = ?", "12"),
    ("a priority that is text", "UPDATE jobs SET priority = 'high' WHERE id = ?", "high"),
    ("retries below zero", "UPDATE jobs SET retries = -1 WHERE id = ?", "retries"),
    ("a bad job type", "UPDATE jobs SET type = 'Nuke!' WHERE id = ?", "job type"),
    ("a bad requirement", "UPDATE jobs SET requires = '(((' WHERE id = ?", "((("),
    ("a bad reservation", "UPDATE jobs SET reserve = 'slots=' WHERE id = ?", "slots="),
    ("attempts that are text", "UPDATE frames SET attempts = 'many' WHERE job_id = ?", "many"),
    ("a frame range that does not parse", "UPDATE jobs SET frames = '1-x' WHERE id = ?", "1-x"),
    ("frame rows outside the range", "UPDATE jobs SET frames = '10-12' WHERE id = ?", "range"),
    ("a parent that is itself", "UPDATE jobs SET parent = id WHERE id = ?", "parent"),
    ("a chunk of 0 frames", "UPDATE jobs SET chunk = 0 WHERE id = ?", "chunk"),
]


@pytest.mark.parametrize(
    ("sql", "why"), [pytest.param(sql, why, id=label) for label, sql, why in CORRUPTIONS]
)
def test_a_job_whose_row_cannot_be_used_is_quarantined_and_the_rest_restored(
    tmp_path: Path, sql: str, why: str
) -> None:
    farm = Farm(tmp_path)
    before_id = farm.submit(name="before", cluster="/show1", frames="1-3")
    victim = farm.submit(name="victim", cluster="/show2", frames="1-4", priority=20)
    for control in (Control.BLOCK, Control.UNBLOCK):  # its frames get rows of their own
        farm.apply(ControlFrames(control=control, targets=(str(victim),), now=farm.now()))
    after_id = farm.submit(name="after", cluster="/show1/comp", restrictions="/show1/+")
    healthy = views(farm.core, [before_id, after_id])
    farm.close()
    corrupt(tmp_path, sql, victim)
    stored = rows(tmp_path, victim)

    core, store = reopen(tmp_path)  # before the fix: a traceback out of restore
    try:
        assert list(core.quarantined) == [victim]
        assert why in core.quarantined[victim], core.quarantined
        assert "\n" not in core.quarantined[victim]
        assert len(core.quarantined[victim]) <= 300
        assert views(core, [before_id, after_id]) == healthy
        assert [job["id"] for job in core.jobs_page()["jobs"]] == [before_id, after_id]
        # what the shell asks (it reads no dict of the core's)
        assert core.quarantine_report() == core.quarantined
        assert core.size() == FarmSize(jobs=2, frames=4, orphans=0, quarantined=1)
        assert core.job_summary(after_id) == core.jobs_page()["jobs"][1]
        with pytest.raises(UnknownJobError, match=f"job {victim} is quarantined"):
            core.job_view(victim)
        # the farm goes on: a new job gets a new id, and its commit leaves the row alone
        outcome = core.handle(SubmitJob(argv=("true",), now=1_800_000_000.0))
        assert outcome.result == after_id + 1
        store.commit(outcome.changes)
        assert rows(tmp_path, victim) == stored
    finally:
        store.close()


def test_frame_rows_without_a_job_row_are_quarantined_by_their_job_id(tmp_path: Path) -> None:
    farm = Farm(tmp_path)
    kept = farm.submit(name="kept")
    gone = farm.submit(name="gone", frames="1-2")
    for control in (Control.BLOCK, Control.UNBLOCK):  # its frames get rows of their own
        farm.apply(ControlFrames(control=control, targets=(str(gone),), now=farm.now()))
    farm.close()
    corrupt(tmp_path, "DELETE FROM jobs WHERE id = ?", gone)  # with foreign keys off
    core, store = reopen(tmp_path)
    try:
        assert core.quarantined == {gone: "it has frame rows but no job row"}
        assert [job["id"] for job in core.jobs_page()["jobs"]] == [kept]
        assert core.next_job_id == gone + 1  # its id is not given out again
    finally:
        store.close()


def test_a_quarantined_job_id_is_never_reused_even_if_the_next_id_was_lost(
    tmp_path: Path,
) -> None:
    farm = Farm(tmp_path)
    first = farm.submit(name="first")
    last = farm.submit(name="last")
    farm.close()
    corrupt(tmp_path, f"UPDATE jobs SET cluster = '{POISON}' WHERE id = ?", last)
    corrupt(tmp_path, "DELETE FROM meta WHERE key = 'next_job_id' AND ? = ?", 1, 1)
    core, store = reopen(tmp_path)
    try:
        assert list(core.quarantined) == [last]
        assert core.next_job_id == last + 1
        assert core.handle(SubmitJob(argv=("true",), now=1.0)).result == last + 1
        assert [job["id"] for job in core.jobs_page()["jobs"]] == [first, last + 1]
    finally:
        store.close()


# --------------------------------------------------------------------------- families


def test_a_quarantined_jobs_family_is_quarantined_with_it(tmp_path: Path) -> None:
    farm = Farm(tmp_path)
    top = farm.submit(name="top")
    child = farm.submit(name="child", parent=top)
    grandchild = farm.submit(name="grandchild", parent=child)
    sibling = farm.submit(name="sibling", parent=top)
    stranger = farm.submit(name="stranger")
    for control in (Control.BLOCK, Control.UNBLOCK):  # its frames get rows of their own
        farm.apply(ControlFrames(control=control, targets=(str(child),), now=farm.now()))
    farm.close()
    # the middle of the family is unreadable: up and down, all of it goes
    corrupt(tmp_path, "UPDATE frames SET state = 'exploded' WHERE job_id = ?", child)
    core, store = reopen(tmp_path)
    try:
        assert "'exploded' is not a valid FrameState" in core.quarantined.pop(child)
        assert core.quarantined == {
            top: f"its sub-job (job {child}) is quarantined",
            grandchild: f"its parent (job {child}) is quarantined",
            sibling: f"its parent (job {top}) is quarantined",
        }
        assert [job["id"] for job in core.jobs_page()["jobs"]] == [stranger]
        # a sub-job cannot be added to a quarantined job either
        with pytest.raises(UnknownJobError, match=f"bad parent: job {top} is quarantined"):
            core.handle(SubmitJob(argv=("true",), parent=top, now=1.0))
    finally:
        store.close()


# --------------------------------------------------------------------------- dependents


def test_a_job_that_depends_on_a_quarantined_job_is_blocked_naming_it(tmp_path: Path) -> None:
    farm = Farm(tmp_path)
    farm.apply(WorkerJoined(name="w", cluster="/", slots=4, now=farm.now()))
    victim = farm.submit(name="victim", frames="1-2")
    whole = farm.submit(name="whole", depends_on=(str(victim),))
    by_frames = farm.submit(name="by-frames", frames="1-2", depends_on=(f"{victim}:frames",))
    done_mode = farm.submit(name="done-mode", depends_on=(f"{victim}:done",))
    free = farm.submit(name="free")
    farm.close()
    corrupt(tmp_path, "UPDATE jobs SET restrictions = '/a//b' WHERE id = ?", victim)
    core, store = reopen(tmp_path)
    try:
        assert list(core.quarantined) == [victim]
        for job_id in (whole, by_frames, done_mode):
            job = core.job_view(job_id)
            assert job["state"] == "blocked", job
            assert job["reason"].startswith(f"job {victim} is quarantined: "), job
            assert "'/a//b'" in job["reason"], job
        # nothing blocked runs; the free job does, once a worker asks
        joined = core.handle(WorkerJoined(name="w", cluster="/", slots=4, now=2e9))
        started = {c.job_id for c in joined.commands if isinstance(c, RunOnWorker)}
        assert started == {free}
        # the blocked ones can still be killed (and then removed) by an admin
        core.handle(KillJobs(job_ids=(whole, by_frames, done_mode), now=2e9 + 1))
        assert core.handle(RemoveJobs(job_ids=(whole,), now=2e9 + 2)).result == [whole]
    finally:
        store.close()


def test_a_dependency_met_before_the_quarantine_stays_met(tmp_path: Path) -> None:
    farm = Farm(tmp_path)
    farm.apply(WorkerJoined(name="w", cluster="/", slots=1, now=farm.now()))
    outcome = farm.apply(SubmitJob(argv=("true",), name="victim", now=farm.now()))
    victim = outcome.result
    (start,) = [c for c in outcome.commands if isinstance(c, RunOnWorker)]
    ended = FrameEnded(
        worker="w", job_id=victim, frame=1, attempt=start.attempt, exit_code=0, now=farm.now()
    )
    farm.apply(ended)
    dependent = farm.submit(name="dependent", depends_on=(str(victim),))
    assert farm.core.job_view(dependent)["waiting_on"] == []  # met: it runs already
    farm.close()
    corrupt(tmp_path, f"UPDATE jobs SET cluster = '{POISON}' WHERE id = ?", victim)
    core, store = reopen(tmp_path)
    try:
        assert list(core.quarantined) == [victim]
        job = core.job_view(dependent)  # met once, met for good: not blocked by it
        assert (job["state"], job["waiting_on"], job["reason"]) == ("running", [], "")
    finally:
        store.close()


# --------------------------------------------------------------------------- the snapshot


def test_restore_is_total_over_a_snapshot_of_garbage_rows() -> None:
    """Rows as any store could hand them over (wrong types everywhere): restore
    quarantines, never raises."""
    from farmd.rows import FrameRow, JobRow

    oddities: list[Callable[[int], Any]] = [
        lambda i: JobRow(i, None, "/", 5, "", "", ("x",), (), 0.0),  # type: ignore[arg-type]
        lambda i: JobRow(i, "n", "/", 5, 7, "", ("x",), (), 0.0),  # type: ignore[arg-type]
        lambda i: JobRow(i, "n", "/", True, "", "", ("x",), (), 0.0),
        lambda i: JobRow(i, "n", "/", 5, "", "", "x", (), 0.0),  # type: ignore[arg-type]
        lambda i: JobRow(i, "n", "/", 5, "", "", ("x",), (), float("nan")),
        lambda i: JobRow(i, "n", "/", 5, "", "", ("x",), (), 0.0, waiting_on="1"),  # type: ignore[arg-type]
        lambda i: JobRow(i, "n", "/", 5, "", "", ("x",), (), 0.0, parent=i + 1),
    ]
    jobs = tuple(make(i + 1) for i, make in enumerate(oddities))
    frames = (
        *(FrameRow(job.id, 1, 0, "pending", None, 0, None, None, None) for job in jobs),
        FrameRow(99, 1, 0, "running", None, 1, 1.0, None, None),  # no job, no worker
    )
    core = Scheduler()
    core.handle(Restore(snapshot=Snapshot(jobs, frames, next_job_id=1), now=0.0))
    assert sorted(core.quarantined) == [*range(1, len(oddities) + 1), 99]
    assert core.jobs == {}
    assert core.next_job_id == 100
    assert json.dumps(core.quarantined)  # plain text, for the log


def test_a_good_snapshot_quarantines_nothing(tmp_path: Path) -> None:
    farm = Farm(tmp_path)
    ids = [farm.submit(name=f"j{i}", frames="1-3", chunk=2) for i in range(3)]
    seen = views(farm.core, ids)
    farm.close()
    core, store = reopen(tmp_path)
    try:
        assert core.quarantined == {}
        assert views(core, ids) == seen
    finally:
        store.close()


def test_the_core_refuses_a_job_name_with_a_control_character() -> None:
    core = Scheduler()
    for name in ("a\nb", "tab\there", "del\x7f", "c1\x85", "line\u2028sep"):
        with pytest.raises(JobSpecError, match="control character"):
            core.handle(SubmitJob(argv=("true",), name=name, now=1.0))
    assert core.jobs == {}
    assert core.handle(SubmitJob(argv=("true",), name="ünïcode ☃ ok", now=1.0)).result == 1


def test_merged_changes_of_a_restored_farm_never_name_a_quarantined_job(tmp_path: Path) -> None:
    farm = Farm(tmp_path)
    victim = farm.submit(name="victim")
    other = farm.submit(name="other")
    farm.close()
    corrupt(tmp_path, "UPDATE jobs SET cluster = 'nope' WHERE id = ?", victim)
    core, store = reopen(tmp_path)
    try:
        batches: list[Changes] = []
        for event in (
            WorkerJoined(name="w", cluster="/", slots=2, now=1.0),
            ModifyJob(job_id=other, priority=3, now=2.0),
        ):
            batches.append(core.handle(event).changes)
        merged = Changes.merge(batches)
        assert victim not in {row.id for row in merged.jobs}
        assert victim not in {row.job_id for row in merged.frames}
        assert victim not in merged.removed
    finally:
        store.close()


def test_restore_goes_through_the_door_once_and_only_into_an_empty_scheduler() -> None:
    core = Scheduler()
    outcome = core.handle(Restore(snapshot=Snapshot(next_job_id=7), now=0.0))
    assert outcome.commands == ()
    assert not outcome.changes  # nothing to write back: the rows came from the store
    assert core.next_job_id == 7
    core.handle(SubmitJob(argv=("true",), now=1.0))
    with pytest.raises(InternalError, match=r"restore needs an empty scheduler.*1 jobs"):
        core.handle(Restore(snapshot=Snapshot(), now=2.0))
    assert core.jobs_page()["jobs"][0]["id"] == 7  # the refused restore changed nothing


def test_an_event_the_core_does_not_know_is_our_bug() -> None:
    core = Scheduler()
    with pytest.raises(InternalError, match="unknown event"):
        core.handle("submit")  # type: ignore[arg-type]
