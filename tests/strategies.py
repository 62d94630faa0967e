"""Shared hypothesis strategies for the cluster and ranking tests, and an oracle.

Clusters are drawn from a tiny alphabet (`a`, `b`, `c`, `ab`) and at most four levels
deep, so that siblings collide, string-prefix patterns such as `/a+` also reach `/ab`,
and restrictions such as `/a/+` must not reach `/ab`.

Jobs are drawn as `JobSpec`: the raw pattern and restriction *texts* a user would type,
plus `queued()` to build the `QueuedJob` farmd sees. The texts are kept because the
oracle at the end of this module reads them itself: it computes cluster order with its
own LCA, matches patterns and restrictions with its own code, and shares nothing with
farmd but the input strings. The index and `farmd.ranking.reference_order` are both held
to it, so a bug they share cannot hide.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from hypothesis import Phase, settings
from hypothesis import strategies as st

from farmd.cluster import parse_patterns, parse_restrictions
from farmd.ranking import DEFAULT_PRIORITY, QueuedJob, WorkerView

SEGMENTS = ("a", "b", "c", "ab")
MAX_DEPTH = 4

# Property tests replay the same examples on every run (derandomize): a failure is
# reproducible from the test name alone, and CI cannot flake on a lucky draw. A failure
# is shrunk once, not once per symptom, and not "explained" (that phase alone can take
# minutes on the state machine); the shrunk example is what a bug report needs.
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    phases=[phase for phase in Phase if phase is not Phase.explain],
)


RankKey = tuple[int, int, int]


@dataclass(frozen=True)
class JobSpec:
    """A queued job as a user submits it: raw texts, parsed only by `queued()`."""

    id: int
    cluster: str
    priority: int = DEFAULT_PRIORITY
    patterns: str = ""
    restrictions: str = ""

    def queued(self) -> QueuedJob:
        return _queued(self)


@functools.lru_cache(maxsize=4096)
def _queued(spec: JobSpec) -> QueuedJob:
    return QueuedJob(
        id=spec.id,
        cluster=spec.cluster,
        priority=spec.priority,
        patterns=parse_patterns(spec.patterns),
        restrictions=parse_restrictions(spec.restrictions),
    )


@dataclass(frozen=True)
class WorkerSpec:
    """A worker asking for work: its cluster and its raw restriction text."""

    cluster: str
    restrictions: str = ""

    def view(self) -> WorkerView:
        return WorkerView(cluster=self.cluster, restrictions=parse_restrictions(self.restrictions))


@dataclass(frozen=True)
class Scenario:
    """A queue, the workers that ask it, and the job ids the caller's predicate refuses."""

    tree: tuple[str, ...]
    jobs: tuple[JobSpec, ...]
    workers: tuple[WorkerSpec, ...]
    refused: frozenset[int]


# --------------------------------------------------------------------------- clusters
#
# Strategies that depend on a tree are cached per tree, and none builds a strategy per
# draw (no `flatmap`): hypothesis replays thousands of examples while it shrinks a
# failure, and building strategies, not running farmd, would dominate that time.


def _join(segments: Sequence[str]) -> str:
    return "/" + "/".join(segments)


@functools.cache
def cluster_paths(min_depth: int = 0, max_depth: int = MAX_DEPTH) -> st.SearchStrategy[str]:
    """A normalised cluster path, `min_depth` to `max_depth` levels below the root."""
    return st.lists(st.sampled_from(SEGMENTS), min_size=min_depth, max_size=max_depth).map(_join)


def with_ancestors(paths: Iterable[str]) -> tuple[str, ...]:
    """The tree those clusters make: each of them and all their ancestors, sorted."""
    nodes = {"/"}
    for path in paths:
        segments = _segments(path)
        nodes.update(_join(segments[:n]) for n in range(1, len(segments) + 1))
    return tuple(sorted(nodes))


