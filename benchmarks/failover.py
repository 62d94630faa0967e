"""Takeover of a standby supervisor on PostgreSQL with many jobs kept, printed as one JSON line.

The farm: a PostgreSQL database of the benchmark's own on 127.0.0.1:5432 (created, and
dropped at the end), two real `farmd serve --store postgresql://...` processes `a` and
`b` (each with its own state dir, port and `--advertise`), and `--workers` real `farmd
worker --supervisor a,b` processes of `--slots` slots. `--jobs` jobs (100,000 by
default, one frame each, `sleep 0.5`) are loaded with `submit_many` (batches of 10,000
jobs, each one request and one commit): real queued jobs the supervisor holds. The
workers keep running them (a busy farm), so a few hundred of them end during the run;
`jobs_kept` gives what the supervisor held at each kill.

Then, `--rounds` times: `kill -9` of the active supervisor (SIGKILL: its sockets close,
PostgreSQL frees its advisory lock at once), and the standby takes over; the killed
one is started again as the new standby before the next round (they alternate), and
the next kill waits until it is warm (its "standby warm" line: it holds the farm's
rows and jobs ready, see farmd/supervisor/standby.py). The first kill waits
`--settle` seconds after the load, for the standby to have read the new rows.

The observable is **the first frame dispatched after the kill**: from the moment of the
kill, the benchmark asks the farm every 50 ms through a `Client` given both supervisors
(`workers()`, then `job()` of each job a worker runs) until a worker runs a frame whose
`started_at` is after the kill. `dispatch_s` is from the kill to that `started_at` (when
the new active supervisor handed the frame to a worker, by its clock on this machine).
It includes the election, the load and restore of the farm, the workers' reconnection
(they follow the list, backing off at most a second while a standby answers), their
results of the frames that ended meanwhile, and the pick. Frames that ran through the
kill keep their earlier `started_at`. `serving_s` is from the kill to the first answer
(the new active supervisor serving requests; 50 ms granularity), and
`takeover_logged_s` what the supervisor logs itself (`supervisor active`: from winning
the lock to serving).

Baseline, in the same run: the same farm (same jobs and workers) on one supervisor with
the SQLite store: `kill -9` and an immediate restart on the same state dir and port
(what a process manager would do), timed the same way; its restart includes the
interpreter's start, and its workers have only the one address, so they back off as
after any lost supervisor (up to 5 s). `takeover_vs_restart` is the ratio of the medians
of `dispatch_s`; `takeover_target_s` is issue 17's target (5 s).

Usage: python benchmarks/failover.py [--quick] [--jobs 100000] [--rounds 3]
       [--workers 1 --slots 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
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

from dispatch import (  # noqa: E402
    PostgresUnavailable,
    postgres_database,
    process_cpu,
    start_worker,
    stop,
)
from scale import progress, status_mb  # noqa: E402

from farmd.client import Client  # noqa: E402
from farmd.errors import FarmdError  # noqa: E402

TARGET_S = 5.0  # issue 17: kill -9 of the active supervisor to dispatching again
BATCH = 10_000  # jobs per submit_many (the protocol's MAX_BATCH)
BULK = ["sleep", "0.5"]
POLL = 0.05  # seconds between two looks at the farm after a kill
IDLE_SAMPLE = 4.0  # seconds over which the warm standby's CPU is read before a kill
START_TIMEOUT = 120.0  # a supervisor starting (SQLite: restoring the whole farm first)
PROBE_TIMEOUT = 120.0  # kill to a frame started
CONFIG = "supervisor:\n  heartbeat_interval: 1\n"


class Supervisor:
    """One `farmd serve` of the farm: its state dir, port and log; started again on
    the same port after each kill."""

    def __init__(self, name: str, workdir: Path, store: str) -> None:
        self.name = name
        self.state = workdir / f"state-{name}"
        self.log = workdir / f"serve-{name}.log"
        self.config = workdir / "farm.yaml"
        self.store = store
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.warm_before = 0  # "standby warm" lines in its log before this start

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and return once it listens (a standby listens at once; a SQLite
        supervisor once it has restored the farm)."""
        address_file = self.state / "address"
        address_file.unlink(missing_ok=True)
        self.warm_before = len(self.named("standby warm")) if self.log.exists() else 0
        listen = f"127.0.0.1:{self.port}"
        advertise = ["--advertise", listen] if self.port else []
        with self.log.open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "farmd",
                    "serve",
                    "--listen",
                    listen,
                    *advertise,
                    "--http",
                    "off",
                    "--state",
                    str(self.state),
                    "--store",
                    self.store,
                    "--config",
                    str(self.config),
                    "--log-json",
                    "--log-level",
                    "info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not (address_file.exists() and address_file.read_text().endswith("\n")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                stop(self.process)
                sys.exit(f"supervisor {self.name} did not start; see:\n{self.tail()}")
            time.sleep(0.02)
        port = int(address_file.read_text().strip().rpartition(":")[2])
        if self.port and port != self.port:
            sys.exit(f"supervisor {self.name} listens on {port}, not {self.port}")
        self.port = port

    def kill(self) -> float:
        """SIGKILL; returns when it was sent (time.time, to compare with `started_at`)."""
        assert self.process is not None
        killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return killed_at

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by SIGKILL
                    continue
        return out

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def actives(self) -> list[dict[str, Any]]:
        return self.named("supervisor active")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=30)


