"""Dispatch throughput of a real `farmd serve`, printed as one JSON line.

Four runs, all on 127.0.0.1:

1. baseline: the simulated workers against a *null supervisor* in a process of its own
   (as `farmd serve` runs in its own), which answers every `frame_finished` with a
   `run_frame` at once and schedules nothing. It measures what the harness and the wire
   alone can carry, so `sim_vs_baseline` says how much of that the real scheduler keeps
   (a ratio that holds on a noisy machine).
2. simulated: a real `farmd serve` subprocess and many protocol-level simulated workers
   that finish every frame instantly, once with the SQLite store (the default: every
   change durable before it takes effect) and once with `--store memory`, so
   `persist_vs_memory` is the share of the in-memory rate that persistence keeps;
   and once more with SQLite and `tls.mode: required`, every worker and client on TLS
   verifying the farm's CA, so `tls_vs_plain` is the share of the plaintext rate that
   TLS keeps (issue 14 asks for 0.75 or more); and once with a PostgreSQL store (a
   database of its own on the machine's server, 127.0.0.1:5432, made and dropped by the
   run; the same group commit off the event loop), so `postgres_vs_sqlite` is the share
   of the SQLite rate that PostgreSQL keeps (issue 17 asks for 0.5 or more). Without a
   reachable server, that run is left out and `postgres_skipped` says why.
   Frames/s completed at saturation, and how long a freed slot waited for its next
   `run_frame` there (queueing, by Little's law about slots / rate). Then one simulated
   worker with one slot, so nothing queues: the time from sending a result to receiving
   the next `run_frame` is the pick-to-start latency (the supervisor decodes the result,
   updates the core, commits, picks, encodes, sends).
3. submits: acknowledged (durable) submits per second, one job per request and in
   batches (`submit_batch`).
4. real: `farmd worker` processes running `true`, so each frame is a real process.
   Frames/s from the first frame's start to the last one's finish (process start-up of
   the workers excluded); `real_wall_s` is the whole run with it.

All four run `--rounds` times (3), one round after another; every figure printed is the
median of the rounds, and `sim_frames_per_s_rounds` shows the spread of the headline.

Usage: python benchmarks/dispatch.py [--quick] [--rounds N] [--frames N] [--workers N]
       [--slots N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farmd.client import Client  # noqa: E402
from farmd.codec import NEED_DATA, Codec  # noqa: E402
from farmd.config import Address  # noqa: E402
from farmd.errors import ConnectionLostError  # noqa: E402
from farmd.protocol import (  # noqa: E402
    PROTOCOL_VERSION,
    FrameFinished,
    Heartbeat,
    Hello,
    Register,
    Registered,
    RunFrame,
    Welcome,
)

START_TIMEOUT = 30.0
DASHBOARDS = 10  # open dashboards in the run that measures their cost
CLUSTERS = ["/show1/lighting", "/show1/comp", "/show2/fx", "/show2/lighting", "/"]
POSTGRES_SERVER = "127.0.0.1:5432"  # the machine's PostgreSQL (trust authentication)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- sim workers


class SimStats:
    def __init__(self, total: int) -> None:
        self.total = total
        self.completed = 0
        self.latencies: list[float] = []
        self.first_start: float | None = None
        self.last_finish = 0.0
        self.done = trio.Event()
        self.notices = 0  # event-stream notices the open dashboards read


async def sim_worker(
    address: Address,
    token: str,
    name: str,
    cluster: str,
    slots: int,
    stats: SimStats,
    tls: ssl.SSLContext | None = None,
) -> None:
    stream: trio.abc.Stream = await trio.open_tcp_stream(address.host, address.port)
    if tls is not None:  # verifying the farm's CA, as `farmd worker --ca` does
        stream = await TlsPipe.open(stream, tls, address.host)
    codec = Codec()
    freed: deque[float] = deque()
    async with stream:
        await stream.send_all(
            codec.send(Hello(version=PROTOCOL_VERSION, role="worker", token=token, name=name))
            + codec.send(Register(name=name, cluster=cluster, slots=slots))
        )
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            codec.receive_data(data)
            out = []
            finished = 0
            now = time.perf_counter()
            while True:
                message = codec.next_message()
                if message is NEED_DATA:
                    break
                if isinstance(message, RunFrame):
                    if stats.first_start is None:
                        stats.first_start = now
                    if freed:  # it fills the slot that has waited longest
                        stats.latencies.append(now - freed.popleft())
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
                    finished += 1
                elif isinstance(message, Heartbeat):
                    out.append(codec.send(Heartbeat()))
                # welcome, registered, result_ack need no answer
            if out:
                await stream.send_all(b"".join(out))
                sent = time.perf_counter()
                freed.extend([sent] * finished)  # the slots free once the results are out
                stats.completed += finished
                if stats.completed >= stats.total:
                    stats.last_finish = sent
                    stats.done.set()


class TlsPipe(trio.abc.Stream):
    """The client side of TLS over a stream, through memory buffers: the cheapest TLS a
    simulated worker can speak in Python (trio's SSLStream costs several times more
    per message), so the TLS run's harness takes as little of the cores it shares
    with the supervisor as the plaintext run's does."""

    def __init__(self, raw: trio.abc.Stream, tls: ssl.SSLContext, host: str) -> None:
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = tls.wrap_bio(self.incoming, self.outgoing, server_hostname=host)

    @classmethod
    async def open(cls, raw: trio.abc.Stream, tls: ssl.SSLContext, host: str) -> TlsPipe:
        pipe = cls(raw, tls, host)
        while True:
            try:
                pipe.tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            out = pipe.outgoing.read()
            if out:
                await raw.send_all(out)
            if done:
                return pipe
            pipe.incoming.write(await raw.receive_some(65536))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.tls.write(data)
        await self.raw.send_all(self.outgoing.read())

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            chunks = []
            while self.incoming.pending or self.tls.pending():
                try:
                    chunks.append(self.tls.read(65536))
                except ssl.SSLWantReadError:
                    break
            if chunks:
                return b"".join(chunks)
            data = await self.raw.receive_some(65536)
            if not data:
                return b""
            self.incoming.write(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.raw.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.raw.aclose()


async def run_sim_workers(
    address: Address,
    token: str,
    workers: int,
    slots: int,
    total: int,
    tls: ssl.SSLContext | None = None,
    dashboards: tuple[str, int] | None = None,
) -> SimStats:
    """`dashboards`: (the supervisor's HTTP base URL, how many) open event streams, as
    that many dashboards left open would, read while the frames run."""
    stats = SimStats(total)
    async with trio.open_nursery() as nursery:
        if dashboards is not None:
            base, count = dashboards
            for _ in range(count):
                nursery.start_soon(watch_events, base, token, stats)
        for number in range(workers):
            nursery.start_soon(
                sim_worker,
                address,
                token,
                f"sim{number:03d}",
                CLUSTERS[number % len(CLUSTERS)],
                slots,
                stats,
                tls,
            )
        with trio.fail_after(600):
            await stats.done.wait()
        nursery.cancel_scope.cancel()
    return stats


async def watch_events(base: str, token: str, stats: SimStats) -> None:
    """One open dashboard's live updates: the supervisor's event stream, read and
    counted (the notices only: a page would then fetch the jobs they name)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", f"{base}/api/v1/events", headers=headers) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                stats.notices += 1


# --------------------------------------------------------------------------- baseline


async def serve_null(port_file: Path, total: int) -> None:
    """A server that only echoes work back: every slot a worker registers, and every
    result, gets the next `run_frame` at once, until `total` frames have gone out. It
    schedules nothing, so the simulated workers against it measure what the harness and
    the wire alone carry. It runs in its own process, as `farmd serve` does."""
    remaining = total

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal remaining
        codec = Codec()
        job = 0
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            codec.receive_data(data)
            out = []
            while True:
                message = codec.next_message()
                if message is NEED_DATA:
                    break
                grants = 0
                if isinstance(message, Hello):
                    out.append(
                        codec.send(
                            Welcome(
                                version=1,
                                supervisor="null",
                                heartbeat_interval=60.0,
                                max_frame_bytes=4 * 1024 * 1024,
                            )
                        )
                    )
                elif isinstance(message, Register):
                    out.append(codec.send(Registered(name=message.name)))
                    grants = message.slots
                elif isinstance(message, FrameFinished):
                    grants = 1
                for _ in range(grants):
                    if remaining > 0:
                        remaining -= 1
                        job += 1
                        out.append(
                            codec.send(
                                RunFrame(
                                    job_id=1,
                                    job_name="null",
                                    frame=job,
                                    attempt=1,
                                    argv=("true",),
                                    env={"FARMD_FRAME": str(job)},
                                )
                            )
                        )
            if out:
                await stream.send_all(b"".join(out))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        await trio.Path(port_file).write_text(str(port))  # the driver waits for this file


def null_run(workdir: Path, workers: int, slots: int, total: int) -> SimStats:
    """The simulated workers against the null server, started as a process of its own."""
    port_file = workdir / "null.port"
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-null", str(port_file), "--frames", str(total)]
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists() or not port_file.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit("the null supervisor did not start")
            time.sleep(0.02)
        address = Address("127.0.0.1", int(port_file.read_text()))
        return trio.run(run_sim_workers, address, "x", workers, slots, total)
    finally:
        stop(process)


# --------------------------------------------------------------------------- processes


def start_supervisor(
    state: Path,
    store: str = "sqlite",
    *,
    listen: str = "127.0.0.1:0",
    log_level: str = "warning",
    timeout: float = START_TIMEOUT,
    config: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Address, str]:
    """`farmd serve` on STATE, its output appended to STATE/../serve.log; returns once it
    listens (it writes STATE/address after restoring the farm the state dir holds, so
    `timeout` must allow for a large restore)."""
    address_file = state / "address"
    address_file.unlink(missing_ok=True)  # a killed supervisor's would say ready at once
    with (state.parent / "serve.log").open("ab") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "farmd",
                "serve",
                "--listen",
                listen,
                "--state",
                str(state),
                "--store",
                store,
                "--log-level",
                log_level,
                *(["--config", str(config)] if config is not None else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    token_file = state / "token"
    if store.startswith("postgresql:"):
        # it listens as a standby first, and writes its token once it is active
        token_file.unlink(missing_ok=True)
    # whole once it ends with its newline (the file is created, then written)
    while not (
        address_file.exists()
        and address_file.read_text().endswith("\n")
        and token_file.exists()
        and token_file.read_text().endswith("\n")
    ):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            sys.exit(f"farmd serve did not start; see {state.parent / 'serve.log'}")
        time.sleep(0.02)
    host, port = address_file.read_text().strip().rsplit(":", 1)
    return process, Address(host, int(port)), token_file.read_text().strip()


def await_active(address: Address, token: str, timeout: float = START_TIMEOUT) -> None:
    """Until the supervisor at `address` serves (one on a PostgreSQL store listens as a
    standby first, until it has won the farm's lock and loaded the farm)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(address, token=token, timeout=5.0) as client:
                client.workers()
            return
        except ConnectionLostError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class PostgresUnavailable(Exception):
    """No PostgreSQL server to measure on: the run says why and goes on without it."""


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the machine's server, dropped on exit; raises
    `PostgresUnavailable` naming why when the server cannot be used."""
    import psycopg

    admin_url = f"postgresql://postgres@{POSTGRES_SERVER}/postgres"
    name = f"farmd_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        why = " ".join(str(exc).split())
        raise PostgresUnavailable(f"PostgreSQL at {POSTGRES_SERVER}: {why}") from exc
    try:
        yield f"postgresql://postgres@{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user and system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """End `process`: SIGTERM, and SIGKILL if it is still there after `timeout` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def submit_queue(client: Client, frames: int, per_job: int) -> list[int]:
    ids = []
    for number in range(0, frames, per_job):
        count = min(per_job, frames - number)
        ids.append(
            client.submit(
                ["true"],
                frames=f"1-{count}",
                cluster=CLUSTERS[len(ids) % len(CLUSTERS)],
                priority=1 + (len(ids) * 37) % 100,
            )
        )
    return ids


def simulated_run(
    workdir: Path,
    store: str,
    workers: int,
    slots: int,
    frames: int,
    latency_frames: int,
    tls: bool = False,
    dashboards: int = 0,
) -> dict[str, Any]:
    """The simulated workers against `farmd serve`; with `tls`, the supervisor has
    `tls.mode: required` and every worker and client speaks TLS, verifying the farm's CA
    (the same run otherwise: same store, same workers, same queue)."""
    kind = "postgresql" if store.startswith("postgresql:") else store
    state = workdir / f"sim-{kind}{'-tls' if tls else ''}{f'-{dashboards}' if dashboards else ''}"
    config = None
    if tls:
        state.mkdir(parents=True, exist_ok=True)
        config = workdir / "tls.yaml"
        config.write_text("supervisor:\n  tls: {mode: required}\n")
    process, address, token = start_supervisor(state, store, config=config)
    if kind == "postgresql":
        await_active(address, token)
    ca = state / "tls" / "ca.pem" if tls else None
    context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        with Client(address, token=token, ca=ca) as client:
            submit_queue(client, frames, 100)
        streams = None
        if dashboards:
            http = (state / "http_address").read_text().strip()
            streams = (f"http://{http}", dashboards)
        cpu_before = process_cpu(process.pid)
        loaded = trio.run(run_sim_workers, address, token, workers, slots, frames, context, streams)
        supervisor_cpu = process_cpu(process.pid) - cpu_before
        # One slot alone: every result is answered by the next pick, nothing queues, so
        # this is the pick-to-start latency itself (result in -> pick -> run_frame out).
        with Client(address, token=token, ca=ca) as client:
            submit_queue(client, latency_frames, 100)
        alone = trio.run(run_sim_workers, address, token, 1, 1, latency_frames, context)
    finally:
        stop(process)
    assert loaded.first_start is not None
    elapsed = loaded.last_finish - loaded.first_start
    return {
        "sim_frames_per_s": round(frames / elapsed),
        # the supervisor's own CPU per frame at saturation: what the scheduler (and TLS)
        # cost, apart from the simulated workers sharing the machine's cores
        "supervisor_cpu_per_frame_us": round(supervisor_cpu / frames * 1e6, 1),
        "dashboard_notices": loaded.notices,
        "pick_to_start_p50_ms": round(percentile(alone.latencies, 0.5) * 1000, 3),
        "pick_to_start_p99_ms": round(percentile(alone.latencies, 0.99) * 1000, 3),
        "saturated_wait_p50_ms": round(percentile(loaded.latencies, 0.5) * 1000, 3),
        "saturated_wait_p99_ms": round(percentile(loaded.latencies, 0.99) * 1000, 3),
    }


def submit_rates(workdir: Path, single: int, batches: int, batch: int) -> dict[str, Any]:
    """Acknowledged submits per second with the SQLite store: one job per request (each
    waits for its commit), and `batch` jobs per request (one commit for the lot)."""
    process, address, token = start_supervisor(workdir / "submit-state")
    try:
        with Client(address, token=token) as client:
            started = time.perf_counter()
            for number in range(single):
                client.submit(["true"], name=f"single{number}", cluster="/show1/lighting")
            single_rate = single / (time.perf_counter() - started)
            started = time.perf_counter()
            for number in range(batches):
                client.submit_many(
                    {"argv": ["true"], "name": f"batch{number}-{i}", "cluster": "/show2/fx"}
                    for i in range(batch)
                )
            batched_rate = batches * batch / (time.perf_counter() - started)
            if client.jobs(limit=1)["total"] != single + batches * batch:
                sys.exit("submit run lost jobs")
    finally:
        stop(process)
    return {
        "submits_per_s_single": round(single_rate),
        "submits_per_s_batched": round(batched_rate),
        "submit_batch_size": batch,
    }


def start_worker(
    workdir: Path, address: Address | str, token_file: Path, name: str, slots: int
) -> subprocess.Popen[bytes]:
    """A real `farmd worker` process, its output in WORKDIR/NAME.log; `address` may be
    a supervisor list (`a:7531,b:7531`)."""
    log = (workdir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "farmd",
            "worker",
            "--supervisor",
            str(address),
            "--token-file",
            str(token_file),
            "--name",
            name,
            "--slots",
            str(slots),
            "--log-dir",
            str(workdir / f"logs-{name}"),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def real_run(workdir: Path, workers: int, slots: int, frames: int) -> dict[str, Any]:
    state = workdir / "real-state"
    process, address, token = start_supervisor(state)
    agents = []
    try:
        with Client(address, token=token) as client:
            ids = submit_queue(client, frames, 50)
            started = time.perf_counter()
            agents.extend(
                start_worker(workdir, address, state / "token", f"real{number}", slots)
                for number in range(workers)
            )
            result = client.wait(ids, timeout=600)
            elapsed = time.perf_counter() - started
            if result["pending"] or set(result["ended"].values()) != {"complete"}:
                sys.exit(f"real run did not complete: {result}")
            gaps = []
            for job_id in ids:
                for frame in client.iter_frames(job_id):  # every page
                    gaps.append((frame["worker"], frame["started_at"], frame["finished_at"]))
    finally:
        for agent in agents:
            stop(agent)
        stop(process)
    first_start = min(start for _, start, _ in gaps)
    last_finish = max(finish for _, _, finish in gaps)
    return {
        "real_frames_per_s": round(frames / (last_finish - first_start), 1),
        "real_wall_s": round(elapsed, 2),
    }


def one_round(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure once: the baseline, the simulated runs, submits and real workers."""
    baseline = null_run(workdir, args.workers, args.slots, args.frames)
    assert baseline.first_start is not None
    base_rate = args.frames / (baseline.last_finish - baseline.first_start)
    sim = (args.workers, args.slots, args.frames, args.latency_frames)
    figures = simulated_run(workdir, "sqlite", *sim)
    memory = simulated_run(workdir, "memory", *sim)
    figures["memory_frames_per_s"] = memory["sim_frames_per_s"]
    figures["memory_pick_to_start_p50_ms"] = memory["pick_to_start_p50_ms"]
    figures["persist_vs_memory"] = round(
        figures["sim_frames_per_s"] / memory["sim_frames_per_s"], 3
    )
    try:
        with postgres_database() as url:
            postgres = simulated_run(workdir, url, *sim)
    except PostgresUnavailable as exc:
        figures["postgres_skipped"] = str(exc)
    else:
        figures["postgres_frames_per_s"] = postgres["sim_frames_per_s"]
        figures["postgres_pick_to_start_p50_ms"] = postgres["pick_to_start_p50_ms"]
        figures["postgres_vs_sqlite"] = round(
            postgres["sim_frames_per_s"] / figures["sim_frames_per_s"], 3
        )
    secure = simulated_run(workdir, "sqlite", *sim, tls=True)
    figures["tls_frames_per_s"] = secure["sim_frames_per_s"]
    figures["tls_pick_to_start_p50_ms"] = secure["pick_to_start_p50_ms"]
    figures["tls_vs_plain"] = round(secure["sim_frames_per_s"] / figures["sim_frames_per_s"], 3)
    figures["tls_supervisor_cpu_per_frame_us"] = secure["supervisor_cpu_per_frame_us"]
    figures["tls_cpu_vs_plain"] = round(
        secure["supervisor_cpu_per_frame_us"] / figures["supervisor_cpu_per_frame_us"], 3
    )
    # ten dashboards left open on the same run: what their live updates cost
    watched = simulated_run(workdir, "sqlite", *sim, dashboards=DASHBOARDS)
    figures["dashboards"] = DASHBOARDS
    figures["dashboards_frames_per_s"] = watched["sim_frames_per_s"]
    figures["dashboards_vs_none"] = round(
        watched["sim_frames_per_s"] / figures["sim_frames_per_s"], 3
    )
    figures["dashboards_supervisor_cpu_per_frame_us"] = watched["supervisor_cpu_per_frame_us"]
    extra = watched["supervisor_cpu_per_frame_us"] - figures["supervisor_cpu_per_frame_us"]
    figures["cpu_per_frame_per_dashboard_us"] = round(extra / DASHBOARDS, 2)
    figures["dashboard_notices_per_s"] = round(
        watched["dashboard_notices"] / DASHBOARDS / (args.frames / watched["sim_frames_per_s"]), 1
    )
    figures["baseline_frames_per_s"] = round(base_rate)
    figures["sim_vs_baseline"] = round(figures["sim_frames_per_s"] / base_rate, 3)
    figures.update(submit_rates(workdir, args.single_submits, args.batches, args.batch))
    figures.update(real_run(workdir, args.real_workers, args.real_slots, args.real_frames))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--latency-frames", type=int, default=3_000)
    parser.add_argument("--real-frames", type=int, default=400)
    parser.add_argument("--real-workers", type=int, default=2)
    parser.add_argument("--real-slots", type=int, default=4)
    parser.add_argument("--single-submits", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="figures are their medians")
    parser.add_argument("--quick", action="store_true", help="a small run for smoke tests")
    parser.add_argument("--serve-null", type=Path, metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_null is not None:  # the baseline's server, in a process of its own
        trio.run(serve_null, args.serve_null, args.frames)
        return
    if args.quick:
        args.frames, args.workers, args.real_frames, args.latency_frames = 2_000, 10, 20, 200
        args.single_submits, args.batches, args.batch, args.rounds = 50, 2, 50, 1
    workdir = Path(tempfile.mkdtemp(prefix="farmd-bench-"))
    try:
        rounds = []
        for number in range(max(1, args.rounds)):
            # each round's supervisors start on state dirs of their own: a second round on
            # the first's would restore (and count) what the first left behind
            (workdir / f"round{number}").mkdir()
            rounds.append(one_round(workdir / f"round{number}", args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures: dict[str, Any] = {
        "benchmark": "dispatch",
        "frames": args.frames,
        "sim_workers": args.workers,
        "sim_slots": args.slots,
    }
    # every figure is the median of the rounds (a ratio: the median of each round's own)
    for key in rounds[0]:
        values = [r[key] for r in rounds if key in r]
        numeric = key not in ("submit_batch_size", "postgres_skipped")
        figures[key] = statistics.median(values) if numeric else values[0]
    figures.update(
        rounds=len(rounds),
        sim_frames_per_s_rounds=[r["sim_frames_per_s"] for r in rounds],
        real_frames=args.real_frames,
        real_workers=args.real_workers,
        real_slots=args.real_slots,
        python=platform.python_version(),
        machine=f"{os.cpu_count()} cores",
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
