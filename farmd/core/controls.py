"""Control requests planned: which frames a kill or a control moves, and what a remove takes.

Theory of operation
-------------------
A request that acts on jobs already in the farm (`KillJobs`, `ControlFrames`,
`RemoveJobs`) is decided whole before anything changes, so a refusal (an unknown job
or frame, a frame the control cannot move, a job outside the asker's subtree, a job
still running or still needed) leaves the farm as it was. The functions here make that
decision: they read the jobs and return a *plan* (each frame with the state the
transition table, `CONTROLS`, sends it to) or the jobs to remove, and change nothing.
The scheduler then carries the plan out, as every change to a frame goes through it.

A whole-job kill or retry reaches the job's sub-jobs too (`CASCADING`): a killed job
takes them along, and a retried one (failed, perhaps, because one of them did) retries
them. A job is removed with its sub-jobs, never without its parent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from farmd.core.authority import Action, Principal, check_jobs
from farmd.core.vocabulary import ControlFrames, RemoveJobs
from farmd.errors import JobSpecError
from farmd.frames import Frame, FrameState
from farmd.jobs import CONTROLS, DONE, Control, Job, parse_target, refusal

# Whole-job controls that reach the job's sub-jobs too.
CASCADING = frozenset({Control.KILL, Control.RETRY})

# (job, frame) -> the job, the frame and the state the control sends it to
Plan = dict[tuple[int, int], tuple[Job, Frame, FrameState]]


def with_subjobs(jobs: Mapping[int, Job], roots: list[Job]) -> list[Job]:
    """`roots` and, after them, every sub-job under them (depth first), once each."""
    seen: dict[int, Job] = {}
    stack = list(reversed(roots))
    while stack:
        job = stack.pop()
        if job.id not in seen:
            seen[job.id] = job
            stack.extend(jobs[c] for c in reversed(job.children) if c in jobs)
    return list(seen.values())


def kill_plan(jobs: Mapping[int, Job], named: list[Job], by: Principal) -> Plan:
    """Every frame a kill of `named` stops, theirs and their sub-jobs'; a job that has
    ended already is left alone."""
    family = with_subjobs(jobs, named)
    check_jobs(by, Action.CONTROL, family, "kill")
    return {
        (job.id, frame.number): (job, frame, CONTROLS[(frame.state, Control.KILL)])
        for job in family
        for frame in job.frames.values()
        if (frame.state, Control.KILL) in CONTROLS
    }


def control_plan(jobs: Mapping[int, Job], event: ControlFrames, find: Callable[[int], Job]) -> Plan:
    """Every frame `event` moves: of each target, a whole job (and, for a cascading
    control, its sub-jobs) or the frames it names, each of which must be movable.
    `find` looks a job up, refusing an unknown one."""
    control = event.control
    plan: Plan = {}
    for text in event.targets:
        job_id, numbers = parse_target(text)
        job = find(job_id)
        subtree = with_subjobs(jobs, [job]) if control in CASCADING else [job]
        check_jobs(event.by, Action.CONTROL, subtree, control.value)
        if numbers is None:
            _plan_whole_job(control, subtree, plan)
            continue
        for number in numbers:
            frame = job.unit(number)
            if frame is None:
                msg = f"job {job_id} has no frame {number}"
                raise JobSpecError(msg)
            target = CONTROLS.get((frame.state, control))
            if target is None:
                raise JobSpecError(refusal(f"{job_id}:{number}", frame.state, control))
            plan[(job.id, frame.number)] = (job, frame, target)
    return plan


def _plan_whole_job(control: Control, subtree: list[Job], plan: Plan) -> None:
    """Add the movable frames of `subtree[0]` and of its sub-jobs after it (there are
    some only for a cascading control) to `plan`; refused if none of them can move."""
    job = subtree[0]
    chosen = [
        (job, frame, CONTROLS[(frame.state, control)])
        for frame in job.frames.values()
        if (frame.state, control) in CONTROLS
    ]
    chosen_sub = [
        (sub, frame, CONTROLS[(frame.state, control)])
        for sub in subtree[1:]
        for frame in sub.frames.values()
        if (frame.state, control) in CONTROLS
    ]
    if not chosen and not chosen_sub:
        done = DONE[control]
        msg = f"job {job.id} is {job.state.value}: no frame of it can be {done}"
        raise JobSpecError(msg)
    for entry in (*chosen_sub, *chosen):  # as before: a sub-job's frames first
        plan[(entry[0].id, entry[1].number)] = entry


def removal(
    jobs: Mapping[int, Job],
    event: RemoveJobs,
    find: Callable[[int], Job],
    dependents_of: Callable[[int], list[int]],
) -> list[Job]:
    """The jobs `event` removes: those named and their sub-jobs, each of which must
    have ended, be no sub-job of a job that stays, and be needed by no job still going."""
    named = [find(job_id) for job_id in dict.fromkeys(event.job_ids)]
    family = with_subjobs(jobs, named)
    check_jobs(event.by, Action.REMOVE, family, "remove")
    ids = [job.id for job in family]
    for job in family:
        if not job.state.ended:
            msg = f"job {job.id} is {job.state.value}: kill it before removing it"
            raise JobSpecError(msg)
        if job.parent is not None and job.parent in jobs and job.parent not in ids:
            msg = (
                f"job {job.id} is a sub-job of job {job.parent}: remove job "
                f"{job.parent} (its sub-jobs go with it)"
            )
            raise JobSpecError(msg)
        for dependent in dependents_of(job.id):
            if dependent not in ids and not jobs[dependent].state.ended:
                msg = (
                    f"job {job.id} is a dependency of job {dependent}, which has not "
                    "ended: remove or kill that one first"
                )
                raise JobSpecError(msg)
    return family
