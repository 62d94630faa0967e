"""End-to-end: matching frames to workers by job type, requirement and reservation.

Real `farmd serve` and `farmd worker` processes on 127.0.0.1. Workers advertise job types
(`--type`), host facts (`--property KEY=VALUE`, besides os, arch, cpus, memory and
hostname found on the host) and counters (`--resource gpu=1`); the supervisor's config
declares farm-wide counters (`resources: {license.nuke: 2}`). Jobs ask for them with
`farmd submit --type`, `--requires EXPR` and `--reserve NAME=AMOUNT,...`.

The tests look at what a user sees: which worker ran each frame (`farmd job --json`), how
many frames of a job run at once (its frame counts), what a frame was given
(`$FARMD_SLOTS`), what `farmd resources` reports. How reservations of a worker's counters
and of farm-wide licenses hold as frames start, end and workers are lost is proven in
process, with fake workers: tests/test_matching_inprocess.py. Frames that must overlap
block until the test releases them, so what runs together is decided by the scheduler,
not by timing. A submit is dispatched before the
supervisor answers it, so right after `farmd submit` returns, the frames it could start
are running (their attempt counted), and a frame still pending is one that did not fit.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e_support import (
    Farm,
    Proc,
    assert_refused,
    gated,
    lines,
    wait_for,
)

pytestmark = pytest.mark.e2e


# --------------------------------------------------------------------------- helpers


def start_worker(farm: Farm, name: str, *extra: str, slots: int = 1) -> Proc:
    """`farmd worker --name NAME --slots N EXTRA...` (`--type`, `--property`,
    `--resource`); returns once the supervisor lists it as connected."""
    return farm.worker(name, slots=slots, extra=extra)


def frame_table(farm: Farm, job_id: int) -> dict[int, tuple[str, str | None]]:
    """Frame number -> (state, worker) as `farmd job --json` shows them."""
    job = farm.cli_json("job", str(job_id))
    return {f["frame"]: (f["state"], f["worker"]) for f in job["frame_list"]}


def counts(farm: Farm, job_id: int) -> dict[str, int]:
    """A job's frame counts as `farmd job --json` shows them, leaving out the zeros."""
    job = farm.cli_json("job", str(job_id))
    return {state: n for state, n in job["frames"].items() if n}


def running_frames(farm: Farm, job_id: int) -> list[int]:
    return sorted(n for n, f in farm.frames(job_id).items() if f["state"] == "running")


def workers_by_name(farm: Farm) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in farm.cli_json("workers")}


def ran_on(farm: Farm, job_id: int) -> set[str | None]:
    return {worker for _, worker in frame_table(farm, job_id).values()}


def reasons_on(farm: Farm, job_id: int, worker: str) -> list[str]:
    """What `farmd explain ID --json` says holds the job back on `worker`."""
    explained = farm.cli_json("explain", str(job_id), "--worker", worker)
    (entry,) = explained["workers"]
    reasons: list[str] = entry["reasons"]
    return reasons


# --------------------------------------------------------------------------- job types


def test_a_typed_job_runs_only_on_workers_of_its_type(farm: Farm) -> None:
    start_worker(farm, "blend", "--type", "blender", "--type", "nuke")
    start_worker(farm, "plain")
    assert workers_by_name(farm)["blend"]["types"] == ["blender", "nuke"]
    assert workers_by_name(farm)["plain"]["types"] == []

    # two frames, two idle workers: one frame runs on `blend`, the other waits for it
    typed = farm.submit_cli(
        "--job-type", "blender", "--frames", "1-2", "--", *gated(farm, "B", "typed")
    )
    assert farm.cli_json("job", str(typed))["job_type"] == "blender"
    assert frame_table(farm, typed) == {1: ("running", "blend"), 2: ("pending", None)}
    assert workers_by_name(farm)["plain"]["state"] == "idle"
    assert reasons_on(farm, typed, "plain") == [
        "type missing: the job is a 'blender' job; the worker runs no typed jobs"
    ]

    farm.release("typed")
    assert farm.wait_jobs([typed]) == {str(typed): "complete"}
    assert frame_table(farm, typed) == {1: ("complete", "blend"), 2: ("complete", "blend")}

    # an untyped job runs anywhere: its two frames run at once, one on each worker
    untyped = farm.submit_cli("--frames", "1-2", "--", *gated(farm, "U", "untyped"))
    assert {state for state, _ in frame_table(farm, untyped).values()} == {"running"}
    assert ran_on(farm, untyped) == {"blend", "plain"}
    farm.release("untyped")
    assert farm.wait_jobs([untyped]) == {str(untyped): "complete"}

    # a type no worker runs: the job waits, and `explain` says why on each worker
    nobody = farm.submit_cli("--job-type", "maya", "--", "true")
    assert frame_table(farm, nobody) == {1: ("pending", None)}
    assert reasons_on(farm, nobody, "blend") == [
        "type missing: the job is a 'maya' job; the worker runs blender, nuke"
    ]


