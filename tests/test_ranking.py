"""The ranking index, one rule at a time, with hand-written expected queues."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from farmd.cluster import parse_patterns, parse_restrictions
from farmd.errors import ClusterPathError, JobSpecError, UnknownJobError
from farmd.ranking import (
    DEFAULT_PRIORITY,
    HIGHEST_PRIORITY,
    LOWEST_PRIORITY,
    Eligible,
    QueuedJob,
    RankingIndex,
    WorkerView,
    rank_key,
    reference_order,
)


def job(
    job_id: int,
    cluster: str,
    priority: int = DEFAULT_PRIORITY,
    *,
    patterns: str | None = None,
    restrictions: str | None = None,
) -> QueuedJob:
    return QueuedJob(
        id=job_id,
        cluster=cluster,
        priority=priority,
        patterns=parse_patterns(patterns),
        restrictions=parse_restrictions(restrictions),
    )


def worker(cluster: str, restrictions: str | None = None) -> WorkerView:
    return WorkerView(cluster=cluster, restrictions=parse_restrictions(restrictions))


def index_of(*jobs: QueuedJob) -> RankingIndex:
    index = RankingIndex()
    for queued in jobs:
        index.add(queued)
    return index


def queue_ids(index: RankingIndex, view: WorkerView, eligible: Eligible | None = None) -> list[int]:
    """The worker's queue as job ids, checked against the reference as it goes."""
    ids = [ranked.job.id for ranked in index.ranked(view, eligible)]
    assert ids == [ranked.job.id for ranked in reference_order(index, view, eligible)]
    return ids


def best_id(index: RankingIndex, view: WorkerView, eligible: Eligible | None = None) -> int | None:
    best = index.best(view, eligible)
    return None if best is None else best.job.id


# --------------------------------------------------------------------------- rank order


def test_the_a_b_c_queue_drains_in_rank_order() -> None:
    jobs = [
        job(1, "/A/B/C", 50),
        job(2, "/A/B/C/D", 10),
        job(3, "/A/B/C/D/E", 5),
        job(4, "/A/B", 1),
        job(5, "/A/B/F", 2),
        job(6, "/A", 1),
        job(7, "/", 1),
        job(8, "/G", 1),
        job(9, "/A/B/C"),
        job(10, "/A/B/C/D", 10),
    ]
    index = index_of(*reversed(jobs))  # submission order must not matter
    view = worker("/A/B/C")
    drained = []
    for _ in range(len(jobs) + 1):  # bounded: one pick per job, then None
        best = index.best(view)
        if best is None:
            break
        drained.append(best.key)
        index.remove(best.job.id)
    assert drained == [
        (1, 50, 1),
        (1, DEFAULT_PRIORITY, 9),
        (2, 5, 3),
        (2, 10, 2),
        (2, 10, 10),
        (3, 1, 4),
        (3, 2, 5),
        (4, 1, 6),
        (5, 1, 7),
        (5, 1, 8),
    ]
    assert len(index) == 0


def test_least_urgent_job_at_home_beats_most_urgent_job_elsewhere() -> None:
    index = index_of(
        job(1, "/A/B", HIGHEST_PRIORITY),  # order 2 for a worker in /A
        job(2, "/", HIGHEST_PRIORITY),  # order 3
        job(3, "/A", LOWEST_PRIORITY),  # order 1
    )
    assert [r.key for r in index.ranked(worker("/A"))] == [
        (1, LOWEST_PRIORITY, 3),
        (2, HIGHEST_PRIORITY, 1),
        (3, HIGHEST_PRIORITY, 2),
    ]


def test_lower_priority_number_is_more_urgent_and_the_default_is_9999() -> None:
    assert job(1, "/A").priority == DEFAULT_PRIORITY == 9999
    index = index_of(job(1, "/A"), job(2, "/A", 9998), job(3, "/A", 1), job(4, "/A", 10000))
    assert queue_ids(index, worker("/A")) == [3, 2, 1, 4]


def test_equal_keys_are_first_come_first_served_by_id() -> None:
    index = index_of(job(7, "/A", 5), job(3, "/A", 5), job(5, "/A", 5), job(4, "/A", 6))
    assert queue_ids(index, worker("/A")) == [3, 5, 7, 4]


def test_rank_key_is_order_then_priority_then_id() -> None:
    view = worker("/A/C")
    assert rank_key(job(4, "/A", 2), view) == (3, 2, 4)
    assert rank_key(job(4, "/B", 2), view) == (4, 2, 4)
    assert rank_key(job(4, "/A/C", 2), view) == (1, 2, 4)


