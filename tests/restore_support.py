"""Rows and farms to restore, shared by the store tests.

`job_row`, `frame_row`, `user` and `token` make plain rows; a `Recorder` is a scheduler
whose every outcome's changes are kept, as the supervisor's are; `busy_farm` builds a
farm in every state at once and `RandomFarm` a random one; `seen` is everything a user
or a worker sees of a scheduler's queue, so a restored farm can be compared with the
one it came from.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import attrs

from farmd.core import (
    Event,
    FrameEnded,
    KillJobs,
    KillOnWorker,
    ModifyJob,
    Note,
    Outcome,
    Restore,
    RunOnWorker,
    Scheduler,
    SubmitJob,
    WorkerJoined,
    WorkerLost,
)
from farmd.errors import UserError
from farmd.ranking import WorkerView
from farmd.rows import Changes, FrameRow, JobRow, Snapshot, UserRow, WorkerTokenRow


def job_row(job_id: int, **fields: Any) -> JobRow:
    values: dict[str, Any] = {
        "id": job_id,
        "name": f"job{job_id}",
        "cluster": "/show1/comp",
        "priority": 50,
        "restrictions": "/show1/+",
        "cross_cluster": "/show2,/showA+",
        "argv": ("render", "--frame", "{frame}", "ünïcode ☃"),
        "depends_on": (),
        "submitted_at": 1_700_000_000.123456,
    }
    values.update(fields)
    return JobRow(**values)


def frame_row(job_id: int, number: int, position: int, **fields: Any) -> FrameRow:
    values: dict[str, Any] = {
        "job_id": job_id,
        "number": number,
        "position": position,
        "state": "pending",
        "worker": None,
        "attempts": 0,
        "started_at": None,
        "finished_at": None,
        "exit_code": None,
    }
    values.update(fields)
    return FrameRow(**values)


def user(name: str, **fields: object) -> UserRow:
    values: dict[str, object] = {
        "name": name,
        "role": "user",
        "clusters": None,
        "salt": "00ff",
        "digest": "ab" * 32,
        "created_at": 1_700_000_000.5,
    }
    values.update(fields)
    return UserRow(**values)  # type: ignore[arg-type]


def token(token_id: int, **fields: object) -> WorkerTokenRow:
    values: dict[str, object] = {
        "id": token_id,
        "hosts": "render[001-120]",
        "clusters": "/show1",
        "salt": "11",
        "digest": "cd" * 32,
        "created_at": 1_700_000_001.25,
    }
    values.update(fields)
    return WorkerTokenRow(**values)  # type: ignore[arg-type]


class Recorder:
    """A scheduler whose every outcome's changes are kept, as the supervisor's are."""

    def __init__(self) -> None:
        self.core = Scheduler()
        self.changes: list[Changes] = []
        self.clock = 1_700_000_000.0

    def now(self) -> float:
        self.clock += 0.125
        return self.clock

    def __call__(self, event: Event) -> Outcome:
        outcome = self.core.handle(event)
        self.changes.append(outcome.changes)
        return outcome


def starts(outcome: Outcome) -> list[RunOnWorker]:
    return [c for c in outcome.commands if isinstance(c, RunOnWorker)]


def stops(outcome: Outcome) -> list[KillOnWorker]:
    return [c for c in outcome.commands if isinstance(c, KillOnWorker)]


def notes(outcome: Outcome) -> list[str]:
    return [c.event for c in outcome.commands if isinstance(c, Note)]


def result(start: RunOnWorker, now: float, exit_code: int = 0) -> FrameEnded:
    return FrameEnded(
        worker=start.worker,
        job_id=start.job_id,
        frame=start.frame,
        attempt=start.attempt,
        exit_code=exit_code,
        now=now,
    )


PROBES = [
    WorkerView("/"),
    WorkerView("/show1/comp"),
    WorkerView("/show1/light"),
    WorkerView("/show2"),
    WorkerView("/show2/fx/sim"),
]


def workerless(view: dict[str, Any]) -> dict[str, Any]:
    """A job's view without what depends on the workers connected, which a restart
    does not bring back: a pending job's reason (`farmd.core.placement`)."""
    return {**view, "reason": None} if view["state"] == "pending" else view


