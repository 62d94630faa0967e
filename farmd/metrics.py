"""Prometheus metrics for the supervisor, pulled from the core at scrape time.

Theory of operation
-------------------
Observability is pulled, not pushed: the core keeps no metric objects and counts nothing
for Prometheus. The shell hands `FarmMetrics` a `statistics()` callable that returns a
frozen `FarmStatistics` record, and a custom collector calls it exactly once per scrape
and turns that one record into every gauge and counter family. A scrape therefore sees
one consistent picture of the farm, and a farm that is never scraped pays nothing.

The only state kept here is what the core cannot know: two latency histograms that the
shell observes (`observe_dispatch`, `observe_commit`), since the core reads no clock.

Series are stable: every cluster that has a job gets a sample for every frame and job
state, every worker cluster one for every worker state, zero where nothing is counted.
A dashboard then never sees a series vanish when, say, the last failed frame of a show
is retried. A state the record names that is not a known one is passed through as is.
Rows that repeat a (cluster, state) are summed.

Hierarchy: `farmd_frames` counts the frames of jobs in exactly that cluster;
`farmd_frames_subtree` counts those at or below it (`/show1` includes `/show1/lighting`,
`/` is the whole farm), so a dashboard can sum a show without knowing its sub-clusters.
It costs one pass over the rows, each added to its cluster's few ancestors.

`FarmMetrics` owns its `CollectorRegistry` (never the process-wide default one), so two
supervisors, or two tests, in one process do not clash. `exposition()` renders the text
format in the calling thread: call it from the thread that owns the core (the trio
thread) so `statistics()` reads a scheduler nobody is changing at that moment.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from farmd.cluster import ROOT
from farmd.core import EMPTY_STATISTICS, FarmStatistics
from farmd.frames import FrameState
from farmd.jobs import JobState

FRAME_STATES: tuple[str, ...] = tuple(state.value for state in FrameState)
JOB_STATES: tuple[str, ...] = tuple(state.value for state in JobState)
WORKER_STATES: tuple[str, ...] = ("idle", "busy", "locked")

# Dispatch is in-process (sub-millisecond when the farm is healthy); a store commit is a
# write and perhaps an fsync (milliseconds). Both can stall for seconds under load, which
# is what the top buckets are for. `Histogram` adds +Inf itself.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@functools.lru_cache(maxsize=16384)
def cluster_and_ancestors(path: str) -> tuple[str, ...]:
    """`/a/b` -> `('/a/b', '/a', '/')`; the root is its own only entry.

    Paths are normalised `ClusterPath` strings, so splitting at the last '/' is exact.
    """
    chain = [path]
    while path != ROOT:
        path = path[: path.rfind("/")] or ROOT
        chain.append(path)
    return tuple(chain)


class FarmMetrics:
    """Owns a prometheus CollectorRegistry: a custom collector that calls `statistics()`
    at each scrape and yields gauges/counters from it, plus histograms the shell observes.
    """

    def __init__(
        self,
        statistics: Callable[[], FarmStatistics],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.registry.register(_StatisticsCollector(statistics))
        self._dispatch = Histogram(
            "farmd_dispatch_latency_seconds",
            "From the event that made a pick to the run_frame sent to the worker.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._commit = Histogram(
            "farmd_store_commit_seconds",
            "Time to commit a change to the state store.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.started_at = time.time()
        # active/standby (`farmd.supervisor.election`): which role, at which epoch, since
        # when, and how long the last takeover took from winning the lock to serving
        self._role = Gauge(
            "farmd_supervisor_role",
            "1 for this supervisor's role: active, or standby (another one is active); a "
            "supervisor on SQLite or memory is always active",
            ["role"],
            registry=self.registry,
        )
        self._epoch = Gauge(
            "farmd_supervisor_epoch",
            "The farm's epoch this supervisor serves under (0: SQLite/memory, or standby)",
            registry=self.registry,
        )
        self._active_since = Gauge(
            "farmd_supervisor_active_since_seconds",
            "When this supervisor became active (Unix time)",
            registry=self.registry,
        )
        self._takeover = Gauge(
            "farmd_supervisor_takeover_seconds",
            "From winning the farm's lock to serving as active: loading and restoring the farm",
            registry=self.registry,
        )
        self.observe_election("active", 0, self.started_at, None)

    def observe_election(self, role: str, epoch: int, since: float, takeover: float | None) -> None:
        """This supervisor's role now (`farmd.supervisor.standby`)."""
        for each in ("active", "standby"):
            self._role.labels(each).set(1 if each == role else 0)
        self._epoch.set(epoch)
        self._active_since.set(since if role == "active" else 0)
        if takeover is not None:
            self._takeover.set(takeover)

    def observe_dispatch(self, seconds: float) -> None:
        """Pick-to-start latency. Measure it on a monotonic clock: a negative span (a
        wall clock stepped back) is counted as zero rather than corrupting the sum."""
        self._dispatch.observe(max(seconds, 0.0))

    def observe_commit(self, seconds: float) -> None:
        """Store commit latency, as `observe_dispatch`."""
        self._commit.observe(max(seconds, 0.0))

    def exposition(self) -> tuple[bytes, str]:
        """The body and Content-Type of a `GET /metrics` answer (Prometheus text format).

        Calls `statistics()` once, in this thread.
        """
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class _StatisticsCollector:
    """The registry's view of `statistics()`: one call per scrape."""

    def __init__(self, statistics: Callable[[], FarmStatistics]) -> None:
        self._statistics = statistics

    def describe(self) -> Iterable[Metric]:
        # The registry asks for names at registration, to refuse duplicates; answering
        # from an empty record keeps it from calling `statistics()` then.
        return families(EMPTY_STATISTICS)

    def collect(self) -> Iterable[Metric]:
        return families(self._statistics())


