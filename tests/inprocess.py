"""Helpers for the in-process tests: a real `Supervisor` and real `Agent`s in the test's
own trio run, spoken to over the real wire codec.

`start_supervisor` runs a `Supervisor` (127.0.0.1 port 0, its state in the test's
`tmp_path`) in a nursery of its own under the test's nursery, so a test can stop it and
start another on the same state dir (a restart). `Farm.connect` opens an in-memory
stream (`trio.testing.memory_stream_pair`) to it through `Supervisor.serve_stream`, the
same door every TCP connection goes through; `Peer` speaks farmd's codec on it, as an
admin, and `FakeWorker` as a worker that runs nothing. `agent_of` makes a real `Agent`
whose sessions open in memory the same way (its `connect` seam); `Cuttable` loses one.

Streams in memory matter under `MockClock(autojump_threshold=0)`: the clock jumps to
the next deadline whenever every task is blocked, and a task blocked on a real socket
or a child process counts as blocked. Nothing here waits on the kernel, so timers
(heartbeat timeouts, retry delays, the orphan grace, the idle timeout) run in virtual
time and a test that waits minutes of them takes milliseconds. One thing still blocks
on the world: the supervisor commits in a worker thread, and while it does the clock
would jump to the next deadline (a heartbeat timeout, a test's own `fail_after`). So
under a MockClock a metronome task keeps the loop busy while a worker thread runs,
which holds the clock still, and otherwise sleeps `TICK` after `TICK`, so that the
clock jumps at most one tick past a commit's start before it is held. Tests that run
real child processes, or the blocking `farmd.client` in a thread, use the real clock.

Every wait is bounded by `trio.fail_after(WAIT)`, in virtual time under a MockClock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio
import trio.testing

from farmd.agent import Agent, AgentConfig
from farmd.codec import NEED_DATA, Codec
from farmd.config import Address, SupervisorConfig
from farmd.protocol import (
    PROTOCOL_VERSION,
    Error,
    FrameFinished,
    Heartbeat,
    Hello,
    KillFrame,
    Message,
    Refused,
    Register,
    Registered,
    Reply,
    Request,
    ResultAck,
    Role,
    RunFrame,
    Welcome,
)
from farmd.supervisor import Supervisor

LOCALHOST = "127.0.0.1"
WAIT = 60.0  # seconds any one wait may take (virtual seconds under a MockClock)
MAX_READS = 10_000  # a message arrives in far fewer reads than this
TICK = 0.01  # the longest jump a MockClock makes while the supervisor runs

M = TypeVar("M", bound=Message)


def supervisor_config(tmp_path: Path, **settings: Any) -> SupervisorConfig:
    """A supervisor on 127.0.0.1 port 0 with its state in `tmp_path/state`, serving no
    HTTP; admin sessions are not closed as idle unless a test says so."""
    defaults: dict[str, Any] = {
        "listen": Address(LOCALHOST, 0),
        "state_dir": tmp_path / "state",
        "idle_timeout": 3600.0,
        # no HTTP server: the API's tests call the app in process (tests/test_web_api.py)
        "http": None,
    }
    return SupervisorConfig(**{**defaults, **settings})


class Peer:
    """One end of a connection to the supervisor, speaking farmd's codec."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.codec = Codec()
        self._request_ids = itertools.count(1)

    async def send(self, *messages: Message) -> None:
        await self.stream.send_all(b"".join(self.codec.send(m) for m in messages))

    async def receive(self) -> Message | None:
        """The next message, or None once the connection has ended (closed by the
        supervisor, or by this peer: a test ending a worker's session)."""
        with trio.fail_after(WAIT):
            for _ in range(MAX_READS):
                message = self.codec.next_message()
                if message is not NEED_DATA:
                    assert isinstance(message, Message)
                    return message
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                if not data:
                    return None
                self.codec.receive_data(data)
        raise AssertionError(f"no whole message in {MAX_READS} reads")

    async def expect(self, kind: type[M]) -> M:
        """The next message but heartbeats and result acknowledgements (a fake worker
        keeps no results to forget), which must be a `kind`."""
        for _ in range(MAX_READS):
            message = await self.receive()
            if isinstance(message, kind) or not isinstance(message, Heartbeat | ResultAck):
                break
        assert isinstance(message, kind), f"expected {kind.TYPE!r}, got {message!r}"
        return message

    async def expect_closed(self) -> None:
        """The supervisor closes the connection; only heartbeats come before."""
        for _ in range(MAX_READS):
            message = await self.receive()
            if message is None:
                return
            assert isinstance(message, Heartbeat), f"expected the end, got {message!r}"
        raise AssertionError(f"{MAX_READS} heartbeats and no end")

    async def hello(self, token: str, role: Role = Role.ADMIN) -> Welcome:
        await self.send(Hello(version=PROTOCOL_VERSION, role=role.value, token=token))
        return await self.expect(Welcome)

    async def request(self, kind: type[Request], **fields: Any) -> Reply | Refused:
        """Send one request and return its answer (an admin's or a user's session)."""
        request_id = next(self._request_ids)
        await self.send(kind(request_id=request_id, **fields))
        for _ in range(MAX_READS):
            answer = await self.receive()
            assert answer is not None, f"the connection closed before the answer to {kind.TYPE!r}"
            if isinstance(answer, Reply | Refused) and answer.request_id == request_id:
                return answer
        raise AssertionError(f"no answer to {kind.TYPE!r}")

    async def ask(self, kind: type[Request], **fields: Any) -> Any:
        """The result of a request that must be answered, not refused."""
        answer = await self.request(kind, **fields)
        assert isinstance(answer, Reply), answer
        return answer.result

    async def aclose(self) -> None:
        await self.stream.aclose()


