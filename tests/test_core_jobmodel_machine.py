"""A stateful property test of the job model: random submissions with every option
(chunks, dependency modes, sub-jobs, retries, instances, job types, reservations of
slots, host resources and a farm-wide license), every admin control on whole jobs and
on single frames, results, lost, returning and locked workers, retry timers and
removals, under each preemption policy.

After every step the core must agree with a model computed from scratch: each job's
state follows from its frames, its dependencies and its sub-jobs by the rules in the
issue; the ranking index holds exactly the jobs with a ready frame; the workers hold
exactly the processes their hosts run. Every control either moves each frame it names
as `CONTROLS` says or is refused in one line with nothing changed. No worker and no
license is ever held beyond its total, and no free slot idles beside a job that fits it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
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
    ControlFrames,
    Event,
    FrameEnded,
    JobEnded,
    KillOnWorker,
    LockWorker,
    Outcome,
    PreemptPolicy,
    RemoveJobs,
    ResumeOnWorker,
    RunOnWorker,
    Scheduler,
    SubmitJob,
    SuspendOnWorker,
    Tick,
    UnlockWorker,
    WorkerJoined,
    WorkerLost,
)
from farmd.core.controls import with_subjobs
from farmd.errors import UserError
from farmd.frames import Frame, FrameState
from farmd.jobs import CONTROLS, Control, DependencyMode, Job, JobState
from farmd.ranking import admits
from tests.test_core import snapshot

HOSTS = {"h1": 1, "h2": 2, "h3": 3}
HOST_TYPES = {"h1": ("a",), "h2": (), "h3": ("a", "b")}
HOST_GPUS = {"h1": 1, "h2": 0, "h3": 2}
LICENSES = {"license.x": 2}
CLUSTERS = st.sampled_from(["/", "/a", "/a/b", "/b"])
RANGES = st.sampled_from(["1", "1-2", "1-3", "2-4", "1-5x2"])
MODES = st.sampled_from(list(DependencyMode))

Attempt = tuple[int, int, int]


@dataclass
class Host:
    slots: int
    connected: bool = False
    held: set[Attempt] = field(default_factory=set)  # processes alive (or unacknowledged)
    stopping: set[Attempt] = field(default_factory=set)  # told to stop
    stopped: set[Attempt] = field(default_factory=set)  # SIGSTOPped


def counterparts(job: Job, frame: Frame, other: Job) -> list[Frame]:
    """The frames (or chunks) of `other` that frame-by-frame gate `frame` of `job`."""
    found: dict[int, Frame] = {}
    for number in frame.numbers:
        for unit in other.frames.values():
            if number in unit.numbers:
                found[unit.number] = unit
    return list(found.values())


class JobModelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = Scheduler()
        self.now = 0.0
        self.hosts = {name: Host(slots) for name, slots in HOSTS.items()}
        self.met: set[tuple[int, int]] = set()  # (job, dependency) once held

    @initialize(policy=st.sampled_from(list(PreemptPolicy)))
    def choose_policy(self, policy: PreemptPolicy) -> None:
        self.core = Scheduler(preempt_policy=policy, resources=dict(LICENSES))

    # ------------------------------------------------------------------ driving

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def handle(self, event: Event) -> Outcome:
        out = self.core.handle(event)
        for command in out.commands:
            match command:
                case RunOnWorker(worker=name, job_id=job_id, frame=number, attempt=attempt):
                    host = self.hosts[name]
                    assert host.connected
                    assert (job_id, number, attempt) not in host.held
                    host.held.add((job_id, number, attempt))
                    job = self.core.jobs[job_id]
                    assert admits(job.queued(), self.core.workers[name].view)
                    unit = job.frames[number]
                    assert command.env["FARMD_FRAME_START"] == str(unit.numbers[0])
                    assert command.env["FARMD_FRAME_END"] == str(unit.numbers[-1])
                case KillOnWorker(worker=name, job_id=job_id, frame=number, attempt=attempt):
                    assert (job_id, number, attempt) in self.hosts[name].held
                    self.hosts[name].stopping.add((job_id, number, attempt))
                    self.hosts[name].stopped.discard((job_id, number, attempt))
                case SuspendOnWorker(worker=name, job_id=job_id, frame=number, attempt=attempt):
                    assert (job_id, number, attempt) in self.hosts[name].held
                    self.hosts[name].stopped.add((job_id, number, attempt))
                case ResumeOnWorker(worker=name, job_id=job_id, frame=number, attempt=attempt):
                    assert (job_id, number, attempt) in self.hosts[name].stopped
                    self.hosts[name].stopped.discard((job_id, number, attempt))
                case JobEnded(job_id=job_id, state=end):
                    assert self.core.jobs[job_id].state is end
        for job in self.core.jobs.values():  # a dependency met once stays met
            for dep in job.depends_on:
                other = self.core.jobs.get(dep.job_id)
                if other is None or (
                    dep.mode is not DependencyMode.FRAMES and dep.holds(other.state)
                ):
                    self.met.add((job.id, dep.job_id))
        return out

    def refused(self, event: Event) -> None:
        before = snapshot(self.core)
        with pytest.raises(UserError) as caught:
            self.core.handle(event)
        assert "\n" not in str(caught.value)
        assert snapshot(self.core) == before

    def connected(self) -> list[str]:
        return sorted(n for n, h in self.hosts.items() if h.connected)

    # ------------------------------------------------------------------ rules

    @rule(
        data=st.data(),
        cluster=CLUSTERS,
        frames=RANGES,
        chunk=st.sampled_from([1, 1, 2]),
        retries=st.sampled_from([0, 0, 1]),
        retry_delay=st.sampled_from([0.0, 0.0, 2.0]),
        instances=st.sampled_from([0, 0, 1]),
        priority=st.sampled_from([1, 5, 9999]),
        uninterruptible=st.booleans(),
        job_type=st.sampled_from([None, None, "a", "b"]),
        reserve=st.sampled_from(
            ["", "", "gpu=1", "slots=2", "slots=1+", "slots=1*", "license.x=1"]
        ),
    )
    def submit(
        self,
        data: st.DataObject,
        cluster: str,
        frames: str,
        chunk: int,
        retries: int,
        retry_delay: float,
        instances: int,
        priority: int,
        uninterruptible: bool,
        job_type: str | None,
        reserve: str,
    ) -> None:
        ids = sorted(self.core.jobs)
        deps: dict[int, str] = {}
        parent = None
        if ids:
            for job_id in data.draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)):
                deps[job_id] = f"{job_id}:{data.draw(MODES).value}"
            live = [i for i in ids if not self.core.jobs[i].state.ended]
            if live and data.draw(st.booleans()):
                parent = data.draw(st.sampled_from(live))
        event = SubmitJob(
            argv=("render", "{start}", "{end}"),
            now=self.tick(),
            cluster=cluster,
            frames=frames,
            chunk=chunk,
            retries=retries,
            retry_delay=retry_delay,
            instances=instances,
            priority=priority,
            uninterruptible=uninterruptible,
            depends_on=tuple(deps.values()),
            parent=parent,
            job_type=job_type,
            reserve=reserve,
        )
        out = self.handle(event)
        assert self.core.jobs[out.result].parent == parent

    @precondition(lambda self: self.core.jobs)
    @rule(data=st.data(), control=st.sampled_from(list(Control)), whole=st.booleans())
    def control(self, data: st.DataObject, control: Control, whole: bool) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.core.jobs)))
        job = self.core.jobs[job_id]
        if whole:
            target = str(job_id)
            movable = any((f.state, control) in CONTROLS for f in job.frames.values())
            if control in (Control.KILL, Control.RETRY):  # these reach sub-jobs too
                movable = movable or any(
                    (f.state, control) in CONTROLS
                    for sub in with_subjobs(self.core.jobs, [job])
                    for f in sub.frames.values()
                )
            frames = list(job.frames.values()) if movable else []
        else:
            frame = data.draw(st.sampled_from(list(job.frames.values())))
            number = data.draw(st.sampled_from(frame.numbers))  # any frame of a chunk
            target = f"{job_id}:{number}"
            movable = (frame.state, control) in CONTROLS
            frames = [frame]
        event = ControlFrames(control=control, targets=(target,), now=self.tick())
        if not movable:
            self.refused(event)
            return
        before = {f.number: (f.state, f.stopped) for f in frames}
        self.handle(event)
        for f in frames:
            state, stopped = before[f.number]
            expected = CONTROLS.get((state, control))
            if expected is None:  # a whole-job control leaves such frames alone
                assert f.state is state
            elif control is Control.RESUME and stopped:
                assert f.state is FrameState.RUNNING  # its process continues
            elif expected is FrameState.PENDING:
                assert f.state in (FrameState.PENDING, FrameState.RUNNING)  # maybe restarted
            else:
                assert f.state is expected, (f, state, control)

    @precondition(lambda self: self.core.jobs)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.core.jobs)))
        job = self.core.jobs[job_id]
        event = RemoveJobs(job_ids=(job_id,), now=self.tick())
        subs = with_subjobs(self.core.jobs, [job])
        ids = {j.id for j in subs}
        allowed = (
            all(j.state.ended for j in subs)
            and (job.parent is None or job.parent not in self.core.jobs)
            and all(
                d in ids or self.core.jobs[d].state.ended
                for j in subs
                for d in self.core.dependents_of(j.id)
                if d in self.core.jobs
            )
        )
        if not allowed:
            self.refused(event)
            return
        self.handle(event)
        assert not ids & set(self.core.jobs)

    @precondition(lambda self: len(self.connected()) < len(HOSTS))
    @rule(data=st.data(), cluster=CLUSTERS)
    def join(self, data: st.DataObject, cluster: str) -> None:
        name = data.draw(st.sampled_from([n for n in sorted(HOSTS) if n not in self.connected()]))
        host = self.hosts[name]
        host.connected = True
        self.handle(
            WorkerJoined(
                name=name,
                cluster=cluster,
                slots=host.slots,
                running=tuple(sorted(host.held)),
                types=HOST_TYPES[name],
                resources={"gpu": HOST_GPUS[name]},
                now=self.tick(),
            )
        )

    @precondition(lambda self: self.connected())
    @rule(data=st.data(), crashed=st.booleans())
    def lose(self, data: st.DataObject, crashed: bool) -> None:
        name = data.draw(st.sampled_from(self.connected()))
        self.handle(WorkerLost(name=name, now=self.tick()))
        host = self.hosts[name]
        host.connected = False
        if crashed:
            host.held.clear()
            host.stopping.clear()
            host.stopped.clear()

    @precondition(lambda self: any(self.hosts[n].held for n in self.connected()))
    @rule(data=st.data(), exit_code=st.sampled_from([0, 0, 1]))
    def report(self, data: st.DataObject, exit_code: int) -> None:
        name = data.draw(st.sampled_from([n for n in self.connected() if self.hosts[n].held]))
        host = self.hosts[name]
        key = data.draw(st.sampled_from(sorted(host.held)))
        if key in host.stopping:
            exit_code = -15
        self.handle(
            FrameEnded(
                worker=name,
                job_id=key[0],
                frame=key[1],
                attempt=key[2],
                exit_code=exit_code,
                now=self.tick(),
            )
        )
        host.held.discard(key)
        host.stopping.discard(key)
        host.stopped.discard(key)

    @precondition(lambda self: self.connected())
    @rule(data=st.data(), purge=st.booleans())
    def lock(self, data: st.DataObject, purge: bool) -> None:
        name = data.draw(st.sampled_from(self.connected()))
        self.handle(LockWorker(name=name, mode="purge" if purge else "drain", now=self.tick()))
        assert self.core.workers[name].locked

    @precondition(lambda self: self.core.locks)
    @rule(data=st.data())
    def unlock(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.core.locks)))
        self.handle(UnlockWorker(name=name, now=self.tick()))

    @rule()
    def time_passes(self) -> None:
        self.handle(Tick(now=self.tick()))

    # ------------------------------------------------------------------ invariants

    def gated(self, job: Job, frame: Frame) -> bool:
        for dep in job.depends_on:
            other = self.core.jobs.get(dep.job_id)
            if (
                dep.mode is DependencyMode.FRAMES
                and other is not None
                and any(u.state is not FrameState.COMPLETE for u in counterparts(job, frame, other))
            ):
                return True
        return False

    def expected_state(self, job: Job) -> JobState:
        jobs = self.core.jobs
        counts = Counter(f.state for f in job.frames.values())
        unmet = [
            d
            for d in job.depends_on
            if d.mode is not DependencyMode.FRAMES and (job.id, d.job_id) not in self.met
        ]
        pending = [f for f in job.frames.values() if f.state is FrameState.PENDING]
        gated = [f for f in pending if self.gated(job, f)]
        broken = any(d.broken(jobs[d.job_id].state) for d in unmet) or any(
            d.mode is DependencyMode.FRAMES
            and d.job_id in jobs
            and d.broken(jobs[d.job_id].state)
            and any(
                u.state is not FrameState.COMPLETE
                for f in gated
                for u in counterparts(job, f, jobs[d.job_id])
            )
            for d in job.depends_on
        )
        children = [j for j in jobs.values() if j.parent == job.id]
        if counts[FrameState.RUNNING]:
            return JobState.RUNNING
        if pending:
            if unmet or len(gated) == len(pending):
                return JobState.BLOCKED if broken else JobState.WAITING
            return JobState.PENDING
        if counts[FrameState.SUSPENDED]:
            return JobState.SUSPENDED
        if counts[FrameState.BLOCKED]:
            return JobState.BLOCKED
        if any(not c.state.ended for c in children):
            return JobState.WAITING
        if counts[FrameState.KILLED] or any(c.state is JobState.KILLED for c in children):
            return JobState.KILLED
        if counts[FrameState.COMPLETE] == len(job.frames) and all(
            c.state is JobState.COMPLETE for c in children
        ):
            return JobState.COMPLETE
        return JobState.FAILED

    @invariant()
    def job_states_follow_from_frames_dependencies_and_sub_jobs(self) -> None:
        for job in self.core.jobs.values():
            assert job.state is self.expected_state(job), (job.id, job.state)
            frames = Counter()
            for f in job.frames.values():
                frames[f.state.value] += len(f.numbers)
            assert {k: v for k, v in job.summary()["frames"].items() if v} == dict(frames)

    @invariant()
    def a_jobs_page_counts_every_job_by_the_state_it_shows(self) -> None:
        page = self.core.jobs_page(limit=1)
        shown = Counter(job.state.value for job in self.core.jobs.values())
        assert {k: v for k, v in page["counts"].items() if v} == dict(shown)
        assert page["total"] == len(self.core.jobs)

    @invariant()
    def an_instances_cap_counts_stopped_frames_and_is_never_exceeded(self) -> None:
        for job in self.core.jobs.values():
            stopped = sum(f.stopped for f in job.frames.values())
            assert job.stopped == stopped, job.id
            if job.instances:
                assert job.counts[FrameState.RUNNING] + stopped <= job.instances, job.id

    @invariant()
    def the_index_holds_exactly_the_jobs_with_a_ready_frame(self) -> None:
        runnable = set()
        for job in self.core.jobs.values():
            unmet = any(
                d.mode is not DependencyMode.FRAMES and (job.id, d.job_id) not in self.met
                for d in job.depends_on
            )
            ready = any(
                f.state is FrameState.PENDING and f.retry_at is None and not self.gated(job, f)
                for f in job.frames.values()
            )
            if ready and not unmet:
                runnable.add(job.id)
        assert {q.id for q in self.core.dispatch.index} == runnable

    @invariant()
    def workers_hold_exactly_what_their_hosts_run(self) -> None:
        assert sorted(self.core.workers) == self.connected()
        for name, worker in self.core.workers.items():
            host = self.hosts[name]
            assert set(worker.running) == host.held
            for resource, used in worker.used.items():
                assert used == sum(t.get(resource, 0) for t in worker.running.values())
            assert worker.used.get("slots", 0) <= worker.slots
            assert worker.used.get("gpu", 0) <= HOST_GPUS[name]
        for job in self.core.jobs.values():
            for f in job.frames.values():
                key = (job.id, f.number, f.attempts)
                if f.state is FrameState.RUNNING or f.stopped:
                    host = self.hosts[f.worker or ""]
                    assert key in host.held, (key, f)
                    assert (key in host.stopped) == f.stopped, (key, f)

    @invariant()
    def no_license_is_held_beyond_its_total(self) -> None:
        pool = self.core.dispatch.pool
        for name, total in LICENSES.items():
            held = sum(
                t.get(name, 0) for w in self.core.workers.values() for t in w.running.values()
            )
            assert pool.used.get(name, 0) >= held
            if not self.core.orphans:
                assert pool.used.get(name, 0) == held
            assert pool.used.get(name, 0) <= total

    @invariant()
    def no_free_slot_idles_beside_work_it_may_take(self) -> None:
        for worker in self.core.workers.values():
            if worker.free > 0 and not worker.locked:
                for ranked in self.core.dispatch.index.ranked(worker.view):
                    job = self.core.jobs[ranked.job.id]
                    assert self.core.dispatch.fits(job, worker) is None, (worker.name, ranked)


TestJobModelMachine = JobModelMachine.TestCase
TestJobModelMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
)
