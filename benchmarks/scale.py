"""How a real `farmd serve` copes with many connected workers, printed as one JSON line.

For each farm size N (default 100, 1,000, 5,000 and 10,000 workers), a fresh
`farmd serve` subprocess on 127.0.0.1 (SQLite store by default, `--store memory` for
the other) and N protocol-level simulated workers with 1 slot each. The workers run in
their own processes, one per 2,500 workers (`--per-process`), each a trio program
speaking the real codec from `farmd.protocol`: hello, register, a heartbeat every
interval the supervisor's `welcome` names, and a `frame_finished` sent the moment a
`run_frame` arrives. So the supervisor's process holds nothing but the supervisor, and
the driver (this process, no event loop) only submits and reads /proc.

Per N, in this order:
1. connect: every simulator is told to connect its workers at once (at most
   `--connect-concurrency` handshakes in flight per simulator, so the kernel's listen
   backlog does not drop SYNs); the time until the last `registered` arrived.
   Then `rss_mb`: the supervisor's VmRSS (/proc/PID/status).
2. idle: nothing queued, every worker heartbeating; the supervisor's CPU (utime +
   stime from /proc/PID/stat) over `--idle-seconds`, as % of one core, after one
   heartbeat interval of settling; median of `--rounds` windows.
3. latency: `--latency-jobs` one-frame jobs submitted to the idle farm one at a time
   (each waited for before the next); from the driver's submit call to a simulator
   receiving its `run_frame`, both read from CLOCK_MONOTONIC, which every process on
   one Linux machine shares. p50/p99/max over all samples.
4. saturation: `--jobs` jobs of `--frames` ÷ `--jobs` frames each in one
   `submit_batch` (its round trip is `submit_s`), waited for until all are complete;
   frames/s from the first `run_frame` to the last `frame_finished` any simulator saw,
   and the supervisor's CPU from before the submit to the end of the wait, divided by
   the frames (`cpu_ms_per_frame`); medians of `--rounds` rounds.

`cpu_per_frame_vs_100` divides each N's CPU per frame by the smallest N's (100 by
default) from the same run; issue 13's target is ≤ 1.25 at 10,000.

The supervisor's caps are raised through its config file (`max_worker_sessions`,
`max_handshakes`) and every process's RLIMIT_NOFILE to its hard limit. `--profile FILE`
runs the supervisor under cProfile, switched on only for `--profile-phase` (idle or
saturation), and writes FILE (FILE.N when several N are measured).

Usage: python benchmarks/scale.py [--quick] [--workers 100,1000] [--store memory]
       [--rounds 3] [--profile FILE --profile-phase idle|saturation]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import trio  # noqa: E402
from dispatch import percentile, stop  # noqa: E402

from farmd.client import Client  # noqa: E402
from farmd.codec import NEED_DATA, Codec  # noqa: E402
from farmd.config import parse_address  # noqa: E402
from farmd.protocol import (  # noqa: E402
    PROTOCOL_VERSION,
    Error,
    FrameFinished,
    Heartbeat,
    Hello,
    Register,
    Registered,
    RunFrame,
    Welcome,
)

START_TIMEOUT = 30.0
PHASE_TIMEOUT = 900.0
CLUSTERS = ["/show1/lighting", "/show1/comp", "/show2/fx", "/show2/lighting", "/"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Started as `python -c PROFILED_SERVE FILE farmd-args...`: the supervisor under a
# profiler that SIGUSR1 switches on and SIGUSR2 off (dumping FILE), so a profile holds
# one phase and not the connect storm before it. trio wakes on any signal (its wakeup
# fd), so the handler runs at once even on an idle loop.
PROFILED_SERVE = """
import cProfile, runpy, signal, sys
out = sys.argv[1]
profiler = cProfile.Profile()
def stop(*_):
    profiler.disable()
    profiler.dump_stats(out)
signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
signal.signal(signal.SIGUSR2, stop)
sys.argv = ["farmd", *sys.argv[2:]]
runpy.run_module("farmd", run_name="__main__", alter_sys=True)
"""


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one: 10,000 sockets need more than 1,024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- simulator
# Runs in its own process (`scale.py --simulate ...`): commands arrive as lines on
# stdin, answers leave as JSON lines on stdout.


class Simulator:
    def __init__(self, names: list[str], limit: int) -> None:
        self.names = names
        self.host, self.port, self.token = "", 0, ""  # from the driver's `connect`
        self.handshakes = trio.CapacityLimiter(limit)
        self.registered = 0
        self.all_registered = trio.Event()
        self.refusals = 0
        self.dropped = 0
        self.heartbeat_interval = math.nan  # from the supervisor's welcome
        self.record_arrivals = False
        self.arrivals: dict[int, float] = {}
        self.first_start: float | None = None
        self.last_finish = 0.0
        self.finished = 0

    async def worker(self, number: int) -> None:
        name = self.names[number]
        codec = Codec()
        async with self.handshakes:
            while True:  # a refusal (`unavailable`: too many handshakes) is retried
                stream = await trio.open_tcp_stream(self.host, self.port)
                await stream.send_all(
                    codec.send(
                        Hello(version=PROTOCOL_VERSION, role="worker", token=self.token, name=name)
                    )
                    + codec.send(
                        Register(name=name, cluster=CLUSTERS[number % len(CLUSTERS)], slots=1)
                    )
                )
                welcome = await self._until_registered(stream, codec)
                if welcome is not None:
                    break
                self.refusals += 1
                await stream.aclose()
                codec = Codec()
                await trio.sleep(0.05)
        self.registered += 1
        if self.registered == len(self.names):
            self.all_registered.set()
        sending = trio.StrictFIFOLock()  # the heartbeat task and the answers share the stream
        try:
            async with stream, trio.open_nursery() as nursery:
                self.heartbeat_interval = welcome.heartbeat_interval
                nursery.start_soon(
                    self._heartbeats, stream, codec, sending, welcome.heartbeat_interval
                )
                await self._serve(stream, codec, sending)
                nursery.cancel_scope.cancel()
        except* trio.BrokenResourceError:
            pass  # the supervisor dropped it (a heartbeat timeout on a starved machine)
        # Counted, not fatal: its frames are requeued by the supervisor like a lost
        # host's, and the figures say how many were dropped.
        self.dropped += 1

    async def _until_registered(self, stream: Any, codec: Codec) -> Welcome | None:
        welcome = None
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return None
            codec.receive_data(data)
            while (message := codec.next_message()) is not NEED_DATA:
                if isinstance(message, Welcome):
                    welcome = message
                elif isinstance(message, Registered):
                    return welcome
                elif isinstance(message, Error):
                    if message.code == "unavailable":
                        return None
                    sys.exit(f"simulated worker refused: {message.code}: {message.message}")

    async def _heartbeats(self, stream: Any, codec: Codec, sending: Any, interval: float) -> None:
        await trio.sleep(random.uniform(0, interval))  # spread like hosts started apart
        while True:
            async with sending:
                await stream.send_all(codec.send(Heartbeat()))
            await trio.sleep(interval)

    async def _serve(self, stream: Any, codec: Codec, sending: Any) -> None:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            now = time.monotonic()
            codec.receive_data(data)
            out = []
            while (message := codec.next_message()) is not NEED_DATA:
                if isinstance(message, RunFrame):
                    if self.first_start is None:
                        self.first_start = now
                    if self.record_arrivals:
                        self.arrivals.setdefault(message.job_id, now)  # the first
                    out.append(
                        codec.send(
                            FrameFinished(
                                job_id=message.job_id,
                                frame=message.frame,
                                attempt=message.attempt,
                                exit_code=0,
                            )
                        )
                    )
                elif isinstance(message, Error):
                    sys.exit(f"simulated worker dropped: {message.code}: {message.message}")
                # welcome, heartbeat, result_ack need no answer
            if out:
                # counted before the write: once it is written the supervisor may end
                # the job, and the driver ask for the count, before this task runs again
                self.last_finish = time.monotonic()
                self.finished += len(out)
                async with sending:
                    await stream.send_all(b"".join(out))

    async def run(self) -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        pending = b""
        say({"event": "ready"})
        async with trio.open_nursery() as nursery:
            while True:
                while b"\n" not in pending:
                    data = await stdin.receive_some(4096)
                    if not data:
                        nursery.cancel_scope.cancel()
                        return
                    pending += data
                line, pending = pending.split(b"\n", 1)
                command = line.decode().split()
                match command:
                    case ["connect", address, token]:
                        host, port = address.rsplit(":", 1)
                        self.host, self.port, self.token = host, int(port), token
                        started = time.monotonic()
                        for number in range(len(self.names)):
                            nursery.start_soon(self.worker, number)
                        await self.all_registered.wait()
                        say(
                            {
                                "event": "connected",
                                "started": started,
                                "done": time.monotonic(),
                                "refusals": self.refusals,
                                "heartbeat_interval": self.heartbeat_interval,
                            }
                        )
                    case ["mark", record]:
                        self.record_arrivals = record == "arrivals"
                        self.arrivals, self.first_start = {}, None
                        self.last_finish, self.finished = 0.0, 0
                        say({"event": "marked"})
                    case ["report"]:
                        say(
                            {
                                "event": "report",
                                "first": self.first_start,
                                "last": self.last_finish,
                                "finished": self.finished,
                                "dropped": self.dropped,
                                "arrivals": self.arrivals,
                            }
                        )
                    case ["quit"]:
                        nursery.cancel_scope.cancel()
                        return
                    case _:
                        sys.exit(f"simulator: unknown command {line!r}")


def say(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def simulate(args: argparse.Namespace) -> None:
    raise_fd_limit()
    names = [f"sim{number:05d}" for number in range(args.first, args.first + args.count)]
    simulator = Simulator(names, args.connect_concurrency)
    trio.run(simulator.run)


# --------------------------------------------------------------------------- processes


class Simulators:
    """The simulator processes of one farm size; the driver talks to all at once."""

    def __init__(self, workers: int, args: argparse.Namespace) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        try:
            for first in range(0, workers, args.per_process):
                count = min(args.per_process, workers - first)
                self.processes.append(self._start(first, count, args.connect_concurrency))
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _start(first: int, count: int, concurrency: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--simulate",
                "--first",
                str(first),
                "--count",
                str(count),
                "--connect-concurrency",
                str(concurrency),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def tell(self, command: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(command + "\n")
            process.stdin.flush()

    def answers(self, event: str) -> list[dict[str, Any]]:
        answers = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                sys.exit(f"a simulator (pid {process.pid}) ended early: {process.poll()}")
            answer = json.loads(line)
            if answer["event"] != event:
                sys.exit(f"simulator said {answer}, not {event}")
            answers.append(answer)
        return answers

    def ask(self, command: str, event: str) -> list[dict[str, Any]]:
        self.tell(command)
        return self.answers(event)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.write("quit\n")
                    process.stdin.close()
                except OSError:
                    pass
        for process in self.processes:
            stop(process, timeout=30)  # 10,000 connections take a while to close


def start_supervisor(
    workdir: Path, workers: int, args: argparse.Namespace, profile: str | None
) -> tuple[subprocess.Popen[bytes], str, str, IO[bytes]]:
    state = workdir / "state"
    config = workdir / "farmd.yaml"
    simulators = math.ceil(workers / args.per_process)
    config.write_text(
        "supervisor:\n"
        f"  max_worker_sessions: {max(workers + 100, 10_000)}\n"
        # every simulator's handshakes in flight at once, with room to spare
        f"  max_handshakes: {max(256, 2 * args.connect_concurrency * simulators)}\n",
        encoding="utf-8",
    )
    serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state",
        str(state),
        "--config",
        str(config),
        "--store",
        args.store,
        "--log-level",
        "warning",
    ]
    if profile is None:
        command = [sys.executable, "-m", "farmd", *serve]
    else:
        command = [sys.executable, "-c", PROFILED_SERVE, profile, *serve]
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=raise_fd_limit, cwd=ROOT
    )
    deadline = time.monotonic() + START_TIMEOUT
    address_file = state / "address"
    # the file is created, then written: its line is whole once it ends in a newline
    while not (address_file.exists() and address_file.read_text().endswith("\n")):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process, timeout=30)  # 10,000 connections take a while to close
            sys.exit(f"farmd serve did not start: {(workdir / 'serve.log').read_text()}")
        time.sleep(0.02)
    address = address_file.read_text().strip()
    return process, address, (state / "token").read_text().strip(), log


def progress(text: str) -> None:
    """A line on stderr, so a long run shows where it is (stdout carries the JSON)."""
    sys.stderr.write(f"[{Path(sys.argv[0]).stem} {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    msg = f"no {key} in /proc/{pid}/status"
    raise RuntimeError(msg)


def wait_all(client: Client, ids: list[int]) -> None:
    result = client.wait(ids, timeout=PHASE_TIMEOUT)
    if result["pending"] or set(result["ended"].values()) != {"complete"}:
        sys.exit(f"jobs did not complete: pending {result['pending'][:5]}, {result['stuck']}")


# --------------------------------------------------------------------------- one farm size


def measure(workers: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    profile = args.profile
    if profile is not None and len(args.workers) > 1:
        profile = f"{profile}.{workers}"
    simulators = Simulators(workers, args)  # they start while the supervisor does
    process = log = None
    try:
        process, address, token, log = start_supervisor(workdir, workers, args, profile)
        pid = process.pid
        progress(f"{workers} workers: supervisor pid {pid}, connecting")
        simulators.answers("ready")
        connected = simulators.ask(f"connect {address} {token}", "connected")
        figures: dict[str, Any] = {
            "workers": workers,
            "simulator_processes": len(simulators.processes),
            "connect_s": round(
                max(a["done"] for a in connected) - min(a["started"] for a in connected), 4
            ),
            "connect_refusals": sum(a["refusals"] for a in connected),
            "rss_mb": round(status_mb(pid, "VmRSS"), 1),
        }
        progress(f"{workers} workers: connected in {figures['connect_s']} s; idle")
        # One heartbeat interval lets the connect storm's tail (first heartbeats) pass.
        time.sleep(min(connected[0]["heartbeat_interval"], args.idle_seconds))
        with profiled(process, profile is not None and args.profile_phase == "idle"):
            idle = [idle_cpu_pct(pid, args.idle_seconds) for _ in range(args.rounds)]
        figures["idle_cpu_pct"] = round(statistics.median(idle), 2)
        figures["idle_cpu_pct_rounds"] = [round(x, 2) for x in idle]
        with Client(parse_address(address), token=token) as client:
            progress(f"{workers} workers: submit-to-start latency")
            latencies = latency_phase(client, simulators, args)
            progress(f"{workers} workers: saturation")
            with profiled(process, profile is not None and args.profile_phase == "saturation"):
                rounds = [
                    saturation_round(client, simulators, pid, args) for _ in range(args.rounds)
                ]
        figures["peak_rss_mb"] = round(status_mb(pid, "VmHWM"), 1)
    except BaseException:
        serve_log = workdir / "serve.log"
        if serve_log.exists():  # the supervisor's side of the story, before it is deleted
            progress("serve.log ends:\n" + serve_log.read_text(errors="replace")[-4000:])
        raise
    finally:
        simulators.stop()
        if process is not None:
            stop(process, timeout=30)  # 10,000 connections take a while to close
        if log is not None:
            log.close()
        progress(f"{workers} workers: stopped")
    figures.update(
        {
            "submit_to_start_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "submit_to_start_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "submit_to_start_max_ms": round(max(latencies) * 1000, 2),
            "latency_samples": len(latencies),
            "frames_per_s": round(statistics.median(r["frames_per_s"] for r in rounds)),
            "cpu_ms_per_frame": round(statistics.median(r["cpu_ms_per_frame"] for r in rounds), 3),
            "submit_s": round(statistics.median(r["submit_s"] for r in rounds), 3),
            # dropped by the supervisor by the end (heartbeat timeouts), of `workers`
            "workers_dropped": rounds[-1]["workers_dropped"],
            "rounds": rounds,
        }
    )
    return figures


@contextlib.contextmanager
def profiled(process: subprocess.Popen[bytes], on: bool) -> Iterator[None]:
    """The supervisor's profiler on for the block (see PROFILED_SERVE)."""
    if not on:
        yield
        return
    process.send_signal(signal.SIGUSR1)
    try:
        yield
    finally:
        process.send_signal(signal.SIGUSR2)
        time.sleep(2.0)  # the dump happens in the supervisor's own time, before SIGTERM


