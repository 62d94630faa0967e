"""End-to-end: a worker that stops talking, without closing its connection, is lost.

A real `farmd serve` with a short heartbeat (from a YAML config), a protocol-level worker
on a raw socket that registers, accepts a frame and then goes silent, and a real `farmd
worker` that must end up running that frame.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmd.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Codec,
    Hello,
    Message,
    Register,
    Registered,
    RunFrame,
    Welcome,
)
from tests.e2e_support import LOCALHOST, Farm, forget_farmd_env, open_farm, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def farm(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Farm]:
    forget_farmd_env(monkeypatch)
    config = tmp_path / "farm.yaml"
    config.write_text("supervisor:\n  heartbeat_interval: 0.2\n  heartbeat_timeout: 1\n")
    with open_farm(tmp_path, request.node) as started:
        started.serve("--config", str(config))
        yield started


def receive(sock: socket.socket, codec: Codec, timeout: float = 10.0) -> Message:
    sock.settimeout(timeout)
    for _ in range(1000):  # bounded: a message arrives in a few reads
        message = codec.next_message()
        if message is not NEED_DATA:
            assert isinstance(message, Message)
            return message
        data = sock.recv(65536)
        assert data, "the supervisor closed the connection"
        codec.receive_data(data)
    raise AssertionError("no message in 1000 reads")


def test_a_silent_worker_is_lost_and_its_frame_runs_elsewhere(farm: Farm) -> None:
    job_id = farm.submit(["true"])
    host, port = farm.address.rsplit(":", 1)
    assert host == LOCALHOST
    token = farm.token_file.read_text().strip()
    codec = Codec()
    with socket.create_connection((host, int(port)), timeout=10) as silent:
        silent.sendall(
            codec.send(Hello(version=PROTOCOL_VERSION, role="worker", token=token, name="mute"))
            + codec.send(Register(name="mute", cluster="/", slots=1))
        )
        assert isinstance(receive(silent, codec), Welcome)
        assert isinstance(receive(silent, codec), Registered)
        run = receive(silent, codec)
        assert isinstance(run, RunFrame)
        assert (run.job_id, run.frame, run.attempt) == (job_id, 1, 1)
        assert farm.frames(job_id)[1]["worker"] == "mute"
        # From here on "mute" sends nothing, not even heartbeats, but keeps the socket open.
        wait_for(
            lambda: "mute" not in farm.worker_names(),
            timeout=15,
            what="the supervisor to drop the silent worker",
        )
        assert farm.frames(job_id)[1]["state"] == "pending"
        farm.worker("w1")
        assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
        frame = farm.frames(job_id)[1]
        assert (frame["worker"], frame["attempts"], frame["state"]) == ("w1", 2, "complete")
    assert farm.supervisor is not None
    assert "heartbeat timeout" in farm.supervisor.stderr()
