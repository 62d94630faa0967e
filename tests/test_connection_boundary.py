"""The supervisor's per-connection boundary, in-process: a bug met while serving one
connection costs that connection and one log line, never the supervisor.

A real `Supervisor` (memory store) listening on 127.0.0.1 inside the test's trio run,
peers on trio sockets. The bug is planted by making the request dispatcher raise for
one request type; the other connections must not notice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from farmd.codec import NEED_DATA, Codec
from farmd.config import Address, SupervisorConfig
from farmd.protocol import (
    PROTOCOL_VERSION,
    Error,
    FrameFinished,
    Heartbeat,
    Hello,
    ListClusters,
    ListJobs,
    ListWorkers,
    Message,
    Register,
    Registered,
    Reply,
    ResultAck,
    RunFrame,
    Submit,
    Welcome,
)
from farmd.supervisor import Supervisor

M = TypeVar("M")


class _Peer:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.codec = Codec()

    async def send(self, message: Message) -> None:
        await self.stream.send_all(self.codec.send(message))

    async def receive(self) -> Message | None:
        """The next message, or None once the supervisor has closed the connection."""
        with trio.fail_after(10):
            for _ in range(1000):
                message = self.codec.next_message()
                if message is not NEED_DATA:
                    assert isinstance(message, Message)
                    return message
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self.codec.receive_data(data)
        raise AssertionError("no whole message in 1000 reads")


async def _admin(address: Address, token: str) -> _Peer:
    peer = _Peer(await trio.open_tcp_stream(address.host, address.port))
    await peer.send(Hello(version=PROTOCOL_VERSION, role="admin", token=token))
    assert isinstance(await peer.receive(), Welcome)
    return peer


async def test_a_bug_while_serving_one_connection_ends_only_that_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = SupervisorConfig(
        listen=Address("127.0.0.1", 0), state_dir=tmp_path / "state", store="memory"
    )
    supervisor = Supervisor(config)
    answer = supervisor._request

    def planted(request: Any, by: Any) -> Any:
        if isinstance(request, ListClusters):
            msg = "planted bug"
            raise RuntimeError(msg)
        return answer(request, by)

    monkeypatch.setattr(supervisor, "_request", planted)
    caplog.set_level(logging.INFO, logger="farmd.supervisor")
    async with trio.open_nursery() as nursery:
        address = await nursery.start(supervisor.run)
        bystander = await _admin(address, supervisor.token)
        async with bystander.stream:  # closed even when an assertion fails
            for attempt in range(3):
                victim = await _admin(address, supervisor.token)
                async with victim.stream:  # closed even when an assertion fails
                    port = victim.stream.socket.getsockname()[1]
                    await victim.send(ListClusters(request_id=1))
                    assert await victim.receive() is None  # closed, without an answer
                failed = [r for r in caplog.records if r.getMessage() == "connection failed"]
                assert len(failed) == attempt + 1
                fields = failed[-1].farmd_fields  # type: ignore[attr-defined]
                assert fields == {
                    "peer": f"127.0.0.1:{port}",
                    "error": "RuntimeError: planted bug",
                }
                # the other session, opened before, is served as if nothing happened
                await bystander.send(ListJobs(request_id=attempt + 1))
                reply = await bystander.receive()
                assert isinstance(reply, Reply), reply
                assert (reply.request_id, reply.result["jobs"]) == (attempt + 1, [])
        nursery.cancel_scope.cancel()


async def test_a_worker_on_a_socket_is_served_by_the_poller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker session on a socket is read by the supervisor's poller, not by its own
    task: a frame split across writes and several frames in one write arrive whole and
    in order, the supervisor's heartbeats keep coming, and a protocol error ends only
    that session, with its last word, and reports the worker lost."""
    config = SupervisorConfig(
        listen=Address("127.0.0.1", 0),
        state_dir=tmp_path / "state",
        store="memory",
        heartbeat_interval=0.1,
        heartbeat_timeout=5.0,
    )
    supervisor = Supervisor(config)
    caplog.set_level(logging.INFO, logger="farmd.supervisor")
    async with trio.open_nursery() as nursery:
        address = await nursery.start(supervisor.run)
        admin = await _admin(address, supervisor.token)
        worker = _Peer(await trio.open_tcp_stream(address.host, address.port))
        async with admin.stream, worker.stream:  # closed even when an assertion fails
            hello = Hello(version=PROTOCOL_VERSION, role="worker", token=supervisor.token)
            await worker.stream.send_all(
                worker.codec.send(hello)
                + worker.codec.send(Register(name="w1", cluster="/", slots=1))
            )
            assert isinstance(await worker.receive(), Welcome)
            assert isinstance(await worker.receive(), Registered)
            await admin.send(Submit(request_id=1, argv=("true",), frames="1-2"))
            assert isinstance(await admin.receive(), Reply)
            run = await _next(worker, RunFrame)
            assert supervisor._poller.running
            # the result in two writes, the second with a heartbeat behind it
            wire = worker.codec.send(
                FrameFinished(job_id=run.job_id, frame=run.frame, attempt=1, exit_code=0)
            )
            await worker.stream.send_all(wire[:7])
            await trio.testing.wait_all_tasks_blocked()  # the poller reads the part alone
            await worker.stream.send_all(wire[7:] + worker.codec.send(Heartbeat()))
            # the next frame's run_frame, then the result's acknowledgement (once durable)
            second = await _next(worker, RunFrame)
            assert second.frame == run.frame + 1
            assert await _next(worker, ResultAck) == ResultAck(
                job_id=run.job_id, frame=run.frame, attempt=1
            )
            assert isinstance(await _next(worker, Heartbeat), Heartbeat)  # the sweep's
            # a worker may not send requests: the error ends its session alone
            await worker.send(ListJobs(request_id=9))
            error = await _next(worker, Error)
            assert error.code == "bad_message"
            assert await _next(worker, type(None)) is None
            await admin.send(ListWorkers(request_id=2))
            reply = await admin.receive()
            assert isinstance(reply, Reply), reply
            assert reply.result == []
        nursery.cancel_scope.cancel()


async def _next(peer: _Peer, kind: type[M]) -> M:
    """The next message of `kind` (None: the end), skipping heartbeats."""
    for _ in range(1000):
        message = await peer.receive()
        if isinstance(message, kind) or kind is type(None):
            return message  # type: ignore[return-value]
        assert isinstance(message, Heartbeat | ResultAck), message
    raise AssertionError(f"no {kind.__name__} in 1000 messages")
