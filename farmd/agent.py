"""`farmd worker`: the agent on a render host.

Frames outlive connections. The agent's nursery owns every running frame; a session
with the supervisor is a child that may end (supervisor restart, network trouble) and
be opened again with backoff, while the frames keep running. When a session opens, the
agent registers with the frames it still holds: those running, and those finished whose
result the supervisor has not acknowledged yet. It then sends those results again. The
supervisor's attempt fencing makes a repeated result harmless, so a frame's result is
delivered at least once and applied exactly once.

Each frame runs in a session of its own (its own process group), with stdout and stderr
in a per-attempt log file that the supervisor can fetch. A kill sends SIGTERM to the group
(and SIGCONT, so a suspended frame can act on it), then SIGKILL after a grace period. A
suspend sends SIGSTOP and pauses the attempt's time limit; a resume sends SIGCONT and lets
the rest of the limit run.

Frames outlive connections, but not the agent: each frame's command runs under a small
shepherd process (farmd/shepherd.py), the leader of its group, forked by the agent's one
long-lived launcher process (farmd/launcher.py); the launcher dies with the agent and each
shepherd kills its whole group when the launcher dies (Linux's parent-death signal). A
crashed or OOM-killed agent thus leaves no frame running beside the attempt the supervisor
hands out again. The shepherd passes the command's exit status through unchanged. If the
launcher alone dies, its frames are reported lost (killed by signal 9, with why) and the
next frame starts a new launcher.

A frame's environment is documented, not inherited whole: the variables of the agent's
own environment that its allow-list names (`env_passthrough`: PATH, HOME, the locale
and a few more by default; `farmd worker --pass-env NAME` adds names or patterns such as
`OCIO` or `ARNOLD_*`), then what the supervisor sends: the job's own variables (`farmd
submit --env`) and the `FARMD_*` (how to reach it: FARMD_SUPERVISOR, the address this
agent uses, in FARMD_TOKEN the job token, so a frame can submit sub-jobs, and FARMD_CA
or FARMD_PIN if the agent trusts the supervisor over TLS by one). A secret
in the agent's environment (its own token, a `MY_SECRET`) reaches no frame.

With `run_as: owner` (`farmd worker --run-as owner`, an agent running as root) each frame
runs as the OS account of its job's owner (`FARMD_OWNER`, mapped by `user_map`), never as
root: the shepherd takes that account's groups, group and user, and its home as the
working directory, before it starts the command (`frame_account`, `shepherd._become`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import math
import os
import platform
import pwd
import random
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final, TypeVar

import attrs
import trio

from farmd import shepherd
from farmd.agent_releases import AgentReleases
from farmd.codec import NEED_DATA, Codec
from farmd.config import Address, SupervisorList
from farmd.errors import (
    FarmdError,
    ProtocolError,
    UserError,
)
from farmd.hostload import LoadSampler
from farmd.launcher import Child, Launcher
from farmd.logs import log_event
from farmd.protocol import (
    PROTOCOL_VERSION,
    Error,
    FetchLog,
    FrameFinished,
    Heartbeat,
    Hello,
    KillFrame,
    LogData,
    Message,
    Register,
    Registered,
    ResultAck,
    ResumeFrame,
    Role,
    RunFrame,
    Standby,
    SuspendFrame,
    Welcome,
)
from farmd.protocol_load import LOAD_EVERY, LOAD_VERSION
from farmd.protocol_releases import ReleaseData, Releases
from farmd.tls import TlsError, Trust, handshake_failure
from farmd.worker_settings import check_env_passthrough, check_run_as, check_user_map

log = logging.getLogger("farmd.agent")

_M = TypeVar("_M", bound=Message)

KILL_GRACE = 5.0
HANDSHAKE_TIMEOUT = 10.0
SILENCE_FACTOR = 3  # heartbeat intervals without a word before the supervisor is presumed gone
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
# between two addresses of the supervisor list (a failover): a breath, not a backoff
SWITCH_PAUSE = 0.05
# A pass over the list that met a standby is a failover in progress (the standby may be
# taking over right now): its backoff stops growing here, so that the worker is back
# within about a second of the new active supervisor instead of up to BACKOFF_MAX.
STANDBY_BACKOFF_MAX = 1.0
CANNOT_START = 126  # the exit status of a frame whose shepherd could not be started
FATAL_CODES = frozenset(
    {"bad_token", "bad_version", "bad_cluster", "bad_restrictions", "bad_job", "name_in_use"}
)


def backoff(delay: float, *, met_standby: bool) -> tuple[float, float]:
    """The pause after a pass over the supervisor list without a session, and the delay
    for the pass after: doubling up to BACKOFF_MAX, up to STANDBY_BACKOFF_MAX while a
    standby answers (jitter is the caller's)."""
    ceiling = STANDBY_BACKOFF_MAX if met_standby else BACKOFF_MAX
    pause = min(delay, ceiling)
    return pause, min(pause * 2, ceiling)


# What a frame gets of the agent's environment unless told otherwise: where programs
# are, whose home, the locale and the time zone, the temporary directory.
DEFAULT_ENV_PASSTHROUGH: Final = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
)


