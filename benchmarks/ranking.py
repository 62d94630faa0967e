"""Benchmark of the ranking index (`farmd.ranking.RankingIndex`) against its oracle.

Run from anywhere, with the project's interpreter::

    .venv/bin/python benchmarks/ranking.py            # full size: 100,000 jobs
    .venv/bin/python benchmarks/ranking.py --quick    # smoke size, a couple of seconds

It builds a deterministic farm (flag `--seed`): about `--clusters` clusters shaped like
`/showNN/dept/sqNNN/shNNNN` (depth 1 to 4), `--jobs` queued jobs skewed over them (a few
busy clusters, many sparse ones, a quarter with no jobs at all), about 2% of them with
cross-cluster patterns (`/+`, `/showNN+`, `/show0+`, exact clusters) and 5% with job
restrictions, and `--workers` workers, mostly in department clusters, 10% of them with
worker restrictions (`/showNN/+`, `/showNN/lighting/*`, exact clusters, other shows).

For the filtered run each job also gets what the scheduler checks beyond clusters, from
a random stream of its own (so the farm above is the same with or without it): a job
type, one of four or 10% of the time none (any worker), and 10% of the jobs reserve a
GPU; each worker runs two of the four types and 30% of them have a GPU. So for every
worker 45% of the jobs fail the type check, and for a worker without a GPU another ~5%
fail the resource check: about half the queue is ineligible for each worker, spread
evenly over the rank order. The predicate is a closure built per pick, as the scheduler
builds `_fits_on`: it looks the job's record up by id in a dict and tests its type
against the worker's set, then its reservation against the worker's resources.

What is measured, in this order:

1. Memory, with tracemalloc (the only phase traced; tracing stops before any timing):
   `job_bytes_per_job` is what the `QueuedJob` objects themselves cost (the supervisor
   holds them anyway); `index_bytes_per_job` is what `RankingIndex.add` allocates for
   all jobs, divided by the number of jobs (its dict, the sorted runs and their entry
   tuples; the cluster strings, patterns and restrictions are shared and built before);
   `total_bytes_per_job` is both. `warm_cache_bytes` is what one `best` per worker then
   adds (cached plans, per-cluster answers of restrictions and `cluster_order`).
2. Oracle picks, `reference_order(jobs, worker)[0]` (filter then sort every job), for
   the first `--oracle-picks` workers of the pick order. Their full answers, plus those
   of `--verify` more workers chosen to be awkward (restricted, refusing their own
   cluster, in clusters without jobs, near the root), check `best`, `page(worker, 50)`
   and the next page: any difference exits with status 1 and nothing on stdout.
3. Index picks, `RankingIndex.best(worker)`, `--picks` of them cycling through all
   workers in a random order, and `--picks // 10` cycling through the restricted
   workers only. Plans are warm (step 1 asked once per worker): this is the steady
   state of a long-running supervisor. The garbage collector stays enabled.
   Then the filtered run: `best(worker, eligible)` with the predicate above, `--picks`
   of them over the same workers in the same order, closure construction included.
   `filtered_vs_plain` is its picks/s over the plain run's (the target is at least
   0.5); `ineligible_share` is the share of (worker, job) pairs the predicate rejects,
   measured on a sample. Beforehand, `best` and two pages with the predicate are
   checked against `reference_order(jobs, worker, eligible)` for a few workers (some
   of the oracle's, some awkward ones).
4. Pages, `page(worker, 50)`, `--pages` of them, same cycle.
5. Churn: `--updates` priority changes (`update(job_id, priority=...)`), then as many
   `remove` + `add` pairs of the same job; both counted as operations per second. A few
   oracle workers are checked again afterwards.

Steps 3 to 5 run `--repeat` rounds and report the median round. The oracle (step 2) is a
correctness reference, not a baseline: it is the plain filter-and-sort whose answers the
index must give, run once on a few workers; `index_vs_oracle` says how far the index is
from that naive way, not from a competitor. `tier1_answer_share` is the share of workers
whose answer comes from their own cluster or a matching cross-cluster pattern.

Stdout gets exactly one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from farmd.cluster import (
    NO_PATTERNS,
    UNRESTRICTED,
    CrossClusterPatterns,
    Restrictions,
    parse_patterns,
    parse_restrictions,
)
from farmd.ranking import (
    DEFAULT_PRIORITY,
    Eligible,
    QueuedJob,
    Ranked,
    RankingIndex,
    WorkerView,
    reference_order,
)

DEPARTMENTS = (
    "lighting",
    "comp",
    "fx",
    "anim",
    "layout",
    "model",
    "rig",
    "lookdev",
    "matte",
    "crowd",
    "cfx",
    "roto",
)
HOUSE_PRIORITIES = (10, 50, 100, 500, 1000, 5000)
# Jobs land mostly in shots and sequences, rarely directly in a show.
JOB_DEPTH_WEIGHT = {1: 0.1, 2: 0.5, 3: 0.8, 4: 1.0}
# Workers sit mostly in department clusters; a few at the root.
WORKER_DEPTH_WEIGHT = {0: 0.005, 1: 0.10, 2: 0.65, 3: 0.17, 4: 0.075}
IDLE_CLUSTER_SHARE = 0.25  # clusters that get no jobs
PATTERN_SHARE = 0.02
JOB_RESTRICTION_SHARE = 0.05
WORKER_RESTRICTION_SHARE = 0.10
PAGE_SIZE = 50
# The filtered run: what the scheduler checks besides clusters (job type, reservation).
JOB_TYPES = ("render", "sim", "comp", "cache")
UNTYPED_JOB_SHARE = 0.10  # jobs of no type: any worker runs them
TYPES_PER_WORKER = 2  # of JOB_TYPES: half of the typed jobs fail the type check
GPU_JOB_SHARE = 0.10  # jobs reserving gpu=1
GPU_WORKER_SHARE = 0.30  # workers with a GPU
SHARE_SAMPLE_WORKERS = 200  # pairs sampled to measure ineligible_share
SHARE_SAMPLE_JOBS = 1_000
FILTERED_VERIFY = (3, 5)  # workers checked with the predicate: oracle's, awkward ones


@dataclass(frozen=True)
class Config:
    jobs: int
    clusters: int
    workers: int
    picks: int
    oracle_picks: int
    pages: int
    updates: int
    verify: int
    repeat: int
    seed: int


FULL = {
    "jobs": 100_000,
    "clusters": 1_000,
    "workers": 10_000,
    "picks": 200_000,
    "oracle_picks": 20,
    "pages": 20_000,
    "updates": 20_000,
    "verify": 16,
    "repeat": 3,
}
QUICK = {
    "jobs": 5_000,
    "clusters": 100,
    "workers": 500,
    "picks": 20_000,
    "oracle_picks": 20,
    "pages": 2_000,
    "updates": 2_000,
    "verify": 16,
    "repeat": 3,
}


def log(message: str) -> None:
    print(f"[ranking] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the farm


def show_of(cluster: str) -> str:
    return "/" + cluster.split("/")[1] if cluster != "/" else "/"


def dept_of(cluster: str) -> str | None:
    parts = cluster.split("/")
    return "/".join(parts[:3]) if len(parts) >= 3 else None


def make_clusters(rng: random.Random, count: int) -> list[str]:
    """About `count` clusters (the root not counted): shows, departments, sequences, shots."""
    n_shows = min(count, max(2, round(count / 80)))
    shows = [f"/show{i:02d}" for i in range(1, n_shows + 1)]
    depts = [
        f"{show}/{dept}"
        for show in shows
        for dept in sorted(rng.sample(DEPARTMENTS, rng.randint(4, 8)))
    ]
    rng.shuffle(depts)
    depts = sorted(depts[: max(0, count - n_shows)])
    rest = count - n_shows - len(depts)
    n_seqs = min(rest, max(1, round(rest * 0.3))) if rest > 0 else 0
    n_shots = rest - n_seqs
    seqs: list[str] = []
    per_dept: Counter[str] = Counter()
    for _ in range(n_seqs):
        dept = rng.choice(depts)
        per_dept[dept] += 1
        seqs.append(f"{dept}/sq{per_dept[dept] * 10:03d}")
    shots: list[str] = []
    per_seq: Counter[str] = Counter()
    for _ in range(n_shots if seqs else 0):
        seq = rng.choice(seqs)
        per_seq[seq] += 1
        shots.append(f"{seq}/sh{per_seq[seq] * 10:04d}")
    return shows + depts + seqs + shots


def depth_of(cluster: str) -> int:
    return 0 if cluster == "/" else cluster.count("/")


def job_patterns(rng: random.Random, shows: Sequence[str], clusters: Sequence[str]) -> str:
    r = rng.random()
    if r < 0.20:
        return "/+"  # everywhere ranks it as local
    if r < 0.50:
        return f"{rng.choice(shows)}+"
    if r < 0.55:
        return "/show0+"  # a string prefix: /show01 ... /show09
    if r < 0.85:
        return ",".join(rng.sample(clusters, rng.randint(1, 3)))
    return f"{rng.choice(shows)}+,{rng.choice(clusters)}"


def job_restrictions(
    rng: random.Random, cluster: str, shows: Sequence[str], depts: dict[str, list[str]]
) -> str:
    show = show_of(cluster)
    r = rng.random()
    if r < 0.70:
        return f"{show}/+"
    if r < 0.85:
        return f"{show}/+ || {rng.choice(shows)}/+"
    return f"{rng.choice(depts[show] or [show])}/+"


def worker_restrictions(
    rng: random.Random,
    cluster: str,
    shows: Sequence[str],
    depts: dict[str, list[str]],
    clusters: Sequence[str],
) -> str:
    show = show_of(cluster) if cluster != "/" else rng.choice(shows)
    dept = dept_of(cluster) or rng.choice(depts[show] or [show])
    other = rng.choice(shows)
    r = rng.random()
    if r < 0.45:
        return f"{show}/+"
    if r < 0.65:
        return f"{dept}/*"
    if r < 0.80:
        return f"{cluster} || {rng.choice(clusters)} || {dept}/*"
    if r < 0.90:
        return f"{show}/+ or {other}/+"
    return f"{other}/+"  # may refuse its own cluster


JobSpec = tuple[int, str, int, CrossClusterPatterns, Restrictions]  # QueuedJob's arguments


def make_farm(
    rng: random.Random, config: Config
) -> tuple[list[str], list[JobSpec], list[WorkerView]]:
    clusters = make_clusters(rng, config.clusters)
    shows = [c for c in clusters if depth_of(c) == 1]
    depts: dict[str, list[str]] = {show: [] for show in shows}
    for c in clusters:
        if depth_of(c) == 2:
            depts[show_of(c)].append(c)

    # Skewed job placement: Zipf-like weights over a random ranking of the clusters.
    ranking = list(range(len(clusters)))
    rng.shuffle(ranking)
    busy = len(clusters) - int(len(clusters) * IDLE_CLUSTER_SHARE)
    weights = [0.0] * len(clusters)
    for rank, i in enumerate(ranking[:busy]):
        weights[i] = JOB_DEPTH_WEIGHT[depth_of(clusters[i])] / (rank + 1) ** 1.1
    homes = rng.choices(clusters, weights=weights, k=config.jobs)

    specs: list[JobSpec] = []
    for job_id, cluster in enumerate(homes, start=1):
        r = rng.random()
        if r < 0.4:
            priority = DEFAULT_PRIORITY
        elif r < 0.5:
            priority = rng.choice(HOUSE_PRIORITIES)
        else:
            priority = rng.randint(1, 10_000)
        patterns = NO_PATTERNS
        if rng.random() < PATTERN_SHARE:
            patterns = parse_patterns(job_patterns(rng, shows, clusters))
        restrictions = UNRESTRICTED
        if rng.random() < JOB_RESTRICTION_SHARE:
            restrictions = parse_restrictions(job_restrictions(rng, cluster, shows, depts))
        specs.append((job_id, cluster, priority, patterns, restrictions))

    by_depth: dict[int, list[str]] = {0: ["/"]}
    for c in clusters:
        by_depth.setdefault(depth_of(c), []).append(c)
    levels = sorted(by_depth)
    level_weights = [WORKER_DEPTH_WEIGHT.get(level, 0.0) for level in levels]
    workers = []
    for level in rng.choices(levels, weights=level_weights, k=config.workers):
        cluster = rng.choice(by_depth[level])
        restrictions = UNRESTRICTED
        if rng.random() < WORKER_RESTRICTION_SHARE:
            text = worker_restrictions(rng, cluster, shows, depts, clusters)
            restrictions = parse_restrictions(text)
        workers.append(WorkerView(cluster, restrictions))
    return clusters, specs, workers


@dataclass(frozen=True, slots=True)
class JobRecord:
    """The scheduler's view of a job beyond the index's: what `_fits` checks."""

    type: str | None
    gpus: int


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    types: frozenset[str]
    gpus: int


def make_capabilities(
    rng: random.Random, job_ids: Sequence[int], worker_count: int
) -> tuple[dict[int, JobRecord], list[WorkerRecord]]:
    """Job types and GPU reservations, worker type sets and GPUs (see module docs)."""
    records = {}
    for job_id in job_ids:
        job_type = None if rng.random() < UNTYPED_JOB_SHARE else rng.choice(JOB_TYPES)
        records[job_id] = JobRecord(job_type, 1 if rng.random() < GPU_JOB_SHARE else 0)
    workers = [
        WorkerRecord(
            frozenset(rng.sample(JOB_TYPES, TYPES_PER_WORKER)),
            rng.choice((1, 2)) if rng.random() < GPU_WORKER_SHARE else 0,
        )
        for _ in range(worker_count)
    ]
    return records, workers


def fits_on(records: dict[int, JobRecord], worker: WorkerRecord) -> Eligible:
    """The predicate `best` asks of each job on `worker`, shaped like the scheduler's."""

    def eligible(queued: QueuedJob) -> bool:
        job = records[queued.id]
        if job.type is not None and job.type not in worker.types:
            return False
        return job.gpus <= worker.gpus

    return eligible


