"""End-to-end: no single connection can crash, stall or bloat the supervisor.

Issue 11, items 1, 3 and 7, each against a real `farmd serve` on 127.0.0.1. The peers
here are raw sockets speaking msgpack maps in length-prefixed frames (docs/protocol.md,
section 2), not farmd's own codec or client, so nothing on the peer's side checks or
fixes what is sent, and a peer can do what farmd's tools never would: pipeline a hello
and a refused registration, send requests and never read, open too many sessions, or
register a worker name another worker holds. What only takes time to show (an idle
session closed, a silent namesake replaced, an agent back over its ghost session) is
proven in process, on a MockClock where timers matter: tests/test_*_inprocess.py.

The supervisor's memory is read from /proc/PID/status (VmRSS); the bounds asserted are
generous, and what they guard against is the unbounded growth of the old outbox (about
1 GB for a few KB of requests).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from farmd.protocol import PROTOCOL_VERSION
from tests.e2e_support import LOCALHOST, Farm, wait_for

pytestmark = pytest.mark.e2e

PROBE_SECONDS = 3.0  # how long another client's `farmd jobs` may take while a peer misbehaves
BIG_ARGV_BYTES = 200_000  # a job whose `get_job` answer is this large (the limit is 256 KiB)


# --------------------------------------------------------------------------- a raw peer


def frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message)
    return len(body).to_bytes(4, "big") + body


def hello(token: str, role: str = "admin") -> dict[str, Any]:
    return {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "role": role,
        "token": token,
        "name": "raw",
    }


def register(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "register", "name": name, "cluster": "/", "slots": 1, **fields}


class Peer:
    """A protocol-level peer on a raw socket; every read is bounded by a timeout."""

    def __init__(self, address: str, *, rcvbuf: int | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # set before connecting, so the TCP window is small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10.0)
        self.sock.connect((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, *messages: dict[str, Any]) -> None:
        self.sock.sendall(b"".join(frame(m) for m in messages))

    def receive(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next message, or None if the supervisor closed the connection first."""
        self.sock.settimeout(timeout)
        for _ in range(10_000):  # bounded: each read brings at least one byte
            if len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "big")
                if len(self.buffer) >= 4 + size:
                    body = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    message = msgpack.unpackb(body)
                    assert isinstance(message, dict), message
                    return message
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buffer += data
        raise AssertionError("no whole message in 10000 reads")

    def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        message = self.receive(timeout)
        assert message is not None, f"the connection closed before a {kind!r}"
        assert message["type"] == kind, message
        return message

    def expect_closed(self, timeout: float = 10.0) -> None:
        message = self.receive(timeout)
        assert message is None, f"expected the connection to close, got {message}"

    def admin(self, token: str) -> None:
        self.send(hello(token))
        self.expect("welcome")


def token(farm: Farm, name: str = "token") -> str:
    return (farm.state / name).read_text().strip()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def probe(farm: Farm) -> float:
    """Seconds another client's `farmd jobs` takes; it must answer, and quickly."""
    seconds = timed(lambda: farm.cli_ok("jobs", timeout=30))
    assert seconds < PROBE_SECONDS, f"`farmd jobs` took {seconds:.1f} s"
    return seconds


def serve_with(farm: Farm, settings: str) -> None:
    """Start `farmd serve` with these `supervisor:` settings (YAML lines)."""
    config = farm.root / "farm.yaml"
    lines = "".join(f"  {line.strip()}\n" for line in settings.strip().splitlines())
    config.write_text(f"supervisor:\n{lines}")
    farm.serve("--config", str(config))


def supervisor_log(farm: Farm) -> str:
    assert farm.supervisor is not None
    return farm.supervisor.stderr()


def assert_serving(farm: Farm) -> None:
    assert farm.supervisor is not None
    assert farm.supervisor.running(), supervisor_log(farm)
    probe(farm)


# --------------------------------------------------------------------------- item 1


def test_a_refused_registration_is_answered_and_the_supervisor_keeps_serving(
    farm: Farm,
) -> None:
    """Each refused `register` gets the `welcome`, then an `error` naming the bad value,
    then the close: the refusal is queued behind the welcome, not written past it. Half
    the peers pipeline hello and register, half send the register the moment the welcome
    arrives (when the supervisor may still be writing the welcome: the old goodbye wrote
    over it and ended the supervisor)."""
    farm_token = token(farm)
    for attempt in range(20):
        with Peer(farm.address) as peer:
            refused = register("nuke-host", types=["Nuke"])
            if attempt % 2:
                peer.send(hello(farm_token, "worker"), refused)
                peer.expect("welcome")
            else:
                peer.send(hello(farm_token, "worker"))
                peer.expect("welcome")
                peer.send(refused)
            error = peer.expect("error")
            assert error["code"] == "bad_job", error
            assert error["message"].startswith("registration refused: "), error
            assert "'Nuke'" in error["message"], error
            peer.expect_closed()
    assert_serving(farm)
    assert farm.cli_json("workers") == []
    log = supervisor_log(farm)
    assert log.count("code=bad_job") == 20, log
    assert "Traceback" not in log, log


