"""The abuse suite: hostile and careless peers against a real `farmd serve`.

One supervisor takes, one after another, the attacks a token holder (or anyone who can
reach the port) can make: garbage and truncated frames, oversize length claims, deep
msgpack nesting, a client that sends requests and never reads, a slowloris handshake, a
flood of sessions, refused worker registrations and big submits. Throughout, a probe
thread keeps asking for the job list on its own connection and records how long each
answer took; at the end every answer must have come within `PROBE_BOUND` seconds, the
supervisor must still be the same live process, its RSS bounded, and `farmd jobs` must
work. Everything talks to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from farmd.client import Client
from farmd.protocol import PROTOCOL_VERSION
from tests.e2e_support import LOCALHOST, Farm, wait_for

pytestmark = pytest.mark.e2e

PROBE_BOUND = 3.0  # seconds: the longest any probe answer may take during the attacks
RSS_BOUND_MB = 600  # the supervisor's resident memory at the end, with a 200k-frame job
SOCKET_TIMEOUT = 5.0


# --------------------------------------------------------------------------- the wire


def frame(body: object) -> bytes:
    payload = msgpack.packb(body, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


def connect(farm: Farm) -> socket.socket:
    host, _, port = farm.address.rpartition(":")
    assert host == LOCALHOST
    return socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT)


def read_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None if the supervisor closed the connection."""
    header = _read_exactly(sock, 4)
    if header is None:
        return None
    body = _read_exactly(sock, int.from_bytes(header, "big"))
    if body is None:
        return None
    message = msgpack.unpackb(body, raw=False)
    assert isinstance(message, dict)
    return message


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    for _ in range(size + 1):  # bounded: each recv returns at least one byte or ends
        if len(data) == size:
            return data
        try:
            chunk = sock.recv(size - len(data))
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


def hello(token: str, role: str = "admin") -> bytes:
    return frame({"type": "hello", "version": PROTOCOL_VERSION, "role": role, "token": token})


def closed_after_error(sock: socket.socket) -> dict[str, Any] | None:
    """Read until the supervisor closes the connection; the `error` it sent, if any."""
    error = None
    for _ in range(100):  # bounded: a refused peer gets a few messages at most
        message = read_message(sock)
        if message is None:
            return error
        if message.get("type") == "error":
            error = message
    raise AssertionError("the supervisor kept the connection open")


# --------------------------------------------------------------------------- the probe


class Probe:
    """Asks for the job list on its own connection, over and over, timing each answer."""

    def __init__(self, farm: Farm) -> None:
        self.client = Client(farm.address, token_file=farm.token_file, timeout=30.0)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 120.0  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                self.client.jobs()
            except Exception as exc:  # recorded and asserted on, never swallowed
                self.errors.append(repr(exc))
            self.latencies.append(time.monotonic() - started)
            self._stop.wait(0.05)

    @contextlib.contextmanager
    def running(self) -> Iterator[Probe]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=40.0)
            self.client.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------- attacks


def garbage(farm: Farm) -> None:
    with connect(farm) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
        closed_after_error(sock)


def truncated(farm: Farm) -> None:
    with connect(farm) as sock:
        sock.sendall((100).to_bytes(4, "big") + b"\x81\xa4type")  # 7 of 100 bytes, then gone


def oversize_claim(farm: Farm) -> None:
    with connect(farm) as sock:
        sock.sendall((2**32 - 1).to_bytes(4, "big") + b"\x00" * 64)
        error = closed_after_error(sock)
        assert error is not None
        assert error["code"] == "frame_too_large", error


def deep_nesting(farm: Farm, token: str) -> None:
    with connect(farm) as sock:
        sock.sendall(hello(token))
        assert read_message(sock)["type"] == "welcome"  # type: ignore[index]
        nested = b"\x91" * 100_000 + b"\xc0"  # [[[[...nil...]]]], 100,000 deep
        body = b"\x83\xa4type\xa9list_jobs\xaarequest_id\x01\xa1x" + nested
        sock.sendall(len(body).to_bytes(4, "big") + body)
        error = closed_after_error(sock)
        assert error is not None, "deep nesting was not refused"


