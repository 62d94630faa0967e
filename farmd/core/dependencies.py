"""Dependencies between jobs: who waits for whom, whole jobs and frame by frame.

Theory of operation
-------------------
`Dependencies` is held by the `Scheduler` and owns the two indexes that lead from a job
to the jobs waiting for it: `_dependents` (job -> the jobs whose `depends_on` names it)
and `_gates` (job -> its frame or chunk -> the (job, frame) pairs that wait for it).
Nothing else reads or changes them. What waits is recorded on the dependent job itself
(`Job.waiting_on`, `Frame.waits_on`, `Job.broken`); this object keeps those true as the
jobs they name change, and asks the scheduler's `sync` to act on a dependent's state.

Invariants, true whenever an event has been handled:

- a whole-job dependency (`complete`, `done`, `failed`) is in the dependent's
  `waiting_on` until it holds; once met it stays met (`job_changed` only removes), so a
  retried dependency never takes back what it let run;
- `Job.broken` names each dependency that ended so that it can no longer hold, or whose
  job is quarantined (`refresh_block`): the dependent's state decides whether it blocks;
- frame N of a frame-by-frame dependent waits exactly while the frame (or chunk) of the
  other job that runs frame N has not completed. Completion is final, so a gate is
  released once (`frame_completed`), or when the other job is removed (`removed`).

A job's dependencies are linked once, when it is submitted or restored (`link`): from
their states as they are now, or from `waiting_on` as stored, since a dependency met
before a restart must stay met even if its job was retried since.
"""

from __future__ import annotations

from collections.abc import Callable

from farmd.core.vocabulary import Command, JobHeld
from farmd.frames import Frame, FrameState
from farmd.jobs import Dependency, DependencyMode, Job, JobState


class Dependencies:
    """Which jobs wait for which (see module docs). The scheduler links a job when it
    arrives, tells this of state changes and completed frames, and of removals."""

    def __init__(
        self,
        *,
        jobs: dict[int, Job],
        quarantined: dict[int, str],
        sync: Callable[[Job], None],
        changed: Callable[[int], None],
        emit: Callable[[Command], None],
    ) -> None:
        # the scheduler's records, read here; a dependent changes through `sync`
        self._jobs = jobs
        self._quarantined = quarantined
        self._sync = sync
        self._changed = changed  # the job's row must be written again
        self._emit = emit
        self._dependents: dict[int, set[int]] = {}
        # frame-by-frame dependencies: job -> its frame -> the (job, frame) that wait for it
        self._gates: dict[int, dict[int, list[tuple[int, int]]]] = {}

    def dependents_of(self, job_id: int) -> list[int]:
        """The jobs that depend on job `job_id` (in id order), whatever their state."""
        return sorted(self._dependents.get(job_id, ()))

    # ------------------------------------------------------------------ linking

    def link(self, job: Job, waiting_on: tuple[int, ...] | None) -> None:
        """Wire `job` to the jobs it depends on: `waiting_on` as stored, or (None) as
        their states say now; frame gates always from their frames' states."""
        gated = False
        for dep in job.depends_on:
            self._dependents.setdefault(dep.job_id, set()).add(job.id)
            target = self._jobs.get(dep.job_id)
            if target is None and dep.job_id in self._quarantined:
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

    # ------------------------------------------------------------------ changes

    def frame_completed(self, job: Job, frame: Frame) -> None:
        """`frame` of `job` completed: frames waiting for it may be ready."""
        if job.id not in self._gates:
            return
        waiting = self._gates[job.id].pop(frame.number, ())
        for dependent_id, number in waiting:
            dependent = self._jobs.get(dependent_id)
            if dependent is not None:
                dependent.ungate(dependent.frames[number], job.id)
                self._sync(dependent)
                if dependent.synced is JobState.WAITING and not dependent.gates.get(job.id):
                    # still waiting, no longer for this job: if the jobs left cannot run
                    # without an admin, it has just become stuck without changing state
                    self._emit(JobHeld(job_id=dependent.id, state=JobState.WAITING))

    def job_changed(self, job: Job, after: JobState) -> None:
        """`job` ended, or was retried after it had: its dependents hear of it. A met
        dependency stays met; one that can no longer hold blocks, until a retry."""
        for dependent_id in self.dependents_of(job.id):
            dependent = self._jobs.get(dependent_id)
            if dependent is None:
                continue
            for dep in dependent.depends_on:
                if dep.job_id == job.id and dep.job_id in dependent.waiting_on and dep.holds(after):
                    dependent.waiting_on.discard(job.id)
                    self._changed(dependent.id)
            self._refresh_block(dependent)
            self._sync(dependent)

    def removed(self, job: Job) -> None:
        """`job` is removed: whatever still waits for it (an ended dependent an admin may
        retry later) waits no more, and it no longer waits for anything."""
        job_id = job.id
        for waiting in self._gates.pop(job_id, {}).values():
            for dependent_id, number in waiting:
                dependent = self._jobs.get(dependent_id)
                if dependent is not None:
                    dependent.ungate(dependent.frames[number], job_id)
        for dependent_id in self._dependents.pop(job_id, ()):
            dependent = self._jobs.get(dependent_id)
            if dependent is not None:
                if job_id in dependent.waiting_on:
                    dependent.waiting_on.discard(job_id)
                    self._changed(dependent_id)
                self._refresh_block(dependent)
        for dep in job.depends_on:
            self._dependents.get(dep.job_id, set()).discard(job_id)

    def _refresh_block(self, job: Job) -> None:
        """Keep `Job.broken` true: the dependencies that ended so that they can no
        longer hold (the job's state decides whether they still block it)."""
        job.broken = {}
        for dep in job.depends_on:
            target = self._jobs.get(dep.job_id)
            if target is None and dep.job_id in self._quarantined:
                why = f"job {dep.job_id} is quarantined: its stored rows could not be restored"
                job.broken.setdefault(dep.job_id, f"{why} ({self._quarantined[dep.job_id]})")
            elif target is not None and dep.broken(target.state):
                job.broken.setdefault(dep.job_id, dep.why_broken(target.state))
