"""End-to-end: retries, instances and frame time limits on real `farmd` processes."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from tests.e2e_support import Farm

pytestmark = pytest.mark.e2e


def test_a_frame_that_fails_once_is_retried_and_completes(farm: Farm) -> None:
    farm.worker("w1")
    farm.worker("w2")
    # fails on its first attempt, succeeds on any later one
    job_id = farm.submit_cli(
        "--retries",
        "2",
        "--",
        "sh",
        "-c",
        'echo "attempt $FARMD_ATTEMPT"; test "$FARMD_ATTEMPT" -ge 2',
    )
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    frame = farm.frames(job_id)[1]
    assert (frame["attempts"], frame["failures"], frame["exit_code"]) == (2, 1, 0)
    assert "attempt 2" in farm.cli_ok("logs", f"{job_id}:1")


def test_a_frame_without_retries_left_fails(farm: Farm) -> None:
    farm.worker("w1")
    job_id = farm.submit_cli("--retries", "1", "--", "sh", "-c", "exit 3")
    assert farm.wait_jobs([job_id]) == {str(job_id): "failed"}
    frame = farm.frames(job_id)[1]
    assert (frame["attempts"], frame["failures"], frame["exit_code"]) == (2, 2, 3)


def test_the_time_limit_kills_the_attempt_and_fails_it(farm: Farm) -> None:
    farm.worker("w1")
    job_id = farm.submit_cli("--time-limit", "0.5", "--", "sleep", "30")
    assert farm.wait_jobs([job_id], timeout=20) == {str(job_id): "failed"}
    frame = farm.frames(job_id)[1]
    assert frame["exit_code"] < 0  # ended by a signal
    assert "time limit of 0.5 s exceeded" in farm.cli_ok("logs", str(job_id))


def test_instances_keep_a_job_to_one_frame_at_a_time(farm: Farm, tmp_path: Path) -> None:
    farm.worker("w1", slots=2)
    farm.worker("w2", slots=2)
    spans = tmp_path / "spans"
    script = (
        "import os, sys, time\n"
        "began = time.time(); time.sleep(0.15)\n"
        "with open(sys.argv[1], 'a') as out:\n"
        "    out.write(f'{began} {time.time()}\\n')\n"
    )
    job_id = farm.submit_cli(
        "--frames", "1-4", "--instances", "1", "--", sys.executable, "-c", script, str(spans)
    )
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    runs = sorted(tuple(map(float, line.split())) for line in spans.read_text().splitlines())
    assert len(runs) == 4
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end, f"two frames of a 1-instance job overlapped: {runs}"


def test_block_unblock_retry_and_remove_from_the_command_line(farm: Farm) -> None:
    farm.worker("w1")
    # the first frame blocks until released, so the job is still going when blocked
    gate = str(farm.release_path("gate"))
    wait = f"for i in $(seq 1500); do [ -e {gate} ] && break; sleep 0.02; done"  # <= 30 s
    command = f'{wait}; test "$FARMD_FRAME" != 2'
    job_id = farm.submit_cli("--frames", "1-3", "--", "sh", "-c", command)
    farm.cli_ok("block", str(job_id))
    blocked = farm.cli_json("job", str(job_id))
    assert (blocked["state"], blocked["frames"]["blocked"]) == ("blocked", 3)
    farm.release("gate")
    farm.cli_ok("unblock", f"{job_id}:1-3")
    assert farm.wait_jobs([job_id]) == {str(job_id): "failed"}  # frame 2 exits 1
    refused = farm.cli("unblock", f"{job_id}:1")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"farmd: error: frame {job_id}:1 is complete: it cannot be unblocked (it is not blocked)"
    ]
    assert farm.cli_json("retry", str(job_id)) == {"retried": [f"{job_id}:2"]}
    assert farm.wait_jobs([job_id]) == {str(job_id): "failed"}
    assert farm.frames(job_id)[2]["attempts"] == 2
    assert farm.cli_json("remove", str(job_id)) == {"removed": [job_id]}
    assert all(job["id"] != job_id for job in farm.api.jobs()["jobs"])
