"""The ranking index against brute force, on random trees, queues and change sequences.

Two oracles: `farmd.ranking.reference_order`, and the independent one in
`tests.strategies` that re-derives cluster order, patterns and restrictions from the raw
texts. Both must agree with each other, and the index with both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from farmd.cluster import parse_patterns, parse_restrictions
from farmd.errors import JobSpecError, UnknownJobError
from farmd.ranking import Eligible, RankingIndex, reference_order
from tests.strategies import (
    PROPERTY_SETTINGS,
    SEGMENTS,
    JobSpec,
    RankKey,
    Scenario,
    WorkerSpec,
    cluster_paths,
    clusters_near,
    job_specs,
    oracle_keys,
    pattern_texts,
    priorities,
    restriction_texts,
    scenarios,
    sometimes,
    worker_specs,
)

NEW_IDS = st.integers(101, 140)  # ids no generated queue uses


def refusing(refused: frozenset[int]) -> Eligible | None:
    """The caller's predicate: refuse these job ids (None when it refuses none)."""
    if not refused:
        return None
    return lambda job: job.id not in refused


def build(jobs: Iterable[JobSpec]) -> RankingIndex:
    index = RankingIndex()
    for spec in jobs:
        index.add(spec.queued())
    return index


def walk_pages(
    index: RankingIndex, worker: WorkerSpec, size: int, eligible: Eligible | None
) -> list[RankKey]:
    """Walk the whole queue `size` at a time, each page resuming after the last key."""
    view = worker.view()
    keys: list[RankKey] = []
    after = None
    for _ in range(len(index) + 2):  # bounded: at least one job per page, then an empty one
        page = index.page(view, size, after=after, eligible=eligible)
        if not page:
            break
        assert len(page) <= size
        keys.extend(ranked.key for ranked in page)
        after = page[-1].key
    return keys


def assert_index_matches(
    index: RankingIndex,
    jobs: Iterable[JobSpec],
    worker: WorkerSpec,
    refused: frozenset[int] = frozenset(),
    page_sizes: Iterable[int] = (1, 3),
) -> None:
    """Everything the index answers for this worker equals the oracle's queue."""
    jobs = list(jobs)
    expected = oracle_keys(jobs, worker, refused)
    eligible = refusing(refused)
    view = worker.view()
    ranked = list(index.ranked(view, eligible))
    assert [r.key for r in ranked] == expected
    # Each answer is the queued job itself, with its current values.
    by_id = {spec.id: spec for spec in jobs}
    for r in ranked:
        assert r.job == by_id[r.job.id].queued()
        assert (r.order, r.priority) == r.key[:2]
    best = index.best(view, eligible)
    assert (best.key if best else None) == (expected[0] if expected else None)
    for size in page_sizes:
        assert walk_pages(index, worker, size, eligible) == expected


# --------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(scenarios())
def test_reference_order_agrees_with_the_independent_oracle(scenario: Scenario) -> None:
    queued = [spec.queued() for spec in scenario.jobs]
    for worker in scenario.workers:
        got = reference_order(queued, worker.view(), refusing(scenario.refused))
        assert [r.key for r in got] == oracle_keys(scenario.jobs, worker, scenario.refused)


@PROPERTY_SETTINGS
@given(scenarios())
def test_index_agrees_with_the_oracle(scenario: Scenario) -> None:
    index = build(scenario.jobs)
    for worker in scenario.workers:
        assert_index_matches(index, scenario.jobs, worker)
        assert_index_matches(index, scenario.jobs, worker, scenario.refused)


@PROPERTY_SETTINGS
@given(scenarios(), st.data())
def test_index_agrees_with_the_oracle_while_jobs_come_and_go(
    scenario: Scenario, data: st.DataObject
) -> None:
    # Workers ask between the changes (after each arrival), so whatever one query caches
    # must follow the queue as jobs leave clusters and others arrive, in the same
    # clusters or in new ones.
    index = build(scenario.jobs)
    for worker in scenario.workers:
        assert_index_matches(index, scenario.jobs, worker, page_sizes=())
    ids = [spec.id for spec in scenario.jobs]
    goes = data.draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)), label="goes")
    leaving = {job_id for job_id, go in zip(ids, goes, strict=True) if go}
    for job_id in sorted(leaving):
        index.remove(job_id)
    queue = [spec for spec in scenario.jobs if spec.id not in leaving]
    for worker in scenario.workers:
        assert_index_matches(index, queue, worker, page_sizes=())
    arriving = data.draw(
        st.lists(
            job_specs(scenario.tree, NEW_IDS, clusters_near(scenario.tree)),
            min_size=1,
            max_size=8,
            unique_by=lambda spec: spec.id,
        ),
        label="arriving",
    )
    for spec in arriving:
        index.add(spec.queued())
        queue.append(spec)
        for worker in scenario.workers:
            assert_index_matches(index, queue, worker, page_sizes=())
    for worker in scenario.workers:
        assert_index_matches(index, queue, worker, scenario.refused)


