"""TLS end to end: real `farmd serve` with `tls: required`, real workers and CLI commands,
and a TCP proxy between them that records every byte and must see no secret in clear.

Also: a plaintext peer reaching a TLS-only supervisor, a TLS peer reaching a plaintext
one, `farmd trust` pinning a key, and the metrics endpoint over HTTPS.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmd.client import Client
from farmd.tls import farm_certificates, pin_of_file
from tests.e2e_support import LOCALHOST, Farm, describe, wait_for

pytestmark = pytest.mark.e2e

PROXY_LIMIT = 64 * 2**20  # bytes the proxy keeps of each direction (the test's are small)


class RecordingProxy:
    """A TCP proxy on 127.0.0.1 to `target` that keeps what crosses it, both ways.

    One thread accepts; each connection gets two pump threads. `close` ends them all:
    the listening socket and every connection are closed, and each thread joined
    (bounded by a timeout)."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.listener = socket.create_server((LOCALHOST, 0))
        self.address = f"{LOCALHOST}:{self.listener.getsockname()[1]}"
        self.seen = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        accept = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:  # accepted as the proxy closed: not served
                    client.close()
                    upstream.close()
                    return
                self.connections += 1
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                pump.start()
                self._threads.append(pump)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            source.settimeout(None)
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._lock:
                    if len(self.seen) < PROXY_LIMIT:
                        self.seen += data
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def recorded(self) -> bytes:
        with self._lock:
            return bytes(self.seen)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


@contextlib.contextmanager
def recording_proxy(target: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()


def tls_farm(farm: Farm, mode: str = "required", *extra: str) -> Path:
    """Start `farmd serve` with `tls.mode: MODE`; the farm's CA file."""
    config = farm.root / "farm.yaml"
    config.write_text(f"supervisor:\n  tls:\n    mode: {mode}\n")
    farm.serve("--config", str(config), *extra, http=True)
    return farm.state / "tls" / "ca.pem"


def test_a_tls_farm_works_through_a_proxy_that_sees_no_token_and_no_job_in_clear(
    bare_farm: Farm,
) -> None:
    farm = bare_farm
    ca = tls_farm(farm)
    assert ca.is_file()
    farm.env["FARMD_CA"] = str(ca)  # every CLI command and worker trusts the farm's CA
    farm_token = farm.token_file.read_text().strip()
    marker = "confidential-shot-0042"
    with recording_proxy(farm.address) as proxy:
        direct = farm.address
        farm.address = proxy.address  # the CLI and the worker go through the proxy
        farm._client = Client(proxy.address, token_file=farm.token_file, ca=ca, timeout=20.0)
        try:
            farm.worker("render01", slots=2)
            out = farm.cli_ok("user", "add", "alice", "--role", "artist")
            alice_token = out.split("the farm keeps only its hash): ", 1)[1].split()[0]
            assert alice_token.startswith("alice~")
            job_id = farm.submit_cli(
                "--name", marker, "--", "python3", str(farm.frame_script), "--print", marker
            )
            farm.cli_ok("wait", str(job_id), "--timeout", "30")
            assert farm.job(job_id)["state"] == "complete"
            logs = farm.cli_ok("logs", f"{job_id}:1")
            assert marker in logs
            listing = farm.cli_ok("jobs")
            assert marker in listing
        finally:
            farm.address = direct
            farm.api.close()
            farm._client = None
        wire = proxy.recorded()
    assert proxy.connections >= 3  # the worker, the test's client, the CLI commands
    assert wire, "nothing crossed the proxy"
    for secret in (farm_token, alice_token, marker, "render01"):
        assert secret.encode() not in wire, f"{secret!r} crossed the proxy in clear"
    # what did cross is TLS: handshake records from each side
    assert b"\x16\x03" in wire


def test_a_plaintext_peer_gets_one_line_from_a_tls_only_supervisor(bare_farm: Farm) -> None:
    farm = bare_farm
    tls_farm(farm)
    result = farm.cli("jobs")
    assert result.returncode == 1, describe(result)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "farmd: error: the supervisor refused: this supervisor speaks TLS only: connect with "
        "TLS (`farmd trust HOST:PORT`, or --ca with the farm's CA file)"
    ]
    worker = farm.worker("plain01", wait=False)
    wait_for(lambda: "speaks TLS only" in worker.stderr(), "the worker to log the refusal")
    ca = farm.state / "tls" / "ca.pem"
    with Client(farm.address, token_file=farm.token_file, ca=ca) as client:
        assert "plain01" not in {w["name"] for w in client.workers()}


