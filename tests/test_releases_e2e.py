"""End-to-end: releases deployed per cluster (issue 15), with real processes.

Real `farmd serve` and `farmd worker` processes on 127.0.0.1. Each test builds small
releases in its `tmp_path`: `tool` 1.0, 2.0..., whose one job type `tool-write` runs
`python3 {release}/scripts/write.py OUT WORD {frame} GATE`, a script that appends
`WORD FRAME VERSION` to OUT, reading VERSION from a file *inside the release*, so a
frame's output says which version it really ran. With a GATE it first creates
`GATE.waiting` and blocks (bounded) until GATE exists, so a test can hold a frame of
one version running while it deploys another.

The tests look at what a user sees: `farmd release ...` and `farmd types` output,
`farmd workers --json` (`types`, `releases`, `release_failures`), `farmd job` (its
`release` and `params`, which worker ran each frame and when), `farmd explain`, the
output files the frames wrote, and the state dir (what a crash left in it). The
Tilebox MultiCluster example is the one in examples/releases, deployed as it ships.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import signal
import tarfile
from pathlib import Path
from typing import Any

import pytest

from farmd.client import Client
from farmd.errors import FarmdError
from farmd.protocol_releases import UploadRelease
from farmd.releases import bundle
from tests.e2e_support import (
    Farm,
    assert_refused,
    describe,
    lines,
    serve_again,
    wait_for,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
MULTICLUSTER = REPO / "examples" / "releases" / "multicluster-1.0"
TYPE = "tool-write"
TYPE_WAIT = 10.0  # seconds for a worker to pick up a deployment (fetch, unpack, report)

WRITE_SCRIPT = r'''"""tool frame: append "WORD FRAME VERSION" to OUT once GATE exists (if not -)."""
import os
import sys
import time

release = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(release, "VERSION"), encoding="utf-8") as handle:
    version = handle.read().strip()
out, word, frame, gate = sys.argv[1:5]
if gate != "-":
    open(gate + ".waiting", "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.02)
with open(out, "a", encoding="utf-8") as handle:
    handle.write(f"{word} {frame} {version}\n")
'''

MANIFEST = """\
name: tool
version: "{version}"
description: a tool for the end-to-end tests
job_types:
  tool-write:
    description: Append a line per frame
    params:
      out: {{type: path, required: true, description: the file to append to}}
      word: {{type: str, default: hello}}
      gate: {{type: str, default: "-"}}
      count: {{type: int, default: 1}}
    command: [python3, "{{release}}/scripts/write.py", "{{out}}", "{{word}}", "{{frame}}",
              "{{gate}}"]
"""


# --------------------------------------------------------------------------- helpers


def build_release(root: Path, version: str, *, padding: int = 0) -> Path:
    """A `tool` release directory of `version` under `root` (with `padding` random
    bytes in a file of their own, to make its bundle that much larger)."""
    directory = root / f"tool-{version}"
    (directory / "scripts").mkdir(parents=True)
    (directory / "scripts" / "write.py").write_text(WRITE_SCRIPT)
    (directory / "VERSION").write_text(version + "\n")
    (directory / "farmd-release.yaml").write_text(MANIFEST.format(version=version))
    if padding:
        (directory / "padding.bin").write_bytes(os.urandom(padding))
    return directory


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    """A .tar.gz at `path` holding `members` (name -> bytes), names taken as given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return path


def upload_and_deploy(farm: Farm, directory: Path, cluster: str) -> None:
    """Set-up through the client (the CLI's own deploy is asserted where it matters)."""
    uploaded = farm.api.upload_release(directory)
    farm.api.deploy_release(uploaded["name"], uploaded["version"], cluster)


def workers_by_name(farm: Farm) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in farm.cli_json("workers")}


def await_releases(farm: Farm, worker: str, releases: dict[str, str]) -> dict[str, Any]:
    """Wait until `farmd workers --json` shows `worker` with exactly `releases` ready;
    its entry."""

    def ready() -> dict[str, Any] | None:
        # (absent while it reconnects after a supervisor restart)
        entry = {w["name"]: w for w in farm.api.workers()}.get(worker)
        return entry if entry is not None and entry["releases"] == releases else None

    wait_for(ready, f"{worker} to have releases {releases}", timeout=TYPE_WAIT)
    return workers_by_name(farm)[worker]  # as the CLI shows it