# --------------------------------------------------------------------------- stateful

MAX_JOBS = 40
# Up to 40 jobs, mostly in deep clusters: jobs spread over many runs, so that emptied runs
# pile up and the index's bulk drop of them happens during many examples (about a third).
MACHINE_CLUSTERS = st.one_of(cluster_paths(), cluster_paths(min_depth=3))
machine_jobs = job_specs(clusters=MACHINE_CLUSTERS)


class RankingMachine(RuleBasedStateMachine):
    """Random queue changes; after each, several workers see exactly the oracle's queue."""

    def __init__(self) -> None:
        super().__init__()
        self.index = RankingIndex()
        self.jobs: dict[int, JobSpec] = {}
        self.workers: list[WorkerSpec] = []

    @initialize(
        workers=st.lists(worker_specs(), min_size=3, max_size=5),
        jobs=st.lists(machine_jobs, max_size=MAX_JOBS, unique_by=lambda spec: spec.id),
    )
    def start(self, workers: list[WorkerSpec], jobs: list[JobSpec]) -> None:
        self.workers = [WorkerSpec("/"), *workers]
        for spec in jobs:
            self.index.add(spec.queued())
            self.jobs[spec.id] = spec

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.jobs)), label="job id")

    def _update(self, job_id: int, **changes: object) -> None:
        new = self.index.update(job_id, **changes)  # type: ignore[arg-type]
        assert new.id == job_id
        assert self.index.get(job_id) == new

    @precondition(lambda self: len(self.jobs) < MAX_JOBS)
    @rule(spec=machine_jobs)
    def add(self, spec: JobSpec) -> None:
        if spec.id in self.jobs:
            with pytest.raises(JobSpecError):
                self.index.add(spec.queued())
        else:
            self.index.add(spec.queued())
            self.jobs[spec.id] = spec

    @precondition(lambda self: len(self.jobs) < MAX_JOBS)
    @rule(specs=st.lists(machine_jobs, min_size=10, max_size=25, unique_by=lambda spec: spec.id))
    def add_many(self, specs: list[JobSpec]) -> None:
        for spec in specs:
            if spec.id not in self.jobs and len(self.jobs) < MAX_JOBS:
                self.index.add(spec.queued())
                self.jobs[spec.id] = spec

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        job_id = self._pick(data)
        assert self.index.remove(job_id) == self.jobs.pop(job_id).queued()

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def remove_many(self, data: st.DataObject) -> None:
        leaving = data.draw(st.sets(st.sampled_from(sorted(self.jobs))), label="leaving")
        for job_id in sorted(leaving):
            self.index.remove(job_id)
            del self.jobs[job_id]

    @precondition(lambda self: self.jobs)
    @rule()
    def drain(self) -> None:
        for job_id in sorted(self.jobs, reverse=True):
            self.index.remove(job_id)
        self.jobs.clear()

    @rule(data=st.data())
    def remove_unknown(self, data: st.DataObject) -> None:
        job_id = data.draw(st.integers(1, 100).filter(lambda n: n not in self.jobs))
        with pytest.raises(UnknownJobError):
            self.index.remove(job_id)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), priority=priorities)
    def update_priority(self, data: st.DataObject, priority: int) -> None:
        job_id = self._pick(data)
        self._update(job_id, priority=priority)
        self.jobs[job_id] = self._with(job_id, priority=priority)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), cluster=MACHINE_CLUSTERS)
    def update_cluster(self, data: st.DataObject, cluster: str) -> None:
        job_id = self._pick(data)
        self._update(job_id, cluster=cluster)
        self.jobs[job_id] = self._with(job_id, cluster=cluster)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), text=sometimes(pattern_texts()))
    def update_patterns(self, data: st.DataObject, text: str) -> None:
        job_id = self._pick(data)
        self._update(job_id, patterns=parse_patterns(text))
        self.jobs[job_id] = self._with(job_id, patterns=text)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), text=sometimes(restriction_texts()))
    def update_restrictions(self, data: st.DataObject, text: str) -> None:
        job_id = self._pick(data)
        self._update(job_id, restrictions=parse_restrictions(text))
        self.jobs[job_id] = self._with(job_id, restrictions=text)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), priority=st.sampled_from([0, -1, True, "5", 2**31]))
    def update_with_bad_priority(self, data: st.DataObject, priority: object) -> None:
        job_id = self._pick(data)
        with pytest.raises(JobSpecError):
            self.index.update(job_id, priority=priority)  # type: ignore[arg-type]
        assert self.index.get(job_id) == self.jobs[job_id].queued()

    def _with(self, job_id: int, **changes: Any) -> JobSpec:
        return dataclasses.replace(self.jobs[job_id], **changes)

    @invariant()
    def index_equals_oracle(self) -> None:
        assert len(self.index) == len(self.jobs)
        assert sorted(job.id for job in self.index) == sorted(self.jobs)
        thirds = frozenset(job_id for job_id in self.jobs if job_id % 3 == 0)
        for worker in self.workers:
            assert_index_matches(self.index, self.jobs.values(), worker, page_sizes=(4,))
            assert_index_matches(self.index, self.jobs.values(), worker, thirds, page_sizes=())


