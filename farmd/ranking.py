"""The ranking index: which queued job a worker runs next.

Theory of operation
-------------------
For a worker in cluster W, jobs sort by the *rank key* `(cluster order, priority, job
id)` (see `rank_key`, the executable definition), and only jobs that both sides'
restrictions admit are eligible. `reference_order` applies that definition by brute
force; the index must always agree with it, and the tests hold it to that.

The index never scans the queue. It splits the queue by the one part of the key that
depends on the worker, the cluster order, into *tiers*, and visits them outward from W:

- tier 1: the jobs in W itself, plus the pattern jobs whose cross-cluster patterns
  match W;
- tier 2: the jobs strictly below W;
- tier `2 + depth(W) - depth(A)` for each strict ancestor A of W: the jobs below A that
  are not below A's child on the way to W.

Each cluster keeps two sorted runs of `(priority, id, job)`: `own` (jobs exactly there)
and `subtree` (jobs there or below; a job sits in `depth + 1` of these). A tier is read
from one run (`own[W]`, `subtree[W]`, `subtree[A]`) whose entries are in (priority, id)
order already, so the first eligible entry of a tier is the best job of that tier.
Runs hold a superset of their tier: an entry whose cluster order for W differs from the
tier's, or a pattern job that matches W (already offered in tier 1), is skipped. A
skipped entry is one an earlier tier already offered and found ineligible, so skipping
never costs more than the work already done. Pattern jobs sit in their own runs too,
keyed by exact cluster and by string prefix; tier 1 merges the few that match W.

A worker's restrictions narrow the runs a tier reads (a worker restricted to `/A/+`
never walks `/B`), and every entry is checked again against both sides' restrictions
and the caller's `eligible` predicate, so the narrowing is an optimisation that cannot
change the answer. The per-worker-cluster *plan* (tiers and their runs) is cached and
rebuilt only when a cluster's run is created or dropped.

Cost, with n queued jobs, d the tree depth and s the entries skipped (ineligible for
this worker and ranked above the answer):

- `add`, `remove`, `update`: O(d log n).
- `best`: O(d + s) for a cached plan, plus O(log n) per tier that merges runs.
- `ranked` / `page`: the same, plus O(1) per job returned; `page` resumes from a rank
  key with one O(log n) bisect per run.
- memory: about `d + 2` run entries per job (a 3-tuple each), measured by
  `benchmarks/ranking.py`.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
from sortedcontainers import SortedList

from farmd.cluster import (
    NO_PATTERNS,
    ROOT,
    UNRESTRICTED,
    ClusterPath,
    CrossClusterPatterns,
    Restrictions,
    TermKind,
    ancestors,
    cluster_order,
    depth,
    is_within,
    parse_cluster,
)
from farmd.errors import JobSpecError, UnknownJobError

DEFAULT_PRIORITY = 9999
HIGHEST_PRIORITY = 1
LOWEST_PRIORITY = 2**31 - 1


def _check_priority(_: object, __: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"bad priority {value!r}: must be an integer (1 is the most urgent)"
        raise JobSpecError(msg)
    if not HIGHEST_PRIORITY <= value <= LOWEST_PRIORITY:
        msg = (
            f"bad priority {value!r}: must be between {HIGHEST_PRIORITY} (most urgent) "
            f"and {LOWEST_PRIORITY}"
        )
        raise JobSpecError(msg)


def _check_job_id(_: object, __: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"bad job id {value!r}: must be a positive integer"
        raise JobSpecError(msg)


def _parsed(kind: type, how: str) -> Callable[[Any, Any, Any], None]:
    """A validator: the value must already be parsed (by `how`), not raw text."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, kind):
            msg = f"bad {attribute.name} {value!r}: must be parsed with {how} first"
            raise JobSpecError(msg)

    return check


@attrs.frozen
class QueuedJob:
    """What the index needs to know of a queued job. Build it with validated parts."""

    id: int = attrs.field(validator=_check_job_id)
    cluster: ClusterPath = attrs.field(converter=parse_cluster)
    priority: int = attrs.field(default=DEFAULT_PRIORITY, validator=_check_priority)
    patterns: CrossClusterPatterns = attrs.field(
        default=NO_PATTERNS, validator=_parsed(CrossClusterPatterns, "parse_patterns")
    )
    # which worker clusters the job accepts
    restrictions: Restrictions = attrs.field(
        default=UNRESTRICTED, validator=_parsed(Restrictions, "parse_restrictions")
    )