def submit_write(farm: Farm, cluster: str, out: Path, *params: str, frames: str = "1") -> int:
    """`farmd submit --type tool-write --param out=OUT --param ... --cluster C`; the id."""
    args = ["--type", TYPE, "--param", f"out={out}", "--frames", frames, "--cluster", cluster]
    for param in params:
        args += [param] if param.startswith("--") else ["--param", param]
    return farm.submit_cli(*args)


def await_waiting(gate: Path) -> None:
    """Wait until a gated frame runs (its script made GATE.waiting)."""
    marker = Path(f"{gate}.waiting")
    wait_for(marker.exists, f"a frame to wait on {gate.name}", timeout=TYPE_WAIT)


def reasons_on(farm: Farm, job_id: int, worker: str) -> list[str]:
    """What `farmd explain ID --json --worker W` says holds the job back there."""
    explained = farm.cli_json("explain", str(job_id), "--worker", worker)
    (entry,) = explained["workers"]
    reasons: list[str] = entry["reasons"]
    return reasons


def held_releases(farm: Farm) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, version, deployed at) of every release `farmd release list --json` shows."""
    listed = farm.cli_json("release", "list")["releases"]
    return sorted((r["name"], r["version"], tuple(r["deployed_at"])) for r in listed)


def bundle_files(farm: Farm) -> list[str]:
    return sorted(p.name for p in (farm.state / "releases").glob("*.tar.gz"))


def upload_files(farm: Farm) -> list[str]:
    return sorted(p.name for p in (farm.state / "releases" / "uploads").iterdir())


def send_chunk(
    client: Client, data: bytes, digest: str, start: int, end: int, *, done: bool
) -> Any:
    """One `upload_release` chunk, `data[start:end]` of a bundle of `len(data)` bytes
    announced as `digest`, sent as is, past the client's own checks."""
    return client._call(
        UploadRelease,
        digest=digest,
        size=len(data),
        offset=start,
        data=base64.b64encode(data[start:end]).decode("ascii"),
        done=done,
    )


# --------------------------------------------------------------------------- deploy, run


def test_a_deployed_release_gives_its_cluster_a_job_type_that_runs_its_template(
    farm: Farm, tmp_path: Path
) -> None:
    release = build_release(tmp_path, "1.0")
    deployed = farm.cli_ok("release", "deploy", str(release), "--cluster", "/show1")
    assert deployed.splitlines()[-1] == "tool 1.0 deployed at /show1", deployed
    assert deployed.startswith("uploaded tool 1.0 (sha256:"), deployed

    farm.worker("light", "/show1/lighting")
    farm.worker("other", "/show2")
    light = await_releases(farm, "light", {"tool": "1.0"})
    assert light["types"] == [TYPE]
    assert light["release_failures"] == {}
    other = workers_by_name(farm)["other"]
    assert (other["types"], other["releases"]) == ([], {})

    shown = farm.cli_ok("types", "--cluster", "/show1/lighting")
    assert shown.splitlines()[0] == f"{TYPE}  (tool 1.0)  Append a line per frame", shown
    assert "    --param out=<path>  required  the file to append to" in shown
    assert "    --param word=<str>  default hello" in shown
    assert "    --param count=<int>  default 1" in shown
    (listed,) = farm.cli_json("types", "--cluster", "/show1/lighting")
    assert (listed["release"], listed["version"]) == ("tool", "1.0")
    assert [p["name"] for p in listed["params"]] == ["out", "word", "gate", "count"]
    assert "no job types at /show2" in farm.cli_ok("types", "--cluster", "/show2")

    out = tmp_path / "out.txt"
    job_id = submit_write(farm, "/show1/lighting", out, "word=lit", "count=3", frames="1-3")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert sorted(lines(out)) == ["lit 1 1.0", "lit 2 1.0", "lit 3 1.0"]
    job = farm.cli_json("job", str(job_id))
    assert job["release"] == "tool 1.0"
    assert job["params"] == {"out": str(out), "word": "lit", "gate": "-", "count": 3}
    assert {f["worker"] for f in job["frame_list"]} == {"light"}
    text = farm.cli_ok("job", str(job_id))
    assert f"  release: tool 1.0 (job type {TYPE})" in text, text
    assert f"  params: count=3 gate=- out={out} word=lit" in text, text

    # a parameter missing or of the wrong type is refused in one line naming it
    missing = assert_refused(farm.cli("submit", "--type", TYPE, "--cluster", "/show1/lighting"))
    assert missing == f"farmd: error: job type '{TYPE}' needs param 'out' (--param out=PATH)"
    wrong = assert_refused(
        farm.cli(
            "submit",
            *("--type", TYPE, "--param", f"out={out}", "--param", "count=many"),
            *("--cluster", "/show1/lighting"),
        )
    )
    assert wrong.startswith(f"farmd: error: job type '{TYPE}': param count='many': not a valid int")
    # and none of the type outside the release's clusters
    outside = assert_refused(
        farm.cli("submit", "--type", TYPE, "--param", f"out={out}", "--cluster", "/show2")
    )
    assert outside.startswith(
        f"farmd: error: bad job: no release deployed at /show2 provides job type '{TYPE}'"
    ), outside
    assert [j["id"] for j in farm.cli_json("jobs", "--all")["jobs"]] == [job_id]


