"""The network edge of the supervisor: listening sockets, and one peer's connection.

A `Connection` is a peer's stream, its sans-IO `Codec` and its queue of outgoing frames.
It is here, apart from the `Supervisor`, because it knows nothing of the farm: it moves
frames, bounds what waits to be sent (backpressure, then a drop) and keeps the times
the session's deadlines are measured from. The supervisor decides what is said.

- One sender task per connection drains its queue, so a slow peer never blocks the
  scheduler; it is the only writer, so a closing connection's last word (an `error`)
  is queued like any message and goes out after everything queued before it.
- `receive` reads the next message; `expect` reads one the handshake requires, in time.
- A session ends by an exception: `PeerGone` (closed, reset or timed out) or `Goodbye`
  (the supervisor ends it, with its last word and a log line).
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
from typing import TypeVar

import attrs
import trio

from farmd.codec import NEED_DATA, Codec
from farmd.config import Address, SupervisorConfig
from farmd.core import Principal
from farmd.errors import InternalError, ProtocolError, UserError
from farmd.logs import log_event
from farmd.protocol import PROTOCOL_VERSION, Error, Message

# the supervisor's logger: a connection's lines are the supervisor's, as before the split
log = logging.getLogger("farmd.supervisor")
M = TypeVar("M", bound=Message)

HANDSHAKE_TIMEOUT = 10.0
RECEIVE_BYTES = 65536
SEND_BATCH_BYTES = 256 * 1024  # queued frames go out in writes of about this size
MAX_SLOW_REQUESTS = 16  # `wait` and `get_log` requests one session may have in flight


class PeerGone(Exception):
    """The connection ended (closed, reset, or timed out); the peer is gone."""


class Goodbye(Exception):
    """The supervisor ends a connection for a reason other than the peer's protocol
    error (an idle session, a full connection cap): its last word, and a log line."""

    def __init__(self, level: str, event: str, error: Error) -> None:
        super().__init__(error.message)
        self.level = level
        self.event = event
        self.error = error


@attrs.define
class Connection:
    """One peer: its stream, its codec, and its queue of outgoing frames.

    Only the sender task writes to the stream, in the order messages were queued; the
    last word of a closing connection (an `error`) is queued like any other message.
    The queue is bounded two ways. `unsent` counts the bytes queued and not yet taken
    by the kernel (the batch being written included): the session does not read the
    peer's next message while it is above `pause_bytes`, or while the peer has
    MAX_SLOW_REQUESTS requests in flight (`wait_for_room`), so a peer that does not
    read its answers stops being served at a bounded cost. What the supervisor sends
    unasked (a worker's frames, heartbeats, late answers) cannot wait: a message to be
    queued while more than `limit_bytes` already wait drops the peer instead.
    """

    stream: trio.abc.Stream
    codec: Codec
    peer: str  # host:port, for logs and for the worker-name refusal
    pause_bytes: int
    limit_bytes: int
    last_heard: float = 0.0
    fd: int = -1  # the socket's file descriptor, or -1: writes go through the sender
    principal: Principal | None = None  # who its token stands for, once it is known
    version: int = PROTOCOL_VERSION  # the protocol version its hello named
    unsent: int = 0
    slow: int = 0  # wait and get_log requests being answered
    quiet_since: float = 0.0  # when the last of them was answered
    closing: bool = False  # nothing more is queued; the sender ends once it is all sent
    dropped: bool = False
    # the connection's whole lifetime runs in this scope: dropping the peer cancels it
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    idle: trio.CancelScope | None = None  # the wait for an admin's next request
    flushed: trio.Event = attrs.field(factory=trio.Event)  # the sender has ended
    _queue: collections.deque[bytes] = attrs.field(factory=collections.deque, init=False)
    _queued: trio.Event = attrs.field(factory=trio.Event, init=False)
    _room: trio.Event = attrs.field(factory=trio.Event, init=False)

    @classmethod
    def open(cls, stream: trio.abc.Stream, peer: str, config: SupervisorConfig) -> Connection:
        # a socket's frames may be written straight to it (`send_frame`); an in-memory
        # stream's (tests) always go through the sender
        fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        return cls(
            stream,
            Codec(config.max_frame_bytes),
            peer,
            config.outbox_pause_bytes,
            config.max_outbox_bytes,
            trio.current_time(),
            fd=fd,
        )

    @property
    def who(self) -> Principal:
        """The session's principal: known once its `hello` is accepted."""
        if self.principal is None:
            msg = f"a request from {self.peer} before its hello was accepted"
            raise InternalError(msg)
        return self.principal

    def send(self, message: Message) -> None:
        """Queue a message; raises ProtocolError (and queues nothing) if it is too large.
        Once the connection is closing, nothing more is queued: its peer is reported lost
        (a worker) or has gone."""
        self.send_frame(self.codec.send(message))

    def send_frame(self, data: bytes) -> None:
        """Queue an encoded frame (one encoded once for many peers: the heartbeat).

        When nothing waits to be sent and the stream is a socket, the frame goes straight
        to the kernel: most frames fit in the socket's buffer at once, and a write from
        here costs one system call where the sender task costs two task switches (the
        wake-up and trio's checkpoint after its write). Only what the kernel did not take
        is queued for the sender; it is the only writer while anything is queued, so the
        order holds."""
        if self.closing:
            return
        if self.unsent > self.limit_bytes:
            self.drop(f"more than {self.limit_bytes} bytes wait to be sent to it")
            return
        if not self.unsent and self.fd >= 0:
            try:
                # os.write, not trio's send: synchronous, and the fd is non-blocking
                sent = os.write(self.fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:  # reset or closed: as the sender's failed write
                self.closing = True
                self._queued.set()
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._queue.append(data)
        self.unsent += len(data)
        self._queued.set()

    def closed(self) -> None:
        """The stream is being closed: nothing more is written to its file descriptor,
        which the kernel may give to the next connection (a result's acknowledgement
        may still be sent once its commit is durable)."""
        self.closing = True
        self.fd = -1

    def close(self) -> None:
        """Queue nothing more: the sender sends what is queued, then ends."""
        self.closing = True
        self._queued.set()

    def abort(self) -> None:
        """End the connection now, sending nothing more."""
        self.closing = True
        self._queue.clear()
        self.cancel_scope.cancel()

    def drop(self, reason: str) -> None:
        """End the connection of a peer that does not take what is sent to it."""
        if not self.dropped:
            self.dropped = True
            log_event(log, "warning", "peer dropped", peer=self.peer, reason=reason)
        self.abort()

    def made_room(self) -> None:
        self._room.set()
        self._room = trio.Event()

    async def wait_for_room(self, stall: float) -> None:
        """Backpressure: return once the peer's next message may be read. A peer that
        takes nothing of what waits for it for `stall` seconds is dropped."""
        while not self.closing and (
            self.unsent > self.pause_bytes or self.slow >= MAX_SLOW_REQUESTS
        ):
            room = self._room
            with trio.move_on_after(stall) as waited:
                await room.wait()
            if waited.cancelled_caught and self.unsent > self.pause_bytes:
                self.drop(f"it took nothing of the {self.unsent} bytes waiting for {stall:g} s")
                await trio.lowlevel.checkpoint()  # cancelled by the drop: ends here

    def idle_deadline(self, timeout: float) -> float:
        """When the session is idle: `timeout` after the last request or the last answer
        to a slow one; never while one is in flight."""
        return math.inf if self.slow else max(self.last_heard, self.quiet_since) + timeout

    async def sender(self) -> None:
        while True:
            if not self._queue:
                if self.closing:
                    self.flushed.set()
                    return
                self._queued = trio.Event()
                await self._queued.wait()
                continue
            batch = [self._queue.popleft()]  # what is queued goes in one write, up to a size
            size = len(batch[0])
            while self._queue and size < SEND_BATCH_BYTES:
                batch.append(self._queue.popleft())
                size += len(batch[-1])
            try:
                await self.stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closing = True
                self._queue.clear()
                self.unsent = 0
                self.flushed.set()
                self.made_room()
                return
            self.unsent -= size
            self.made_room()

    async def receive(self) -> Message:
        while True:
            message = self.codec.next_message()
            if message is not NEED_DATA:
                assert isinstance(message, Message)
                self.last_heard = trio.current_time()
                return message
            data: bytes | bytearray
            if self.fd >= 0:
                data = await self._read()
            else:
                try:
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise PeerGone from None
            if not data:
                raise PeerGone
            self.codec.receive_data(data)

    async def _read(self) -> bytes:
        """The socket's next bytes, waited for with `wait_readable` itself.

        Much the same as the stream's `receive_some`, for a fraction of the objects: a
        connection waits for its peer's next message most of its life, and each wait is
        a chain of coroutines that the collector scans. trio's stream waits in a chain
        of eight; this one in five. Like `receive_some`, it is a checkpoint: it yields
        once per read, so a peer that sends without pause cannot starve the others."""
        while True:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise PeerGone from None
            try:
                return os.read(self.fd, RECEIVE_BYTES)  # the fd is non-blocking
            except BlockingIOError:
                continue  # woken, and nothing after all
            except OSError:
                raise PeerGone from None


async def expect(conn: Connection, kind: type[M], when: str) -> M:
    """The next message, which the handshake requires to be a `kind`, in time."""
    with trio.move_on_after(HANDSHAKE_TIMEOUT) as scope:
        message = await conn.receive()
    if scope.cancelled_caught:
        msg = f"no {kind.TYPE!r} within the handshake time ({HANDSHAKE_TIMEOUT:g} s)"
        raise ProtocolError(msg, code="timeout")
    if not isinstance(message, kind):
        msg = f"expected {kind.TYPE!r} {when}, got {message.TYPE!r}"
        raise ProtocolError(msg, code="bad_message")
    return message


def last_word(conn: Connection, error: Error) -> None:
    """Queue a closing connection's `error`, shortened if it would not fit in a frame."""
    try:
        conn.send(error)
    except ProtocolError:
        conn.send(attrs.evolve(error, message=error.message[:1000] + "..."))


def peer_of(stream: trio.SocketStream) -> str:
    """A TCP peer's host:port, for logs ("?" once it is gone)."""
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


async def open_listeners(where: Address) -> list[trio.SocketListener]:
    """Listening sockets on `where`; a port that cannot be had is one line, not a
    traceback (`farmd serve`, `farmd up` and `--metrics` all open theirs here)."""
    try:
        return await trio.open_tcp_listeners(where.port, host=where.host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "address in use (is another farmd running?)"
        else:
            why = exc.strerror or str(exc)
        msg = f"cannot listen on {where}: {why}"
        raise UserError(msg) from None