TestRankingMachine = RankingMachine.TestCase
TestRankingMachine.settings = settings(PROPERTY_SETTINGS, max_examples=100, stateful_step_count=30)


# --------------------------------------------------------------------------- bulk churn


def _all_clusters(max_depth: int) -> list[str]:
    level = ["/"]
    found: list[str] = []
    for _ in range(max_depth):
        level = [("" if parent == "/" else parent) + "/" + s for parent in level for s in SEGMENTS]
        found.extend(level)
    return found


def test_index_equals_oracle_after_hundreds_of_jobs_leave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Guard: this scenario must reach the index's bulk drop of emptied runs, or it would
    # not test what it is named for.
    drops: list[int] = []
    drop = RankingIndex._drop_empty_runs

    def counting_drop(index: RankingIndex) -> None:
        drops.append(len(index))
        drop(index)

    monkeypatch.setattr(RankingIndex, "_drop_empty_runs", counting_drop)

    clusters = _all_clusters(3)  # 84 clusters, up to three levels down
    jobs = [
        JobSpec(
            id=n,
            cluster=clusters[(n * 11) % len(clusters)],
            priority=n % 3 + 1,
            patterns="/a/b+" if n % 13 == 0 else "",
            restrictions="/a/+ || /c/*" if n % 11 == 0 else "",
        )
        for n in range(1, 301)
    ]
    workers = [
        WorkerSpec("/"),
        WorkerSpec("/a/b/c"),
        WorkerSpec("/ab"),
        WorkerSpec("/c/ab/a", "/c/+ || /a/b/*"),
        WorkerSpec("/b/a", "/b/a || /ab/+"),
        WorkerSpec("/a/bb"),
    ]
    index = build(jobs)
    for worker in workers:
        assert_index_matches(index, jobs, worker, page_sizes=(7,))

    # All but six jobs leave, in three waves, and every worker asks between the waves.
    gone: set[int] = set()
    for job in jobs:
        if job.id % 50 == 0:
            continue
        index.remove(job.id)
        gone.add(job.id)
        if len(gone) % 98 == 0:
            staying = [job for job in jobs if job.id not in gone]
            for worker in workers:
                assert_index_matches(index, staying, worker, page_sizes=(7,))
    assert drops, "the scenario never dropped emptied runs"

    # New jobs across the tree, many in clusters whose runs were dropped or emptied, for
    # the workers that asked before and for ones that had not.
    arriving = [
        JobSpec(id=1000 + n, cluster=clusters[(n * 5) % len(clusters)], priority=n % 2 + 1)
        for n in range(60)
    ]
    for job in arriving:
        index.add(job.queued())
    remaining = [job for job in jobs if job.id not in gone] + arriving
    for worker in [
        *workers,
        WorkerSpec("/a"),
        WorkerSpec("/b/c/a"),
        WorkerSpec("/ab/ab/ab", "/ab/+ || /b/*"),
        WorkerSpec("/c/c", "/c/c/* or /a/b/c, /"),
    ]:
        assert_index_matches(index, remaining, worker, page_sizes=(7,))