# --------------------------------------------------------------------------- versions


def test_a_new_version_applies_to_new_jobs_and_a_pin_holds_a_cluster_back(
    farm: Farm, tmp_path: Path
) -> None:
    upload_and_deploy(farm, build_release(tmp_path, "1.0"), "/show1")
    farm.worker("light", "/show1/lighting")
    await_releases(farm, "light", {"tool": "1.0"})
    gate = tmp_path / "gate-a"
    out_a, out_b = tmp_path / "a.txt", tmp_path / "b.txt"
    job_a = submit_write(farm, "/show1/lighting", out_a, "word=a", f"gate={gate}")
    await_waiting(gate)

    deployed = farm.cli_ok(
        "release", "deploy", str(build_release(tmp_path, "2.0")), "--cluster", "/show1"
    )
    assert deployed.splitlines()[-1] == "tool 2.0 deployed at /show1 (was 1.0)", deployed
    job_b = submit_write(farm, "/show1/lighting", out_b, "word=b", frames="1-2")
    assert farm.cli_json("job", str(job_a))["release"] == "tool 1.0"
    assert farm.cli_json("job", str(job_b))["release"] == "tool 2.0"
    await_releases(farm, "light", {"tool": "2.0"})
    assert lines(out_a) == []  # still held: the new version did not disturb it

    gate.touch()
    assert farm.wait_jobs([job_a, job_b]) == {str(job_a): "complete", str(job_b): "complete"}
    assert lines(out_a) == ["a 1 1.0"]  # the frame finished on the version it started with
    assert sorted(lines(out_b)) == ["b 1 2.0", "b 2 2.0"]

    # pin /show1/fx to 1.0: its worker, on 2.0 until then, goes back to 1.0 live
    farm.worker("fx", "/show1/fx", restrictions="/show1/fx")
    await_releases(farm, "fx", {"tool": "2.0"})
    pinned = farm.cli_ok("release", "deploy", "tool@1.0", "--cluster", "/show1/fx")
    assert pinned == "tool 1.0 deployed at /show1/fx\n", pinned
    fx = await_releases(farm, "fx", {"tool": "1.0"})
    assert fx["types"] == [TYPE]
    out_fx, out_light = tmp_path / "fx.txt", tmp_path / "light.txt"
    # (restricted to fx's cluster: the light worker would run it too, on 1.0, its pin)
    job_fx = submit_write(farm, "/show1/fx", out_fx, "word=fx", "--restrictions=/show1/fx")
    job_light = submit_write(farm, "/show1/lighting", out_light, "word=light")
    assert farm.wait_jobs([job_fx, job_light]) == {
        str(job_fx): "complete",
        str(job_light): "complete",
    }
    assert lines(out_fx) == ["fx 1 1.0"]
    assert lines(out_light) == ["light 1 2.0"]
    assert farm.frames(job_fx)[1]["worker"] == "fx"
    assert workers_by_name(farm)["light"]["releases"] == {"tool": "2.0"}

    why = farm.cli_ok("release", "list", "--cluster", "/show1/fx")
    assert "at /show1/fx:\n  tool 1.0: pinned at /show1/fx to 1.0, overriding 2.0 at /show1" in why
    listed = farm.cli_json("release", "list", "--cluster", "/show1/fx")
    assert listed["effective"] == [{"name": "tool", "version": "1.0", "deployed_at": "/show1/fx"}]
    deployed_at = {r["version"]: r["deployed_at"] for r in listed["releases"]}
    assert deployed_at == {"1.0": ["/show1/fx"], "2.0": ["/show1"]}
    light_why = farm.cli_json("release", "list", "--cluster", "/show1/lighting")["why"]
    assert light_why == ["tool 2.0: deployed at /show1, inherited by /show1/lighting"]


