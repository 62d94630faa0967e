"""A standby's copy of the farm's rows, read again only where they changed.

Theory of operation
-------------------
A standby supervisor on PostgreSQL (`farmd.supervisor.standby`) keeps the farm's rows
warm, so that a takeover reads what changed since, not 100,000 rows. `WarmRows` holds
the rows `PostgresStore.load` would return, each with its **row version**: PostgreSQL's
`xmin`, the transaction that wrote that version of the row. Any write of a row (an
update, even to the same values, or a delete and insert) makes a new version with the
writer's transaction id, and a version seen once in a committed snapshot can never be
written again by that transaction (it has committed), so an equal `xmin` for the same
key is the same row. `read` runs inside one read-only repeatable-read transaction of
the store's reader (`PostgresStore.load_warm`): it lists the live jobs' keys and
versions, fetches the rows whose version it does not hold, and forgets those gone. The
small tables (meta, users, worker tokens) are read whole each time.

A row that did not change is returned as the *same object* as last time: the restore
(`farmd.core.restore.prebuild`) recognises a job it built from it by identity.

It answers `load` exactly: the same rows in the same order (jobs by id, frames by job
and position), and `snapshot_of` checks the meta rows as `load` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from farmd.rows import FrameRow, JobRow, Snapshot, UserRow, WorkerTokenRow
from farmd.store import (
    FRAME_COLUMNS,
    JOB_COLUMNS,
    TOKEN_SELECT,
    USER_SELECT,
    frame_from,
    job_from,
    snapshot_of,
)

if TYPE_CHECKING:
    import psycopg

_LIVE = "SELECT id FROM jobs WHERE retired_at IS NULL"
_JOB_VERSIONS = "SELECT id, xmin::text FROM jobs WHERE retired_at IS NULL ORDER BY id"
_FRAME_VERSIONS = (
    f"SELECT job_id, number, xmin::text FROM frames WHERE job_id IN ({_LIVE})"
    " ORDER BY job_id, position"
)
_JOBS_BY_ID = f"SELECT xmin::text, {', '.join(JOB_COLUMNS)} FROM jobs WHERE id = ANY(%s)"
_FRAMES_BY_KEY = (
    f"SELECT xmin::text, {', '.join(FRAME_COLUMNS)} FROM frames"
    " WHERE (job_id, number) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))"
)
_META_SELECT = "SELECT key, value FROM meta"


class WarmRows:
    """The farm's live rows as last read, each with its row version (see module docs)."""

    def __init__(self, where: str) -> None:
        self.where = where  # the database, as messages name it
        self._jobs: dict[int, tuple[str, JobRow]] = {}
        self._frames: dict[tuple[int, int], tuple[str, FrameRow]] = {}
        self.fetched = 0  # rows fetched by the last `read` (the others were kept)

    def read(self, db: psycopg.Connection[Any]) -> Snapshot:
        """The snapshot `load` would read now, fetching only the changed rows; `db` is
        in a repeatable-read transaction (one view of the database throughout)."""
        job_versions = db.execute(_JOB_VERSIONS).fetchall()
        frame_versions = db.execute(_FRAME_VERSIONS).fetchall()
        old_jobs, old_frames = self._jobs, self._frames
        stale_jobs = [i for i, v in job_versions if old_jobs.get(i, ("",))[0] != v]
        stale_frames = [
            (j, n) for j, n, v in frame_versions if old_frames.get((j, n), ("",))[0] != v
        ]
        fresh_jobs: dict[int, tuple[str, JobRow]] = {}
        if stale_jobs:
            for row in db.execute(_JOBS_BY_ID, (stale_jobs,)):
                job = job_from(row[1:])
                fresh_jobs[job.id] = (row[0], job)
        fresh_frames: dict[tuple[int, int], tuple[str, FrameRow]] = {}
        if stale_frames:
            keys = ([j for j, _ in stale_frames], [n for _, n in stale_frames])
            for row in db.execute(_FRAMES_BY_KEY, keys):
                frame = frame_from(row[1:])
                fresh_frames[(frame.job_id, frame.number)] = (row[0], frame)
        jobs = {i: fresh_jobs.get(i) or old_jobs[i] for i, _ in job_versions}
        frames = {
            (j, n): fresh_frames.get((j, n)) or old_frames[(j, n)] for j, n, _ in frame_versions
        }
        meta = {str(key): str(value) for key, value in db.execute(_META_SELECT)}
        users = tuple(
            UserRow(*row) for row in db.execute(f'{USER_SELECT} ORDER BY name COLLATE "C"')
        )
        tokens = tuple(WorkerTokenRow(*row) for row in db.execute(f"{TOKEN_SELECT} ORDER BY id"))
        snapshot = snapshot_of(
            tuple(row for _, row in jobs.values()),
            tuple(row for _, row in frames.values()),
            meta,
            users,
            tokens,
            self.where,
        )
        self._jobs, self._frames = jobs, frames  # only once all of it was read
        self.fetched = len(fresh_jobs) + len(fresh_frames)
        return snapshot
