"""Dispatch: which frame a free slot runs, and which running frame gives way.

Theory of operation
-------------------
The `Dispatcher` is held by the `Scheduler` and owns what decides where work goes: the
ranking index of runnable jobs (`index`), the pool of farm-wide resources (`pool`), the
workers to offer work (*hungry*, FIFO) and those with free slots that admit no runnable
job (*starved*), the jobs with an instances cap or that need more than a slot, the slots
kept for a job when preemption is disabled, the attempts told to stop, and the frames
started and preempted so far. Nothing else changes these. The jobs, frames and worker
records are the scheduler's: the dispatcher reads them, takes a worker's slots when it
starts a frame there, and changes a frame's state only through the scheduler's `move`
and `sync`, so the store and the index hear of every change.

Invariants, restored by `run` at the end of every event:

- every worker with a free slot has been offered the best job it admits, or sits in
  the starved set because it admits none. Anything that makes a job runnable or changes
  its rank (`track`), eases its instances cap or frees a farm-wide counter it reserves
  marks it *wanting*, and `run` drains hungry and then wakes starved workers for each
  wanting job (below). Dispatch is therefore event-driven and never polls;
- the pool holds what every frame that may still run holds, so a frame starts only if
  the farm-wide counters it reserves are free.

Waking starved workers, without a herd: a job wakes only as many starved workers as it
can use, so a one-frame job on a farm of thousands of idle workers costs one ranking
lookup, not thousands. `run` wakes for a wanting job only once hungry is drained (no
frame is then promised to a worker on its way), and then at most as many starved
workers as the job has ready frames (within its instances cap), the first by join order
(`seq`, FIFO), passing over those it does not admit or, for a job that needs more than
a slot, does not fit. Each woken worker still takes the best job it admits, which may be
another; so once they have chosen, the job is looked at again and more are woken while
it has ready frames that no one took, until it has none or no starved worker it fits is
left. Within one `run` a starved worker passed over stays unfit for the job (a drain
only takes slots, counters and instances), so the scan resumes where it stopped: the
wake for a job costs one pass over the starved workers at most, and one lookup per
worker woken.

Preemption (`PreemptPolicy`): `passive` is dispatch itself, a slot that frees goes to
the best job; `disabled` keeps a slot with the job it ran while that job has frames left;
`aggressive` stops the worst running frame of a full worker as soon as a runnable job
strictly outranks it there by (cluster order, priority), never by id alone. A preempted
frame goes back to pending without using a retry.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable

from sortedcontainers import SortedList

from farmd.core.vocabulary import Command, KillOnWorker, PreemptPolicy, RunOnWorker
from farmd.frames import Frame, FrameState
from farmd.jobs import FrameEvent, Job
from farmd.placeholders import fill_arg
from farmd.ranking import Eligible, QueuedJob, RankingIndex, admits, rank_key
from farmd.resources import ONE_SLOT_TAKEN, Pool, Taken, is_global
from farmd.workers import Worker


class Dispatcher:
    """Where work goes (see module docs). The scheduler tells it what changed (`track`,
    `offer`, `release`...) and calls `run` once per event."""

    def __init__(
        self,
        *,
        policy: PreemptPolicy,
        pool: Pool,
        jobs: dict[int, Job],
        workers: dict[str, Worker],
        move: Callable[[Job, Frame, FrameEvent], FrameState],
        sync: Callable[[Job], None],
        emit: Callable[[Command], None],
        note: Callable[..., None],
    ) -> None:
        self.policy = policy
        self.pool = pool
        self.index = RankingIndex()
        self.started = 0  # frames started since this process began
        self.preempted = 0  # and preempted
        self.lookups = 0  # ranking lookups for a free slot (`index.best`) since then
        self.woken = 0  # and starved workers woken for a job
        # the scheduler's records, read here; frames change only through `move`/`sync`
        self._jobs = jobs
        self._workers = workers
        self._move = move
        self._sync = sync
        self._emit = emit
        self._note = note
        # ordered set: workers to offer work, FIFO. An OrderedDict, as `_wanting`: a dict
        # emptied from its front is quadratic to iterate (each `next(iter(...))` steps
        # over the slots of the keys deleted before it), an OrderedDict is not
        self._hungry: OrderedDict[str, None] = OrderedDict()
        # free slots, but nothing they admit is runnable: by name, each with its place
        # in `_starved_order` (join order, then name), where wakes look in turn
        self._starved: dict[str, tuple[int, str]] = {}
        self._starved_order: SortedList[tuple[int, str]] = SortedList()
        self._demanding: set[int] = set()  # jobs that need more of a worker than a slot
        self._capped: set[int] = set()  # jobs with an instances cap
        # ordered set: jobs that may have work for starved workers (runnable, re-ranked,
        # below their cap again, or a counter they reserve freed), woken for by `run`
        # (a restore makes every job wanting at once: 100,000 of them, popped in turn)
        self._wanting: OrderedDict[int, None] = OrderedDict()
        self._rising: set[int] = set()  # jobs made runnable or re-ranked by this event
        self._stopping: set[tuple[int, int, int]] = set()  # attempts told to stop, not ended

    # ------------------------------------------------------------------ once per event

    def run(self, now: float) -> None:
        """Offer work to every hungry worker, and wake starved ones for the jobs that
        want them; then, if this event made jobs runnable or re-ranked them, preempt for
        them (aggressive policy) and offer again."""
        self._dispatch(now)
        if self._rising:  # free slots have taken what they could: preempt for the rest
            if self.policy is PreemptPolicy.AGGRESSIVE:
                self._preempt(now)
                # a preempted frame is runnable again: a free slot elsewhere takes it now
                self._dispatch(now)
            self._rising.clear()

    # ------------------------------------------------------------------ told by the scheduler

    def track(self, job: Job) -> None:
        """Keep the index invariant for `job`: in the index exactly when it is runnable.
        A job that becomes runnable may feed starved workers."""
        runnable = job.runnable
        indexed = job.id in self.index
        if runnable and not indexed:
            self.index.add(job.queued())
            self._rising.add(job.id)
            self._wanting[job.id] = None
        elif not runnable and indexed:
            self.index.remove(job.id)

    def rerank(self, job: Job) -> None:
        """`job`'s cluster or priority changed: it is indexed again as it now ranks."""
        if job.id in self.index:
            self.index.remove(job.id)
        self.track(job)

    def options_changed(self, job: Job) -> None:
        """`job` was added or modified: whether it has a cap or needs more than a slot."""
        (self._capped.add if job.instances else self._capped.discard)(job.id)
        (self._demanding.add if job.demanding else self._demanding.discard)(job.id)

    def removed(self, job_id: int) -> None:
        """An ended job (not in the index) is forgotten."""
        self._capped.discard(job_id)
        self._demanding.discard(job_id)

    def cap_eased(self, job: Job) -> None:
        """A frame of `job` no longer counts towards its instances cap: workers the cap
        starved may take its frames (at the end of this event)."""
        if job.instances:
            self._wanting[job.id] = None

    def offer(self, name: str) -> None:
        """Worker `name` may have room (it joined, changed, was unlocked, or a slot
        freed): it is offered work at the end of this event."""
        self._unstarve(name)
        self._hungry[name] = None

    def withdraw(self, name: str) -> None:
        """Worker `name` takes no new work (it left or was locked)."""
        self._hungry.pop(name, None)
        self._unstarve(name)

    def set_total(self, name: str, total: float) -> None:
        """A global counter's total changed: the jobs that reserve it may fit starved
        workers now."""
        self.pool.totals[name] = total
        self._counters_freed({name})

    def hold(self, taken: Taken) -> None:
        """A frame that may still run (found so in the store) holds its farm-wide part."""
        self.pool.hold(taken)

    def frame_ended(self, worker: Worker, job: Job) -> None:
        """A frame of `job` ended on `worker`: with preemption disabled, the slot stays
        with the job while it has work."""
        if self.policy is PreemptPolicy.DISABLED:
            worker.sticky.append(job.id)

    def stopping(self, key: tuple[int, int, int]) -> bool:
        """The attempt `key` (job, frame, attempt) was told to stop, and has not ended."""
        return key in self._stopping

    def stop_ended(self, key: tuple[int, int, int]) -> None:
        """The attempt `key` has ended: no stop is pending for it any more."""
        self._stopping.discard(key)

    def readopt(self, worker: Worker, job: Job, frame: Frame, now: float) -> bool:
        """A returning worker still runs the latest attempt of `frame`, which went back
        to pending: it is readopted only within the job's cap, the worker's room and the
        farm's counters (whether it was)."""
        taken = frame.taken or ONE_SLOT_TAKEN
        if (
            frame.state is not FrameState.PENDING
            or frame.waits_on
            or job.at_cap
            or not all(
                (self.pool.free(n) if is_global(n) else worker.available(n)) >= a
                for n, a in taken.items()
            )
        ):
            return False
        self._move(job, frame, FrameEvent.READOPT)
        frame.worker = worker.name
        frame.started_at = now  # when it was found running again
        worker.hold((job.id, frame.number, frame.attempts), taken)
        self.pool.hold(taken)
        self._sync(job)
        self._note(
            "info",
            "frame readopted",
            job=job.id,
            frame=frame.number,
            attempt=frame.attempts,
            worker=worker.name,
        )
        return True

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, now: float) -> None:
        """Drain hungry; then wake starved workers for each wanting job, a few at a time
        (see module docs), draining again after each wake."""
        self._drain(now)
        scanned: dict[int, tuple[int, str]] = {}  # per job: the starved looked at so far
        while self._wanting:
            job_id, _ = self._wanting.popitem(last=False)
            if self._wake_for(job_id, scanned):
                self._drain(now)
                self._wanting[job_id] = None  # again once they chose: any frame left?

    def _wake_for(self, job_id: int, scanned: dict[int, tuple[int, str]]) -> bool:
        """Move to hungry, in join order, the starved workers after `scanned[job_id]`
        that admit and fit the job, until they have room for what it can use now.
        Whether any was woken."""
        job = self._jobs.get(job_id)
        if job is None or job_id not in self.index or job.at_cap or not self._starved:
            return False
        wants = len(job.pending)
        if job.instances:
            wants = min(wants, job.instances - job.counts[FrameState.RUNNING] - job.stopped)
        queued = self.index.get(job_id)
        start = scanned.get(job_id)
        woken: list[tuple[int, str]] = []
        for key in self._starved_order.irange(minimum=start, inclusive=(False, False)):
            if wants <= 0:
                break
            scanned[job_id] = key
            worker = self._workers[key[1]]
            if not admits(queued, worker.view):
                continue
            if job.demanding:
                if self.fits(job, worker) is None:
                    continue
                wants -= 1  # what more it would fit there is not worth the reckoning
            else:
                wants -= max(1, int(worker.free))
            woken.append(key)
        for key in woken:
            self._unstarve(key[1])
            self._hungry[key[1]] = None
        self.woken += len(woken)
        return bool(woken)

    def _drain(self, now: float) -> None:
        """Offer work to every hungry worker, first come first served: each takes the
        best job it admits and fits, or is starved."""
        while self._hungry:
            name = next(iter(self._hungry))
            worker = self._workers[name]
            if worker.free <= 0 or worker.locked:
                del self._hungry[name]
                continue
            if worker.sticky:
                kept = self._sticky_job(worker)
                taken = self.fits(kept, worker) if kept is not None else None
                if kept is not None and taken is not None:
                    self._start(worker, kept, rank_key(kept.queued(), worker.view), now, taken)
                    continue
            fits: list[Taken] = []
            self.lookups += 1
            ranked = self.index.best(worker.view, self.eligible_on(worker, fits))
            if ranked is None:
                del self._hungry[name]
                self._starve(worker)
                continue
            taken = fits[-1] if fits else ONE_SLOT_TAKEN
            self._start(worker, self._jobs[ranked.job.id], ranked.key, now, taken)

    def _starve(self, worker: Worker) -> None:
        key = (worker.seq, worker.name)
        self._starved[worker.name] = key
        self._starved_order.add(key)

    def _unstarve(self, name: str) -> None:
        key = self._starved.pop(name, None)
        if key is not None:
            self._starved_order.remove(key)

    def eligible_on(
        self, worker: Worker, fits: list[Taken], *, idle: bool = False
    ) -> Eligible | None:
        """The predicate `index.best` asks of each job in rank order on `worker`: may it
        run there now (`idle`: once its slots are free)? What the one it accepts would
        hold goes to `fits`. None (no predicate: any admitted job fits a free slot)
        while no job needs more."""
        if not self._demanding:
            return None
        jobs = self._jobs

        def eligible(queued: QueuedJob) -> bool:
            job = jobs[queued.id]
            if not job.demanding:
                fits.append(ONE_SLOT_TAKEN)
                return True
            taken = self.fits(job, worker, idle=idle)
            if taken is None:
                return False
            fits.append(taken)
            return True

        return eligible

    def fits(self, job: Job, worker: Worker, *, idle: bool = False) -> Taken | None:
        """What a frame of `job` would hold on `worker` now (`idle`: with all its slots
        free), or None: a type it lacks, a requirement it fails, the job's instances
        cap, or a resource short."""
        if job.job_type is not None and not worker.runs(job.job_type, job.pinned is not None):
            return None
        if job.at_cap:
            return None
        if job.requires.source and not job.requires.matches(worker.facts, job.facts()):
            return None
        return job.reserve.take(worker.slots, self.free_on(worker, idle), self.pool.free)

    @staticmethod
    def free_on(worker: Worker, idle: bool) -> Callable[[str], float]:
        if not idle:
            return worker.available
        return lambda name: worker.slots if name == "slots" else worker.available(name)

    def _under_cap(self, queued: QueuedJob) -> bool:
        return not self._jobs[queued.id].at_cap

    def release(self, taken: Taken) -> None:
        """A process is gone: the farm-wide counters it held are free; workers starved
        for want of them may find work."""
        if self.pool.release(taken):
            self._counters_freed({name for name in taken if is_global(name)})

    def _counters_freed(self, names: set[str]) -> None:
        """More of the farm-wide counters `names` is free: the runnable jobs that
        reserve one want the starved workers it may now fit (no other job fits a
        worker any better for it)."""
        for job_id in sorted(self._demanding):  # the same order in every process
            if job_id in self.index and any(
                name in names for name, _ in self._jobs[job_id].reserve.global_amounts
            ):
                self._wanting[job_id] = None

    def _sticky_job(self, worker: Worker) -> Job | None:
        """Preemption disabled: the job a slot of `worker` just ran, if it still has a
        frame for it."""
        while worker.sticky:
            job = self._jobs.get(worker.sticky.pop(0))
            if (
                job is not None
                and job.id in self.index
                and not job.at_cap
                and admits(self.index.get(job.id), worker.view)
            ):
                return job
        return None

    def _preempt(self, now: float) -> None:
        """Aggressive preemption, after dispatch has filled the free slots. On each full
        worker that a job made runnable (or re-ranked) by this event could use, stop the
        worst running frame if the best runnable job there strictly outranks it by
        (cluster order, priority), while that job still has ready frames that no slot
        on its way back will take. A worker already stopping a frame is skipped: that
        slot comes back first."""
        rising = [self.index.get(i) for i in sorted(self._rising) if i in self.index]
        if not rising:
            return
        eligible = self._under_cap if self._capped else None
        victims: dict[str, list[tuple[tuple[int, int, int], Job, Frame]]] = {}
        returning: dict[str, int] = {}  # slots on their way back, by worker
        for worker in sorted(self._workers.values(), key=lambda w: w.seq):
            if worker.free > 0 or worker.locked:
                continue
            victims[worker.name] = []
            for job_id, number, attempt in worker.running:
                job = self._jobs.get(job_id)
                frame = job.frames.get(number) if job is not None else None
                if (
                    job is None
                    or frame is None
                    or frame.attempts != attempt
                    or not frame.holds_process
                ):
                    returning[worker.name] = returning.get(worker.name, 0) + 1
                elif frame.state is FrameState.RUNNING and not job.uninterruptible:
                    key = rank_key(job.queued(), worker.view)
                    victims[worker.name].append((key, job, frame))
        claimed: dict[int, int] = {}  # slots this pass freed, by the job they are for
        for name, candidates in victims.items():
            worker = self._workers[name]
            if not candidates or name in returning:
                continue
            if not any(admits(q, worker.view) for q in rising):
                continue
            best = self.index.best(worker.view, eligible)
            if best is None:
                continue
            key, job, frame = max(candidates, key=lambda v: v[0])
            if best.key[:2] >= key[:2]:
                continue
            wanted = self._jobs[best.job.id]
            needs = len(wanted.pending)
            if wanted.instances:
                room = wanted.instances - wanted.counts[FrameState.RUNNING] - wanted.stopped
                needs = min(needs, room)
            underway = claimed.get(wanted.id, 0) + sum(
                count
                for other, count in returning.items()
                if admits(best.job, self._workers[other].view)
            )
            if needs > underway:
                claimed[wanted.id] = claimed.get(wanted.id, 0) + 1
                self._preempt_frame(worker, job, frame, best.key, now)

    def _preempt_frame(
        self, worker: Worker, job: Job, frame: Frame, by: tuple[int, int, int], now: float
    ) -> None:
        self.stop(worker.name, job.id, frame.number, frame.attempts)
        self.preempted += 1
        self._move(job, frame, FrameEvent.PREEMPT)  # uses no retry: not the frame's fault
        frame.started_at = None
        self._sync(job)
        self._note(
            "info",
            "frame preempted",
            job=job.id,
            frame=frame.number,
            attempt=frame.attempts,
            worker=worker.name,
            by_job=by[2],
            by_rank=list(by),
        )

    def _start(
        self, worker: Worker, job: Job, rank: tuple[int, int, int], now: float, taken: Taken
    ) -> None:
        frame = job.next_frame(worker.name)
        self.started += 1
        self._move(job, frame, FrameEvent.DISPATCH)
        frame.attempts += 1
        frame.worker = worker.name
        frame.started_at = now
        frame.finished_at = None
        frame.exit_code = None
        worker.hold((job.id, frame.number, frame.attempts), taken)
        self.pool.hold(taken)
        frame.taken = None if taken is ONE_SLOT_TAKEN else taken
        self._sync(job)
        number = str(frame.number)
        last, label = (str(frame.members[-1]), frame.label) if frame.members else (number, number)
        self._emit(
            RunOnWorker(
                worker=worker.name,
                job_id=job.id,
                job_name=job.name,
                frame=frame.number,
                attempt=frame.attempts,
                # a release job's command is filled by its worker, which knows where the
                # release is (`farmd.releases.template`)
                argv=(
                    job.argv
                    if job.pinned is not None
                    else tuple(fill_arg(arg, number, number, last) for arg in job.argv)
                ),
                env={
                    **job.env,  # the job's own: FARMD_* are refused there
                    "FARMD_JOB_ID": str(job.id),
                    "FARMD_JOB_NAME": job.name,
                    "FARMD_OWNER": job.owner,  # an agent that runs frames as owners reads it
                    "FARMD_FRAME": number,
                    "FARMD_FRAME_START": number,
                    "FARMD_FRAME_END": last,
                    "FARMD_FRAMES": label,
                    "FARMD_ATTEMPT": str(frame.attempts),
                    "FARMD_SLOTS": "1" if taken is ONE_SLOT_TAKEN else str(int(taken["slots"])),
                    "FARMD_WORKER": worker.name,
                    "FARMD_CLUSTER": job.cluster,
                    "FARMD_WORKER_CLUSTER": worker.cluster,
                    **_params_env(job),
                },
                time_limit=job.time_limit,
                release=job.pinned,
                rank=rank,
            )
        )

    def stop(self, worker: str, job_id: int, frame: int, attempt: int) -> None:
        """Tell `worker` to stop an attempt. It is remembered until its end is reported:
        a worker that comes back still running it gets it stopped again, never
        readopted (the stop it was sent would kill it, and count as a failure)."""
        self._emit(KillOnWorker(worker=worker, job_id=job_id, frame=frame, attempt=attempt))
        self._stopping.add((job_id, frame, attempt))


def _params_env(job: Job) -> dict[str, str]:
    """A release job's parameters for its frames (a Python task reads them)."""
    if job.pinned is None:
        return {}
    return {"FARMD_PARAMS": json.dumps(job.params, sort_keys=True)}
