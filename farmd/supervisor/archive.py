"""The supervisor's side of history: reading the jobs that left memory for the store.

Ended jobs move to history (`farmd.core.history`): their rows stay in the store and the
scheduler forgets them. This module is the shell's part of that, the only one that does
I/O for it:

- `Archive.recall` runs before a request is answered: if the request names a job (by
  id, as a dependency or parent of a new job, or by a repeated idempotency key) that
  the scheduler does not hold, the store's rows of it come back in as a `RecallJobs`
  event, so the request is answered exactly as if the job had never left.
- `Archive.jobs_page` is `list_jobs` with `history`: the live page from the scheduler
  and history's page from the store, merged by id, with the counts of both.
- `Archive.prune` removes the jobs that have been in history longer than
  `history_days`, a batch at a time, as `PruneJobs` events (the scheduler drops those
  it holds read back, and its changes delete the rows); `prune_hourly` does it every
  hour.

Every read of the store first waits until everything handed to it before is durable
(`Committer.durable`), so it sees each job either in memory or with its last rows.
Reads run in a worker thread, one at a time: history is for people looking at it, and
the loop keeps serving workers meanwhile.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import trio

from farmd.core import Outcome, Principal, PruneJobs, RecallJobs, ReplyRoom, Scheduler
from farmd.core.views import page
from farmd.logs import log_event
from farmd.protocol import (
    ControlRequest,
    Explain,
    GetJob,
    GetLog,
    Kill,
    ListAudit,
    ListJobs,
    Message,
    Modify,
    Remove,
    Submit,
    SubmitBatch,
    Wait,
)
from farmd.rows import Changes
from farmd.store import Store
from farmd.supervisor.committer import Committer

log = logging.getLogger("farmd.supervisor")

DAY = 86_400.0
PRUNE_EVERY = 3600.0  # seconds between two automatic prunes
PRUNE_BATCH = 1000  # jobs removed by one commit of a prune
_LEADING_ID = re.compile(r"\s*(\d{1,19})")
# the form of the keys farmd's client makes for its own retries (`new_request_key`)
RETRY_KEY = re.compile(r"farmd-[0-9a-f]{32}")
# a client retries for a few seconds: with history kept in memory this long at least, its
# own keys' jobs cannot have moved there yet
MIN_HISTORY_AFTER_FOR_RETRY_KEYS = 60.0


def named_jobs(request: Message) -> tuple[list[int], list[str]]:
    """The job ids a request names, and the idempotency key it repeats, if any: what
    must be in memory before the scheduler answers it."""
    match request:
        case Kill() | Remove() | Wait():
            return list(request.job_ids), []
        case GetJob() | Explain() | GetLog() | Modify():
            return [request.job_id], []
        case ControlRequest():
            return _ids(request.targets), []
        case Submit():
            return _submitted([request]), [request.key] if request.key else []
        case SubmitBatch():
            return _submitted(list(request.jobs)), [request.key] if request.key else []
    return [], []


def _submitted(jobs: list[Submit]) -> list[int]:
    ids = _ids([dep for job in jobs for dep in job.depends_on])
    return ids + [job.parent for job in jobs if job.parent is not None]


def _ids(values: Iterable[Any]) -> list[int]:
    """The job id at the head of each of `values` (`12`, `"12"`, `"12:1-10"`,
    `"12:done"`); the rest is checked by the core, which refuses what is wrong."""
    ids = []
    for value in values:
        match = _LEADING_ID.match(str(value)) if isinstance(value, int | str) else None
        if match is not None:
            ids.append(int(match.group(1)))
    return ids


class Archive:
    """History in the store, as the supervisor reads and prunes it (see module docs)."""

    def __init__(
        self,
        *,
        core: Scheduler,
        store: Store,
        committer: Committer,
        apply: Callable[[Outcome], None],
        clock: Callable[[], float],
        history_days: float,
        history_after: float = 300.0,
    ) -> None:
        self._core = core
        self._store = store
        self._committer = committer
        self._apply = apply
        self._clock = clock
        self._history_days = history_days
        self._history_after = history_after
        # one read at a time, in a thread of trio's own pool (whose use a test's
        # MockClock watches), so a reader queues rather than taking every thread
        self._reading = trio.Lock()

    async def recall(self, request: Message) -> None:
        """Bring back from history the jobs `request` names that are not in memory."""
        ids, keys = named_jobs(request)
        await self.recall_ids(ids, keys)

    async def recall_ids(self, ids: list[int], keys: list[str] | None = None) -> None:
        """Bring back from history the jobs `ids`, and those submitted under `keys`,
        that are not in memory (nothing to do, at once, when all are)."""
        if not self._store.keeps_history:
            return
        ids = self._core.unknown_jobs(dict.fromkeys(ids))
        keys = [key for key in keys or () if self._may_be_history(key)]
        if not ids and not keys:
            return
        await self._committer.durable()
        snapshot = await self._read(self._store.recall, ids, keys)
        if snapshot.jobs:
            self._apply(self._core.handle(RecallJobs(snapshot=snapshot, now=self._clock())))

    def _may_be_history(self, key: str) -> bool:
        """Whether a submission's key may name a job in history: one the scheduler does
        not know, unless it is a key farmd's client made for one call's own retries
        (`client.new_request_key`), which come within seconds of the first attempt,
        long before its job could have ended and moved (`history_after`). Every submit
        carries such a key: looking each up in the store cost a third of the rate of
        single submits."""
        if self._core.knows_key(key):
            return False
        return not (
            self._history_after >= MIN_HISTORY_AFTER_FOR_RETRY_KEYS and RETRY_KEY.fullmatch(key)
        )

    async def jobs_page(self, request: ListJobs, room: ReplyRoom, by: Principal) -> dict[str, Any]:
        """A page of the live jobs and history's together, by id (`list_jobs` with
        `history`): each side asked for a page after `after`, the first `limit` of the
        two kept. A job recalled into memory is listed once, from memory."""
        live = self._core.jobs_page(request.limit, request.after, room, by, self._clock())
        if not self._store.keeps_history:
            return live
        await self._committer.durable()
        kept = await self._read(self._store.history, request.limit, request.after)
        scope = by.clusters
        counts: dict[str, int] = {}
        for cluster, state, n in await self._read(self._store.history_counts):
            if scope is None or scope.accepts(cluster):
                counts[state] = counts.get(state, 0) + n
        entries = {
            job["id"]: job
            for job in kept
            if not self._core.live(job["id"])
            and (scope is None or scope.accepts(str(job.get("cluster", ""))))
        }
        entries.update((job["id"], job) for job in live["jobs"])
        # Each side's page is complete only up to its last id when more follow it: the
        # merged page stops at the lower of those, and goes on from there.
        bound = math.inf
        if live["next"] is not None:
            bound = live["next"]
        if len(kept) == request.limit:
            bound = min(bound, kept[-1]["id"])
        ordered = [(job_id, job) for job_id, job in sorted(entries.items()) if job_id <= bound]
        jobs, next_id = page(iter(ordered), lambda job: job, request.limit, room)
        if next_id is None and bound != math.inf and jobs:
            next_id = jobs[-1]["id"]
        all_counts = dict(live["counts"])
        for state, n in counts.items():
            if state in all_counts:
                all_counts[state] += n
        return {
            "jobs": jobs,
            "next": next_id,
            "counts": all_counts,
            "total": live["total"] + sum(counts.values()),
        }

    async def prune(self, days: float | None) -> dict[str, Any]:
        """Remove the jobs in history for more than `days` (`history_days`, when None;
        0 there keeps them for ever), a batch per commit; how many, and the cut-off."""
        if days is None:
            days = self._history_days
            if days == 0:  # kept for ever
                return {"removed": 0, "before": None}
        if not self._store.keeps_history:
            return {"removed": 0, "before": None}
        before = self._clock() - days * DAY
        removed = 0
        while True:  # bounded: each round removes what it found, or stops
            await self._committer.durable()
            found = await self._read(self._store.expired, before, PRUNE_BATCH)
            if not found:
                break
            outcome = self._core.handle(PruneJobs(job_ids=tuple(found), now=self._clock()))
            self._apply(outcome)
            removed += len(outcome.result)
            if len(found) < PRUNE_BATCH or not outcome.result:
                break
        if removed:
            log_event(log, "info", "history pruned", jobs=removed, days=days)
        return {"removed": removed, "before": before}

    async def audit(self, request: ListAudit) -> dict[str, Any]:
        """A page of the audit log, newest first (`list_audit`); `next` is the `before`
        of the next page (None: this one ends it)."""
        if not self._store.keeps_history:
            return {"entries": [], "next": None}
        await self._committer.durable()
        since = request.since or 0.0
        entries = await self._read(
            self._store.audit, request.limit, request.before, request.user, request.job, since
        )
        full = len(entries) == request.limit
        return {"entries": entries, "next": entries[-1]["id"] if full else None}

    async def prune_hourly(self, audit_days: float) -> None:
        """Every hour, from the first hour on: `prune` with `history_days`, and the
        audit entries older than `audit_days` (0 keeps either for ever)."""
        while True:
            await trio.sleep(PRUNE_EVERY)
            if self._history_days:
                await self.prune(None)
            if audit_days and self._store.keeps_history:
                before = self._clock() - audit_days * DAY
                self._apply(Outcome(changes=Changes(audit_before=before)))

    async def _read(self, read: Callable[..., Any], *args: Any) -> Any:
        async with self._reading:
            return await trio.to_thread.run_sync(read, *args)