def cluster_trees() -> st.SearchStrategy[tuple[str, ...]]:
    """A random cluster tree, as the sorted tuple of its clusters (root included)."""
    return st.lists(cluster_paths(), min_size=1, max_size=6).map(with_ancestors)


@functools.lru_cache(maxsize=256)
def clusters_in(tree: tuple[str, ...] | None) -> st.SearchStrategy[str]:
    """A cluster of `tree`, or any cluster when `tree` is None."""
    return st.sampled_from(tree) if tree else cluster_paths()


@functools.lru_cache(maxsize=256)
def clusters_near(tree: tuple[str, ...] | None) -> st.SearchStrategy[str]:
    """Mostly clusters of `tree`, sometimes ones it lacks (including a name no job uses)."""
    return st.one_of(
        clusters_in(tree), cluster_paths(), st.sampled_from(["/zz", "/a/zz", "/ab/zz/a"])
    )


def sometimes(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`strategy` one time in three, else the empty text (no patterns, unrestricted)."""
    return st.one_of(st.just(""), st.just(""), strategy)


# --------------------------------------------------------------------------- languages


def _prefix_entry(parts: tuple[str, int]) -> str:
    path, cut = parts
    return path[: 1 + cut % len(path)] + "+"


@functools.lru_cache(maxsize=256)
def pattern_entries(tree: tuple[str, ...] | None) -> st.SearchStrategy[str]:
    """One cross-cluster entry: an exact cluster, a string prefix + `+`, or `/+`."""
    prefixes = st.tuples(clusters_near(tree), st.integers(0, 16)).map(_prefix_entry)
    return st.one_of(clusters_near(tree), prefixes, st.just("/+"))


def _joined(parts: tuple[list[str], str]) -> str:
    return parts[1].join(parts[0])


@functools.lru_cache(maxsize=256)
def pattern_texts(tree: tuple[str, ...] | None = None) -> st.SearchStrategy[str]:
    """A comma-separated list of one to three pattern entries."""
    return st.tuples(
        st.lists(pattern_entries(tree), min_size=1, max_size=3), st.sampled_from([",", ", "])
    ).map(_joined)


def _children_term(path: str) -> str:
    return "/*" if path == "/" else path + "/*"


def _subtree_term(path: str) -> str:
    return "/+" if path == "/" else path + "/+"


@functools.lru_cache(maxsize=256)
def restriction_terms(tree: tuple[str, ...] | None) -> st.SearchStrategy[str]:
    """One restriction term of each kind: `/A`, `/A/*`, `/A/+`, `/+`."""
    base = clusters_near(tree)
    return st.one_of(base, base.map(_children_term), base.map(_subtree_term), st.just("/+"))


@functools.lru_cache(maxsize=256)
def restriction_texts(tree: tuple[str, ...] | None = None) -> st.SearchStrategy[str]:
    """One to three alternatives joined by `||`, `or` or `,` (with or without spaces)."""
    return st.tuples(
        st.lists(restriction_terms(tree), min_size=1, max_size=3),
        st.sampled_from([" || ", "||", " or ", ",", ", "]),
    ).map(_joined)


# --------------------------------------------------------------------------- jobs, workers

# A small range, so that ties (first come, first served) happen often.
priorities = st.one_of(st.integers(1, 3), st.just(DEFAULT_PRIORITY))

job_ids = st.integers(1, 80)
_PLACEHOLDER_ID = st.just(0)  # replaced before a job is built (one object, so cached)


@functools.lru_cache(maxsize=256)
def job_specs(
    tree: tuple[str, ...] | None = None,
    ids: st.SearchStrategy[int] = job_ids,
    clusters: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[JobSpec]:
    """A job in `tree` (or in `clusters`), sometimes with patterns or restrictions."""
    return st.builds(
        JobSpec,
        id=ids,
        cluster=clusters_in(tree) if clusters is None else clusters,
        priority=priorities,
        patterns=sometimes(pattern_texts(tree)),
        restrictions=sometimes(restriction_texts(tree)),
    )


@st.composite
def queues(
    draw: st.DrawFn, tree: tuple[str, ...] | None = None, max_size: int = 12
) -> tuple[JobSpec, ...]:
    """Jobs with distinct ids, in a random submission order (not id order)."""
    ids = draw(st.lists(job_ids, unique=True, max_size=max_size))
    return tuple(draw(jobs_with_ids(tree, ids)))


def jobs_with_ids(
    tree: tuple[str, ...] | None, ids: Sequence[int]
) -> st.SearchStrategy[list[JobSpec]]:
    """One job for each of these ids, in that order."""
    n = len(ids)
    return st.lists(job_specs(tree, _PLACEHOLDER_ID), min_size=n, max_size=n).map(
        lambda jobs: [
            dataclasses.replace(job, id=job_id) for job, job_id in zip(jobs, ids, strict=True)
        ]
    )


@functools.lru_cache(maxsize=256)
def worker_specs(tree: tuple[str, ...] | None = None) -> st.SearchStrategy[WorkerSpec]:
    return st.builds(
        WorkerSpec, cluster=clusters_near(tree), restrictions=sometimes(restriction_texts(tree))
    )


@st.composite
def scenarios(draw: st.DrawFn, max_jobs: int = 12, max_workers: int = 3) -> Scenario:
    tree = draw(cluster_trees())
    jobs = draw(queues(tree, max_size=max_jobs))
    workers = draw(st.lists(worker_specs(tree), min_size=1, max_size=max_workers))
    refused = (
        draw(st.frozensets(st.sampled_from([job.id for job in jobs]))) if jobs else frozenset()
    )
    return Scenario(tree, jobs, tuple(workers), refused)


# --------------------------------------------------------------------------- the oracle


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def oracle_order(job_cluster: str, worker_cluster: str) -> int:
    """Cluster order from first principles: 1 at home, else 2 + levels below the LCA."""
    job, worker = _segments(job_cluster), _segments(worker_cluster)
    if job == worker:
        return 1
    shared = 0
    for mine, theirs in zip(job, worker, strict=False):
        if mine != theirs:
            break
        shared += 1
    return 2 + len(worker) - shared


def oracle_pattern_matches(text: str, cluster: str) -> bool:
    for entry in (raw.strip() for raw in text.split(",")):
        if entry.endswith("+"):
            if cluster.startswith(entry[:-1]):
                return True
        elif entry and _segments(entry) == _segments(cluster):
            return True
    return False


_ALTERNATIVES = re.compile(r"\|\||,|\sor\s")


def oracle_accepts(text: str, cluster: str) -> bool:
    terms = [term.strip() for term in _ALTERNATIVES.split(text) if term.strip()]
    if not terms:
        return True
    here = _segments(cluster)
    for term in terms:
        if term.endswith("/+"):
            base = _segments(term[:-2])
            if here[: len(base)] == base:
                return True
        elif term.endswith("/*"):
            base = _segments(term[:-2])
            if len(here) == len(base) + 1 and here[:-1] == base:
                return True
        elif _segments(term) == here:
            return True
    return False


def oracle_keys(
    jobs: Iterable[JobSpec], worker: WorkerSpec, refused: Collection[int] = ()
) -> list[RankKey]:
    """The worker's queue as rank keys: filter by both sides and the caller, then sort."""
    keys = []
    for job in jobs:
        if job.id in refused:
            continue
        if not oracle_accepts(worker.restrictions, job.cluster):
            continue
        if not oracle_accepts(job.restrictions, worker.cluster):
            continue
        if oracle_pattern_matches(job.patterns, worker.cluster):
            order = 1
        else:
            order = oracle_order(job.cluster, worker.cluster)
        keys.append((order, job.priority, job.id))
    return sorted(keys)