class FakeWorker(Peer):
    """A worker that speaks the protocol from the test: it runs nothing, and reports
    what the test tells it to. It answers no heartbeats unless `beat` runs."""

    name: str = ""

    async def register(self, token: str, name: str, **fields: Any) -> Registered:
        answer = await self.try_register(token, name, **fields)
        assert isinstance(answer, Registered), f"{name!r} was refused: {answer!r}"
        return answer

    async def try_register(self, token: str, name: str, **fields: Any) -> Registered | Error:
        """Hello and register; the supervisor's answer to the registration."""
        self.name = name
        await self.send(
            Hello(version=PROTOCOL_VERSION, role=Role.WORKER.value, token=token, name=name),
            Register(
                name=name,
                cluster=fields.pop("cluster", "/"),
                slots=fields.pop("slots", 1),
                **fields,
            ),
        )
        await self.expect(Welcome)
        answer = await self.receive()
        assert isinstance(answer, Registered | Error), answer
        return answer

    async def finish(self, run: RunFrame, exit_code: int = 0) -> None:
        await self.send(
            FrameFinished(
                job_id=run.job_id, frame=run.frame, attempt=run.attempt, exit_code=exit_code
            )
        )

    async def beat(self, interval: float, *, task_status: trio.TaskStatus[None]) -> None:
        """Send a heartbeat every `interval` seconds until cancelled, the connection
        ends, or an hour of them."""
        task_status.started()
        for _ in range(int(3600 / interval)):
            await trio.sleep(interval)
            try:
                await self.send(Heartbeat())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


class Runs:
    """Every `run_frame` the fake workers were sent, by (job, frame), and every result
    acknowledged, read as they come."""

    def __init__(self) -> None:
        self.sent: dict[tuple[int, int], tuple[FakeWorker, RunFrame]] = {}
        self.acked: set[tuple[int, int, int]] = set()
        self.killed: list[tuple[str, KillFrame]] = []  # (worker, kill_frame), in order
        self._arrived = trio.Event()

    async def read(self, worker: FakeWorker, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        for _ in range(100_000):  # bounded; ends when the connection does
            message = await worker.receive()
            if message is None:
                return
            if isinstance(message, RunFrame):
                self.sent[(message.job_id, message.frame)] = (worker, message)
            elif isinstance(message, KillFrame):
                self.killed.append((worker.name, message))
            elif isinstance(message, ResultAck):
                self.acked.add((message.job_id, message.frame, message.attempt))
            self._arrived.set()
            self._arrived = trio.Event()

    async def until(self, done: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT):
            while not done():  # bounded by the deadline: each turn is a message
                await self._arrived.wait()

    async def sent_to(self, job_id: int, frame: int) -> tuple[FakeWorker, RunFrame]:
        """The worker frame `frame` of `job_id` went to, and its `run_frame`."""
        await self.until(lambda: (job_id, frame) in self.sent)
        return self.sent[(job_id, frame)]

    async def finish(self, job_id: int, frame: int, exit_code: int = 0) -> None:
        """Report frame `frame` of `job_id` ended, and wait until the supervisor has
        acknowledged it (what the result started has been sent by then)."""
        worker, run = await self.sent_to(job_id, frame)
        del self.sent[(job_id, frame)]
        await worker.finish(run, exit_code)
        await self.until(lambda: (run.job_id, run.frame, run.attempt) in self.acked)


@attrs.define
class Farm:
    """A supervisor running in the test's trio run, and what the test needs to reach it."""

    supervisor: Supervisor
    address: Address
    nursery: trio.Nursery  # the supervisor's and its in-memory connections'
    stopped: trio.Event

    @property
    def token(self) -> str:
        return self.supervisor.token

    @property
    def user_token(self) -> str:
        return self.supervisor.user_token

    def open_stream(self, peer: str = "memory") -> trio.abc.Stream:
        """An in-memory stream to the supervisor, served as a TCP connection would be."""
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.supervisor.serve_stream, theirs, peer)
        return ours

    def connect(self, peer: str = "memory") -> Peer:
        return Peer(self.open_stream(peer))

    async def admin(self) -> Peer:
        """A session with the farm token, past its hello."""
        peer = self.connect("admin")
        await peer.hello(self.token)
        return peer

    async def worker(self, name: str, **fields: Any) -> FakeWorker:
        """A registered fake worker (`fields`: its registration, `slots=2`...)."""
        worker = FakeWorker(self.open_stream(name))
        await worker.register(self.token, name, **fields)
        return worker

    async def stop(self) -> None:
        """Stop the supervisor as a crash would (its connections end with it)."""
        self.nursery.cancel_scope.cancel()
        with trio.fail_after(WAIT):
            await self.stopped.wait()


