"""Read-only views of the farm, shaped for the wire, and `explain`.

Theory of operation
-------------------
Each function here reads a `Scheduler` and changes nothing: the listings an admin asks
for (`jobs_page`, `job_view`, `workers_view`, `clusters_view`, `order_view`, `resources_view`), the
metrics' `statistics`, and `explain`, which says why a job does or does not run on each
worker, every reason that applies, in the order an admin would fix them. They return
plain dicts and lists (what the protocol sends) built from the scheduler's state at the
moment of the call; the scheduler's methods of the same names delegate here.

The listings that grow with the work (jobs, a job's frames) come by page (`page`): at
most a given number of entries, after a given key, and cut short to fit the room the
shell's frame limit leaves, so no answer is too large to send and none costs more than
its page: the jobs are walked from a key in the scheduler's sorted ids, a job's frames
from a place in its `FrameTable` without making a kept `Frame` per frame.

`explain` asks the dispatcher the very questions dispatch asks (`fits`, the ranking
index's order), so what it says and what dispatch does cannot drift apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from farmd.core import placement
from farmd.core.authority import ADMIN, Action, Principal, check_jobs
from farmd.core.shares import shares
from farmd.core.stuck import HOLDING, _StuckJobs
from farmd.core.vocabulary import FarmStatistics, ReplyRoom
from farmd.errors import JobSpecError
from farmd.frames import Frame
from farmd.jobs import Job, JobState
from farmd.ranking import admits, rank_key
from farmd.resources import Taken
from farmd.workers import Worker

if TYPE_CHECKING:
    from farmd.core.scheduler import Scheduler

T = TypeVar("T")


def jobs_page(
    core: Scheduler,
    limit: int | None = None,
    after: int | None = None,
    room: ReplyRoom | None = None,
    by: Principal = ADMIN,
    now: float | None = None,
) -> dict[str, Any]:
    """A page of job summaries by id: the jobs whose id is above `after` (from the
    first, when None), at most `limit` of them (no bound, when None), cut short to fit
    `room`; `next` is the `after` of the next page (None: this page ends the list), and
    `counts` (by state) and `total` are of every job, whatever the page. The ids are
    walked from `after` in order (`Scheduler.job_ids`), so a page costs its own length,
    not the farm's. A principal confined to a cluster scope (`by`) sees the jobs in it
    only, and their counts (counted for it: its listing costs the farm's length).
    `now` (the shell's clock; the core has none) dates the elapsed time of the jobs
    that have not ended; a pending job's reason is judged against the workers'
    shapes, found once for the page (`farmd.core.placement`)."""
    ids = core.job_ids.irange(minimum=after, inclusive=(False, True))
    counts, total = core.job_states, len(core.jobs)
    scope = by.clusters
    recalled = core.recalled  # history's, read back for a moment: listed as history
    if scope is not None:
        ids = (job_id for job_id in ids if scope.accepts(core.jobs[job_id].cluster))
        seen = [
            job.synced
            for job in core.jobs.values()
            if scope.accepts(job.cluster) and job.id not in recalled
        ]
        counts, total = Counter(seen), len(seen)
    elif recalled:
        counts = counts - Counter(core.jobs[job_id].synced for job_id in recalled)
        total -= len(recalled)
    if recalled:
        ids = (job_id for job_id in ids if job_id not in recalled)
    entries = ((job_id, job_id) for job_id in ids)
    reasons = _PendingReasons(core)
    jobs, next_id = page(
        entries, lambda job_id: reasons.fill(core.jobs[job_id].summary(now)), limit, room
    )
    return {
        "jobs": jobs,
        "next": next_id,
        "counts": {state.value: counts[state] for state in JobState},
        "total": total,
    }


def job_summary(core: Scheduler, job_id: int, now: float | None = None) -> dict[str, Any]:
    """One job as `jobs_page` lists it (what a submit answers)."""
    return _PendingReasons(core).fill(core.job(job_id).summary(now))


def submit_warnings(core: Scheduler, job_ids: Iterable[int]) -> dict[int, list[str]]:
    """Of the jobs a submit made, those no connected worker could ever run, each with
    why (`placement.submit_warnings`). A job that runs or has ended needs no warning.
    The workers' shapes are found once, so a batch costs jobs x shapes, not x workers."""
    shapes = placement.shapes(core.workers.values())
    totals = core.dispatch.pool.totals
    found: dict[int, list[str]] = {}
    for job_id in job_ids:
        job = core.jobs.get(job_id)
        if job is None or job.state is JobState.RUNNING or job.state.ended:
            continue
        lines = placement.submit_warnings(job, shapes, totals)
        if lines:
            found[job_id] = lines
    return found


def readable(core: Scheduler, by: Principal, job_ids: Iterable[int]) -> None:
    """Refuse (unknown job, or ForbiddenError naming the scope) unless `by` may read
    each job of `job_ids`."""
    check_jobs(by, Action.READ, [core.job(job_id) for job_id in job_ids], "read")


def job_view(
    core: Scheduler,
    job_id: int,
    frame_limit: int | None = None,
    frame_after: int | None = None,
    room: ReplyRoom | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """A job's detail with a page of its frames (chunks, for a chunked job) in the order
    of its frame range: those after the one that runs frame `frame_after` (from the
    first, when None), at most `frame_limit` (no bound, when None), cut short so that
    the whole answer fits `room`. `frame_next` is the `frame_after` of the next page
    (None: this page ends the list); `frame_list_total` counts every entry. Only the
    page's frames are looked at: a fresh frame is made for the page and dropped."""
    job = core.job(job_id)
    detail = _PendingReasons(core).fill(job.detail(now))
    start = 0
    if frame_after is not None:
        place = job.frames.place_after(frame_after)
        if place is None:
            msg = f"job {job_id} has no frame {frame_after} to list its frames after"
            raise JobSpecError(msg)
        start = place
    frame_room = None
    if room is not None:
        frame_room = attrs.evolve(room, bytes=room.bytes - room.size(detail))
    frames = ((frame.number, frame) for frame in job.frames.views(start))
    listed, next_frame = page(frames, Frame.view, frame_limit, frame_room)
    detail.update(frame_list=listed, frame_next=next_frame, frame_list_total=len(job.frames))
    return detail


class _PendingReasons:
    """Fills in the reason of a pending job's summary (`placement.pending_reason`),
    finding the workers' shapes once, when the first pending job asks."""

    def __init__(self, core: Scheduler) -> None:
        self._core = core
        self._shapes: list[placement.Shape] | None = None

    def fill(self, summary: dict[str, Any]) -> dict[str, Any]:
        if summary["state"] != JobState.PENDING.value or summary["reason"]:
            return summary
        core = self._core
        if self._shapes is None:
            self._shapes = placement.shapes(core.workers.values())
        job = core.jobs[summary["id"]]
        summary["reason"] = placement.pending_reason(job, self._shapes, core.dispatch.pool.totals)
        return summary


def page(
    entries: Iterator[tuple[int, T]],
    view: Callable[[T], dict[str, Any]],
    limit: int | None,
    room: ReplyRoom | None,
) -> tuple[list[dict[str, Any]], int | None]:
    """The views of `entries` (keyed, in order) up to `limit` of them and while they fit
    `room` (the first always does: a page is never empty while entries remain), and the
    key of the last one listed if any entry is left over, else None. An entry's view is
    built only once it is listed."""
    page: list[dict[str, Any]] = []
    used, last = 0, None
    for key, entry in entries:
        if limit is not None and len(page) >= limit:
            return page, last
        shown = view(entry)
        if room is not None:
            used += room.size(shown)
            if page and used > room.bytes:
                return page, last
        page.append(shown)
        last = key
    return page, None


def workers_view(core: Scheduler, by: Principal = ADMIN) -> list[dict[str, Any]]:
    """Every worker (in `by`'s cluster scope), by name."""
    scope = by.clusters
    workers = sorted(core.workers.values(), key=lambda w: w.name)
    return [w.summary() for w in workers if scope is None or scope.accepts(w.cluster)]


def clusters_view(core: Scheduler, by: Principal = ADMIN) -> list[dict[str, Any]]:
    """The cluster tree (in `by`'s scope: the clusters it accepts and the paths down
    to them)."""
    nodes = list(core.tree.nodes())
    scope = by.clusters
    if scope is not None:
        shown: set[str] = {node.path for node in nodes if scope.accepts(node.path)}
        for accepted in list(shown):
            path = accepted
            while path != "/":
                path = path.rsplit("/", 1)[0] or "/"
                shown.add(path)
        nodes = [node for node in nodes if node.path in shown]
    budget = shares(core.workers.values(), core.jobs, (node.path for node in nodes))
    return [{**attrs.asdict(node), "shares": budget[node.path].view()} for node in nodes]


def order_view(core: Scheduler, worker_name: str, limit: int) -> list[dict[str, Any]]:
    worker = core.worker(worker_name)
    return [
        {
            "id": ranked.job.id,
            "name": core.jobs[ranked.job.id].name,
            "cluster": ranked.job.cluster,
            "order": ranked.order,
            "priority": ranked.priority,
        }
        # jobs that could never fit it (type, requirement, resources) are left out
        for ranked in core.dispatch.index.page(
            worker.view, limit, eligible=core.dispatch.eligible_on(worker, [], idle=True)
        )
    ]


def statistics(core: Scheduler) -> FarmStatistics:
    """Counts for the metrics, by cluster and state (see `FarmStatistics`)."""
    frames: Counter[tuple[str, str]] = Counter()
    jobs: Counter[tuple[str, str]] = Counter()
    for job in core.jobs.values():
        jobs[(job.cluster, job.state.value)] += 1
        for state, count in job.frame_counts.items():
            if count:
                frames[(job.cluster, state.value)] += count
    workers: Counter[tuple[str, str]] = Counter()
    slots: dict[str, list[float]] = {}
    loads: dict[str, list[float]] = {}  # cluster -> [reporting, cpu, used, total]
    for worker in core.workers.values():
        workers[(worker.cluster, worker.summary_state)] += 1
        used_total = slots.setdefault(worker.cluster, [0, 0])
        used_total[0] += worker.used.get("slots", 0)
        used_total[1] += worker.slots
        if worker.load is not None:
            load = worker.load
            sums = loads.setdefault(worker.cluster, [0, 0.0, 0, 0])
            sums[0] += 1
            sums[1] += load.cpu
            sums[2] += load.memory_used
            sums[3] += load.memory_total
    pool = core.dispatch.pool
    rollout = core.rollout.statistics()
    effective = []
    for cluster in sorted(slots):  # the clusters that have workers
        for name, found in sorted(core.rollout.deployments.effective(cluster).items()):
            effective.append((cluster, name, found.version))
    budget = shares(core.workers.values(), core.jobs, (n.path for n in core.tree.nodes()))
    return FarmStatistics(
        shares=tuple(
            (path, figure, float(value))
            for path, share in sorted(budget.items())
            for figure, value in share.view().items()
        ),
        releases_effective=tuple(effective),
        release_workers=tuple(
            (name, version, n) for (name, version), n in sorted(rollout["workers_ready"].items())
        ),
        release_fetch_failures=rollout["fetch_failures"],
        frames=tuple((c, s, n) for (c, s), n in sorted(frames.items())),
        jobs=tuple((c, s, n) for (c, s), n in sorted(jobs.items())),
        workers=tuple((c, s, n) for (c, s), n in sorted(workers.items())),
        slots=tuple((c, u, t) for c, (u, t) in sorted(slots.items())),
        resources=tuple(
            (name, pool.used.get(name, 0), total) for name, total in sorted(pool.totals.items())
        ),
        frames_started=core.dispatch.started,
        frames_completed=core.counters["completed"],
        frames_failed=core.counters["failed"],
        frames_retried=core.counters["retried"],
        frames_preempted=core.dispatch.preempted,
        host_load=tuple(
            (c, int(n), cpu, int(used), int(total))
            for c, (n, cpu, used, total) in sorted(loads.items())
        ),
    )


def resources_view(core: Scheduler) -> dict[str, dict[str, float]]:
    pool = core.dispatch.pool
    return {
        name: {"total": total, "used": pool.used.get(name, 0), "free": pool.free(name)}
        for name, total in sorted(pool.totals.items())
    }


def explain(core: Scheduler, job_id: int, worker_name: str | None = None) -> dict[str, Any]:
    """Why `job_id` does or does not run on each connected worker (or the named
    one): every reason that applies, in the order an admin would fix them."""
    job = core.job(job_id)
    names = [core.worker(worker_name).name] if worker_name else sorted(core.workers)
    state = job.state
    everywhere = []  # what holds the job back on every worker
    if state.ended:
        everywhere.append(f"the job has ended ({state.value})")
    elif state in (JobState.WAITING, JobState.BLOCKED, JobState.SUSPENDED):
        everywhere.append(job.reason(state))
    elif job.id not in core.dispatch.index:
        everywhere.append(
            "no frame of it is ready (all running, held or waiting out a retry delay)"
        )
    return {
        "job": job.id,
        "name": job.name,
        "state": state.value,
        "cluster": job.cluster,
        "priority": job.priority,
        "everywhere": everywhere,
        "workers": [_explain_on(core, job, core.workers[name], everywhere) for name in names],
    }


def _explain_on(core: Scheduler, job: Job, worker: Worker, everywhere: list[str]) -> dict[str, Any]:
    queued = job.queued()
    view = worker.view
    running = sorted(f"{j}:{n}" for j, n, _ in worker.running if j == job.id)
    reasons = list(everywhere)
    if worker.locked:
        reasons.append(f"the worker is locked ({worker.locked}): it takes no new work")
    if not view.restrictions.accepts(job.cluster):
        reasons.append(
            f"cluster restriction on the worker's side: it accepts jobs in "
            f"'{view.restrictions}' only, and the job is in {job.cluster}"
        )
    if not job.restrictions.accepts(worker.cluster):
        reasons.append(
            f"cluster restriction on the job's side: it accepts workers in "
            f"'{job.restrictions}' only, and the worker is in {worker.cluster}"
        )
    if job.job_type is not None and not worker.runs(job.job_type, job.pinned is not None):
        runs = ", ".join(sorted(worker.types | worker.release_types)) or "no typed jobs"
        reason = f"type missing: the job is a {job.job_type!r} job; the worker runs {runs}"
        if job.pinned is not None:
            name = job.pinned["name"]
            failure = worker.release_failures.get(name)
            if failure is not None:
                reason += f"; it could not get release {name} {failure}"
            elif name not in core.rollout.deployments.effective(worker.cluster):
                reason += f" (release {name} is not deployed at {worker.cluster} or above)"
            else:
                reason += f" (it is still fetching release {name})"
        reasons.append(reason)
    if job.requires.source:
        clause = job.requires.first_false(worker.facts, job.facts())
        if clause is not None:
            reasons.append(f"requirement not met: {clause}")
    # slots held by running frames make a job wait its turn, not unfit
    short = job.reserve.shortfall(
        worker.slots, core.dispatch.free_on(worker, True), core.dispatch.pool.free
    )
    if short is not None and not reasons:
        reasons.append(f"resources short: {short}")
    if job.at_cap and not reasons:
        reasons.append(f"the job runs {job.instances} frames, its instances cap")
    rank = None
    if admits(queued, view):
        order, priority, _ = rank_key(queued, view)
        rank = {"order": order, "priority": priority}
        if not reasons and job.id in core.dispatch.index:
            ahead, first = _ahead_of(core, job, worker)
            rank["ahead"] = ahead
            if first is not None:
                reasons.append(
                    f"outranked by {ahead} job{'s' if ahead != 1 else ''} that fit here; "
                    f"the first is job {first.job.id} (cluster order {first.order}, "
                    f"priority {first.priority})"
                )
            elif core.dispatch.fits(job, worker) is None:  # its turn, once slots free up
                now_short = job.reserve.shortfall(
                    worker.slots, worker.available, core.dispatch.pool.free
                )
                reasons.append(f"it is next here, once slots are free ({now_short})")
    return {
        "worker": worker.name,
        "cluster": worker.cluster,
        "runs": bool(running),
        "running": running,
        "rank": rank,
        "reasons": reasons,
    }


def _ahead_of(core: Scheduler, job: Job, worker: Worker, limit: int = 10_000) -> tuple[int, Any]:
    """How many runnable jobs that fit `worker` rank before `job` there (counted up
    to `limit`), and the first of them."""
    fits: list[Taken] = []
    ahead, first = 0, None
    for ranked in core.dispatch.index.ranked(
        worker.view, core.dispatch.eligible_on(worker, fits, idle=True)
    ):
        if ranked.job.id == job.id or ahead >= limit:
            break
        ahead += 1
        first = first or ranked
    return ahead, first


def ended(core: Scheduler, job_ids: Iterable[int]) -> dict[int, JobState]:
    """The jobs among `job_ids` that have ended, with their end state."""
    out = {}
    for job_id in job_ids:
        state = core.job(job_id).state
        if state.ended:
            out[job_id] = state
    return out


def stuck(core: Scheduler, job_ids: Iterable[int]) -> dict[int, str]:
    """The jobs among `job_ids` that have not ended and cannot end without an admin,
    each with why in one line (the rule: `_StuckJobs`)."""
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        core.job(job_id)  # refuses an unknown id
    return _StuckJobs(core.jobs).why(ids)


def settled(core: Scheduler, job_ids: Iterable[int]) -> bool:
    """Every job among `job_ids` has ended or is stuck: what `farmd wait` waits for.
    Cheap while one of them has work it can run (then it is neither)."""
    going = [i for i in dict.fromkeys(job_ids) if not core.job(i).state.ended]
    if any(core.jobs[i].state not in HOLDING for i in going):
        return False
    return len(stuck(core, going)) == len(going)


def frame_holder(core: Scheduler, job_id: int, number: int | None) -> tuple[Frame, str]:
    """The frame whose log `farmd logs` shows and the worker that ran it last: the
    frame, or the chunk that holds frame `number`; the job's first started frame when
    `number` is None."""
    job = core.job(job_id)
    if number is None:
        started = [f for f in job.frames.made.values() if f.worker is not None]
        if not started:
            msg = f"job {job_id} has not started a frame yet: no log"
            raise JobSpecError(msg)
        frame = min(started, key=lambda f: job.frames.position(f.number) or 0)
    else:  # any frame of a chunk names the chunk, as `ID:FRAME` does in a control
        key = job.frames.unit_key(number)
        found = job.frames.peek(key) if key is not None else None
        if found is None:
            msg = f"job {job_id} has no frame {number}"
            raise JobSpecError(msg)
        frame = found
    if frame.worker is None:
        msg = f"frame {job_id}:{frame.number} has not run yet: no log"
        raise JobSpecError(msg)
    return frame, frame.worker
