"""farmd.core.releases: deployments following the cluster tree, pins, rollback, removal,
unambiguous job types, and snapshot/restore; `effective` against a brute-force oracle."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmd.core.releases import MAX_HISTORY, Action, Affected, Deployments, Effective
from farmd.errors import ClusterPathError, DeploymentError, UserError
from farmd.releases import JobType, Param, ParamType, Release
from tests.strategies import MAX_DEPTH, PROPERTY_SETTINGS, SEGMENTS


def release(name: str, version: str, *types: str) -> Release:
    job_types = tuple(JobType(name=t, command=("run", t, "{frame}")) for t in types)
    return Release(name=name, version=version, job_types=job_types)


def digest_of(name: str, version: str) -> str:
    return f"sha256:{abs(hash((name, version))):064x}"[:71]


def farm(*releases: Release) -> Deployments:
    state = Deployments()
    for r in releases:
        state.add_release(r, digest_of(r.name, r.version), 100, now=1.0)
    return state


P1 = release("pipeline", "1.0", "blender-render")
P2 = release("pipeline", "2.0", "blender-render", "ffmpeg-encode")
TOOLS = release("tools", "1.0", "nuke-comp")
CLASH = release("other", "1.0", "ffmpeg-encode")


def versions(state: Deployments, cluster: str) -> dict[str, tuple[str, str]]:
    return {n: (e.version, e.deployed_at) for n, e in state.effective(cluster).items()}


# --------------------------------------------------------------------------- releases


def test_add_release_is_idempotent_and_versions_are_immutable() -> None:
    state = farm(P1)
    again = state.add_release(P1, digest_of("pipeline", "1.0"), 100, now=2.0)
    assert (again.action, again.changed) == (Action.ADD, False)
    with pytest.raises(DeploymentError) as info:
        state.add_release(P1, "sha256:" + "f" * 64, 100, now=2.0)
    assert "release pipeline 1.0 is already known with digest" in str(info.value)
    assert "give it a new version" in str(info.value)
    assert [k.release for k in state.releases()] == [P1]


def test_unknown_release_is_named() -> None:
    state = farm(P1)
    with pytest.raises(DeploymentError, match=r"release pipeline 3\.0; known versions: 1\.0"):
        state.deploy("pipeline", "3.0", "/show1", now=2.0)
    with pytest.raises(DeploymentError, match="unknown release nope 1; no version is known"):
        state.deploy("nope", "1", "/show1", now=2.0)


def test_bad_cluster_is_refused() -> None:
    state = farm(P1)
    with pytest.raises(ClusterPathError):
        state.deploy("pipeline", "1.0", "show1", now=2.0)


# --------------------------------------------------------------------------- the tree


def test_deployments_follow_the_tree() -> None:
    state = farm(P1, P2, TOOLS)
    change = state.deploy("pipeline", "2.0", "/show1", now=5.0)
    assert (change.action, change.version, change.previous) == (Action.DEPLOY, "2.0", None)
    assert change.affected == Affected("/show1")  # type: ignore[arg-type]
    assert versions(state, "/show1") == {"pipeline": ("2.0", "/show1")}
    assert versions(state, "/show1/fx/a") == {"pipeline": ("2.0", "/show1")}
    assert versions(state, "/show2") == {}
    assert versions(state, "/") == {}
    # a pin below overrides it there, and only there
    pin = state.deploy("pipeline", "1.0", "/show1/fx", now=6.0)
    assert pin.previous is None
    assert versions(state, "/show1/fx/a") == {"pipeline": ("1.0", "/show1/fx")}
    assert versions(state, "/show1/lighting") == {"pipeline": ("2.0", "/show1")}
    # the root serves everything not otherwise served
    state.deploy("tools", "1.0", "/", now=7.0)
    assert versions(state, "/show2/x") == {"tools": ("1.0", "/")}
    assert versions(state, "/show1/fx") == {
        "pipeline": ("1.0", "/show1/fx"),
        "tools": ("1.0", "/"),
    }
    assert state.where("pipeline") == ["/show1", "/show1/fx"]
    assert state.where("pipeline", "1.0") == ["/show1/fx"]
    assert state.deployed_at("/show1/fx") == {"pipeline": "1.0"}


def test_job_types_at() -> None:
    state = farm(P1, P2, TOOLS)
    state.deploy("pipeline", "2.0", "/show1", now=1.0)
    state.deploy("pipeline", "1.0", "/show1/fx", now=1.0)
    state.deploy("tools", "1.0", "/show1/fx", now=1.0)
    at_fx = state.job_types_at("/show1/fx/a")
    assert {t: (s.release, s.version) for t, s in at_fx.items()} == {
        "blender-render": ("pipeline", "1.0"),
        "nuke-comp": ("tools", "1.0"),
    }
    assert at_fx["nuke-comp"].job_type == TOOLS.job_types[0]
    assert set(state.job_types_at("/show1/lighting")) == {"blender-render", "ffmpeg-encode"}
    assert state.job_types_at("/show2") == {}


def test_redeploying_the_same_version_changes_nothing() -> None:
    state = farm(P2)
    state.deploy("pipeline", "2.0", "/show1", now=1.0)
    again = state.deploy("pipeline", "2.0", "/show1", now=2.0)
    assert not again.changed
    assert state.history("pipeline", "/show1") == []


def test_explain() -> None:
    state = farm(P1, P2, TOOLS)
    assert state.explain("/show1") == ["no release is deployed at /show1 or above it"]
    state.deploy("pipeline", "2.0", "/show1", now=1.0)
    state.deploy("pipeline", "1.0", "/show1/fx", now=1.0)
    state.deploy("tools", "1.0", "/", now=1.0)
    assert state.explain("/show1") == [
        "pipeline 2.0: deployed at /show1",
        "tools 1.0: deployed at /, inherited by /show1",
    ]
    assert state.explain("/show1/fx") == [
        "pipeline 1.0: pinned at /show1/fx to 1.0, overriding 2.0 at /show1",
        "tools 1.0: deployed at /, inherited by /show1/fx",
    ]
    assert state.explain("/show1/fx/a")[0] == (
        "pipeline 1.0: pinned at /show1/fx to 1.0, overriding 2.0 at /show1, "
        "inherited by /show1/fx/a"
    )
    state.deploy("tools", "1.0", "/show2", now=1.0)
    assert state.explain("/show2") == ["tools 1.0: deployed at /show2 (also deployed at /)"]


def test_clusters_affected_skip_pinned_subtrees() -> None:
    state = farm(P1, P2)
    state.deploy("pipeline", "1.0", "/show1/fx", now=1.0)
    state.deploy("pipeline", "1.0", "/show1/fx/deep", now=1.0)
    state.deploy("pipeline", "1.0", "/show1/comp", now=1.0)
    change = state.deploy("pipeline", "2.0", "/show1", now=2.0)
    affected = change.affected
    assert affected == Affected("/show1", ("/show1/comp", "/show1/fx"))  # type: ignore[arg-type]
    assert affected.contains("/show1")
    assert affected.contains("/show1/lighting/a")
    assert not affected.contains("/show1/fx")
    assert not affected.contains("/show1/fx/deep/x")
    assert not affected.contains("/show2")
    assert not affected.contains("/show10")
    assert state.clusters_affected("pipeline", "/") == Affected(
        "/",  # type: ignore[arg-type]
        ("/show1",),  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- changes


def test_undeploy_and_rollback() -> None:
    state = farm(P1, P2)
    state.deploy("pipeline", "1.0", "/show1", now=1.0)
    upgrade = state.deploy("pipeline", "2.0", "/show1", now=2.0)
    assert (upgrade.version, upgrade.previous) == ("2.0", "1.0")
    assert state.history("pipeline", "/show1") == ["1.0"]
    back = state.rollback("pipeline", "/show1", now=3.0)
    assert (back.action, back.version, back.previous) == (Action.ROLLBACK, "1.0", "2.0")
    assert versions(state, "/show1") == {"pipeline": ("1.0", "/show1")}
    with pytest.raises(DeploymentError, match="no earlier version of release pipeline was"):
        state.rollback("pipeline", "/show1", now=4.0)
    # an undeploy can be rolled back too
    gone = state.undeploy("pipeline", "/show1")
    assert (gone.action, gone.version, gone.previous) == (Action.UNDEPLOY, None, "1.0")
    assert versions(state, "/show1") == {}
    state.rollback("pipeline", "/show1", now=5.0)
    assert versions(state, "/show1") == {"pipeline": ("1.0", "/show1")}


def test_undeploy_where_not_deployed_names_what_serves() -> None:
    state = farm(P2)
    state.deploy("pipeline", "2.0", "/show1", now=1.0)
    with pytest.raises(DeploymentError) as info:
        state.undeploy("pipeline", "/show1/fx")
    assert str(info.value) == (
        "release pipeline is not deployed at /show1/fx "
        "(it serves /show1/fx from its deployment at /show1)"
    )
    with pytest.raises(DeploymentError, match=r"release pipeline is not deployed at /show2$"):
        state.undeploy("pipeline", "/show2")


def test_history_is_bounded() -> None:
    releases = [release("p", str(i), "t") for i in range(30)]
    state = farm(*releases)
    for r in releases:
        state.deploy("p", r.version, "/a", now=1.0)
    history = state.history("p", "/a")
    assert len(history) == 16
    assert history[-1] == "28"


def test_remove_is_refused_while_deployed() -> None:
    state = farm(P1, P2)
    state.deploy("pipeline", "1.0", "/show1", now=1.0)
    state.deploy("pipeline", "1.0", "/show2/fx", now=1.0)
    with pytest.raises(DeploymentError) as info:
        state.remove("pipeline", "1.0")
    assert str(info.value) == (
        "release pipeline 1.0 is deployed at /show1, /show2/fx: undeploy it there first"
    )
    assert isinstance(info.value, UserError)
    removed = state.remove("pipeline", "2.0")
    assert (removed.action, removed.previous, removed.digest_unused) == (Action.REMOVE, "2.0", True)
    with pytest.raises(DeploymentError, match=r"unknown release pipeline 2\.0"):
        state.remove("pipeline", "2.0")


def test_remove_leaves_the_rollback_history() -> None:
    state = farm(P1, P2)
    state.deploy("pipeline", "1.0", "/show1", now=1.0)
    state.deploy("pipeline", "2.0", "/show1", now=2.0)
    state.remove("pipeline", "1.0")
    assert state.history("pipeline", "/show1") == []
    with pytest.raises(DeploymentError, match="no earlier version"):
        state.rollback("pipeline", "/show1", now=3.0)


def test_a_shared_bundle_is_still_used_after_a_remove() -> None:
    state = Deployments()
    state.add_release(P1, "sha256:" + "a" * 64, 1, now=1.0)
    state.add_release(TOOLS, "sha256:" + "a" * 64, 1, now=1.0)
    assert not state.remove("pipeline", "1.0").digest_unused


# --------------------------------------------------------------------------- ambiguity


def test_a_deploy_that_makes_a_type_ambiguous_is_refused() -> None:
    state = farm(P1, P2, CLASH)
    state.deploy("other", "1.0", "/show1/fx", now=1.0)
    state.deploy("pipeline", "1.0", "/show1", now=1.0)  # no ffmpeg-encode: fine
    with pytest.raises(DeploymentError) as info:
        state.deploy("pipeline", "2.0", "/show1", now=2.0)
    assert str(info.value) == (
        "deploying pipeline 2.0 at /show1 would make job type 'ffmpeg-encode' ambiguous at "
        "/show1/fx: both other 1.0 (deployed at /show1/fx) and pipeline 2.0 (deployed at "
        "/show1) provide it"
    )
    assert versions(state, "/show1") == {"pipeline": ("1.0", "/show1")}  # nothing changed
    assert state.history("pipeline", "/show1") == []


def test_an_undeploy_that_uncovers_an_ambiguity_is_refused() -> None:
    state = farm(P1, P2, CLASH)
    state.deploy("pipeline", "2.0", "/show1", now=1.0)
    state.deploy("pipeline", "1.0", "/show1/fx", now=1.0)
    state.deploy("other", "1.0", "/show1/fx", now=1.0)
    with pytest.raises(DeploymentError, match="undeploying pipeline at /show1/fx would make"):
        state.undeploy("pipeline", "/show1/fx")
    assert versions(state, "/show1/fx")["pipeline"] == ("1.0", "/show1/fx")


def test_a_rollback_that_would_be_ambiguous_is_refused() -> None:
    state = farm(P1, P2, CLASH)
    state.deploy("pipeline", "2.0", "/show1/fx", now=1.0)
    state.deploy("pipeline", "1.0", "/show1/fx", now=1.0)
    state.deploy("other", "1.0", "/show1", now=1.0)
    with pytest.raises(DeploymentError, match=r"rolling pipeline back to 2\.0 at /show1/fx would"):
        state.rollback("pipeline", "/show1/fx", now=2.0)
    assert state.history("pipeline", "/show1/fx") == ["2.0"]


# --------------------------------------------------------------------------- store


def sample() -> Deployments:
    state = farm(P1, P2, TOOLS)
    state.deploy("pipeline", "1.0", "/show1", now=1.0)
    state.deploy("pipeline", "2.0", "/show1", now=2.0)
    state.deploy("pipeline", "1.0", "/show1/fx", now=3.0)
    state.deploy("tools", "1.0", "/", now=4.0)
    return state


def test_snapshot_restore_roundtrip() -> None:
    state = sample()
    data = msgpack.unpackb(msgpack.packb(state.snapshot()))
    back = Deployments.restore(data)
    assert back.snapshot() == state.snapshot()
    for cluster in ("/", "/show1", "/show1/fx/a", "/show2"):
        assert back.effective(cluster) == state.effective(cluster)
        assert back.job_types_at(cluster) == state.job_types_at(cluster)
    assert back.history("pipeline", "/show1") == ["1.0"]
    assert back.releases() == state.releases()


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.update(releases="x"), "releases must be a list"),
        (
            lambda d: d["deployments"].append(
                {"cluster": "/a", "name": "zz", "version": "1", "at": 0}
            ),
            "unknown release zz 1",
        ),
        (lambda d: d["deployments"].append(dict(d["deployments"][0])), "deployed twice"),
        (lambda d: d["deployments"][0].update(cluster="nope"), "bad cluster path"),
        (lambda d: d["releases"][0].update(digest="md5:x"), "bad digest"),
        (lambda d: d["releases"][0]["release"].update(version="a b"), "bad release data"),
        (lambda d: d["releases"].append(d["releases"][0]), "listed twice"),
        (lambda d: d["history"][0].update(versions=["a b"]), "bad version"),
        (lambda d: d["deployments"][0].pop("at"), "bad release state"),
    ],
)
def test_restore_refuses_bad_data(mutate: object, words: str) -> None:
    data = sample().snapshot()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(DeploymentError) as info:
        Deployments.restore(data)
    assert str(info.value).startswith("bad release state: ")
    assert words in str(info.value)


def test_restore_refuses_ambiguous_deployments() -> None:
    state = farm(P2, CLASH)
    state.deploy("pipeline", "2.0", "/show1", now=1.0)
    data = state.snapshot()
    data["deployments"].append({"cluster": "/", "name": "other", "version": "1.0", "at": 1.0})
    with pytest.raises(DeploymentError, match="ambiguous at /show1"):
        Deployments.restore(data)


# --------------------------------------------------------------------------- property

clusters = st.lists(st.sampled_from(SEGMENTS), max_size=MAX_DEPTH).map(
    lambda segs: "/" + "/".join(segs)
)
NAMES = ("p", "q", "r")
VERSIONS = ("1", "2", "3")
# each (name, version) provides a type of its own name: never ambiguous
ALL = [
    Release(
        name=n,
        version=v,
        job_types=(
            JobType(
                name=f"{n}-t",
                params=(Param(name="x", type=ParamType.INT, default=1),),
                command=("{x}",),
            ),
        ),
    )
    for n in NAMES
    for v in VERSIONS
]
operations = st.lists(
    st.tuples(
        st.sampled_from(["deploy", "undeploy", "rollback"]),
        st.sampled_from(NAMES),
        st.sampled_from(VERSIONS),
        clusters,
    ),
    max_size=25,
)


def oracle(deployed: dict[tuple[str, str], str], cluster: str) -> dict[str, Effective]:
    """Walk up from `cluster` to the root by cutting the path; the first deployment of
    each name met is the one that serves it."""
    found: dict[str, Effective] = {}
    path = cluster
    while True:
        for (at, name), version in sorted(deployed.items()):
            if at == path and name not in found:
                found[name] = Effective(version, at)  # type: ignore[arg-type]
        if path == "/":
            return found
        path = path.rsplit("/", 1)[0] or "/"


@PROPERTY_SETTINGS
@given(ops=operations, probes=st.lists(clusters, min_size=1, max_size=8))
def test_effective_matches_the_oracle(
    ops: list[tuple[str, str, str, str]], probes: list[str]
) -> None:
    state = farm(*ALL)
    model: dict[tuple[str, str], str] = {}
    history: dict[tuple[str, str], list[str]] = {}
    for action, name, version, cluster in ops:
        key = (cluster, name)
        if action == "deploy":
            before = model.get(key)
            state.deploy(name, version, cluster, now=0.0)
            if before is not None and before != version:
                history.setdefault(key, []).append(before)
                del history[key][:-MAX_HISTORY]
            model[key] = version
        elif action == "undeploy":
            if key not in model:
                with pytest.raises(DeploymentError):
                    state.undeploy(name, cluster)
                continue
            state.undeploy(name, cluster)
            history.setdefault(key, []).append(model.pop(key))
            del history[key][:-MAX_HISTORY]
        else:
            if not history.get(key):
                with pytest.raises(DeploymentError):
                    state.rollback(name, cluster, now=0.0)
                continue
            state.rollback(name, cluster, now=0.0)
            model[key] = history[key].pop()
    for probe in probes + [c for c, _ in model]:
        assert state.effective(probe) == oracle(model, probe)
        types = state.job_types_at(probe)
        assert {t: s.version for t, s in types.items()} == {
            f"{n}-t": e.version for n, e in oracle(model, probe).items()
        }
    assert Deployments.restore(state.snapshot()).snapshot() == state.snapshot()


# releases whose types overlap: p2 and q1 both provide "shared"
OVERLAPPING = [
    release("p", "1", "p-only"),
    release("p", "2", "p-only", "shared"),
    release("q", "1", "shared"),
    release("q", "2", "q-only"),
]


@PROPERTY_SETTINGS
@given(ops=operations, probes=st.lists(clusters, min_size=1, max_size=8))
def test_no_change_leaves_a_type_ambiguous(
    ops: list[tuple[str, str, str, str]], probes: list[str]
) -> None:
    state = farm(*OVERLAPPING)
    for action, name, version, cluster in ops:
        if name == "r" or version == "3":
            continue
        before = state.snapshot()
        try:
            if action == "deploy":
                state.deploy(name, version, cluster, now=0.0)
            elif action == "undeploy":
                state.undeploy(name, cluster)
            else:
                state.rollback(name, cluster, now=0.0)
        except DeploymentError:
            assert state.snapshot() == before  # a refusal changes nothing
    for probe in probes + state.where("p") + state.where("q"):
        provided = [
            t.name
            for n, e in state.effective(probe).items()
            for t in state.known(n, e.version).release.job_types
        ]
        assert len(provided) == len(set(provided)), (probe, state.explain(probe))