# --------------------------------------------------------------------------- checks


class Mismatch(Exception):
    pass


def describe(ranked: Ranked | None) -> str:
    if ranked is None:
        return "None"
    return f"job {ranked.job.id} key {ranked.key}"


def check_worker(
    index: RankingIndex,
    worker: WorkerView,
    reference: list[Ranked],
    eligible: Eligible | None = None,
) -> None:
    """The index must give the oracle's answers: best, the first page, the next page."""
    where = f"worker cluster={worker.cluster!r} restrictions={str(worker.restrictions)!r}"
    if eligible is not None:
        where += " with the eligible predicate"
    got = index.best(worker, eligible)
    want = reference[0] if reference else None
    if got != want:
        msg = f"best() differs for {where}: index {describe(got)}, oracle {describe(want)}"
        raise Mismatch(msg)
    pages = [(None, reference[:PAGE_SIZE])]
    if len(reference) > PAGE_SIZE:
        pages.append((reference[PAGE_SIZE - 1].key, reference[PAGE_SIZE : 2 * PAGE_SIZE]))
    for after, want_page in pages:
        got_page = index.page(worker, PAGE_SIZE, after=after, eligible=eligible)
        if got_page != want_page:
            at = next(
                (i for i, (a, b) in enumerate(zip(got_page, want_page, strict=False)) if a != b),
                min(len(got_page), len(want_page)),
            )
            got_at = got_page[at] if at < len(got_page) else None
            want_at = want_page[at] if at < len(want_page) else None
            msg = (
                f"page({PAGE_SIZE}, after={after}) differs for {where} at position {at}: "
                f"index {describe(got_at)} ({len(got_page)} jobs), "
                f"oracle {describe(want_at)} ({len(want_page)} jobs)"
            )
            raise Mismatch(msg)