# --------------------------------------------------------------------------- undeploy


def test_undeploy_takes_the_type_away_and_rollback_brings_versions_back(
    farm: Farm, tmp_path: Path
) -> None:
    upload_and_deploy(farm, build_release(tmp_path, "1.0"), "/show1")
    upload_and_deploy(farm, build_release(tmp_path, "2.0"), "/show1")
    farm.worker("light", "/show1/lighting")
    await_releases(farm, "light", {"tool": "2.0"})
    gate = tmp_path / "gate-a"
    out_a, out_b = tmp_path / "a.txt", tmp_path / "b.txt"
    job_a = submit_write(farm, "/show1/lighting", out_a, "word=a", f"gate={gate}")
    await_waiting(gate)
    job_b = submit_write(farm, "/show1/lighting", out_b, "word=b")  # queued behind a

    undeployed = farm.cli_ok("release", "undeploy", "tool", "--cluster", "/show1")
    assert undeployed == "tool undeployed at /show1 (was 2.0)\n", undeployed

    def lost_type() -> bool:
        return {w["name"]: w for w in farm.api.workers()}["light"]["types"] == []

    wait_for(lost_type, "light to lose the type", timeout=TYPE_WAIT)
    gate.touch()  # the running frame finishes on its version; b may not start
    assert farm.wait_jobs([job_a]) == {str(job_a): "complete"}
    assert lines(out_a) == ["a 1 2.0"]
    job = farm.cli_json("job", str(job_b))
    assert (job["state"], job["frame_list"][0]["state"], job["frame_list"][0]["worker"]) == (
        "pending",
        "pending",
        None,
    )
    assert reasons_on(farm, job_b, "light") == [
        f"type missing: the job is a '{TYPE}' job; the worker runs no typed jobs "
        "(release tool is not deployed at /show1/lighting or above)"
    ]
    refused = assert_refused(
        farm.cli("submit", "--type", TYPE, "--param", f"out={out_b}", "--cluster", "/show1")
    )
    assert f"job type '{TYPE}'" in refused, refused

    # rollback after an undeploy deploys again what was there; the queued job runs
    back = farm.cli_ok("release", "rollback", "tool", "--cluster", "/show1")
    assert back == "tool rolled back to 2.0 at /show1\n", back
    assert farm.wait_jobs([job_b]) == {str(job_b): "complete"}
    assert lines(out_b) == ["b 1 2.0"]
    # and again: the version deployed before 2.0
    back = farm.cli_ok("release", "rollback", "tool", "--cluster", "/show1")
    assert back == "tool rolled back to 1.0 at /show1\n", back
    await_releases(farm, "light", {"tool": "1.0"})
    out_c = tmp_path / "c.txt"
    job_c = submit_write(farm, "/show1/lighting", out_c, "word=c")
    assert farm.wait_jobs([job_c]) == {str(job_c): "complete"}
    assert lines(out_c) == ["c 1 1.0"]
    none_left = assert_refused(farm.cli("release", "rollback", "tool", "--cluster", "/show1"))
    assert "no earlier version of release tool was deployed at /show1" in none_left


# --------------------------------------------------------------------------- bad uploads