def families(stats: FarmStatistics) -> list[Metric]:
    """Every gauge and counter family for one statistics record."""
    return [
        *_job_families(stats),
        *_worker_families(stats),
        *_resource_families(stats),
        *_counter_families(stats),
        *_release_families(stats),
        *_share_families(stats),
        *_load_families(stats),
    ]


def _load_families(stats: FarmStatistics) -> list[Metric]:
    """Host load by worker cluster, never by worker: a series per worker would be
    10,000 series per figure on a large farm, each changing every report, which costs
    Prometheus far more than the figure is worth; `farmd workers` and the HTTP API show
    each host's own. Sums and a count, so a dashboard can average over any set of
    clusters (sum of CPU / sum of reporting) as well as read each one's mean."""
    reporting = GaugeMetricFamily(
        "farmd_host_load_workers",
        "Connected workers in this cluster that have reported their host's load.",
        labels=("cluster",),
    )
    cpu = GaugeMetricFamily(
        "farmd_host_cpu_busy",
        "Mean CPU use of those workers' hosts, as a fraction (0 to 1) of all their cores "
        "over each agent's last reporting interval.",
        labels=("cluster",),
    )
    cpu_sum = GaugeMetricFamily(
        "farmd_host_cpu_busy_sum",
        "Sum over those workers of their hosts' CPU use fraction (divide by "
        "farmd_host_load_workers to average several clusters).",
        labels=("cluster",),
    )
    used = GaugeMetricFamily(
        "farmd_host_memory_used_bytes",
        "Memory in use on those workers' hosts, summed (MemTotal - MemAvailable; agents "
        "that share a host count it once each).",
        labels=("cluster",),
    )
    total = GaugeMetricFamily(
        "farmd_host_memory_bytes",
        "Memory of those workers' hosts, summed.",
        labels=("cluster",),
    )
    for cluster, count, busy, memory_used, memory_total in stats.host_load:
        reporting.add_metric((cluster,), count)
        cpu.add_metric((cluster,), busy / count if count else 0.0)
        cpu_sum.add_metric((cluster,), busy)
        used.add_metric((cluster,), memory_used)
        total.add_metric((cluster,), memory_total)
    return [reporting, cpu, cpu_sum, used, total]


def _share_families(stats: FarmStatistics) -> list[Metric]:
    family = GaugeMetricFamily(
        "farmd_cluster_share",
        "Each cluster subtree's share of the farm: slots its workers own, free of them, "
        "used by its jobs anywhere, lent to other clusters' jobs, borrowed from other "
        "clusters' workers, and its frames queued (figure)",
        labels=["cluster", "figure"],
    )
    for cluster, figure, value in stats.shares:
        family.add_metric([cluster, figure], value)
    return [family]


def _release_families(stats: FarmStatistics) -> list[Metric]:
    effective = GaugeMetricFamily(
        "farmd_release_effective",
        "1 for each release version effective at a cluster that has workers",
        labels=["cluster", "release", "version"],
    )
    for cluster, name, version in stats.releases_effective:
        effective.add_metric([cluster, name, version], 1)
    workers = GaugeMetricFamily(
        "farmd_release_workers",
        "Workers that have a release version ready (fetched, verified, unpacked)",
        labels=["release", "version"],
    )
    for name, version, count in stats.release_workers:
        workers.add_metric([name, version], count)
    failures = GaugeMetricFamily(
        "farmd_release_fetch_failures",
        "Releases that workers were told of and could not get (per worker and release)",
        value=stats.release_fetch_failures,
    )
    return [effective, workers, failures]