def seen(core: Scheduler) -> dict[str, Any]:
    """Everything a user or a worker sees of the queue (but the workers it has)."""
    return {
        "jobs": [workerless(job) for job in core.jobs_page()["jobs"]],
        "details": {
            job["id"]: workerless(core.job_view(job["id"])) for job in core.jobs_page()["jobs"]
        },
        "index": sorted(core.dispatch.index, key=lambda queued: queued.id),
        "ranking": {str(view): core.dispatch.index.page(view, 1000) for view in PROBES},
        "job clusters": [
            (node["path"], node["jobs_here"], node["jobs_total"])
            for node in core.clusters_view()
            if node["jobs_total"]
        ],
    }


def frame_of(core: Scheduler, job_id: int, number: int) -> dict[str, Any]:
    (view,) = [f for f in core.job_view(job_id)["frame_list"] if f["frame"] == number]
    return dict(view)


def row_of(changes: Changes, job_id: int, number: int) -> FrameRow:
    (row,) = [f for f in changes.frames if (f.job_id, f.number) == (job_id, number)]
    return row


def running_frames(core: Scheduler) -> set[tuple[int, int, int]]:
    return {
        (job.id, frame.number, frame.attempts)
        for job in core.jobs.values()
        for frame in job.frames.values()
        if frame.state.value == "running"
    }


def restored(snapshot: Snapshot) -> Scheduler:
    core = Scheduler()
    core.handle(Restore(snapshot=snapshot, now=0.0))
    return core


def busy_farm() -> tuple[Recorder, dict[str, int], list[RunOnWorker]]:
    """A farm in every state at once: waiting, pending, running, complete, failed and
    killed frames; dependencies met and unmet; restrictions, patterns, a modified
    priority, and a frame requeued from a lost worker. Returns the recorder, job ids by
    name, and the frames still running."""
    farm = Recorder()
    ids: dict[str, int] = {}

    def submit(name: str, **fields: Any) -> None:
        out = farm(SubmitJob(argv=("render", "{frame}"), name=name, now=farm.now(), **fields))
        ids[name] = out.result

    submit("base", cluster="/show1/comp", priority=20, frames="1-4")
    submit("light", cluster="/show1/light", frames="5,1,3", depends_on=(ids["base"],))
    submit("fx", cluster="/show2/fx", priority=5, cross_cluster="/show1+,/show3", frames="1-10x3")
    submit(
        "final",
        cluster="/show2",
        restrictions="/show2/+ || /show1/*",
        depends_on=(ids["fx"], ids["base"]),
    )
    submit("doomed", cluster="/show1/comp", priority=1, frames="1-2")
    submit("solo", priority=3, restrictions="/show2/fx/*")
    submit("later", cluster="/show3", frames="1-3")

    running: dict[tuple[int, int], RunOnWorker] = {}

    def track(out: Outcome) -> None:
        for start in starts(out):
            running[(start.job_id, start.frame)] = start

    track(farm(WorkerJoined(name="w1", cluster="/show1/comp", slots=2, now=farm.now())))
    track(farm(WorkerJoined(name="w2", cluster="/show2/fx/sim", slots=1, now=farm.now())))
    track(
        farm(
            WorkerJoined(
                name="w3", cluster="/show1/light", slots=1, restrictions="/show1/+", now=farm.now()
            )
        )
    )
    # doomed (priority 1) went to w1 and w3: kill it with both frames running
    farm(KillJobs(job_ids=(ids["doomed"],), now=farm.now()))
    for key in [k for k in running if k[0] == ids["doomed"]]:
        track(farm(result(running.pop(key), farm.now(), exit_code=-15)))
    # finish what runs, one failure among them, for a few rounds
    for round_ in range(4):
        for key in sorted(running)[:2]:
            start = running.pop(key)
            code = 1 if (start.job_id, start.frame) == (ids["fx"], 4) else 0
            track(farm(result(start, farm.now(), exit_code=code)))
        if round_ == 1:
            farm(ModifyJob(job_id=ids["later"], priority=2, now=farm.now()))
    # w3 is lost: its frame goes back to pending with its attempt counted
    lost = [k for k, s in running.items() if s.worker == "w3"]
    farm(WorkerLost(name="w3", now=farm.now()))
    for key in lost:
        del running[key]
    return farm, ids, list(running.values())