def test_a_worker_of_a_new_type_picks_up_the_waiting_typed_job(farm: Farm) -> None:
    start_worker(farm, "plain")
    job_id = farm.submit_cli("--job-type", "houdini", "--", *gated(farm, "H", "go"))
    assert frame_table(farm, job_id) == {1: ("pending", None)}

    start_worker(farm, "sim", "--type", "houdini")
    wait_for(lambda: running_frames(farm, job_id) == [1], "the houdini frame to start")
    farm.release("go")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert frame_table(farm, job_id) == {1: ("complete", "sim")}


def test_a_bad_job_type_is_refused_and_no_job_is_created(farm: Farm) -> None:
    refused = assert_refused(farm.cli("submit", "--job-type", "Blender 4", "--", "true"))
    assert "Blender 4" in refused
    assert farm.cli_json("jobs")["jobs"] == []


# --------------------------------------------------------------------------- requirements


def test_a_requirement_picks_the_workers_whose_properties_satisfy_it(farm: Farm) -> None:
    start_worker(farm, "big", "--property", "os_flavour=rocky", "--property", "ram=64")
    start_worker(farm, "small", "--property", "ram=8")
    shown = workers_by_name(farm)
    assert shown["big"]["properties"]["ram"] == 64
    assert shown["big"]["properties"]["os_flavour"] == "rocky"
    assert shown["small"]["properties"]["ram"] == 8
    # os, arch, cpus, memory and hostname are found on the host
    assert shown["small"]["properties"]["os"] == "linux"
    assert shown["small"]["properties"]["cpus"] >= 1

    wanted = "host.ram >= 32 and host.os_flavour == rocky"
    job_id = farm.submit_cli("--requires", wanted, "--frames", "1-3", "--", *gated(farm, "R", "r"))
    assert farm.cli_json("job", str(job_id))["requires"] == wanted
    assert frame_table(farm, job_id) == {
        1: ("running", "big"),
        2: ("pending", None),
        3: ("pending", None),
    }
    assert workers_by_name(farm)["small"]["state"] == "idle"
    assert reasons_on(farm, job_id, "small") == ["requirement not met: host.ram >= 32"]

    farm.release("r")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert ran_on(farm, job_id) == {"big"}

    # a fact found on the host: both workers run linux, so both take a frame at once
    linux = farm.submit_cli(
        "--requires", "host.os == linux", "--frames", "1-2", "--", *gated(farm, "L", "linux")
    )
    assert {state for state, _ in frame_table(farm, linux).values()} == {"running"}
    assert ran_on(farm, linux) == {"big", "small"}
    farm.release("linux")
    assert farm.wait_jobs([linux]) == {str(linux): "complete"}

    # no worker fits: the job waits; a worker started with the property takes it
    windows = farm.submit_cli("--requires", "host.os == windows or host.ram > 100", "--", "true")
    assert frame_table(farm, windows) == {1: ("pending", None)}
    assert reasons_on(farm, windows, "big") == [
        "requirement not met: host.os == windows or host.ram > 100"
    ]
    start_worker(farm, "huge", "--property", "ram=128")
    assert farm.wait_jobs([windows]) == {str(windows): "complete"}
    assert frame_table(farm, windows) == {1: ("complete", "huge")}


def test_a_bad_requirement_is_refused_with_its_column_and_no_job_is_created(
    farm: Farm,
) -> None:
    result = farm.cli("submit", "--requires", "host.ram >> 3", "--", "true")
    refused = assert_refused(result)
    assert "host.ram >> 3" in refused
    assert "column 11" in refused
    # an unknown namespace too
    refused = assert_refused(farm.cli("submit", "--requires", "hots.ram > 3", "--", "true"))
    assert "column 1" in refused
    assert farm.cli_json("jobs")["jobs"] == []


# --------------------------------------------------------------------------- reservations


def test_slots_n_plus_takes_every_free_slot_and_says_how_many(farm: Farm) -> None:
    start_worker(farm, "w", slots=4)
    busy = farm.submit_cli("--", *gated(farm, "P", "busy"))
    assert counts(farm, busy) == {"running": 1}

    out = farm.root / "slots.txt"
    # record what the frame was given, then block like the others
    record = ["sh", "-c", 'echo "$FARMD_FRAME $FARMD_SLOTS" >> "$1"; shift; exec "$@"', "sh"]
    wide = farm.submit_cli(
        "--reserve", "slots=2+", "--", *record, str(out), *gated(farm, "W", "wide")
    )
    assert counts(farm, wide) == {"running": 1}
    wait_for(lambda: lines(out), "the slots=2+ frame to record its slots")
    assert lines(out) == ["1 3"]
    assert workers_by_name(farm)["w"]["used"] == 4
    farm.release("busy")
    farm.release("wide")
    assert farm.wait_jobs([busy, wide]) == {str(busy): "complete", str(wide): "complete"}