def _table(
    rows: Iterable[tuple[str, str, int]], clusters: Iterable[str], states: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """cluster -> state -> summed count, with a zero for each known state."""
    table = {cluster: dict.fromkeys(states, 0.0) for cluster in clusters}
    for cluster, state, count in rows:
        row = table[cluster]
        row[state] = row.get(state, 0.0) + count
    return table


def _job_families(stats: FarmStatistics) -> list[Metric]:
    clusters = sorted({row[0] for row in stats.frames} | {row[0] for row in stats.jobs})
    frames = _table(stats.frames, clusters, FRAME_STATES)
    jobs = _table(stats.jobs, clusters, JOB_STATES)

    subtree_clusters = sorted({a for cluster in clusters for a in cluster_and_ancestors(cluster)})
    subtree = _table((), subtree_clusters, FRAME_STATES)
    for cluster, state, count in stats.frames:
        for ancestor in cluster_and_ancestors(cluster):
            row = subtree[ancestor]
            row[state] = row.get(state, 0.0) + count

    frames_family = GaugeMetricFamily(
        "farmd_frames",
        "Frames of jobs in exactly this cluster, by frame state.",
        labels=("cluster", "state"),
    )
    subtree_family = GaugeMetricFamily(
        "farmd_frames_subtree",
        "Frames of jobs in this cluster or below it, by frame state.",
        labels=("cluster", "state"),
    )
    jobs_family = GaugeMetricFamily(
        "farmd_jobs",
        "Jobs in exactly this cluster, by job state.",
        labels=("cluster", "state"),
    )
    queue_family = GaugeMetricFamily(
        "farmd_queue_depth",
        "Pending frames of jobs in exactly this cluster.",
        labels=("cluster",),
    )
    for cluster in clusters:
        for state, value in frames[cluster].items():
            frames_family.add_metric((cluster, state), value)
        for state, value in jobs[cluster].items():
            jobs_family.add_metric((cluster, state), value)
        queue_family.add_metric((cluster,), frames[cluster][FrameState.PENDING.value])
    for cluster in subtree_clusters:
        for state, value in subtree[cluster].items():
            subtree_family.add_metric((cluster, state), value)
    return [frames_family, subtree_family, jobs_family, queue_family]


def _worker_families(stats: FarmStatistics) -> list[Metric]:
    clusters = sorted({row[0] for row in stats.workers} | {row[0] for row in stats.slots})
    workers = _table(stats.workers, clusters, WORKER_STATES)
    slots = {cluster: [0.0, 0.0] for cluster in clusters}
    for cluster, used, total in stats.slots:
        slots[cluster][0] += used
        slots[cluster][1] += total

    workers_family = GaugeMetricFamily(
        "farmd_workers",
        "Connected workers in this cluster, by state.",
        labels=("cluster", "state"),
    )
    used_family = GaugeMetricFamily(
        "farmd_slots_used", "Slots held by running frames.", labels=("cluster",)
    )
    total_family = GaugeMetricFamily(
        "farmd_slots_total", "Slots of connected workers.", labels=("cluster",)
    )
    free_family = GaugeMetricFamily(
        "farmd_slots_free",
        "Slots of connected workers not held (total - used, never below zero).",
        labels=("cluster",),
    )
    for cluster in clusters:
        for state, count in workers[cluster].items():
            workers_family.add_metric((cluster, state), count)
        used, total = slots[cluster]
        used_family.add_metric((cluster,), used)
        total_family.add_metric((cluster,), total)
        free_family.add_metric((cluster,), max(total - used, 0.0))
    return [workers_family, used_family, total_family, free_family]


def _resource_families(stats: FarmStatistics) -> list[Metric]:
    amounts: dict[str, list[float]] = {}
    for name, used, total in stats.resources:
        pair = amounts.setdefault(name, [0.0, 0.0])
        pair[0] += used
        pair[1] += total
    used_family = GaugeMetricFamily(
        "farmd_resource_used",
        "Amount of a farm-wide counter (e.g. license.nuke) held by running frames.",
        labels=("resource",),
    )
    total_family = GaugeMetricFamily(
        "farmd_resource_total",
        "Configured total of a farm-wide counter.",
        labels=("resource",),
    )
    for name in sorted(amounts):
        used, total = amounts[name]
        used_family.add_metric((name,), used)
        total_family.add_metric((name,), total)
    return [used_family, total_family]


def _counter_families(stats: FarmStatistics) -> list[Metric]:
    since = "since the supervisor started"
    return [
        CounterMetricFamily(
            "farmd_frames_started", f"Frames sent to a worker {since}.", stats.frames_started
        ),
        CounterMetricFamily(
            "farmd_frames_completed", f"Frames that completed {since}.", stats.frames_completed
        ),
        CounterMetricFamily(
            "farmd_frames_failed", f"Frames that failed {since}.", stats.frames_failed
        ),
        CounterMetricFamily(
            "farmd_frames_retried",
            f"Frames put back to pending by a retry {since}.",
            stats.frames_retried,
        ),
        CounterMetricFamily(
            "farmd_frames_preempted",
            f"Running frames stopped and requeued by preemption {since}.",
            stats.frames_preempted,
        ),
    ]