def test_a_corrupt_upload_is_refused_and_changes_nothing(farm: Farm, tmp_path: Path) -> None:
    upload_and_deploy(farm, build_release(tmp_path, "1.0"), "/show1")
    before = held_releases(farm)
    assert before == [("tool", "1.0", ("/show1",))]
    good = (tmp_path / "tool-1.0" / "farmd-release.yaml").read_bytes()

    bad_manifest = good.replace(
        b"    description: Append", b"    colour: red\n    description: Append"
    )
    bad = tarball(tmp_path / "bad-manifest.tar.gz", {"farmd-release.yaml": bad_manifest})
    line = assert_refused(farm.cli("release", "deploy", str(bad), "--cluster", "/show1"))
    assert line.endswith(
        "bad-manifest.tar.gz/farmd-release.yaml:6:5: job_types.tool-write: unknown key; "
        "allowed: description, params, command, python, chunk, requires, reserve, env, "
        "frame_timelimit, retries (got 'colour')"
    ), line

    escape = tarball(
        tmp_path / "escape.tar.gz",
        {"farmd-release.yaml": good.replace(b'"1.0"', b'"6.6"'), "../escape.txt": b"out"},
    )
    line = assert_refused(farm.cli("release", "deploy", str(escape), "--cluster", "/show1"))
    assert line.endswith("escape.tar.gz: member '../escape.txt' has an empty, '.' or '..' segment")

    # the same bundles past the client's own checks: the supervisor refuses them itself
    with Client(farm.address, token_file=farm.token_file, timeout=20.0) as client:
        for path, why in ((bad, "colour"), (escape, "../escape.txt")):
            data = path.read_bytes()
            with pytest.raises(FarmdError, match=why):
                send_chunk(client, data, bundle.digest(data), 0, len(data), done=True)
        # a bundle whose bytes are not those its digest announced: the last chunk says so
        data = bundle.pack(build_release(tmp_path, "3.0"))
        wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
        half = len(data) // 2
        assert send_chunk(client, data, wrong, 0, half, done=False) == {"received": half}
        with pytest.raises(
            FarmdError, match=rf"its bytes hash to sha256:[0-9a-f]{{64}}, not the {wrong} announced"
        ):
            send_chunk(client, data, wrong, half, len(data), done=True)

    assert held_releases(farm) == before
    assert farm.cli_json("types", "--cluster", "/show1") != []
    assert [t["version"] for t in farm.cli_json("types", "--cluster", "/show1")] == ["1.0"]
    assert len(bundle_files(farm)) == 1
    assert upload_files(farm) == []
    assert not list(tmp_path.rglob("escape.txt"))


# --------------------------------------------------------------------------- python tasks


def test_the_multicluster_example_runs_its_second_task_in_the_other_cluster(
    farm: Farm,
) -> None:
    deployed = farm.cli_ok("release", "deploy", str(MULTICLUSTER), "--cluster", "/")
    assert deployed.splitlines()[-1] == "multicluster 1.0 deployed at /", deployed
    farm.worker("testing", "/testing")
    farm.worker("other", "/other-cluster")
    await_releases(farm, "testing", {"multicluster": "1.0"})
    await_releases(farm, "other", {"multicluster": "1.0"})

    submit = ["--type", "multi-cluster", "--param", "other_cluster=/other-cluster"]
    root = farm.submit_cli(*submit, "--cluster", "/testing")
    assert farm.wait_jobs([root]) == {str(root): "complete"}
    job = farm.cli_json("job", str(root))
    assert (job["release"], job["params"]) == (
        "multicluster 1.0",
        {"other_cluster": "/other-cluster"},
    )
    first, second = job["subjob_ids"]
    one, two = farm.cli_json("job", str(first)), farm.cli_json("job", str(second))
    assert (one["state"], one["cluster"], one["parent"]) == ("complete", "/testing", root)
    assert (two["state"], two["cluster"], two["parent"]) == ("complete", "/other-cluster", root)
    assert [f["worker"] for f in one["frame_list"]] == ["testing"]
    assert [f["worker"] for f in two["frame_list"]] == ["other"]
    assert two["frame_list"][0]["started_at"] >= one["frame_list"][0]["finished_at"]

    # no worker in the other cluster: that sub-job waits there, never runs elsewhere
    root = farm.submit_cli(
        "--type", "multi-cluster", "--param", "other_cluster=/nowhere", "--cluster", "/testing"
    )

    def first_done() -> list[int] | None:
        job = farm.api.job(root)
        ids: list[int] = job["subjob_ids"]
        if job["state"] != "waiting" or len(ids) != 2:
            return None
        return ids if farm.api.job(ids[0])["state"] == "complete" else None

    what = "the root task and the first sub-job to complete"
    first, second = wait_for(first_done, what, timeout=TYPE_WAIT)
    two = farm.cli_json("job", str(second))
    assert (two["state"], two["cluster"]) == ("pending", "/nowhere")
    assert [(f["state"], f["worker"]) for f in two["frame_list"]] == [("pending", None)]
    assert farm.cli_json("job", str(root))["state"] == "waiting"  # for its sub-jobs
    for worker in ("testing", "other"):
        reasons = reasons_on(farm, second, worker)
        assert any("it accepts workers in '/nowhere/+' only" in r for r in reasons), reasons
    explained = farm.cli_ok("explain", str(second))
    assert "cluster restriction on the job's side" in explained, explained


