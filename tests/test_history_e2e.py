"""End-to-end: history on real `farmd serve` and `farmd worker` processes, through the
CLI. A job that ended leaves `farmd jobs`, is listed by `farmd jobs --all`, shown by
`farmd job`, survives a restart without being read into memory, and is pruned by
`farmd history prune`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e_support import Farm, describe, wait_for

pytestmark = pytest.mark.e2e


def test_an_ended_job_moves_to_history_survives_a_restart_and_is_pruned(
    bare_farm: Farm, tmp_path: Path
) -> None:
    farm = bare_farm
    config = tmp_path / "farm.yaml"
    config.write_text("supervisor:\n  history_after: 0.5\n  history_days: 30\n")
    farm.serve("--config", str(config))
    farm.worker("w1")
    done = farm.submit_cli("--name", "done", "--frames", "1-3", "--", "true")
    wait = farm.cli("wait", str(done), "--timeout", "20")
    assert (wait.returncode, wait.stdout) == (0, f"{done} complete\n"), describe(wait)
    queued = farm.submit_cli("--name", "queued", "--job-type", "never", "--", "true")

    def left_the_queue() -> bool:
        return [j["id"] for j in farm.cli_json("jobs")["jobs"]] == [queued]

    wait_for(left_the_queue, f"job {done} to move to history", timeout=20.0)
    listing = farm.cli_ok("jobs").splitlines()
    assert listing[-1] == "1 job: 1 pending"
    every = farm.cli_ok("jobs", "--all").splitlines()
    assert [row.split()[:3] for row in every[1:3]] == [
        [str(done), "done", "complete"],
        [str(queued), "queued", "pending"],
    ]
    assert every[-1] == "2 jobs: 1 pending, 1 complete"

    farm.restart("--config", str(config))
    assert farm.supervisor is not None
    restored = [line for line in farm.supervisor.stderr().splitlines() if "state restored" in line]
    assert len(restored) == 1, farm.supervisor.stderr()
    assert " jobs=1 frames=1 " in restored[0], restored  # the queued job only
    shown = farm.cli_json("job", str(done))
    assert (shown["state"], shown["frames"]["complete"]) == ("complete", 3)
    assert [f["worker"] for f in shown["frame_list"]] == ["w1"] * 3

    pruned = farm.cli_ok("history", "prune", "--days", "0")
    assert pruned.startswith("removed 1 job that moved to history before "), pruned
    gone = farm.cli("job", str(done))
    assert gone.returncode == 1
    assert gone.stderr == f"farmd: error: job {done} does not exist\n", describe(gone)
    assert farm.cli_ok("jobs", "--all").splitlines()[-1] == "1 job: 1 pending"
