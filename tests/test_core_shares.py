"""Shares per cluster (`farmd.core.shares`): slots owned, used, lent and borrowed by
each subtree, and its queue, as `clusters_view` shows them."""

from __future__ import annotations

from farmd.core import Scheduler
from farmd.core.vocabulary import FrameEnded, SubmitJob, WorkerJoined


def shares_by_path(core: Scheduler) -> dict[str, dict[str, float]]:
    return {node["path"]: node["shares"] for node in core.clusters_view()}


def test_a_department_lends_its_idle_hosts_and_borrows_when_it_is_busy() -> None:
    core = Scheduler()
    core.handle(WorkerJoined(name="fx1", cluster="/show1/fx", slots=4, now=0.0))
    core.handle(WorkerJoined(name="lt1", cluster="/show1/lighting", slots=2, now=0.0))
    core.handle(WorkerJoined(name="s2", cluster="/show2", slots=2, now=0.0))
    # show2's job: its own host first, then show1's idle ones (cluster order)
    core.handle(SubmitJob(argv=("r",), cluster="/show2", frames="1-10", now=1.0))
    got = shares_by_path(core)
    assert got["/show2"] == {
        "slots": 2.0,
        "free": 0.0,
        "used": 8.0,
        "lent": 0.0,
        "borrowed": 6.0,
        "queued": 2,
    }
    assert got["/show1"] == {
        "slots": 6.0,
        "free": 0.0,
        "used": 0.0,
        "lent": 6.0,
        "borrowed": 0.0,
        "queued": 0,
    }
    assert got["/show1/fx"]["lent"] == 4.0
    assert got["/"]["borrowed"] == got["/"]["lent"] == 0.0  # nothing is outside the root
    assert got["/"]["used"] == 8.0
    # within /show1, a lighting job on an fx host is /show1's own use, lent by /show1/fx
    core.handle(SubmitJob(argv=("l",), cluster="/show1/lighting", frames="1", now=2.0))
    core.handle(FrameEnded(worker="fx1", job_id=1, frame=3, attempt=1, exit_code=0, now=3.0))
    got = shares_by_path(core)
    assert core.jobs[2].frames[1].worker == "fx1"  # the nearer cluster's job takes it
    assert got["/show1/lighting"]["used"] == got["/show1/lighting"]["borrowed"] == 1.0
    assert got["/show1/fx"]["lent"] == 4.0  # 3 slots to /show2, 1 to /show1/lighting
    assert (got["/show1"]["used"], got["/show1"]["borrowed"], got["/show1"]["lent"]) == (
        1.0,
        0.0,  # its own host: no borrowing at the department's level
        5.0,  # to /show2: fx1's 3 and lt1's 2
    )


def test_the_shares_are_metrics_too() -> None:
    from farmd.metrics import families

    core = Scheduler()
    core.handle(WorkerJoined(name="s2", cluster="/show2", slots=2, now=0.0))
    core.handle(SubmitJob(argv=("r",), cluster="/show1", frames="1-3", now=1.0))
    samples = {
        (s.labels["cluster"], s.labels["figure"]): s.value
        for family in families(core.statistics())
        if family.name == "farmd_cluster_share"
        for s in family.samples
    }
    assert samples[("/show1", "borrowed")] == 2.0
    assert samples[("/show2", "lent")] == 2.0
    assert samples[("/show1", "queued")] == 1.0