def refused_registrations(farm: Farm, token: str, times: int = 5) -> None:
    for _ in range(times):
        with connect(farm) as sock:
            sock.sendall(hello(token, role="worker"))
            assert read_message(sock)["type"] == "welcome"  # type: ignore[index]
            register = {
                "type": "register",
                "name": "bad-worker",
                "cluster": "/",
                "slots": 1,
                "types": ["Nuke"],
            }
            sock.sendall(frame(register))
            error = closed_after_error(sock)
            assert error is not None, "a refused registration got no error"
            assert "Nuke" in error["message"], error


def never_reading(farm: Farm, token: str, seconds: float = 4.0) -> int:
    """Send list_jobs requests as fast as the socket takes them, never reading a reply;
    return how many bytes went out before the supervisor stopped taking them."""
    sock = connect(farm)
    sent = 0
    try:
        sock.sendall(hello(token))
        request = frame({"type": "list_jobs", "request_id": 1})
        sock.setblocking(False)
        deadline = time.monotonic() + seconds
        for _ in range(10_000_000):  # bounded by the deadline long before the count
            if time.monotonic() > deadline:
                break
            try:
                sent += sock.send(request * 64)
            except BlockingIOError:
                time.sleep(0.01)  # the kernel buffers are full: backpressure works
            except (BrokenPipeError, ConnectionResetError):
                break  # dropped by the supervisor: also fine
    finally:
        sock.close()
    return sent


@contextlib.contextmanager
def slowloris(farm: Farm, count: int = 20) -> Iterator[None]:
    """`count` connections that each send one byte of a hello and then stall (past
    the handshake cap the supervisor refuses the rest at once)."""
    socks = []
    try:
        for _ in range(count):
            sock = connect(farm)
            socks.append(sock)
            with contextlib.suppress(OSError):  # refused past the cap: closed already
                sock.sendall(b"\x00")
        yield
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def session_flood(farm: Farm, token: str, count: int = 300) -> Iterator[int]:
    """Open `count` authenticated sessions and hold them; yields how many were let in."""
    socks = []
    admitted = 0
    try:
        for _ in range(count):
            sock = connect(farm)
            socks.append(sock)
            sock.sendall(hello(token))
            message = read_message(sock)
            if message is not None and message.get("type") == "welcome":
                admitted += 1
        yield admitted
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------- the suite


# The caps of docs/protocol.md 1.1, lowered so that the flood and the slowloris reach
# them: the probe's farm-token session has a cap of its own and is never crowded out.
LIMITS = "supervisor:\n  max_user_sessions: 100\n  max_handshakes: 64\n"


def test_no_peer_crashes_stalls_or_bloats_the_supervisor(bare_farm: Farm) -> None:
    farm = bare_farm
    config = farm.root / "farm.yaml"
    config.write_text(LIMITS)
    supervisor = farm.serve("--config", str(config))
    user_token = (farm.state / "user_token").read_text().strip()
    farm_token = farm.token_file.read_text().strip()
    kept = farm.submit(["true"], name="kept", frames="1-3")
    with Probe(farm).running() as probe:
        garbage(farm)
        truncated(farm)
        oversize_claim(farm)
        deep_nesting(farm, user_token)
        refused_registrations(farm, farm_token)
        sent = never_reading(farm, user_token)
        with session_flood(farm, user_token) as admitted, slowloris(farm, count=80):
            big = farm.submit(["true"], name="big", frames="1-200000")
            listed = {job["id"]: job for job in farm.api.iter_jobs()}
            assert listed[big]["frames"]["pending"] == 200_000
        wait_for(lambda: len(probe.latencies) >= 20, "the probe to answer 20 times")
    assert not probe.errors, probe.errors[:3]
    assert max(probe.latencies) < PROBE_BOUND, sorted(probe.latencies)[-5:]
    assert supervisor.running(), supervisor.stderr()
    assert rss_mb(supervisor.pid) < RSS_BOUND_MB
    assert sent > 0
    assert admitted == 100, admitted  # the user cap let 100 in, and no more
    listing = farm.cli_ok("jobs")
    assert "kept" in listing
    assert "big" in listing
    assert farm.job(kept)["name"] == "kept"
    assert "Traceback" not in supervisor.stderr()