@attrs.frozen
class WorkerView:
    """What the index needs to know of a worker asking for work."""

    cluster: ClusterPath = attrs.field(converter=parse_cluster)
    # which job clusters the worker accepts
    restrictions: Restrictions = attrs.field(
        default=UNRESTRICTED, validator=_parsed(Restrictions, "parse_restrictions")
    )


@attrs.frozen
class Ranked:
    """A job as ranked for one worker."""

    order: int
    priority: int
    job: QueuedJob

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.order, self.priority, self.job.id)


Eligible = Callable[[QueuedJob], bool]
RankKey = tuple[int, int, int]


def admits(job: QueuedJob, worker: WorkerView) -> bool:
    """Both sides' cluster restrictions pass: the job may run on the worker."""
    return worker.restrictions.accepts(job.cluster) and job.restrictions.accepts(worker.cluster)


def rank_key(job: QueuedJob, worker: WorkerView) -> RankKey:
    """The definition of rank: (cluster order, priority, id), compared lexicographically.

    A job whose cross-cluster patterns match the worker's cluster ranks there with
    cluster order 1, as if it were in its own cluster.
    """
    if job.patterns.matches(worker.cluster):
        order = 1
    else:
        order = cluster_order(job.cluster, worker.cluster)
    return (order, job.priority, job.id)


def reference_order(
    jobs: Iterable[QueuedJob], worker: WorkerView, eligible: Eligible | None = None
) -> list[Ranked]:
    """Brute force: filter every job, then sort by `rank_key`. O(n log n) per call.

    The specification the index is tested against, and the baseline of the benchmark.
    """
    keyed = [
        (rank_key(job, worker), job)
        for job in jobs
        if admits(job, worker) and (eligible is None or eligible(job))
    ]
    keyed.sort(key=lambda pair: pair[0])
    return [Ranked(key[0], key[1], job) for key, job in keyed]


_Entry = tuple[int, int, QueuedJob]  # (priority, id, job): ids are unique, job never compared


@attrs.frozen
class _Tier:
    order: int
    runs: tuple[SortedList, ...]  # type: ignore[type-arg]


@attrs.frozen
class _Plan:
    generation: int
    tiers: tuple[_Tier, ...]
    # job cluster -> its cluster order for this worker, or 0 if the worker refuses it
    orders: dict[str, int]