def test_a_tls_peer_gets_one_line_from_a_plaintext_supervisor(bare_farm: Farm) -> None:
    farm = bare_farm
    ca = tls_farm(farm, '"off"')
    assert not ca.exists()  # a supervisor with tls off makes no certificates
    other = farm.root / "other-state"
    other.mkdir()
    files = farm_certificates(other)  # another farm's CA, for the client to trust
    result = farm.cli("jobs", "--ca", str(files.ca))
    assert result.returncode == 1, describe(result)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"farmd: error: cannot speak TLS to the supervisor at {farm.address}: it answered "
        "in plaintext (is TLS off there, or is it an older farmd?)"
    )


def test_farmd_trust_pins_the_key_and_a_wrong_pin_is_refused(bare_farm: Farm) -> None:
    farm = bare_farm
    ca = tls_farm(farm)
    pin = pin_of_file(farm.state / "tls" / "cert.pem")
    assert farm.supervisor is not None
    assert f"pin={pin}" in farm.supervisor.stderr()  # `farmd serve` logs it at its start

    wrong = "sha256:" + "0" * 64
    refused = farm.run("trust", farm.address, "--expect", wrong)
    assert refused.returncode == 1, describe(refused)
    assert "is not the one expected" in refused.stderr
    unconfirmed = farm.run("trust", farm.address)  # stdin is not a terminal
    assert unconfirmed.returncode == 1
    assert "confirm with --yes" in unconfirmed.stderr

    trusted = farm.run("trust", farm.address, "--expect", pin)
    assert trusted.returncode == 0, describe(trusted)
    assert f"key fingerprint: {pin}" in trusted.stdout
    known = Path(farm.env["XDG_CONFIG_HOME"]) / "farmd" / "known_supervisors"
    assert f"{farm.address} {pin}" in known.read_text()
    assert oct(known.stat().st_mode & 0o777) == "0o600"

    # pinned: the CLI and a worker speak TLS without a CA file
    assert "0 jobs" in farm.cli_ok("jobs")
    # the test's own client (in this process, without the farm's XDG_CONFIG_HOME)
    farm._client = Client(farm.address, token_file=farm.token_file, pin=pin, timeout=20.0)
    farm.worker("pinned01")
    # a pin given on the command line wins, and a wrong one is one line naming both
    result = farm.cli("jobs", "--pin", wrong)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"farmd: error: the supervisor at {farm.address} presented a key ({pin}) that is "
        f"not the one pinned for it ({wrong}, the pin given): if its certificate was "
        f"replaced on purpose, run `farmd trust {farm.address}` again"
    ]
    # the CA file verifies the chain and the name (127.0.0.1 is in the certificate)
    assert "0 jobs" in farm.cli_ok("jobs", "--ca", str(ca))


def written(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def test_metrics_over_https_and_plain_http_refused(bare_farm: Farm) -> None:
    """`tls: required`: the HTTP addresses (`http`, and `metrics` as before it) speak
    HTTPS only; a plaintext request fails its handshake and gets no answer."""
    farm = bare_farm
    ca = tls_farm(farm, "required", "--metrics", f"{LOCALHOST}:0")
    context = ssl.create_default_context(cafile=str(ca))
    for name in ("metrics_address", "http_address"):
        address = wait_for(functools.partial(written, farm.state / name), name)
        with urllib.request.urlopen(f"https://{address}/metrics", context=context, timeout=10) as r:
            assert r.status == 200
            assert b"farmd_" in r.read()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://{address}/metrics", timeout=10)
