"""Smoke test of the benchmarks: they run, agree with their oracle and print one JSON line.

Speeds are not asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.pg_support import need_postgres

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str, timeout: float) -> dict[str, Any]:
    """`benchmarks/SCRIPT --quick`: it must succeed and print exactly one JSON line."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result: dict[str, Any] = json.loads(lines[0])
    return result


def test_ranking_benchmark_quick() -> None:
    # Exit status 1 means the index disagreed with reference_order; stderr says where.
    result = run_quick("ranking.py", timeout=120)
    assert result["benchmark"] == "ranking"
    assert result["jobs"] == 5_000
    assert result["verified_workers"] > 0
    assert result["filtered_verified_workers"] > 0
    # The filtered run: about half the queue ineligible for each worker (seeded, so exact).
    assert 0.4 <= result["ineligible_share"] <= 0.6
    for key in (
        "index_picks_per_s",
        "oracle_picks_per_s",
        "index_vs_oracle",
        "filtered_picks_per_s",
        "filtered_vs_plain",
        "page50_per_s",
        "updates_per_s",
        "index_bytes_per_job",
    ):
        assert result[key] > 0, key


def test_dispatch_benchmark_quick() -> None:
    # Starts a real `farmd serve` and `farmd worker` processes on 127.0.0.1 and stops them.
    result = run_quick("dispatch.py", timeout=300)
    assert result["benchmark"] == "dispatch"
    assert result["frames"] == 2_000
    for key in (
        "sim_frames_per_s",
        "baseline_frames_per_s",
        "pick_to_start_p50_ms",
        "pick_to_start_p99_ms",
        "real_frames_per_s",
        "tls_frames_per_s",
        "tls_vs_plain",
        "dashboards_frames_per_s",
        "dashboard_notices_per_s",
    ):
        assert result[key] > 0, key
    # the PostgreSQL run is left out, saying why, on a machine without the server
    if "postgres_skipped" in result:
        need_postgres()  # skips (or, where CI requires PostgreSQL, fails) saying why
    assert result["postgres_frames_per_s"] > 0
    assert result["postgres_vs_sqlite"] > 0


def test_scale_benchmark_quick() -> None:
    # A real `farmd serve` and simulator processes on 127.0.0.1, all ended by the script.
    result = run_quick("scale.py", timeout=120)
    assert result["benchmark"] == "scale"
    assert result["workers"] == [3, 6]
    assert set(result["per_workers"]) == {"3", "6"}
    assert result["cpu_per_frame_vs_100"]["3"] == 1.0
    assert result["cpu_per_frame_vs_100"]["6"] > 0
    for figures in result["per_workers"].values():
        # 6 workers are split over two simulator processes of 3 each
        assert figures["simulator_processes"] == figures["workers"] // 3
        assert figures["latency_samples"] == 5
        assert len(figures["rounds"]) == 1
        for key in (
            "connect_s",
            "rss_mb",
            "peak_rss_mb",
            "submit_to_start_p50_ms",
            "submit_to_start_p99_ms",
            "submit_to_start_max_ms",
            "frames_per_s",
            "cpu_ms_per_frame",
            "submit_s",
        ):
            assert figures[key] > 0, key
        assert figures["idle_cpu_pct"] >= 0
        assert figures["submit_to_start_p50_ms"] <= figures["submit_to_start_max_ms"]


def test_restart_benchmark_quick() -> None:
    # A real `farmd serve` killed with SIGKILL and started again on its state dir, and a
    # real `farmd worker` whose frames run through the restarts; all ended by the script.
    result = run_quick("restart.py", timeout=120)
    assert result["benchmark"] == "restart"
    assert result["frames"] == [1_000, 2_000]
    assert set(result["per_frames"]) == {"1000", "2000"}
    for size, figures in result["per_frames"].items():
        # ten jobs: one running (its first 2 frames, the worker's slots), four queued,
        # five killed; the script checked every count again after each restart
        per_job = int(size) // 10
        assert figures["kept"] == {
            "running": 2,
            "pending": 5 * per_job - 2,
            "killed": 5 * per_job,
        }
        assert len(figures["rounds"]) == 1
        for key in (
            "rss_empty_mb",
            "rss_kept_mb",
            "peak_rss_mb",
            "restart_until_serving_s",
            "rss_after_restart_mb",
            "rss_after_vs_before",
        ):
            assert figures[key] > 0, key
        assert figures["rss_empty_mb"] <= figures["peak_rss_mb"]


def test_failover_benchmark_quick() -> None:
    # Two real `farmd serve` on a PostgreSQL database of the script's own (dropped at
    # the end), a real `farmd worker`, a kill -9 of the active one; then a SQLite
    # supervisor killed and restarted; every process ended by the script.
    need_postgres()
    result = run_quick("failover.py", timeout=300)
    assert result["benchmark"] == "failover"
    assert result["jobs"] == 2_000
    assert result["takeover_target_s"] == 5.0
    assert len(result["takeover_rounds"]) == len(result["restart_rounds"]) == 1
    for key in (
        "takeover_dispatch_s",
        "takeover_dispatch_max_s",
        "takeover_serving_s",
        "restart_dispatch_s",
        "restart_dispatch_max_s",
        "restart_serving_s",
        "takeover_vs_restart",
    ):
        assert result[key] > 0, key
    assert result["takeover_dispatch_s"] <= result["takeover_dispatch_max_s"]
    (round_,) = result["takeover_rounds"]
    assert round_["jobs_kept"] >= 1_900  # a few ran during the run
    assert round_["standby_rss_mb"] > 0
