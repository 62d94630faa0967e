"""Non-admins: the user token artists submit with, the highest priority they may set,
and the settings a worker learns from the supervisor when it registers."""

from __future__ import annotations

import os
import shlex
import stat
import sys
from pathlib import Path

import pytest

from farmd.client import Client
from farmd.errors import ForbiddenError
from tests.e2e_support import Farm, assert_refused, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """\
supervisor:
  highest_user_priority: 10
workers:
  hosts:
    w1: {cluster: /show1, types: [nuke], properties: {rack: b}}
"""


@pytest.fixture
def farm(bare_farm: Farm, tmp_path: Path) -> Farm:
    config = tmp_path / "farm.yaml"
    config.write_text(CONFIG)
    bare_farm.serve("--config", str(config))
    return bare_farm


def as_user(farm: Farm, *args: str) -> list[str]:
    """A command line run with the user token: it follows the farm token `Farm.cli`
    puts first, and the last --token-file wins."""
    command, *rest = args
    return [command, "--token-file", str(farm.state / "user_token"), *rest]


def test_the_user_token_submits_and_reads_but_controls_nothing(farm: Farm) -> None:
    user_token = farm.state / "user_token"
    assert stat.S_IMODE(os.stat(user_token).st_mode) == 0o640
    assert user_token.read_text().strip() != farm.token_file.read_text().strip()
    job_id = int(farm.cli_ok(*as_user(farm, "submit", "--priority", "50", "--", "true")))
    assert farm.job(job_id)["priority"] == 50
    assert [j["id"] for j in farm.cli_json(*as_user(farm, "jobs", "--json"))["jobs"]] == [job_id]
    for command in (("kill", str(job_id)), ("modify", str(job_id), "--priority", "20")):
        message = assert_refused(farm.cli(*as_user(farm, *command)))
        assert "a user token may only submit jobs and read the queue, not" in message
    assert farm.job(job_id)["priority"] == 50
    assert farm.job(job_id)["state"] != "killed"


def test_a_non_admin_may_not_set_a_priority_above_the_farms_limit(farm: Farm) -> None:
    message = assert_refused(farm.cli(*as_user(farm, "submit", "--priority", "5", "--", "true")))
    assert "priority 5 is more urgent than a user token may set (the highest is 10" in message
    assert farm.cli_json("jobs")["jobs"] == []
    # the limit itself is allowed, and the admin's farm token has none
    assert farm.cli_ok(*as_user(farm, "submit", "--priority", "10", "--", "true")).strip()
    assert farm.cli_ok("submit", "--priority", "1", "--", "true").strip()


def test_a_worker_learns_its_settings_from_the_central_configuration(farm: Farm) -> None:
    proc = farm.worker("w1", "/", slots=2)
    (worker,) = farm.cli_json("workers")
    assert (worker["cluster"], worker["types"], worker["slots"]) == ("/show1", ["nuke"], 2)
    assert worker["properties"]["rack"] == "b"
    # the agent logs what the supervisor made of it
    assert "cluster=/show1" in proc.stderr()
    assert '"nuke"' in proc.stderr() or "nuke" in proc.stderr()


def test_the_user_token_cannot_run_a_worker(farm: Farm) -> None:
    proc = farm.spawn(
        "worker-intruder",
        [
            "worker",
            "--supervisor",
            farm.address,
            "--token-file",
            str(farm.state / "user_token"),
            "--name",
            "intruder",
            "--log-dir",
            str(farm.root / "intruder-logs"),
        ],
    )
    assert proc.popen.wait(timeout=20) != 0
    assert "a user token may only submit jobs and read the queue, not run a worker" in proc.stderr()
    assert "intruder" not in farm.worker_names()


def test_a_user_token_cannot_add_sub_jobs_to_any_job(farm: Farm) -> None:
    admins = int(farm.cli_ok("submit", "--priority", "1", "--restrictions", "/x", "--", "true"))
    attach = as_user(farm, "submit", "--parent", str(admins), "--", "false")
    line = assert_refused(farm.cli(*attach))
    assert line == (
        f"farmd: error: a user token may not add sub-jobs (parent {admins}): only an admin "
        f"or a frame of job {admins} may"
    )
    view = farm.cli_json("job", str(admins))
    assert (view["subjobs"], view["state"]) == (0, "pending")
    assert [job["id"] for job in farm.cli_json("jobs")["jobs"]] == [admins]


def test_a_frames_sub_job_is_clamped_and_its_token_ends_with_its_job(farm: Farm) -> None:
    """A frame of an admin's priority-1 job submits a sub-job with its job token: the
    sub-job inherits priority 10 (the farm's `highest_user_priority`), not 1. Once the
    job has ended, its token opens no session and an open session is refused."""
    token_file = farm.root / "job-token"
    farmd = shlex.join([sys.executable, "-m", "farmd"])
    script = "\n".join(
        [
            f'printf %s "$FARMD_TOKEN" > {token_file}.tmp && mv {token_file}.tmp {token_file}',
            f"{farmd} submit --name child --restrictions /nowhere -- true",
            shlex.join(farm.frame("--block", str(farm.release_path("never")))),
        ]
    )
    farm.worker("w2", "/")
    parent = int(farm.cli_ok("submit", "--priority", "1", "--", "sh", "-c", script))
    wait_for(
        lambda: len(farm.api.jobs()["jobs"]) == 2 and token_file.exists(), "the frame's sub-job"
    )
    parent_job, child = farm.api.jobs()["jobs"]
    assert (parent_job["id"], parent_job["priority"]) == (parent, 1)
    assert (child["name"], child["parent"], child["priority"]) == ("child", parent, 10)

    token = token_file.read_text()
    assert token.startswith(f"job.{parent}.")
    with Client(farm.address, token=token, timeout=20.0) as frame_session:
        assert len(frame_session.jobs()["jobs"]) == 2  # works while the job runs
        farm.cli_ok("kill", str(parent))  # the job (and its sub-job) ends
        with pytest.raises(ForbiddenError) as refused:
            frame_session.jobs()
        ended = f"the job token of job {parent} no longer works: the job has ended (killed)"
        assert str(refused.value) == ended
    line = assert_refused(farm.cli("jobs", "--token-file", str(token_file)))
    assert line == f"farmd: error: the supervisor refused: {ended}"
    farm.cli_ok("remove", str(parent))
    line = assert_refused(farm.cli("jobs", "--token-file", str(token_file)))
    assert line.endswith(f"the job token of job {parent} no longer works: the job does not exist")