def idle_cpu_pct(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def latency_phase(client: Client, simulators: Simulators, args: argparse.Namespace) -> list[float]:
    simulators.ask("mark arrivals", "marked")
    sent = {}
    for number in range(args.latency_jobs):
        started = time.monotonic()
        job_id = client.submit(["true"], name=f"lone{number}", cluster=CLUSTERS[number % 5])
        sent[job_id] = started
        wait_all(client, [job_id])
        time.sleep(0.01)  # the farm idles again (the result's commit, the ack)
    arrived: dict[int, float] = {}
    for answer in simulators.ask("report", "report"):
        arrived.update({int(job): at for job, at in answer["arrivals"].items()})
    missing = set(sent) - set(arrived)
    if missing:
        sys.exit(f"no simulator saw the run_frame of jobs {sorted(missing)[:5]}")
    return [arrived[job] - at for job, at in sent.items()]


def saturation_round(
    client: Client, simulators: Simulators, pid: int, args: argparse.Namespace
) -> dict[str, float]:
    simulators.ask("mark count", "marked")
    per_job = args.frames // args.jobs
    jobs = [
        {
            "argv": ["true"],
            "frames": f"1-{per_job}",
            "cluster": CLUSTERS[number % 5],
            "priority": 1 + (number * 37) % 100,
        }
        for number in range(args.jobs)
    ]
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    ids = client.submit_many(jobs)
    submit_s = time.monotonic() - started
    wait_all(client, ids)
    cpu = cpu_seconds(pid) - cpu_before
    answers = simulators.ask("report", "report")
    finished = sum(a["finished"] for a in answers)
    frames = per_job * args.jobs
    if finished < frames:  # more when a dropped worker's frame ran again elsewhere
        sys.exit(f"simulators finished {finished} frames, not {frames}")
    first = min(a["first"] for a in answers if a["first"] is not None)
    last = max(a["last"] for a in answers)
    return {
        "frames_per_s": round(frames / (last - first)),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 3),
        "workers_dropped": sum(a["dropped"] for a in answers),
        "submit_s": round(submit_s, 3),
    }


