"""Which release serves which cluster: known releases, deployments, their history.

Theory of operation
-------------------
`Deployments` holds two things, and nothing else:

- the *known* releases, `(name, version) -> Known(digest, size, release, added_at)`:
  what was uploaded. A version is immutable: the same `(name, version)` added again with
  another digest is refused.
- the *deployments*: for a cluster path and a release name, the deployed version (and
  when), plus a per-(cluster, name) *history*, a stack of the versions deployed there
  before (at most `MAX_HISTORY`), which `rollback` pops.

Deployments follow the cluster tree. The release NAME *effective* at cluster X is the
deployment of NAME at the deepest of X's ancestors-or-self that has one: a release
deployed at `/show1` serves `/show1/fx/a`, unless `/show1/fx` has its own deployment of
the same name (a pin, possibly of another version), which then serves that subtree.
A deployment at `/` serves every cluster. `effective(cluster)` walks up the path, so it
costs the path's depth times a dict lookup.

Job types must be unambiguous: at no cluster may two effective releases provide the same
job type name, or a submit of that type could not say which it means. Every change
(deploy, undeploy, rollback) is computed on a copy of the deployments first and checked
at every cluster whose effective set it can change (the changed cluster and every
deployment point below it: between deployment points the effective set is constant);
one that would make a type ambiguous is refused, naming the type, the cluster and both
releases, and nothing changes. So `job_types_at` never has to choose.

The methods return what changed (a `Change`, with `affected`: which clusters' effective
releases it changed, for the supervisor to tell their workers) or raise a
`DeploymentError` naming the release and the cluster. No I/O, no clock: the time of a
change is passed in. `snapshot()`/`restore()` are plain data for the store.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from farmd.cluster import ROOT, ClusterPath, ancestors, is_within, parse_cluster
from farmd.errors import DeploymentError, UserError
from farmd.releases.model import JobType, Release, name_problem, version_problem
from farmd.values import show

MAX_HISTORY: Final = 16  # earlier versions remembered per (cluster, name)


@attrs.frozen
class Known:
    """A release the farm holds: its bundle's digest and size, and what it declares."""

    digest: str
    size: int
    release: Release
    added_at: float


@attrs.frozen
class Effective:
    """The version of a release that serves a cluster, and where it was deployed."""

    version: str
    deployed_at: ClusterPath


@attrs.frozen
class TypeSource:
    """Where a job type available at a cluster comes from."""

    release: str
    version: str
    job_type: JobType


@attrs.frozen
class Deployed:
    version: str
    at: float  # when it was deployed


@attrs.frozen
class Affected:
    """The clusters whose effective version of a release a change changed: `root` and
    everything below it, except the subtrees under `except_below`, which have their own
    deployment of that release and so saw nothing change."""

    root: ClusterPath
    except_below: tuple[ClusterPath, ...] = ()

    def contains(self, cluster: str) -> bool:
        if not is_within(cluster, self.root):
            return False
        return not any(is_within(cluster, pin) for pin in self.except_below)


class Action(enum.Enum):
    ADD = "add"
    DEPLOY = "deploy"
    UNDEPLOY = "undeploy"
    ROLLBACK = "rollback"
    REMOVE = "remove"


@attrs.frozen(kw_only=True)
class Change:
    """What one operation did. `version` is the version now deployed at `cluster` (None
    after an undeploy), `previous` the one before (None if none). `changed` is False for
    a no-op (deploying the version already there, adding a known release again)."""

    action: Action
    name: str
    version: str | None
    previous: str | None = None
    cluster: ClusterPath | None = None
    affected: Affected | None = None
    changed: bool = True
    digest_unused: bool = False  # after a remove: no known release has this bundle now


_Key = tuple[ClusterPath, str]  # (cluster, release name)