async def start_supervisor(
    nursery: trio.Nursery,
    config: SupervisorConfig,
    *,
    clock: Callable[[], float] = time.time,
) -> Farm:
    """A `Supervisor` started with `nursery.start` in a nursery of its own; `clock` is
    the one it stamps events with (`trio.current_time` under a MockClock)."""
    supervisor = Supervisor(config, clock=clock)

    async def run(*, task_status: trio.TaskStatus[Farm]) -> None:
        stopped = trio.Event()
        try:
            async with trio.open_nursery() as inner:
                if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
                    inner.start_soon(_metronome)
                address = await inner.start(supervisor.run)
                task_status.started(Farm(supervisor, address, inner, stopped))
        finally:
            stopped.set()

    with trio.fail_after(WAIT):
        farm: Farm = await nursery.start(run)
    return farm


def agent_of(
    farm: Farm,
    tmp_path: Path,
    name: str,
    connect: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    **settings: Any,
) -> Agent:
    """An agent named `name` that opens its sessions in memory to `farm`'s supervisor
    (or with `connect`)."""
    config = AgentConfig(
        supervisor=Address(LOCALHOST, 1),  # what frames see as FARMD_SUPERVISOR; unused
        token=farm.token,
        name=name,
        log_dir=tmp_path / "logs" / name,
        **settings,
    )

    async def in_memory() -> trio.abc.Stream:
        return farm.open_stream(name)

    return Agent(config, connect=connect or in_memory)


async def start_agent(nursery: trio.Nursery, agent: Agent) -> Agent:
    await nursery.start(agent.run)
    with trio.fail_after(WAIT):
        await agent.registered.wait()
    return agent


async def _metronome() -> None:
    """Hold the MockClock still while a worker thread runs, and let it jump at most
    `TICK` at a time otherwise (see the module docs); bounded, for a virtual day."""
    threads = trio.to_thread.current_default_thread_limiter()
    for _ in range(int(24 * 3600 / TICK) * 100):
        if threads.borrowed_tokens:
            # a task that is never blocked: the clock cannot jump until the thread is done
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep(TICK)


async def until(predicate: Callable[[], Any], what: str) -> Any:
    """Wait, checkpoint by checkpoint, until `predicate()` is truthy; for state that no
    message announces (a test holds no event for it). Bounded in time and in polls."""
    with trio.fail_after(WAIT):
        for _ in range(100_000):
            value = predicate()
            if value:
                return value
            await trio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


class Cuttable(trio.abc.Stream):
    """A stream that can be lost on one side only: after `cut()` its holder finds it
    broken, while the other end hears nothing (no EOF, no reset), as when a network
    fails between them."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._cut = False
        self._receiving: trio.CancelScope | None = None

    def cut(self) -> None:
        self._cut = True
        if self._receiving is not None:
            self._receiving.cancel()  # the holder's pending read fails now

    def _check(self) -> None:
        if self._cut:
            raise trio.BrokenResourceError("the connection was cut")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check()
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        self._check()
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._check()
        data: bytes | bytearray = b""
        with trio.CancelScope() as self._receiving:
            data = await self._stream.receive_some(max_bytes)
        self._receiving = None
        self._check()
        return data

    async def aclose(self) -> None:
        if not self._cut:  # a cut connection's other end is left as it was
            await self._stream.aclose()
        await trio.lowlevel.checkpoint()