def requeued_by_hand(snapshot: Snapshot) -> Snapshot:
    """`snapshot` with every running frame put back to pending, as a reclaim should."""
    frames = tuple(
        attrs.evolve(f, state="pending", started_at=None) if f.state == "running" else f
        for f in snapshot.frames
    )
    return attrs.evolve(snapshot, frames=frames)


class RandomFarm:
    """Random events against a recorder, with a model of what each worker host runs."""

    CLUSTERS = ("/", "/a", "/a/b", "/a/c", "/b", "/b/x/y")
    RESTRICTIONS = ("", "", "", "/a/+", "/b || /a/*", "/+", "/a/b")
    PATTERNS = ("", "", "", "/a+", "/b,/a/c", "/b/x+")
    FRAMES = ("", "1", "1-3", "2,9,4", "1-10x4")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.farm = Recorder()
        self.hosts: dict[str, set[tuple[int, int, int]]] = {}  # connected worker -> attempts

    def track(self, out: Outcome) -> None:
        for start in starts(out):
            self.hosts[start.worker].add((start.job_id, start.frame, start.attempt))

    def step(self) -> None:
        rng, farm, core = self.rng, self.farm, self.farm.core
        roll = rng.random()
        job_ids = list(core.jobs)
        event: Event
        if roll < 0.25 or not job_ids:
            deps = rng.sample(job_ids, k=min(len(job_ids), rng.choice((0, 0, 1, 2))))
            event = SubmitJob(
                argv=("cmd", "{frame}"),
                name=rng.choice(("", "shot", "ä")),
                cluster=rng.choice(self.CLUSTERS),
                priority=rng.choice((None, 1, 5, 5, 100)),
                restrictions=rng.choice(self.RESTRICTIONS),
                cross_cluster=rng.choice(self.PATTERNS),
                frames=rng.choice(self.FRAMES),
                depends_on=tuple(deps),
                now=farm.now(),
            )
        elif roll < 0.35:
            name = rng.choice(("w1", "w2", "w3", "w4"))
            held = tuple(sorted(self.hosts.get(name, ()))) if name in self.hosts else ()
            event = WorkerJoined(
                name=name,
                cluster=rng.choice(self.CLUSTERS),
                slots=rng.choice((1, 2)),
                restrictions=rng.choice(self.RESTRICTIONS),
                running=held,
                now=farm.now(),
            )
            self.hosts.setdefault(name, set())
        elif roll < 0.42 and self.hosts:
            name = rng.choice(sorted(self.hosts))
            event = WorkerLost(name=name, now=farm.now())
            del self.hosts[name]  # the host is gone, and its frames with it
        elif roll < 0.85 and any(self.hosts.values()):
            name = rng.choice(sorted(n for n, held in self.hosts.items() if held))
            job_id, frame, attempt = rng.choice(sorted(self.hosts[name]))
            self.hosts[name].discard((job_id, frame, attempt))
            event = FrameEnded(
                worker=name,
                job_id=job_id,
                frame=frame,
                attempt=attempt,
                exit_code=rng.choice((0, 0, 0, 0, 1)),
                now=farm.now(),
            )
        elif roll < 0.92:
            event = ModifyJob(
                job_id=rng.choice(job_ids),
                priority=rng.choice((None, 1, 7)),
                cluster=rng.choice((None, *self.CLUSTERS)),
                cross_cluster=rng.choice((None, *self.PATTERNS)),
                now=farm.now(),
            )
        else:
            event = KillJobs(job_ids=(rng.choice(job_ids),), now=farm.now())
        with contextlib.suppress(UserError):  # a refused event changes nothing
            self.track(farm(event))