def test_seed_job_in_a_beats_job_in_b_for_a_worker_in_a_c() -> None:
    index = index_of(job(1, "/B", 1), job(2, "/A", 500))
    assert queue_ids(index, worker("/A/C")) == [2, 1]


def test_seed_jobs_in_a_and_b_and_root_tie_for_a_worker_in_c() -> None:
    # Same cluster order for all three, so priority alone decides, then the id.
    index = index_of(job(1, "/A", 3), job(2, "/B", 2), job(3, "/", 2))
    assert [r.key for r in index.ranked(worker("/C"))] == [(3, 2, 2), (3, 2, 3), (3, 3, 1)]


def test_a_worker_outside_every_job_cluster_still_gets_the_queue() -> None:
    index = index_of(job(1, "/A/x"), job(2, "/B"))
    assert queue_ids(index, worker("/C/y/z")) == [1, 2]
    assert queue_ids(index, worker("/")) == [1, 2]


def test_an_empty_queue_offers_nothing() -> None:
    index = RankingIndex()
    assert index.best(worker("/")) is None
    assert list(index.ranked(worker("/A"))) == []
    assert index.page(worker("/A"), 5) == []


# --------------------------------------------------------------------------- patterns


def test_a_job_with_pattern_all_ranks_as_if_at_home_everywhere() -> None:
    index = index_of(
        job(1, "/B", 5, patterns="/+"),
        job(2, "/A/C", 9),
        job(3, "/A/C/D", 1),
    )
    assert [r.key for r in index.ranked(worker("/A/C"))] == [(1, 5, 1), (1, 9, 2), (2, 1, 3)]
    assert [r.key for r in index.ranked(worker("/"))] == [(1, 5, 1), (2, 1, 3), (2, 9, 2)]


@pytest.mark.parametrize(
    ("worker_cluster", "order"),
    [
        ("/showA", 1),
        ("/showA/lighting", 1),
        ("/showAB", 1),  # a string prefix, as Qube documents
        ("/showB", 3),
        ("/show", 3),
        ("/", 2),
        ("/other/x", 3),  # the job's own cluster decides elsewhere
        ("/other", 1),
    ],
)
def test_prefix_pattern(worker_cluster: str, order: int) -> None:
    index = index_of(job(1, "/other", 7, patterns="/showA+"))
    best = index.best(worker(worker_cluster))
    assert best is not None
    assert best.key == (order, 7, 1)


@pytest.mark.parametrize(
    ("worker_cluster", "order"),
    [("/showA", 1), ("/showA/lighting", 4), ("/showAB", 3), ("/showB/x", 1), ("/showB", 3)],
)
def test_exact_pattern_entries(worker_cluster: str, order: int) -> None:
    index = index_of(job(1, "/other", 7, patterns="/showA, /showB/x"))
    best = index.best(worker(worker_cluster))
    assert best is not None
    assert best.key == (order, 7, 1)


def test_pattern_jobs_compete_with_home_jobs_by_priority_then_id() -> None:
    index = index_of(
        job(1, "/showA", 5),
        job(2, "/other", 5, patterns="/showA+"),
        job(3, "/far/away", 4, patterns="/showA"),
        job(4, "/showB", 1, patterns="/showB+"),  # its pattern does not match /showA
        job(5, "/showA/x", 1),
    )
    assert [r.key for r in index.ranked(worker("/showA"))] == [
        (1, 4, 3),
        (1, 5, 1),
        (1, 5, 2),
        (2, 1, 5),
        (3, 1, 4),
    ]


def test_overlapping_patterns_offer_a_job_once() -> None:
    index = index_of(job(1, "/a", 2, patterns="/+, /a+, /ab+, /ab"), job(2, "/c", 3))
    assert [r.key for r in index.ranked(worker("/ab"))] == [(1, 2, 1), (3, 3, 2)]


def test_patterns_do_not_bypass_restrictions() -> None:
    index = index_of(
        job(1, "/B", 1, patterns="/+", restrictions="/B/+"),
        job(2, "/B", 2, patterns="/+"),
    )
    assert queue_ids(index, worker("/A")) == [2]
    assert queue_ids(index, worker("/A", "/A/+")) == []


# --------------------------------------------------------------------------- restrictions

