"""The workforce: workers coming, changing, going and being locked, and orphaned frames.

Theory of operation
-------------------
`Workforce` is held by the `Scheduler` and handles the events about workers rather than
jobs: a worker joins (and reports what it still runs), is reconfigured, is lost, is
locked or unlocked. It owns the records of the connected workers (`workers`: only it
adds, replaces or drops one; the dispatcher takes and frees their slots), the locks
(`locks`, by name, whether the worker is connected or not, written to the store when
they change), the count of joins (each worker's `seq`), and the *orphans*: the attempts
a restart found running or stopped, waiting for their worker to claim them.

Invariants, true whenever an event has been handled:

- an orphan's frame still holds a process (`Frame.holds_process`) and the farm's
  counters it reserved: it is claimed when its worker joins reporting that attempt,
  and otherwise requeued when that worker joins without it or when `ReclaimOrphans`
  (after the grace period) says no one will;
- a worker holds exactly the attempts it runs: a returning worker's report is
  reconciled (kept if still the frame's attempt and its, readopted if the frame is free
  and there is room, else stopped), and a lost worker's frames run again without using
  a retry (a suspended one stays held);
- a locked worker is offered no work; `purge` also stops what it runs.

Frames change only through the scheduler's `move`, `sync` and `set_stopped`, so the
store, the index and the instance caps hear of every change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farmd.cluster import ClusterTree, Member
from farmd.core.authority import Action, check_host, check_scope
from farmd.core.dispatch import Dispatcher
from farmd.core.vocabulary import (
    LockWorker,
    UnlockWorker,
    WorkerJoined,
    WorkerLoad,
    WorkerLost,
    WorkerReconfigured,
)
from farmd.errors import JobSpecError, UnknownWorkerError
from farmd.frames import Frame, FrameState
from farmd.jobs import FrameEvent, Job
from farmd.resources import ONE_SLOT_TAKEN
from farmd.worker_settings import check_worker
from farmd.workers import Load, Worker

Attempt = tuple[int, int, int]  # (job, frame, attempt)


class Workforce:
    """The connected workers, the locks and the orphans (see module docs). The
    scheduler hands it the worker events."""

    def __init__(
        self,
        *,
        jobs: dict[int, Job],
        workers: dict[str, Worker],
        tree: ClusterTree,
        dispatch: Dispatcher,
        move: Callable[[Job, Frame, FrameEvent], FrameState],
        sync: Callable[[Job], None],
        set_stopped: Callable[[Job, Frame, bool], None],
        note: Callable[..., None],
    ) -> None:
        # the scheduler's records, read here; frames change through `move`/`sync`
        self._jobs = jobs
        self._tree = tree
        self._dispatch = dispatch
        self._move = move
        self._sync = sync
        self._set_stopped = set_stopped
        self._note = note
        self.workers = workers  # shared with the dispatcher, which reads them
        self.locks: dict[str, str] = {}  # locked workers by name, connected or not
        self._locks_changed = False
        self._joins = 0
        # attempts found running after a restart, waiting for their worker
        self._orphans: dict[Attempt, None] = {}

    def worker(self, name: str) -> Worker:
        """Connected worker `name`'s record (UnknownWorkerError if it is not)."""
        worker = self.workers.get(name)
        if worker is None:
            msg = f"worker {name!r} is not connected"
            raise UnknownWorkerError(msg)
        return worker

    # ------------------------------------------------------------------ restart

    def restore(self, locks: dict[str, str]) -> None:
        """The locks as stored (the store has them already)."""
        self.locks = dict(locks)

    def orphan(self, job: Job, frame: Frame) -> None:
        """`frame` was running (or stopped) before a restart and may still run: the
        farm's counters stay held until it is claimed or requeued."""
        self._orphans[(job.id, frame.number, frame.attempts)] = None
        self._dispatch.hold(frame.taken if frame.taken is not None else ONE_SLOT_TAKEN)

    @property
    def orphans(self) -> int:
        return len(self._orphans)

    def take_locks(self) -> dict[str, str] | None:
        """The locks, if they changed since the last call (for the store)."""
        if not self._locks_changed:
            return None
        self._locks_changed = False
        return dict(self.locks)

    # ------------------------------------------------------------------ comings

    def joined(self, event: WorkerJoined) -> dict[str, Any]:
        worker = self._make_worker(event, self._joins)  # refused before anything changes
        check_scope(event.by, Action.WORK, [worker.cluster])
        check_host(event.by, worker.name)
        if event.name in self.workers:
            self.lost(WorkerLost(name=event.name, now=event.now, reason="replaced"))
        self._joins += 1
        self.workers[worker.name] = worker
        self._tree.add(worker.cluster, Member.WORKER)
        for job_id, number, attempt in event.running:
            self._reconcile(worker, job_id, number, attempt, event.now)
        # frames it ran before a supervisor restart and no longer runs: back to pending
        unclaimed = [key for key in self._orphans if self._orphan_worker(key) == worker.name]
        self._requeue_orphans(unclaimed)
        self._note("info", "worker joined", worker=worker.name, cluster=worker.cluster)
        if worker.free > 0:
            self._dispatch.offer(worker.name)
        return worker.summary()

    def _make_worker(self, event: WorkerJoined | WorkerReconfigured, seq: int) -> Worker:
        """A worker record from a registration or a reconfiguration, checked by the
        rules every worker setting meets (`farmd.worker_settings`)."""
        spec = check_worker(
            name=event.name,
            cluster=event.cluster,
            restrictions=event.restrictions,
            slots=event.slots,
            types=event.types,
            properties=event.properties,
            resources=event.resources,
        )
        return Worker(
            name=spec.name,
            cluster=spec.cluster,
            restrictions=spec.restrictions,
            slots=spec.slots,
            connected_at=event.now,
            seq=seq,
            types=spec.types,
            properties=spec.properties,
            resources=spec.resources,
            locked=self.locks.get(event.name),
        )

    def reconfigured(self, event: WorkerReconfigured) -> dict[str, Any]:
        """The worker's record is rebuilt (its cached view and facts with it); what it
        runs and holds carries over, and it is offered work as it now stands."""
        old = self.worker(event.name)
        worker = self._make_worker(event, old.seq)
        worker.connected_at = old.connected_at
        worker.running, worker.used, worker.sticky = old.running, old.used, old.sticky
        worker.load = old.load
        self.workers[worker.name] = worker
        if worker.cluster != old.cluster:
            self._tree.remove(old.cluster, Member.WORKER)
            self._tree.add(worker.cluster, Member.WORKER)
        self._dispatch.offer(worker.name)
        self._note(
            "info",
            "worker reconfigured",
            worker=worker.name,
            cluster=worker.cluster,
            was=old.cluster,
            slots=worker.slots,
        )
        return worker.summary()

    def load(self, event: WorkerLoad) -> None:
        """Keep what the worker's agent said of its host's load, replacing the last."""
        self.worker(event.name).load = Load(
            cpu=event.cpu,
            memory_used=event.memory_used,
            memory_total=event.memory_total,
            load_average=event.load_average,
            at=event.now,
        )

    def _reconcile(
        self, worker: Worker, job_id: int, number: int, attempt: int, now: float
    ) -> None:
        """A returning worker still runs this attempt: keep it if it is still the frame's
        latest attempt and no one else took the frame; otherwise stop it."""
        job = self._jobs.get(job_id)
        frame = job.frames.get(number) if job is not None else None
        if job is not None and frame is not None and frame.attempts == attempt:
            taken = frame.taken or ONE_SLOT_TAKEN
            if self._dispatch.stopping((job_id, number, attempt)):
                pass  # told to stop before the worker went away: stop it again, below
            elif frame.holds_process and frame.worker == worker.name:
                worker.hold((job_id, number, attempt), taken)  # the farm's part is held
                self._orphans.pop((job_id, number, attempt), None)
                return
            # readopted only within the job's cap, the worker's room and the farm's
            # counters; else stopped
            elif self._dispatch.readopt(worker, job, frame, now):
                return
        worker.hold((job_id, number, attempt), ONE_SLOT_TAKEN)  # holds a slot until it stops
        self._dispatch.stop(worker.name, job_id, number, attempt)
        self._note(
            "warning",
            "stale frame stopped",
            job=job_id,
            frame=number,
            attempt=attempt,
            worker=worker.name,
        )

    # ------------------------------------------------------------------ goings

    def lost(self, event: WorkerLost) -> list[str]:
        worker = self.workers.pop(event.name, None)
        if worker is None:
            msg = f"worker {event.name!r} is not connected"
            raise UnknownWorkerError(msg)
        self._tree.remove(worker.cluster, Member.WORKER)
        self._dispatch.withdraw(worker.name)
        requeued = []
        for key, taken in worker.running.items():
            self._dispatch.release(taken)
            job_id, number, attempt = key
            job = self._jobs.get(job_id)
            frame = job.frames.get(number) if job is not None else None
            if job is None or frame is None:
                continue
            if frame.holds_process and frame.worker == worker.name and frame.attempts == attempt:
                self._lose_process(job, frame)
                requeued.append(f"{job_id}:{number}")
        self._note(
            "warning", "worker lost", worker=worker.name, reason=event.reason, requeued=requeued
        )
        return requeued

    def _orphan_worker(self, key: Attempt) -> str | None:
        frame = self._jobs[key[0]].frames[key[1]]
        return frame.worker

    def reclaim_orphans(self) -> list[str]:
        return self._requeue_orphans(list(self._orphans))

    def _requeue_orphans(self, keys: list[Attempt]) -> list[str]:
        requeued = []
        for job_id, number, attempt in keys:
            del self._orphans[(job_id, number, attempt)]
            job = self._jobs[job_id]
            frame = job.frames[number]
            if frame.holds_process and frame.attempts == attempt:
                self._dispatch.release(frame.taken or ONE_SLOT_TAKEN)
                self._lose_process(job, frame)
                requeued.append(f"{job_id}:{number}")
        if requeued:
            self._note("warning", "unclaimed frames requeued", frames=requeued)
        return requeued

    def _lose_process(self, job: Job, frame: Frame) -> None:
        """A frame's process is gone without a result (its worker was lost): it runs
        again, without using a retry; a suspended one stays held."""
        if frame.stopped:
            self._set_stopped(job, frame, False)
        else:
            self._move(job, frame, FrameEvent.LOSE)
        frame.started_at = None
        self._sync(job)

    # ------------------------------------------------------------------ locks

    def lock(self, event: LockWorker) -> list[str]:
        """Lock a connected worker: it takes no new work. `purge` also stops what it
        runs; those frames go back to pending without using a retry."""
        if event.mode not in ("drain", "purge"):
            msg = f"bad lock mode {event.mode!r}: drain (let frames finish) or purge (stop them)"
            raise JobSpecError(msg)
        worker = self.worker(event.name)
        check_scope(event.by, Action.LOCK, [worker.cluster])
        worker.locked = self.locks[worker.name] = event.mode
        self._locks_changed = True
        self._dispatch.withdraw(worker.name)
        stopped = []
        if event.mode == "purge":
            for job_id, number, attempt in list(worker.running):
                job = self._jobs.get(job_id)
                frame = job.frames.get(number) if job is not None else None
                if job is None or frame is None or frame.attempts != attempt:
                    continue
                if frame.holds_process and frame.worker == worker.name:
                    self._dispatch.stop(worker.name, job_id, number, attempt)
                    if frame.stopped:  # a suspended frame stays held (not requeued)
                        self._set_stopped(job, frame, False)
                    else:
                        self._move(job, frame, FrameEvent.PURGE)
                        stopped.append(f"{job_id}:{number}")
                    frame.started_at = None
                    self._sync(job)
        self._note("info", "worker locked", worker=worker.name, mode=event.mode, requeued=stopped)
        return stopped

    def unlock(self, event: UnlockWorker) -> str:
        if event.name not in self.locks:
            msg = f"worker {event.name!r} is not locked"
            raise UnknownWorkerError(msg)
        del self.locks[event.name]
        self._locks_changed = True
        worker = self.workers.get(event.name)
        if worker is not None:
            worker.locked = None
            self._dispatch.offer(worker.name)
        self._note("info", "worker unlocked", worker=event.name)
        return event.name