def awkward_workers(
    rng: random.Random, workers: Sequence[WorkerView], job_clusters: set[str], count: int
) -> list[WorkerView]:
    """Workers most likely to expose a wrong answer, a few of each kind."""

    def below_jobs(cluster: str) -> bool:
        prefix = cluster if cluster == "/" else cluster + "/"
        return cluster in job_clusters or any(c.startswith(prefix) for c in job_clusters)

    kinds = [
        [w for w in workers if w.restrictions],
        [w for w in workers if w.restrictions and not w.restrictions.accepts(w.cluster)],
        [w for w in workers if w.cluster not in job_clusters],
        [w for w in workers if not below_jobs(w.cluster)],
        [w for w in workers if w.cluster.count("/") <= 1],
    ]
    chosen: list[WorkerView] = []
    for i in range(count):
        pool = [w for w in kinds[i % len(kinds)] if w not in chosen]
        if pool:
            chosen.append(rng.choice(pool))
    return chosen


# --------------------------------------------------------------------------- measuring


def timed_calls(
    call: Callable[..., object], workers: Sequence[WorkerView], count: int, *args: object
) -> float:
    """Seconds for `count` calls `call(worker, *args)`, cycling through `workers`."""
    stream = itertools.islice(itertools.cycle(workers), count)
    t0 = time.perf_counter()
    for worker in stream:
        call(worker, *args)
    return time.perf_counter() - t0


