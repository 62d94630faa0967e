"""Shares per cluster: who owns the farm's slots, who uses them, and who lends to whom.

Theory of operation
-------------------
Qube's clustering document lays a farm out as a budget: each department owns the hosts
it paid for, gets first use of them, and lends them to others while it leaves them idle
(its cluster order: a worker serves its own cluster's jobs first). `shares` says, for
every node of the cluster tree, how that budget stands now, counting the node's whole
subtree as one department (`/show1` includes `/show1/fx`):

- `slots`: the slots of the workers in the subtree (what it owns), `free` of them idle;
- `used`: the slots the subtree's jobs hold, wherever they run;
- `lent`: the slots of the subtree's workers that jobs from outside it hold;
- `borrowed`: the slots the subtree's jobs hold on workers outside it;
- `queued`: the frames of the subtree's jobs that wait to run.

So `used - borrowed` is what the subtree runs on its own hosts, and `slots - free -
lent` the same from the hosts' side. A frame that holds more than a slot counts what it
holds (`reserve: slots=4` is 4). Computed from the workers' running frames and the jobs'
pending counts, in time proportional to the running frames and jobs times the tree's
depth: for `farmd clusters`, the dashboard and the metrics, not for every pick. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from farmd.cluster import ancestors, is_within
from farmd.frames import FrameState

if TYPE_CHECKING:
    from farmd.jobs import Job
    from farmd.workers import Worker


@attrs.define
class Share:
    slots: float = 0.0
    free: float = 0.0
    used: float = 0.0
    lent: float = 0.0
    borrowed: float = 0.0
    queued: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "free": self.free,
            "used": self.used,
            "lent": self.lent,
            "borrowed": self.borrowed,
            "queued": self.queued,
        }


def shares(
    workers: Iterable[Worker], jobs: Mapping[int, Job], paths: Iterable[str]
) -> dict[str, Share]:
    """Each of `paths`' share (module docs), over its subtree."""
    out: dict[str, Share] = {path: Share() for path in paths}

    def up(path: str) -> list[Share]:
        return [out[a] for a in ancestors(path) if a in out]

    for worker in workers:
        free = worker.slots - worker.used.get("slots", 0)
        for share in up(worker.cluster):
            share.slots += worker.slots
            share.free += free
        for (job_id, _, _), taken in worker.running.items():
            job = jobs.get(job_id)
            if job is None:
                continue
            held = float(taken.get("slots", 1))
            for share in up(job.cluster):
                share.used += held
            for path in ancestors(job.cluster):
                if path in out and not is_within(worker.cluster, path):
                    out[path].borrowed += held
            for path in ancestors(worker.cluster):
                if path in out and not is_within(job.cluster, path):
                    out[path].lent += held
    for job in jobs.values():
        pending = job.frame_counts[FrameState.PENDING]
        if pending:
            for share in up(job.cluster):
                share.queued += pending
    return out
