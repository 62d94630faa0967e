"""Memory and restart of a real `farmd serve` holding many frames, printed as one JSON line.

For each size N (default 10,000, 100,000 and 1,000,000 frames kept), a fresh
`farmd serve` subprocess on 127.0.0.1 with the SQLite store and a state dir of its own,
and through `farmd.client.Client` a farm of ten jobs of N/10 frames each, in the mix a
real farm keeps (issue 13's "jobs running, queued and ended"):

- running: one job of `sleep 3600` frames, `--workers` real `farmd worker` processes of
  `--slots` slots each running the first of them (8 by default); the rest of its frames
  wait in that job, a range with a few frames taken out;
- queued: four jobs left pending, submitted once every slot is busy, so each stays an
  untouched range (the cheapest kind of pending frame);
- ended: five jobs submitted and killed at once, which gives each of their frames a
  stored row of its own (frames completed by workers would too, at ~1 ms of supervisor
  CPU each: too slow to make a million of). They move to history `--history-after`
  seconds later (the supervisor's `history_after`, 300 by default in a real farm); the
  farm is measured once they have, so a restart reads only the running and queued jobs
  while the ended ones' rows stay in the database.

The supervisor's VmRSS (/proc/PID/status) is read empty (after one `list_jobs`, so the
request path is warm) and after each kind is added, which gives bytes per frame of each
kind and per kept frame over the empty supervisor. Then, `--rounds` times: the
supervisor is killed with SIGKILL (no clean shutdown) and started again on the same
state dir and port; `restart_until_serving_s` is the time from its start to the answer
of a `list_jobs` (the interpreter's start-up included: that is what an admin waits for).
After each restart the workers reconnect with their frames still running; once all of
them run again and `--settle` seconds have passed, VmRSS is read again and compared with
the live supervisor's before the first kill (`rss_after_vs_before`; issue 13: within
10 %). Every job's frame counts are checked unchanged after each restart. The
supervisor's own "state restored" log line (what it restored) is reported as it is,
and `restore_logged_s` is from the start to that line (load and rebuild done).

Only the public client API and the CLI are used, so the benchmark keeps working when
ended jobs move to a history table that a restart does not load.

Usage: python benchmarks/restart.py [--quick] [--frames 10000,100000] [--rounds 3]
       [--workers 2 --slots 4] [--settle 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dispatch import start_supervisor, start_worker, stop  # noqa: E402
from scale import progress, status_mb  # noqa: E402

from farmd.client import Client  # noqa: E402

JOBS = {"running": 1, "queued": 4, "ended": 5}  # ten jobs of N/10 frames
COMMAND = ["sleep", "3600"]  # outlives any run; the workers end it when stopped
RESTART_TIMEOUT = 300.0  # the issue measured 21.6 s for a million frames
RUNNING_TIMEOUT = 120.0  # workers start (or reconnect) and run their frames
MIB = 1024 * 1024
# `2026-12-03T15:55:01.123 info farmd.supervisor.daemon 'state restored' jobs=10 ...`
RESTORED = re.compile(r"^(\S+) info \S+ 'state restored'(.*)$")


def frame_counts(client: Client, ids: list[int]) -> dict[str, int]:
    """The frames of `ids` by state, from each job's detail (one frame of its list):
    `get_job` shows an ended job even where `list_jobs` no longer lists it."""
    counts: dict[str, int] = {}
    for job_id in ids:
        for state, count in client.job(job_id, frame_limit=1)["frames"].items():
            counts[state] = counts.get(state, 0) + count
    return {state: count for state, count in counts.items() if count}


def wait_running(client: Client, job_id: int, slots: int) -> float:
    """Seconds until `slots` frames of `job_id` run on connected workers: after a
    restart the supervisor holds them as running before their workers are back."""
    started = time.monotonic()
    while True:
        running = client.job(job_id, frame_limit=1)["frames"]["running"]
        held = sum(worker["used"] for worker in client.workers())
        if running >= slots and held >= slots:
            return time.monotonic() - started
        if time.monotonic() - started > RUNNING_TIMEOUT:
            sys.exit(
                f"job {job_id}: {running} frames running, {held} slots busy on connected "
                f"workers, not {slots}, after {RUNNING_TIMEOUT} s"
            )
        time.sleep(0.1)


def restored_line(serve_log: Path) -> tuple[float, dict[str, str]] | None:
    """The last "state restored" line of the log: its time (time.time) and its fields."""
    found = None
    for line in serve_log.read_text(errors="replace").splitlines():
        if match := RESTORED.match(line):
            found = match
    if found is None:
        return None
    stamp, fraction = found[1].split(".")
    at = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(fraction) / 1000
    fields = dict(part.split("=", 1) for part in found[2].split() if "=" in part)
    return at, fields


# --------------------------------------------------------------------------- one size


def build(
    client: Client, per_job: int, slots: int, start_workers: Callable[[], None], pid: int
) -> dict[str, Any]:
    """The farm of one size (see the module's docstring), with the RSS after each kind."""
    figures: dict[str, Any] = {}
    frames = f"1-{per_job}"
    started = time.monotonic()
    running = [client.submit(COMMAND, name="running", frames=frames)]
    start_workers()
    figures["workers_start_s"] = round(wait_running(client, running[0], slots), 2)
    figures["rss_running_mb"] = round(status_mb(pid, "VmRSS"), 1)
    queued = [
        client.submit(COMMAND, name=f"queued{n}", frames=frames) for n in range(JOBS["queued"])
    ]
    figures["rss_queued_mb"] = round(status_mb(pid, "VmRSS"), 1)
    ended = []
    for n in range(JOBS["ended"]):
        ended.append(client.submit(COMMAND, name=f"ended{n}", frames=frames))
        client.kill([ended[-1]])
    figures["rss_ended_live_mb"] = round(status_mb(pid, "VmRSS"), 1)
    # the killed jobs move to history `history_after` later: wait until they have
    deadline = time.monotonic() + RUNNING_TIMEOUT
    while client.jobs(limit=1)["total"] > len(running) + len(queued):
        if time.monotonic() > deadline:
            sys.exit("the ended jobs never moved to history")
        time.sleep(0.1)
    figures["build_s"] = round(time.monotonic() - started, 2)
    figures["ids"] = {"running": running, "queued": queued, "ended": ended}
    return figures


def measure(frames: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    state = workdir / "state"
    per_job = frames // sum(JOBS.values())
    slots = args.workers * args.slots
    process: subprocess.Popen[bytes] | None = None
    agents: list[subprocess.Popen[bytes]] = []
    serve_log = workdir / "serve.log"
    try:
        config = workdir / "farm.yaml"
        config.write_text(f"supervisor:\n  history_after: {args.history_after}\n")
        process, address, token = start_supervisor(state, log_level="info", config=config)
        listen = f"{address.host}:{address.port}"  # a restart takes the same port back
        progress(f"{frames} frames: supervisor pid {process.pid} on {listen}, building")
        with Client(address, token=token) as client:
            client.jobs(limit=1)
            rss_empty = status_mb(process.pid, "VmRSS")

            def start_workers() -> None:
                agents.extend(
                    start_worker(workdir, address, state / "token", f"w{n}", args.slots)
                    for n in range(args.workers)
                )

            figures = build(client, per_job, slots, start_workers, process.pid)
            ids = figures.pop("ids")
            every = [job for kind in ids.values() for job in kind]
            kept = frame_counts(client, every)
            if sum(kept.values()) != per_job * len(every) or kept.get("running") != slots:
                sys.exit(f"{frames} frames: the farm built holds {kept}")
        figures["rss_kept_mb"] = round(status_mb(process.pid, "VmRSS"), 1)
        figures["peak_rss_mb"] = round(status_mb(process.pid, "VmHWM"), 1)
        progress(f"{frames} frames kept ({kept}) in {figures['build_s']} s; restarting")
        rounds = []
        for number in range(args.rounds):
            process.kill()  # SIGKILL: nothing flushed or closed on the way out
            process.wait()
            rounds.append(
                restart(state, listen, ids["running"][0], slots, every, kept, args, config)
            )
            process = rounds[-1].pop("process")
            progress(f"{frames} frames: restart {number + 1} served in {rounds[-1]['serving_s']} s")
        restored = restored_line(serve_log)
    except BaseException:
        if serve_log.exists():  # the supervisor's side of the story, before it is deleted
            progress("serve.log ends:\n" + serve_log.read_text(errors="replace")[-4000:])
        raise
    finally:
        for agent in agents:
            stop(agent)  # SIGTERM: the agent ends its frames' process groups
        if process is not None:
            stop(process, timeout=30)
    rss_after = statistics.median(r["rss_after_mb"] for r in rounds)
    figures.update(
        {
            "frames": frames,
            "frames_per_job": per_job,
            "kept": kept,
            "rss_empty_mb": round(rss_empty, 1),
            "bytes_per_kept_frame": round((figures["rss_kept_mb"] - rss_empty) * MIB / frames),
            "bytes_per_queued_frame": round(
                (figures["rss_queued_mb"] - figures["rss_running_mb"])
                * MIB
                / (per_job * JOBS["queued"])
            ),
            "bytes_per_ended_frame_live": round(
                (figures["rss_ended_live_mb"] - figures["rss_queued_mb"])
                * MIB
                / (per_job * JOBS["ended"])
            ),
            "restart_until_serving_s": round(statistics.median(r["serving_s"] for r in rounds), 3),
            "restore_logged_s": median_or_none([r["restore_logged_s"] for r in rounds]),
            "rss_after_restart_mb": round(rss_after, 1),
            "rss_after_vs_before": round(rss_after / figures["rss_kept_mb"], 3),
            "bytes_per_kept_frame_after_restart": round((rss_after - rss_empty) * MIB / frames),
            "restored": restored[1] if restored else None,
            "rounds": rounds,
        }
    )
    return figures


def restart(
    state: Path,
    listen: str,
    running_job: int,
    slots: int,
    every: list[int],
    kept: dict[str, int],
    args: argparse.Namespace,
    config: Path,
) -> dict[str, Any]:
    """Start the supervisor again on STATE and LISTEN; time it until it serves."""
    wall, started = time.time(), time.monotonic()
    process, address, token = start_supervisor(
        state, listen=listen, log_level="info", timeout=RESTART_TIMEOUT, config=config
    )
    try:
        with Client(address, token=token) as client:
            client.jobs(limit=1)
            serving_s = time.monotonic() - started
            rss_serving = status_mb(process.pid, "VmRSS")
            back_s = wait_running(client, running_job, slots)  # the workers reconnected
            time.sleep(args.settle)
            rss_after = status_mb(process.pid, "VmRSS")
            now = frame_counts(client, every)
            if now != kept:
                sys.exit(f"after a restart the farm holds {now}, not {kept}")
    except BaseException:
        stop(process)
        raise
    restored = restored_line(state.parent / "serve.log")
    logged = None
    if restored is not None and restored[0] >= wall - 1:  # this start's line, not the last
        logged = round(restored[0] - wall, 3)
    return {
        "process": process,
        "serving_s": round(serving_s, 3),
        "restore_logged_s": logged,
        "rss_serving_mb": round(rss_serving, 1),
        "workers_back_s": round(back_s, 2),
        "rss_after_mb": round(rss_after, 1),
    }


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


# --------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", default="10000,100000,1000000", help="frames kept, e.g. 10000,100000"
    )
    parser.add_argument("--rounds", type=int, default=3, help="restarts per size (medians)")
    parser.add_argument("--workers", type=int, default=2, help="real farmd workers")
    parser.add_argument("--slots", type=int, default=4, help="slots per worker")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds after a restart before RSS is read"
    )
    parser.add_argument(
        "--history-after",
        type=float,
        default=1.0,
        help="the supervisor's history_after: seconds before the killed jobs move to history",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.rounds, args.workers, args.slots, args.settle = "1000,2000", 1, 1, 2, 0.2
    args.frames = [int(n) for n in args.frames.split(",")]
    for frames in args.frames:
        if frames < 10 * sum(JOBS.values()) or frames % sum(JOBS.values()):
            parser.error(f"--frames {frames}: need a multiple of {sum(JOBS.values())}, >= 100")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: need at least 1")
    wall = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="farmd-restart-"))
    try:
        per_frames = {}
        for frames in args.frames:
            (workdir / str(frames)).mkdir()
            per_frames[str(frames)] = measure(frames, args, workdir / str(frames))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "restart",
                "store": "sqlite",
                "frames": args.frames,
                "mix": {
                    "jobs": JOBS,
                    "share": {kind: count / sum(JOBS.values()) for kind, count in JOBS.items()},
                    "running_frames": args.workers * args.slots,
                    "ended_by": "kill",
                    "queued": "untouched ranges",
                },
                "workers": args.workers,
                "slots": args.slots,
                "rounds": args.rounds,
                "per_frames": per_frames,
                "python": platform.python_version(),
                "machine": f"{os.cpu_count()} cores",
                "wall_s": round(time.monotonic() - wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