def timed_filtered_picks(
    best: Callable[[WorkerView, Eligible], object],
    pairs: Sequence[tuple[WorkerView, WorkerRecord]],
    count: int,
    records: dict[int, JobRecord],
) -> float:
    """Seconds for `count` filtered picks, the predicate built per pick as in dispatch."""
    stream = itertools.islice(itertools.cycle(pairs), count)
    t0 = time.perf_counter()
    for view, worker in stream:
        best(view, fits_on(records, worker))
    return time.perf_counter() - t0


def median_round(rounds: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(rounds))


def traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def rounded(value: float) -> float | int:
    if value >= 100:
        return round(value)
    if value <= 0:
        return 0
    return round(value, max(0, 2 - math.floor(math.log10(value))))


def machine() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 0
    return f"{cores} cores"


def run(config: Config) -> dict[str, object]:
    started = time.perf_counter()
    rng = random.Random(config.seed)
    clusters, specs, workers = make_farm(rng, config)
    log(f"{len(specs)} jobs over {len(clusters)} clusters, {len(workers)} workers")

    # 1. memory (traced), then one warm-up pick per worker
    gc.collect()
    tracemalloc.start()
    before = traced_bytes()
    jobs = [QueuedJob(*spec) for spec in specs]
    with_jobs = traced_bytes()
    index = RankingIndex()
    for job in jobs:
        index.add(job)
    with_index = traced_bytes()
    tier1 = 0
    for worker in workers:
        answer = index.best(worker)
        tier1 += answer is not None and answer.order == 1
    warm = traced_bytes()
    tracemalloc.stop()
    n = len(jobs)
    log(
        f"memory: jobs {(with_jobs - before) / n:.1f} B/job, "
        f"index {(with_index - with_jobs) / n:.1f} B/job, warm caches {warm - with_index} B"
    )

    # The filtered run's job and worker records, from a stream of their own.
    caps_rng = random.Random(f"{config.seed}/capabilities")
    records, worker_records = make_capabilities(caps_rng, [job.id for job in jobs], len(workers))
    record_of = {id(view): record for view, record in zip(workers, worker_records, strict=True)}

    order = list(workers)
    rng.shuffle(order)

    # 2. oracle picks, then the index checked against them
    oracle_workers = order[: config.oracle_picks]
    references: list[list[Ranked]] = []
    best_of = None
    t0 = time.perf_counter()
    for worker in oracle_workers:
        reference = reference_order(jobs, worker)
        best_of = reference[0] if reference else None
        references.append(reference)
    oracle_s = time.perf_counter() - t0
    del best_of
    log(f"oracle: {len(oracle_workers)} picks in {oracle_s:.2f} s")

    job_clusters = {job.cluster for job in jobs}
    extra = awkward_workers(rng, workers, job_clusters, config.verify)
    checks = list(zip(oracle_workers, references, strict=True))
    checks += [(worker, reference_order(jobs, worker)) for worker in extra]
    for worker, reference in checks:
        check_worker(index, worker, reference)
    log(f"verified best/page against the oracle for {len(checks)} workers")

    # 3. index picks, 4. pages: the median of `repeat` rounds
    index_s = median_round(config.repeat, lambda: timed_calls(index.best, order, config.picks))
    log(f"index: {config.picks} picks in {index_s:.2f} s (median of {config.repeat})")

    # 3b. the filtered run: about half the queue is ineligible for each worker
    sample_workers = caps_rng.sample(worker_records, min(SHARE_SAMPLE_WORKERS, len(workers)))
    sample_jobs = caps_rng.sample(jobs, min(SHARE_SAMPLE_JOBS, n))
    rejected = [
        sum(not eligible(job) for job in sample_jobs)
        for eligible in (fits_on(records, worker) for worker in sample_workers)
    ]
    ineligible_share = sum(rejected) / (len(sample_workers) * len(sample_jobs))
    log(
        f"filtered: the predicate rejects {ineligible_share:.1%} of sampled pairs "
        f"({min(rejected) / len(sample_jobs):.1%} to {max(rejected) / len(sample_jobs):.1%} "
        "per worker)"
    )
    n_oracle, n_awkward = FILTERED_VERIFY
    filtered_checks = oracle_workers[:n_oracle] + extra[:n_awkward]
    for worker in filtered_checks:
        eligible = fits_on(records, record_of[id(worker)])
        check_worker(index, worker, reference_order(jobs, worker, eligible), eligible)
    log(f"verified best/page with the predicate for {len(filtered_checks)} workers")
    pairs = [(view, record_of[id(view)]) for view in order]
    calls = 0
    filtered_tier1 = 0
    counted = pairs[: min(len(pairs), 10_000)]
    for view, worker in counted:
        check = fits_on(records, worker)

        def counting(job: QueuedJob, check: Eligible = check) -> bool:
            nonlocal calls
            calls += 1
            return check(job)

        answer = index.best(view, counting)
        filtered_tier1 += answer is not None and answer.order == 1
    filtered_s = median_round(
        config.repeat, lambda: timed_filtered_picks(index.best, pairs, config.picks, records)
    )
    log(
        f"filtered: {config.picks} picks in {filtered_s:.2f} s (median of {config.repeat}), "
        f"{filtered_s / index_s:.2f}x the plain run's time; {calls / len(counted):.2f} "
        f"predicate calls per pick, tier-1 answers {filtered_tier1 / len(counted):.1%}"
    )
    restricted = [worker for worker in order if worker.restrictions]
    restricted_picks = max(1, config.picks // 10)
    restricted_s = (
        median_round(config.repeat, lambda: timed_calls(index.best, restricted, restricted_picks))
        if restricted
        else None
    )
    page_s = median_round(
        config.repeat, lambda: timed_calls(index.page, order, config.pages, PAGE_SIZE)
    )
    log(f"page({PAGE_SIZE}): {config.pages} pages in {page_s:.2f} s")

    # 5. churn: priority updates, then remove + add of the same job
    update_s = remove_add_s = math.inf
    for _ in range(config.repeat):
        targets = [rng.randint(1, n) for _ in range(config.updates)]
        priorities = [rng.randint(1, 10_000) for _ in range(config.updates)]
        update = index.update
        t0 = time.perf_counter()
        for job_id, priority in zip(targets, priorities, strict=True):
            update(job_id, priority=priority)
        update_s = min(update_s, time.perf_counter() - t0)
        for job_id, priority in zip(targets, priorities, strict=True):
            jobs[job_id - 1] = attrs.evolve(jobs[job_id - 1], priority=priority)
        targets = [rng.randint(1, n) for _ in range(config.updates)]
        remove, add = index.remove, index.add
        t0 = time.perf_counter()
        for job_id in targets:
            add(remove(job_id))
        remove_add_s = min(remove_add_s, time.perf_counter() - t0)
    log(
        f"churn: {config.updates} updates in {update_s:.2f} s, as many remove+add in "
        f"{remove_add_s:.2f} s"
    )
    if len(index) != n:
        raise Mismatch(f"index holds {len(index)} jobs after churn, expected {n}")
    after_churn = oracle_workers[:3] + extra[:3]
    for worker in after_churn:
        check_worker(index, worker, reference_order(jobs, worker))
    log(f"verified {len(after_churn)} workers again after churn")

    index_rate = config.picks / index_s
    filtered_rate = config.picks / filtered_s
    oracle_rate = len(oracle_workers) / oracle_s if oracle_workers else 0.0
    return {
        "benchmark": "ranking",
        "jobs": n,
        "clusters": len(clusters),
        "workers": len(workers),
        "pattern_jobs": sum(1 for job in jobs if job.patterns),
        "restricted_jobs": sum(1 for job in jobs if job.restrictions),
        "restricted_workers": sum(1 for worker in workers if worker.restrictions),
        "index_picks_per_s": rounded(index_rate),
        "oracle_picks_per_s": rounded(oracle_rate),
        "index_vs_oracle": rounded(index_rate / oracle_rate) if oracle_rate else None,
        "restricted_worker_picks_per_s": (
            rounded(restricted_picks / restricted_s) if restricted_s else None
        ),
        "tier1_answer_share": round(tier1 / len(workers), 3),
        "ineligible_share": round(ineligible_share, 3),
        "filtered_picks_per_s": rounded(filtered_rate),
        "filtered_vs_plain": round(filtered_rate / index_rate, 2),
        "page50_per_s": rounded(config.pages / page_s),
        "updates_per_s": rounded(config.updates / update_s),
        "remove_add_per_s": rounded(config.updates / remove_add_s),
        "index_bytes_per_job": round((with_index - with_jobs) / n, 1),
        "job_bytes_per_job": round((with_jobs - before) / n, 1),
        "total_bytes_per_job": round((with_index - before) / n, 1),
        "warm_cache_bytes": warm - with_index,
        "verified_workers": len(checks),
        "filtered_verified_workers": len(filtered_checks),
        "picks": config.picks,
        "oracle_picks": len(oracle_workers),
        "repeat": config.repeat,
        "seed": config.seed,
        "python": platform.python_version(),
        "machine": machine(),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="Picks per second of RankingIndex.best against the brute-force oracle.",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke-test configuration")
    parser.add_argument("--jobs", type=int, help=f"queued jobs (default {FULL['jobs']})")
    parser.add_argument("--clusters", type=int, help=f"clusters (default {FULL['clusters']})")
    parser.add_argument("--workers", type=int, help=f"workers (default {FULL['workers']})")
    parser.add_argument("--picks", type=int, help=f"timed index picks ({FULL['picks']})")
    parser.add_argument(
        "--oracle-picks", type=int, help=f"timed oracle picks ({FULL['oracle_picks']})"
    )
    parser.add_argument("--pages", type=int, help=f"timed page(50) calls ({FULL['pages']})")
    parser.add_argument(
        "--updates", type=int, help=f"timed priority updates and remove+add ({FULL['updates']})"
    )
    parser.add_argument(
        "--verify", type=int, help=f"extra awkward workers checked ({FULL['verify']})"
    )
    parser.add_argument(
        "--repeat", type=int, help=f"timed rounds, the median reported ({FULL['repeat']})"
    )
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    values = {key: getattr(args, key) for key in defaults}
    values = {key: defaults[key] if value is None else value for key, value in values.items()}
    minimum = {
        "jobs": 1,
        "clusters": 2,
        "workers": 1,
        "picks": 1,
        "pages": 1,
        "updates": 1,
        "repeat": 1,
    }
    for key, value in values.items():
        if value < minimum.get(key, 0):
            parser.error(f"--{key.replace('_', '-')} must be at least {minimum.get(key, 0)}")
    return Config(seed=args.seed, **values)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        result = run(config)
    except Mismatch as exc:
        print(f"ranking benchmark: the index disagrees with the oracle: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