def test_a_protocol_error_behind_unsent_answers_leaves_the_supervisor_serving(
    bare_farm: Farm,
) -> None:
    """A peer breaks the protocol while the supervisor is still writing answers to it
    (it does not read them). The old goodbye wrote the `error` itself, over the sender's
    unfinished write: trio's BusyResourceError ended the supervisor, every time. Now the
    peer is only ever written to by its sender; it stops being served, and once it has
    taken nothing for `idle_timeout` it is dropped. Everyone else is served throughout."""
    serve_with(bare_farm, "idle_timeout: 2")
    job_id = bare_farm.submit(["true", "x" * BIG_ARGV_BYTES])
    with Peer(bare_farm.address, rcvbuf=4096) as peer:
        peer.admin(token(bare_farm))
        # 12 MB of answers: more than the socket buffers hold, so the sender blocks
        peer.send(*({"type": "get_job", "request_id": i, "job_id": job_id} for i in range(1, 61)))
        assert_serving(bare_farm)  # so the supervisor has read them, and is writing
        peer.sock.sendall(b"\x00\x00\x00\x00")  # a zero-length frame: bad_frame
        assert_serving(bare_farm)
        wait_for(
            lambda: "took nothing" in supervisor_log(bare_farm),
            "the supervisor to drop the peer that reads nothing",
            timeout=15,
        )
        assert_serving(bare_farm)
    log = supervisor_log(bare_farm)
    assert "Traceback" not in log, log
    assert "BusyResourceError" not in log, log


# --------------------------------------------------------------------------- item 3


def test_a_never_reading_client_costs_bounded_memory_and_others_are_served(
    farm: Farm,
) -> None:
    """500 `get_job` requests of a 200 KB answer each (100 MB of answers, from 20 KB of
    requests) from a client that never reads: the supervisor stops reading it once about
    `outbox_pause_bytes` wait, so its memory stays put, and `farmd jobs` answers."""
    assert farm.supervisor is not None
    job_id = farm.submit(["true", "x" * BIG_ARGV_BYTES])
    probe(farm)
    baseline = rss_bytes(farm.supervisor.pid)
    with Peer(farm.address, rcvbuf=4096) as peer:
        peer.admin(token(farm))
        requests = b"".join(
            frame({"type": "get_job", "request_id": i, "job_id": job_id}) for i in range(1, 501)
        )
        peer.sock.settimeout(10)
        peer.sock.sendall(requests)  # 20 KB: fits in the socket buffers unread
        # three other sessions served meanwhile, by the same event loop: by then it has
        # read of the flood what it will read (the old supervisor: all 500 at once)
        seconds, grown = [], 0
        for _ in range(3):
            seconds.append(probe(farm))
            grown = max(grown, rss_bytes(farm.supervisor.pid) - baseline)
        assert grown < 48 * 2**20, f"the supervisor grew by {grown / 2**20:.0f} MiB"
        assert farm.supervisor.running()
    assert max(seconds) < PROBE_SECONDS


def test_a_worker_that_does_not_read_its_pushes_is_dropped(bare_farm: Farm) -> None:
    """The supervisor's pushes to a worker (run_frame here) cannot wait; a worker that
    lets more than `max_outbox_bytes` pile up is dropped with one log line, and its
    frames go back to the queue."""
    serve_with(bare_farm, "max_outbox_bytes: 1048576\noutbox_pause_bytes: 65536")
    assert bare_farm.supervisor is not None
    with Peer(bare_farm.address, rcvbuf=4096) as peer:
        peer.send(hello(token(bare_farm), "worker"), register("deaf", slots=100))
        peer.expect("welcome")
        peer.expect("registered")
        port = peer.port
        job_id = bare_farm.submit(["true", "x" * 100_000], frames="1-100")
        wait_for(
            lambda: "deaf" not in bare_farm.worker_names(),
            "the supervisor to drop the worker that reads nothing",
            timeout=10,
        )
        log = supervisor_log(bare_farm)
        dropped = [line for line in log.splitlines() if "peer dropped" in line]
        assert len(dropped) == 1, log
        assert f"{LOCALHOST}:{port}" in dropped[0], dropped
        assert "1048576" in dropped[0], dropped
        frames = bare_farm.frames(job_id)
        assert {f["state"] for f in frames.values()} == {"pending"}, frames
    assert_serving(bare_farm)


