"""Submission: a drafted job checked against the farm, and idempotency keys.

Theory of operation
-------------------
A submission is checked in two steps (see `drafting`): `draft_job` decides what the
request alone can, off the loop if it is large; `Submissions` then checks the draft
against the farm as it stands: the parent (which must exist and not have ended, and
which a job token may only name under its own job), the dependencies (which must name
jobs that exist, a job once per whole-job mode), the priority the submitter may set,
the cluster subtree it may act in, and the farm's global resources. It changes nothing
until every job of the request has passed, so a batch is taken whole or not at all;
then it hands each new job to the scheduler's `insert`, which links it into the farm.

`Submissions` owns the idempotency keys (`_keys`: key -> the jobs its submission made,
and a digest of what it asked), and the submission defaults (priority, cluster, command
size). Invariants:

- a key names the jobs of exactly one submission: a repeat of the same request returns
  them and builds nothing, a different request under a used key is refused;
- a key lives as long as any of its jobs: it is rebuilt from the job rows on a restart
  (`remember`), and forgotten with the last of its jobs (`forget`).

It reads the scheduler's jobs and the quarantine, and the dispatcher's resource pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from farmd.cluster import ClusterPath
from farmd.core.authority import Action, Principal, check_scope
from farmd.core.drafting import Draft, _in_batch, draft_batch, draft_job, submission_digest
from farmd.core.restore import missing_job
from farmd.core.vocabulary import SubmitJob, SubmitJobs
from farmd.errors import ForbiddenError, JobSpecError, UnknownJobError, UserError
from farmd.frames import FrameTable
from farmd.jobs import Dependency, DependencyMode, Job
from farmd.ranking import QueuedJob
from farmd.requirements import Requirement, parse_requirement
from farmd.resources import Pool, Reservation, parse_reservation

if TYPE_CHECKING:
    from farmd.core.rollout import Resolved


@attrs.frozen(kw_only=True)
class _Typed:
    """What a job of a release's type takes from its type (`Submissions._typed`)."""

    argv: tuple[str, ...]
    pinned: dict[str, Any]
    params: dict[str, Any]
    chunk: int
    retries: int
    time_limit: float
    requires: Requirement
    reserve: Reservation
    env: dict[str, str]