def wait_event(
    sup: Supervisor, seen: int, event: str = "supervisor active", timeout: float = START_TIMEOUT
) -> dict[str, Any]:
    """The `event` logged after the first `seen` ones of `sup`'s log."""
    deadline = time.monotonic() + timeout
    while len(found := sup.named(event)) <= seen:
        assert sup.process is not None
        if sup.process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"supervisor {sup.name} never logged {event!r}; see:\n{sup.tail()}")
        time.sleep(0.05)
    return found[seen]


def start_workers(
    workdir: Path, supervisors: str, token_file: Path, count: int, slots: int
) -> list[subprocess.Popen[bytes]]:
    """`count` real `farmd worker` processes given the supervisor list."""
    return [start_worker(workdir, supervisors, token_file, f"w{n}", slots) for n in range(count)]


def load(client: Client, jobs: int) -> float:
    """`jobs` queued jobs of one frame each, in batches; returns the seconds taken."""
    started = time.monotonic()
    for first in range(0, jobs, BATCH):
        count = min(BATCH, jobs - first)
        client.submit_many({"argv": BULK, "name": f"bulk{first + n}"} for n in range(count))
    return time.monotonic() - started


def wait_busy(client: Client, slots: int) -> None:
    """Until the workers are connected and every slot runs a bulk frame."""
    deadline = time.monotonic() + START_TIMEOUT
    while sum(w["used"] for w in client.workers()) < slots:
        if time.monotonic() > deadline:
            sys.exit(f"the workers never ran {slots} frames: {client.workers()}")
        time.sleep(0.1)


def first_dispatch(supervisors: str, token: str, killed_at: float) -> dict[str, float]:
    """After a kill, poll the farm (see module docs) until a frame started after the
    kill runs on a worker: `serving_s` to the first answer, `dispatch_s` to that
    frame's `started_at`."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    served_at = None
    while True:
        client = Client(supervisors, token=token, timeout=10.0)
        try:
            running = [w for worker in client.workers() for w in worker["running"]]
            served_at = served_at or time.time()
            started = []
            for job_id in sorted({int(name.partition(":")[0]) for name in running}):
                for frame in client.job(job_id)["frame_list"]:
                    at = frame["started_at"]
                    if frame["state"] == "running" and at is not None and at > killed_at:
                        started.append(at)
            if started:
                return {
                    "serving_s": round(served_at - killed_at, 3),
                    "dispatch_s": round(min(started) - killed_at, 3),
                }
        except FarmdError:
            pass  # no active supervisor yet (a standby answered, or none): again
        finally:
            client.close()
        if time.monotonic() > deadline:
            sys.exit(f"no frame was dispatched in the {PROBE_TIMEOUT} s after the kill")
        time.sleep(POLL)


def held(client: Client) -> int:
    """The jobs the supervisor holds (pending, running and ended, not yet history)."""
    return int(client.jobs(limit=1)["total"])


# --------------------------------------------------------------------------- the farms


def failover_run(workdir: Path, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Two supervisors on one database; `--rounds` kills of the active one."""
    pair = {n: Supervisor(n, workdir, url) for n in ("a", "b")}
    pair["a"].config.write_text(CONFIG)
    agents: list[subprocess.Popen[bytes]] = []
    try:
        pair["a"].start()
        wait_event(pair["a"], 0)
        pair["b"].start()
        supervisors = f"{pair['a'].address},{pair['b'].address}"
        token = (pair["a"].state / "token").read_text().strip()
        with Client(supervisors, token=token, timeout=120.0) as client:
            load_s = load(client, args.jobs)
            progress(f"postgresql: {args.jobs} jobs loaded in {load_s:.1f} s")
            agents = start_workers(
                workdir, supervisors, pair["a"].state / "token", args.workers, args.slots
            )
            wait_busy(client, args.workers * args.slots)
        # the standby reads the new rows in its next refresh (every 2 s), and builds
        # their jobs: a steady farm, not one killed while a standby catches up
        time.sleep(args.settle)
        active, standby = pair["a"], pair["b"]
        rounds = []
        for number in range(args.rounds):
            # the standby holds the farm's rows and jobs ready (it logs so once)
            warm = wait_event(standby, standby.warm_before, "standby warm")
            with Client(supervisors, token=token, timeout=60.0) as client:
                kept = held(client)
            seen = len(standby.actives())
            assert standby.process is not None
            assert active.process is not None
            # what keeping warm costs the standby: its CPU over two of its refreshes
            cpu = process_cpu(standby.process.pid)
            time.sleep(IDLE_SAMPLE)
            rss = {
                "standby_cpu_pct": round(
                    (process_cpu(standby.process.pid) - cpu) / IDLE_SAMPLE * 100, 1
                ),
                "active_rss_mb": round(status_mb(active.process.pid, "VmRSS"), 1),
                "standby_rss_mb": round(status_mb(standby.process.pid, "VmRSS"), 1),
            }
            killed_at = active.kill()
            figures = first_dispatch(supervisors, token, killed_at)
            event = wait_event(standby, seen)
            figures["takeover_logged_s"] = event.get("takeover_seconds")
            restored = standby.named("takeover restored")[-1]
            figures["load_logged_s"] = restored.get("load_seconds")
            figures["restore_logged_s"] = restored.get("restore_seconds")
            figures["rows_fetched"] = restored.get("rows_fetched")
            figures["standby_warm_s"] = warm.get("seconds")
            figures.update(rss)
            figures["jobs_kept"] = kept
            rounds.append(figures)
            progress(f"postgresql: round {number + 1}: {figures}")
            active.start()  # back, as the standby
            active, standby = standby, active
        return {"load_s": round(load_s, 1), "rounds": rounds}
    except BaseException:
        for sup in pair.values():
            progress(f"serve-{sup.name}.log ends:\n{sup.tail()}")
        raise
    finally:
        for agent in agents:
            stop(agent)
        for sup in pair.values():
            sup.stop()