class Deployments:
    """The farm's releases and where they are deployed. See the module docstring."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], Known] = {}
        # cluster -> release name -> what is deployed there
        self._deployed: dict[ClusterPath, dict[str, Deployed]] = {}
        self._history: dict[_Key, list[str]] = {}

    # ----------------------------------------------------------------- releases

    def add_release(self, release: Release, digest: str, size: int, now: float) -> Change:
        """Know an uploaded release. The same bundle again is a no-op; another bundle
        under a known (name, version) is refused: a version is immutable."""
        key = (release.name, release.version)
        known = self._known.get(key)
        if known is not None:
            if known.digest != digest:
                msg = (
                    f"release {release.label} is already known with digest {known.digest}, "
                    f"not {digest}: a version cannot change, give it a new version"
                )
                raise DeploymentError(msg)
            return Change(
                action=Action.ADD, name=release.name, version=release.version, changed=False
            )
        self._known[key] = Known(digest, size, release, now)
        return Change(action=Action.ADD, name=release.name, version=release.version)

    def known(self, name: str, version: str) -> Known:
        found = self._known.get((name, version))
        if found is None:
            versions = sorted(v for n, v in self._known if n == name)
            hint = f"known versions: {', '.join(versions)}" if versions else "no version is known"
            msg = f"unknown release {name} {version}; {hint}"
            raise DeploymentError(msg)
        return found

    def releases(self) -> list[Known]:
        """Every known release, by name then version text."""
        return [self._known[key] for key in sorted(self._known)]

    def remove(self, name: str, version: str) -> Change:
        """Forget a release that is deployed nowhere. It also leaves the rollback
        histories, so no rollback can bring it back."""
        known = self.known(name, version)
        places = self.where(name, version)
        if places:
            msg = (
                f"release {name} {version} is deployed at {', '.join(places)}: "
                "undeploy it there first"
            )
            raise DeploymentError(msg)
        del self._known[(name, version)]
        for key, stack in list(self._history.items()):
            if key[1] == name and version in stack:
                stack[:] = [v for v in stack if v != version]
                if not stack:
                    del self._history[key]
        unused = all(k.digest != known.digest for k in self._known.values())
        return Change(
            action=Action.REMOVE, name=name, version=None, previous=version, digest_unused=unused
        )

    # ----------------------------------------------------------------- deployments

    def deploy(self, name: str, version: str, cluster: str, now: float) -> Change:
        """Deploy a known release at `cluster` (and so below it, where not pinned)."""
        path = parse_cluster(cluster)
        self.known(name, version)
        current = self._deployed.get(path, {}).get(name)
        if current is not None and current.version == version:
            return Change(
                action=Action.DEPLOY,
                name=name,
                version=version,
                previous=version,
                cluster=path,
                affected=self.clusters_affected(name, path),
                changed=False,
            )
        planned = self._planned(path, name, Deployed(version, now))
        self._refuse_ambiguity(planned, path, f"deploying {name} {version} at {path}")
        self._deployed = planned
        if current is not None:
            self._remember(path, name, current.version)
        return self._change(Action.DEPLOY, name, version, current, path)

    def undeploy(self, name: str, cluster: str) -> Change:
        """Take the deployment of `name` at `cluster` away; what is deployed above it
        (if anything) serves that subtree again. The version goes on the history, so
        `rollback` brings it back."""
        path = parse_cluster(cluster)
        current = self._deployed.get(path, {}).get(name)
        if current is None:
            msg = f"release {name} is not deployed at {path}{self._serving_hint(name, path)}"
            raise DeploymentError(msg)
        planned = self._planned(path, name, None)
        self._refuse_ambiguity(planned, path, f"undeploying {name} at {path}")
        self._deployed = planned
        self._remember(path, name, current.version)
        return self._change(Action.UNDEPLOY, name, None, current, path)

    def rollback(self, name: str, cluster: str, now: float) -> Change:
        """Deploy again at `cluster` the version of `name` deployed there before the
        current one (or before an undeploy)."""
        path = parse_cluster(cluster)
        stack = self._history.get((path, name), [])
        if not stack:
            msg = f"no earlier version of release {name} was deployed at {path}"
            raise DeploymentError(msg)
        version = stack[-1]
        self.known(name, version)
        current = self._deployed.get(path, {}).get(name)
        planned = self._planned(path, name, Deployed(version, now))
        shown = f"rolling {name} back to {version} at {path}"
        self._refuse_ambiguity(planned, path, shown)
        self._deployed = planned
        stack.pop()
        if not stack:
            del self._history[(path, name)]
        return self._change(Action.ROLLBACK, name, version, current, path)

    def _change(
        self,
        action: Action,
        name: str,
        version: str | None,
        before: Deployed | None,
        path: ClusterPath,
    ) -> Change:
        return Change(
            action=action,
            name=name,
            version=version,
            previous=None if before is None else before.version,
            cluster=path,
            affected=self.clusters_affected(name, path),
        )

    def _remember(self, path: ClusterPath, name: str, version: str) -> None:
        stack = self._history.setdefault((path, name), [])
        stack.append(version)
        del stack[:-MAX_HISTORY]

    def _planned(
        self, path: ClusterPath, name: str, deployed: Deployed | None
    ) -> dict[ClusterPath, dict[str, Deployed]]:
        """The deployments with one entry changed, as a new dict (the old one stays
        as it is until the change is checked)."""
        planned = {cluster: dict(names) for cluster, names in self._deployed.items()}
        here = planned.setdefault(path, {})
        if deployed is None:
            here.pop(name, None)
        else:
            here[name] = deployed
        if not here:
            del planned[path]
        return planned

    def _refuse_ambiguity(
        self, planned: Mapping[ClusterPath, Mapping[str, Deployed]], path: ClusterPath, doing: str
    ) -> None:
        """Refuse a change that would leave two effective releases with one job type at
        `path` or at a deployment point below it (see the module docstring)."""
        points = [path, *sorted(c for c in planned if c != path and is_within(c, path))]
        for cluster in points:
            providers: dict[str, tuple[str, str, ClusterPath]] = {}
            for name, effective in sorted(_effective_in(planned, cluster).items()):
                release = self._known[(name, effective.version)].release
                for job_type in release.job_types:
                    other = providers.get(job_type.name)
                    if other is not None:
                        msg = (
                            f"{doing} would make job type {job_type.name!r} ambiguous at "
                            f"{cluster}: both {other[0]} {other[1]} (deployed at {other[2]}) "
                            f"and {name} {effective.version} (deployed at "
                            f"{effective.deployed_at}) provide it"
                        )
                        raise DeploymentError(msg)
                    providers[job_type.name] = (name, effective.version, effective.deployed_at)

    def _serving_hint(self, name: str, path: ClusterPath) -> str:
        found = self.effective(path).get(name)
        if found is None:
            return ""
        return f" (it serves {path} from its deployment at {found.deployed_at})"

    # ----------------------------------------------------------------- queries

    def effective(self, cluster: str) -> dict[str, Effective]:
        """Release name -> the version serving `cluster` and where it was deployed."""
        return _effective_in(self._deployed, parse_cluster(cluster))

    def job_types_at(self, cluster: str) -> dict[str, TypeSource]:
        """Job type name -> the release and version that provide it at `cluster`
        (unambiguous: see the module docstring)."""
        types: dict[str, TypeSource] = {}
        for name, found in sorted(self.effective(cluster).items()):
            release = self._known[(name, found.version)].release
            for job_type in release.job_types:
                types[job_type.name] = TypeSource(name, found.version, job_type)
        return types

    def count(self) -> int:
        """How many (cluster, release) deployments there are."""
        return sum(len(names) for names in self._deployed.values())

    def deployed_at(self, cluster: str) -> dict[str, str]:
        """Release name -> version deployed at exactly `cluster` (not inherited)."""
        return {n: d.version for n, d in self._deployed.get(parse_cluster(cluster), {}).items()}

    def where(self, name: str, version: str | None = None) -> list[ClusterPath]:
        """The clusters where `name` (at `version`, or any) is deployed, in order."""
        return sorted(
            cluster
            for cluster, names in self._deployed.items()
            if name in names and (version is None or names[name].version == version)
        )

    def history(self, name: str, cluster: str) -> list[str]:
        """Earlier versions of `name` at `cluster`, most recent last (what rollback pops)."""
        return list(self._history.get((parse_cluster(cluster), name), []))

    def explain(self, cluster: str) -> list[str]:
        """One line per release effective at `cluster`, saying why."""
        path = parse_cluster(cluster)
        lines = []
        for name, found in sorted(self.effective(path).items()):
            shadowed = self._shadowed(name, found.deployed_at)
            line = f"{name} {found.version}: deployed at {found.deployed_at}"
            if shadowed is not None:
                up, version = shadowed
                if version != found.version:
                    line = (
                        f"{name} {found.version}: pinned at {found.deployed_at} to "
                        f"{found.version}, overriding {version} at {up}"
                    )
                else:
                    line += f" (also deployed at {up})"
            if found.deployed_at != path:
                line += f", inherited by {path}"
            lines.append(line)
        if not lines:
            lines.append(f"no release is deployed at {path} or above it")
        return lines

    def _shadowed(self, name: str, at: ClusterPath) -> tuple[ClusterPath, str] | None:
        """The next deployment of `name` above `at` (which `at` overrides), if any."""
        for cluster in ancestors(at)[1:]:
            found = self._deployed.get(cluster, {}).get(name)
            if found is not None:
                return cluster, found.version
        return None

    def clusters_affected(self, name: str, cluster: str) -> Affected:
        """The clusters whose effective `name` follows a deployment at `cluster`: its
        subtree, less the subtrees pinned by their own deployment of `name`."""
        path = parse_cluster(cluster)
        pins = sorted(
            c
            for c, names in self._deployed.items()
            if c != path and name in names and is_within(c, path)
        )
        # a pin inside another pin is already excluded by the outer one
        outer = tuple(p for p in pins if not any(q != p and is_within(p, q) for q in pins))
        return Affected(path, outer)

    # ----------------------------------------------------------------- store

    def snapshot(self) -> dict[str, Any]:
        """Plain data (msgpack/JSON-able) that `restore` reads back."""
        return {
            "releases": [
                {
                    "digest": k.digest,
                    "size": k.size,
                    "added_at": k.added_at,
                    "release": k.release.to_wire(),
                }
                for k in self.releases()
            ],
            "deployments": [
                {"cluster": cluster, "name": name, "version": d.version, "at": d.at}
                for cluster in sorted(self._deployed)
                for name, d in sorted(self._deployed[cluster].items())
            ],
            "history": [
                {"cluster": cluster, "name": name, "versions": list(stack)}
                for (cluster, name), stack in sorted(self._history.items())
            ],
        }

    @classmethod
    def restore(cls, data: object) -> Deployments:
        """The state a `snapshot` describes; data that does not fit is refused
        (DeploymentError, naming the entry), not half restored."""
        try:
            return _restore(cls(), data)
        except (UserError, KeyError, TypeError, ValueError) as exc:
            msg = f"bad release state: {exc}"
            raise DeploymentError(msg) from None


def _effective_in(
    deployed: Mapping[ClusterPath, Mapping[str, Deployed]], cluster: ClusterPath
) -> dict[str, Effective]:
    found: dict[str, Effective] = {}
    for up in ancestors(cluster):
        for name, d in deployed.get(up, {}).items():
            if name not in found:
                found[name] = Effective(d.version, up)
    return found


def _entries(data: Mapping[str, Any], key: str) -> Iterable[Mapping[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list):
        msg = f"{key} must be a list (got {show(items)})"
        raise DeploymentError(msg)
    for item in items:
        if not isinstance(item, Mapping):
            msg = f"{key}: an entry must be a mapping (got {show(item)})"
            raise DeploymentError(msg)
        yield item


def _restore(state: Deployments, data: object) -> Deployments:
    if not isinstance(data, Mapping):
        msg = f"must be a mapping (got {show(data)})"
        raise DeploymentError(msg)
    for item in _entries(data, "releases"):
        release = Release.from_wire(item["release"])
        digest, size, added_at = item["digest"], item["size"], item["added_at"]
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            msg = f"release {release.label}: bad digest {show(digest)}"
            raise DeploymentError(msg)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            msg = f"release {release.label}: bad size {show(size)}"
            raise DeploymentError(msg)
        if (release.name, release.version) in state._known:
            msg = f"release {release.label} is listed twice"
            raise DeploymentError(msg)
        state._known[(release.name, release.version)] = Known(
            digest, size, release, float(added_at)
        )
    for item in _entries(data, "deployments"):
        cluster, name, version = parse_cluster(item["cluster"]), item["name"], item["version"]
        state.known(name, version)  # refuses a deployment of an unknown release
        if name in state._deployed.get(cluster, {}):
            msg = f"release {name} is deployed twice at {cluster}"
            raise DeploymentError(msg)
        state._deployed.setdefault(cluster, {})[name] = Deployed(version, float(item["at"]))
    for item in _entries(data, "history"):
        cluster, name, versions = parse_cluster(item["cluster"]), item["name"], item["versions"]
        if name_problem(name) is not None or not isinstance(versions, list) or not versions:
            msg = f"history at {cluster}: bad entry for {show(name)}"
            raise DeploymentError(msg)
        for version in versions:
            if version_problem(version) is not None:
                msg = f"history of {name} at {cluster}: bad version {show(version)}"
                raise DeploymentError(msg)
        state._history[(cluster, name)] = list(versions[-MAX_HISTORY:])
    # the restored deployments must hold the invariant every change keeps
    for cluster in sorted(state._deployed) or [ROOT]:
        state._refuse_ambiguity(state._deployed, cluster, f"the deployments at {cluster}")
    return state
