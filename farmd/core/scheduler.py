"""The supervisor's state machine: events in, commands out.

Theory of operation
-------------------
`Scheduler` holds the whole farm: jobs and their frames, connected workers, the derived
cluster tree, the frames waiting out a retry delay, and the changes the store must
write. Its one door for change is `handle(event)`, which returns an `Outcome`: the
event's result (a new job id...) and the commands the shell must carry out (start or
stop a frame on a worker, tell waiters a job ended, log a line). Time arrives inside
events; the core reads no clock, opens no socket and logs nothing itself. Queries
(`jobs_page`, `order_view`...) only read.

The scheduler holds one object per concern, each the only owner of its state, and
routes each event to the one that handles it; they move a frame only through the
scheduler's `_move` and act on a job's state only through `_sync`, so the store, the
index and the dependents hear of every change:

- `Dispatcher` (`dispatch`): the ranking index, the resource pool, which frame a free
  slot runs and which running frame gives way;
- `Dependencies` (`dependencies`): which jobs wait for which, whole or frame by frame;
- `Submissions` (`submissions`): new jobs checked against the farm, idempotency keys;
- `Workforce` (`workforce`): worker records, joins, losses, locks, restart orphans.

Kills, controls and removals are planned whole by `controls` (pure: refused before
anything changes) and carried out here; results, retries and modifications are here.

Invariants, restored at the end of every `handle`:

- a job is in the ranking index exactly when `Job.runnable` (a ready frame, no unmet
  whole-job dependency); `_sync` is the only place that acts on a job's state changing
  (`Job.synced` is the state it last acted on): an end is announced once, dependents
  and the parent hear of it, a retried job returns to the cluster tree;
- every worker with a free slot has been offered the best job it admits, or is starved
  because it admits none (the dispatcher's rule);
- a frame's `attempts` is its fencing token: a result for any other attempt, or from a
  worker that no longer holds it, is ignored and logged, so a frame ends exactly once.

Dependencies: a job waits for its unmet whole-job dependencies out of the index, and
a frame-by-frame dependency gates single frames (see `dependencies`).

Sub-jobs: a job submitted with a `parent` is counted in its parent's `open_children`
until it ends; the parent ends only once its frames and its sub-jobs have. Killing or
removing a job takes its sub-jobs with it.

Restart: the store's snapshot comes in as a `Restore` event, through `handle` like any
other, rather than as a second door or a constructor from a snapshot. The shell builds
its scheduler from configuration before it opens the store (the metrics already hold
its `statistics`), so an event keeps that one object; and `handle` is then the only
code that changes the farm, with the same end-of-event discipline (invariants,
dispatch, changes collected) for a restart as for a submit. It is refused as our bug
(`InternalError`) once the scheduler holds jobs or workers.

The shell asks the farm through named queries (`size`, `quarantine_report`,
`job_summary`, `worker_settings`, `ended`, `stuck`...), never the dicts.

A refused event raises a `UserError` before anything is changed; an event the core
does not know, or one it cannot take in its state, is our bug: `InternalError`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import attrs
from sortedcontainers import SortedList

from farmd.cluster import ClusterTree, Member, parse_cluster, parse_patterns, parse_restrictions
from farmd.core import authority
from farmd.core.authority import Action, Principal, check_jobs, check_scope
from farmd.core.controls import Plan, control_plan, kill_plan, removal
from farmd.core.dependencies import Dependencies
from farmd.core.dispatch import Dispatcher
from farmd.core.drafting import MAX_COMMAND_BYTES, _check_options
from farmd.core.history import History
from farmd.core.identities import Identities
from farmd.core.queries import Queries
from farmd.core.restore import frame_row, job_row, read_snapshot
from farmd.core.rollout import Rollout
from farmd.core.stuck import HOLDING
from farmd.core.submission import Submissions
from farmd.core.vocabulary import (
    ACTION_OF,
    AddRelease,
    AddUser,
    AddWorkerToken,
    Command,
    ControlFrames,
    DeployRelease,
    Event,
    FrameEnded,
    JobEnded,
    JobHeld,
    KillJobs,
    KillOnWorker,
    LockWorker,
    ModifyJob,
    ModifyUser,
    Note,
    Outcome,
    PreemptPolicy,
    PruneJobs,
    RecallJobs,
    ReclaimOrphans,
    RemoveJobs,
    RemoveRelease,
    Restore,
    ResumeOnWorker,
    RevokeUser,
    RevokeWorkerToken,
    RollbackRelease,
    SetResourceTotal,
    SubmitJob,
    SubmitJobs,
    SuspendOnWorker,
    Tick,
    UndeployRelease,
    UnlockWorker,
    WakeAt,
    WorkerJoined,
    WorkerLoad,
    WorkerLost,
    WorkerReconfigured,
    WorkerReleases,
)
from farmd.core.workforce import Workforce
from farmd.errors import ForbiddenError, InternalError, JobSpecError
from farmd.frames import Frame, FrameState
from farmd.jobs import DONE, Control, FrameEvent, Job, JobState
from farmd.ranking import DEFAULT_PRIORITY, QueuedJob
from farmd.resources import Pool, check_name, is_global
from farmd.rows import Changes, FrameRow, JobRow, Snapshot
from farmd.workers import Worker

# --------------------------------------------------------------------------- scheduler


class Scheduler(Queries):
    """The farm's state and the rules that change it (see module docs)."""

    def __init__(
        self,
        *,
        default_priority: int = DEFAULT_PRIORITY,
        default_cluster: str = "/",
        max_command_bytes: int = MAX_COMMAND_BYTES,
        preempt_policy: PreemptPolicy | str = PreemptPolicy.PASSIVE,
        resources: dict[str, float] | None = None,
        history_after: float | None = None,
        notify_allow: tuple[str, ...] = (),
    ) -> None:
        QueuedJob(id=1, cluster=default_cluster, priority=default_priority)  # validates both
        cluster = parse_cluster(default_cluster)
        for name in resources or {}:
            if not is_global(check_name(name)):
                msg = f"bad global resource {name!r}: its name needs a dot (license.{name})"
                raise JobSpecError(msg)
        # frames completed, failed, retried since this process began (the dispatcher
        # counts those it started and preempted)
        self.counters: dict[str, int] = dict.fromkeys(("completed", "failed", "retried"), 0)
        self.jobs: dict[int, Job] = {}
        # the ids of `jobs` in order, so a listing's page after an id is found by
        # bisection, and every job's count by its synced state: what `jobs_page` shows
        # of the whole farm without walking it. Kept by `_insert`, `_sync`, `_remove`
        # and `_restore`, the only places a job comes, changes state or goes.
        self.job_ids: SortedList[int] = SortedList()
        self.job_states: Counter[JobState] = Counter()
        # jobs read back from history and unchanged since: still history's, so the
        # listings leave them to history's side (`views.jobs_page`)
        self.recalled: set[int] = set()
        self.workers: dict[str, Worker] = {}  # records kept by the workforce
        self.tree = ClusterTree()
        self._next_id = 1
        self._out: list[Command] = []
        self._changed_jobs: dict[int, None] = {}
        self._changed_frames: dict[tuple[int, int], None] = {}
        self._held: dict[tuple[int, int], float] = {}  # frames waiting out a retry delay
        self._removed: list[int] = []
        # the last rows of the jobs that moved to history in this event
        self._retired: tuple[list[JobRow], list[FrameRow]] = ([], [])
        self._now = 0.0  # the time of the event being handled
        # jobs whose stored rows `Restore` could not use, with why (`read_snapshot`)
        self.quarantined: dict[int, str] = {}
        self.dispatch = Dispatcher(
            policy=PreemptPolicy(preempt_policy),
            pool=Pool(totals=dict(resources or {})),
            jobs=self.jobs,
            workers=self.workers,
            move=self._move,
            sync=self._sync,
            emit=self._emit,
            note=self._note,
        )
        self.dependencies = Dependencies(
            jobs=self.jobs,
            quarantined=self.quarantined,
            sync=self._sync,
            changed=self._job_changed,
            emit=self._emit,
        )
        self.submissions = Submissions(
            default_priority=default_priority,
            default_cluster=cluster,
            max_command_bytes=max_command_bytes,
            jobs=self.jobs,
            quarantined=self.quarantined,
            pool=self.dispatch.pool,
            next_id=lambda: self._next_id,
            insert=self._insert,
            note=self._note,
        )
        self.identities = Identities()
        self.rollout = Rollout(self.workers, self.jobs, self.dispatch.offer, self._note)
        self.submissions.resolve = self.rollout.resolve
        self.submissions.notify_allow = notify_allow
        self.history = History(
            after=history_after, jobs=self.jobs, dependents_of=self.dependencies.dependents_of
        )
        self.workforce = Workforce(
            jobs=self.jobs,
            workers=self.workers,
            tree=self.tree,
            dispatch=self.dispatch,
            move=self._move,
            sync=self._sync,
            set_stopped=self._set_stopped,
            note=self._note,
        )

    # ------------------------------------------------------------------ the door

    def handle(self, event: Event) -> Outcome:
        self._out = []
        if not isinstance(event, Event):
            msg = f"unknown event {event!r}"
            raise InternalError(msg)
        self._now = event.now
        action = ACTION_OF.get(type(event))
        if action is not None:  # refused before anything changes
            self.authorize(event.by, action)  # type: ignore[union-attr]
        match event:
            case SubmitJob():
                result: Any = self.submissions.submit(event)
            case SubmitJobs():
                result = self.submissions.submit_many(event)
            case KillJobs():
                result = self._kill(event)
            case ControlFrames():
                result = self._control(event)
            case RemoveJobs():
                result = self._remove(event)
            case ModifyJob():
                result = self._modify(event)
            case WorkerJoined():
                result = self.workforce.joined(event)
                self.rollout.tell(self.workers[event.name], self._out)
            case WorkerLost():
                result = self.workforce.lost(event)
            case WorkerLoad():
                self.workforce.load(event)
                result = None
            case FrameEnded():
                self._frame_ended(event)
                result = None
            case ReclaimOrphans():
                result = self.workforce.reclaim_orphans()
            case Tick():
                result = self._release_due(event.now)
                self._retire_due(event.now)
            case LockWorker():
                result = self.workforce.lock(event)
            case UnlockWorker():
                result = self.workforce.unlock(event)
            case SetResourceTotal():
                result = self._set_resource(event)
            case WorkerReconfigured():
                result = self.workforce.reconfigured(event)
                self.rollout.tell(self.workers[event.name], self._out)
            case Restore():
                self._restore(event)
                result = None
            case RecallJobs():
                result = self._recall(event)
            case PruneJobs():
                result = self._prune(event)
            case AddUser() | ModifyUser() | RevokeUser() | AddWorkerToken() | RevokeWorkerToken():
                result, (what, fields) = self.identities.handle(event)
                self._note("info", what, by=event.by.who, **fields)
            case (
                AddRelease()
                | DeployRelease()
                | UndeployRelease()
                | RollbackRelease()
                | RemoveRelease()
                | WorkerReleases()
            ):
                result = self.rollout.handle(event, self._out)
            case _:
                msg = f"unknown event {event!r}"
                raise InternalError(msg)
        self.dispatch.run(event.now)
        if isinstance(event, SetResourceTotal):  # the pool as the frames it let start left it
            result = self.resources_view()[result]
        commands, self._out = tuple(self._out), []
        return Outcome(result, commands, self._take_changes())

    # ------------------------------------------------------------------ job events

    def _insert(self, job: Job) -> None:
        job_id = job.id
        self._next_id = job_id + 1
        self.jobs[job_id] = job
        self.job_ids.add(job_id)
        self.job_states[job.synced] += 1
        self.dependencies.link(job, None)
        self.dispatch.options_changed(job)
        # its job row carries its frames (`frame_range`): a frame gets a row of its
        # own once it changes, so a large job costs one row, not one per frame
        self._changed_jobs[job_id] = None
        self.tree.add(job.cluster, Member.JOB)
        if job.parent is not None:
            parent = self.jobs[job.parent]
            parent.children[job_id] = None
            parent.open_children.add(job_id)
            self._sync(parent)
        self._sync(job)
        sub_job = {"parent": job.parent} if job.parent is not None else {}
        self._note(
            "info",
            "job submitted",
            job=job_id,
            cluster=job.cluster,
            priority=job.priority,
            **sub_job,
        )

    def _kill(self, event: KillJobs) -> list[int]:
        """Whole jobs and their sub-jobs; a job that has ended already is left alone."""
        named = [self.job(job_id) for job_id in dict.fromkeys(event.job_ids)]  # all or none
        self._carry_out(Control.KILL, kill_plan(self.jobs, named, event.by), event.now)
        return [job.id for job in named]

    def _control(self, event: ControlFrames) -> list[str]:
        plan = control_plan(self.jobs, event, self.job)  # decided before anything changes
        self._carry_out(event.control, plan, event.now)
        labels = [f"{job_id}:{number}" for job_id, number in plan]
        self._note("info", f"frames {DONE[event.control]}", frames=labels)
        return labels

    def _carry_out(
        self,
        control: Control,
        plan: Plan,
        now: float,
    ) -> None:
        """Move each frame of `plan` to its target: a frame whose process is alive is
        stopped, SIGSTOPped (suspend) or SIGCONTed (resume) on its worker."""
        for job, frame, _ in plan.values():
            event = FrameEvent.of(control)
            if frame.holds_process:
                assert frame.worker is not None
                command: type[SuspendOnWorker | ResumeOnWorker | KillOnWorker] = KillOnWorker
                if control is Control.SUSPEND:
                    command = SuspendOnWorker
                    self._set_stopped(job, frame, True)
                elif control is Control.RESUME:
                    command, event = ResumeOnWorker, FrameEvent.CONTINUE
                    self._set_stopped(job, frame, False)
                else:
                    frame.finished_at = now
                    self._set_stopped(job, frame, False)
                if command is KillOnWorker:
                    self.dispatch.stop(frame.worker, job.id, frame.number, frame.attempts)
                else:
                    self._out.append(
                        command(
                            worker=frame.worker,
                            job_id=job.id,
                            frame=frame.number,
                            attempt=frame.attempts,
                        )
                    )
            target = self._move(job, frame, event)
            if frame.retry_at is not None:  # a held retry is dropped by any control
                frame.retry_at = None
                self._held.pop((job.id, frame.number), None)
                if target is FrameState.PENDING:
                    job.release(frame)
            if control is Control.RETRY:
                frame.failures, frame.exit_code, frame.failed_on = 0, None, None
        for job_id in dict.fromkeys(job_id for job_id, _ in plan):
            self._sync(self.jobs[job_id])

    def _remove(self, event: RemoveJobs) -> list[int]:
        jobs = removal(self.jobs, event, self.job, self.dependencies.dependents_of)
        ids = [job.id for job in jobs]
        self._removed.extend(ids)
        self._forget(jobs)
        self.history.released(jobs, event.now)
        self._note("info", "jobs removed", jobs=ids)
        return ids

    def _modify(self, event: ModifyJob) -> dict[str, Any]:
        job = self.job(event.job_id)
        cluster = job.cluster if event.cluster is None else parse_cluster(event.cluster)
        check_jobs(event.by, Action.MODIFY, [job], "modify")
        check_scope(event.by, Action.MODIFY, [cluster])  # to
        if cluster != job.cluster:
            self.authorize(event.by, Action.MOVE)
        restrictions = (
            job.restrictions
            if event.restrictions is None
            else parse_restrictions(event.restrictions)
        )
        patterns = (
            job.cross_cluster
            if event.cross_cluster is None
            else parse_patterns(event.cross_cluster)
        )
        priority = job.priority if event.priority is None else event.priority
        QueuedJob(id=job.id, cluster=cluster, priority=priority)  # validates the priority
        if event.priority is not None and event.priority < event.by.highest_priority:
            msg = (
                f"priority {event.priority} is more urgent than {event.by.who} may set "
                f"(the highest is {event.by.highest_priority}; 1 is the most urgent)"
            )
            raise ForbiddenError(msg)
        options = (
            job.instances if event.instances is None else event.instances,
            job.retries if event.retries is None else event.retries,
            job.retry_delay if event.retry_delay is None else event.retry_delay,
            job.time_limit if event.time_limit is None else event.time_limit,
        )
        _check_options(*options)
        if job.state.ended:
            msg = f"job {job.id} has ended ({job.state.value}): there is nothing to modify"
            raise JobSpecError(msg)
        if cluster != job.cluster:
            self.tree.remove(job.cluster, Member.JOB)
            self.tree.add(cluster, Member.JOB)
        job.cluster, job.priority = cluster, priority
        job.restrictions, job.cross_cluster = restrictions, patterns
        job.instances, job.retries = options[0], options[1]
        job.retry_delay, job.time_limit = float(options[2]), float(options[3])
        self.dispatch.options_changed(job)
        self._changed_jobs[job.id] = None
        self.dispatch.rerank(job)
        self._sync(job)
        self._note("info", "job modified", job=job.id, cluster=cluster, priority=priority)
        return job.summary()

    def _set_resource(self, event: SetResourceTotal) -> str:
        """Set a global resource's total; its name, whose figures `handle` answers with
        once dispatch has run."""
        name = check_name(event.name)
        if name not in self.dispatch.pool.totals:
            known = ", ".join(sorted(self.dispatch.pool.totals)) or "none"
            msg = f"no global resource {name!r} (the farm has: {known}); declare it in the config"
            raise JobSpecError(msg)
        total = event.total
        if isinstance(total, bool) or not isinstance(total, int | float) or not 0 <= total < 2**62:
            msg = f"bad total {total!r} for {name}: must be a number, 0 or more"
            raise JobSpecError(msg)
        self.dispatch.set_total(name, total)
        self._note("info", "resource total changed", resource=name, total=total)
        return name

    def _stale_result(self, event: FrameEnded) -> None:
        """A result that fencing refuses: logged, never applied."""
        self._note(
            "warning",
            "stale result ignored",
            worker=event.worker,
            job=event.job_id,
            frame=event.frame,
            attempt=event.attempt,
        )

    def _frame_ended(self, event: FrameEnded) -> None:
        worker = self.workers.get(event.worker)
        key = (event.job_id, event.frame, event.attempt)
        if worker is None or key not in worker.running:
            self._stale_result(event)
            return
        self.dispatch.release(worker.release(key))
        self.dispatch.stop_ended(key)
        self.dispatch.offer(worker.name)
        job = self.jobs.get(event.job_id)
        frame = job.frames.get(event.frame) if job is not None else None
        if (
            job is None
            or frame is None
            or frame.attempts != event.attempt
            or frame.worker != worker.name
        ):
            self._stale_result(event)
            return
        if not frame.holds_process:
            return  # killed or preempted while running: the slot is free, that is all
        self.dispatch.frame_ended(worker, job)  # a disabled policy keeps the slot for it
        suspended = frame.stopped  # ended while stopped: a retry stays held
        self._set_stopped(job, frame, False)
        frame.exit_code = event.exit_code
        frame.finished_at = event.now
        ok = event.exit_code == 0 and not event.error
        self._note(
            "info" if ok else "warning",
            "frame finished",
            job=job.id,
            frame=frame.number,
            attempt=event.attempt,
            worker=worker.name,
            exit_code=event.exit_code,
            error=event.error,
        )
        if ok:
            self.counters["completed"] += 1
            self._move(job, frame, FrameEvent.SUCCEED)
        else:
            self._frame_failed(job, frame, worker.name, event.now, suspended=suspended)
        self._sync(job)

    def _frame_failed(
        self, job: Job, frame: Frame, worker: str, now: float, *, suspended: bool
    ) -> None:
        """A frame's run failed: it runs again while it has retries left (after the
        job's retry delay, held meanwhile), else it fails. A frame that ended while
        suspended stays held when retried."""
        self.counters["failed"] += 1
        frame.failures += 1
        frame.failed_on = worker
        if frame.failures > job.retries:
            self._move(job, frame, FrameEvent.FAIL)
            return
        if job.retry_delay > 0 and not suspended:
            frame.retry_at = now + job.retry_delay
            self._held[(job.id, frame.number)] = frame.retry_at
            self._out.append(WakeAt(at=frame.retry_at))
        self.counters["retried"] += 1
        self._move(job, frame, FrameEvent.REQUEUE)  # a suspended one stays held
        self._note(
            "info",
            "frame retried",
            job=job.id,
            frame=frame.number,
            failures=frame.failures,
            retries=job.retries,
            at=frame.retry_at,
        )

    def _release_due(self, now: float) -> list[str]:
        """Frames whose retry delay is over may run again."""
        due = [key for key, at in self._held.items() if at <= now]
        for job_id, number in due:
            del self._held[(job_id, number)]
            job = self.jobs[job_id]
            job.release(job.frames[number])
            self._changed_frames[(job_id, number)] = None
            self._sync(job)
        if self._held:
            self._out.append(WakeAt(at=min(self._held.values())))
        return [f"{j}:{n}" for j, n in due]

    def next_wake(self) -> float | None:
        """When the next retry delay ends or family moves to history, if any."""
        wakes = [min(self._held.values(), default=None), self.history.next_wake()]
        return min((at for at in wakes if at is not None), default=None)

    # ------------------------------------------------------------------ history

    def _retire_due(self, now: float) -> None:
        """Move the families that are due to history (`farmd.core.history`): their last
        rows marked with when they moved and their summaries, then out of memory like
        a removal. A family that nothing changed since its recall writes no row."""
        for family in self.history.due(now):  # a move may make another due, now
            rows, frame_rows = self._retired
            for job in family:
                changed = [k for k in self._changed_frames if k[0] == job.id]
                if not job.recalled or changed or job.id in self._changed_jobs:
                    summary = json.dumps(job.summary(), separators=(",", ":"))
                    row = attrs.evolve(job_row(job), retired_at=now, summary=summary)
                    rows.append(row)
                    frame_rows.extend(frame_row(job, job.frames[n]) for _, n in changed)
            self._forget(family)
            self.history.released(family, now)
            self._note("debug", "jobs moved to history", jobs=[job.id for job in family])

    def _forget(self, jobs: list[Job]) -> None:
        """`jobs` leave memory (removed, or moved to history), and no row of theirs is
        written any more from it."""
        for job in jobs:
            del self.jobs[job.id]
            self.job_ids.remove(job.id)
            self.job_states[job.synced] -= 1
            self.dispatch.removed(job.id)
            self.dependencies.removed(job)
            self.history.forget(job.id)
            self.recalled.discard(job.id)
        self.submissions.forget(jobs)
        gone = {job.id for job in jobs}
        for job_id in gone:
            self._changed_jobs.pop(job_id, None)
        for frame_key in [k for k in self._changed_frames if k[0] in gone]:
            del self._changed_frames[frame_key]

    def _prune(self, event: PruneJobs) -> list[int]:
        """Remove jobs in history for good: those not in memory, and the families of
        those read back unchanged; the ids whose rows go."""
        gone: dict[int, Job] = {}
        kept: set[int] = set()
        for job_id in event.job_ids:
            job = self.jobs.get(job_id)
            root = self.history.root(job) if job is not None else None
            if job is None or job_id in gone or job_id in kept:
                continue
            family = list(self.history.family(root)) if root is not None else [job]
            target = gone if all(member.recalled for member in family) else None
            for member in family:
                if target is None:
                    kept.add(member.id)
                else:
                    target[member.id] = member
        self._forget(list(gone.values()))
        self.history.released(list(gone.values()), event.now)
        removed = [i for i in dict.fromkeys([*event.job_ids, *gone]) if i not in kept]
        self._removed.extend(removed)
        return removed

    def _recall(self, event: RecallJobs) -> list[int]:
        """Install the jobs of `event.snapshot` that are not in memory, as a restore
        does; they move back to history in `history_after` unless they change."""
        snapshot = event.snapshot
        rows = tuple(
            row
            for row in snapshot.jobs
            if row.id not in self.jobs and row.id not in self.quarantined
        )
        ids = {row.id for row in rows}
        frames = tuple(f for f in snapshot.frames if f.job_id in ids)
        restored, quarantined = read_snapshot(Snapshot(rows, frames))
        self.quarantined.update(quarantined)
        self._install(restored, rows)
        for job in restored.values():
            job.recalled = True
            self.recalled.add(job.id)
            if (at := self.history.schedule(job, event.now)) is not None:
                self._out.append(WakeAt(at=at))
        return sorted(restored)

    # ------------------------------------------------------------------ invariants

    def _sync(self, job: Job) -> None:
        """Restore the index invariant for `job` and act on its state changing since
        the last call: announce an end, tell dependents and the parent."""
        self.dispatch.track(job)
        before, after = job.synced, job.state
        if before is after:
            return
        job.synced = after
        in_farm = job.id in self.jobs
        if before.ended != after.ended:  # ended, or retried (and so going again)
            job.ended_at = self._now if after.ended else None
            if in_farm:
                self._changed_jobs[job.id] = None  # its row keeps the time
        if in_farm:
            self.job_states[before] -= 1
            self.job_states[after] += 1
        if after in HOLDING:
            self._out.append(JobHeld(job_id=job.id, state=after))
        if before.ended == after.ended:
            return
        if before.ended:  # retried: back in its cluster
            self.tree.add(job.cluster, Member.JOB)
        else:
            self.tree.remove(job.cluster, Member.JOB)
            self._out.append(JobEnded(job_id=job.id, state=after))
            self._note("info", "job ended", job=job.id, state=after.value)
            if job.parent is None and (at := self.history.schedule(job, self._now)) is not None:
                self._out.append(WakeAt(at=at))
        self.dependencies.job_changed(job, after)
        parent = self.jobs.get(job.parent) if job.parent is not None else None
        if parent is not None:
            if after.ended:
                parent.open_children.discard(job.id)
                if after is not JobState.COMPLETE:
                    parent.failed_children[job.id] = after
            else:
                parent.open_children.add(job.id)
                parent.failed_children.pop(job.id, None)
            self._sync(parent)

    def _set_stopped(self, job: Job, frame: Frame, stopped: bool) -> None:
        """A frame's process is SIGSTOPped (or no longer): it still counts towards the
        job's instances cap while stopped, so a resume never takes the job over it."""
        if frame.stopped is stopped:
            return
        job.stopped += 1 if stopped else -1
        frame.stopped = stopped
        self._changed_frames[(job.id, frame.number)] = None
        if not stopped:
            self.dispatch.cap_eased(job)

    def _move(self, job: Job, frame: Frame, event: FrameEvent) -> FrameState:
        """Every frame change goes through here, so the store hears of it."""
        was_running = frame.state is FrameState.RUNNING
        state = job.move(frame, event)  # InvalidTransition unless the table has the pair
        if state is FrameState.RUNNING and job.started_at is None:  # its first frame
            job.started_at = self._now
            self._job_changed(job.id)
        if was_running:
            self.dispatch.cap_eased(job)
        self._changed_frames[(job.id, frame.number)] = None
        if state is FrameState.COMPLETE:
            self.dependencies.frame_completed(job, frame)
        return state

    def _take_changes(self) -> Changes:
        locks = self.workforce.take_locks()
        retired, retired_frames = self._retired
        users, self.identities.changed = tuple(self.identities.changed), []
        tokens, self.identities.changed_tokens = tuple(self.identities.changed_tokens), []
        deployments = self.rollout.take_snapshot()
        changed = (
            deployments is not None
            or self._changed_jobs
            or self._changed_frames
            or self._removed
            or retired
            or users
            or tokens
        )
        if not (changed or locks is not None):
            return Changes()
        for job_id in self._changed_jobs:
            self.jobs[job_id].recalled = False  # changed: its rows are written again
            self.recalled.discard(job_id)
        for job_id, _ in self._changed_frames:
            self.jobs[job_id].recalled = False
            self.recalled.discard(job_id)
        jobs = (*(job_row(self.jobs[i]) for i in self._changed_jobs), *retired)
        frames = (
            *(frame_row(self.jobs[j], self.jobs[j].frames[n]) for j, n in self._changed_frames),
            *retired_frames,
        )
        removed, self._removed = tuple(self._removed), []
        self._changed_jobs, self._changed_frames = {}, {}
        self._retired = ([], [])
        return Changes(
            jobs,
            frames,
            self._next_id,
            removed,
            locks,
            users,
            worker_tokens=tokens,
            deployments=deployments,
        )

    # ------------------------------------------------------------------ restart

    def _restore(self, event: Restore) -> None:
        """Rebuild the farm from the store, before any worker has connected. Frames that
        were running (or stopped) stay so, as orphans, until their worker claims them or
        a `ReclaimOrphans` event (after the grace period) sends them back to pending.
        Jobs whose rows could not be used are quarantined (`read_snapshot`); a job with
        an unmet dependency on a quarantined job is blocked, the reason naming it."""
        if self.jobs or self.workers:
            msg = (
                f"restore needs an empty scheduler, and this one holds {len(self.jobs)} "
                f"jobs and {len(self.workers)} workers"
            )
            raise InternalError(msg)
        snapshot = event.snapshot
        restored, quarantined = read_snapshot(snapshot, event.prebuilt)
        self.quarantined.clear()  # the same dict: its readers hold it
        self.quarantined.update(quarantined)
        self._install(restored, snapshot.jobs)
        highest = max([*self.jobs, *self.quarantined], default=0)
        self._next_id = max(snapshot.next_job_id, highest + 1)  # no id is used twice
        self.workforce.restore(snapshot.locks)
        self.identities.restore(snapshot.users, snapshot.worker_tokens)
        self.rollout.restore(snapshot.deployments)
        for job in restored.values():  # ended before the restart: due to move
            if job.parent is None:
                self.history.schedule(job, event.now)

    def _install(self, restored: dict[int, Job], rows: tuple[JobRow, ...]) -> None:
        """Add jobs read from the store (`read_snapshot`) to the farm and its indexes."""
        for job_id, job in restored.items():
            self.jobs[job_id] = job
            for frame in job.frames.made.values():  # a fresh frame holds nothing
                if frame.retry_at is not None:
                    self._held[(job_id, frame.number)] = frame.retry_at
                if frame.holds_process:  # it may still run
                    self.workforce.orphan(job, frame)
            self.dispatch.options_changed(job)
        self.submissions.remember(restored.values())
        # whether a job has ended depends on its frames and sub-jobs only, so the
        # dependencies are linked once those are known
        for row in rows:  # as stored: a dependency met once stays met
            if row.id in restored:
                self.dependencies.link(restored[row.id], row.waiting_on)
        for job in restored.values():
            job.synced = job.state
            if not job.synced.ended:
                self.tree.add(job.cluster, Member.JOB)
            self.dispatch.track(job)
        self.job_ids.update(restored)
        self.job_states.update(job.synced for job in restored.values())

    def _emit(self, command: Command) -> None:
        self._out.append(command)

    def _job_changed(self, job_id: int) -> None:
        self._changed_jobs[job_id] = None

    def _note(self, level: str, event: str, **fields: Any) -> None:
        self._out.append(Note(level=level, event=event, fields=fields))

    # ------------------------------------------------------------------ authority

    def authorize(self, by: Principal, action: Action) -> None:
        """Refuse (ForbiddenError, naming the rule) unless `by` may take `action` now:
        the credential's rule (`authority.RULES`), and a job token works only while its
        job does. Events are checked by `handle`; the shell asks this for what is not an
        event (a query, a reload, a worker's registration)."""
        why = authority.refusal(by, action)
        if why is None and by.job is not None:
            why = self.job_token_refusal(by.job)
        if why is not None:
            raise ForbiddenError(why)