# --------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", default="100,1000,5000,10000", help="farm sizes, e.g. 100,1000"
    )
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3, help="idle windows and saturation rounds")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--per-process", type=int, default=2_500, help="workers per simulator")
    parser.add_argument(
        "--connect-concurrency", type=int, default=256, help="handshakes in flight per simulator"
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the supervisor into FILE")
    parser.add_argument("--profile-phase", choices=["idle", "saturation"], default="saturation")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    # the simulator process's own options
    parser.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        simulate(args)
        return
    if args.quick:
        args.workers, args.rounds, args.idle_seconds = "3,6", 1, 0.3
        args.latency_jobs, args.frames, args.jobs, args.per_process = 5, 200, 10, 3
    args.workers = [int(n) for n in args.workers.split(",")]
    raise_fd_limit()
    wall = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="farmd-scale-"))
    try:
        per_n = {}
        for workers in args.workers:
            (workdir / str(workers)).mkdir()
            figures = measure(workers, args, workdir / str(workers))
            if figures["workers_dropped"]:
                progress(
                    f"{workers} workers: the supervisor dropped {figures['workers_dropped']} "
                    "of them (heartbeat timeouts): these figures are of fewer workers"
                )
            per_n[str(workers)] = figures
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = per_n[str(args.workers[0])]
    for figures in per_n.values():
        # what each worker beyond the smallest farm adds to the supervisor's RSS
        more = figures["workers"] - base["workers"]
        grown_kb = 1024 * (figures["rss_mb"] - base["rss_mb"])
        figures["rss_kb_per_added_worker"] = round(grown_kb / more, 2) if more else None
    print(
        json.dumps(
            {
                "benchmark": "scale",
                "store": args.store,
                "workers": args.workers,
                "frames": args.frames // args.jobs * args.jobs,
                "jobs": args.jobs,
                "rounds": args.rounds,
                "per_workers": per_n,
                "cpu_per_frame_base_workers": args.workers[0],
                "cpu_per_frame_vs_100": {
                    n: round(f["cpu_ms_per_frame"] / base["cpu_ms_per_frame"], 3)
                    for n, f in per_n.items()
                },
                "python": platform.python_version(),
                "machine": f"{os.cpu_count()} cores",
                "wall_s": round(time.monotonic() - wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
