"""End-to-end: what a newcomer hits in the first minutes, on real `farmd` processes.

`farmd wait` on a job that can never run returns 1 at once and says why; a busy port is
one line; a listing whose reader went away ends quietly; `$FARMD_STATE` wins over the
config file's `state_dir`; and every file the supervisor and a worker write is their
owner's alone (the user token's group may read it, as documented).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farmd.client import Client
from tests.e2e_support import LOCALHOST, START_TIMEOUT, Farm, describe, wait_for

pytestmark = pytest.mark.e2e

BUSY = "address in use (is another farmd running?)"


def farmd(farm: Farm, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`farmd ARGS...` in the farm's environment, to its end."""
    return farm.run(*args, timeout=timeout)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- wait


def test_wait_returns_1_at_once_for_a_job_a_failed_dependency_blocks(farm: Farm) -> None:
    farm.worker("w")
    a = farm.submit(farm.frame("--block", str(farm.release_path("A")), "--exit", "1"))
    b = farm.submit(farm.frame("--print", "B"), depends_on=[a])
    waiter = farm.spawn(
        "wait",
        [
            "wait",
            "--supervisor",
            farm.address,
            "--token-file",
            str(farm.token_file),
            str(b),
            "--timeout",
            "60",
        ],
    )
    wait_for(lambda: farm.job(a)["state"] == "running", "job A to run")
    assert waiter.running()  # B may still run: A has not ended
    started = time.monotonic()
    farm.release("A")  # A fails: B can never run unless an admin retries A
    status = waiter.popen.wait(timeout=30)
    took = time.monotonic() - started
    reason = f"job {a} is failed but must be complete (retry it to release this job)"
    assert status == 1, waiter.stderr()
    assert waiter.stdout() == f"{b} stuck: {reason}\n"
    assert took < 10, f"farmd wait took {took:.1f}s to see that job {b} is stuck"

    # the same through the client, and with an ended job among those waited for
    assert farm.api.wait([a, b], timeout=60) == {
        "ended": {str(a): "failed"},
        "pending": [b],
        "stuck": {str(b): reason},
    }
    both = farm.cli("wait", str(a), str(b), "--timeout", "60")
    assert (both.returncode, both.stdout) == (1, f"{a} failed\n{b} stuck: {reason}\n"), describe(
        both
    )


# --------------------------------------------------------------------------- busy port


def test_a_busy_port_is_one_line_for_serve_up_http_and_metrics(farm: Farm) -> None:
    expected = f"farmd: error: cannot listen on {farm.address}: {BUSY}"
    for name, args in [
        ("serve", ["serve", "--listen", farm.address]),
        ("up", ["up", "--workers", "1", "--listen", farm.address]),
        ("metrics", ["serve", "--listen", f"{LOCALHOST}:0", "--metrics", farm.address]),
        ("http", ["serve", "--listen", f"{LOCALHOST}:0", "--http", farm.address]),
    ]:
        result = farmd(farm, *args, "--state", str(farm.root / f"state-{name}"))
        assert result.returncode == 1, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        said = [line for line in result.stderr.splitlines() if " info " not in line]
        assert said == [expected], describe(result)


# --------------------------------------------------------------------------- broken pipe


def test_a_listing_whose_reader_has_gone_ends_without_a_traceback(farm: Farm) -> None:
    for _ in range(3):
        farm.submit(farm.frame("--print", "x"))
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `farmd jobs --json | head -0` would, before farmd writes
    try:
        listing = subprocess.run(
            [
                sys.executable,
                "-m",
                "farmd",
                "jobs",
                "--json",
                "--supervisor",
                farm.address,
                "--token-file",
                str(farm.token_file),
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=farm.env,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (listing.returncode, listing.stderr) == (1, "")


# --------------------------------------------------------------------------- state dir


def test_farmd_state_wins_over_the_config_files_state_dir(bare_farm: Farm) -> None:
    config = bare_farm.root / "farm.yaml"
    config.write_text(f"supervisor:\n  state_dir: {bare_farm.root / 'from-file'}\n")
    from_env = Path(bare_farm.env["FARMD_STATE"])
    proc = bare_farm.spawn("serve", ["serve", "--config", str(config), "--listen", "127.0.0.1:0"])

    def listening() -> bool:
        assert proc.running(), proc.stderr()
        return (from_env / "address").exists()

    wait_for(listening, f"the supervisor to write {from_env / 'address'}", timeout=START_TIMEOUT)
    assert not (bare_farm.root / "from-file").exists()
    assert proc.stop() == 0, proc.stderr()


# --------------------------------------------------------------------------- file modes


def assert_private(directory: Path) -> list[str]:
    """Every file under `directory` is 0600 (`user_token` 0640); their names."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    modes = {str(p.relative_to(directory)): mode(p) for p in files}
    wanted = {name: 0o640 if name == "user_token" else 0o600 for name in modes}
    assert {n: oct(m) for n, m in modes.items()} == {n: oct(m) for n, m in wanted.items()}
    return sorted(modes)


def run_one_job(farm: Farm) -> None:
    job = farm.submit(farm.frame("--print", "secret"))
    assert farm.wait_jobs([job]) == {str(job): "complete"}


def test_every_state_file_and_frame_log_is_private_to_its_owner(bare_farm: Farm) -> None:
    farm = bare_farm
    old_umask = os.umask(0o022)  # the usual one: files are 0644 unless farmd says otherwise
    try:
        supervisor = farm.serve("--metrics", f"{LOCALHOST}:0", http=True)
        farm.worker("w")
        run_one_job(farm)
        assert assert_private(farm.state) == [
            "address",
            "farmd.db",
            "farmd.db-shm",
            "farmd.db-wal",
            "http_address",
            "metrics_address",
            "supervisor.lock",
            "tls/ca.key",
            "tls/ca.pem",
            "tls/cert.pem",
            "tls/key.pem",
            "token",
            "user_token",
        ]
        assert assert_private(farm.root / "worker-logs") == ["w/1/1.1.log"]

        # An older farmd left them all readable, and crashed (the WAL stays): a start
        # makes them private again before it uses them.
        supervisor.stop(signal.SIGKILL)
        for path in farm.state.iterdir():
            if path.is_file():
                path.chmod(0o644)
        (farm.state / "address").unlink()
        farm.serve("--metrics", f"{LOCALHOST}:0", http=True)
        with Client(farm.address, token_file=farm.token_file) as client:
            assert [job["state"] for job in client.jobs()["jobs"]] == ["complete"]  # restored
        assert len(assert_private(farm.state)) == 13
    finally:
        os.umask(old_umask)


def test_a_local_farms_state_and_logs_are_private_too(bare_farm: Farm) -> None:
    farm = bare_farm
    old_umask = os.umask(0o022)
    try:
        farm.up(workers=1)
        wait_for(lambda: farm.worker_names(), "the local worker to register")
        run_one_job(farm)
        names = assert_private(farm.state)
        assert "farmd.db" in names
        assert any(name.startswith("worker-logs/") and name.endswith(".log") for name in names)
    finally:
        os.umask(old_umask)
