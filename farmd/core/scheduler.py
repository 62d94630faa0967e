"""The supervisor's state machine: events in, commands out.

Theory of operation
-------------------
`Scheduler` holds the whole farm: jobs and their frames, connected workers, the derived
cluster tree, and (through the `Dispatcher` it owns) the ranking index of runnable jobs
and the pool of farm-wide resources. Its one door for change is `handle(event)`, which
returns an `Outcome`: the event's result (a new job id...) and the commands the shell
must carry out (start or stop a frame on a worker, tell waiters a job ended, log a
line). Time arrives inside events; the core reads no clock, opens no socket and logs
nothing itself. Queries (`jobs_view`, `order_view`...) only read.

Invariants, restored at the end of every `handle`:

- a job is in the ranking index exactly when `Job.runnable` (a ready frame, no unmet
  whole-job dependency); `_sync` is the only place that acts on a job's state changing
  (`Job.synced` is the state it last acted on): an end is announced once, dependents
  and the parent hear of it, a retried job returns to the cluster tree;
- every worker with a free slot has been offered the best job it admits, or is starved
  because it admits none (the dispatcher's rule);
- a frame's `attempts` is its fencing token: a result for any other attempt, or from a
  worker that no longer holds it, is ignored and logged, so a frame ends exactly once.

Dependencies: a whole-job dependency (`complete`, `done`, `failed`) keeps the dependent
out of the index until it holds, and once met stays met. One that can no longer hold
(the job ended otherwise) blocks the dependent with a reason, until the job is retried.
A frame-by-frame dependency gates single frames (`Frame.waits_on`): frame N is released
when frame N of the other job completes, which is final.

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

from collections.abc import Iterable
from typing import Any

from farmd.cluster import (
    ClusterPath,
    ClusterTree,
    Member,
    parse_cluster,
    parse_patterns,
    parse_restrictions,
)
from farmd.core import authority, views
from farmd.core.authority import Action, Principal
from farmd.core.dispatch import Dispatcher
from farmd.core.drafting import (
    MAX_COMMAND_BYTES,
    Draft,
    _check_options,
    _in_batch,
    draft_batch,
    draft_job,
    submission_digest,
)
from farmd.core.restore import frame_row, job_row, read_snapshot
from farmd.core.stuck import HOLDING, _StuckJobs
from farmd.core.vocabulary import (
    Command,
    ControlFrames,
    Event,
    FarmSize,
    FarmStatistics,
    FrameEnded,
    JobEnded,
    JobHeld,
    KillJobs,
    LockWorker,
    ModifyJob,
    Note,
    Outcome,
    PreemptPolicy,
    ReclaimOrphans,
    RemoveJobs,
    Restore,
    ResumeFrame,
    SetResource,
    StopFrame,
    SubmitJob,
    SubmitJobs,
    SuspendFrame,
    Tick,
    UnlockWorker,
    WakeAt,
    WorkerJoined,
    WorkerLost,
    WorkerReconfigured,
)
from farmd.errors import (
    ForbiddenError,
    InternalError,
    JobSpecError,
    UnknownJobError,
    UnknownWorkerError,
    UserError,
)
from farmd.frames import Frame, FrameState, FrameTable
from farmd.jobs import (
    CONTROLS,
    DONE,
    Control,
    Dependency,
    DependencyMode,
    FrameEvent,
    Job,
    JobState,
    parse_target,
    refusal,
)
from farmd.ranking import DEFAULT_PRIORITY, QueuedJob
from farmd.resources import ONE_SLOT_TAKEN, Pool, check_name, is_global
from farmd.rows import Changes
from farmd.worker_settings import check_worker
from farmd.workers import Worker

# Whole-job controls that reach the job's sub-jobs too: a killed job takes them along,
# and a retried one (failed, perhaps, because one of them did) retries them.
_CASCADING = frozenset({Control.KILL, Control.RETRY})

# What each event that an outside party causes asks to do, as the rules name it
# (`authority.RULES`). Events the shell makes itself (a worker joined or was lost, a
# result, a tick, a restore) come from sessions `authorize` admitted, or from no one.
_ACTION_OF: dict[type, Action] = {
    SubmitJob: Action.SUBMIT,
    SubmitJobs: Action.SUBMIT,
    KillJobs: Action.CONTROL,
    ControlFrames: Action.CONTROL,
    RemoveJobs: Action.REMOVE,
    ModifyJob: Action.MODIFY,
    LockWorker: Action.LOCK,
    UnlockWorker: Action.LOCK,
    SetResource: Action.SET_RESOURCE,
}


# --------------------------------------------------------------------------- scheduler


class Scheduler:
    """The farm's state and the rules that change it (see module docs)."""

    def __init__(
        self,
        *,
        default_priority: int = DEFAULT_PRIORITY,
        default_cluster: str = "/",
        max_command_bytes: int = MAX_COMMAND_BYTES,
        preempt_policy: PreemptPolicy | str = PreemptPolicy.PASSIVE,
        resources: dict[str, float] | None = None,
    ) -> None:
        QueuedJob(id=1, cluster=default_cluster, priority=default_priority)  # validates both
        self.default_priority = default_priority
        # A job's command and name travel in every run_frame: bounded so one always fits.
        self.max_command_bytes = max_command_bytes
        self.default_cluster = parse_cluster(default_cluster)
        for name in resources or {}:
            if not is_global(check_name(name)):
                msg = f"bad global resource {name!r}: its name needs a dot (license.{name})"
                raise JobSpecError(msg)
        self.locks: dict[str, str] = {}  # locked workers by name, connected or not
        self._locks_changed = False
        # frames completed, failed, retried since this process began (the dispatcher
        # counts those it started and preempted)
        self.counters: dict[str, int] = dict.fromkeys(("completed", "failed", "retried"), 0)
        self.jobs: dict[int, Job] = {}
        self.workers: dict[str, Worker] = {}
        self.tree = ClusterTree()
        self._next_id = 1
        self._joins = 0
        self._dependents: dict[int, set[int]] = {}
        self._out: list[Command] = []
        self._changed_jobs: dict[int, None] = {}
        self._changed_frames: dict[tuple[int, int], None] = {}
        # (job, frame, attempt) found running after a restart, waiting for their worker
        self._orphans: dict[tuple[int, int, int], None] = {}
        self._held: dict[tuple[int, int], float] = {}  # frames waiting out a retry delay
        self._removed: list[int] = []
        # frame-by-frame dependencies: job -> its frame -> the (job, frame) that wait for it
        self._gates: dict[int, dict[int, list[tuple[int, int]]]] = {}
        # jobs whose stored rows `Restore` could not use, with why (`read_snapshot`)
        self.quarantined: dict[int, str] = {}
        # idempotency keys of submissions: the jobs each made, and a digest of what it was
        self._keys: dict[str, tuple[tuple[int, ...], str]] = {}
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

    # ------------------------------------------------------------------ the door

    def handle(self, event: Event) -> Outcome:
        self._out = []
        action = _ACTION_OF.get(type(event))
        if action is not None:  # refused before anything changes
            self.authorize(event.by, action)  # type: ignore[union-attr]
        match event:
            case SubmitJob():
                result: Any = self._submit(event)
            case SubmitJobs():
                result = self._submit_many(event)
            case KillJobs():
                result = self._kill(event)
            case ControlFrames():
                result = self._control(event)
            case RemoveJobs():
                result = self._remove(event)
            case ModifyJob():
                result = self._modify(event)
            case WorkerJoined():
                result = self._worker_joined(event)
            case WorkerLost():
                result = self._worker_lost(event)
            case FrameEnded():
                self._frame_ended(event)
                result = None
            case ReclaimOrphans():
                result = self._reclaim_orphans()
            case Tick():
                result = self._release_due(event.now)
            case LockWorker():
                result = self._lock(event)
            case UnlockWorker():
                result = self._unlock(event)
            case SetResource():
                result = self._set_resource(event)
            case WorkerReconfigured():
                result = self._worker_reconfigured(event)
            case Restore():
                self._restore(event)
                result = None
            case _:
                msg = f"unknown event {event!r}"
                raise InternalError(msg)
        self.dispatch.run(event.now)
        if isinstance(event, SetResource):  # the pool as the frames it let start left it
            result = self.resources_view()[result]
        commands, self._out = tuple(self._out), []
        return Outcome(result, commands, self._take_changes())

    # ------------------------------------------------------------------ job events

    def _submit(self, event: SubmitJob) -> int:
        digest = ""
        if event.key is not None:
            digest = event.digest or submission_digest(event)
        if event.key is not None and event.key in self._keys:
            return self._repeated(event.key, digest)[0]
        draft = event.prepared if event.prepared is not None else self.draft(event)
        job = self._prepare(event, draft, self._next_id, {}, event.by)
        job.request_key, job.request_digest = event.key, digest
        self._insert(job)
        if event.key is not None:
            self._keys[event.key] = ((job.id,), digest)
        return job.id

    def _submit_many(self, event: SubmitJobs) -> list[int]:
        """All the jobs, or (if any is refused) none of them."""
        digest = ""
        if event.key is not None:
            digest = event.digest or submission_digest(event)
        if event.key is not None and event.key in self._keys:
            return list(self._repeated(event.key, digest))
        drafts = event.prepared if event.prepared is not None else self.draft_batch(event.jobs)
        jobs: dict[int, Job] = {}
        for number, (spec, draft) in enumerate(zip(event.jobs, drafts, strict=True)):
            try:
                job = self._prepare(spec, draft, self._next_id + number, jobs, event.by)
                jobs[job.id] = job
            except UserError as exc:
                raise _in_batch(exc, number) from None
        for job in jobs.values():
            job.request_key, job.request_digest = event.key, digest
            self._insert(job)
        if event.key is not None:
            self._keys[event.key] = (tuple(jobs), digest)
        return list(jobs)

    def knows_key(self, key: str | None) -> bool:
        """A submission under `key` would repeat an earlier one (and build nothing)."""
        return key is not None and key in self._keys

    def _repeated(self, key: str, digest: str) -> tuple[int, ...]:
        """The jobs an earlier submission under `key` made, if it submitted the same."""
        ids, known = self._keys[key]
        if known != digest:
            msg = (
                f"request key {key!r} was already used for a different submission (job "
                f"{ids[0]}): nothing was submitted; use a new key for a new submission"
            )
            raise JobSpecError(msg)
        self._note("info", "submission repeated", key=key, jobs=list(ids))
        return ids

    def draft(self, event: SubmitJob) -> Draft:
        """`draft_job` with this scheduler's limits: pure, so the shell may run it in a
        thread for a large job and hand the result back in `SubmitJob.prepared`."""
        return draft_job(event, self.max_command_bytes)

    def draft_batch(self, jobs: tuple[SubmitJob, ...]) -> tuple[Draft, ...]:
        """`draft` of each job of a batch (pure as `draft`), refused whole."""
        return draft_batch(jobs, self.max_command_bytes)

    def _prepare(
        self,
        event: SubmitJob,
        draft: Draft,
        job_id: int,
        known: dict[int, Job],
        by: Principal,
    ) -> Job:
        """Check a drafted submission against the farm (parent, dependencies, who asks)
        into a new job, changing nothing. `known`: the jobs submitted before it in the
        same request, which it may depend on or be under. Takes no time per frame."""
        parent = None
        parent_id = self._parent_for(event.parent, known, by)
        if parent_id is not None:
            parent = self.jobs.get(parent_id) or known.get(parent_id)
            if parent is None:
                msg = f"bad parent: {_missing(parent_id, self.quarantined)}"
                raise UnknownJobError(msg)
            if parent.state.ended:
                state = parent.state.value
                msg = f"bad parent: job {parent.id} has ended ({state}): it takes no sub-jobs"
                raise JobSpecError(msg)
        if draft.cluster is not None:
            cluster = draft.cluster
        else:  # a sub-job runs where its parent does, unless it says otherwise
            cluster = parent.cluster if parent is not None else self.default_cluster
        self._check_scope(by, Action.SUBMIT, [cluster])
        if event.priority is not None:
            priority = event.priority
            if not by.is_admin and priority < by.highest_priority:  # 0 is refused below
                msg = (
                    f"priority {priority} is more urgent than {by.who} may set "
                    f"(the highest is {by.highest_priority}; 1 is the most urgent)"
                )
                raise ForbiddenError(msg)
        elif parent is not None:  # inherited, but never past what the submitter may set
            priority = max(parent.priority, by.highest_priority)
        else:
            priority = self.default_priority
        whole_job: set[int] = set()
        for dep in draft.depends_on:
            if dep.job_id not in self.jobs and dep.job_id not in known:
                msg = f"bad dependency: {_missing(dep.job_id, self.quarantined)}"
                raise UnknownJobError(msg)
            if dep.mode is not DependencyMode.FRAMES:
                if dep.job_id in whole_job:
                    msg = f"bad dependency: job {dep.job_id} is named twice with different modes"
                    raise JobSpecError(msg)
                whole_job.add(dep.job_id)
        QueuedJob(id=job_id, cluster=cluster, priority=priority)  # validates the priority
        for name, _ in draft.reserve.global_amounts:
            if name not in self.dispatch.pool.totals:
                declared = ", ".join(sorted(self.dispatch.pool.totals)) or "none"
                msg = f"bad reservation: no global resource {name!r} (the farm has: {declared})"
                raise JobSpecError(msg)
        return Job(
            id=job_id,
            name=event.name or f"job{job_id}",
            cluster=cluster,
            priority=priority,
            restrictions=draft.restrictions,
            patterns=draft.patterns,
            argv=draft.argv,
            frames=FrameTable(draft.numbers, event.chunk),
            depends_on=draft.depends_on,
            submitted_at=event.now,
            instances=event.instances,
            retries=event.retries,
            retry_delay=float(event.retry_delay),
            time_limit=float(event.time_limit),
            chunk=event.chunk,
            parent=parent.id if parent is not None else None,
            uninterruptible=bool(event.uninterruptible),
            type=draft.job_type,
            requires=draft.requires,
            reserve=draft.reserve,
            frame_range=draft.frame_range,
        )

    def _parent_for(self, parent: int | None, known: dict[int, Job], by: Principal) -> int | None:
        """The parent a submission gets: an admin's as given; a user token adds no
        sub-jobs; a job token's jobs go under its job, or under a job below it."""
        if by.is_admin:
            return parent
        if by.job is None:
            if parent is not None:
                msg = (
                    f"a user token may not add sub-jobs (parent {parent}): only an admin "
                    f"or a frame of job {parent} may"
                )
                raise ForbiddenError(msg)
            return None
        if parent is None:
            return by.job
        job_id: int | None = parent
        for _ in range(len(self.jobs) + len(known) + 1):  # up from `parent` to the token's
            if job_id == by.job:
                return parent
            job = (self.jobs.get(job_id) or known.get(job_id)) if job_id is not None else None
            if job is None:
                break
            job_id = job.parent
        msg = (
            f"bad parent {parent}: a frame of job {by.job} may only add sub-jobs under job {by.job}"
        )
        raise ForbiddenError(msg)

    def _insert(self, job: Job) -> None:
        job_id = job.id
        self._next_id = job_id + 1
        self.jobs[job_id] = job
        self._link_dependencies(job, None)
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

    def _link_dependencies(self, job: Job, waiting_on: tuple[int, ...] | None) -> None:
        """Wire `job` to the jobs it depends on: `waiting_on` as stored, or (None) as
        their states say now; frame gates always from their frames' states."""
        gated = False
        for dep in job.depends_on:
            self._dependents.setdefault(dep.job_id, set()).add(job.id)
            target = self.jobs.get(dep.job_id)
            if target is None and dep.job_id in self.quarantined:
                recompute = waiting_on is None
                gated = self._hold_for_quarantined(job, dep, recompute=recompute) or gated
                continue
            if target is None:  # removed once this job had ended: long met
                continue
            if dep.mode is DependencyMode.FRAMES:
                # Known debt: this walks the job's frames on the loop (about a second
                # for a million); a frame-by-frame dependency could be gated lazily.
                gated = self._gate(job, target) or gated
            elif waiting_on is None and not dep.holds(target.state):
                job.waiting_on.add(dep.job_id)
        if waiting_on is not None:
            job.waiting_on = set(waiting_on) & {d.job_id for d in job.depends_on}
        if gated:
            job.reindex()
        self._refresh_block(job)

    def _hold_for_quarantined(self, job: Job, dep: Dependency, *, recompute: bool) -> bool:
        """`job` depends on a quarantined job, whose state is unknown: it is not met.
        A whole-job dependency stays unmet (as stored, or added when recomputed); a
        frame-by-frame one gates every frame, with nothing to release the gate. Either
        way `_refresh_block` names the quarantined job as the blocker. Whether any
        frame waits (as `_gate`)."""
        if dep.mode is not DependencyMode.FRAMES:
            if recompute:
                job.waiting_on.add(dep.job_id)
            return False
        for frame in job.frames.values():
            if frame.waits_on is None:
                frame.waits_on = {}
            frame.waits_on[dep.job_id] = frame.waits_on.get(dep.job_id, 0) + 1
        return True

    def _gate(self, job: Job, target: Job) -> bool:
        """Frame N of `job` waits for the frame (or chunk) of `target` that runs frame N,
        unless that one has completed or there is none. Whether any frame waits."""
        gated = False
        gates = self._gates.setdefault(target.id, {})
        for frame in job.frames.values():
            keys = dict.fromkeys(target.frames.unit_key(m) for m in frame.numbers)
            for key in keys:
                other = target.frames.peek(key) if key is not None else None
                if key is None or other is None or other.state is FrameState.COMPLETE:
                    continue
                if frame.waits_on is None:
                    frame.waits_on = {}
                frame.waits_on[target.id] = frame.waits_on.get(target.id, 0) + 1
                gates.setdefault(key, []).append((job.id, frame.number))
                gated = True
        return gated

    def _ungate(self, job: Job, frame: Frame) -> None:
        """`frame` of `job` completed: frames waiting for it may be ready."""
        waiting = self._gates.get(job.id, {}).pop(frame.number, ())
        for dependent_id, number in waiting:
            dependent = self.jobs.get(dependent_id)
            if dependent is not None:
                dependent.ungate(dependent.frames[number], job.id)
                self._sync(dependent)
                if dependent.synced is JobState.WAITING and not dependent.gates.get(job.id):
                    # still waiting, no longer for this job: if the jobs left cannot run
                    # without an admin, it has just become stuck without changing state
                    self._out.append(JobHeld(job_id=dependent.id, state=JobState.WAITING))

    def _refresh_block(self, job: Job) -> None:
        """Keep `Job.broken` true: the dependencies that ended so that they can no
        longer hold (the job's state decides whether they still block it)."""
        job.broken = {}
        for dep in job.depends_on:
            target = self.jobs.get(dep.job_id)
            if target is None and dep.job_id in self.quarantined:
                why = f"job {dep.job_id} is quarantined: its stored rows could not be restored"
                job.broken.setdefault(dep.job_id, f"{why} ({self.quarantined[dep.job_id]})")
            elif target is not None and dep.broken(target.state):
                job.broken.setdefault(dep.job_id, dep.why_broken(target.state))

    def _kill(self, event: KillJobs) -> list[int]:
        """Whole jobs and their sub-jobs; a job that has ended already is left alone."""
        jobs = [self.job(job_id) for job_id in dict.fromkeys(event.job_ids)]  # all or none
        self._check_scope(event.by, Action.CONTROL, [j.cluster for j in self._with_subjobs(jobs)])
        plan = {
            (job.id, frame.number): (job, frame, CONTROLS[(frame.state, Control.KILL)])
            for job in self._with_subjobs(jobs)
            for frame in job.frames.values()
            if (frame.state, Control.KILL) in CONTROLS
        }
        self._carry_out(Control.KILL, plan, event.now)
        return [job.id for job in jobs]

    def _with_subjobs(self, jobs: list[Job]) -> list[Job]:
        """`jobs` and, after them, every sub-job under them (depth first), once each."""
        seen: dict[int, Job] = {}
        stack = list(reversed(jobs))
        while stack:
            job = stack.pop()
            if job.id not in seen:
                seen[job.id] = job
                stack.extend(self.jobs[c] for c in reversed(job.children) if c in self.jobs)
        return list(seen.values())

    def _control(self, event: ControlFrames) -> list[str]:
        control = event.control
        plan: dict[tuple[int, int], tuple[Job, Frame, FrameState]] = {}
        for text in event.targets:  # decide everything before changing anything
            job_id, numbers = parse_target(text)
            job = self.job(job_id)
            subtree = self._with_subjobs([job]) if control in _CASCADING else [job]
            self._check_scope(event.by, Action.CONTROL, [j.cluster for j in subtree])
            if numbers is None:
                chosen = [
                    (frame, CONTROLS[(frame.state, control)])
                    for frame in job.frames.values()
                    if (frame.state, control) in CONTROLS
                ]
                if control in _CASCADING:  # to its sub-jobs too
                    chosen_sub = [
                        (sub, sub_frame, CONTROLS[(sub_frame.state, control)])
                        for sub in self._with_subjobs([job])[1:]
                        for sub_frame in sub.frames.values()
                        if (sub_frame.state, control) in CONTROLS
                    ]
                    for entry in chosen_sub:
                        plan[(entry[0].id, entry[1].number)] = entry
                    if chosen_sub and not chosen:
                        continue
                if not chosen:
                    done = DONE[control]
                    msg = f"job {job_id} is {job.state.value}: no frame of it can be {done}"
                    raise JobSpecError(msg)
            else:
                chosen = []
                for number in numbers:
                    frame = job.unit(number)
                    if frame is None:
                        msg = f"job {job_id} has no frame {number}"
                        raise JobSpecError(msg)
                    target = CONTROLS.get((frame.state, control))
                    if target is None:
                        raise JobSpecError(refusal(f"{job_id}:{number}", frame.state, control))
                    chosen.append((frame, target))
            for frame, target in chosen:
                plan[(job.id, frame.number)] = (job, frame, target)
        self._carry_out(control, plan, event.now)
        labels = [f"{job_id}:{number}" for job_id, number in plan]
        self._note("info", f"frames {DONE[control]}", frames=labels)
        return labels

    def _carry_out(
        self,
        control: Control,
        plan: dict[tuple[int, int], tuple[Job, Frame, FrameState]],
        now: float,
    ) -> None:
        """Move each frame of `plan` to its target: a frame whose process is alive is
        stopped, SIGSTOPped (suspend) or SIGCONTed (resume) on its worker."""
        for job, frame, _ in plan.values():
            event = FrameEvent.of(control)
            if frame.holds_process:
                assert frame.worker is not None
                command: type[SuspendFrame | ResumeFrame | StopFrame] = StopFrame
                if control is Control.SUSPEND:
                    command = SuspendFrame
                    self._set_stopped(job, frame, True)
                elif control is Control.RESUME:
                    command, event = ResumeFrame, FrameEvent.CONTINUE
                    self._set_stopped(job, frame, False)
                else:
                    frame.finished_at = now
                    self._set_stopped(job, frame, False)
                if command is StopFrame:
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
        named = [self.job(job_id) for job_id in dict.fromkeys(event.job_ids)]
        jobs = self._with_subjobs(named)
        self._check_scope(event.by, Action.REMOVE, [job.cluster for job in jobs])
        ids = [job.id for job in jobs]
        for job in jobs:
            if not job.state.ended:
                msg = f"job {job.id} is {job.state.value}: kill it before removing it"
                raise JobSpecError(msg)
            if job.parent is not None and job.parent in self.jobs and job.parent not in ids:
                msg = (
                    f"job {job.id} is a sub-job of job {job.parent}: remove job "
                    f"{job.parent} (its sub-jobs go with it)"
                )
                raise JobSpecError(msg)
            for dependent in sorted(self._dependents.get(job.id, ())):
                if dependent not in ids and not self.jobs[dependent].state.ended:
                    msg = (
                        f"job {job.id} is a dependency of job {dependent}, which has not "
                        "ended: remove or kill that one first"
                    )
                    raise JobSpecError(msg)
        for job in jobs:
            del self.jobs[job.id]
            self.dispatch.removed(job.id)
            self._forget_dependency(job.id)
            for dep in job.depends_on:
                self._dependents.get(dep.job_id, set()).discard(job.id)
            self._changed_jobs.pop(job.id, None)
            for frame_key in [k for k in self._changed_frames if k[0] == job.id]:
                del self._changed_frames[frame_key]
            self._removed.append(job.id)
        for key in dict.fromkeys(job.request_key for job in jobs if job.request_key):
            # a key is forgotten with the last of its jobs (their rows carried it)
            if not any(i in self.jobs for i in self._keys[key][0]):
                del self._keys[key]
        self._note("info", "jobs removed", jobs=ids)
        return ids

    def _forget_dependency(self, job_id: int) -> None:
        """Job `job_id` is removed: whatever still waits for it (an ended dependent an
        admin may retry later) waits no more."""
        for waiting in self._gates.pop(job_id, {}).values():
            for dependent_id, number in waiting:
                dependent = self.jobs.get(dependent_id)
                if dependent is not None:
                    dependent.ungate(dependent.frames[number], job_id)
        for dependent_id in self._dependents.pop(job_id, ()):
            dependent = self.jobs.get(dependent_id)
            if dependent is not None:
                if job_id in dependent.waiting_on:
                    dependent.waiting_on.discard(job_id)
                    self._changed_jobs[dependent_id] = None
                self._refresh_block(dependent)

    def _modify(self, event: ModifyJob) -> dict[str, Any]:
        job = self.job(event.job_id)
        cluster = job.cluster if event.cluster is None else parse_cluster(event.cluster)
        self._check_scope(event.by, Action.MODIFY, [job.cluster, cluster])  # from, to
        restrictions = (
            job.restrictions
            if event.restrictions is None
            else parse_restrictions(event.restrictions)
        )
        patterns = (
            job.patterns if event.cross_cluster is None else parse_patterns(event.cross_cluster)
        )
        priority = job.priority if event.priority is None else event.priority
        QueuedJob(id=job.id, cluster=cluster, priority=priority)  # validates the priority
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
        job.restrictions, job.patterns = restrictions, patterns
        job.instances, job.retries = options[0], options[1]
        job.retry_delay, job.time_limit = float(options[2]), float(options[3])
        self.dispatch.options_changed(job)
        self._changed_jobs[job.id] = None
        self.dispatch.rerank(job)
        self._sync(job)
        self._note("info", "job modified", job=job.id, cluster=cluster, priority=priority)
        return job.summary()

    # ------------------------------------------------------------------ worker events

    def _worker_joined(self, event: WorkerJoined) -> dict[str, Any]:
        worker = self._make_worker(event, self._joins)  # refused before anything changes
        if event.name in self.workers:
            self._worker_lost(WorkerLost(name=event.name, now=event.now, reason="replaced"))
        self._joins += 1
        self.workers[worker.name] = worker
        self.tree.add(worker.cluster, Member.WORKER)
        for job_id, number, attempt in event.running:
            self._reconcile(worker, job_id, number, attempt, event.now)
        # frames it ran before a supervisor restart and no longer runs: back to pending
        unclaimed = [key for key in self._orphans if self._orphan_worker(key) == worker.name]
        self._requeue_orphans(unclaimed)
        self._note("info", "worker joined", worker=worker.name, cluster=worker.cluster)
        if worker.free > 0:
            self.dispatch.offer(worker.name)
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

    def _worker_reconfigured(self, event: WorkerReconfigured) -> dict[str, Any]:
        """The worker's record is rebuilt (its cached view and facts with it); what it
        runs and holds carries over, and it is offered work as it now stands."""
        old = self.worker(event.name)
        worker = self._make_worker(event, old.seq)
        worker.connected_at = old.connected_at
        worker.running, worker.used, worker.sticky = old.running, old.used, old.sticky
        self.workers[worker.name] = worker
        if worker.cluster != old.cluster:
            self.tree.remove(old.cluster, Member.WORKER)
            self.tree.add(worker.cluster, Member.WORKER)
        self.dispatch.offer(worker.name)
        self._note(
            "info",
            "worker reconfigured",
            worker=worker.name,
            cluster=worker.cluster,
            was=old.cluster,
            slots=worker.slots,
        )
        return worker.summary()

    def _reconcile(
        self, worker: Worker, job_id: int, number: int, attempt: int, now: float
    ) -> None:
        """A returning worker still runs this attempt: keep it if it is still the frame's
        latest attempt and no one else took the frame; otherwise stop it."""
        job = self.jobs.get(job_id)
        frame = job.frames.get(number) if job is not None else None
        if job is not None and frame is not None and frame.attempts == attempt:
            taken = frame.taken or ONE_SLOT_TAKEN
            if self.dispatch.stopping((job_id, number, attempt)):
                pass  # told to stop before the worker went away: stop it again, below
            elif frame.holds_process and frame.worker == worker.name:
                worker.hold((job_id, number, attempt), taken)  # the farm's part is held
                self._orphans.pop((job_id, number, attempt), None)
                return
            # readopted only within the job's cap, the worker's room and the farm's
            # counters; else stopped
            elif self.dispatch.readopt(worker, job, frame, now):
                return
        worker.hold((job_id, number, attempt), ONE_SLOT_TAKEN)  # holds a slot until it stops
        self.dispatch.stop(worker.name, job_id, number, attempt)
        self._note(
            "warning",
            "stale frame stopped",
            job=job_id,
            frame=number,
            attempt=attempt,
            worker=worker.name,
        )

    def _worker_lost(self, event: WorkerLost) -> list[str]:
        worker = self.workers.pop(event.name, None)
        if worker is None:
            msg = f"worker {event.name!r} is not connected"
            raise UnknownWorkerError(msg)
        self.tree.remove(worker.cluster, Member.WORKER)
        self.dispatch.withdraw(worker.name)
        requeued = []
        for key, taken in worker.running.items():
            self.dispatch.release(taken)
            job_id, number, attempt = key
            job = self.jobs.get(job_id)
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

    def _orphan_worker(self, key: tuple[int, int, int]) -> str | None:
        frame = self.jobs[key[0]].frames[key[1]]
        return frame.worker

    def _reclaim_orphans(self) -> list[str]:
        return self._requeue_orphans(list(self._orphans))

    def _requeue_orphans(self, keys: list[tuple[int, int, int]]) -> list[str]:
        requeued = []
        for job_id, number, attempt in keys:
            del self._orphans[(job_id, number, attempt)]
            job = self.jobs[job_id]
            frame = job.frames[number]
            if frame.holds_process and frame.attempts == attempt:
                self.dispatch.release(frame.taken or ONE_SLOT_TAKEN)
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

    def _lock(self, event: LockWorker) -> list[str]:
        """Lock a connected worker: it takes no new work. `purge` also stops what it
        runs; those frames go back to pending without using a retry."""
        if event.mode not in ("drain", "purge"):
            msg = f"bad lock mode {event.mode!r}: drain (let frames finish) or purge (stop them)"
            raise JobSpecError(msg)
        worker = self.worker(event.name)
        self._check_scope(event.by, Action.LOCK, [worker.cluster])
        worker.locked = self.locks[worker.name] = event.mode
        self._locks_changed = True
        self.dispatch.withdraw(worker.name)
        stopped = []
        if event.mode == "purge":
            for job_id, number, attempt in list(worker.running):
                job = self.jobs.get(job_id)
                frame = job.frames.get(number) if job is not None else None
                if job is None or frame is None or frame.attempts != attempt:
                    continue
                if frame.holds_process and frame.worker == worker.name:
                    self.dispatch.stop(worker.name, job_id, number, attempt)
                    if frame.stopped:  # a suspended frame stays held (not requeued)
                        self._set_stopped(job, frame, False)
                    else:
                        self._move(job, frame, FrameEvent.PURGE)
                        stopped.append(f"{job_id}:{number}")
                    frame.started_at = None
                    self._sync(job)
        self._note("info", "worker locked", worker=worker.name, mode=event.mode, requeued=stopped)
        return stopped

    def _unlock(self, event: UnlockWorker) -> str:
        if event.name not in self.locks:
            msg = f"worker {event.name!r} is not locked"
            raise UnknownWorkerError(msg)
        del self.locks[event.name]
        self._locks_changed = True
        worker = self.workers.get(event.name)
        if worker is not None:
            worker.locked = None
            self.dispatch.offer(worker.name)
        self._note("info", "worker unlocked", worker=event.name)
        return event.name

    def _set_resource(self, event: SetResource) -> str:
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
            self.counters["failed"] += 1
            frame.failures += 1
            frame.failed_on = worker.name
            if frame.failures <= job.retries:
                if job.retry_delay > 0 and not suspended:
                    frame.retry_at = event.now + job.retry_delay
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
            else:
                self._move(job, frame, FrameEvent.FAIL)
        self._sync(job)

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
        """When the next retry delay ends, if any frame waits for one."""
        return min(self._held.values(), default=None)

    # ------------------------------------------------------------------ invariants

    def _sync(self, job: Job) -> None:
        """Restore the index invariant for `job` and act on its state changing since
        the last call: announce an end, tell dependents and the parent."""
        self.dispatch.track(job)
        before, after = job.synced, job.state
        if before is after:
            return
        job.synced = after
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
        for dependent_id in sorted(self._dependents.get(job.id, ())):
            dependent = self.jobs.get(dependent_id)
            if dependent is None:
                continue
            for dep in dependent.depends_on:
                if dep.job_id == job.id and dep.job_id in dependent.waiting_on and dep.holds(after):
                    dependent.waiting_on.discard(job.id)
                    self._changed_jobs[dependent.id] = None
            self._refresh_block(dependent)
            self._sync(dependent)
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
        if was_running:
            self.dispatch.cap_eased(job)
        self._changed_frames[(job.id, frame.number)] = None
        if state is FrameState.COMPLETE and job.id in self._gates:
            self._ungate(job, frame)
        return state

    def _take_changes(self) -> Changes:
        locks = None
        if self._locks_changed:
            locks, self._locks_changed = dict(self.locks), False
        if not (self._changed_jobs or self._changed_frames or self._removed or locks is not None):
            return Changes()
        jobs = tuple(job_row(self.jobs[i]) for i in self._changed_jobs)
        frames = tuple(
            frame_row(self.jobs[j], self.jobs[j].frames[n]) for j, n in self._changed_frames
        )
        removed, self._removed = tuple(self._removed), []
        self._changed_jobs, self._changed_frames = {}, {}
        return Changes(jobs, frames, self._next_id, removed, locks)

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
        restored, self.quarantined = read_snapshot(snapshot)
        for job_id, job in restored.items():
            self.jobs[job_id] = job
            for frame in job.frames.made.values():  # a fresh frame holds nothing
                if frame.retry_at is not None:
                    self._held[(job_id, frame.number)] = frame.retry_at
                if frame.holds_process:
                    # it may still run: the farm's counters stay held until it is
                    # claimed or requeued
                    self._orphans[(job_id, frame.number, frame.attempts)] = None
                    self.dispatch.hold(frame.taken if frame.taken is not None else ONE_SLOT_TAKEN)
            if job.request_key is not None:
                ids, _ = self._keys.get(job.request_key, ((), ""))
                self._keys[job.request_key] = ((*ids, job_id), job.request_digest or "")
            self.dispatch.options_changed(job)
        # whether a job has ended depends on its frames and sub-jobs only, so the
        # dependencies are linked once those are known
        for row in snapshot.jobs:  # as stored: a dependency met once stays met
            if row.id in self.jobs:
                self._link_dependencies(self.jobs[row.id], row.waiting_on)
        for job in self.jobs.values():
            job.synced = job.state
            if not job.synced.ended:
                self.tree.add(job.cluster, Member.JOB)
            self.dispatch.track(job)
        highest = max([*self.jobs, *self.quarantined], default=0)
        self._next_id = max(snapshot.next_job_id, highest + 1)  # no id is used twice
        self.locks = dict(snapshot.locks)

    # ------------------------------------------------------------------ named queries
    # What the shell asks of the farm; it reads no dict of the core's.

    def quarantine_report(self) -> dict[int, str]:
        """The jobs `Restore` quarantined, by id, each with why (a copy)."""
        return dict(self.quarantined)

    def size(self) -> FarmSize:
        """How much the farm holds, for the shell's log lines."""
        return FarmSize(
            jobs=len(self.jobs),
            frames=sum(len(job.frames) for job in self.jobs.values()),
            orphans=len(self._orphans),
            quarantined=len(self.quarantined),
        )

    def job_summary(self, job_id: int) -> dict[str, Any]:
        """One job as `jobs_view` lists it (what a submit answers)."""
        return self.job(job_id).summary()

    def worker_settings(self, name: str) -> dict[str, Any] | None:
        """The settings connected worker `name` runs with (as a `WorkerReconfigured`
        would set them), or None if it is not connected."""
        worker = self.workers.get(name)
        return worker.settings() if worker is not None else None

    @property
    def next_job_id(self) -> int:
        """The id the next submitted job gets (ids are never reused)."""
        return self._next_id

    @property
    def orphans(self) -> int:
        return len(self._orphans)

    def _emit(self, command: Command) -> None:
        self._out.append(command)

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

    def _check_scope(self, by: Principal, action: Action, clusters: Iterable[str]) -> None:
        """Refuse unless every cluster an event touches is within `by`'s subtree."""
        if by.clusters is None:
            return
        for cluster in clusters:
            why = authority.scope_refusal(by, action, ClusterPath(cluster))
            if why is not None:
                raise ForbiddenError(why)

    # ------------------------------------------------------------------ queries

    def job_token_refusal(self, job_id: int) -> str | None:
        """Why a frame's job token of `job_id` no longer opens or serves a session
        (its job is gone or has ended), or None while it works."""
        job = self.jobs.get(job_id)
        why = f"the job token of job {job_id} no longer works: the job"
        if job is None:
            return f"{why} does not exist"
        state = job.state
        if state.ended:
            return f"{why} has ended ({state.value})"
        return None

    def job(self, job_id: int) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            msg = _missing(job_id, self.quarantined)
            raise UnknownJobError(msg)
        return job

    def worker(self, name: str) -> Worker:
        worker = self.workers.get(name)
        if worker is None:
            msg = f"worker {name!r} is not connected"
            raise UnknownWorkerError(msg)
        return worker

    def jobs_view(self) -> list[dict[str, Any]]:
        return views.jobs_view(self)

    def job_view(self, job_id: int) -> dict[str, Any]:
        return views.job_view(self, job_id)

    def workers_view(self) -> list[dict[str, Any]]:
        return views.workers_view(self)

    def clusters_view(self) -> list[dict[str, Any]]:
        return views.clusters_view(self)

    def order_view(self, worker_name: str, limit: int) -> list[dict[str, Any]]:
        return views.order_view(self, worker_name, limit)

    def statistics(self) -> FarmStatistics:
        """Counts for the metrics, by cluster and state (see `FarmStatistics`)."""
        return views.statistics(self)

    def resources_view(self) -> dict[str, dict[str, float]]:
        return views.resources_view(self)

    def explain(self, job_id: int, worker_name: str | None = None) -> dict[str, Any]:
        """Why `job_id` does or does not run on each connected worker (see `views.explain`)."""
        return views.explain(self, job_id, worker_name)

    def ended(self, job_ids: Iterable[int]) -> dict[int, JobState]:
        """The jobs among `job_ids` that have ended, with their end state."""
        out = {}
        for job_id in job_ids:
            state = self.job(job_id).state
            if state.ended:
                out[job_id] = state
        return out

    def stuck(self, job_ids: Iterable[int]) -> dict[int, str]:
        """The jobs among `job_ids` that have not ended and cannot end without an admin,
        each with why in one line (the rule: `_StuckJobs`)."""
        ids = list(dict.fromkeys(job_ids))
        for job_id in ids:
            self.job(job_id)  # refuses an unknown id
        return _StuckJobs(self.jobs).why(ids)

    def settled(self, job_ids: Iterable[int]) -> bool:
        """Every job among `job_ids` has ended or is stuck: what `farmd wait` waits for.
        Cheap while one of them has work it can run (then it is neither)."""
        going = [i for i in dict.fromkeys(job_ids) if not self.job(i).state.ended]
        if any(self.jobs[i].state not in HOLDING for i in going):
            return False
        return len(self.stuck(going)) == len(going)

    def frame_holder(self, job_id: int, number: int | None) -> tuple[Frame, str]:
        """The frame whose log `farmd logs` shows and the worker that ran it last."""
        job = self.job(job_id)
        if number is None:
            started = [f for f in job.frames.made.values() if f.worker is not None]
            if not started:
                msg = f"job {job_id} has not started a frame yet: no log"
                raise JobSpecError(msg)
            frame = min(started, key=lambda f: job.frames.position(f.number) or 0)
        else:
            found = job.frames.get(number)
            if found is None:
                msg = f"job {job_id} has no frame {number}"
                raise JobSpecError(msg)
            frame = found
        if frame.worker is None:
            msg = f"frame {job_id}:{frame.number} has not run yet: no log"
            raise JobSpecError(msg)
        return frame, frame.worker


def _missing(job_id: int, quarantined: dict[int, str]) -> str:
    """Why there is no job `job_id`, in one line."""
    why = quarantined.get(job_id)
    if why is None:
        return f"job {job_id} does not exist"
    return f"job {job_id} is quarantined: its stored rows could not be restored ({why})"