# Equal priorities, so a worker in /A/x ranks these by cluster order, then id:
# /A/x (1), /A/x/y (2), /A (3), then /, /AB, /AB/x and /B (4).
SPREAD = [
    job(1, "/"),
    job(2, "/A"),
    job(3, "/A/x"),
    job(4, "/A/x/y"),
    job(5, "/AB"),
    job(6, "/AB/x"),
    job(7, "/B"),
]


@pytest.mark.parametrize(
    ("restrictions", "expected"),
    [
        (None, [3, 4, 2, 1, 5, 6, 7]),
        ("/A", [2]),
        ("/A/*", [3]),
        ("/A/+", [3, 4, 2]),
        ("/+", [3, 4, 2, 1, 5, 6, 7]),
        ("/*", [2, 5, 7]),
        ("/", [1]),
        ("/A/x/*", [4]),
        ("/A/x/y/+", [4]),
        ("/AB/+", [5, 6]),
        ("/ || /B", [1, 7]),
        ("/AB/+ or /A/x", [3, 5, 6]),
        ("/B, /A/*", [3, 7]),
        ("/Z/+ || /Z", []),
    ],
)
def test_worker_restrictions(restrictions: str | None, expected: list[int]) -> None:
    index = index_of(*SPREAD)
    view = worker("/A/x", restrictions)
    assert queue_ids(index, view) == expected
    assert best_id(index, view) == (expected[0] if expected else None)


@pytest.mark.parametrize(
    ("worker_cluster", "expected"),
    [
        ("/A", [1, 4]),
        ("/A/x", [1, 3, 4]),
        ("/A/x/y", [1, 4]),
        ("/B", [2, 4]),
        ("/", [4]),
    ],
)
def test_job_restrictions(worker_cluster: str, expected: list[int]) -> None:
    index = index_of(
        job(1, "/A", restrictions="/A/+"),
        job(2, "/A", restrictions="/B"),
        job(3, "/A", restrictions="/A/*"),
        job(4, "/A"),
    )
    assert queue_ids(index, worker(worker_cluster)) == expected


def test_a_job_runs_only_where_both_sides_restrictions_pass() -> None:
    index = index_of(
        job(1, "/A", restrictions="/B"),  # the worker accepts it; it refuses the worker
        job(2, "/B"),  # the worker refuses it
        job(3, "/A/x", restrictions="/A/*"),  # both pass
        job(4, "/B", restrictions="/A/+"),  # it accepts the worker; the worker refuses it
    )
    assert queue_ids(index, worker("/A/x", "/A/+")) == [3]
    assert queue_ids(index, worker("/A/x")) == [3, 2, 4]  # job 1 still refuses /A/x


# --------------------------------------------------------------------------- predicate


def test_the_predicate_skips_jobs_without_losing_rank_order() -> None:
    index = index_of(*SPREAD)
    view = worker("/A/x")

    def not_3_or_1(queued: QueuedJob) -> bool:
        return queued.id not in (3, 1)

    assert queue_ids(index, view, not_3_or_1) == [4, 2, 5, 6, 7]
    assert best_id(index, view, not_3_or_1) == 4
    assert [r.job.id for r in index.page(view, 3, eligible=not_3_or_1)] == [4, 2, 5]
    assert best_id(index, view, lambda queued: False) is None


def test_ranked_is_lazy() -> None:
    index = index_of(*(job(n, "/A" if n % 2 else "/B") for n in range(1, 101)))
    asked: list[int] = []

    def eligible(queued: QueuedJob) -> bool:
        asked.append(queued.id)
        return True

    ranked = index.ranked(worker("/A"), eligible)
    assert asked == []
    assert isinstance(ranked, Iterator)
    assert next(ranked).job.id == 1
    assert asked == [1]


# --------------------------------------------------------------------------- updates


def test_priority_update_takes_effect_at_the_next_pick() -> None:
    index = index_of(job(1, "/A", 5), job(2, "/A", 3))
    view = worker("/A")
    assert best_id(index, view) == 2
    updated = index.update(1, priority=1)
    assert updated.priority == 1
    assert index.get(1) == updated
    assert best_id(index, view) == 1
    assert queue_ids(index, view) == [1, 2]


def test_cluster_update_takes_effect_at_the_next_pick() -> None:
    index = index_of(job(1, "/B", 1), job(2, "/A", 9))
    view = worker("/A")
    assert queue_ids(index, view) == [2, 1]
    index.update(1, cluster="/A/")
    assert index.get(1).cluster == "/A"
    assert queue_ids(index, view) == [1, 2]
    index.update(1, cluster="/A/deeper")
    assert [r.key for r in index.ranked(view)] == [(1, 9, 2), (2, 1, 1)]


