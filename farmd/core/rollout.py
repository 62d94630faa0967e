"""Rollout: the farm's releases, where they are deployed, and which workers serve them.

Theory of operation
-------------------
A release (`farmd.releases`) is uploaded once and deployed to clusters; the pure
`Deployments` (`farmd.core.releases`) says which version of each release name serves a
cluster. This module is its place in the scheduler: it takes the release events
through the door (`AddRelease`, `DeployRelease`, `UndeployRelease`, `RollbackRelease`,
`RemoveRelease`, authorised as `Action.RELEASE`/`Action.DEPLOY`, the latter against
the cluster), keeps the workers told, and resolves jobs of a release's type.

*Workers.* A worker is told (`TellReleases`) the releases effective at its cluster when
it joins, when a reload moves it, and whenever a change affects its cluster. It fetches
and unpacks them, then says which it has ready and which it could not get
(`WorkerReleases`). The job types it runs are its own `--type` labels plus the types
of the releases it has ready *and* that are effective at its cluster now
(`release_types`): an undeploy takes a type away at once, and a new version's types
count once the worker has it. A worker that could not fetch a release keeps the reason
(`release_failures`), shown by `farmd workers` and `explain`.

*Jobs.* A job submitted with a job type and no command of its own is resolved at its
cluster (`resolve`): the type's release and version are *pinned* on the job, its
parameters are checked and typed, and its command is the type's template with them
filled in, leaving `{frame}`, `{start}`, `{end}`, `{release}` and `{python}` for the
worker (`farmd.releases.template`). The type's defaults apply to the options the
submission left at theirs. A pinned job never re-resolves: moving it to another cluster
keeps its version. It runs only on workers whose `release_types` hold its type; a
worker fetches the pinned version by digest if it does not have it (frames already
running finish on the version they started with, whatever is deployed meanwhile).

Pure: no I/O, no clock; the shell writes and serves the bundle files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from farmd.cluster import ClusterPath, parse_cluster
from farmd.core.authority import Action, check_scope
from farmd.core.releases import Deployments
from farmd.core.vocabulary import (
    AddRelease,
    Command,
    DeployRelease,
    DropBundle,
    RemoveRelease,
    RollbackRelease,
    TellReleases,
    UndeployRelease,
    WorkerReleases,
)
from farmd.errors import DeploymentError, JobSpecError
from farmd.jobs import Job
from farmd.releases.model import JobType
from farmd.releases.params import fill_command, resolve_params
from farmd.workers import Worker

MAX_KNOWN_RELEASES: Final = 500  # versions the farm holds at once (remove old ones)
MAX_FAILURE_CHARS: Final = 300  # a worker's reason for a release it could not get

ReleaseEvent = (
    AddRelease | DeployRelease | UndeployRelease | RollbackRelease | RemoveRelease | WorkerReleases
)


@attrs.frozen(kw_only=True)
class Resolved:
    """A job of a release's type, resolved at its cluster."""

    argv: tuple[str, ...]
    pinned: dict[str, Any]  # name, version, digest, size (and python for a task)
    params: dict[str, Any]  # typed values, defaults included
    job_type: JobType


