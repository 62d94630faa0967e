"""History: when a job that ended leaves memory for the store, and how it comes back.

Theory of operation
-------------------
A farm keeps every job it ran for `history_days`, but only the live queue in memory: a
job that has ended *moves to history* (its rows stay in the store, marked with when it
moved and its summary as `farmd jobs` lists it) `history_after` seconds after it ended.
A restart then reads only the live queue, and memory holds what can still change.

The unit that moves is a *family*: a top-level job and its sub-jobs, since a parent's
state is made of its sub-jobs'. A family moves once its top-level job has ended (it ends
only after every sub-job has) and no job left in memory depends on one of its members:
a dependent still reads its dependency's state (`Dependencies`), so a dependency stays
until its last dependent in memory has moved or was removed, and is then due at once.
Ids always grow along a dependency and a sub-job's id is above its parent's, so this
waiting cannot go round in a circle except through a sub-job submitted later by a
running frame; such families simply stay in memory.

Anything that names a job no longer in memory (a `farmd job`, a retry, a `wait`, a
dependency of a new job, a repeated idempotency key) makes the shell *recall* it first:
it reads the family's rows, and those of the jobs they depend on, from the store and
hands them in as a `RecallJobs` event, which installs them as a restore does. A recalled
family is due to move back `history_after` seconds later, unless something brought it
back to life (a retry); if nothing changed it, it moves without writing a row.

Moving needs the family's last rows to be durable first: the shell reads history only
after everything handed to the store before is committed, so a reader never sees a job
that is neither in memory nor in the store. `History` keeps only the due times; the
scheduler carries out a move (`Scheduler._retire`). Pure: the time comes with events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from farmd.jobs import Job


class History:
    """Which families move to history when (see module docs)."""

    def __init__(
        self,
        *,
        after: float | None,
        jobs: dict[int, Job],
        dependents_of: Callable[[int], list[int]],
    ) -> None:
        # seconds an ended family stays in memory; None: the store keeps no history
        self.after = after
        self._jobs = jobs  # the scheduler's
        self._dependents_of = dependents_of
        self._due: dict[int, float] = {}  # top-level job id -> when it may move

    def root(self, job: Job) -> Job | None:
        """The top-level job of `job`'s family, if the family is in memory."""
        while job.parent is not None:
            parent = self._jobs.get(job.parent)
            if parent is None:
                return None
            job = parent
        return job

    def schedule(self, job: Job, now: float, *, wait: bool = True) -> float | None:
        """`job`'s family may move (after `history_after`, or at once when not `wait`)
        if its top-level job has ended; when it is due, or None."""
        if self.after is None:
            return None
        root = self.root(job)
        if root is None or not root.synced.ended:
            return None
        at = now + self.after if wait else now
        if root.id not in self._due or at < self._due[root.id]:
            self._due[root.id] = at
        return self._due[root.id]

    def next_wake(self) -> float | None:
        return min(self._due.values(), default=None)

    def due(self, now: float) -> Iterator[list[Job]]:
        """The families that move now, each whole (top-level job first). A family whose
        top-level job is gone or no longer ended is dropped (its next end schedules it
        again); one a job in memory still depends on waits for that job to go."""
        for root_id, at in list(self._due.items()):
            if at > now:
                continue
            del self._due[root_id]
            root = self._jobs.get(root_id)
            if root is None or not root.synced.ended:
                continue
            family = list(self.family(root))
            members = {job.id for job in family}
            if any(
                dependent in self._jobs and dependent not in members
                for job in family
                for dependent in self._dependents_of(job.id)
            ):
                continue  # `released` schedules it again when its last dependent goes
            yield family

    def released(self, gone: list[Job], now: float) -> None:
        """`gone` left memory: the families they depended on may move now."""
        for job in gone:
            for dep in job.depends_on:
                target = self._jobs.get(dep.job_id)
                if target is not None:
                    self.schedule(target, now, wait=False)

    def forget(self, root_id: int) -> None:
        self._due.pop(root_id, None)

    def family(self, root: Job) -> Iterator[Job]:
        """`root` and its sub-jobs in memory, and theirs, parents first."""
        stack = [root]
        while stack:  # bounded: each sub-job has one parent
            job = stack.pop()
            yield job
            stack.extend(self._jobs[i] for i in reversed(job.children) if i in self._jobs)