# --------------------------------------------------------------------------- durability


def test_releases_survive_a_restart_and_a_killed_upload_leaves_nothing(
    bare_farm: Farm, tmp_path: Path
) -> None:
    farm = bare_farm
    config = tmp_path / "farm.yaml"
    # the smallest wire frame: the client uploads in 24 KiB chunks, so a release of a
    # few hundred KiB takes many (the whole upload of 3.0 at the end takes 9)
    config.write_text("supervisor:\n  max_frame_bytes: 65536\n")
    farm.serve("--config", str(config))
    upload_and_deploy(farm, build_release(tmp_path, "1.0"), "/show1")
    upload_and_deploy(farm, build_release(tmp_path, "2.0"), "/show1")
    farm.api.deploy_release("tool", "1.0", "/show1/fx")
    farm.worker("light", "/show1/lighting")
    await_releases(farm, "light", {"tool": "2.0"})
    before = held_releases(farm)
    why = farm.cli_json("release", "list", "--cluster", "/show1/fx")["why"]
    bundles = bundle_files(farm)
    assert len(bundles) == 2

    farm.restart("--config", str(config))
    assert held_releases(farm) == before
    assert farm.cli_json("release", "list", "--cluster", "/show1/fx")["why"] == why
    await_releases(farm, "light", {"tool": "2.0"})  # the worker came back on its own
    out = tmp_path / "out.txt"
    job_id = submit_write(farm, "/show1/lighting", out, "word=after")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert lines(out) == ["after 1 2.0"]
    back = farm.cli_ok("release", "rollback", "tool", "--cluster", "/show1")
    assert back == "tool rolled back to 1.0 at /show1\n"  # the history survived too

    # kill -9 in the middle of an upload of many chunks
    data = bundle.pack(build_release(tmp_path, "3.0", padding=200_000))
    digest = bundle.digest(data)
    chunk = 16 * 1024
    with Client(farm.address, token_file=farm.token_file, timeout=20.0) as client:
        for offset in range(0, 4 * chunk, chunk):
            sent = send_chunk(client, data, digest, offset, offset + chunk, done=False)
            assert sent == {"received": offset + chunk}
        (part,) = (farm.state / "releases" / "uploads").iterdir()
        assert part.stat().st_size == 4 * chunk
        assert farm.supervisor is not None
        assert farm.supervisor.stop(signal.SIGKILL) == -signal.SIGKILL
    serve_again(farm, "--config", str(config))
    assert upload_files(farm) == []
    assert bundle_files(farm) == bundles
    assert held_releases(farm) == [("tool", "1.0", ("/show1", "/show1/fx")), ("tool", "2.0", ())]
    listed = farm.cli("release", "show", "tool@3.0")
    assert "no release 'tool@3.0'" in assert_refused(listed), describe(listed)

    # and the same upload, whole, now goes through
    uploaded = farm.api.upload_release(tmp_path / "tool-3.0")
    assert (uploaded["version"], uploaded["digest"]) == ("3.0", digest)
    assert len(bundle_files(farm)) == 3
    (shown,) = farm.cli_json("release", "show", "tool@3.0")["releases"]
    assert (shown["digest"], shown["deployed_at"]) == (digest, [])
