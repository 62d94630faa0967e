"""The network edge of the supervisor: listening sockets, and one peer's connection.

A `Connection` is a peer's stream, its sans-IO `Codec` and its queue of outgoing frames.
It is here, apart from the `Supervisor`, because it knows nothing of the farm: it moves
frames, bounds what waits to be sent (backpressure, then a drop) and keeps the times
the session's deadlines are measured from. The supervisor decides what is said.

- A frame goes straight to the socket when nothing waits to be sent; what the kernel
  does not take is queued, and a sender task drains the queue, so a slow peer never
  blocks the scheduler. While anything is queued the sender is the only writer, so a
  closing connection's last word (an `error`) goes out after everything before it.
- `receive` reads the next message; `expect` reads one the handshake requires, in time;
  `serve` hands a worker's messages to the supervisor, read by the `Poller` (one task
  for every worker's socket) while the session waits.
- Why it is built so (issue 13): at 10,000 workers the supervisor mostly moves
  heartbeats, 2,000 a second each way. A task switch per message, and a fresh chain of
  coroutines per wait that the collector scans, cost most of a core while the farm
  idled; a system call per frame and one wake-up per batch of readable sockets do not.
- A session ends by an exception: `PeerGone` (closed, reset or timed out) or `Goodbye`
  (the supervisor ends it, with its last word and a log line).
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
import select
import socket
from collections.abc import Callable
from typing import TypeVar

import attrs
import trio

from farmd.codec import NEED_DATA, Codec
from farmd.config import Address, SupervisorConfig
from farmd.core import Principal
from farmd.errors import InternalError, ProtocolError, UserError
from farmd.logs import log_event
from farmd.protocol import PROTOCOL_VERSION, Error, Heartbeat, Message, Standby
from farmd.tls import TlsClosed, TlsSession, is_loopback

# the supervisor's logger: a connection's lines are the supervisor's, as before the split
log = logging.getLogger("farmd.supervisor")
M = TypeVar("M", bound=Message)

HANDSHAKE_TIMEOUT = 10.0
RECEIVE_BYTES = 65536
SEND_BATCH_BYTES = 256 * 1024  # queued frames go out in writes of about this size
MAX_SLOW_REQUESTS = 16  # `wait` and `get_log` requests one session may have in flight
POLL_BATCH = 256  # sockets the poller reads between two turns of the loop
# seconds the poller lets heartbeats gather after a batch of nothing else (a result that
# comes meanwhile waits as long)
POLL_PAUSE = 0.005
IDLE_AFTER = 1.0  # seconds of nothing but heartbeats before the poller pauses at all


class PeerGone(Exception):
    """The connection ended (closed, reset, or timed out); the peer is gone."""


class Goodbye(Exception):
    """The supervisor ends a connection for a reason other than the peer's protocol
    error (an idle session, a full connection cap): its last word, and a log line."""

    def __init__(self, level: str, event: str, error: Error | Standby) -> None:
        super().__init__(error.message)
        self.level = level
        self.event = event
        self.error = error


@attrs.define
class Connection:
    """One peer: its stream, its codec, and its queue of outgoing frames.

    A frame goes straight to the socket when nothing waits to be sent (`send_frame`);
    what the kernel does not take is queued, and a sender task, started then and ended
    once the queue is empty, writes it in order: while anything is queued it is the
    only writer, and the last word of a closing connection (an `error`) is queued like
    any other message. The queue is bounded two ways. `unsent` counts the bytes queued
    and not yet taken by the kernel (the batch being written included): the session
    does not read the peer's next message while it is above `pause_bytes`, or while
    the peer has MAX_SLOW_REQUESTS requests in flight (`wait_for_room`), so a peer that
    does not read its answers stops being served at a bounded cost. What the supervisor
    sends unasked (a worker's frames, heartbeats, late answers) cannot wait: a message
    to be queued while more than `limit_bytes` already wait drops the peer instead.

    A connection at rest holds no task of its own but its session's, and no event: a
    farm of 10,000 workers holds 10,000 of them (issue 13: about 2 KB each).
    """

    stream: trio.abc.Stream
    codec: Codec
    peer: str  # host:port, for logs and for the worker-name refusal
    pause_bytes: int
    limit_bytes: int
    last_heard: float = 0.0
    last_sent: float = 0.0  # when a frame was last written or queued (not dropped)
    fd: int = -1  # the socket's file descriptor, or -1: writes go through the sender
    principal: Principal | None = None  # who its token stands for, once it is known
    tls: TlsSession | None = None  # its TLS session, once the handshake is done
    token_digest: str | None = None  # a personal token's digest at the hello
    version: int = PROTOCOL_VERSION  # the protocol version its hello named
    unsent: int = 0
    slow: int = 0  # wait and get_log requests being answered
    quiet_since: float = 0.0  # when the last of them was answered
    closing: bool = False  # nothing more is queued; the sender ends once it is all sent
    dropped: bool = False
    # the connection's whole lifetime runs in this scope: dropping the peer cancels it
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    idle: trio.CancelScope | None = None  # the wait for an admin's next request
    # where the sender runs when there is something to queue: the session's nursery
    nursery: trio.Nursery | None = None
    _queue: collections.deque[bytes] | None = attrs.field(default=None, init=False)
    _sending: bool = attrs.field(default=False, init=False)  # the sender task runs
    _room: trio.Event | None = attrs.field(default=None, init=False)  # set by made_room
    _flushed: trio.Event | None = attrs.field(default=None, init=False)  # the sender ended
    # while a `Poller` reads for the session (`serve`): what takes each message, and
    # the exception that ends it
    _handle: Callable[[Message], None] | None = attrs.field(default=None, init=False)
    # the session's task, parked (no event: a farm holds one per worker) while the
    # poller reads for it
    _parked: trio.lowlevel.Task | None = attrs.field(default=None, init=False)
    _failure: BaseException | None = attrs.field(default=None, init=False)

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
        here costs one system call where a sender task costs two task switches (the
        wake-up and trio's checkpoint after its write). Only what the kernel did not take
        is queued for the sender; it is the only writer while anything is queued, so the
        order holds."""
        if self.closing:
            return
        if self.unsent > self.limit_bytes:
            self.drop(f"more than {self.limit_bytes} bytes wait to be sent to it")
            return
        self.last_sent = trio.current_time()
        if self.tls is not None:  # encrypted in the order sent, so queued records keep it
            data = self.tls.encrypt(data)
        self._send_bytes(data)

    def _send_bytes(self, data: bytes) -> None:
        """Write bytes as they go on the wire (ciphertext, with TLS): straight to the
        socket while nothing is queued, else queued for the sender."""
        if self.closing:
            return
        if not self.unsent and self.fd >= 0:
            try:
                # os.write, not trio's send: synchronous, and the fd is non-blocking
                sent = os.write(self.fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:  # reset or closed: as the sender's failed write
                self.closing = True
                return
            if sent == len(data):
                return
            data = data[sent:]
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.append(data)
        self.unsent += len(data)
        if not self._sending:
            if self.nursery is None:
                msg = f"a frame queued for {self.peer} before its session began"
                raise InternalError(msg)
            self._sending = True
            self.nursery.start_soon(self._send_queued)

    def closed(self) -> None:
        """The stream is being closed: nothing more is written to its file descriptor,
        which the kernel may give to the next connection (a result's acknowledgement
        may still be sent once its commit is durable)."""
        self.closing = True
        self.fd = -1

    def close(self) -> None:
        """Queue nothing more: the sender sends what is queued, then ends."""
        self.closing = True

    async def flushed(self) -> None:
        """Once everything queued is sent: after `close`."""
        if self._sending:
            self._flushed = flushed = trio.Event()
            await flushed.wait()

    def abort(self) -> None:
        """End the connection now, sending nothing more."""
        self.closing = True
        if self._queue is not None:
            self._queue.clear()
        self.cancel_scope.cancel()

    def drop(self, reason: str) -> None:
        """End the connection of a peer that does not take what is sent to it."""
        if not self.dropped:
            self.dropped = True
            log_event(log, "warning", "peer dropped", peer=self.peer, reason=reason)
        self.abort()

    def made_room(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def paused(self) -> bool:
        """Whether the peer's next message waits (`wait_for_room`)."""
        return not self.closing and (
            self.unsent > self.pause_bytes or self.slow >= MAX_SLOW_REQUESTS
        )

    async def wait_for_room(self, stall: float) -> None:
        """Backpressure: return once the peer's next message may be read. A peer that
        takes nothing of what waits for it for `stall` seconds is dropped."""
        while self.paused():
            if self._room is None:
                self._room = trio.Event()
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

    async def _send_queued(self) -> None:
        """The sender: writes what is queued, in order, then ends."""
        queue = self._queue
        assert queue is not None
        try:
            while queue:
                batch = [queue.popleft()]  # what is queued goes in one write, up to a size
                size = len(batch[0])
                while queue and size < SEND_BATCH_BYTES:
                    batch.append(queue.popleft())
                    size += len(batch[-1])
                await self.stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                self.unsent -= size
                self.made_room()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closing = True
            queue.clear()
            self.unsent = 0
            self.made_room()
        finally:
            self._sending = False
            if self._flushed is not None:
                self._flushed.set()

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
            self.codec.receive_data(self._plain(data))

    def _plain(self, data: bytes | bytearray) -> bytes | bytearray:
        """The plaintext of bytes read from the wire (none yet, if a TLS record is still
        arriving); what TLS owes the peer in answer is sent. PeerGone if the peer ended
        or broke its TLS session."""
        if self.tls is None:
            return data
        try:
            plain = self.tls.decrypt(bytes(data))
        except TlsClosed:
            raise PeerGone from None
        owed = self.tls.owed()
        if owed:
            self._send_bytes(owed)
        return plain

    async def start_tls(self, session: TlsSession) -> None:
        """The server's side of the TLS handshake, within HANDSHAKE_TIMEOUT; then every
        byte of the connection goes through `session`."""
        data: bytes | bytearray = b""
        with trio.move_on_after(HANDSHAKE_TIMEOUT) as scope:
            while True:
                try:
                    done, out = session.handshake(data)
                except TlsClosed as exc:
                    log_event(
                        log, "warning", "tls handshake failed", peer=self.peer, error=str(exc)
                    )
                    raise PeerGone from None
                try:
                    if out:
                        await self.stream.send_all(out)
                    if done:
                        break
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise PeerGone from None
                if not data:
                    raise PeerGone
        if scope.cancelled_caught:
            msg = f"no TLS handshake within the handshake time ({HANDSHAKE_TIMEOUT:g} s)"
            raise ProtocolError(msg, code="timeout")
        self.tls = session
        # the peer's first message may have come with its last handshake record
        self.codec.receive_data(self._plain(b""))

    async def first_byte(self) -> int | None:
        """The first byte the peer sent (within HANDSHAKE_TIMEOUT), left unread; None
        for an in-memory stream."""
        if not isinstance(self.stream, trio.SocketStream):
            return None
        with trio.move_on_after(HANDSHAKE_TIMEOUT) as scope:
            try:
                first = await self.stream.socket.recv(1, socket.MSG_PEEK)
            except OSError:
                raise PeerGone from None
        if scope.cancelled_caught:
            msg = f"nothing sent within the handshake time ({HANDSHAKE_TIMEOUT:g} s)"
            raise ProtocolError(msg, code="timeout")
        if not first:
            raise PeerGone
        return first[0]

    def local_loopback(self) -> bool:
        """Whether the peer reached this socket at a loopback address: its bytes never
        crossed a network (an in-memory stream's never left the process)."""
        if not isinstance(self.stream, trio.SocketStream):
            return True
        try:
            return is_loopback(str(self.stream.socket.getsockname()[0]))
        except OSError:
            return False

    async def _read(self) -> bytes:
        """The socket's next bytes, waited for with `wait_readable` itself.

        Much the same as the stream's `receive_some`, for a fraction of the objects: a
        wait is a chain of coroutines that the collector scans, eight in trio's stream
        and five here. Like `receive_some`, it is a checkpoint: it yields once per read,
        so a peer that sends without pause cannot starve the others."""
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

    async def serve(
        self, handle: Callable[[Message], None], stall: float, poller: Poller | None
    ) -> None:
        """Hand each of the peer's messages to `handle`, in order, until the session
        ends by an exception: `PeerGone`, or what `handle` raised.

        A socket's messages are read by the `poller` while the session waits (see
        `Poller`); an in-memory stream's, or any while the poller does not run, by
        this task. Either way a message is read only once there is room (`paused`)."""
        while True:
            await self.wait_for_room(stall)
            if poller is None or not poller.running or self.fd < 0:
                handle(await self.receive())
                continue
            # what the codec holds already goes first, then the poller reads on
            while not self.paused():
                message = self.codec.next_message()
                if message is NEED_DATA:
                    break
                assert isinstance(message, Message)
                self.last_heard = trio.current_time()
                handle(message)
            else:  # the loop ended for want of room, not for want of a message
                continue
            self._handle, self._failure = handle, None
            self._parked = trio.lowlevel.current_task()
            poller.watch(self)
            try:
                await trio.lowlevel.wait_task_rescheduled(self._cancel_parked)
            finally:
                poller.unwatch(self)
                self._handle = self._parked = None
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure

    def _cancel_parked(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._parked = None  # cancelled (the connection aborted, or the supervisor ends)
        return trio.lowlevel.Abort.SUCCEEDED

    def release(self) -> None:
        """Wake the parked session: it goes on in its own task (the poller stopped
        reading for it, or stopped altogether)."""
        task, self._parked = self._parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def readable(self) -> tuple[bool, bool]:
        """The poller's part of `serve`: the socket has bytes (or its end) for the
        session. Reads once and hands on every whole message. Says whether the poller
        is to go on reading for it (not once the peer is gone, `handle` raised, or there
        is no room for the next message: the session waits for room, then watches
        again), and whether anything but heartbeats came."""
        handle = self._handle
        if self._parked is None or handle is None or self.cancel_scope.cancel_called:
            return False, False  # aborted: the session ends as it is cancelled
        try:
            data = os.read(self.fd, RECEIVE_BYTES)
        except BlockingIOError:
            return True, False
        except OSError:
            data = b""
        news = True
        try:
            if not data:
                raise PeerGone
            self.codec.receive_data(self._plain(data))
            news = False
            while not self.paused():
                message = self.codec.next_message()
                if message is NEED_DATA:
                    return True, news
                assert isinstance(message, Message)
                self.last_heard = trio.current_time()
                news = news or not isinstance(message, Heartbeat)
                handle(message)
        except Exception as exc:  # ends the session, raised again in its own task
            self._failure = exc
        self.release()
        return False, True


class Poller:
    """Reads every watched socket from one task, so an idle worker's session costs no
    task switch per message.

    A worker's session spends its life waiting for the next message, and the commonest
    is a heartbeat: at 10,000 workers, 2,000 a second. Waited for by each session's
    task, each one is a wake-up of that task and a fresh chain of coroutines, which
    lives until the next message and which the collector scans (issue 13's idle CPU).
    A session that `serve`s on a socket instead parks once, on an event, and its socket
    is added to this poller's own epoll set; trio waits for that set's descriptor like
    any other, and each time it is readable this task reads the sockets that have
    bytes, at most POLL_BATCH of them before it gives the loop a turn, and hands their
    messages to the sessions' handlers (`Connection.readable`). It wakes a session only
    when its session is to go on in its own task: the peer is gone, a handler raised
    (a protocol error, ending the session as before), or there is no room to read more.

    Linux only (epoll); elsewhere `running` stays False and sessions read for
    themselves.
    """

    def __init__(self) -> None:
        self.running = False
        self._epoll: select.epoll | None = None
        self._watched: dict[int, Connection] = {}

    def watch(self, conn: Connection) -> None:
        assert self._epoll is not None
        self._epoll.register(conn.fd, select.EPOLLIN)
        self._watched[conn.fd] = conn

    def unwatch(self, conn: Connection) -> None:
        if self._watched.get(conn.fd) is conn:
            del self._watched[conn.fd]
            if self._epoll is not None:
                self._epoll.unregister(conn.fd)

    async def run(self) -> None:
        if not hasattr(select, "epoll"):
            await trio.sleep_forever()
        self._epoll = epoll = select.epoll()
        self.running = True
        woken = news_at = -math.inf  # the last wake-up; the last message but a heartbeat
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                now = trio.current_time()
                for fd, _ in epoll.poll(0, POLL_BATCH):
                    conn = self._watched.get(fd)
                    if conn is not None:
                        watching, news = conn.readable()
                        if news:
                            news_at = now
                        if not watching:
                            self.unwatch(conn)
                if now - news_at > IDLE_AFTER and now - woken < POLL_PAUSE:
                    # An idle farm, and a busy one at that: the next heartbeats can wait
                    # a little and be read together. 10,000 idle workers send 2,000 a
                    # second; a turn of the loop for each cost more than reading them.
                    # A small farm, or one sending results, is read as bytes come.
                    await trio.sleep(POLL_PAUSE)
                woken = now
        finally:
            self.running = False
            self._epoll = None
            for conn in list(self._watched.values()):  # their sessions read for themselves
                conn.release()
            self._watched.clear()
            epoll.close()


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


def last_word(conn: Connection, error: Error | Standby) -> None:
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