class Submissions:
    """New jobs checked against the farm, and the keys that make a submit idempotent
    (see module docs). The scheduler hands it `SubmitJob` and `SubmitJobs` events."""

    def __init__(
        self,
        *,
        default_priority: int,
        default_cluster: ClusterPath,
        max_command_bytes: int,
        jobs: dict[int, Job],
        quarantined: dict[int, str],
        pool: Pool,
        next_id: Callable[[], int],
        insert: Callable[[Job], None],
        note: Callable[..., None],
    ) -> None:
        self.default_priority = default_priority
        self.default_cluster = default_cluster
        # A job's command and name travel in every run_frame: bounded so one always fits.
        self.max_command_bytes = max_command_bytes
        # the scheduler's records and the dispatcher's pool, read here
        self._jobs = jobs
        self._quarantined = quarantined
        self._pool = pool
        self._next_id = next_id
        self._insert = insert
        self._note = note
        self.notify_allow: tuple[str, ...] = ()  # the URL prefixes notify may use
        # resolves a job of a release's type at its cluster (`farmd.core.rollout`)
        self.resolve: Callable[[ClusterPath, str, dict[str, str]], Resolved] | None = None
        # idempotency keys of submissions: the jobs each made, and a digest of what it was
        self._keys: dict[str, tuple[tuple[int, ...], str]] = {}
        # per key, how many of its first jobs were found gone at the last `forget`: the
        # next look starts there (jobs leave mostly in id order, and a batch of 10,000
        # looked at from its start for each job that leaves would be quadratic)
        self._gone: dict[str, int] = {}

    # ------------------------------------------------------------------ events

    def submit(self, event: SubmitJob) -> int:
        digest = ""
        if event.key is not None:
            digest = event.digest or submission_digest(event)
        if event.key is not None and event.key in self._keys:
            return self._repeated(event.key, digest)[0]
        draft = event.prepared if event.prepared is not None else self.draft(event)
        job = self._prepare(event, draft, self._next_id(), {}, event.by)
        job.request_key, job.request_digest = event.key, digest
        self._insert(job)
        if event.key is not None:
            self._keys[event.key] = ((job.id,), digest)
        return job.id

    def submit_many(self, event: SubmitJobs) -> list[int]:
        """All the jobs, or (if any is refused) none of them."""
        digest = ""
        if event.key is not None:
            digest = event.digest or submission_digest(event)
        if event.key is not None and event.key in self._keys:
            return list(self._repeated(event.key, digest))
        drafts = event.prepared if event.prepared is not None else self.draft_batch(event.jobs)
        jobs: dict[int, Job] = {}
        first_id = self._next_id()
        for number, (spec, draft) in enumerate(zip(event.jobs, drafts, strict=True)):
            try:
                job = self._prepare(spec, draft, first_id + number, jobs, event.by)
                jobs[job.id] = job
            except UserError as exc:
                raise _in_batch(exc, number) from None
        for job in jobs.values():
            job.request_key, job.request_digest = event.key, digest
            self._insert(job)
        if event.key is not None:
            self._keys[event.key] = (tuple(jobs), digest)
        return list(jobs)

    def draft(self, event: SubmitJob) -> Draft:
        """`draft_job` with this farm's limits: pure, so the shell may run it in a
        thread for a large job and hand the result back in `SubmitJob.prepared`."""
        return draft_job(event, self.max_command_bytes)

    def draft_batch(self, jobs: tuple[SubmitJob, ...]) -> tuple[Draft, ...]:
        """`draft` of each job of a batch (pure as `draft`), refused whole."""
        return draft_batch(jobs, self.max_command_bytes)

    # ------------------------------------------------------------------ keys

    def knows_key(self, key: str | None) -> bool:
        """A submission under `key` would repeat an earlier one (and build nothing)."""
        return key is not None and key in self._keys

    def _repeated(self, key: str, digest: str) -> tuple[int, ...]:
        """The jobs an earlier submission under `key` made, if it submitted the same."""
        ids, known = self._keys[key]
        if known != digest:
            msg = (
                f"request key {key!r} was already used for a different submission (job "
                f"{ids[0]}): nothing was submitted; use a new key for a new submission"
            )
            raise JobSpecError(msg)
        self._note("info", "submission repeated", key=key, jobs=list(ids))
        return ids

    def remember(self, jobs: Iterable[Job]) -> None:
        """Restored `jobs` carry their submission's key: each key names its jobs again,
        in order, with the digest of the last. Grouped first: a batch's jobs share one
        key, and a tuple grown a job at a time would be quadratic in the batch."""
        found: dict[str, tuple[list[int], list[str]]] = {}
        for job in jobs:
            if job.request_key is not None:
                ids, digest = found.setdefault(job.request_key, ([], [""]))
                ids.append(job.id)
                digest[0] = job.request_digest or ""
        for key, (ids, digest) in found.items():
            known, _ = self._keys.get(key, ((), ""))
            self._keys[key] = ((*known, *ids), digest[0])
            self._gone.pop(key, None)

    def forget(self, removed: Iterable[Job]) -> None:
        """Jobs were removed: a key is forgotten with the last of its jobs (their rows
        carried it)."""
        live = self._jobs
        for key in dict.fromkeys(job.request_key for job in removed if job.request_key):
            ids = self._keys[key][0]
            start = self._gone.get(key, 0)
            for position in range(start, len(ids)):
                if ids[position] in live:
                    self._gone[key] = position
                    break
            else:
                # none live from the mark on; one before it may have come back since (a
                # job read back from history): the whole key is looked at, once, to end it
                if not any(i in live for i in ids[:start]):
                    del self._keys[key]
                    self._gone.pop(key, None)

    # ------------------------------------------------------------------ checks

    def _prepare(
        self,
        event: SubmitJob,
        draft: Draft,
        job_id: int,
        known: dict[int, Job],
        by: Principal,
    ) -> Job:
        """Check a drafted submission against the farm (parent, dependencies, who asks)
        into a new job, changing nothing. `known`: the jobs submitted before it in the
        same request, which it may depend on or be under. Takes no time per frame."""
        parent = self._parent(event.parent, known, by)
        if draft.cluster is not None:
            cluster = draft.cluster
        else:  # a sub-job runs where its parent does, unless it says otherwise
            cluster = parent.cluster if parent is not None else self.default_cluster
        check_scope(by, Action.SUBMIT, [cluster])
        priority = self._priority(event.priority, parent, by)
        self._check_dependencies(draft.depends_on, known)
        QueuedJob(id=job_id, cluster=cluster, priority=priority)  # validates the priority
        typed = self._typed(draft, cluster, event)
        reserve = typed.reserve if typed is not None else draft.reserve
        for name, _ in reserve.global_amounts:
            if name not in self._pool.totals:
                declared = ", ".join(sorted(self._pool.totals)) or "none"
                msg = f"bad reservation: no global resource {name!r} (the farm has: {declared})"
                raise JobSpecError(msg)
        chunk = typed.chunk if typed is not None else event.chunk
        return Job(
            id=job_id,
            name=event.name or f"job{job_id}",
            cluster=cluster,
            priority=priority,
            restrictions=draft.restrictions,
            cross_cluster=draft.cross_cluster,
            argv=typed.argv if typed is not None else draft.argv,
            frames=FrameTable(draft.numbers, chunk),
            depends_on=draft.depends_on,
            submitted_at=event.now,
            instances=event.instances,
            retries=typed.retries if typed is not None else event.retries,
            retry_delay=float(event.retry_delay),
            time_limit=typed.time_limit if typed is not None else float(event.time_limit),
            chunk=chunk,
            parent=parent.id if parent is not None else None,
            uninterruptible=bool(event.uninterruptible),
            job_type=draft.job_type,
            requires=typed.requires if typed is not None else draft.requires,
            reserve=reserve,
            frame_range=draft.frame_range,
            env=typed.env if typed is not None else draft.env,
            pinned=typed.pinned if typed is not None else None,
            params=typed.params if typed is not None else {},
            notify=self._notify_allowed(draft.notify),
            # a frame's job token acts as its job's owner
            owner=parent.owner if by.job is not None and parent is not None else by.owner,
        )

    def _notify_allowed(self, url: str) -> str:
        """A job's notify URL, if the farm allows it (`notify_allow`: URL prefixes; none:
        any http(s) URL): the supervisor posts to it, so a farm may confine where."""
        allowed = self.notify_allow
        if url and allowed and not any(url.startswith(prefix) for prefix in allowed):
            msg = (
                f"bad notify URL {url[:200]!r}: the farm allows only URLs starting with "
                f"{', '.join(allowed)} (notify_allow)"
            )
            raise JobSpecError(msg)
        return url

    def _typed(self, draft: Draft, cluster: ClusterPath, event: SubmitJob) -> _Typed | None:
        """A job of a release's type, resolved at its cluster, with the type's defaults
        for the options the submission left at theirs; None for a job with a command."""
        if not draft.typed:
            return None
        assert draft.job_type is not None
        assert self.resolve is not None
        resolved = self.resolve(cluster, draft.job_type, draft.params)
        kind = resolved.job_type
        return _Typed(
            argv=resolved.argv,
            pinned=resolved.pinned,
            params=resolved.params,
            chunk=kind.chunk if kind.chunk is not None and event.chunk == 1 else event.chunk,
            retries=kind.retries
            if kind.retries is not None and not event.retries
            else event.retries,
            time_limit=float(
                kind.frame_timelimit
                if kind.frame_timelimit is not None and not event.time_limit
                else event.time_limit
            ),
            requires=(
                parse_requirement(kind.requires)
                if kind.requires and not draft.requires.source
                else draft.requires
            ),
            reserve=(
                parse_reservation(kind.reserve)
                if kind.reserve and draft.reserve.plain
                else draft.reserve
            ),
            env={**kind.environment, **draft.env},  # the job's own win
        )

    def _parent(self, asked: int | None, known: dict[int, Job], by: Principal) -> Job | None:
        """The job a submission goes under, which must exist and not have ended."""
        parent_id = self._parent_for(asked, known, by)
        if parent_id is None:
            return None
        parent = self._jobs.get(parent_id) or known.get(parent_id)
        if parent is None:
            msg = f"bad parent: {missing_job(parent_id, self._quarantined)}"
            raise UnknownJobError(msg)
        if parent.state.ended:
            state = parent.state.value
            msg = f"bad parent: job {parent.id} has ended ({state}): it takes no sub-jobs"
            raise JobSpecError(msg)
        return parent

    def _parent_for(self, parent: int | None, known: dict[int, Job], by: Principal) -> int | None:
        """The parent a submission gets: an admin's as given; a user token adds no
        sub-jobs; a job token's jobs go under its job, or under a job below it."""
        if by.is_admin:
            return parent
        if by.job is None:
            if parent is not None:
                msg = (
                    f"a user token may not add sub-jobs (parent {parent}): only an admin "
                    f"or a frame of job {parent} may"
                )
                raise ForbiddenError(msg)
            return None
        if parent is None:
            return by.job
        job_id: int | None = parent
        for _ in range(len(self._jobs) + len(known) + 1):  # up from `parent` to the token's
            if job_id == by.job:
                return parent
            job = (self._jobs.get(job_id) or known.get(job_id)) if job_id is not None else None
            if job is None:
                break
            job_id = job.parent
        msg = (
            f"bad parent {parent}: a frame of job {by.job} may only add sub-jobs under job {by.job}"
        )
        raise ForbiddenError(msg)

    def _priority(self, asked: int | None, parent: Job | None, by: Principal) -> int:
        """The priority a submission gets: as asked, within what `by` may set; else its
        parent's, clamped the same way; else the farm's default."""
        if asked is not None:
            if not by.is_admin and asked < by.highest_priority:  # 0 is refused later
                msg = (
                    f"priority {asked} is more urgent than {by.who} may set "
                    f"(the highest is {by.highest_priority}; 1 is the most urgent)"
                )
                raise ForbiddenError(msg)
            return asked
        if parent is not None:  # inherited, but never past what the submitter may set
            return max(parent.priority, by.highest_priority)
        return self.default_priority

    def _check_dependencies(
        self, depends_on: tuple[Dependency, ...], known: dict[int, Job]
    ) -> None:
        """Each dependency names a job that exists (or comes earlier in the request), and
        a job is named in one whole-job mode at most."""
        whole_job: set[int] = set()
        for dep in depends_on:
            if dep.job_id not in self._jobs and dep.job_id not in known:
                msg = f"bad dependency: {missing_job(dep.job_id, self._quarantined)}"
                raise UnknownJobError(msg)
            if dep.mode is not DependencyMode.FRAMES:
                if dep.job_id in whole_job:
                    msg = f"bad dependency: job {dep.job_id} is named twice with different modes"
                    raise JobSpecError(msg)
                whole_job.add(dep.job_id)