def passed_through(environ: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    """The variables of `environ` that `allowed` names (exactly, or by fnmatch pattern);
    never the agent's own FARMD_* (its token among them)."""
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith("FARMD_")
        and any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)
    }


@attrs.frozen(kw_only=True)
class AgentConfig:
    supervisor: Address
    # the whole supervisor list (`--supervisor a:7531,b:7531`), `supervisor` first: the
    # agent tries each in turn and follows a standby to the active one; () is `supervisor`
    supervisors: tuple[Address, ...] = ()
    token: str
    name: str
    cluster: str = "/"
    restrictions: str = ""
    slots: int = 1
    log_dir: Path
    types: tuple[str, ...] = ()  # job types it runs (`--type blender`)
    properties: dict[str, object] = attrs.field(factory=dict)  # `--property key=value`
    resources: dict[str, float] = attrs.field(factory=dict)  # `--resource gpu=2`
    # the agent's environment variables a frame gets (names, or fnmatch patterns)
    env_passthrough: tuple[str, ...] = attrs.field(default=DEFAULT_ENV_PASSTHROUGH)
    # "owner": each frame runs as the OS account of its job's owner (the agent is root)
    run_as: str = "agent"
    user_map: dict[str, str] = attrs.field(factory=dict)  # owner -> account; else the same
    # how it trusts the supervisor (`farmd.tls.trust_for`); None: plaintext (loopback)
    trust: Trust | None = None
    # where releases are unpacked (`farmd.releases.cache`); None: beside log_dir
    release_dir: Path | None = None


def frame_account(owner: str, user_map: Mapping[str, str]) -> tuple[int, int, list[int], str]:
    """The account a frame of `owner` runs as (`run_as: owner`): uid, gid, groups and
    home; refused (UserError, naming the owner and the account) for none, or root."""
    account = user_map.get(owner, owner)
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        msg = f"the job's owner {owner!r} has no account {account!r} on this host"
        raise UserError(msg) from None
    if entry.pw_uid == 0:
        msg = f"the job's owner {owner!r} maps to {account!r}, which is root: never as root"
        raise UserError(msg)
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(account, entry.pw_gid), entry.pw_dir


