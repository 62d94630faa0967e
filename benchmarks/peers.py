"""farmd beside Dask distributed on the same work, interleaved, printed as one JSON line.

The work: `--frames` (2,000) tasks, each one run of the program `true` as a child
process, on 2 workers × 4 slots.

- farmd: a real `farmd serve` (SQLite store, the default) and 2 real `farmd worker`
  processes with 4 slots each, all on 127.0.0.1. One job of 2,000 frames is submitted
  in one request; the time runs from the submit to `wait` returning with the job
  complete.
- Dask: `distributed.LocalCluster` with 2 worker processes × 4 threads; 2,000 tasks,
  each `subprocess.run(["true"])`, are submitted with `Client.map`; the time runs from
  the map to `gather` returning.

Both farms are started once, before any timing (process start-up is excluded), and the
rounds alternate farmd, Dask, farmd, Dask... so that whatever else the machine does
falls on both. Every figure is the median of `--rounds` (3). `farmd_vs_dask` is farmd's
rate over Dask's in the same run (issue 13's target: at least 1.5).

Dask is not a dependency of farmd: `pip install -e '.[bench]'` installs it.

Usage: python benchmarks/peers.py [--quick] [--frames N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dispatch import start_supervisor, start_worker, stop  # noqa: E402

from farmd.client import Client  # noqa: E402

WORKERS = 2
SLOTS = 4
READY_TIMEOUT = 60.0


def run_true(_: int) -> int:
    """One Dask task: the same child process a farmd frame runs."""
    return subprocess.run(["true"], check=False).returncode


def wait_for_workers(client: Client) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while len(client.workers()) < WORKERS:
        if time.monotonic() > deadline:
            sys.exit("the farmd workers did not register")
        time.sleep(0.05)


def farmd_round(client: Client, frames: int) -> float:
    """Frames per second from the submit of one job to `wait` returning."""
    started = time.perf_counter()
    job_id = client.submit(["true"], frames=f"1-{frames}")
    result = client.wait([job_id], timeout=600)
    elapsed = time.perf_counter() - started
    if result["pending"] or set(result["ended"].values()) != {"complete"}:
        sys.exit(f"farmd round did not complete: {result}")
    return frames / elapsed


def dask_round(dask: Any, frames: int) -> float:
    started = time.perf_counter()
    codes = dask.gather(dask.map(run_true, range(frames), pure=False))
    elapsed = time.perf_counter() - started
    if any(codes):
        sys.exit("a Dask task failed")
    return frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a small run for smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.rounds = 40, 1
    try:
        from distributed import Client as DaskClient
        from distributed import LocalCluster
    except ImportError:
        sys.exit("Dask is not installed: pip install -e '.[bench]'")

    workdir = Path(tempfile.mkdtemp(prefix="farmd-peers-"))
    state = workdir / "state"
    process, address, token = start_supervisor(state)
    agents: list[subprocess.Popen[bytes]] = []
    farmd_rates: list[float] = []
    dask_rates: list[float] = []
    try:
        agents = [
            start_worker(workdir, address, state / "token", f"peer{number}", SLOTS)
            for number in range(WORKERS)
        ]
        with (
            Client(address, token=token) as client,
            LocalCluster(
                n_workers=WORKERS,
                threads_per_worker=SLOTS,
                processes=True,
                dashboard_address=None,
                host="127.0.0.1",
            ) as cluster,
            DaskClient(cluster) as dask,
        ):
            wait_for_workers(client)
            dask.wait_for_workers(WORKERS)
            for _ in range(max(1, args.rounds)):
                farmd_rates.append(farmd_round(client, args.frames))
                dask_rates.append(dask_round(dask, args.frames))
    finally:
        for agent in agents:
            stop(agent)
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
    farmd_rate = statistics.median(farmd_rates)
    dask_rate = statistics.median(dask_rates)
    figures = {
        "benchmark": "peers",
        "frames": args.frames,
        "workers": WORKERS,
        "slots": SLOTS,
        "rounds": len(farmd_rates),
        "farmd_frames_per_s": round(farmd_rate, 1),
        "dask_frames_per_s": round(dask_rate, 1),
        "farmd_vs_dask": round(farmd_rate / dask_rate, 3),
        "farmd_rounds": [round(r, 1) for r in farmd_rates],
        "dask_rounds": [round(r, 1) for r in dask_rates],
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