def test_patterns_update_takes_effect_at_the_next_pick() -> None:
    index = index_of(job(1, "/B", 1), job(2, "/A", 9))
    view = worker("/A")
    index.update(1, patterns=parse_patterns("/A+"))
    assert [r.key for r in index.ranked(view)] == [(1, 1, 1), (1, 9, 2)]
    index.update(1, patterns=parse_patterns(""))
    assert [r.key for r in index.ranked(view)] == [(1, 9, 2), (3, 1, 1)]


def test_restrictions_update_takes_effect_at_the_next_pick() -> None:
    index = index_of(job(1, "/A", 1), job(2, "/A", 9))
    view = worker("/A")
    index.update(1, restrictions=parse_restrictions("/B"))
    assert queue_ids(index, view) == [2]
    index.update(1, restrictions=parse_restrictions("/A"))
    assert queue_ids(index, view) == [1, 2]
    index.update(1, restrictions=parse_restrictions(""))
    assert queue_ids(index, worker("/B")) == [1, 2]


def test_an_update_keeps_the_job_s_place_among_equals() -> None:
    index = index_of(job(1, "/A", 5), job(2, "/A", 5), job(3, "/A", 5))
    index.update(1, cluster="/B")
    index.update(1, cluster="/A")
    assert queue_ids(index, worker("/A")) == [1, 2, 3]


# --------------------------------------------------------------------------- paging


def test_pages_continue_exactly_where_the_previous_one_left_off() -> None:
    index = index_of(*SPREAD, job(8, "/A/x", 1), job(9, "/A/x/y", 1), job(10, "/B", 1))
    view = worker("/A/x")
    everything = list(index.ranked(view))
    assert [r.job.id for r in everything] == [8, 3, 9, 4, 2, 10, 1, 5, 6, 7]
    pages = []
    after = None
    for _ in range(10):  # bounded: four pages and an empty one are expected
        page = index.page(view, 3, after=after)
        if not page:
            break
        assert len(page) <= 3
        pages.append([r.job.id for r in page])
        after = page[-1].key
    assert pages == [[8, 3, 9], [4, 2, 10], [1, 5, 6], [7]]


def test_a_page_after_a_key_starts_after_that_key_even_if_its_job_left() -> None:
    index = index_of(job(1, "/A", 1), job(2, "/A", 2), job(3, "/A", 2), job(4, "/B", 1))
    view = worker("/A")
    first = index.page(view, 2)
    assert [r.job.id for r in first] == [1, 2]
    index.remove(2)
    assert [r.job.id for r in index.page(view, 2, after=first[-1].key)] == [3, 4]


def test_a_page_of_no_items_is_empty() -> None:
    index = index_of(job(1, "/A"))
    assert index.page(worker("/A"), 0) == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("priority", [0, -1, True, False, "5", 1.0, None, LOWEST_PRIORITY + 1])
def test_bad_priority_is_refused_naming_it(priority: object) -> None:
    with pytest.raises(JobSpecError, match=re.escape(f"bad priority {priority!r}")):
        QueuedJob(id=1, cluster="/A", priority=priority)  # type: ignore[arg-type]


@pytest.mark.parametrize("job_id", [0, -1, True, "1", 1.0, None])
def test_bad_job_id_is_refused_naming_it(job_id: object) -> None:
    with pytest.raises(JobSpecError, match=re.escape(f"bad job id {job_id!r}")):
        QueuedJob(id=job_id, cluster="/A")  # type: ignore[arg-type]


def test_bad_cluster_is_refused_for_jobs_and_workers() -> None:
    with pytest.raises(ClusterPathError, match="'show1'"):
        QueuedJob(id=1, cluster="show1")
    with pytest.raises(ClusterPathError, match="'/a//b'"):
        WorkerView(cluster="/a//b")


def test_duplicate_add_is_refused_and_keeps_the_first() -> None:
    first = job(1, "/A", 5)
    index = index_of(first)
    with pytest.raises(JobSpecError, match=r"\b1\b.*already queued"):
        index.add(job(1, "/B", 1))
    assert len(index) == 1
    assert index.get(1) is first
    assert queue_ids(index, worker("/A")) == [1]
    assert [r.key for r in index.ranked(worker("/B"))] == [(3, 5, 1)]


