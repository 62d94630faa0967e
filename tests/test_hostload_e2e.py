"""End-to-end: a real agent reports its host's load (`host_load`, docs/protocol.md 5.7)
and `farmd workers` shows it, in its table and in `--json`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_support import Farm, forget_farmd_env, open_farm, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def farm(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Farm]:
    """A supervisor with a short heartbeat interval: agents report load every second."""
    forget_farmd_env(monkeypatch)
    config = tmp_path / "farm.yaml"
    config.write_text("supervisor:\n  heartbeat_interval: 0.5\n  heartbeat_timeout: 3\n")
    with open_farm(tmp_path, request.node) as started:
        started.serve("--config", str(config))
        yield started


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the agent reads Linux's /proc")
def test_workers_show_the_load_their_agent_reports(farm: Farm) -> None:
    farm.worker("w1")

    def reported() -> dict[str, Any] | None:
        (worker,) = farm.cli_json("workers")
        load: dict[str, Any] | None = worker["load"]
        return load

    first = wait_for(reported, "w1's first host_load", timeout=15.0, interval=0.2)
    assert 0 <= first["cpu"] <= 1
    assert 0 < first["memory_used"] <= first["memory_total"]
    assert len(first["load_average"]) == 3
    # the agent keeps reporting: a later report replaces the first
    wait_for(lambda: reported() != first, "a second host_load", timeout=15.0, interval=0.2)
    header, row = farm.cli_ok("workers").splitlines()[:2]
    assert header.split()[:7] == ["NAME", "CLUSTER", "STATE", "SLOTS", "CPU", "MEMORY", "LOAD"]
    cells = row.split()
    assert cells[4].endswith("%"), row
    assert cells[5].endswith("G"), row
