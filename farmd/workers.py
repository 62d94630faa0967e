"""A worker host as the supervisor core holds it: what it is configured with, what it
has free, and what it runs.

Its `used` counts are the sum of what its `running` processes hold (`hold` and
`release` keep them so); `facts` and `view` are computed once, because a worker's
settings never change while it is connected (a reload that changes them makes a new
record, on `farmd.core`'s `WorkerReconfigured`). A plain mutable record owned by
`farmd.core.Scheduler`; nothing else mutates it. Pure: no I/O, no clock.

`load` is the last `Load` the worker's agent reported (docs/protocol.md 5.7), with the
time of the event that brought it: data to show, never a reason to dispatch or not.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Final

import attrs

from farmd.cluster import ClusterPath, Restrictions
from farmd.errors import InternalError
from farmd.ranking import WorkerView
from farmd.resources import Taken

MAX_LOAD_AVERAGE: Final = 1e9  # the protocol's bound (farmd.protocol_load)


def _check_load(load: Load) -> None:
    """Bounds the wire already checked (`farmd.protocol_load`), kept here too so the
    core never holds a wild value whatever made the event: one is our bug."""
    problems = {
        "cpu": not 0 <= load.cpu <= 1,
        "memory_used": not 0 <= load.memory_used <= load.memory_total,
        "load_average": len(load.load_average) != 3
        or not all(0 <= a <= MAX_LOAD_AVERAGE for a in load.load_average),
        "at": not math.isfinite(load.at),
    }
    bad = [name for name, wrong in problems.items() if wrong]
    if bad:
        msg = f"bad host load {load!r}: {', '.join(bad)} out of bounds"
        raise InternalError(msg)


@attrs.frozen(kw_only=True)
class Load:
    """How busy a worker's host was when its agent last said: CPU use over the agent's
    last interval as a fraction of all cores, memory used and in all (bytes), the 1, 5
    and 15 minute load averages, and `at`, the time of the event that brought it."""

    cpu: float
    memory_used: int
    memory_total: int
    load_average: tuple[float, float, float]
    at: float

    def __attrs_post_init__(self) -> None:
        _check_load(self)

    def view(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "memory_used": self.memory_used,
            "memory_total": self.memory_total,
            "load_average": list(self.load_average),
            "at": self.at,
        }


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
    load: Load | None = None  # the host's load as its agent last reported it

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
            "load": None if self.load is None else self.load.view(),
        }
