"""`farmd serve`: the `Supervisor`, the trio shell that holds the scheduler core.

What it does, and what it leaves to others:

- It holds the core (`farmd.core.Scheduler`) and is its only caller (with
  `translate.answer`, to which it hands its core): every change goes through the core's
  one door, `handle`, as an event stamped with the wall clock (`clock`), a restart
  included (`Restore`); everything it reads is one of the core's named queries. The
  metrics read the core's `statistics` in this thread, at scrape time.
- It authenticates and nothing more: the token a session's `hello` presents becomes a
  core `Principal` (`tokens.principal_for`; a person's or a worker token's, checked off
  the loop, `people`). The core admits the session
  (`authorize`, WORK for a worker, READ for the others); an admin or user session's
  events carry the principal to the door, its queries are authorised by the core
  before they are asked. Whatever the core refuses becomes a `refused` or an `error`.
- It makes outcomes durable before carrying them out: an outcome's commands, and the
  reply or result acknowledgement waiting on it, take effect only once its rows and
  those of every outcome before it are in the store (`_apply`, `committer`); a query's
  reply waits the same way, so no answer shows what a crash could take back.
- It translates: messages into events (a worker's registration and results, an
  admin's requests: `translate`, served by the `admin` mixin), commands into messages
  to the workers (`_execute`); a large submission is drafted in a worker thread, off
  the loop. What lives in the store and not in memory (history, the audit log) is read
  by `archive`.
- It runs the timers, heartbeats and the committer: one timer for the core's next
  wake (`Tick`), the orphan grace after a restart (`ReclaimOrphans`), one heartbeat
  sweep for all workers (each interval: a heartbeat to every worker it has not written
  to lately, and a worker silent for `heartbeat_timeout` is aborted, and its session's
  end reports it lost to the core, which requeues its frames), the group committer, and
  the HTTP app (`farmd.web`: the JSON API, its change notices and `/metrics`, on the
  `http` address and the older `metrics` one; `web_backend` is its view of this
  supervisor). A timer per worker would cost 10,000 wake-ups an interval on a large
  farm; one sweep costs one, and a pass over the workers.
- It holds no scheduling rule. What runs where, what a principal may do, when a job is
  stuck are the core's; how a worker's own settings and the `workers:` configuration
  combine is `WorkerSettings.combine`'s. Its own rules are about sessions: the protocol
  version, the handshake and session caps, idle admin sessions, which registration may
  take a connected worker's name, how long a log fetch may take.

Each connection is served by `serve_stream` (a `connection.Connection`: frames written
straight to the socket, a bounded outbox drained by a sender task when the socket is
full, so a slow peer never blocks the scheduler; a worker's messages read by the one
`Poller`); nothing raised while serving one connection leaves that connection.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from farmd import __version__
from farmd.codec import HEARTBEAT_FRAME
from farmd.config import (
    Address,
    SupervisorConfig,
    WorkersConfig,
    http_address,
    is_postgres_url,
    load_farm_config,
)
from farmd.core import (
    MAX_COMMAND_BYTES,
    Action,
    Command,
    FrameEnded,
    JobEnded,
    JobHeld,
    KillOnWorker,
    Note,
    Outcome,
    ReclaimOrphans,
    Restore,
    ResumeOnWorker,
    RunOnWorker,
    Scheduler,
    SuspendOnWorker,
    Tick,
    WakeAt,
    WorkerJoined,
    WorkerLost,
    WorkerReconfigured,
)
from farmd.core.restore import Built
from farmd.core.vocabulary import DropBundle, TellReleases, WorkerLoad
from farmd.errors import FarmdError, ForbiddenError, InternalError, ProtocolError, UserError
from farmd.logs import log_event
from farmd.metrics import FarmMetrics
from farmd.protocol import (
    PROTOCOL_VERSION,
    RELEASE_VERSION,
    WORKER_VERSIONS,
    Error,
    FrameFinished,
    Heartbeat,
    Hello,
    LogData,
    Message,
    Register,
    Registered,
    ResultAck,
    Role,
    Welcome,
    register_of_version,
)
from farmd.protocol_load import LOAD_VERSION, HostLoad
from farmd.protocol_releases import FetchRelease, Releases, ReleaseStatus
from farmd.rows import Snapshot
from farmd.store import MemoryStore, SqliteStore, Store, write_state_file
from farmd.supervisor.admin import AdminRequests
from farmd.supervisor.archive import Archive
from farmd.supervisor.committer import Committer
from farmd.supervisor.connection import (
    Connection,
    Goodbye,
    PeerGone,
    Poller,
    expect,
    last_word,
    open_listeners,
    peer_of,
)
from farmd.supervisor.election import Standing
from farmd.supervisor.notifier import Notifier
from farmd.supervisor.people import People
from farmd.supervisor.shelf import ReleaseShelf, worker_releases
from farmd.supervisor.standby import paused_gc, serve_elected, standby_goodbye
from farmd.supervisor.tokens import USER_TOKEN_FILE, ensure_token, principal_for
from farmd.supervisor.translate import worker_message
from farmd.supervisor.web_backend import ChangeNotices, SupervisorBackend
from farmd.tls import (
    HANDSHAKE_RECORD,
    CertificateFiles,
    TlsSession,
    certificate_files,
    is_loopback,
    pin_of_file,
    server_context,
)
from farmd.web import Broadcaster, create_app
from farmd.web.server import HttpBind, https_for, serve_http

log = logging.getLogger("farmd.supervisor")

GOODBYE_TIMEOUT = 1.0  # seconds a closing connection has to take what is queued for it
ADDRESS_FILE = "address"
HTTP_ADDRESS_FILE = "http_address"  # where the HTTP API is, as ADDRESS_FILE says the port
METRICS_ADDRESS_FILE = "metrics_address"
HEARTBEAT_BATCH = 500  # workers a heartbeat sweep visits between two turns of the loop
# intervals without a frame sent to a worker before the sweep sends it a heartbeat
HEARTBEAT_QUIET = 1.5


class Supervisor(AdminRequests):
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
            # a memory store has no history to move ended jobs to
            history_after=None if config.store == "memory" else config.history_after,
            notify_allow=config.notify_allow,
        )
        self.token = ""
        self.user_token = ""
        self.store: Store | None = None
        self.address: Address | None = None
        self._clock = clock
        self._workers: dict[str, Connection] = {}
        self._poller = Poller()  # reads the workers' sockets while their sessions wait
        self._sessions: collections.Counter[str] = collections.Counter()  # open, by kind
        self._log_requests: dict[int, trio.MemorySendChannel[LogData]] = {}
        self._next_log_request = 1
        # set (and replaced) when a job ends or may have become stuck: `wait`s check again
        self._jobs_changed = trio.Event()
        self._wake_changed = trio.Event()
        self._drafting = trio.CapacityLimiter(1)  # large submissions, built off the loop
        self.metrics = FarmMetrics(self.core.statistics)
        self.metrics_address: Address | None = None
        self.http_address: Address | None = None
        # change notices for the HTTP API's event streams (`web_backend`)
        self.notices = ChangeNotices(Broadcaster())
        # outcomes waiting for their changes to be durable, with what to do after
        self.people = People(self.core, self._clock, config.highest_user_priority)
        self.shelf = ReleaseShelf(config.state_dir, self.core)
        self.notifier = Notifier(config.notify, lambda: str(self.address))
        self._committer = Committer(self.metrics.observe_commit)
        self.tls: ssl.SSLContext | None = None  # the TLS context, once `run` made it
        self.tls_files: CertificateFiles | None = None
        # while a standby (`standby`): who is active, for the peers that connect here
        self.standing: Standing | None = None

    # ------------------------------------------------------------------ lifetime

    def _open_store(self) -> Store:
        """Lock and open the state dir's store (refusing a bad one before anything is
        written), and restore the farm it holds."""
        if self.config.store == "memory":
            store: Store = MemoryStore()
        else:
            store = SqliteStore(self.config.state_dir)
        try:
            with paused_gc():
                self.restore(store.load())
            self.token = ensure_token(self.config.state_dir)
            if self.config.shared_user_token:  # else it opens nothing (personal tokens)
                self.user_token = ensure_token(self.config.state_dir, USER_TOKEN_FILE, 0o640)
        except BaseException:
            store.close()
            raise
        self.report_restored()
        return store

    def restore(self, snapshot: Snapshot, prebuilt: Mapping[int, Built] | None = None) -> None:
        """Take the farm a store holds into the core (a start, or a standby's takeover,
        with the jobs it built ahead)."""
        event = Restore(snapshot=snapshot, now=self._clock(), prebuilt=prebuilt or {})
        restored = self.core.handle(event)
        if restored.commands or restored.changes:
            msg = f"restoring the farm asked for commands or rows: {restored!r:.200}"
            raise InternalError(msg)

    def report_restored(self) -> None:
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

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if is_postgres_url(self.config.store):  # active or standby (`standby`)
            await serve_elected(self, task_status)
            return
        self.store = store = self._open_store()
        try:
            listeners = await self.listen()
            async with trio.open_nursery() as nursery:
                await self.start_services(nursery, store)
                nursery.start_soon(trio.serve_listeners, self.serve_stream, listeners)
                assert self.address is not None
                task_status.started(self.address)
        finally:
            store.close()

    async def listen(self, role: str = "active") -> list[trio.SocketListener]:
        """The farm's listening sockets (and TLS), their address in STATE/address."""
        listen = self.config.listen
        settings = self.config.tls
        if settings.mode != "off" and self.tls is None:
            self.tls_files = certificate_files(settings, self.config.state_dir)
            self.tls = server_context(self.tls_files)
        listeners = await open_listeners(listen)
        sockname = listeners[0].socket.getsockname()
        self.address = Address(listen.host, sockname[1])
        log_event(
            log,
            "info",
            "supervisor listening",
            address=str(self.address),
            state_dir=str(self.config.state_dir),
            version=__version__,
            tls=settings.mode,
            role=role,
        )
        if self.tls_files is not None:
            log_event(
                log,
                "info",
                "tls ready",
                pin=pin_of_file(self.tls_files.cert),
                ca=str(self.tls_files.ca) if self.tls_files.ca else "-",
                cert=str(self.tls_files.cert),
            )
        elif not is_loopback(listen.host):
            log_event(
                log,
                "warning",
                "tls off on a network address: tokens and jobs cross the network in clear",
                address=str(self.address),
            )
        # Local clients and scripts find a supervisor started on port 0 through this file;
        # written last, so whoever waits for it also finds the lines above (the key's pin)
        write_state_file(self.config.state_dir / ADDRESS_FILE, f"{self.address}\n")
        return listeners

    async def start_services(self, nursery: trio.Nursery, store: Store) -> None:
        """Everything an active supervisor runs beside its connections, in `nursery`."""
        self.archive = Archive(
            core=self.core,
            store=store,
            committer=self._committer,
            apply=self._apply,
            clock=self._clock,
            history_days=self.config.history_days,
            history_after=self.config.history_after,
        )
        self.shelf.start(nursery)
        if self.http_address is None and self.metrics_address is None:  # not as a standby
            await self.serve_http(nursery)
        nursery.start_soon(self.notices.run)
        nursery.start_soon(self._committer.run, store)
        await nursery.start(self.notifier.run)
        nursery.start_soon(self._timer)
        nursery.start_soon(self._heartbeats)
        nursery.start_soon(self.archive.prune_hourly, self.config.audit_days)
        nursery.start_soon(self._poller.run)
        if self.core.orphans:
            nursery.start_soon(self._reclaim_after_grace)

    async def serve_http(self, nursery: trio.Nursery) -> None:
        """The HTTP app (`farmd.web`) on the `http` address and, for configurations
        from before it, the `metrics` one; each address written to its state file. A
        standby serves it too (`/metrics`, the page; the API says where the active
        supervisor is) and keeps it, the same sockets, once active."""
        wanted = [
            (where, name)
            for where, name in (
                (http_address(self.config), HTTP_ADDRESS_FILE),
                (self.config.metrics, METRICS_ADDRESS_FILE),
            )
            if where is not None
        ]
        if not wanted:
            return
        mode = self.config.tls.mode
        binds = [
            HttpBind(where, https_for(where, mode, self.tls_files is not None))
            for where, _ in wanted
        ]
        app = create_app(SupervisorBackend(self, self.notices))
        bound = await nursery.start(serve_http, app, binds, self.tls_files)
        for address, (_, name) in zip(bound, wanted, strict=True):
            write_state_file(self.config.state_dir / name, f"{address}\n")
            if name == HTTP_ADDRESS_FILE:
                self.http_address = address
            else:
                self.metrics_address = address

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

    async def serve_stream(self, stream: trio.abc.Stream, peer: str = "?") -> None:
        """One connection, from its accept to its close. The listener calls it with each
        TCP stream; tests call it with an in-memory stream (`peer` names that one).

        Nothing raised while serving it leaves this scope but cancellation (trio's
        Cancelled, KeyboardInterrupt): any other exception, a bug included, costs one
        log line naming the peer and this connection, never the listener's nursery and
        with it the supervisor."""
        conn = None
        try:
            if isinstance(stream, trio.SocketStream):
                peer = peer_of(stream)
                stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection.open(stream, peer, self.config)
            with conn.cancel_scope:
                await self._run_connection(conn)
        except* Exception as group:
            errors = "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(group))
            log_event(log, "error", "connection failed", peer=peer, error=errors)
        finally:
            if conn is not None:
                conn.closed()
                self.shelf.forget(id(conn))
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _run_connection(self, conn: Connection) -> None:
        async with trio.open_nursery() as nursery:
            conn.nursery = nursery  # where its sender runs, when it has one
            try:
                await self._converse(conn, nursery)
            except ProtocolError as exc:
                log_event(
                    log, "warning", "protocol error", peer=conn.peer, code=exc.code, error=str(exc)
                )
                last_word(conn, Error(code=exc.code, message=str(exc)))
            except Goodbye as goodbye:
                log_event(log, goodbye.level, goodbye.event, peer=conn.peer, error=str(goodbye))
                last_word(conn, goodbye.error)
            except PeerGone:
                pass
            # The last word goes out after everything queued before it; then the
            # connection closes, whether or not the peer took it all.
            conn.close()
            with trio.move_on_after(GOODBYE_TIMEOUT):
                await conn.flushed()
            nursery.cancel_scope.cancel()

    @contextlib.contextmanager
    def _session_slot(self, kind: str, limit: int, what: str) -> Iterator[None]:
        """Count a connection as `kind` while it lasts; refused if `limit` are open."""
        if self._sessions[kind] >= limit:
            msg = f"too many {what} ({limit}): try again later"
            raise Goodbye("warning", "connection refused", Error(code="unavailable", message=msg))
        self._sessions[kind] += 1
        try:
            yield
        finally:
            self._sessions[kind] -= 1

    async def _converse(self, conn: Connection, nursery: trio.Nursery) -> None:
        config = self.config
        with self._session_slot("handshake", config.max_handshakes, "connections in the handshake"):
            await self._secure(conn)
            hello = await expect(conn, Hello, "first")
            worker = hello.role == Role.WORKER.value
            if hello.version != PROTOCOL_VERSION and not (
                worker and hello.version in WORKER_VERSIONS
            ):
                msg = (
                    f"protocol version {hello.version} is not supported "
                    f"(this is {PROTOCOL_VERSION})"
                )
                raise ProtocolError(msg, code="bad_version")
            if self.standing is not None:  # a standby serves nothing: where to go instead
                raise standby_goodbye(self.standing, hello.version)
            host = conn.peer.rsplit(":", 1)[0]  # the address, whatever the port
            principal = await self.people.principal(hello.token, host)
            if principal is None:  # not a personal token: the farm's, the shared, a job's
                principal = principal_for(
                    self.token, self.user_token, hello.token, config.highest_user_priority
                )
            conn.token_digest = self.people.digest_of(principal)
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
                await self._worker_session(conn)
            else:
                await self._admin_session(conn, nursery)

    async def _secure(self, conn: Connection) -> None:
        """TLS or plaintext, by the peer's first byte (`farmd.tls`): plaintext only on a
        loopback connection in `tls.mode: auto`, else one clear refusal, in plaintext."""
        if self.tls is None:
            return
        first = await conn.first_byte()
        plaintext_allowed = self.config.tls.mode == "auto" and conn.local_loopback()
        if first == HANDSHAKE_RECORD:
            await conn.start_tls(TlsSession(self.tls))
        elif first is not None and not plaintext_allowed:
            msg = (
                "this supervisor speaks TLS only: connect with TLS (`farmd trust HOST:PORT`, "
                "or --ca with the farm's CA file)"
            )
            raise ProtocolError(msg, code="tls_required")

    # ------------------------------------------------------------------ workers

    async def _worker_session(self, conn: Connection) -> None:
        """A worker from its registration to the end of its connection, when the core
        hears it lost."""
        name = await self._register_worker(conn)  # from now on, in the heartbeat sweep
        try:
            handle = functools.partial(self._on_worker_message, conn, name)
            await conn.serve(handle, self.config.idle_timeout, self._poller)
        finally:
            # unless a new session of its name replaced this one (`_register_worker`)
            if self._workers.get(name) is conn:
                del self._workers[name]
                self._registrations.pop(name, None)
                self.notices.workers_changed()
                self._apply(self.core.handle(WorkerLost(name=name, now=self._clock())))

    async def _register_worker(self, conn: Connection) -> str:
        """Take the worker's registration to the core and answer it; its name."""
        register = register_of_version(
            await expect(conn, Register, "after the hello"), conn.version
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
                WorkerJoined(
                    name=name,
                    running=register.running,
                    now=self._clock(),
                    by=conn.who,
                    **effective,
                )
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
        agent = self.workers_config.settings_for(name).agent_settings()
        if agent:  # how the agent runs frames, set centrally (docs/protocol.md 5.1)
            settings["agent"] = agent
        conn.send(Registered(name=name, settings=settings))
        self._apply(joined)
        self.notices.workers_changed()
        return name

    def _on_worker_message(self, conn: Connection, name: str, message: Message) -> None:
        match message:
            case FrameFinished():
                self._frame_finished(conn, name, message)
            case LogData():
                waiter = self._log_requests.pop(message.request_id, None)
                if waiter is not None:
                    waiter.send_nowait(message)
            case FetchRelease():
                self.shelf.fetch(conn, name, message)
            case ReleaseStatus():
                self._apply(self.core.handle(worker_releases(name, message, self._clock(), conn)))
            case HostLoad() if conn.version >= LOAD_VERSION:
                load = WorkerLoad(
                    name=name,
                    cpu=message.cpu,
                    memory_used=message.memory_used,
                    memory_total=message.memory_total,
                    load_average=message.load_average,
                    now=self._clock(),
                    by=conn.who,
                )
                self._apply(self.core.handle(load))
            case Heartbeat():
                pass
            case _:
                msg = f"a worker of version {conn.version} may not send {message.TYPE!r}"
                raise ProtocolError(msg, code="bad_message")

    def _frame_finished(self, conn: Connection, name: str, message: FrameFinished) -> None:
        ended = FrameEnded(
            worker=name,
            job_id=message.job_id,
            frame=message.frame,
            attempt=message.attempt,
            exit_code=message.exit_code,
            error=message.error,
            now=self._clock(),
            by=conn.who,
        )
        ack = ResultAck(job_id=message.job_id, frame=message.frame, attempt=message.attempt)
        # the worker forgets a result once acknowledged: only when durable
        self._apply(self.core.handle(ended), after=functools.partial(conn.send, ack))

    def _may_replace(self, old: Connection, register: Register) -> bool:
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

    async def _heartbeats(self) -> None:
        """Every interval, one pass over the registered workers: a worker silent for
        more than `heartbeat_timeout` is aborted (its session's end reports it lost),
        and one the supervisor has sent nothing for more than one and a half intervals
        is sent a heartbeat. A worker is thus lost between the timeout and the timeout
        plus an interval after it fell silent, and hears from the supervisor at least
        every two intervals (a pass and a half), its registration included: farmd's
        agent, of every protocol version, waits three (docs/protocol.md, 5.7). Every
        other pass, not every pass: at 10,000 idle workers a heartbeat written is
        about 30 us of the supervisor's CPU on loopback, 6 % of a core at 2,000 a
        second."""
        interval = self.config.heartbeat_interval
        timeout = self.config.heartbeat_timeout
        quiet = HEARTBEAT_QUIET * interval
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for count, (name, conn) in enumerate(list(self._workers.items()), 1):
                if conn.closing:  # aborted or ending: its session reports it lost
                    continue
                if now - conn.last_heard > timeout:
                    log_event(log, "warning", "heartbeat timeout", worker=name, timeout=timeout)
                    conn.abort()  # the session ends (paused or not): the worker is lost
                elif now - conn.last_sent > quiet:
                    conn.send_frame(HEARTBEAT_FRAME)  # encoded once for all
                if count % HEARTBEAT_BATCH == 0:
                    # a large farm's pass gives the loop a turn now and then, so a frame
                    # to dispatch does not wait for all of it
                    await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ core plumbing

    def _apply(self, outcome: Outcome, after: Callable[[], None] | None = None) -> None:
        """Carry out an outcome's commands, then `after`, once its changes are durable.
        Outcomes take effect in the order they were handled."""
        effects: list[Callable[[], None]] = [
            functools.partial(self._execute, outcome.commands, trio.current_time())
        ]
        if self.notices.broadcaster.subscribers:  # the dashboards hear what changed
            effects.append(functools.partial(self.notices.note, outcome))
        if after is not None:
            effects.append(after)
        self._committer.after_durable(outcome.changes, effects)

    def _execute(self, commands: tuple[Command, ...], decided: float) -> None:
        """Carry out an outcome's commands; `decided`: when the core handled its event,
        for the pick-to-start latency."""
        for command in commands:
            match command:
                case RunOnWorker():
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
                    self._send_to_worker(command.worker, worker_message(command, self.token))
                case KillOnWorker() | SuspendOnWorker() | ResumeOnWorker():
                    self._send_to_worker(command.worker, worker_message(command, self.token))
                case WakeAt():
                    self._wake_changed.set()
                case JobEnded() | JobHeld():
                    self._jobs_changed.set()
                    self._jobs_changed = trio.Event()
                    if isinstance(command, JobEnded):
                        job = self.core.jobs.get(command.job_id)
                        if job is not None:
                            self.notifier.job_ended(job.summary(), job.notify)
                case Note():
                    log_event(log, command.level, command.event, **command.fields)
                case TellReleases():
                    conn = self._workers.get(command.worker)
                    if conn is not None and conn.version >= RELEASE_VERSION:
                        conn.send(Releases(releases=command.releases))
                case DropBundle():
                    self.shelf.drop(command.digest)

    def _send_to_worker(self, name: str, message: Message) -> None:
        conn = self._workers.get(name)
        if conn is not None:
            conn.send(message)


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """The exceptions of a (nested) group."""
    out: list[Exception] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


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