def host_memory() -> int:
    """The host's physical memory in bytes (0 if the system will not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def host_facts() -> dict[str, object]:
    """What every worker reports of its host, for requirements: os, arch, cpus and
    hostname. Its memory is the `memory` counter (`host.memory` reads it), not a fact:
    a property may not have one of the names farmd fills in (`worker_settings`)."""
    return {
        "os": platform.system().lower(),
        "arch": platform.machine().lower(),
        "cpus": os.cpu_count() or 1,
        "hostname": socket.gethostname(),
    }


@attrs.define
class _Attempt:
    message: RunFrame
    process: Child | None = None
    result: FrameFinished | None = None  # set when it ended; kept until acknowledged
    kill_requested: bool = False
    # the time limit: its deadline moves to infinity while the process is stopped
    limit: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    left: float | None = None  # seconds of the limit left, while suspended


class _SessionLost(Exception):
    pass


class _Redirected(_SessionLost):
    """A standby answered: `active` is where it says the active supervisor is."""

    def __init__(self, message: str, active: str) -> None:
        super().__init__(message)
        self.active = active


class _Link:
    """A session's stream to the supervisor, in messages. Whatever breaks it ends the
    session (`_SessionLost`, and the agent connects again), except the supervisor's
    refusal of this worker (`FATAL_CODES`), which no reconnection would change."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.codec = Codec()

    async def receive(self) -> Message:
        while True:
            try:
                message = self.codec.next_message()
            except ProtocolError as exc:
                raise _SessionLost(f"protocol error from the supervisor: {exc}") from None
            if message is not NEED_DATA:
                assert isinstance(message, Message)
                if isinstance(message, Standby):
                    raise _Redirected(message.message, message.active)
                if isinstance(message, Error):
                    if message.code in FATAL_CODES:
                        msg = f"the supervisor refused this worker: {message.message}"
                        raise UserError(msg)
                    raise _SessionLost(f"{message.code}: {message.message}")
                return message
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _SessionLost(str(exc)) from None
            if not data:
                raise _SessionLost("closed by the supervisor")
            self.codec.receive_data(data)

    async def expect(self, kind: type[_M]) -> _M:
        """The next message, which the handshake requires to be a `kind`."""
        message = await self.receive()
        if not isinstance(message, kind):
            raise _SessionLost(f"expected {kind.TYPE!r}, got {message.TYPE!r}")
        return message

    async def send(self, *messages: Message) -> None:
        try:
            await self.stream.send_all(b"".join(self.codec.send(m) for m in messages))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _SessionLost(str(exc)) from None

    async def send_from(self, inbox: trio.MemoryReceiveChannel[Message]) -> None:
        """Send what the session queues, all that is queued in one write."""
        async for message in inbox:
            batch = [message]
            while True:
                try:
                    batch.append(inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            await self.send(*batch)


async def _send_heartbeats(outbox: trio.MemorySendChannel[Message], interval: float) -> None:
    """A heartbeat every `interval`, so the supervisor hears this worker even when idle."""
    while True:
        await trio.sleep(interval)
        outbox.send_nowait(Heartbeat())


async def _send_load(
    outbox: trio.MemorySendChannel[Message], interval: float, sampler: LoadSampler
) -> None:
    """The host's load every `LOAD_EVERY` heartbeat intervals (docs/protocol.md 5.7); the
    first one interval after the agent's first sample, since CPU use takes two. A host
    without /proc sends none."""
    while True:
        load = sampler.sample()
        if load is not None:
            outbox.send_nowait(load)
        await trio.sleep(interval * LOAD_EVERY if load is not None else interval)


class Agent:
    """Runs frames for one supervisor; reconnects when the connection is lost."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        connect: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    ) -> None:
        self.config = config
        self._own = config  # as its flags made it; the farm's configuration may add to it
        # how a session's stream is opened: TCP to `config.supervisor`, unless a test
        # hands the agent an in-memory stream to an in-process supervisor
        self._connect = connect if connect is not None else self._open_tcp
        self.targets = SupervisorList(config.supervisors or (config.supervisor,))
        self.registered = trio.Event()  # set at each successful registration
        self._attempts: dict[tuple[int, int, int], _Attempt] = {}
        self._outbox: trio.MemorySendChannel[Message] | None = None
        self._log_limit = 1024 * 1024
        self._launcher: Launcher | None = None  # while `run` runs
        # The agent's environment, which every frame's starts from: copied from
        # os.environ at the first frame (a copy per frame took a tenth of its CPU here).
        self._environ: dict[str, str] | None = None
        # Sent in every registration: a new session of this process may replace its own
        # old one that the supervisor still holds open, and no other agent's (5.1).
        self.instance = secrets.token_hex(8)
        release_dir = (
            config.release_dir or config.log_dir.parent / f"{config.log_dir.name}.releases"
        )
        self.releases = AgentReleases(release_dir, lambda: self._outbox)
        # kept across sessions: each report's CPU use covers the time since the last
        self._load = LoadSampler()

    @property
    def running(self) -> list[tuple[int, int, int]]:
        """(job, frame, attempt) of every frame not yet acknowledged as finished."""
        return sorted(self._attempts)

    @property
    def launcher_pid(self) -> int | None:
        """The pid of this agent's frame launcher process, while one runs."""
        return self._launcher.pid if self._launcher is not None else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        if not shepherd.LINKED:
            log_event(
                log,
                "warning",
                "frames will outlive this agent if it is killed",
                reason=f"no parent-death signal on {sys.platform} (Linux only)",
            )
        async with trio.open_nursery() as frames:
            # its reader tasks run in `frames`, shielded until `close`: a stopping agent
            # still hears how its frames ended
            self._launcher = Launcher(frames)
            task_status.started()
            try:
                await self._connect_forever(frames)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(KILL_GRACE + 1):
                    await self._stop_everything()
                self._launcher.close()  # it exits; a frame still running dies with it

    async def _connect_forever(self, frames: trio.Nursery) -> None:
        """Connect, serve the session, and again when it ends: the next supervisor of the
        list after a failure, the active one when a standby names it; once every address
        has been tried without a session, back off (doubling up to BACKOFF_MAX, or up to
        STANDBY_BACKOFF_MAX when a standby answered in that pass)."""
        delay = BACKOFF_FIRST
        tries = 0  # attempts since the last session or the last backoff
        met_standby = False  # a standby answered since the last backoff
        while True:
            address = self.targets.current
            moved = False  # a standby named the active supervisor: go there next
            try:
                stream = await self._connect()
            except (OSError, TlsError) as exc:
                log_event(
                    log,
                    "info",
                    "supervisor unreachable",
                    address=str(address),
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
            else:
                try:
                    await self._session(stream, frames)
                except* _Redirected as group:
                    first = group.exceptions[0]
                    active = first.active if isinstance(first, _Redirected) else ""
                    moved = self.targets.follow(active)
                    met_standby = True
                    log_event(
                        log,
                        "info",
                        "supervisor is a standby",
                        address=str(address),
                        active=active or "-",
                    )
                except* _SessionLost as group:
                    log_event(
                        log,
                        "warning",
                        "connection lost",
                        address=str(address),
                        reason="; ".join(str(e) for e in group.exceptions) or "closed",
                    )
                    if self.registered.is_set():
                        delay, tries = BACKOFF_FIRST, 0
                finally:
                    self._outbox = None
                    self.registered = trio.Event()
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
            if not moved:
                self.targets.advance()
            tries += 1
            if tries <= len(self.targets):  # the rest of the list first, at once
                await trio.sleep(SWITCH_PAUSE)
                continue
            tries = 0
            pause, delay = backoff(delay, met_standby=met_standby)
            await trio.sleep(pause * random.uniform(0.8, 1.2))
            met_standby = False

    async def _open_tcp(self) -> trio.abc.Stream:
        address = self.targets.current
        stream = await trio.open_tcp_stream(address.host, address.port)
        try:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset already: unreachable, tried again after the backoff
            await stream.aclose()
            raise
        trust = self.config.trust
        if trust is None:
            return stream
        secure = trio.SSLStream(stream, trust.context(), server_hostname=address.host)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await secure.do_handshake()
            trust.verify(secure.getpeercert(binary_form=True), address)
        except (trio.BrokenResourceError, trio.TooSlowError) as exc:
            await trio.aclose_forcefully(secure)
            raise handshake_failure(exc.__cause__ or exc, address) from None
        except TlsError:
            await trio.aclose_forcefully(secure)
            raise
        return secure

    # ------------------------------------------------------------------ a session

    async def _session(self, stream: trio.abc.Stream, frames: trio.Nursery) -> None:
        link = _Link(stream)
        welcome, registered = await self._handshake(link)
        interval = welcome.heartbeat_interval
        link.codec.max_frame_bytes = welcome.max_frame_bytes
        # a log goes back in one frame; undecodable bytes may triple when replaced
        self._log_limit = max(4096, welcome.max_frame_bytes // 4 - 4096)
        self._log_registration(registered)
        self._apply_central(registered.settings.get("agent"))

        outbox, inbox = trio.open_memory_channel[Message](float("inf"))
        # results not yet acknowledged go again, before anything else: the supervisor
        # may not have them (see the module docs)
        for attempt in self._attempts.values():
            if attempt.result is not None:
                outbox.send_nowait(attempt.result)
        self._outbox = outbox
        self.registered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.send_from, inbox)
            nursery.start_soon(_send_heartbeats, outbox, interval)
            if welcome.version >= LOAD_VERSION:
                nursery.start_soon(_send_load, outbox, interval, self._load)
            await self._follow_supervisor(link, interval, frames, outbox)

    async def _handshake(self, link: _Link) -> tuple[Welcome, Registered]:
        """hello, welcome, register, registered: within HANDSHAKE_TIMEOUT in all."""
        config = self.config
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            await link.send(
                Hello(
                    version=PROTOCOL_VERSION,
                    role=Role.WORKER.value,
                    token=config.token,
                    name=config.name,
                )
            )
            welcome = await link.expect(Welcome)
            await link.send(self._registration())
            registered = await link.expect(Registered)
            return welcome, registered
        # reached only when the timeout cut the handshake short
        raise _SessionLost("no answer to the handshake in time")

    def _registration(self) -> Register:
        """This worker as it registers now, with the frames it still holds."""
        config = self.config
        return Register(
            name=config.name,
            cluster=config.cluster,
            restrictions=config.restrictions,
            slots=config.slots,
            types=config.types,
            # its own --property values override what it found
            properties={**host_facts(), **config.properties},
            resources={"memory": host_memory(), **config.resources},
            running=self.running,
            instance=self.instance,
        )

    def _apply_central(self, central: object) -> None:
        """How to run frames, as the farm's `workers:` configuration sets it for this
        host (`registered.settings.agent`): `run_as` and `env_passthrough` replace the
        flags', `users` merges over `--user-map`. What it does not set stays the flags'
        (`_own`), so a configuration that no longer sets a key gives it back to them."""
        own = self._own
        agent = central if isinstance(central, dict) else {}
        try:
            run_as = check_run_as(agent["run_as"]) if "run_as" in agent else own.run_as
            users = {**own.user_map, **check_user_map(agent.get("users", {}))}
            passthrough = (
                check_env_passthrough(agent["env_passthrough"])
                if "env_passthrough" in agent
                else own.env_passthrough
            )
        except UserError as exc:  # from a supervisor; keep what the flags say
            log_event(log, "warning", "central settings refused", error=str(exc))
            return
        config = attrs.evolve(own, run_as=run_as, user_map=users, env_passthrough=passthrough)
        if config != self.config:
            self.config = config
            self._environ = None  # built again from the new allow-list at the next frame
            log_event(
                log,
                "info",
                "frame settings",
                run_as=run_as,
                users=len(users),
                env_passthrough=list(passthrough),
            )

    def _log_registration(self, registered: Registered) -> None:
        config = self.config
        # what the supervisor made of it: the central configuration may set any of these
        settings = registered.settings
        log_event(
            log,
            "info",
            "registered",
            supervisor=str(self.targets.current),
            worker=config.name,
            cluster=settings.get("cluster", config.cluster),
            slots=settings.get("slots", config.slots),
            types=settings.get("types", list(config.types)),
            still_running=len(self._attempts),
        )

    async def _follow_supervisor(
        self,
        link: _Link,
        interval: float,
        frames: trio.Nursery,
        outbox: trio.MemorySendChannel[Message],
    ) -> None:
        """Act on the supervisor's messages until it goes silent or the session ends."""
        while True:
            with trio.move_on_after(interval * SILENCE_FACTOR) as silence:
                message = await link.receive()
            if silence.cancelled_caught:
                raise _SessionLost("the supervisor went silent")
            self._on_message(message, frames, outbox)

    def _on_message(
        self, message: Message, frames: trio.Nursery, outbox: trio.MemorySendChannel[Message]
    ) -> None:
        match message:
            case RunFrame():
                key = (message.job_id, message.frame, message.attempt)
                if key not in self._attempts:
                    self._attempts[key] = _Attempt(message)
                    frames.start_soon(self._run_frame, key)
            case KillFrame():
                key = (message.job_id, message.frame, message.attempt)
                attempt = self._attempts.get(key)
                if attempt is not None and attempt.result is None:
                    attempt.kill_requested = True
                    frames.start_soon(self._kill, attempt)
            case SuspendFrame() | ResumeFrame():
                key = (message.job_id, message.frame, message.attempt)
                attempt = self._attempts.get(key)
                if attempt is not None and attempt.result is None:
                    self._pause(attempt, isinstance(message, SuspendFrame))
            case ResultAck():
                key = (message.job_id, message.frame, message.attempt)
                attempt = self._attempts.get(key)
                if attempt is not None and attempt.result is not None:
                    del self._attempts[key]
            case FetchLog():
                outbox.send_nowait(self._read_log(message))
            case Releases():
                running = [a.message for a in self._attempts.values()]
                self.releases.told(message, frames, running)
            case ReleaseData():
                self.releases.answered(message)
            case Heartbeat():
                pass
            case _:
                log_event(log, "warning", "unexpected message", type=message.TYPE)

    # ------------------------------------------------------------------ frames

    def _log_path(self, job_id: int, frame: int, attempt: int) -> Path:
        return self.config.log_dir / str(job_id) / f"{frame}.{attempt}.log"

    async def _run_frame(self, key: tuple[int, int, int]) -> None:
        attempt = self._attempts[key]
        message = attempt.message
        path = self._log_path(*key)
        if self._environ is None:
            self._environ = passed_through(os.environ, self.config.env_passthrough)
        env = {**self._environ, "FARMD_SUPERVISOR": str(self.targets), **message.env}
        trust = self.config.trust
        if trust is not None:  # a frame's own farmd commands trust the supervisor as this does
            if trust.ca is not None:
                env["FARMD_CA"] = str(trust.ca.resolve())
            elif trust.pin is not None:
                env["FARMD_PIN"] = trust.pin
        error, user = "", None
        try:
            argv = await self.releases.argv(message)
        except FarmdError as exc:
            error, argv = str(exc), list(message.argv)
        log_event(
            log,
            "info",
            "frame started",
            job=message.job_id,
            frame=message.frame,
            attempt=message.attempt,
            argv=argv,
        )
        if error:
            pass
        elif self.config.run_as == "owner" and os.geteuid() != 0:
            # set by the farm's configuration for an agent not started as root: the frame
            # fails rather than run as the agent's own account
            error = "run_as owner needs the agent to run as root; this one does not"
        elif self.config.run_as == "owner":
            owner = message.env.get("FARMD_OWNER", "")
            try:
                user = frame_account(owner, self.config.user_map)
            except UserError as exc:
                error = str(exc)
            else:
                name = self.config.user_map.get(owner, owner)
                env.update(HOME=user[3], USER=name, LOGNAME=name)
        with os.fdopen(_open_log(path), "ab") as output:
            assert self._launcher is not None
            if error:
                process = None
            else:
                if user is not None:  # its log is its own to read
                    os.fchown(output.fileno(), user[0], user[1])
                process, error = await self._launcher.start(argv, env, output, user)
            if error:
                output.write(f"farmd: {error}\n".encode())
                if process is not None:
                    exit_code = await process.wait()
                elif error.startswith("lost:"):  # the launcher ended as the frame started
                    exit_code = -signal.SIGKILL
                else:
                    exit_code = CANNOT_START
            else:
                assert process is not None
                attempt.process = process
                if attempt.kill_requested:  # the kill came while it was starting
                    await self._kill(attempt)
                timer = attempt.limit
                if attempt.left is None:
                    timer.deadline = trio.current_time() + (message.time_limit or math.inf)
                else:  # suspended while it was starting: stop it now
                    attempt.left = message.time_limit or math.inf
                    _signal_group(process, signal.SIGSTOP)
                with timer:
                    exit_code = await process.wait()
                if process.lost:
                    error = process.lost
                    output.write(f"farmd: {error}\n".encode())
                elif timer.cancelled_caught:
                    error = f"time limit of {message.time_limit:g} s exceeded"
                    output.write(f"farmd: {error}: killed\n".encode())
                    await self._kill(attempt)
                    exit_code = await process.wait()
        result = FrameFinished(
            job_id=message.job_id,
            frame=message.frame,
            attempt=message.attempt,
            exit_code=exit_code,
            error=error,
        )
        attempt.result = result
        log_event(
            log,
            "info",
            "frame finished",
            job=message.job_id,
            frame=message.frame,
            attempt=message.attempt,
            exit_code=exit_code,
            killed=attempt.kill_requested,
        )
        if self._outbox is not None:
            self._outbox.send_nowait(result)

    def _pause(self, attempt: _Attempt, stop: bool) -> None:
        """SIGSTOP (and pause the time limit) or SIGCONT (and let it run again)."""
        now = trio.current_time()
        if stop and attempt.left is None:
            attempt.left = attempt.limit.deadline - now
            attempt.limit.deadline = math.inf
            if attempt.process is not None:
                _signal_group(attempt.process, signal.SIGSTOP)
        elif not stop and attempt.left is not None:
            if attempt.process is not None:
                _signal_group(attempt.process, signal.SIGCONT)
            attempt.limit.deadline = now + attempt.left
            attempt.left = None
        log_event(
            log,
            "info",
            "frame suspended" if stop else "frame resumed",
            job=attempt.message.job_id,
            frame=attempt.message.frame,
            attempt=attempt.message.attempt,
        )

    async def _kill(self, attempt: _Attempt) -> None:
        process = attempt.process
        if process is None or process.returncode is not None:
            return
        _signal_group(process, signal.SIGTERM)
        _signal_group(process, signal.SIGCONT)  # a stopped process must run to hear it
        with trio.move_on_after(KILL_GRACE):
            await process.wait()
            return
        _signal_group(process, signal.SIGKILL)

    async def _stop_everything(self) -> None:
        """The agent is stopping: end its frames rather than leave orphans."""
        async with trio.open_nursery() as nursery:
            for attempt in self._attempts.values():
                if attempt.result is None:
                    nursery.start_soon(self._kill, attempt)

    def _read_log(self, request: FetchLog) -> LogData:
        """The end of a frame's log, or (`offset` >= 0) what follows that byte, at most
        `_log_limit` bytes of it; with the log's size, for the next ask."""
        path = self._log_path(request.job_id, request.frame, request.attempt)
        limit = self._log_limit
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                start = max(0, size - limit) if request.offset < 0 else min(request.offset, size)
                handle.seek(start)
                data = handle.read(limit)
        except OSError:
            return LogData(request_id=request.request_id, found=False)
        # a character cut at the end of the read is left for the next ask
        if (request.offset >= 0 and start + len(data) < size) or len(data) == limit:
            data = _whole_characters(data)
        text = data.decode("utf-8", errors="replace")
        if request.offset < 0 and size > limit:
            text = f"[farmd: showing the last {limit} of {size} bytes]\n" + text
        next_offset = start + len(data) if request.offset >= 0 else size
        return LogData(request_id=request.request_id, found=True, text=text, size=next_offset)


def _whole_characters(data: bytes) -> bytes:
    """`data` without a UTF-8 character its end cuts in two (at most 3 bytes)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data  # ASCII: whole
        if byte >= 0xC0:  # a lead byte: whole if its sequence fits
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def _open_log(path: Path) -> int:
    """Open (create) a frame's log for appending; its job's directory is made by the
    first frame of the job that finds it missing, not looked for by every frame."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o600)


def _signal_group(process: Child, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(process.pid, signum)


async def run_agent(config: AgentConfig) -> None:
    """Run the agent until SIGTERM or SIGINT; its frames are stopped on the way out."""
    agent = Agent(config)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            async for signum in signals:
                log_event(log, "info", "shutting down", signal=signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
