"""End-to-end: people on real `farmd serve` processes, through the CLI. An admin adds an
artist scoped to /show1/+; the artist logs in (the token kept in their config dir,
0600) and submits and steers as themselves; the admin revokes them.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys

import pytest

from tests.e2e_support import CLI_TIMEOUT, Farm, describe

pytestmark = pytest.mark.e2e


def as_person(farm: Farm, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`farmd ARGS... --supervisor ADDR` with no token option: the person's own."""
    command, *rest = args
    return subprocess.run(
        [sys.executable, "-m", "farmd", command, "--supervisor", farm.address, *rest],
        input=stdin,
        capture_output=True,
        text=True,
        env=farm.env,
        cwd=farm.root,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def test_an_artist_logs_in_submits_as_themselves_and_is_revoked(farm: Farm) -> None:
    added = farm.cli_ok("user", "add", "alice", "--role", "artist", "--clusters", "/show1/+")
    token_line = next(line for line in added.splitlines() if line.startswith("token "))
    token = token_line.rsplit(" ", 1)[1]
    assert token.startswith("alice~")
    assert "give it to alice, who runs: farmd login" in added

    login = as_person(farm, "login", stdin=token + "\n")
    assert login.returncode == 0, describe(login)
    kept = farm.root / "config" / "farmd" / "token"
    assert kept.read_text() == token + "\n"
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600

    submitted = as_person(farm, "submit", "--cluster", "/show1/a", "--job-type", "x", "--", "true")
    assert submitted.returncode == 0, describe(submitted)
    job_id = submitted.stdout.strip()
    listing = as_person(farm, "jobs")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(job_id + " "))
    assert "alice" in row.split(), row
    outside = as_person(farm, "submit", "--cluster", "/show2", "--", "true")
    assert outside.returncode == 1
    assert outside.stderr == (
        "farmd: error: alice (artist, /show1/+) may not submit jobs in /show2: "
        "it is confined to /show1/+\n"
    ), describe(outside)

    farm.cli_ok("user", "revoke", "alice")
    after = as_person(farm, "jobs")
    assert after.returncode != 0
    assert "wrong token" in after.stderr, describe(after)
    listed = farm.cli_json("user", "list")
    assert [(u["name"], u["revoked_at"] is not None) for u in listed] == [("alice", True)]


def test_a_frame_gets_its_documented_environment_not_the_agent_s(farm: Farm) -> None:
    farm.env.update(MY_SECRET="do-not-leak", OCIO="/studio/ocio.config", ARNOLD_X="1")
    farm.worker("w1", extra=["--pass-env", "OCIO"])
    job_id = farm.submit_cli("--env", "SHOT=a010", "--env", "OCIO=/shot/ocio", "--", "env")
    wait = farm.cli("wait", str(job_id), "--timeout", "20")
    assert wait.returncode == 0, describe(wait)
    seen = dict(
        line.split("=", 1)
        for line in farm.cli_ok("logs", f"{job_id}:1").splitlines()
        if "=" in line
    )
    assert "MY_SECRET" not in seen
    assert "ARNOLD_X" not in seen  # not asked for
    assert seen["OCIO"] == "/shot/ocio"  # the job's own wins over the agent's
    assert seen["SHOT"] == "a010"
    assert seen["PATH"] == farm.env["PATH"]
    assert seen["FARMD_JOB_ID"] == str(job_id)
    assert seen["FARMD_TOKEN"].startswith(f"job.{job_id}.")
    assert "FARMD_STATE" not in seen  # the agent's own FARMD_* stay the agent's


def test_a_job_may_not_set_the_farm_s_variables(farm: Farm) -> None:
    refused = farm.cli("submit", "--env", "FARMD_TOKEN=x", "--", "true")
    assert refused.returncode == 1
    assert refused.stderr == (
        "farmd: error: bad env entry 'FARMD_TOKEN=x': FARMD_* variables are the farm's\n"
    ), describe(refused)


