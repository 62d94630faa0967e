"""Releases in the core, without a network: deploying tells the workers of the clusters
it reaches, a worker's ready releases give it job types, a typed job is resolved at its
cluster and pinned, and runs only where its type is, with its template left for the
worker to fill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from farmd.core import Principal, Role, Scheduler
from farmd.core.vocabulary import (
    AddRelease,
    DeployRelease,
    DropBundle,
    FrameEnded,
    Outcome,
    RemoveRelease,
    RollbackRelease,
    RunOnWorker,
    SubmitJob,
    TellReleases,
    UndeployRelease,
    WorkerJoined,
    WorkerReleases,
)
from farmd.errors import DeploymentError, ForbiddenError, JobSpecError, ParamError
from farmd.releases import load_manifest
from farmd.releases.model import Release

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "releases"
DIGEST = "sha256:" + "ab" * 32


def pipeline(version: str = "2.3") -> Release:
    release = load_manifest(EXAMPLES / "pipeline-2.3" / "farmd-release.yaml")
    if version == release.version:
        return release
    return Release(
        name=release.name,
        version=version,
        description=release.description,
        job_types=release.job_types,
    )


def tells(outcome: Outcome) -> dict[str, tuple[dict[str, Any], ...]]:
    return {c.worker: c.releases for c in outcome.commands if isinstance(c, TellReleases)}


def runs(outcome: Outcome) -> list[RunOnWorker]:
    return [c for c in outcome.commands if isinstance(c, RunOnWorker)]


def farm() -> Scheduler:
    core = Scheduler()
    core.handle(AddRelease(release=pipeline("2.3"), digest=DIGEST, size=1000, now=1.0))
    core.handle(
        AddRelease(release=pipeline("2.4"), digest="sha256:" + "cd" * 32, size=1100, now=1.0)
    )
    for name, cluster in (("light1", "/show1/lighting"), ("other", "/show2")):
        core.handle(
            WorkerJoined(name=name, cluster=cluster, slots=4, now=2.0, properties={"os": "linux"})
        )
    return core


def test_a_deployment_tells_the_workers_below_it_and_only_them() -> None:
    core = farm()
    outcome = core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=3.0))
    told = tells(outcome)
    assert set(told) == {"light1"}
    assert told["light1"] == (
        {"name": "pipeline", "version": "2.3", "digest": DIGEST, "size": 1000},
    )
    assert outcome.changes.deployments is not None  # stored with the change
    # a worker that joins later is told at once
    joined = core.handle(WorkerJoined(name="light2", cluster="/show1/lighting/a", slots=1, now=4))
    assert tells(joined)["light2"][0]["version"] == "2.3"


def test_types_come_with_ready_releases_and_go_with_an_undeploy() -> None:
    core = farm()
    core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=3.0))
    assert "blender-render" not in core.workers["light1"].release_types  # not fetched yet
    core.handle(WorkerReleases(name="light1", ready=(("pipeline", "2.3"),), failed=(), now=4))
    assert core.workers["light1"].release_types == {"blender-render", "ffmpeg-encode"}
    assert core.workers["light1"].summary()["releases"] == {"pipeline": "2.3"}
    core.handle(UndeployRelease(name="pipeline", cluster="/show1", now=5.0))
    assert core.workers["light1"].release_types == frozenset()
    # a worker that could not fetch says why, and has no types from it
    core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=6.0))
    core.handle(
        WorkerReleases(
            name="light1", ready=(), failed=(("pipeline", "2.3", "digest mismatch"),), now=7
        )
    )
    assert core.workers["light1"].summary()["release_failures"] == {
        "pipeline": "2.3: digest mismatch"
    }
    assert core.workers["light1"].release_types == frozenset()


def typed(cluster: str = "/show1/lighting", **params: str) -> SubmitJob:
    return SubmitJob(
        argv=(),
        job_type="blender-render",
        params=tuple(f"{k}={v}" for k, v in params.items()),
        cluster=cluster,
        frames="1-3",
        now=10.0,
    )


def test_a_typed_job_is_pinned_and_runs_its_template_where_the_type_is() -> None:
    core = farm()
    core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=3.0))
    job_id = core.handle(typed(scene="/shots/a.blend", output="/r/a/####")).result
    job = core.jobs[job_id]
    assert job.pinned == {"name": "pipeline", "version": "2.3", "digest": DIGEST, "size": 1000}
    assert job.params == {
        "scene": "/shots/a.blend",
        "output": "/r/a/####",
        "engine": "cycles",
        "samples": 128,
    }
    # the type's defaults: retries 2, a 2 h limit, 2 slots, its env, its requirement
    assert (job.retries, job.time_limit, str(job.reserve)) == (2, 7200.0, "slots=2")
    assert job.env == {"BLENDER_USER_SCRIPTS": "/studio/blender/scripts"}
    assert job.detail()["release"] == "pipeline 2.3"
    # not dispatched until a worker has the release ready
    assert not job.frames.made or all(f.worker is None for f in job.frames.made.values())
    outcome = core.handle(
        WorkerReleases(name="light1", ready=(("pipeline", "2.3"),), failed=(), now=11)
    )
    started = runs(outcome)
    assert [r.worker for r in started] == ["light1", "light1"]  # 4 slots, 2 per frame
    first = started[0]
    assert first.release == job.pinned
    assert first.argv == (
        "blender", "-b", "/shots/a.blend", "-E", "cycles", "-o", "/r/a/####", "-f",
        "{frame}", "--", "--cycles-samples", "128",
    )  # fmt: skip
    assert first.env["FARMD_PARAMS"].startswith('{"engine": "cycles"')
    # a deploy of 2.4 changes nothing for this job: it stays pinned to 2.3
    core.handle(DeployRelease(name="pipeline", version="2.4", cluster="/show1", now=12.0))
    core.handle(FrameEnded(worker="light1", job_id=job_id, frame=1, attempt=1, exit_code=0, now=13))
    assert core.jobs[job_id].pinned["version"] == "2.3"  # type: ignore[index]
    # a job submitted now is pinned to 2.4
    later = core.handle(typed(scene="/b.blend", output="/r/b/#")).result
    assert core.jobs[later].pinned["version"] == "2.4"  # type: ignore[index]


def test_typed_submissions_are_refused_in_one_line() -> None:
    core = farm()
    core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=3.0))
    with pytest.raises(JobSpecError, match=r"no release deployed at /show2 provides job type"):
        core.handle(typed(cluster="/show2", scene="/a", output="/b"))
    with pytest.raises(ParamError, match=r"needs param 'output'"):
        core.handle(typed(scene="/a"))
    with pytest.raises(ParamError, match=r"param samples='many': not a valid int"):
        core.handle(typed(scene="/a", output="/b", samples="many"))
    with pytest.raises(JobSpecError, match=r"--param is for a job of a release's type"):
        core.handle(SubmitJob(argv=("echo",), job_type="x", params=("a=1",), now=1.0))
    assert not core.jobs  # nothing was submitted


def test_rollback_remove_and_who_may_deploy() -> None:
    core = farm()
    core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=3.0))
    core.handle(DeployRelease(name="pipeline", version="2.4", cluster="/show1", now=4.0))
    back = core.handle(RollbackRelease(name="pipeline", cluster="/show1", now=5.0))
    assert back.result["version"] == "2.3"
    assert tells(back)["light1"][0]["version"] == "2.3"
    with pytest.raises(DeploymentError, match="deployed"):
        core.handle(RemoveRelease(name="pipeline", version="2.3", now=6.0))
    removed = core.handle(RemoveRelease(name="pipeline", version="2.4", now=6.0))
    assert DropBundle(digest="sha256:" + "cd" * 32) in removed.commands
    wendy = Principal.personal("wendy", Role.WRANGLER, "/show1/+")
    core.handle(
        DeployRelease(name="pipeline", version="2.3", cluster="/show1/fx", now=7.0, by=wendy)
    )
    with pytest.raises(ForbiddenError, match=r"may not deploy releases in /show2"):
        core.handle(
            DeployRelease(name="pipeline", version="2.3", cluster="/show2", now=8.0, by=wendy)
        )
    alice = Principal.personal("alice", Role.ARTIST, "/show1/+")
    with pytest.raises(ForbiddenError, match=r"not deploy releases \(the artist role\)"):
        core.handle(
            DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=9.0, by=alice)
        )


def test_deployments_survive_a_restore() -> None:
    core = farm()
    outcome = core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=3.0))
    from farmd.core.vocabulary import Restore
    from farmd.rows import Snapshot

    again = Scheduler()
    again.handle(Restore(snapshot=Snapshot(deployments=outcome.changes.deployments), now=4.0))
    assert again.rollout.deployments.effective("/show1/lighting")["pipeline"].version == "2.3"


def test_a_worker_may_fetch_only_what_serves_its_cluster_or_what_it_runs() -> None:
    core = farm()
    core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show1", now=3.0))
    assert core.rollout.fetchable("light1", DIGEST)
    assert not core.rollout.fetchable("other", DIGEST)  # /show2: another show's code
    assert not core.rollout.fetchable("nobody", DIGEST)
    # a job pinned to 2.3 that runs on a /show2 worker (its restrictions allow it)
    core.handle(WorkerReleases(name="light1", ready=(("pipeline", "2.3"),), failed=(), now=4))
    core.handle(DeployRelease(name="pipeline", version="2.3", cluster="/show2", now=5.0))
    core.handle(WorkerReleases(name="other", ready=(("pipeline", "2.3"),), failed=(), now=6))
    core.handle(UndeployRelease(name="pipeline", cluster="/show2", now=7.0))
    assert not core.rollout.fetchable("other", DIGEST)