def test_connection_caps_refuse_the_excess(bare_farm: Farm) -> None:
    serve_with(
        bare_farm,
        "max_handshakes: 2\nmax_admin_sessions: 2\nmax_user_sessions: 2\nmax_worker_sessions: 1",
    )
    farm_token, user_token = token(bare_farm), token(bare_farm, "user_token")
    address = bare_farm.address

    # first, while nothing else is connected: two admin sessions, and a third is refused
    with Peer(address) as a:
        a.admin(farm_token)
        with Peer(address) as b:
            b.admin(farm_token)
            with Peer(address) as c:
                c.send(hello(farm_token))
                error = c.expect("error")
                assert error["message"] == "too many admin sessions (2): try again later"
                c.expect_closed()

    # two connections that never finish a hello fill the handshake: the next is refused
    with Peer(address) as a, Peer(address) as b:
        a.sock.sendall(b"\x00\x00")
        refused = wait_for(
            lambda: _refused(address), "a third connection to be refused", timeout=10
        )
        assert refused == {
            "type": "error",
            "code": "unavailable",
            "message": "too many connections in the handshake (2): try again later",
        }
        for peer in (a, b):  # still held, not refused
            with pytest.raises(TimeoutError):
                peer.receive(timeout=0.2)
    wait_for(lambda: _answers(bare_farm), "the handshakes to be freed")

    users: list[Peer] = []
    try:
        for _ in range(3):  # one at a time: the handshake cap is 2
            users.append(Peer(address))
            if len(users) < 3:
                users[-1].admin(user_token)
        users[2].send(hello(user_token))
        error = users[2].expect("error")
        assert error == {
            "type": "error",
            "code": "unavailable",
            "message": "too many user sessions (2): try again later",
        }
        users[2].expect_closed()
        probe(bare_farm)  # the artists' sessions do not lock the admin out
        with Peer(address) as worker:
            worker.send(hello(farm_token, "worker"), register("w1"))
            worker.expect("welcome")
            worker.expect("registered")
            second = Peer(address)
            second.send(hello(farm_token, "worker"), register("w2"))
            error = second.expect("error")
            assert error["message"] == "too many worker sessions (1): try again later", error
            second.expect_closed()
            second.sock.close()
    finally:
        for peer in users:
            peer.sock.close()
    # a closed session frees its place
    wait_for(lambda: _opens(address, user_token), "a user session to open again")
    assert_serving(bare_farm)
    assert "Traceback" not in supervisor_log(bare_farm)


def _refused(address: str) -> dict[str, Any] | None:
    """The `error` a new connection gets before it says anything (None if it gets none
    quickly: it was let into the handshake)."""
    with Peer(address) as peer:
        try:
            return peer.receive(timeout=0.5)
        except TimeoutError:
            return None


def _answers(farm: Farm) -> bool:
    return farm.cli("jobs", timeout=30).returncode == 0


def _opens(address: str, user_token: str) -> bool:
    with Peer(address) as peer:
        peer.send(hello(user_token))
        message = peer.receive()
        return message is not None and message["type"] == "welcome"


# --------------------------------------------------------------------------- item 7


def test_a_second_worker_of_the_same_name_is_refused_and_exits(farm: Farm) -> None:
    first = farm.worker("x")
    second = farm.worker("x", label="x-again", wait=False)
    status = second.popen.wait(20)
    assert status != 0, second.stderr()
    last = second.stderr().strip().splitlines()[-1]
    match = re.fullmatch(
        r"farmd: error: the supervisor refused this worker: worker name 'x' is in use by "
        r"127\.0\.0\.1:(\d+) \(the default name is the host name: give each agent on a "
        r"host its own --name\)",
        last,
    )
    assert match, second.stderr()
    assert "Traceback" not in second.stderr()
    # the first keeps its registration (one session, never replaced) and runs a frame
    assert first.running()
    workers = farm.cli_json("workers")
    assert [w["name"] for w in workers] == ["x"]
    job_id = farm.submit(farm.frame("--print", "still x"))
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert farm.frames(job_id)[1]["worker"] == "x"
    assert first.stderr().count("farmd.agent registered ") == 1, first.stderr()
    assert farm.cli_json("workers")[0]["connected_at"] == workers[0]["connected_at"]
