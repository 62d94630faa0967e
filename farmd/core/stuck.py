"""Which jobs cannot end without an admin: what `farmd wait` stops waiting for.

Theory of operation
-------------------
`_StuckJobs` answers one question for the scheduler's `stuck` query, from the jobs
alone: it reads them and changes nothing. The rule (in `_StuckJobs`'s docstring) is a
greatest fixed point over the jobs reachable from the ones asked about, solved with a
work list and bounded by `MAX_STUCK_NODES`, so that one check never holds the event
loop for long. `HOLDING` are the job states from which a job may wait for ever; the
scheduler announces entering one (`JobHeld`) so that waiters check again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import attrs

from farmd.frames import FrameState
from farmd.jobs import Job, JobState

# States in which a job may wait for ever (`Scheduler.stuck`): entering one is a `JobHeld`.
HOLDING = frozenset({JobState.WAITING, JobState.BLOCKED, JobState.SUSPENDED})

# --------------------------------------------------------------------------- stuck jobs

# A node of the stuck rule: ("stuck", job id) or ("frozen", job id).
_Node = tuple[str, int]
# Nodes one check may look at (two per job at most). A node costs about 10 us on a
# 2-core machine, so a check holds the event loop for 20 to 50 ms at worst.
MAX_STUCK_NODES = 2048


@attrs.frozen
class _Rule:
    """A node's value: `const` if set, else any of `any_of`, or all of `all_of`."""

    const: bool | None = None
    any_of: tuple[_Node, ...] = ()
    all_of: tuple[_Node, ...] | None = None


