"""The metrics module: scrape a fake farm, parse the text format, check exact samples."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import DuplicateTimeseries

from farmd.metrics import (
    EMPTY_STATISTICS,
    FRAME_STATES,
    JOB_STATES,
    LATENCY_BUCKETS,
    WORKER_STATES,
    FarmMetrics,
    FarmStatistics,
    cluster_and_ancestors,
)

DASHBOARD = Path(__file__).parent.parent / "conf" / "grafana-farmd.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STATS = FarmStatistics(
    frames=(
        ("/show1", "pending", 4),
        ("/show1", "running", 1),
        ("/show1/lighting", "running", 3),
        ("/show1/lighting", "failed", 2),
        ("/show1/lighting/comp", "running", 5),
        ("/show2", "running", 7),
        ("/show2", "pending", 10),
        ("/show2", "pending", 1),  # a repeated row is summed
        ("/", "complete", 6),
    ),
    jobs=(
        ("/show1", "running", 1),
        ("/show1/lighting", "running", 1),
        ("/show1/lighting/comp", "running", 1),
        ("/show2", "running", 2),
        ("/show3", "waiting", 1),  # a job with no frames yet still has a cluster
        ("/", "complete", 1),
    ),
    workers=(
        ("/farm/a", "idle", 2),
        ("/farm/a", "busy", 3),
        ("/farm/b", "locked", 1),
    ),
    slots=(("/farm/a", 6.0, 10.0), ("/farm/b", 0.0, 4.0)),
    resources=(("license.nuke", 3.0, 10.0), ("license.houdini", 0.0, 2.0)),
    frames_started=100,
    frames_completed=80,
    frames_failed=7,
    frames_retried=5,
    frames_preempted=2,
)


class FakeStatistics:
    """Returns a settable record and counts how often it was asked."""

    def __init__(self, stats: FarmStatistics) -> None:
        self.stats = stats
        self.calls = 0

    def __call__(self) -> FarmStatistics:
        self.calls += 1
        return self.stats


def scrape(metrics: FarmMetrics) -> Samples:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def fake() -> FakeStatistics:
    return FakeStatistics(STATS)


@pytest.fixture
def metrics(fake: FakeStatistics) -> FarmMetrics:
    return FarmMetrics(fake)


def test_frame_and_job_gauges(metrics: FarmMetrics) -> None:
    samples = scrape(metrics)
    assert samples[key("farmd_frames", cluster="/show1/lighting", state="running")] == 3
    assert samples[key("farmd_frames", cluster="/show1/lighting", state="failed")] == 2
    assert samples[key("farmd_frames", cluster="/show2", state="pending")] == 11
    assert samples[key("farmd_jobs", cluster="/show2", state="running")] == 2
    assert samples[key("farmd_jobs", cluster="/show3", state="waiting")] == 1
    assert series(samples, "farmd_queue_depth") == {
        frozenset({("cluster", "/")}): 0,
        frozenset({("cluster", "/show1")}): 4,
        frozenset({("cluster", "/show1/lighting")}): 0,
        frozenset({("cluster", "/show1/lighting/comp")}): 0,
        frozenset({("cluster", "/show2")}): 11,
        frozenset({("cluster", "/show3")}): 0,
    }


def test_every_state_has_a_series(metrics: FarmMetrics) -> None:
    """Zeros keep series stable: each job cluster has every frame and job state."""
    samples = scrape(metrics)
    clusters = {"/", "/show1", "/show1/lighting", "/show1/lighting/comp", "/show2", "/show3"}
    assert set(series(samples, "farmd_frames")) == {
        frozenset({("cluster", c), ("state", s)}) for c in clusters for s in FRAME_STATES
    }
    assert set(series(samples, "farmd_jobs")) == {
        frozenset({("cluster", c), ("state", s)}) for c in clusters for s in JOB_STATES
    }
    assert samples[key("farmd_frames", cluster="/show3", state="running")] == 0
    assert samples[key("farmd_workers", cluster="/farm/b", state="idle")] == 0


def test_states_match_the_model() -> None:
    assert FRAME_STATES == (
        "pending",
        "running",
        "complete",
        "failed",
        "killed",
        "blocked",
        "suspended",
    )
    assert set(JOB_STATES) == {
        "waiting",
        "pending",
        "running",
        "blocked",
        "suspended",
        "complete",
        "failed",
        "killed",
    }
    assert WORKER_STATES == ("idle", "busy", "locked")


def test_subtree_includes_descendants(metrics: FarmMetrics) -> None:
    samples = scrape(metrics)

    def subtree(cluster: str, state: str) -> float:
        return samples[key("farmd_frames_subtree", cluster=cluster, state=state)]

    assert subtree("/show1/lighting/comp", "running") == 5
    assert subtree("/show1/lighting", "running") == 3 + 5
    assert subtree("/show1", "running") == 1 + 3 + 5
    assert subtree("/show1", "failed") == 2
    assert subtree("/show1", "pending") == 4
    assert subtree("/show2", "running") == 7
    assert subtree("/", "running") == 1 + 3 + 5 + 7
    assert subtree("/", "complete") == 6
    assert subtree("/show3", "running") == 0
    # The root's subtree is the whole farm, state by state.
    for state in FRAME_STATES:
        assert subtree("/", state) == sum(
            value
            for labels, value in series(samples, "farmd_frames").items()
            if ("state", state) in labels
        )


def test_cluster_and_ancestors() -> None:
    assert cluster_and_ancestors("/") == ("/",)
    assert cluster_and_ancestors("/a") == ("/a", "/")
    assert cluster_and_ancestors("/a/b.c/d-e") == ("/a/b.c/d-e", "/a/b.c", "/a", "/")


def test_worker_slot_and_resource_gauges(metrics: FarmMetrics) -> None:
    samples = scrape(metrics)
    assert series(samples, "farmd_workers") == {
        frozenset({("cluster", "/farm/a"), ("state", "idle")}): 2,
        frozenset({("cluster", "/farm/a"), ("state", "busy")}): 3,
        frozenset({("cluster", "/farm/a"), ("state", "locked")}): 0,
        frozenset({("cluster", "/farm/b"), ("state", "idle")}): 0,
        frozenset({("cluster", "/farm/b"), ("state", "busy")}): 0,
        frozenset({("cluster", "/farm/b"), ("state", "locked")}): 1,
    }
    assert samples[key("farmd_slots_used", cluster="/farm/a")] == 6
    assert samples[key("farmd_slots_total", cluster="/farm/a")] == 10
    assert samples[key("farmd_slots_free", cluster="/farm/a")] == 4
    assert samples[key("farmd_slots_free", cluster="/farm/b")] == 4
    assert samples[key("farmd_resource_used", resource="license.nuke")] == 3
    assert samples[key("farmd_resource_total", resource="license.nuke")] == 10
    assert samples[key("farmd_resource_total", resource="license.houdini")] == 2


def test_slots_free_never_negative(fake: FakeStatistics, metrics: FarmMetrics) -> None:
    fake.stats = attrs.evolve(EMPTY_STATISTICS, slots=(("/farm/a", 5.0, 4.0),))
    assert scrape(metrics)[key("farmd_slots_free", cluster="/farm/a")] == 0


def test_counters(fake: FakeStatistics, metrics: FarmMetrics) -> None:
    samples = scrape(metrics)
    assert samples[key("farmd_frames_started_total")] == 100
    assert samples[key("farmd_frames_completed_total")] == 80
    assert samples[key("farmd_frames_failed_total")] == 7
    assert samples[key("farmd_frames_retried_total")] == 5
    assert samples[key("farmd_frames_preempted_total")] == 2
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(metrics.exposition()[0].decode())
    }
    assert families["farmd_frames_started"] == "counter"
    assert families["farmd_frames"] == "gauge"
    assert families["farmd_dispatch_latency_seconds"] == "histogram"

    fake.stats = attrs.evolve(STATS, frames_completed=81)
    assert scrape(metrics)[key("farmd_frames_completed_total")] == 81


def test_histograms(metrics: FarmMetrics) -> None:
    metrics.observe_dispatch(0.0004)
    metrics.observe_dispatch(0.003)
    metrics.observe_dispatch(-1.0)  # a clock stepped back counts as zero
    metrics.observe_commit(0.02)
    samples = scrape(metrics)

    def bucket(name: str, le: str) -> float:
        return samples[key(f"{name}_bucket", le=le)]

    dispatch = "farmd_dispatch_latency_seconds"
    assert samples[key(f"{dispatch}_count")] == 3
    assert samples[key(f"{dispatch}_sum")] == pytest.approx(0.0034)
    assert bucket(dispatch, "0.0001") == 1
    assert bucket(dispatch, "0.0005") == 2
    assert bucket(dispatch, "0.0025") == 2
    assert bucket(dispatch, "0.005") == 3
    assert bucket(dispatch, "+Inf") == 3
    assert len(series(samples, f"{dispatch}_bucket")) == len(LATENCY_BUCKETS) + 1

    commit = "farmd_store_commit_seconds"
    assert samples[key(f"{commit}_count")] == 1
    assert bucket(commit, "0.01") == 0
    assert bucket(commit, "0.025") == 1


def test_statistics_called_once_per_scrape(fake: FakeStatistics) -> None:
    metrics = FarmMetrics(fake)
    assert fake.calls == 0  # registering asks `describe`, not `statistics()`
    scrape(metrics)
    assert fake.calls == 1
    metrics.observe_dispatch(0.001)
    scrape(metrics)
    assert fake.calls == 2


def test_registries_are_isolated() -> None:
    first, second = FakeStatistics(STATS), FakeStatistics(EMPTY_STATISTICS)
    a, b = FarmMetrics(first), FarmMetrics(second)
    assert a.registry is not b.registry
    a.observe_dispatch(0.001)
    samples_a, samples_b = scrape(a), scrape(b)
    assert (first.calls, second.calls) == (1, 1)
    assert samples_a[key("farmd_dispatch_latency_seconds_count")] == 1
    assert samples_b[key("farmd_dispatch_latency_seconds_count")] == 0
    assert samples_a[key("farmd_frames_started_total")] == 100
    assert samples_b[key("farmd_frames_started_total")] == 0
    assert not series(samples_b, "farmd_frames")


def test_shared_registry_refuses_a_second_farm() -> None:
    registry = CollectorRegistry()
    metrics = FarmMetrics(FakeStatistics(STATS), registry)
    assert metrics.registry is registry
    with pytest.raises(DuplicateTimeseries):
        FarmMetrics(FakeStatistics(STATS), registry)


def dashboard_expressions(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name in ("expr", "query") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item)


def test_dashboard_references_only_exported_metrics(metrics: FarmMetrics) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]

    exported = {name for name, _ in scrape(metrics)}
    expressions = list(dashboard_expressions(dashboard))
    referenced = {m for e in expressions for m in re.findall(r"\bfarmd_[a-z0-9_]+", e)}
    assert referenced
    assert referenced <= exported, sorted(referenced - exported)
    for needed in ("farmd_queue_depth", "farmd_frames_subtree", "farmd_workers"):
        assert needed in referenced

    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
