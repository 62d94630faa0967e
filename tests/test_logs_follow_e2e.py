"""`farmd logs ID:FRAME --follow`: a running frame's log printed as it grows, until the
attempt ends, with real `farmd serve`, `farmd worker` and CLI processes."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from tests.e2e_support import Farm, wait_for

pytestmark = pytest.mark.e2e


def test_logs_follow_prints_a_running_frame_s_lines_as_they_come(farm: Farm) -> None:
    farm.worker("w1")
    gate = farm.root / "gate"
    job_id = farm.submit(
        farm.frame("--print", "first line", "--block", str(gate), "--print", "last line")
    )
    wait_for(lambda: "first line" in farm.cli_ok("logs", f"{job_id}:1"), "the frame's first line")
    command = [sys.executable, "-m", "farmd", "logs", "--supervisor", farm.address,
               "--token-file", str(farm.token_file), "--follow", f"{job_id}:1"]  # fmt: skip
    lines: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=farm.env
    ) as follow:
        assert follow.stdout is not None
        assert follow.stderr is not None
        stdout = follow.stdout
        reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
        try:
            reader.start()
            wait_for(lambda: "first line\n" in lines, "--follow to print what is there")
            assert follow.poll() is None  # the frame runs: it keeps following
            gate.touch()  # the frame prints its last line and ends
            assert follow.wait(timeout=30) == 0
            reader.join(timeout=10)
            errors = follow.stderr.read()
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait(timeout=10)
    assert lines == ["first line\n", "last line\n"]
    assert errors == ""