class Rollout:
    """The release events, the workers' release types and typed jobs (module docs)."""

    def __init__(
        self,
        workers: dict[str, Worker],
        jobs: dict[int, Job],
        offer: Callable[[str], None],
        note: Callable[..., None],
    ) -> None:
        self.deployments = Deployments()
        self._workers = workers
        self._jobs = jobs
        self._offer = offer  # a worker may run more now: offer it work
        self._note = note
        self.changed = False  # the deployments changed since the shell last took them

    # ------------------------------------------------------------------ events

    def handle(self, event: ReleaseEvent, out: list[Command]) -> Any:
        match event:
            case AddRelease():
                if len(self.deployments.releases()) >= MAX_KNOWN_RELEASES:
                    msg = (
                        f"the farm holds {MAX_KNOWN_RELEASES} release versions, its most: "
                        "remove versions deployed nowhere (farmd release remove) first"
                    )
                    raise DeploymentError(msg)
                release = event.release
                change = self.deployments.add_release(release, event.digest, event.size, event.now)
                self._changed(change.changed, "release added", release.name, release.version)
                return self.release_view(release.name, release.version)
            case DeployRelease():
                cluster = parse_cluster(event.cluster)
                check_scope(event.by, Action.DEPLOY, [cluster])
                change = self.deployments.deploy(event.name, event.version, cluster, event.now)
            case UndeployRelease():
                cluster = parse_cluster(event.cluster)
                check_scope(event.by, Action.DEPLOY, [cluster])
                change = self.deployments.undeploy(event.name, cluster)
            case RollbackRelease():
                cluster = parse_cluster(event.cluster)
                check_scope(event.by, Action.DEPLOY, [cluster])
                change = self.deployments.rollback(event.name, cluster, event.now)
            case RemoveRelease():
                digest = self.deployments.known(event.name, event.version).digest
                change = self.deployments.remove(event.name, event.version)
                self._changed(change.changed, "release removed", event.name, event.version)
                if change.digest_unused:
                    out.append(DropBundle(digest=digest))
                return {"name": event.name, "version": event.version, "removed": True}
            case WorkerReleases():
                return self._worker_releases(event)
        # a deployment changed: tell the workers whose clusters it reached
        what = {"deploy": "release deployed", "undeploy": "release undeployed"}.get(
            change.action.value, "release rolled back"
        )
        self._changed(change.changed, what, change.name, change.version or "-", cluster)
        if change.changed and change.affected is not None:
            for worker in self._workers.values():
                if change.affected.contains(worker.cluster):
                    self.tell(worker, out)
        return {
            "name": change.name,
            "cluster": cluster,
            "version": change.version,
            "previous": change.previous,
            "changed": change.changed,
        }

    def _changed(self, changed: bool, what: str, name: str, version: str, *at: str) -> None:
        if not changed:
            return
        self.changed = True
        where = {"cluster": at[0]} if at else {}
        self._note("info", what, release=name, version=version, **where)

    def _worker_releases(self, event: WorkerReleases) -> dict[str, Any]:
        worker = self._workers.get(event.name)
        if worker is None:  # it left meanwhile: nothing to update
            return {}
        known = {(k.release.name, k.release.version) for k in self.deployments.releases()}
        worker.release_ready = {
            name: version for name, version in event.ready if (name, version) in known
        }
        worker.release_failures = {
            name: f"{version}: {why[:MAX_FAILURE_CHARS]}" for name, version, why in event.failed
        }
        if self._update_types(worker):
            self._offer(worker.name)
        return {}

    # ------------------------------------------------------------------ workers

    def tell(self, worker: Worker, out: list[Command]) -> None:
        """Tell `worker` what is effective at its cluster, and take away at once the
        types of releases that are not any more."""
        refs = []
        for name, effective in sorted(self.deployments.effective(worker.cluster).items()):
            known = self.deployments.known(name, effective.version)
            refs.append(
                {
                    "name": name,
                    "version": effective.version,
                    "digest": known.digest,
                    "size": known.size,
                }
            )
        if refs or worker.release_ready:  # a farm without releases says nothing
            out.append(TellReleases(worker=worker.name, releases=tuple(refs)))
        self._update_types(worker)

    def _update_types(self, worker: Worker) -> bool:
        """Recompute the worker's release types; whether it gained any."""
        effective = self.deployments.effective(worker.cluster)
        types: set[str] = set()
        for name, version in worker.release_ready.items():
            if name not in effective:
                continue
            try:
                release = self.deployments.known(name, version).release
            except DeploymentError:  # removed since
                continue
            types.update(t.name for t in release.job_types)
        new = frozenset(types)
        gained = bool(new - worker.release_types)
        worker.release_types = new
        return gained

    def fetchable(self, worker_name: str, digest: str) -> bool:
        """Whether a worker may fetch a bundle: one effective at its cluster, or the
        pinned release of a frame it runs. A worker enrolled for one show's clusters
        gets no other show's pipeline code."""
        worker = self._workers.get(worker_name)
        if worker is None:
            return False
        for name, found in self.deployments.effective(worker.cluster).items():
            if self.deployments.known(name, found.version).digest == digest:
                return True
        for job_id, _, _ in worker.running:
            job = self._jobs.get(job_id)
            if job is not None and job.pinned is not None and job.pinned["digest"] == digest:
                return True
        return False

    # ------------------------------------------------------------------ jobs

    def resolve(self, cluster: ClusterPath, type_name: str, given: Mapping[str, str]) -> Resolved:
        """A job of `type_name` with parameters `given`, at `cluster` (module docs)."""
        types = self.deployments.job_types_at(cluster)
        source = types.get(type_name)
        if source is None:
            there = ", ".join(sorted(types)) or "none"
            msg = (
                f"bad job: no release deployed at {cluster} provides job type {type_name!r} "
                f"(types there: {there}); give a command for a plain job of that type"
            )
            raise JobSpecError(msg)
        job_type = source.job_type
        values = resolve_params(job_type, given)
        known = self.deployments.known(source.release, source.version)
        pinned: dict[str, Any] = {
            "name": source.release,
            "version": source.version,
            "digest": known.digest,
            "size": known.size,
        }
        if job_type.python is not None:
            pinned["python"] = job_type.python
        argv = fill_command(job_type, values)  # the worker fills the rest
        return Resolved(argv=argv, pinned=pinned, params=dict(values), job_type=job_type)

    # ------------------------------------------------------------------ reads

    def release_view(self, name: str, version: str) -> dict[str, Any]:
        known = self.deployments.known(name, version)
        return {
            "name": name,
            "version": version,
            "digest": known.digest,
            "size": known.size,
            "added_at": known.added_at,
            "description": known.release.description,
            "job_types": [t.name for t in known.release.job_types],
            "deployed_at": [str(c) for c in self.deployments.where(name, version)],
        }

    def listing(self, cluster: str | None) -> dict[str, Any]:
        """`farmd release list`: every version the farm holds, where each is deployed,
        and, for a cluster, what is effective there and why."""
        releases = [
            self.release_view(k.release.name, k.release.version)
            for k in self.deployments.releases()
        ]
        for view in releases:
            view["workers_ready"] = sum(
                1
                for w in self._workers.values()
                if w.release_ready.get(view["name"]) == view["version"]
            )
        out: dict[str, Any] = {"releases": releases}
        if cluster is not None:
            path = parse_cluster(cluster)
            effective = self.deployments.effective(path)
            out["cluster"] = path
            out["effective"] = [
                {"name": name, "version": e.version, "deployed_at": e.deployed_at}
                for name, e in sorted(effective.items())
            ]
            out["why"] = self.deployments.explain(path)
        return out

    def job_types(self, cluster: str) -> dict[str, Any]:
        """`farmd types`: the job types at a cluster, with their parameters, so that a
        submitter can build its form from them."""
        path = parse_cluster(cluster)
        types = []
        for name, source in sorted(self.deployments.job_types_at(path).items()):
            wire = source.job_type.to_wire()
            wire.update(name=name, release=source.release, version=source.version)
            types.append(wire)
        return {"cluster": path, "types": types}

    def statistics(self) -> dict[str, Any]:
        """For metrics: workers with each (release, version) ready, and failures."""
        ready: dict[tuple[str, str], int] = {}
        failures = 0
        for worker in self._workers.values():
            for name, version in worker.release_ready.items():
                ready[(name, version)] = ready.get((name, version), 0) + 1
            failures += len(worker.release_failures)
        return {
            "known": len(self.deployments.releases()),
            "deployments": self.deployments.count(),
            "workers_ready": ready,
            "fetch_failures": failures,
        }

    # ------------------------------------------------------------------ store

    def take_snapshot(self) -> dict[str, Any] | None:
        if not self.changed:
            return None
        self.changed = False
        return self.deployments.snapshot()

    def restore(self, data: object) -> None:
        if data is not None:
            self.deployments = Deployments.restore(data)