class RankingIndex:
    """The queue, indexed for "best eligible job for this worker" (see module docs)."""

    def __init__(self) -> None:
        self._jobs: dict[int, QueuedJob] = {}
        self._own: dict[str, SortedList] = {}  # type: ignore[type-arg]
        self._subtree: dict[str, SortedList] = {}  # type: ignore[type-arg]
        self._children: dict[str, set[str]] = {}
        self._pattern_exact: dict[str, SortedList] = {}  # type: ignore[type-arg]
        self._pattern_prefix: dict[str, SortedList] = {}  # type: ignore[type-arg]
        self._empty_runs = 0
        self._generation = 0
        self._plans: dict[tuple[str, Restrictions], _Plan] = {}

    # ------------------------------------------------------------------ queue changes

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[QueuedJob]:
        return iter(self._jobs.values())

    def get(self, job_id: int) -> QueuedJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            msg = f"job {job_id!r} is not queued"
            raise UnknownJobError(msg) from None

    def add(self, job: QueuedJob) -> None:
        if job.id in self._jobs:
            msg = f"job {job.id} is already queued"
            raise JobSpecError(msg)
        self._jobs[job.id] = job
        entry: _Entry = (job.priority, job.id, job)
        self._run(self._own, job.cluster).add(entry)
        for node in ancestors(job.cluster):
            self._run(self._subtree, node).add(entry)
        for cluster in job.patterns.exact:
            self._run(self._pattern_exact, cluster).add(entry)
        for prefix in job.patterns.prefixes:
            self._run(self._pattern_prefix, prefix).add(entry)

    def remove(self, job_id: int) -> QueuedJob:
        job = self.get(job_id)
        del self._jobs[job_id]
        entry: _Entry = (job.priority, job.id, job)
        self._unrun(self._own, job.cluster, entry)
        for node in ancestors(job.cluster):
            self._unrun(self._subtree, node, entry)
        for cluster in job.patterns.exact:
            self._unrun(self._pattern_exact, cluster, entry)
        for prefix in job.patterns.prefixes:
            self._unrun(self._pattern_prefix, prefix, entry)
        return job

    def update(
        self,
        job_id: int,
        *,
        priority: int | None = None,
        cluster: str | None = None,
        patterns: CrossClusterPatterns | None = None,
        restrictions: Restrictions | None = None,
    ) -> QueuedJob:
        """Change what ranks a job, keeping its id (and so its place among equals).

        The new values are validated before anything changes.
        """
        old = self.get(job_id)
        new = QueuedJob(
            id=old.id,
            cluster=old.cluster if cluster is None else cluster,
            priority=old.priority if priority is None else priority,
            patterns=old.patterns if patterns is None else patterns,
            restrictions=old.restrictions if restrictions is None else restrictions,
        )
        self.remove(job_id)
        self.add(new)
        return new

    def _run(self, runs: dict[str, SortedList], key: str) -> SortedList:  # type: ignore[type-arg]
        run = runs.get(key)
        if run is None:
            run = runs[key] = SortedList()
            self._generation += 1
            if runs is self._subtree and key != ROOT:
                up = ancestors(key)[1]
                self._children.setdefault(up, set()).add(key)
        elif not run:
            self._empty_runs -= 1
        return run

    def _unrun(self, runs: dict[str, SortedList], key: str, entry: _Entry) -> None:  # type: ignore[type-arg]
        run = runs[key]
        run.remove(entry)
        if not run:
            # Emptied runs stay, so cached plans stay valid while jobs come and go;
            # they are dropped in bulk once they outnumber the live ones.
            self._empty_runs += 1
            if self._empty_runs > 64 and self._empty_runs * 2 > self._run_count():
                self._drop_empty_runs()

    def _run_count(self) -> int:
        return (
            len(self._own)
            + len(self._subtree)
            + len(self._pattern_exact)
            + len(self._pattern_prefix)
        )

    def _drop_empty_runs(self) -> None:
        for runs in (self._own, self._subtree, self._pattern_exact, self._pattern_prefix):
            for key in [k for k, run in runs.items() if not run]:
                del runs[key]
        self._children = {}
        for key in self._subtree:
            if key != ROOT:
                self._children.setdefault(ancestors(key)[1], set()).add(key)
        self._empty_runs = 0
        self._generation += 1
        self._plans.clear()

    # ------------------------------------------------------------------ queries

    def best(self, worker: WorkerView, eligible: Eligible | None = None) -> Ranked | None:
        """The job this worker runs next, or None.

        The hot path of dispatch, so it does not merge a tier's runs: it takes the first
        eligible entry of each run, stopping a run's scan at the best found so far, and
        keeps the least. Same answer as the first of `ranked`, without the merge.
        """
        plan = self._plan(worker)
        for tier in plan.tiers:
            found: _Entry | None = None
            for run in tier.runs:
                for entry in run:
                    if found is not None and entry >= found:
                        break
                    if self._admissible(entry[2], tier.order, worker, plan, eligible):
                        found = entry
                        break
            if found is not None:
                return Ranked(tier.order, found[0], found[2])
        return None

    def ranked(self, worker: WorkerView, eligible: Eligible | None = None) -> Iterator[Ranked]:
        """This worker's eligible queue, lazily, in rank order."""
        return self._walk(worker, eligible, None)

    def page(
        self,
        worker: WorkerView,
        limit: int,
        *,
        after: RankKey | None = None,
        eligible: Eligible | None = None,
    ) -> list[Ranked]:
        """Up to `limit` jobs of this worker's queue that rank after the key `after`."""
        if limit <= 0:
            return []
        out: list[Ranked] = []
        for ranked in self._walk(worker, eligible, after):
            out.append(ranked)
            if len(out) >= limit:
                break
        return out

    def _walk(
        self, worker: WorkerView, eligible: Eligible | None, after: RankKey | None
    ) -> Iterator[Ranked]:
        plan = self._plan(worker)
        for tier in plan.tiers:
            order = tier.order
            if after is not None:
                if order < after[0]:
                    continue
                if order == after[0]:
                    start = (after[1], after[2] + 1)
                    streams: list[Iterable[_Entry]] = [
                        run.irange(minimum=start) for run in tier.runs
                    ]
                else:
                    streams = list(tier.runs)
            else:
                streams = list(tier.runs)
            entries = streams[0] if len(streams) == 1 else heapq.merge(*streams)
            last_id = 0
            for priority, job_id, job in entries:
                if job_id == last_id:
                    continue  # the same job reached through two runs of a merge
                last_id = job_id
                if self._admissible(job, order, worker, plan, eligible):
                    yield Ranked(order, priority, job)

    @staticmethod
    def _admissible(
        job: QueuedJob, order: int, worker: WorkerView, plan: _Plan, eligible: Eligible | None
    ) -> bool:
        """Whether a run entry belongs to this tier for this worker, and may run there."""
        cluster = job.cluster
        home = worker.cluster
        job_order = plan.orders.get(cluster)
        if job_order is None:
            accepted = worker.restrictions.accepts(cluster)
            job_order = plan.orders[cluster] = cluster_order(cluster, home) if accepted else 0
        if order == 1:
            if job_order == 0:
                return False
        elif job_order != order or (job.patterns and job.patterns.matches(home)):
            return False
        if job.restrictions and not job.restrictions.accepts(home):
            return False
        return eligible is None or eligible(job)

    # ------------------------------------------------------------------ plans

    def _plan(self, worker: WorkerView) -> _Plan:
        cache_key = (worker.cluster, worker.restrictions)
        plan = self._plans.get(cache_key)
        if plan is None or plan.generation != self._generation:
            if len(self._plans) > 65536:
                self._plans.clear()
            plan = self._plans[cache_key] = self._build_plan(worker)
        return plan

    def _build_plan(self, worker: WorkerView) -> _Plan:
        home = worker.cluster
        tiers: list[_Tier] = []
        # (order, anchor, the run that holds the whole tier)
        layout: list[tuple[int, str, SortedList | None]] = [  # type: ignore[type-arg]
            (1, home, self._own.get(home)),
            (2, home, self._subtree.get(home)),
        ]
        home_depth = depth(home)
        for anchor in ancestors(home)[1:]:
            layout.append((2 + home_depth - depth(anchor), anchor, self._subtree.get(anchor)))
        for order, anchor_path, whole in layout:
            runs = self._tier_runs(worker, order, anchor_path, whole)
            if order == 1:
                runs.extend(self._pattern_runs(home))
            # Empty runs stay in the plan: they are kept, and may fill again, without
            # a change of generation.
            unique = tuple({id(run): run for run in runs if run is not None}.values())
            if unique:
                tiers.append(_Tier(order, unique))
        return _Plan(self._generation, tuple(tiers), {})

    def _tier_runs(
        self,
        worker: WorkerView,
        order: int,
        anchor: str,
        whole: SortedList | None,  # type: ignore[type-arg]
    ) -> list[SortedList]:  # type: ignore[type-arg]
        """The runs that cover what this worker accepts of one tier."""
        if whole is None:
            return []
        if not worker.restrictions:
            return [whole]
        home = worker.cluster
        runs: list[SortedList | None] = []  # type: ignore[type-arg]
        for term in worker.restrictions.terms:
            if term.kind is TermKind.SUBTREE:
                if is_within(anchor, term.path):
                    return [whole]
                if order > 1 and cluster_order(term.path, home) == order:
                    runs.append(self._subtree.get(term.path))
            elif term.kind is TermKind.EXACT:
                if cluster_order(term.path, home) == order:
                    runs.append(self._own.get(term.path))
            else:
                for child in self._children.get(term.path, ()):
                    if cluster_order(child, home) == order:
                        runs.append(self._own.get(child))
        return [run for run in runs if run is not None]

    def _pattern_runs(self, home: str) -> list[SortedList]:  # type: ignore[type-arg]
        runs = []
        exact = self._pattern_exact.get(home)
        if exact is not None:
            runs.append(exact)
        if self._pattern_prefix:
            for end in range(1, len(home) + 1):
                run = self._pattern_prefix.get(home[:end])
                if run is not None:
                    runs.append(run)
        return runs