class _StuckJobs:
    """Which jobs cannot end without an admin (`farmd wait` stops waiting for them).

    Two facts per job, defined by each other:

    - *stuck*: the job has not ended and never will unless an admin acts. It is if it is
      `blocked` (frames blocked by an admin, or a dependency that can no longer hold) or
      `suspended`; or it is `waiting` with pending frames and a whole-job dependency it
      still waits for is on a stuck job, or a `frames` dependency with frames still to
      release is on a frozen job; or it is `waiting` for its sub-jobs and one of them is
      stuck. A `pending` or `running` job is never stuck: it has work that can run.
    - *frozen*: no frame of the job will change state unless an admin acts, so a frame
      that waits for one of its frames (`frames` dependencies) waits for ever. An ended
      job is; a job with a running frame is not; one with no pending frame is (what is
      left is blocked, suspended or ended); one with pending frames is if a whole-job
      dependency it waits for is on a stuck job, or if every pending frame waits for
      frames of other jobs and every job they wait for is frozen.

    The facts are the greatest fixed point of these rules over the jobs reachable from
    the ones asked about: every such fact starts true and is cleared while its rule fails,
    until nothing changes. Jobs that wait for each other in a cycle (a sub-job with a
    `complete` dependency on its own parent) therefore come out stuck, as they are.
    The rule errs towards "not stuck": a job with some work left to run is never stuck,
    even when it has other frames that will wait for ever; it becomes stuck once that
    work has run. Cost: the reachable jobs that may be stuck (a job that has ended or
    has work to run is no node), their dependencies and sub-jobs, no frames; at most
    `MAX_STUCK_NODES` nodes, past which nothing is called stuck (a `wait` then runs to
    its timeout), so that one check never holds the event loop for long.
    """

    def __init__(self, jobs: dict[int, Job]) -> None:
        self.jobs = jobs
        self.rules: dict[_Node, _Rule] = {}
        self.value: dict[_Node, bool] = {}
        self._ends: dict[_Node, str] = {}  # what holds the chain from a node (`_end_of`)

    def why(self, job_ids: list[int]) -> dict[int, str]:
        self._solve([("stuck", job_id) for job_id in job_ids])
        return {j: self._explain(j) for j in job_ids if self.value[("stuck", j)]}

    def _rule(self, node: _Node) -> _Rule:
        kind, job_id = node
        job = self.jobs.get(job_id)
        if job is None:  # removed: it has long ended
            return _Rule(const=kind == "frozen")
        state = job.state
        if state.ended:
            return _Rule(const=kind == "frozen")
        counts = job.counts
        if kind == "stuck":
            if state in (JobState.BLOCKED, JobState.SUSPENDED):
                return _Rule(const=True)
            if state is not JobState.WAITING:
                return _Rule(const=False)
            if counts[FrameState.PENDING]:
                gated_by = [x for x, n in job.gates.items() if n > 0 and not self._runs(x)]
                return _Rule(any_of=self._stuck_nodes(job.waiting_on) + _frozen_nodes(gated_by))
            return _Rule(any_of=self._stuck_nodes(job.open_children))
        if counts[FrameState.RUNNING]:
            return _Rule(const=False)
        if not counts[FrameState.PENDING]:
            return _Rule(const=True)
        all_of = None
        if counts[FrameState.PENDING] == job.gated:
            gated_by = [x for x, n in job.gates.items() if n > 0]
            if not any(self._runs(x) for x in gated_by):  # else not all of them are frozen
                all_of = _frozen_nodes(gated_by)
        return _Rule(any_of=self._stuck_nodes(job.waiting_on), all_of=all_of)

    def _stuck_nodes(self, job_ids: Iterable[int]) -> tuple[_Node, ...]:
        """The nodes of the jobs among `job_ids` that may be stuck. One that has ended
        or has work it can run is not: leaving it out keeps a job that waits for
        thousands of running ones cheap to look at (no node, no rule for each)."""
        jobs = self.jobs
        maybe = [i for i in job_ids if (j := jobs.get(i)) is not None and j.synced in HOLDING]
        return tuple(("stuck", i) for i in sorted(maybe))

    def _runs(self, job_id: int) -> bool:
        """A frame of the job is running: it is not frozen."""
        job = self.jobs.get(job_id)
        return job is not None and job.counts[FrameState.RUNNING] > 0

    def _holds(self, rule: _Rule) -> bool:
        if rule.const is not None:
            return rule.const
        value = self.value
        if any(value[node] for node in rule.any_of):
            return True
        return rule.all_of is not None and all(value[node] for node in rule.all_of)

    def _solve(self, roots: list[_Node]) -> None:
        rules = self.rules
        needed_by: dict[_Node, list[_Node]] = {}
        todo = list(roots)
        while todo:  # every node reachable from the roots, each once
            node = todo.pop()
            if node in rules:
                continue
            if len(rules) >= MAX_STUCK_NODES:  # too far to look on the event loop
                self.value = dict.fromkeys(rules, False)
                return
            rule = rules[node] = self._rule(node)
            for successor in rule.any_of + (rule.all_of or ()):
                needed_by.setdefault(successor, []).append(node)
                if successor not in rules:
                    todo.append(successor)
        self.value = dict.fromkeys(rules, True)
        queue = deque(rules)
        while queue:  # each node turns false at most once: bounded by the edges
            node = queue.popleft()
            if self.value[node] and not self._holds(rules[node]):
                self.value[node] = False
                queue.extend(needed_by.get(node, ()))

    def _explain(self, job_id: int) -> str:
        """Why a stuck job is: its own reason, or the first job it waits for that is
        stuck, and what holds that chain at its end."""
        job = self.jobs[job_id]
        rule = self.rules[("stuck", job_id)]
        if rule.const:
            return job.reason(job.state)
        first = self._witness(rule)
        kind, other = first
        if kind == "frozen":
            head = f"frames wait for frames of job {other}, which cannot run without an admin"
        elif other in job.open_children:
            head = f"waiting for sub-job {other}, which cannot end without an admin"
        else:
            head = f"waiting for job {other}, which cannot end without an admin"
        return f"{head} ({self._end_of(first)})"

    def _end_of(self, start: _Node) -> str:
        """What holds the chain of witnesses from `start`: the job at its end, or the
        jobs that wait for each other. Remembered for every node on the way, so
        explaining every job of a long chain stays linear."""
        ends = self._ends
        path: dict[_Node, None] = {}
        node = start
        while node not in ends:
            rule = self.rules[node]
            if rule.const is not None:
                ends[node] = self._root(node)
                break
            path[node] = None
            node = self._witness(rule)
            if node in path:
                on_path = list(path)
                ids = sorted({n[1] for n in on_path[on_path.index(node) :]})
                cycle = ", ".join(map(str, ids))
                ends[node] = f"jobs {cycle} wait for each other"
                break
        end = ends[node]
        for visited in path:
            ends[visited] = end
        return end

    def _witness(self, rule: _Rule) -> _Node:
        """A successor that makes `rule` hold (it does)."""
        for node in rule.any_of:
            if self.value[node]:
                return node
        assert rule.all_of, rule
        return rule.all_of[0]

    def _root(self, node: _Node) -> str:
        job = self.jobs.get(node[1])
        if job is None:
            return f"job {node[1]} was removed"
        state = job.state
        if state in (JobState.BLOCKED, JobState.SUSPENDED):
            return f"job {job.id} is {state.value}: {job.reason(state)}"
        if state.ended:
            return f"job {job.id} is {state.value}"
        # frozen with no pending frame, neither blocked nor suspended: its frames have
        # ended (the ones waited for failed or were killed) and it waits for sub-jobs
        return f"job {job.id} has frames that failed or were killed"


def _frozen_nodes(job_ids: list[int]) -> tuple[_Node, ...]:
    return tuple(("frozen", i) for i in sorted(job_ids))
