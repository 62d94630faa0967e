"""Why a pending job runs nowhere: the short reason `farmd jobs` gives a job that has a
frame ready and is not running.

Theory of operation
-------------------
A pending job waits either for a slot (some connected worker could run it, once one is
free and the job ranks first there) or for a worker that does not exist: none its
restrictions allow, none that accepts its cluster, none that runs its type, none large
enough for what a frame reserves. `farmd explain` says this worker by worker; a listing
says it in a few words for each pending job of its page.

A listing must not cost jobs × workers for the whole farm, so it does not look at the
workers one by one: workers that look the same to these questions (cluster,
restrictions, job types, slots, resource totals, locked or not) make one `Shape`, and a
farm of a thousand hosts has a handful. `Shapes.of` collects them once per listing,
walking the workers once; each pending job of the page is then judged against the
shapes, in the order of `farmd explain`'s reasons (`farmd.core.views._explain_on`),
each check narrowing the candidates: the job's restrictions, the workers', the type,
the capacity (a frame's reservation against a host's totals and the farm's counters,
never against what is free now), then whether every candidate is locked. The first
check that leaves no candidate is the reason.

A submit uses the same checks, but for locks and the ranking (`never_runs`), to warn
that no connected worker could ever run the job it accepted (`submit_warnings`).

What is not judged here: a job's requirement expression (it reads each host's facts,
which make every host different; `farmd explain` judges it) and the ranking (a job
outranked where it fits is waiting for a slot). Pure: reads the scheduler's records.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from farmd.cluster import ClusterPath, Restrictions
from farmd.jobs import Job
from farmd.resources import SlotMode, format_amount, is_global
from farmd.workers import Worker


@attrs.frozen
class Shape:
    """What a pending job's reason reads of a worker; equal shapes are one."""

    cluster: ClusterPath
    restrictions: Restrictions = attrs.field(eq=False)
    restriction_text: str  # stands for `restrictions` in equality and hash
    types: frozenset[str]
    release_types: frozenset[str]
    slots: int
    resources: tuple[tuple[str, float], ...]
    locked: bool

    @classmethod
    def of(cls, worker: Worker) -> Shape:
        return cls(
            cluster=worker.cluster,
            restrictions=worker.restrictions,
            restriction_text=str(worker.restrictions),
            types=worker.types,
            release_types=worker.release_types,
            slots=worker.slots,
            resources=tuple(sorted(worker.resources.items())),
            locked=worker.locked is not None,
        )

    def total(self, name: str) -> float:
        return self.slots if name == "slots" else dict(self.resources).get(name, 0)

    def runs(self, job_type: str, pinned: bool) -> bool:
        """As `Worker.runs`."""
        return job_type in self.release_types or (not pinned and job_type in self.types)


def shapes(workers: Iterable[Worker]) -> list[Shape]:
    """The distinct shapes of `workers`, in the order first seen."""
    return list(dict.fromkeys(Shape.of(worker) for worker in workers))


def pending_reason(job: Job, shapes: list[Shape], pool_totals: dict[str, float]) -> str:
    """Why pending `job` is not running, in a few words: the first check that no
    connected worker (of `shapes`) passes, else what it waits for. `pool_totals`: the
    farm-wide counters' totals."""
    if not job.runnable:
        return "waiting out a retry delay"
    never = never_runs(job, shapes, pool_totals)
    if never is not None:
        return never
    candidates = _candidates(job, shapes)
    if all(s.locked for s in candidates):
        return "every worker that could run it is locked"
    if job.at_cap:
        return f"at its instances cap ({job.instances})"
    if job.requires.source:
        return "waiting for a free slot where its requirement holds"
    return "waiting for a free slot"


def never_runs(job: Job, shapes: list[Shape], pool_totals: dict[str, float]) -> str | None:
    """Why no connected worker (of `shapes`) could run `job` however long it waited,
    locks aside (an admin's unlock is a wait): no worker, none its restrictions or
    theirs allow, none that runs its type, none with room for a frame's reservation
    when idle. None if one could. What a submit warns of (`submit_warnings`)."""
    if not shapes:
        return "no worker connected"
    candidates = [s for s in shapes if job.restrictions.accepts(s.cluster)]
    if not candidates:
        return f"restrictions '{job.restrictions}' match no worker"
    candidates = [s for s in candidates if s.restrictions.accepts(job.cluster)]
    if not candidates:
        return f"no worker accepts jobs in {job.cluster} (its restrictions)"
    if job.job_type is not None:
        pinned = job.pinned is not None
        typed = [s for s in candidates if s.runs(job.job_type, pinned)]
        if not typed:
            anywhere = any(s.runs(job.job_type, pinned) for s in shapes)
            where = "no worker it may run on" if anywhere else "no worker"
            return f"{where} runs type {job.job_type!r}"
        candidates = typed
    return _capacity_short(job, candidates, pool_totals)


def _candidates(job: Job, shapes: list[Shape]) -> list[Shape]:
    """The shapes that pass every check of `never_runs` but capacity's."""
    pinned = job.pinned is not None
    return [
        s
        for s in shapes
        if job.restrictions.accepts(s.cluster)
        and s.restrictions.accepts(job.cluster)
        and (job.job_type is None or s.runs(job.job_type, pinned))
    ]


# A warning line at most this long: a batch's answer holds many, and a job's
# restrictions alone may be 4096 characters (docs/protocol.md 6.5).
MAX_WARNING_CHARS = 300


def submit_warnings(job: Job, shapes: list[Shape], pool_totals: dict[str, float]) -> list[str]:
    """What a submit warns of for `job`, one line each (empty: nothing): it is accepted
    all the same, since a worker that can run it may join later."""
    never = never_runs(job, shapes, pool_totals)
    if never is None:
        return []
    line = f"no connected worker could run job {job.id}: {never}"
    if len(line) > MAX_WARNING_CHARS:
        line = line[: MAX_WARNING_CHARS - 3] + "..."
    return [line]


def _capacity_short(job: Job, candidates: list[Shape], pool_totals: dict[str, float]) -> str | None:
    """Why a frame of `job` fits none of `candidates` even when idle, or None if one
    has room for it (with the farm's counters whole)."""
    reserve = job.reserve

    def pool(name: str) -> float:
        return pool_totals.get(name, 0)

    if any(reserve.take(s.slots, s.total, pool) is not None for s in candidates):
        return None
    largest = max(s.slots for s in candidates)
    if reserve.slots > largest:
        idle = " (an idle host)" if reserve.mode is SlotMode.IDLE_HOST else ""
        return f"needs slots={reserve.slots}{idle}; the largest host has {largest}"
    for name, amount in reserve.amounts:
        if is_global(name):
            have = pool(name)
            if have < amount:
                return f"needs {name}={format_amount(amount)}; the farm has {format_amount(have)}"
            continue
        most = max(s.total(name) for s in candidates)
        if most < amount:
            return (
                f"needs {name}={format_amount(amount)}; the most a host has is "
                f"{format_amount(most)}"
            )
    return f"needs {reserve}; no host has all of it"
