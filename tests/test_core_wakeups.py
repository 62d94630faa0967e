"""Waking starved workers without a herd: a job that becomes runnable wakes only as many
starved workers as it can use (its ready frames, within its instances cap, the workers
it fits), in join order, and wakes more when the woken ones go elsewhere; and no free
slot is ever left idle beside work it may take.

The counts come from the dispatcher's own counters: `woken` (starved workers moved back
to hungry) and `lookups` (`index.best` calls for a free slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from farmd.core import (
    Event,
    FrameEnded,
    Outcome,
    RunOnWorker,
    Scheduler,
    SetResourceTotal,
    SubmitJob,
    SubmitJobs,
    WorkerJoined,
    WorkerLost,
)
from tests.test_core import ended, joined, starts, submit

FARM = 2000


def farm(count: int, **fields: object) -> Scheduler:
    """A scheduler with `count` idle workers joined (`w0000`, `w0001`...), all starved."""
    core = Scheduler(resources={"license.x": 2})
    for n in range(count):
        core.handle(joined(f"w{n:04d}", **fields))  # type: ignore[arg-type]
    return core


def counted(core: Scheduler, event: Event) -> tuple[Outcome, int, int]:
    """`event`'s outcome, with the workers it woke and the lookups it made."""
    woken, lookups = core.dispatch.woken, core.dispatch.lookups
    out = core.handle(event)
    return out, core.dispatch.woken - woken, core.dispatch.lookups - lookups


def test_one_frame_on_a_large_idle_farm_wakes_one_worker_the_first_to_join() -> None:
    core = farm(FARM)
    out, woken, lookups = counted(core, submit(frames="1"))
    assert [s.worker for s in starts(out)] == ["w0000"]
    assert woken == 1
    assert lookups <= 2  # the woken worker's pick, and its look for more (it has none)


def test_a_job_wakes_one_worker_per_ready_frame() -> None:
    core = farm(FARM)
    out, woken, lookups = counted(core, submit(frames="1-5"))
    assert [s.worker for s in starts(out)] == [f"w{n:04d}" for n in range(5)]
    assert woken == 5
    assert lookups <= 5 + 2


def test_a_worker_with_several_free_slots_counts_as_that_many() -> None:
    core = farm(100, slots=4)
    out, woken, _ = counted(core, submit(frames="1-6"))
    assert [s.worker for s in starts(out)] == ["w0000"] * 4 + ["w0001"] * 2
    assert woken == 2


def test_an_instances_cap_bounds_the_wake() -> None:
    core = farm(FARM)
    out, woken, lookups = counted(core, submit(frames="1-50", instances=2))
    assert len(starts(out)) == 2
    assert woken == 2
    assert lookups <= 2 + 2


def test_workers_the_job_does_not_admit_or_fit_are_passed_over_not_woken() -> None:
    core = Scheduler()
    for n in range(1000):  # restricted elsewhere
        core.handle(joined(f"r{n:04d}", "/a", restrictions="/a/+"))
    for n in range(1000):  # admit it, but have no gpu
        core.handle(joined(f"p{n:04d}", "/b"))
    for n in range(10):
        core.handle(joined(f"g{n:04d}", "/b", resources={"gpu": 1}))
    out, woken, lookups = counted(core, submit(cluster="/b", frames="1-3", reserve="gpu=1"))
    assert [s.worker for s in starts(out)] == ["g0000", "g0001", "g0002"]
    assert woken == 3
    assert lookups <= 3 + 2


def test_when_a_woken_worker_takes_a_better_job_more_are_woken_for_the_rest() -> None:
    core = Scheduler()
    core.handle(joined("x", "/x", restrictions="/x/+"))  # runs the dependency, only it
    for n in range(50):
        core.handle(joined(f"w{n:04d}", "/w", restrictions="/w/+"))
    (start,) = starts(core.handle(submit(cluster="/x", frames="1")))
    low = core.handle(submit(cluster="/w", priority=90, depends_on=(f"{start.job_id}:done",)))
    high = core.handle(submit(cluster="/w", priority=10, depends_on=(f"{start.job_id}:done",)))
    # the dependency's end makes both runnable in one event, each wanting one worker:
    # w0000, woken for whichever comes first, takes the better one, and w0001 is woken
    # for the other once w0000 has chosen
    out, woken, lookups = counted(core, ended(start, now=1.0))
    assert [(s.job_id, s.worker) for s in starts(out)] == [
        (high.result, "w0000"),
        (low.result, "w0001"),
    ]
    assert woken == 2
    assert lookups <= 3  # x's look (it finds nothing), and one per worker woken


def test_a_license_freed_wakes_for_the_jobs_that_reserve_it_only() -> None:
    core = farm(FARM)
    first = core.handle(submit(frames="1-3", reserve="license.x=1"))
    running = starts(first)
    assert len(running) == 2  # the license's total is 2
    core.handle(submit(frames="1-5", cluster="/elsewhere", restrictions="/nowhere"))
    out, woken, lookups = counted(core, ended(running[0], now=1.0))
    # the worker whose frame ended takes the third frame itself: nothing to wake
    assert [(s.worker, s.frame) for s in starts(out)] == [(running[0].worker, 3)]
    assert woken == 0
    assert lookups <= 2


def test_raising_a_license_total_wakes_as_many_as_it_lets_start() -> None:
    core = farm(FARM)
    core.handle(submit(frames="1-10", reserve="license.x=1"))
    out, woken, lookups = counted(core, SetResourceTotal(name="license.x", total=5, now=1.0))
    assert len(starts(out)) == 3
    # one per ready frame is woken; those past the license's total find it short
    assert woken <= 8
    assert lookups <= woken + 3