def test_slots_n_star_waits_for_an_idle_host_and_takes_all_its_slots(farm: Farm) -> None:
    start_worker(farm, "w", slots=3)
    busy = farm.submit_cli("--", *gated(farm, "P", "busy"))
    out = farm.root / "slots.txt"
    record = ["sh", "-c", 'echo "$FARMD_FRAME $FARMD_SLOTS" >> "$1"', "sh", str(out)]
    whole = farm.submit_cli("--reserve", "slots=2*", "--", *record)
    assert counts(farm, whole) == {"pending": 1}
    farm.release("busy")
    assert farm.wait_jobs([busy, whole]) == {str(busy): "complete", str(whole): "complete"}
    assert lines(out) == ["1 3"]


@pytest.mark.parametrize("reserve", ["slots=2", "slots=2*"])
def test_explain_tells_why_a_job_waits_for_slots_on_a_partly_busy_worker(
    farm: Farm, reserve: str
) -> None:
    start_worker(farm, "w", slots=2)
    busy = farm.submit_cli("--", *gated(farm, "P", "busy"))
    wide = farm.submit_cli("--reserve", reserve, "--", "true")
    assert counts(farm, wide) == {"pending": 1}
    # one slot of two is free: the job cannot start here yet, and `explain` says so
    shown = farm.cli_ok("explain", str(wide)).splitlines()
    assert not [line for line in shown if line.endswith(": would run next")], shown
    assert reasons_on(farm, wide, "w") != [], shown
    farm.release("busy")
    assert farm.wait_jobs([busy, wide]) == {str(busy): "complete", str(wide): "complete"}


# --------------------------------------------------------------------------- licenses


def licensed_farm(farm: Farm, total: int) -> dict[str, Proc]:
    """A supervisor whose config declares `license.nuke: TOTAL`, and three workers of
    two slots each."""
    config = farm.root / "farm.yaml"
    config.write_text(f"supervisor:\n  resources:\n    license.nuke: {total}\n")
    farm.serve("--config", str(config))
    return {name: start_worker(farm, name, slots=2) for name in ("w1", "w2", "w3")}


def resources_table(farm: Farm) -> list[list[str]]:
    return [row.split() for row in farm.cli_ok("resources").splitlines()]


def test_the_resources_table_shows_used_free_and_total_as_numbers(bare_farm: Farm) -> None:
    farm = bare_farm
    licensed_farm(farm, 2)
    header = ["RESOURCE", "USED", "FREE", "TOTAL"]
    assert resources_table(farm) == [header, ["license.nuke", "0", "2", "2"]]
    job_id = farm.submit_cli(
        "--frames", "1-2", "--reserve", "license.nuke=1", "--", *gated(farm, "N", "lic{frame}")
    )
    assert counts(farm, job_id) == {"running": 2}
    assert farm.cli_json("resources") == {"license.nuke": {"total": 2, "used": 2, "free": 0}}
    farm.release("lic1")
    wait_for(lambda: farm.frames(job_id)[1]["state"] == "complete", "frame 1 to end")
    assert resources_table(farm) == [header, ["license.nuke", "1", "1", "2"]]
    farm.release("lic2")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    # every license in use: FREE is 0
    busy = farm.submit_cli(
        "--frames", "3-4", "--reserve", "license.nuke=1", "--", *gated(farm, "N", "lic{frame}")
    )
    assert counts(farm, busy) == {"running": 2}
    assert resources_table(farm) == [header, ["license.nuke", "2", "0", "2"]]
    farm.release("lic3")
    farm.release("lic4")
    assert farm.wait_jobs([busy]) == {str(busy): "complete"}


def test_resource_refusals_name_what_the_farm_has(bare_farm: Farm) -> None:
    farm = bare_farm
    config = farm.root / "farm.yaml"
    config.write_text("supervisor:\n  resources:\n    license.nuke: 2\n")
    farm.serve("--config", str(config))

    refused = assert_refused(farm.cli("submit", "--reserve", "license.maya=1", "--", "true"))
    assert "license.maya" in refused
    assert "license.nuke" in refused
    refused = assert_refused(farm.cli("resources", "license.maya=3"))
    assert "license.maya" in refused
    refused = assert_refused(farm.cli("submit", "--reserve", "slots=0", "--", "true"))
    assert "slots" in refused
    assert farm.cli_json("jobs")["jobs"] == []
    assert farm.cli_json("resources") == {"license.nuke": {"total": 2, "used": 0, "free": 2}}