def test_unknown_job_is_refused_naming_it() -> None:
    index = index_of(job(1, "/A"))
    with pytest.raises(UnknownJobError, match=r"\b42\b"):
        index.remove(42)
    with pytest.raises(UnknownJobError, match=r"\b42\b"):
        index.update(42, priority=1)
    with pytest.raises(UnknownJobError, match=r"\b42\b"):
        index.get(42)
    assert 1 in index
    assert 42 not in index


def test_removed_job_is_gone_and_cannot_be_removed_twice() -> None:
    index = index_of(job(1, "/A"), job(2, "/A"))
    assert index.remove(1).id == 1
    assert queue_ids(index, worker("/A")) == [2]
    with pytest.raises(UnknownJobError):
        index.remove(1)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"priority": 0}, JobSpecError),
        ({"priority": -1}, JobSpecError),
        ({"priority": True}, JobSpecError),
        ({"priority": "5"}, JobSpecError),
        ({"cluster": "show1"}, ClusterPathError),
        ({"cluster": "/a/../b"}, ClusterPathError),
        ({"priority": 1, "cluster": "/a b"}, ClusterPathError),  # nothing half-applied
    ],
)
def test_a_failed_update_changes_nothing(change: dict[str, object], error: type[Exception]) -> None:
    index = index_of(job(1, "/A", 5), job(2, "/A", 3), job(3, "/B", 1))
    before = {view: [r.key for r in index.ranked(view)] for view in (worker("/A"), worker("/B"))}
    original = index.get(1)
    with pytest.raises(error):
        index.update(1, **change)  # type: ignore[arg-type]
    assert index.get(1) is original
    assert len(index) == 3
    after = {view: [r.key for r in index.ranked(view)] for view in (worker("/A"), worker("/B"))}
    assert after == before


@pytest.mark.parametrize("change", [{"patterns": "/B+"}, {"restrictions": "/B"}])
def test_an_update_with_unparsed_text_is_refused_and_changes_nothing(
    change: dict[str, object],
) -> None:
    # `update` takes parsed values (`parse_patterns`, `parse_restrictions`); raw text is
    # a bad value like any other, and must be refused before anything changes.
    index = index_of(job(1, "/A", 5), job(2, "/A", 3))
    original = index.get(1)
    with pytest.raises((TypeError, JobSpecError)):
        index.update(1, **change)  # type: ignore[arg-type]
    assert index.get(1) is original
    assert queue_ids(index, worker("/A")) == [2, 1]
    assert index.remove(1) is original


# --------------------------------------------------------------------------- emptied clusters


@pytest.mark.parametrize("cluster", ["/A", "/A/x", "/B", "/"])
def test_a_job_in_a_cluster_that_emptied_after_the_worker_asked_is_offered(cluster: str) -> None:
    # A cluster whose only job left is empty, not gone; the next job there must be seen
    # by a worker that asked for work while it was empty.
    index = index_of(job(1, cluster))
    index.remove(1)
    view = worker("/A")
    assert index.best(view) is None
    index.add(job(2, cluster))
    assert queue_ids(index, view) == [2]


def test_a_pattern_job_that_returns_after_the_worker_asked_is_offered() -> None:
    index = index_of(job(1, "/B", patterns="/A+"))
    index.remove(1)
    view = worker("/A/x")
    assert index.best(view) is None
    index.add(job(2, "/B", patterns="/A+"))
    assert [r.key for r in index.ranked(view)] == [(1, DEFAULT_PRIORITY, 2)]


@pytest.mark.parametrize(
    ("new_job", "key"),
    [
        (job(2, "/A"), (1, DEFAULT_PRIORITY, 2)),  # the worker's own cluster
        (job(2, "/A/x/y"), (2, DEFAULT_PRIORITY, 2)),  # below it
        (job(2, "/C/z"), (3, DEFAULT_PRIORITY, 2)),  # elsewhere
        (job(2, "/C", patterns="/A"), (1, DEFAULT_PRIORITY, 2)),  # a new exact pattern
        (job(2, "/C", patterns="/A+"), (1, DEFAULT_PRIORITY, 2)),  # a new prefix pattern
    ],
)
def test_a_job_in_a_new_cluster_is_offered_to_a_worker_that_asked_before(
    new_job: QueuedJob, key: tuple[int, int, int]
) -> None:
    index = index_of(job(1, "/B", 1))
    view = worker("/A")
    assert queue_ids(index, view) == [1]
    index.add(new_job)
    assert [r.key for r in index.ranked(view)] == sorted([key, (3, 1, 1)])
    best = index.best(view)
    assert best is not None
    assert best.key == min(key, (3, 1, 1))