@pytest.mark.skipif(os.geteuid() != 0, reason="frames run as their owner only under a root agent")
def test_a_root_agent_runs_each_frame_as_its_owner_s_account_never_as_root(farm: Farm) -> None:
    nobody = pwd.getpwnam("nobody")
    farm.worker(
        "w1",
        extra=["--run-as", "owner", "--user-map", "farm=nobody", "--user-map", "shared=root"],
    )
    job_id = farm.submit_cli("--", "sh", "-c", 'id -u; id -g; echo "$USER $HOME"; pwd')
    wait = farm.cli("wait", str(job_id), "--timeout", "20")
    assert wait.returncode == 0, describe(wait)
    printed = farm.cli_ok("logs", f"{job_id}:1").splitlines()
    home = nobody.pw_dir if os.path.isdir(nobody.pw_dir) else "/"
    assert printed == [
        str(nobody.pw_uid),
        str(nobody.pw_gid),
        f"nobody {nobody.pw_dir}",
        home,
    ]
    log = next((farm.root / "worker-logs" / "w1").rglob("1.1.log"))
    assert log.stat().st_uid == nobody.pw_uid  # its own to read

    # the shared user token's jobs are owned by `shared`, mapped here to root: refused
    shared = (farm.state / "user_token").read_text().strip()
    farm.env["FARMD_TOKEN"] = shared
    refused_id = int(farm.run("submit", "--supervisor", farm.address, "--", "true").stdout)
    del farm.env["FARMD_TOKEN"]
    wait = farm.cli("wait", str(refused_id), "--timeout", "20")
    assert wait.returncode == 1, describe(wait)
    log_text = farm.cli_ok("logs", f"{refused_id}:1")
    assert "maps to 'root', which is root: never as root" in log_text, log_text


def test_run_as_owner_needs_a_root_agent_or_says_why(bare_farm: Farm) -> None:
    if os.geteuid() == 0:
        pytest.skip("the refusal is for an agent that is not root")
    bare_farm.serve()
    proc = bare_farm.worker("w1", extra=["--run-as", "owner"], wait=False)
    assert proc.popen.wait(timeout=20) == 1
    assert "--run-as owner needs the agent to run as root" in proc.stderr()


def test_the_farm_configuration_sets_how_each_host_runs_frames(bare_farm: Farm) -> None:
    """`workers:` entries set `env_passthrough`, `run_as` and `users` for the hosts they
    name; the agent applies them from its registration, over its own flags."""
    farm = bare_farm
    root = os.geteuid() == 0
    config = farm.root / "farm.yaml"
    config.write_text(
        "workers:\n"
        "  default:\n"
        "    env_passthrough: [PATH, MY_VISIBLE, 'ARNOLD_*']\n"
        "  hosts:\n"
        "    owned: {run_as: owner, users: {farm: nobody}}\n"
    )
    farm.env.update(MY_SECRET="do-not-leak", MY_VISIBLE="shown", ARNOLD_X="1", OCIO="/o")
    farm.serve("--config", str(config))
    farm.worker("plain", extra=["--pass-env", "OCIO"])  # the file's list replaces this
    job_id = farm.submit_cli("--restrictions", "/", "--", "env")
    assert farm.cli("wait", str(job_id), "--timeout", "20").returncode == 0
    seen = dict(
        line.split("=", 1)
        for line in farm.cli_ok("logs", f"{job_id}:1").splitlines()
        if "=" in line
    )
    assert seen["MY_VISIBLE"] == "shown"
    assert seen["ARNOLD_X"] == "1"
    assert "OCIO" not in seen  # the worker's flag, replaced by the farm's list
    assert "MY_SECRET" not in seen
    assert "HOME" not in seen  # not in the farm's list

    farm.cli_ok("lock", "plain")
    farm.worker("owned")
    job_id = farm.submit_cli("--", "sh", "-c", "id -un")
    wait = farm.cli("wait", str(job_id), "--timeout", "20")
    log_text = farm.cli_ok("logs", f"{job_id}:1")
    if root:  # run as the account the farm's `users` maps its owner to
        assert wait.returncode == 0, describe(wait)
        assert log_text.splitlines() == ["nobody"]
    else:  # never as the agent's own account when the farm says owner
        assert wait.returncode == 1, describe(wait)
        assert "run_as owner needs the agent to run as root" in log_text, log_text