# --------------------------------------------------------------------------- property

# name: (slots, cluster, restrictions, gpus)
HOSTS = {
    "a1": (1, "/a", "/a/+", 0),
    "a2": (2, "/a", "/a/+", 1),
    "a3": (1, "/a/x", "", 0),
    "a4": (1, "/a", "", 0),
    "b1": (1, "/b", "/b/+", 2),
    "b2": (3, "/b", "", 0),
    "b3": (1, "/b", "", 0),
    "c1": (1, "/c", "", 1),
    "c2": (2, "/c", "/c/+ || /a", 0),
    "r1": (1, "/", "", 0),
    "r2": (4, "/", "", 2),
    "r3": (1, "/", "", 0),
}
CLUSTERS = st.sampled_from(["/", "/a", "/a/x", "/b", "/c"])
JOBS = st.fixed_dictionaries(
    {
        "cluster": CLUSTERS,
        "frames": st.sampled_from(["1", "1", "1-2", "1-4", "1-8"]),
        "instances": st.sampled_from([0, 0, 1, 2]),
        "priority": st.sampled_from([1, 50, 100]),
        "reserve": st.sampled_from(["", "", "", "slots=2", "gpu=1", "license.x=1", "slots=1+"]),
    }
)

Attempt = tuple[str, int, int, int]


@dataclass
class Farm:
    running: set[Attempt] = field(default_factory=set)  # (worker, job, frame, attempt)


class WakeMachine(RuleBasedStateMachine):
    """Multi-frame jobs with caps, reservations (slots, a host's gpus, a farm-wide
    license), priorities and dependencies (so one event makes several jobs runnable),
    on restricted workers of several slots that join, leave and finish frames."""

    def __init__(self) -> None:
        super().__init__()
        self.core = Scheduler(resources={"license.x": 2})
        self.farm = Farm()
        self.now = 0.0

    @initialize(names=st.sets(st.sampled_from(sorted(HOSTS)), min_size=len(HOSTS) // 2))
    def join_some(self, names: set[str]) -> None:
        """Start with a farm, so that most steps find starved workers."""
        for name in sorted(names):
            self.join_host(name)

    def join_host(self, name: str) -> None:
        slots, cluster, restrictions, gpus = HOSTS[name]
        self.handle(
            WorkerJoined(
                name=name,
                cluster=cluster,
                slots=slots,
                restrictions=restrictions,
                resources={"gpu": gpus},
                now=self.now,
            )
        )

    def handle(self, event: Event) -> Outcome:
        self.now += 1.0
        out = self.core.handle(event)
        for command in out.commands:
            if isinstance(command, RunOnWorker):
                self.farm.running.add(
                    (command.worker, command.job_id, command.frame, command.attempt)
                )
        return out

    def connected(self) -> list[str]:
        return sorted(self.core.workers)

    @precondition(lambda self: len(self.core.workers) < len(HOSTS))
    @rule(data=st.data())
    def join(self, data: st.DataObject) -> None:
        self.join_host(
            data.draw(st.sampled_from([n for n in sorted(HOSTS) if n not in self.core.workers]))
        )

    @precondition(lambda self: self.core.workers)
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.connected()))
        self.handle(WorkerLost(name=name, now=self.now))
        self.farm.running = {r for r in self.farm.running if r[0] != name}

    @rule(data=st.data(), jobs=st.lists(JOBS, min_size=1, max_size=3))
    def submit(self, data: st.DataObject, jobs: list[dict[str, object]]) -> None:
        """One job, or several at once: then each one's woken workers may take
        another's frames."""
        live = [i for i, job in sorted(self.core.jobs.items()) if not job.state.ended]
        specs = []
        for spec in jobs:
            deps = data.draw(st.lists(st.sampled_from(live), max_size=1)) if live else []
            specs.append(
                SubmitJob(
                    argv=("render", "{frame}"),
                    now=self.now,
                    depends_on=tuple(f"{d}:done" for d in deps),
                    **spec,  # type: ignore[arg-type]
                )
            )
        woken = self.core.dispatch.woken
        out = self.handle(specs[0] if len(specs) == 1 else SubmitJobs(jobs=tuple(specs), now=0))
        ids = [out.result] if len(specs) == 1 else list(out.result)
        usable = 0
        for job_id in ids:
            job = self.core.jobs[job_id]
            usable += min(job.instances or len(job.frames), len(job.frames))
        assert self.core.dispatch.woken - woken <= usable  # no herd

    @precondition(lambda self: self.farm.running)
    @rule(data=st.data(), exit_code=st.sampled_from([0, 0, 1]))
    def finish(self, data: st.DataObject, exit_code: int) -> None:
        worker, job_id, frame, attempt = data.draw(st.sampled_from(sorted(self.farm.running)))
        self.farm.running.discard((worker, job_id, frame, attempt))
        self.handle(
            FrameEnded(
                worker=worker,
                job_id=job_id,
                frame=frame,
                attempt=attempt,
                exit_code=exit_code,
                now=self.now,
            )
        )

    @rule(total=st.sampled_from([0, 1, 2, 3]))
    def license_total(self, total: int) -> None:
        self.handle(SetResourceTotal(name="license.x", total=total, now=self.now))

    @invariant()
    def no_free_slot_idles_beside_work_it_may_take(self) -> None:
        dispatch = self.core.dispatch
        for worker in self.core.workers.values():
            if worker.free > 0 and not worker.locked:
                for ranked in dispatch.index.ranked(worker.view):
                    job = self.core.jobs[ranked.job.id]
                    assert dispatch.fits(job, worker) is None, (worker.name, ranked)


TestWakeMachine = WakeMachine.TestCase
TestWakeMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
)
