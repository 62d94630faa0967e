"""`farmd serve`: the trio shell around the scheduler core.

The shell only moves bytes and keeps time. Every connection runs in the supervisor's
nursery: it reads frames into a `Codec`, turns messages into core events stamped with
the wall clock, and routes the core's commands to the workers' outgoing queues. One
sender task per connection drains its queue, so a slow peer never blocks the scheduler;
it is the only writer, so a closing connection's `error` is queued like any message.
The queue is bounded (`_Connection`: backpressure, then a drop), sessions and
handshakes are capped and idle admin sessions closed, and nothing raised while serving
one connection leaves that connection (`serve_stream`).
Heartbeats are timers here, not in the core: a worker silent for `heartbeat_timeout`
is reported to the core as lost, which requeues its frames.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import hmac
import logging
import math
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from farmd import __version__
from farmd.config import Address, SupervisorConfig, WorkersConfig, load_farm_config
from farmd.core import (
    ADMIN,
    MAX_COMMAND_BYTES,
    Action,
    Command,
    ControlFrames,
    FrameEnded,
    JobEnded,
    JobHeld,
    KillJobs,
    LockWorker,
    ModifyJob,
    Note,
    Outcome,
    Principal,
    ReclaimOrphans,
    RemoveJobs,
    Restore,
    ResumeFrame,
    Scheduler,
    SetResource,
    StartFrame,
    StopFrame,
    SubmitJob,
    SubmitJobs,
    SuspendFrame,
    Tick,
    UnlockWorker,
    WakeAt,
    WorkerJoined,
    WorkerLost,
    WorkerReconfigured,
    draft_batch,
    draft_job,
    submission_digest,
)
from farmd.errors import (
    FarmdError,
    ForbiddenError,
    InternalError,
    ProtocolError,
    UnavailableError,
    UserError,
)
from farmd.frames import frames_named
from farmd.jobs import Control
from farmd.logs import log_event
from farmd.metrics import FarmMetrics
from farmd.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    WORKER_VERSIONS,
    Codec,
    ControlRequest,
    Error,
    Explain,
    FetchLog,
    FrameFinished,
    GetJob,
    GetLog,
    Heartbeat,
    Hello,
    Kill,
    KillFrame,
    ListClusters,
    ListJobs,
    ListResources,
    ListWorkers,
    Lock,
    LogData,
    Message,
    Modify,
    Order,
    Refused,
    Register,
    Registered,
    Reload,
    Remove,
    Reply,
    Request,
    ResultAck,
    Role,
    RunFrame,
    Submit,
    SubmitBatch,
    Unlock,
    Wait,
    Welcome,
    register_of_version,
)
from farmd.protocol import (
    ResumeFrame as ResumeFrameMessage,
)
from farmd.protocol import (
    SetResource as SetResourceRequest,
)
from farmd.protocol import (
    SuspendFrame as SuspendFrameMessage,
)
from farmd.rows import Changes
from farmd.store import MemoryStore, SqliteStore, Store, restrict_mode, write_state_file

log = logging.getLogger("farmd.supervisor")
E = TypeVar("E", SubmitJob, KillJobs, ModifyJob, RemoveJobs)
E_SUBMIT = TypeVar("E_SUBMIT", SubmitJob, SubmitJobs)
M = TypeVar("M", bound=Message)

HANDSHAKE_TIMEOUT = 10.0
LOG_FETCH_TIMEOUT = 10.0
RECEIVE_BYTES = 65536
SEND_BATCH_BYTES = 256 * 1024  # queued frames go out in writes of about this size
GOODBYE_TIMEOUT = 1.0  # seconds a closing connection has to take what is queued for it
MAX_SLOW_REQUESTS = 16  # `wait` and `get_log` requests one session may have in flight
TOKEN_FILE = "token"
USER_TOKEN_FILE = "user_token"  # for artists: submit and read, nothing else
ADDRESS_FILE = "address"
METRICS_ADDRESS_FILE = "metrics_address"
HTTP_REQUEST_LIMIT = 8192
HTTP_TIMEOUT = 5.0


def ensure_token(state_dir: Path, name: str = TOKEN_FILE, mode: int = 0o600) -> str:
    """A token, written on first start as STATE/NAME: the farm's (admin) token with mode
    0600, the user token with 0640 (an admin may share it through the file's group)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        restrict_mode(path, mode)  # an older farmd, or a hand, may have left it open
        token = path.read_text().strip()
        if not token:
            msg = f"token file {path} is empty: remove it to make a new token"
            raise UserError(msg) from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


@functools.lru_cache(maxsize=4096)  # one per dispatch otherwise: frames of a job share it
def job_token(farm_token: str, job_id: int) -> str:
    """The token a frame of `job_id` gets (FARMD_TOKEN): it opens a session that may
    submit sub-jobs of that job and read the queue, nothing else. Derived from the farm
    token, so it needs no storage and survives restarts."""
    mac = hmac.new(farm_token.encode(), f"farmd-job:{job_id}".encode(), hashlib.sha256)
    return f"job.{job_id}.{mac.hexdigest()}"


def _principal_for(
    farm_token: str,
    user_token: str,
    presented: str,
    highest_user_priority: int,
) -> Principal:
    """Who a presented token stands for (the core decides what it may do); a token
    that is none of the farm's is refused."""
    if hmac.compare_digest(presented.encode(), farm_token.encode()):
        return ADMIN
    if user_token and hmac.compare_digest(presented.encode(), user_token.encode()):
        return Principal.user(highest_priority=highest_user_priority)
    parts = presented.split(".")
    if len(parts) == 3 and parts[0] == "job" and parts[1].isdigit() and len(parts[1]) < 20:
        job_id = int(parts[1])
        if hmac.compare_digest(presented.encode(), job_token(farm_token, job_id).encode()):
            return Principal.job_token(job_id, highest_priority=highest_user_priority)
    raise ProtocolError("wrong token", code="bad_token")


# What the requests that are not core events ask to do, for `Scheduler.authorize`; the
# others become events, which carry their principal and are checked by the core's door.
_REQUEST_ACTIONS: dict[type, Action] = {
    ListJobs: Action.READ,
    GetJob: Action.READ,
    ListWorkers: Action.READ,
    ListClusters: Action.READ,
    Order: Action.READ,
    GetLog: Action.READ,
    Wait: Action.READ,
    Explain: Action.READ,
    ListResources: Action.READ,
    Reload: Action.RELOAD,
}


class _PeerGone(Exception):
    """The connection ended (closed, reset, or timed out); the peer is gone."""


class _Goodbye(Exception):
    """The supervisor ends a connection for a reason other than the peer's protocol
    error (an idle session, a full connection cap): its last word, and a log line."""

    def __init__(self, level: str, event: str, error: Error) -> None:
        super().__init__(error.message)
        self.level = level
        self.event = event
        self.error = error


@attrs.define
class _Connection:
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
    def open(cls, stream: trio.abc.Stream, peer: str, config: SupervisorConfig) -> _Connection:
        return cls(
            stream,
            Codec(config.max_frame_bytes),
            peer,
            config.outbox_pause_bytes,
            config.max_outbox_bytes,
            trio.current_time(),
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
        data = self.codec.send(message)
        if self.closing:
            return
        if self.unsent > self.limit_bytes:
            self.drop(f"more than {self.limit_bytes} bytes wait to be sent to it")
            return
        self._queue.append(data)
        self.unsent += len(data)
        self._queued.set()

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
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _PeerGone from None
            if not data:
                raise _PeerGone
            self.codec.receive_data(data)


class Supervisor:
    """The daemon: owns the scheduler core and every connection, in one nursery."""

    def __init__(
        self,
        config: SupervisorConfig,
        *,
        clock: Callable[[], float] = time.time,
        workers: WorkersConfig | None = None,
        config_path: Path | None = None,
        file_settings: SupervisorConfig | None = None,
    ) -> None:
        self.config = config
        # the file's own supervisor settings (before command-line flags): what a reload
        # compares with, to report the settings that changed in the file
        self._file_settings = file_settings if file_settings is not None else config
        self.workers_config = workers if workers is not None else WorkersConfig()
        self.config_path = config_path  # what `farmd reload` and SIGHUP read again
        self._registrations: dict[str, Register] = {}  # what each worker said of itself
        self.core = Scheduler(
            default_priority=config.default_priority,
            default_cluster=config.default_cluster,
            max_command_bytes=min(MAX_COMMAND_BYTES, config.max_frame_bytes // 4),
            preempt_policy=config.preempt_policy,
            resources=dict(config.resources),
        )
        self.token = ""
        self.user_token = ""
        self.store: Store | None = None
        self.address: Address | None = None
        self._clock = clock
        self._workers: dict[str, _Connection] = {}
        self._sessions: collections.Counter[str] = collections.Counter()  # open, by kind
        self._log_requests: dict[int, trio.MemorySendChannel[LogData]] = {}
        self._next_log_request = 1
        # set (and replaced) when a job ends or may have become stuck: `wait`s check again
        self._jobs_changed = trio.Event()
        # outcomes waiting for their changes to be durable, with what to do after
        self._uncommitted: list[tuple[Changes, list[Callable[[], None]]]] = []
        self._commit_wanted = trio.Event()
        self._committing = False  # a batch is being committed or carried out
        self._wake_changed = trio.Event()
        self._drafting = trio.CapacityLimiter(1)  # large submissions, built off the loop
        self.metrics = FarmMetrics(self.core.statistics)
        self.metrics_address: Address | None = None

    # ------------------------------------------------------------------ lifetime

    def _open_store(self) -> Store:
        """Lock and open the state dir's store (refusing a bad one before anything is
        written), and restore the farm it holds."""
        if self.config.store == "memory":
            store: Store = MemoryStore()
        else:
            store = SqliteStore(self.config.state_dir)
        try:
            restored = self.core.handle(Restore(snapshot=store.load(), now=self._clock()))
            if restored.commands or restored.changes:
                msg = f"restoring the farm asked for commands or rows: {restored!r:.200}"
                raise InternalError(msg)
            self.token = ensure_token(self.config.state_dir)
            self.user_token = ensure_token(self.config.state_dir, USER_TOKEN_FILE, 0o640)
        except BaseException:
            store.close()
            raise
        # a job whose rows restore could not use is left out, not fatal: one line each,
        # so an admin finds the job (its rows are kept for a fixed farmd to restore)
        for job_id, why in self.core.quarantine_report().items():
            log_event(log, "error", "job quarantined", job=job_id, why=why)
        size = self.core.size()
        log_event(
            log,
            "info",
            "state restored",
            store=self.config.store,
            jobs=size.jobs,
            frames=size.frames,
            orphans=size.orphans,
            quarantined=size.quarantined,
        )
        return store

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.store = self._open_store()
        try:
            await self._serve(task_status)
        finally:
            self.store.close()

    async def _serve(self, task_status: trio.TaskStatus[Address]) -> None:
        listen = self.config.listen
        listeners = await open_listeners(listen)
        sockname = listeners[0].socket.getsockname()
        self.address = Address(listen.host, sockname[1])
        # Local clients and scripts find a supervisor started on port 0 through this file.
        write_state_file(self.config.state_dir / ADDRESS_FILE, f"{self.address}\n")
        log_event(
            log,
            "info",
            "supervisor listening",
            address=str(self.address),
            state_dir=str(self.config.state_dir),
            version=__version__,
        )
        async with trio.open_nursery() as nursery:
            if self.config.metrics is not None:
                await nursery.start(self._serve_metrics, self.config.metrics)
            nursery.start_soon(self._committer)
            nursery.start_soon(self._timer)
            if self.core.orphans:
                nursery.start_soon(self._reclaim_after_grace)
            nursery.start_soon(trio.serve_listeners, self.serve_stream, listeners)
            task_status.started(self.address)

    async def _serve_metrics(
        self, where: Address, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Prometheus's text format on `GET /metrics`, on its own address. Scrapes run in
        this (the core's) thread, so the statistics they read are consistent."""
        listeners = await open_listeners(where)
        self.metrics_address = Address(where.host, listeners[0].socket.getsockname()[1])
        write_state_file(self.config.state_dir / METRICS_ADDRESS_FILE, f"{self.metrics_address}\n")
        log_event(log, "info", "metrics listening", address=str(self.metrics_address))
        task_status.started()
        await trio.serve_listeners(self._metrics_request, listeners)

    async def _metrics_request(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(HTTP_TIMEOUT):
                while b"\r\n\r\n" not in request and len(request) < HTTP_REQUEST_LIMIT:
                    try:
                        chunk = await stream.receive_some(4096)
                    except trio.BrokenResourceError:
                        return
                    if not chunk:
                        break
                    request += chunk
            line = request.split(b"\r\n", 1)[0].split()
            if line[:1] == [b"GET"] and line[1:2] in ([b"/metrics"], [b"/"]):
                try:
                    body, kind = self.metrics.exposition()
                    status = "200 OK"
                except Exception as exc:  # a scrape must not take the supervisor down
                    log_event(log, "error", "metrics failed", error=repr(exc))
                    body, kind, status = (
                        b"metrics failed\n",
                        "text/plain",
                        "500 Internal Server Error",
                    )
            else:
                body, kind, status = b"not found: GET /metrics\n", "text/plain", "404 Not Found"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(head.encode() + body)

    async def _timer(self) -> None:
        """Wake the core when it asked to be (retry delays): one timer for all of them."""
        while True:
            self._wake_changed = trio.Event()
            at = self.core.next_wake()
            if at is None:
                await self._wake_changed.wait()
                continue
            with trio.move_on_after(max(0.0, at - self._clock())) as scope:
                await self._wake_changed.wait()
            if scope.cancelled_caught:
                self._apply(self.core.handle(Tick(now=self._clock())))

    async def _reclaim_after_grace(self) -> None:
        await trio.sleep(self.config.lost_worker_grace)
        self._apply(self.core.handle(ReclaimOrphans(now=self._clock())))

    async def _committer(self) -> None:
        """Group commit: everything that accumulated while the last commit ran goes into
        the next one; then, in order, what each outcome was waiting to do."""
        assert self.store is not None
        store = self.store
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted = trio.Event()
            while self._uncommitted:
                self._committing = True
                batch, self._uncommitted = self._uncommitted, []
                changes = Changes.merge([c for c, _ in batch if c])
                if changes:
                    started = trio.current_time()
                    await trio.to_thread.run_sync(store.commit, changes)
                    seconds = trio.current_time() - started
                    self.metrics.observe_commit(seconds)
                    log_event(
                        log,
                        "debug",
                        "commit",
                        jobs=len(changes.jobs),
                        frames=len(changes.frames),
                        outcomes=len(batch),
                        seconds=round(seconds, 6),
                    )
                for _, effects in batch:
                    for effect in effects:
                        effect()
            self._committing = False

    async def serve_stream(self, stream: trio.abc.Stream, peer: str = "?") -> None:
        """One connection, from its accept to its close. The listener calls it with each
        TCP stream; tests call it with an in-memory stream (`peer` names that one).

        Nothing raised while serving it leaves this scope but cancellation (trio's
        Cancelled, KeyboardInterrupt): any other exception, a bug included, costs one
        log line naming the peer and this connection, never the listener's nursery and
        with it the supervisor."""
        try:
            if isinstance(stream, trio.SocketStream):
                peer = _peer(stream)
                stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection.open(stream, peer, self.config)
            with conn.cancel_scope:
                await self._run_connection(conn)
        except* Exception as group:
            errors = "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(group))
            log_event(log, "error", "connection failed", peer=peer, error=errors)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _run_connection(self, conn: _Connection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.sender)
            try:
                await self._converse(conn, nursery)
            except ProtocolError as exc:
                log_event(
                    log, "warning", "protocol error", peer=conn.peer, code=exc.code, error=str(exc)
                )
                _last_word(conn, Error(code=exc.code, message=str(exc)))
            except _Goodbye as goodbye:
                log_event(log, goodbye.level, goodbye.event, peer=conn.peer, error=str(goodbye))
                _last_word(conn, goodbye.error)
            except _PeerGone:
                pass
            # The last word goes out after everything queued before it; then the
            # connection closes, whether or not the peer took it all.
            conn.close()
            with trio.move_on_after(GOODBYE_TIMEOUT):
                await conn.flushed.wait()
            nursery.cancel_scope.cancel()

    @contextlib.contextmanager
    def _session_slot(self, kind: str, limit: int, what: str) -> Iterator[None]:
        """Count a connection as `kind` while it lasts; refused if `limit` are open."""
        if self._sessions[kind] >= limit:
            msg = f"too many {what} ({limit}): try again later"
            raise _Goodbye("warning", "connection refused", Error(code="unavailable", message=msg))
        self._sessions[kind] += 1
        try:
            yield
        finally:
            self._sessions[kind] -= 1

    async def _converse(self, conn: _Connection, nursery: trio.Nursery) -> None:
        config = self.config
        with self._session_slot("handshake", config.max_handshakes, "connections in the handshake"):
            hello = await _expect(conn, Hello, "first")
            worker = hello.role == Role.WORKER.value
            if hello.version != PROTOCOL_VERSION and not (
                worker and hello.version in WORKER_VERSIONS
            ):
                msg = (
                    f"protocol version {hello.version} is not supported "
                    f"(this is {PROTOCOL_VERSION})"
                )
                raise ProtocolError(msg, code="bad_version")
            principal = _principal_for(
                self.token, self.user_token, hello.token, config.highest_user_priority
            )
            try:  # a job token whose job has ended opens nothing
                self.core.authorize(principal, Action.WORK if worker else Action.READ)
            except ForbiddenError as exc:
                raise ProtocolError(str(exc), code="bad_token") from None
            conn.principal, conn.version = principal, hello.version
        if worker:
            kind, limit = "worker", config.max_worker_sessions
        elif principal.is_admin:
            kind, limit = "admin", config.max_admin_sessions
        else:  # the user token or a frame's job token
            kind, limit = "user", config.max_user_sessions
        with self._session_slot(kind, limit, f"{kind} sessions"):
            conn.send(
                Welcome(
                    version=PROTOCOL_VERSION,
                    supervisor=f"farmd {__version__}",
                    heartbeat_interval=config.heartbeat_interval,
                    max_frame_bytes=config.max_frame_bytes,
                )
            )
            if hello.role == Role.WORKER.value:
                await self._worker_session(conn, nursery)
            else:
                await self._admin_session(conn, nursery)

    # ------------------------------------------------------------------ workers

    async def _worker_session(self, conn: _Connection, nursery: trio.Nursery) -> None:
        register = register_of_version(
            await _expect(conn, Register, "after the hello"), conn.version
        )
        name = register.name
        old = self._workers.get(name)
        if old is not None and not self._may_replace(old, register):
            msg = (
                f"worker name {name!r} is in use by {old.peer} (the default name is the "
                "host name: give each agent on a host its own --name)"
            )
            raise ProtocolError(msg, code="name_in_use")
        effective = self._effective(register)
        try:
            joined = self.core.handle(
                WorkerJoined(name=name, running=register.running, now=self._clock(), **effective)
            )
        except UserError as exc:  # refused: nothing changed, a live namesake included
            raise ProtocolError(f"registration refused: {exc}", code=exc.code) from None
        self._workers[name] = conn
        self._registrations[name] = register
        if old is not None:
            # The old session of this name is a ghost (its agent reconnected before the
            # old connection was seen to end) or silent; the core has already replaced
            # the worker. Its connection ends without reporting the worker lost.
            old.abort()
        # before any run_frame the join dispatched; the worker learns what it is now
        settings = {**effective, "types": list(effective["types"])}
        conn.send(Registered(name=name, settings=settings))
        self._apply(joined)
        nursery.start_soon(self._heartbeats, conn, name)
        try:
            while True:
                await conn.wait_for_room(self.config.idle_timeout)
                message = await conn.receive()
                match message:
                    case FrameFinished():
                        ended = FrameEnded(
                            worker=name,
                            job_id=message.job_id,
                            frame=message.frame,
                            attempt=message.attempt,
                            exit_code=message.exit_code,
                            error=message.error,
                            now=self._clock(),
                        )
                        ack = ResultAck(
                            job_id=message.job_id, frame=message.frame, attempt=message.attempt
                        )
                        # the worker forgets a result once acknowledged: only when durable
                        self._apply(
                            self.core.handle(ended), after=functools.partial(conn.send, ack)
                        )
                    case LogData():
                        waiter = self._log_requests.pop(message.request_id, None)
                        if waiter is not None:
                            waiter.send_nowait(message)
                    case Heartbeat():
                        pass
                    case _:
                        msg = f"a worker may not send {message.TYPE!r}"
                        raise ProtocolError(msg, code="bad_message")
        finally:
            if self._workers.get(name) is conn:
                del self._workers[name]
                self._registrations.pop(name, None)
                self._apply(self.core.handle(WorkerLost(name=name, now=self._clock())))

    def _may_replace(self, old: _Connection, register: Register) -> bool:
        """Whether a registration may take the name of a connected worker: only the same
        agent process (its `instance`) coming back over its own ghost session, or any
        worker once the holder has been silent past `heartbeat_timeout`."""
        previous = self._registrations.get(register.name)
        if register.instance and previous is not None and previous.instance == register.instance:
            return True
        return trio.current_time() - old.last_heard > self.config.heartbeat_timeout

    def _effective(self, register: Register) -> dict[str, Any]:
        """A worker's settings: the central configuration's for every key it sets (as
        Qube's qbwrk.conf over a host's own), the worker's flags for the rest."""
        central = self.workers_config.settings_for(register.name)
        effective = central.combine(
            cluster=register.cluster,
            restrictions=register.restrictions,
            slots=register.slots,
            types=register.types,
            properties=register.properties,
            resources=register.resources,
        )
        effective["types"] = tuple(sorted(effective["types"]))
        return effective

    def reload(self) -> dict[str, Any]:
        """Read the configuration file again (`farmd reload`, SIGHUP). A bad file is
        refused and the running configuration stays. Worker settings apply at once (from
        each worker's next pick; running frames are not disturbed); supervisor settings
        that changed are reported: they apply at the next restart."""
        if self.config_path is None:
            msg = "the supervisor was started without --config: there is nothing to reload"
            raise UserError(msg)
        farm = load_farm_config(self.config_path)  # refused (ConfigError): nothing changes
        restart = [
            field.name
            for field in attrs.fields(SupervisorConfig)
            if getattr(farm.supervisor, field.name) != getattr(self._file_settings, field.name)
        ]
        self.workers_config = farm.workers
        changed = []
        for name, register in sorted(self._registrations.items()):
            settings = self.core.worker_settings(name)
            effective = self._effective(register)
            if settings is None or settings == effective:
                continue
            event = WorkerReconfigured(name=name, now=self._clock(), **effective)
            self._apply(self.core.handle(event))
            changed.append(name)
        log_event(
            log, "info", "configuration reloaded", reconfigured=changed, restart_needed=restart
        )
        return {"reconfigured": changed, "restart_needed": restart}

    async def _heartbeats(self, conn: _Connection, name: str) -> None:
        interval = self.config.heartbeat_interval
        timeout = self.config.heartbeat_timeout
        while True:
            await trio.sleep(interval)
            if trio.current_time() - conn.last_heard > timeout:
                log_event(log, "warning", "heartbeat timeout", worker=name, timeout=timeout)
                conn.abort()  # the session ends (paused or not): the worker is lost
                return
            conn.send(Heartbeat())

    # ------------------------------------------------------------------ admin requests

    async def _admin_session(self, conn: _Connection, nursery: trio.Nursery) -> None:
        while True:
            await conn.wait_for_room(self.config.idle_timeout)
            message = await self._next_request(conn)
            if not isinstance(message, Request):
                msg = f"an admin may not send {message.TYPE!r}"
                raise ProtocolError(msg, code="bad_message")
            if isinstance(message, Wait | GetLog):
                conn.slow += 1
                nursery.start_soon(self._answer_slow, conn, message)
            elif isinstance(message, Submit | SubmitBatch):
                # awaited here: this session's next request sees the job
                await self._answer_submit(conn, message)
            else:
                self._answer(conn, message)

    async def _next_request(self, conn: _Connection) -> Message:
        """The session's next message; a session with no request in flight for
        `idle_timeout` is closed (a pending `wait` or log fetch keeps it open)."""
        timeout = self.config.idle_timeout
        while True:
            with trio.CancelScope(deadline=conn.idle_deadline(timeout)) as conn.idle:
                return await conn.receive()  # a partial frame stays in the codec
            if conn.idle_deadline(timeout) <= trio.current_time():
                msg = (
                    f"session closed after {timeout:g} s without a request (connect again to go on)"
                )
                raise _Goodbye("info", "session idle", Error(code="idle", message=msg))

    def _answer(self, conn: _Connection, request: Request) -> None:
        try:
            result, outcome = self._request(request, conn.who)
        except FarmdError as exc:
            conn.send(Refused(request_id=request.request_id, code=exc.code, message=str(exc)))
            return
        # Sent once everything handled so far is durable: a reply shows nothing that a
        # crash could still take back (a query included: it may show an uncommitted change).
        self._apply(
            outcome or Outcome(), after=functools.partial(self._respond, conn, request, result)
        )

    async def _answer_submit(self, conn: _Connection, request: Submit | SubmitBatch) -> None:
        """A submission: drafted (validated, its frames built) in a worker thread when
        it is large, so the loop keeps serving heartbeats and other clients; then
        checked against the farm and inserted in one step."""
        try:
            self.core.authorize(conn.who, Action.SUBMIT)  # before any drafting
            event = _submit_event(request, conn.who, self._clock())
            if not self.core.knows_key(event.key) and _large(event):
                # one at a time: concurrent huge submissions queue, not multiply memory
                draft = functools.partial(_draft, event, self.core.max_command_bytes)
                event = await trio.to_thread.run_sync(draft, limiter=self._drafting)
            outcome = self.core.handle(event)
        except FarmdError as exc:
            conn.send(Refused(request_id=request.request_id, code=exc.code, message=str(exc)))
            return
        result = outcome.result
        if isinstance(request, Submit):
            result = self.core.job_summary(result)
        self._apply(outcome, after=functools.partial(self._respond, conn, request, result))

    async def _answer_slow(self, conn: _Connection, request: Wait | GetLog) -> None:
        try:
            self.core.authorize(conn.who, Action.READ)
            if isinstance(request, Wait):
                result = await self._wait(request)
            else:
                result = await self._fetch_log(request)
        except FarmdError as exc:
            conn.send(Refused(request_id=request.request_id, code=exc.code, message=str(exc)))
        else:
            self._apply(Outcome(), after=functools.partial(self._respond, conn, request, result))
        finally:
            conn.slow -= 1
            conn.quiet_since = trio.current_time()  # idle from this answer on
            if conn.idle is not None:
                conn.idle.deadline = conn.idle_deadline(self.config.idle_timeout)
            conn.made_room()

    @staticmethod
    def _respond(conn: _Connection, request: Request, result: Any) -> None:
        try:
            conn.send(Reply(request_id=request.request_id, result=result))
        except ProtocolError as exc:
            msg = f"the answer to {request.TYPE!r} does not fit in one frame: {exc}"
            conn.send(
                Refused(request_id=request.request_id, code=UnavailableError.code, message=msg)
            )

    def _request(self, request: Request, by: Principal) -> tuple[Any, Outcome | None]:
        """A request's answer, and the outcome it must wait for (None for a query). A
        query or a reload is authorised here by the core; an event by the core's door."""
        core = self.core
        now = self._clock()
        action = _REQUEST_ACTIONS.get(type(request))
        if action is not None:
            core.authorize(by, action)
        match request:
            case ListJobs():
                return core.jobs_view(), None
            case GetJob():
                return core.job_view(request.job_id), None
            case ListWorkers():
                return core.workers_view(), None
            case ListClusters():
                return core.clusters_view(), None
            case Kill():
                outcome = self.core.handle(_event_from(KillJobs, request, now, by))
                return outcome.result, outcome
            case ControlRequest():
                control = ControlFrames(
                    control=Control(request.action), targets=request.targets, now=now, by=by
                )
                outcome = self.core.handle(control)
                return outcome.result, outcome
            case Remove():
                outcome = self.core.handle(_event_from(RemoveJobs, request, now, by))
                return outcome.result, outcome
            case Modify():
                outcome = self.core.handle(_event_from(ModifyJob, request, now, by))
                return outcome.result, outcome
            case Order():
                return core.order_view(request.worker, request.limit), None
            case Explain():
                return core.explain(request.job_id, request.worker), None
            case ListResources():
                return core.resources_view(), None
            case Lock():
                lock = LockWorker(name=request.worker, mode=request.mode, now=now, by=by)
                outcome = core.handle(lock)
                return outcome.result, outcome
            case Unlock():
                outcome = core.handle(UnlockWorker(name=request.worker, now=now, by=by))
                return outcome.result, outcome
            case Reload():
                return self.reload(), None
            case SetResourceRequest():
                change = SetResource(name=request.name, total=request.total, now=now, by=by)
                outcome = core.handle(change)
                return outcome.result, outcome
        msg = f"request {request.TYPE!r} is not served here"
        raise UserError(msg)

    async def _wait(self, request: Wait) -> dict[str, Any]:
        """Until every job has ended or cannot end without an admin (`Scheduler.stuck`),
        or the timeout."""
        ids = tuple(dict.fromkeys(request.job_ids))
        self.core.ended(ids)  # refuses unknown ids at once
        timeout = math.inf if request.timeout is None else request.timeout
        with trio.move_on_after(timeout):
            while True:
                changed = self._jobs_changed
                if self.core.settled(ids):
                    break
                await changed.wait()
        ended = self.core.ended(ids)
        pending = [i for i in ids if i not in ended]
        return {
            "ended": {str(k): v.value for k, v in ended.items()},
            "pending": pending,
            "stuck": {str(k): why for k, why in self.core.stuck(pending).items()},
        }

    async def _fetch_log(self, request: GetLog) -> dict[str, Any]:
        frame, worker_name = self.core.frame_holder(request.job_id, request.frame)
        conn = self._workers.get(worker_name)
        label = f"{request.job_id}:{frame.number}"
        if conn is None:
            msg = f"the log of frame {label} is on worker {worker_name!r}, which is not connected"
            raise UnavailableError(msg)
        request_id = self._next_log_request
        self._next_log_request += 1
        send, receive = trio.open_memory_channel[LogData](1)
        self._log_requests[request_id] = send
        conn.send(
            FetchLog(
                request_id=request_id,
                job_id=request.job_id,
                frame=frame.number,
                attempt=frame.attempts,
            )
        )
        try:
            with trio.move_on_after(LOG_FETCH_TIMEOUT):
                data = await receive.receive()
                if not data.found:
                    msg = f"worker {worker_name!r} has no log for frame {label}"
                    raise UnavailableError(msg)
                return {
                    "job_id": request.job_id,
                    "frame": frame.number,
                    "attempt": frame.attempts,
                    "worker": worker_name,
                    "text": data.text,
                }
        finally:
            self._log_requests.pop(request_id, None)
        msg = f"worker {worker_name!r} did not send the log of frame {label} in time"
        raise UnavailableError(msg)

    # ------------------------------------------------------------------ core plumbing

    def _apply(self, outcome: Outcome, after: Callable[[], None] | None = None) -> None:
        """Carry out an outcome's commands, then `after`, once its changes are durable.
        Outcomes take effect in the order they were handled."""
        effects: list[Callable[[], None]] = [
            functools.partial(self._execute, outcome.commands, trio.current_time())
        ]
        if after is not None:
            effects.append(after)
        if outcome.changes or self._uncommitted or self._committing:
            self._uncommitted.append((outcome.changes, effects))
            self._commit_wanted.set()
        else:
            for effect in effects:
                effect()

    def _execute(self, commands: tuple[Command, ...], decided: float) -> None:
        """Carry out an outcome's commands; `decided`: when the core handled its event,
        for the pick-to-start latency."""
        for command in commands:
            match command:
                case StartFrame():
                    self.metrics.observe_dispatch(trio.current_time() - decided)
                    log_event(
                        log,
                        "debug",
                        "dispatch",
                        worker=command.worker,
                        job=command.job_id,
                        frame=command.frame,
                        attempt=command.attempt,
                        rank=list(command.rank),
                    )
                    self._send_to_worker(
                        command.worker,
                        RunFrame(
                            job_id=command.job_id,
                            job_name=command.job_name,
                            frame=command.frame,
                            attempt=command.attempt,
                            argv=command.argv,
                            # what a frame needs to submit sub-jobs of its job
                            env={
                                **command.env,
                                "FARMD_TOKEN": job_token(self.token, command.job_id),
                            },
                            time_limit=command.time_limit,
                        ),
                    )
                case StopFrame():
                    self._send_to_worker(
                        command.worker,
                        KillFrame(
                            job_id=command.job_id, frame=command.frame, attempt=command.attempt
                        ),
                    )
                case SuspendFrame():
                    self._send_to_worker(
                        command.worker,
                        SuspendFrameMessage(
                            job_id=command.job_id, frame=command.frame, attempt=command.attempt
                        ),
                    )
                case ResumeFrame():
                    self._send_to_worker(
                        command.worker,
                        ResumeFrameMessage(
                            job_id=command.job_id, frame=command.frame, attempt=command.attempt
                        ),
                    )
                case WakeAt():
                    self._wake_changed.set()
                case JobEnded() | JobHeld():
                    self._jobs_changed.set()
                    self._jobs_changed = trio.Event()
                case Note():
                    log_event(log, command.level, command.event, **command.fields)

    def _send_to_worker(self, name: str, message: Message) -> None:
        conn = self._workers.get(name)
        if conn is not None:
            conn.send(message)


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


async def _expect(conn: _Connection, kind: type[M], when: str) -> M:
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


def _last_word(conn: _Connection, error: Error) -> None:
    """Queue a closing connection's `error`, shortened if it would not fit in a frame."""
    try:
        conn.send(error)
    except ProtocolError:
        conn.send(attrs.evolve(error, message=error.message[:1000] + "..."))


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """The exceptions of a (nested) group."""
    out: list[Exception] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _event_from(event: type[E], request: Request, now: float, by: Principal) -> E:
    """The core event a request asks for: the request's fields (they share names), the
    time it arrived and who asks."""
    fields = attrs.asdict(request, recurse=False)  # type: ignore[arg-type]
    del fields["request_id"]
    return event(now=now, by=by, **fields)


# A submission is drafted on the loop below these sizes (a thread hop costs more than
# the work), and in a worker thread above them.
_INLINE_JOBS = 16
_INLINE_FRAMES = 2000
_INLINE_FRAME_TEXT = 4096


def _submit_event(request: Submit | SubmitBatch, by: Principal, now: float) -> Any:
    """The core event of a submission, stamped with the time it arrived."""
    if isinstance(request, Submit):
        return _event_from(SubmitJob, request, now, by)
    jobs = tuple(_event_from(SubmitJob, job, now, by) for job in request.jobs)
    return SubmitJobs(jobs=jobs, now=now, key=request.key, by=by)


def _draft(event: E_SUBMIT, max_command_bytes: int) -> E_SUBMIT:
    """`event` with its jobs drafted and its digest computed: pure, for a worker thread."""
    digest = submission_digest(event) if event.key is not None else None
    if isinstance(event, SubmitJob):
        return attrs.evolve(event, prepared=draft_job(event, max_command_bytes), digest=digest)
    drafts = draft_batch(event.jobs, max_command_bytes)
    return attrs.evolve(event, prepared=drafts, digest=digest)


def _large(event: SubmitJob | SubmitJobs) -> bool:
    """Worth drafting in a thread: many jobs, or many frames (counted without building
    them, over a bounded amount of text)."""
    jobs = event.jobs if isinstance(event, SubmitJobs) else (event,)
    if len(jobs) > _INLINE_JOBS:
        return True
    texts = [job.frames for job in jobs]
    if sum(len(text) for text in texts) > _INLINE_FRAME_TEXT:
        return True
    return sum(frames_named(text) for text in texts) > _INLINE_FRAMES


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


async def serve(
    config: SupervisorConfig,
    *,
    ready: Callable[[Address], None] | None = None,
    workers: WorkersConfig | None = None,
    config_path: Path | None = None,
    file_settings: SupervisorConfig | None = None,
) -> None:
    """Run the supervisor until SIGTERM or SIGINT, then stop within the grace period;
    SIGHUP reloads the configuration file."""
    supervisor = Supervisor(
        config, workers=workers, config_path=config_path, file_settings=file_settings
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(supervisor.run)
            if ready is not None:
                ready(address)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        supervisor.reload()
                    except FarmdError as exc:
                        log_event(log, "error", "reload refused", error=str(exc))
                    continue
                log_event(log, "info", "shutting down", signal=signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
