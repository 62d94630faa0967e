"""A worker host as the supervisor core holds it: what it is configured with, what it
has free, and what it runs.

Its `used` counts are the sum of what its `running` processes hold (`hold` and
`release` keep them so); `facts` and `view` are computed once, because a worker's
settings never change while it is connected (a reload that changes them makes a new
record, on `farmd.core`'s `WorkerReconfigured`). A plain mutable record owned by
`farmd.core.Scheduler`; nothing else mutates it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from farmd.cluster import ClusterPath, Restrictions
from farmd.ranking import WorkerView
from farmd.resources import Taken


@attrs.define
class Worker:
    name: str
    cluster: ClusterPath
    restrictions: Restrictions
    slots: int
    connected_at: float
    seq: int = 0  # join order: ties between workers resolve by it, the same in every run
    types: frozenset[str] = frozenset()  # the job types it runs
    properties: dict[str, Any] = attrs.field(factory=dict)  # host facts: os, cpus, memory...
    resources: dict[str, float] = attrs.field(factory=dict)  # totals, besides slots
    used: dict[str, float] = attrs.field(factory=dict)  # what running frames hold, slots too
    locked: str | None = None  # "drain" or "purge": takes no new work
    # (job, frame, attempt) of each process the worker runs, and what it holds
    running: dict[tuple[int, int, int], Taken] = attrs.field(factory=dict)
    # preemption disabled: jobs whose frame just ended here, to keep the freed slots
    sticky: list[int] = attrs.field(factory=list)
    # releases (`farmd.core.rollout`): those it has ready (name -> version), those it
    # could not get (name -> "version: why"), and the job types they give it
    release_ready: dict[str, str] = attrs.field(factory=dict)
    release_failures: dict[str, str] = attrs.field(factory=dict)
    release_types: frozenset[str] = frozenset()

    def runs(self, job_type: str, pinned: bool) -> bool:
        """Whether it runs jobs of `job_type`: a release's (`pinned`) only by a release
        it has ready; a plain one by its own labels or a release's."""
        return job_type in self.release_types or (not pinned and job_type in self.types)

    @property
    def free(self) -> float:
        """Free slots."""
        return self.slots - self.used.get("slots", 0)

    def available(self, name: str) -> float:
        total = self.slots if name == "slots" else self.resources.get(name, 0)
        return total - self.used.get(name, 0)

    def hold(self, key: tuple[int, int, int], taken: Taken) -> None:
        self.running[key] = taken
        used = self.used
        for name, amount in taken.items():
            used[name] = used.get(name, 0) + amount

    def release(self, key: tuple[int, int, int]) -> Taken:
        taken = self.running.pop(key)
        used = self.used
        for name, amount in taken.items():
            used[name] -= amount
        return taken

    @functools.cached_property
    def facts(self) -> dict[str, Any]:
        """What a requirement reads as `host.*`: its properties, then what farmd knows.
        A property never has one of farmd's names (`worker_settings.RESERVED_PROPERTIES`);
        `memory` is the `memory` counter, which farmd's agent sets to the host's."""
        return {
            **self.properties,
            "name": self.name,
            "cluster": self.cluster,
            "slots": self.slots,
            "types": sorted(self.types | self.release_types),
            **self.resources,
            "memory": self.resources.get("memory", 0),
        }

    @functools.cached_property
    def view(self) -> WorkerView:
        """What the ranking index needs of it; cluster and restrictions never change
        while it is connected, so this is built once, not at every pick."""
        return WorkerView(cluster=self.cluster, restrictions=self.restrictions)

    def settings(self) -> dict[str, Any]:
        """What it was configured with, in the form the supervisor computes for a
        registration (to tell whether a reload changes it)."""
        return {
            "cluster": self.cluster,
            "restrictions": str(self.restrictions),
            "slots": self.slots,
            "types": tuple(sorted(self.types)),
            "properties": dict(self.properties),
            "resources": dict(self.resources),
        }

    @property
    def summary_state(self) -> str:
        return "locked" if self.locked else "busy" if self.running else "idle"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cluster": self.cluster,
            "restrictions": str(self.restrictions),
            "state": self.summary_state,
            "locked": self.locked,
            "slots": self.slots,
            "used": self.used.get("slots", 0),
            "types": sorted(self.types | self.release_types),
            "releases": dict(sorted(self.release_ready.items())),
            "release_failures": dict(sorted(self.release_failures.items())),
            "properties": dict(self.properties),
            "resources": {n: [self.used.get(n, 0), t] for n, t in sorted(self.resources.items())},
            "running": sorted({f"{job}:{frame}" for job, frame, _ in self.running}),
            "connected_at": self.connected_at,
        }