def restart_run(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The baseline: one SQLite supervisor, `kill -9` and an immediate restart."""
    sup = Supervisor("sqlite", workdir, "sqlite")
    sup.config.write_text(CONFIG)
    agents: list[subprocess.Popen[bytes]] = []
    try:
        sup.start()
        token = (sup.state / "token").read_text().strip()
        with Client(sup.address, token=token, timeout=120.0) as client:
            load_s = load(client, args.jobs)
            progress(f"sqlite: {args.jobs} jobs loaded in {load_s:.1f} s")
            agents = start_workers(
                workdir, sup.address, sup.state / "token", args.workers, args.slots
            )
            wait_busy(client, args.workers * args.slots)
        rounds = []
        for number in range(args.rounds):
            with Client(sup.address, token=token, timeout=60.0) as client:
                kept = held(client)
            killed_at = sup.kill()
            started = time.monotonic()
            sup.start()  # the same state dir and port; returns once it listens again
            listening_s = time.monotonic() - started
            figures = first_dispatch(sup.address, token, killed_at)
            figures["listening_s"] = round(listening_s, 3)
            figures["jobs_kept"] = kept
            rounds.append(figures)
            progress(f"sqlite: round {number + 1}: {figures}")
        return {"load_s": round(load_s, 1), "rounds": rounds}
    except BaseException:
        progress(f"serve-sqlite.log ends:\n{sup.tail()}")
        raise
    finally:
        for agent in agents:
            stop(agent)
        sup.stop()


def summary(rounds: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(values), 3), round(max(values), 3)


# --------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="queued jobs kept")
    parser.add_argument("--rounds", type=int, default=3, help="kills of each farm (medians)")
    parser.add_argument("--workers", type=int, default=1, help="real farmd workers")
    parser.add_argument("--slots", type=int, default=2, help="slots per worker")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds after the load before the first kill"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the SQLite restart")
    parser.add_argument("--quick", action="store_true", help="a small run for smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds, args.settle = 2_000, 1, 3.0
    if args.jobs < 1 or args.rounds < 1:
        parser.error("--jobs and --rounds: need at least 1")
    wall = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="farmd-failover-"))
    try:
        with postgres_database() as url:  # a database of its own, dropped after
            (workdir / "pg").mkdir()
            failover = failover_run(workdir / "pg", url, args)
        baseline = None
        if not args.no_baseline:
            (workdir / "sqlite").mkdir()
            baseline = restart_run(workdir / "sqlite", args)
    except PostgresUnavailable as exc:
        progress(str(exc))
        sys.exit(77)  # the smoke test skips on this status (no PostgreSQL here)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {"benchmark": "failover", "jobs": args.jobs, "rounds": args.rounds}
    for name, figures in (("takeover", failover), ("restart", baseline)):
        if figures is None:
            continue
        for key in ("dispatch_s", "serving_s"):
            median, worst = summary(figures["rounds"], key)
            result[f"{name}_{key}"] = median
            result[f"{name}_{key.removesuffix('_s')}_max_s"] = worst
        result[f"{name}_load_s"] = figures["load_s"]
        result[f"{name}_rounds"] = figures["rounds"]
    if baseline is not None:
        result["takeover_vs_restart"] = round(
            result["takeover_dispatch_s"] / result["restart_dispatch_s"], 2
        )
    result.update(
        {
            "takeover_target_s": TARGET_S,
            "observable": "the first frame started_at after the kill (a running frame of a worker)",
            "workers": args.workers,
            "slots": args.slots,
            "python": platform.python_version(),
            "machine": f"{os.cpu_count()} cores",
            "wall_s": round(time.monotonic() - wall, 1),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
