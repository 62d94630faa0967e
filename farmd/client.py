"""`farmd.client`: talk to a supervisor from plain synchronous Python.

Pipelines submit from inside Maya, Nuke, Houdini and Blender, whose Python runs no event
loop of ours, so this client is blocking sockets and the sans-IO codec, nothing more::

    from farmd.client import Client

    with Client() as farm:  # FARMD_SUPERVISOR / FARMD_TOKEN, or the local defaults
        job_id = farm.submit(["blender", "-b", "shot.blend", "-f", "{frame}"],
                             frames="1-100", cluster="/show1/lighting", priority=50)
        farm.wait([job_id])

Every method raises a `farmd.errors.FarmdError` subclass when the supervisor refuses
(for example `UnknownJobError`), and `ConnectionLostError` when it cannot be reached.
A `Client` is not thread-safe; use one per thread.

Lost connections: a submission carries an idempotency key (made up unless given), so
when its connection drops or its answer does not come in time it is sent again with
the same key, a few times with a growing pause, and a repeat gets the job the first
one made: a lost reply never submits twice. A read is sent again once on a new
connection when the one it used turns out to be closed (the supervisor ends idle
sessions). A control (`kill`, `modify`...) is never sent twice: a connection found
closed before it is sent is replaced, but one lost after it was sent raises
`ConnectionLostError` saying that it may have been applied.
"""

from __future__ import annotations

import math
import os
import secrets
import select
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from farmd.client_releases import ReleaseCalls
from farmd.codec import NEED_DATA, Codec
from farmd.config import (
    DEFAULT_LISTEN,
    Address,
    SupervisorList,
    default_state_dir,
    parse_supervisors,
)
from farmd.errors import (
    ConnectionLostError,
    FarmdError,
    ProtocolError,
    SessionIdleError,
    UserError,
    error_for_code,
)
from farmd.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    AddUser,
    AddWorkerToken,
    ControlRequest,
    Error,
    Explain,
    GetJob,
    GetLog,
    Hello,
    Kill,
    ListAudit,
    ListClusters,
    ListJobs,
    ListResources,
    ListUsers,
    ListWorkers,
    ListWorkerTokens,
    Lock,
    Message,
    Modify,
    ModifyUser,
    Order,
    PruneHistory,
    Refused,
    Reload,
    Remove,
    Reply,
    Request,
    RevokeUser,
    RevokeWorkerToken,
    Role,
    SetResource,
    Standby,
    Status,
    Submit,
    SubmitBatch,
    Unlock,
    Wait,
    Welcome,
)
from farmd.tls import Trust, handshake_failure, trust_for

DEFAULT_TIMEOUT = 30.0
# a submission is sent at most this many times (same key): about 10 s in all, what a
# standby supervisor may take to take over (`farmd.supervisor.standby`)
SUBMIT_ATTEMPTS = 8
MAX_RETRY_PAUSE = 2.0
RETRY_PAUSE = 0.25  # seconds before the second attempt; doubled before each next one

# Requests that change nothing: sent again, once, when their connection was found closed.
_READS = (
    Status,
    ListJobs,
    GetJob,
    ListWorkers,
    ListClusters,
    Order,
    Explain,
    ListResources,
    GetLog,
    Wait,
)


def new_request_key() -> str:
    """A fresh idempotency key for a submission (docs/protocol.md 6.2)."""
    return f"farmd-{secrets.token_hex(16)}"


def resolve_supervisors(supervisor: str | Address | None = None) -> tuple[Address, ...]:
    """`supervisor` (an address or a list, `a:7531,b:7531`), else $FARMD_SUPERVISOR, else
    the address a supervisor using the local default state dir wrote there, else
    127.0.0.1:7531: the supervisors to try, in order."""
    if isinstance(supervisor, Address):
        return (supervisor,)
    text = supervisor or os.environ.get("FARMD_SUPERVISOR")
    if not text:
        try:
            text = (default_state_dir() / "address").read_text().strip()
        except OSError:
            return (DEFAULT_LISTEN,)
    return parse_supervisors(text)


def resolve_address(supervisor: str | Address | None = None) -> Address:
    """The first of `resolve_supervisors`."""
    return resolve_supervisors(supervisor)[0]


def personal_token_file() -> Path:
    """Where `farmd login` keeps a person's token: $XDG_CONFIG_HOME/farmd/token, else
    ~/.config/farmd/token."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".config") / "farmd" / "token"


def resolve_token(
    token: str | None = None, token_file: str | os.PathLike[str] | None = None
) -> str:
    """`token`, else `token_file`, else $FARMD_TOKEN, else the personal token `farmd
    login` wrote (`personal_token_file`), else the local default state dir's."""
    if token:
        return token
    if not token_file and os.environ.get("FARMD_TOKEN", "").strip():
        return os.environ["FARMD_TOKEN"].strip()
    personal = personal_token_file()
    if not token_file and personal.is_file():
        token_file = personal
    path = Path(token_file) if token_file else default_state_dir() / "token"
    try:
        text = path.read_text().strip()
    except OSError as exc:
        msg = f"no token: cannot read {path} ({exc.strerror}); set FARMD_TOKEN or pass --token-file"
        raise UserError(msg) from None
    if not text:
        msg = f"no token: {path} is empty"
        raise UserError(msg)
    return text


class _StandbyAnswer(Exception):
    """A standby answered the hello; `active` is where it says the active one is."""

    def __init__(self, message: str, active: str) -> None:
        super().__init__(message)
        self.active = active


class Client(ReleaseCalls):
    """A blocking connection to a supervisor, as an admin (see module docs)."""

    def __init__(
        self,
        supervisor: str | Address | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ca: str | os.PathLike[str] | None = None,
        pin: str | None = None,
    ) -> None:
        # the supervisors to try (`a:7531,b:7531`): the active one, wherever it is now
        self.targets = SupervisorList(resolve_supervisors(supervisor))
        self._token = resolve_token(token, token_file)
        self.timeout = timeout
        self._ca, self._pin = ca, pin  # how to trust the supervisor (`farmd.tls.trust_for`)
        self._codec = Codec()
        self._next_id = 1
        self._socket: socket.socket | None = None
        self._sent = False  # the last request was sent whole (it may have been applied)
        self._frame_bytes = DEFAULT_MAX_FRAME_BYTES  # the supervisor's, once connected

    # ------------------------------------------------------------------ connection

    @property
    def address(self) -> Address:
        """The supervisor this client talks to (or tries next)."""
        return self.targets.current

    def connect(self) -> None:
        """Open a session with the active supervisor: each address of the list in turn,
        and straight to the active one when a standby names it; the last failure raised
        once every address has been tried."""
        if self._socket is not None:
            return
        for attempt in range(len(self.targets) + 1):
            try:
                self._connect_one()
                return
            except _StandbyAnswer as standby:
                moved = self.targets.follow(standby.active)
                if attempt == len(self.targets) or (not moved and len(self.targets) == 1):
                    # a takeover under way, or no supervisor active: like one unreachable,
                    # a submission tries again (same key) and a read reports it
                    msg = f"no active supervisor at {self.targets}: {standby}"
                    raise ConnectionLostError(msg) from None
                if not moved:
                    self.targets.advance()
            except ConnectionLostError:
                if attempt >= len(self.targets) - 1:
                    raise
                self.targets.advance()

    def _connect_one(self) -> None:
        trust = trust_for(self.address, ca=self._ca, pin=self._pin)
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port), timeout=self.timeout
            )
        except OSError as exc:
            msg = f"cannot reach the supervisor at {self.address}: {exc.strerror or exc}"
            raise ConnectionLostError(msg) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if trust is not None:
            sock = self._secure(sock, trust)
        self._socket = sock
        self._codec = Codec()
        self._send(Hello(version=PROTOCOL_VERSION, role=Role.ADMIN.value, token=self._token))
        welcome = self._receive()
        if isinstance(welcome, Standby):
            where = self.address
            self.close()
            raise _StandbyAnswer(f"{where} is a standby: {welcome.message}", welcome.active)
        if not isinstance(welcome, Welcome):
            self.close()
            msg = f"the supervisor answered the hello with {welcome.TYPE!r}"
            raise ProtocolError(msg)
        self._codec.max_frame_bytes = welcome.max_frame_bytes
        self._frame_bytes = welcome.max_frame_bytes

    def _secure(self, sock: socket.socket, trust: Trust) -> ssl.SSLSocket:
        """The TLS handshake, and the pin's check; one clear line if either fails."""
        try:
            secure = trust.context().wrap_socket(sock, server_hostname=self.address.host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            if isinstance(exc, ssl.SSLError | ConnectionResetError | BrokenPipeError):
                raise handshake_failure(exc, self.address) from None
            msg = f"cannot reach the supervisor at {self.address}: {exc.strerror or exc}"
            raise ConnectionLostError(msg) from None
        try:
            trust.verify(secure.getpeercert(binary_form=True), self.address)
        except FarmdError:
            secure.close()
            raise
        return secure

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, message: Message) -> None:
        assert self._socket is not None
        try:
            self._socket.sendall(self._codec.send(message))
        except OSError as exc:
            self.close()
            msg = f"lost the connection to the supervisor at {self.address}: {exc}"
            raise ConnectionLostError(msg) from None

    def _receive(self, timeout: float | None = None) -> Message:
        """The next message; waits `timeout` seconds (default: the client's; inf: forever)."""
        sock = self._socket
        assert sock is not None
        if timeout is None:
            timeout = self.timeout
        sock.settimeout(None if math.isinf(timeout) else timeout)
        while True:
            try:
                message = self._codec.next_message()
            except ProtocolError:
                self.close()
                raise
            if message is not NEED_DATA:
                assert isinstance(message, Message)
                if isinstance(message, Error):
                    self.close()
                    raise error_for_code(message.code, f"the supervisor refused: {message.message}")
                return message
            try:
                data = sock.recv(65536)
            except TimeoutError:
                self.close()
                msg = f"the supervisor at {self.address} did not answer in time"
                raise ConnectionLostError(msg) from None
            except OSError as exc:
                self.close()
                msg = f"lost the connection to the supervisor at {self.address}: {exc}"
                raise ConnectionLostError(msg) from None
            if not data:
                self.close()
                msg = f"the supervisor at {self.address} closed the connection"
                raise ConnectionLostError(msg)
            self._codec.receive_data(data)

    def _closed_by_peer(self) -> bool:
        """The open connection has been closed by the supervisor (or it said something
        unasked, such as an error before closing an idle session): it cannot be used."""
        sock = self._socket
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket):  # no peeking through TLS: is it readable?
            return bool(sock.pending()) or bool(select.select([sock], [], [], 0)[0])
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            try:
                sock.recv(1, socket.MSG_PEEK)
            finally:
                sock.settimeout(timeout)
        except BlockingIOError:
            return False  # nothing to read: open and quiet
        except OSError:
            return True
        return True  # end of stream, or bytes nobody asked for

    def _call(self, build: type[Request], wait: float | None = None, **fields: Any) -> Any:
        if build in (Submit, SubmitBatch):
            return self._submit_call(build, wait, fields)
        if self._closed_by_peer():
            self.close()  # closed while idle: nothing was sent on it, so reconnect
        reused = self._socket is not None
        try:
            return self._exchange(build, wait, fields)
        except ConnectionLostError as exc:
            if build in _READS and reused:
                pass  # sent again below, on a fresh connection
            elif isinstance(exc, SessionIdleError) and reused:
                # it crossed the idle close on the wire: the supervisor reads nothing
                # after deciding a session is idle (docs/protocol.md 1.1), so it was
                # not applied and goes again below, on a fresh connection
                self.close()
            elif build not in _READS and self._sent:
                msg = (
                    f"{exc}; the {build.TYPE!r} request may or may not have been applied: "
                    "check before repeating it"
                )
                raise ConnectionLostError(msg) from None
            else:
                raise
        return self._exchange(build, wait, fields)

    def _submit_call(self, build: type[Request], wait: float | None, fields: Any) -> Any:
        """A submission, sent again with the same key while the connection is lost."""
        if fields.get("key") is None:
            fields["key"] = new_request_key()
        pause = RETRY_PAUSE
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            if self._closed_by_peer():
                self.close()
            try:
                return self._exchange(build, wait, fields)
            except ConnectionLostError as exc:
                if attempt == SUBMIT_ATTEMPTS:
                    msg = f"{exc} (tried {attempt} times with request key {fields['key']})"
                    raise ConnectionLostError(msg) from None
            time.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_PAUSE)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, build: type[Request], wait: float | None, fields: Any) -> Any:
        """Send one request and return its answer (raise its refusal)."""
        self._sent = False
        self.connect()
        request_id = self._next_id
        self._next_id += 1
        self._send(build(request_id=request_id, **fields))  # type: ignore[call-arg]
        self._sent = True  # from here on, the supervisor may have applied it
        while True:
            answer = self._receive(wait)
            if isinstance(answer, Reply | Refused) and answer.request_id == request_id:
                break
        if isinstance(answer, Refused):
            raise error_for_code(answer.code, answer.message)
        return answer.result

    # ------------------------------------------------------------------ requests

    def submit_job(
        self,
        argv: Sequence[str],
        *,
        name: str = "",
        cluster: str | None = None,
        priority: int | None = None,
        restrictions: str = "",
        cross_cluster: str = "",
        frames: str = "",
        depends_on: Iterable[int | str] = (),
        instances: int = 0,
        retries: int = 0,
        retry_delay: float = 0.0,
        time_limit: float = 0.0,
        chunk: int = 1,
        parent: int | None = None,
        uninterruptible: bool = False,
        job_type: str | None = None,
        requires: str = "",
        reserve: str = "",
        env: Iterable[str] = (),
        notify: str = "",
        params: Mapping[str, object] | Iterable[str] = (),
        key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a job; returns its summary (`id`, `state`, frame counts...).

        `depends_on` takes job ids (wait until complete) or `"ID:MODE"` strings, MODE
        one of `complete`, `done`, `failed`, `frames` (frame N waits for frame N).
        `instances` caps the frames running at once (0: no cap); a failed frame runs
        again up to `retries` times, `retry_delay` seconds later, preferably elsewhere;
        an attempt running longer than `time_limit` seconds is killed and fails.
        `chunk` frames run per dispatch (`{start}`/`{end}` in argv). Inside a frame
        (FARMD_TOKEN is its job token) the job becomes a sub-job of the frame's job;
        `parent` names another parent. An `uninterruptible` job is never preempted.
        A job of a `job_type` runs only on workers that advertise it; `requires` is an
        expression hosts must satisfy (`"host.os == linux and host.memory >= 16G"`);
        `reserve` is what a frame holds while it runs (`"slots=2,gpu=1,license.nuke=1"`);
        `env` adds `"NAME=VALUE"` variables to each frame's environment.
        A job of a release's type has no `argv` of its own (`[]`): its `job_type` is
        resolved from the releases deployed at its cluster, which pins the version,
        and `params` gives its parameters (`{"scene": "/a.blend", "samples": 64}`;
        `job_types(cluster)` lists them). `notify` is an http(s) URL the supervisor
        POSTs the job's summary to, as JSON, when it ends.
        `key` (1 to 128 of `A-Z a-z 0-9 . _ : -`) makes the submission idempotent: a
        repeat of the same key and job gets the first job back, even after a restart of
        the supervisor (a fresh key is made when none is given, for this call's own
        retries)."""
        result: dict[str, Any] = self._call(
            Submit,
            argv=tuple(argv),
            name=name,
            cluster=cluster,
            priority=priority,
            restrictions=restrictions or "",
            cross_cluster=cross_cluster or "",
            frames=frames or "",
            depends_on=tuple(depends_on),
            instances=instances,
            retries=retries,
            retry_delay=retry_delay,
            time_limit=time_limit,
            chunk=chunk,
            parent=parent,
            uninterruptible=uninterruptible,
            job_type=job_type,
            requires=requires,
            reserve=reserve,
            env=tuple(env),
            notify=notify,
            params=dict(params) if isinstance(params, Mapping) else tuple(params),
            key=key,
        )
        return result

    def submit(self, argv: Sequence[str], **options: Any) -> int:
        """Submit a job; returns its id. Options as for `submit_job`."""
        return int(self.submit_job(argv, **options)["id"])

    def submit_many(
        self, jobs: Iterable[Mapping[str, Any]], *, key: str | None = None
    ) -> list[int]:
        """Submit several jobs in one request, all or none; returns their ids in order.

        Each job is a mapping of `submit_job`'s arguments but `key`: `{"argv": [...],
        "frames": "1-10", "cluster": "/show1", ...}`. A job may depend on an earlier one
        of the same batch by its id (the first gets the next free id, and so on). `key`
        is the batch's, as `submit_job`'s."""
        return [int(i) for i in self.submit_batch(jobs, key=key)["ids"]]

    def submit_batch(
        self, jobs: Iterable[Mapping[str, Any]], *, key: str | None = None
    ) -> dict[str, Any]:
        """As `submit_many`, with the supervisor's whole answer: `ids`, and `warnings`,
        the lines of each job (by id, as a string) that no connected worker could run
        (docs/protocol.md 6.2); the jobs are accepted all the same."""
        specs = []
        for job in jobs:
            options = dict(job)
            argv = tuple(options.pop("argv"))
            if "cross_cluster" in options:  # None as in submit_job: none
                options["cross_cluster"] = options["cross_cluster"] or ""
            options["depends_on"] = tuple(options.get("depends_on", ()))
            specs.append(Submit(request_id=0, argv=argv, **options))
        result: dict[str, Any] = self._call(SubmitBatch, jobs=tuple(specs), key=key)
        return result

    def jobs(
        self, limit: int | None = None, after: int | None = None, *, history: bool = False
    ) -> dict[str, Any]:
        """A page of jobs by id (docs/protocol.md, `list_jobs`): `jobs`, the summaries of
        the jobs after id `after` (from the first, when None), at most `limit` (the
        supervisor's default page, when None); `next`, the `after` of the next page
        (None: this page ends the list); `counts` by state and `total`, of every job.
        The live queue only, or with `history` the jobs that moved to history too."""
        fields = {"limit": limit, "after": after, "history": history or None}
        result: dict[str, Any] = self._call(
            ListJobs, **{k: v for k, v in fields.items() if v is not None}
        )
        return result

    def iter_jobs(
        self, limit: int | None = None, after: int | None = None, *, history: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every job's summary after id `after`, by id, asking a page of `limit` at a
        time and following `next`. Jobs submitted meanwhile with higher ids are listed
        too; a job removed meanwhile may be missing."""
        while True:
            page = self.jobs(limit, after, history=history)
            yield from page["jobs"]
            after = page["next"]
            if after is None:
                return

    def job(
        self, job_id: int, *, frame_limit: int | None = None, frame_after: int | None = None
    ) -> dict[str, Any]:
        """A job's detail with a page of its frames (docs/protocol.md, `get_job`): the
        entries of `frame_list` after the one that runs frame `frame_after` (from the
        first, when None), at most `frame_limit` (the supervisor's default page, when
        None); `frame_next` is the `frame_after` of the next page (None: the last) and
        `frame_list_total` the number of entries in all. `frames` counts every frame."""
        fields = {"frame_limit": frame_limit, "frame_after": frame_after}
        result: dict[str, Any] = self._call(
            GetJob, job_id=job_id, **{k: v for k, v in fields.items() if v is not None}
        )
        return result

    def iter_frames(self, job_id: int, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every entry of a job's `frame_list`, in order, a page of `limit` at a time."""
        after = None
        while True:
            page = self.job(job_id, frame_limit=limit, frame_after=after)
            yield from page["frame_list"]
            after = page["frame_next"]
            if after is None:
                return

    def status(self) -> dict[str, Any]:
        """Which supervisor is active (`address`, `epoch`, `since`, `host`, `pid`), the
        standbys, and the store (`sqlite`, `memory` or `postgresql`)."""
        return dict(self._call(Status))

    def workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(ListWorkers)
        return result

    def clusters(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(ListClusters)
        return result

    def kill(self, job_ids: Iterable[int]) -> list[int]:
        result: list[int] = self._call(Kill, job_ids=tuple(job_ids))
        return result

    def control(self, action: str, targets: Iterable[str | int]) -> list[str]:
        """`kill`, `block`, `unblock`, `retry`, `suspend` or `resume` frames, all or
        none. Targets are job ids or `"ID:FRAMES"` (`"12:7"`, `"12:1-10x2"`); returns
        the frames changed."""
        result: list[str] = self._call(
            ControlRequest, action=action, targets=tuple(str(t) for t in targets)
        )
        return result

    def lock(self, worker: str, *, purge: bool = False) -> list[str]:
        """No new work for `worker`; with `purge` its frames are stopped and requeued.
        Returns the frames requeued."""
        result: list[str] = self._call(Lock, worker=worker, mode="purge" if purge else "drain")
        return result

    def unlock(self, worker: str) -> None:
        self._call(Unlock, worker=worker)

    def explain(self, job_id: int, worker: str | None = None) -> dict[str, Any]:
        """Why job `job_id` does or does not run on each worker (or on `worker`)."""
        result: dict[str, Any] = self._call(Explain, job_id=job_id, worker=worker)
        return result

    def resources(self) -> dict[str, dict[str, float]]:
        """The farm-wide counters: {name: {"total", "used", "free"}}."""
        result: dict[str, dict[str, float]] = self._call(ListResources)
        return result

    def set_resource(self, name: str, total: float) -> dict[str, float]:
        result: dict[str, float] = self._call(SetResource, name=name, total=total)
        return result

    def add_user(self, name: str, role: str, clusters: str | None = None) -> dict[str, Any]:
        """Make a user (`farmd user add`): the answer's `token` is the user's, shown this
        once; the supervisor keeps only its salted hash."""
        result: dict[str, Any] = self._call(AddUser, name=name, role=role, clusters=clusters)
        return result

    def users(self) -> list[dict[str, Any]]:
        """Every user: name, role, clusters (None: the whole farm), created_at, revoked_at."""
        result: list[dict[str, Any]] = self._call(ListUsers)
        return result

    def modify_user(
        self,
        name: str,
        *,
        role: str | None = None,
        clusters: str | None = None,
        new_token: bool = False,
    ) -> dict[str, Any]:
        """Change a user's role or scope (`clusters=""`: the whole farm), or give them a
        new token (`token` in the answer; the old one stops working at once)."""
        result: dict[str, Any] = self._call(
            ModifyUser, name=name, role=role, clusters=clusters, new_token=new_token
        )
        return result

    def revoke_user(self, name: str) -> dict[str, Any]:
        """The user's token stops working, on sessions already open too."""
        result: dict[str, Any] = self._call(RevokeUser, name=name)
        return result

    def add_worker_token(self, hosts: str, clusters: str | None = None) -> dict[str, Any]:
        """Make a worker enrolment token (`farmd worker-token add`) for the hosts `hosts`
        names, into `clusters` (None: any); `token` in the answer, shown this once."""
        result: dict[str, Any] = self._call(AddWorkerToken, hosts=hosts, clusters=clusters)
        return result

    def worker_tokens(self) -> list[dict[str, Any]]:
        """Every worker token: id, hosts, clusters, created_at, revoked_at."""
        result: list[dict[str, Any]] = self._call(ListWorkerTokens)
        return result

    def revoke_worker_token(self, token_id: int) -> dict[str, Any]:
        """The token registers nothing any more; its workers' sessions end."""
        result: dict[str, Any] = self._call(RevokeWorkerToken, token_id=token_id)
        return result

    def audit(
        self,
        *,
        limit: int | None = None,
        before: int | None = None,
        user: str | None = None,
        job: int | None = None,
        since: float | None = None,
    ) -> dict[str, Any]:
        """A page of the audit log, newest first (docs/protocol.md, `list_audit`):
        `entries` (id, at, who, user, peer, request, target, result) and `next`, the
        `before` of the next page (None: the last)."""
        fields: dict[str, Any] = {"limit": limit, "before": before, "user": user, "job": job}
        fields["since"] = since
        result: dict[str, Any] = self._call(
            ListAudit, **{k: v for k, v in fields.items() if v is not None}
        )
        return result

    def prune_history(self, days: float | None = None) -> dict[str, Any]:
        """Remove from the store the jobs that moved to history more than `days` ago (the
        supervisor's `history_days`, when None): `removed`, how many, and `before`, the
        cut-off time (None when nothing is pruned: `history_days` is 0)."""
        fields = {} if days is None else {"days": float(days)}
        result: dict[str, Any] = self._call(PruneHistory, **fields)
        return result

    def reload(self) -> dict[str, list[str]]:
        """Make the supervisor read its configuration file again: `reconfigured` lists
        the workers whose settings changed, `restart_needed` the supervisor settings
        that changed but apply only at the next restart."""
        result: dict[str, list[str]] = self._call(Reload)
        return result

    def suspend(self, targets: Iterable[str | int]) -> list[str]:
        """SIGSTOP running frames (they keep their slots) and hold the others."""
        return self.control("suspend", targets)

    def resume(self, targets: Iterable[str | int]) -> list[str]:
        """SIGCONT suspended frames and release the held ones."""
        return self.control("resume", targets)

    def block(self, targets: Iterable[str | int]) -> list[str]:
        """Stop (if running) and hold frames until `unblock`."""
        return self.control("block", targets)

    def unblock(self, targets: Iterable[str | int]) -> list[str]:
        return self.control("unblock", targets)

    def retry(self, targets: Iterable[str | int]) -> list[str]:
        """Failed or killed frames run again, with their retries counted afresh."""
        return self.control("retry", targets)

    def remove(self, job_ids: Iterable[int]) -> list[int]:
        """Forget jobs that have ended (kill a job first to remove it)."""
        result: list[int] = self._call(Remove, job_ids=tuple(job_ids))
        return result

    def modify(
        self,
        job_id: int,
        *,
        priority: int | None = None,
        cluster: str | None = None,
        restrictions: str | None = None,
        cross_cluster: str | None = None,
        instances: int | None = None,
        retries: int | None = None,
        retry_delay: float | None = None,
        time_limit: float | None = None,
    ) -> dict[str, Any]:
        """Change a job's rank and options; they take effect at the next pick (a time
        limit, from the next attempt)."""
        result: dict[str, Any] = self._call(
            Modify,
            job_id=job_id,
            priority=priority,
            cluster=cluster,
            restrictions=restrictions,
            cross_cluster=cross_cluster,
            instances=instances,
            retries=retries,
            retry_delay=retry_delay,
            time_limit=time_limit,
        )
        return result

    def order(self, worker: str, limit: int = 100) -> list[dict[str, Any]]:
        """The runnable jobs `worker` would take, best first, with their rank keys."""
        result: list[dict[str, Any]] = self._call(Order, worker=worker, limit=limit)
        return result

    def logs(
        self, job_id: int, frame: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """The log of a frame's latest attempt (`text`, `worker`, `attempt`): its end,
        or what follows byte `offset`; `size` is where the next ask starts, `running`
        whether more may come (`follow_log`)."""
        result: dict[str, Any] = self._call(
            GetLog, wait=self.timeout + 15, job_id=job_id, frame=frame, offset=offset
        )
        return result

    def follow_log(
        self, job_id: int, frame: int | None = None, pause: float = 1.0
    ) -> Iterator[str]:
        """A running frame's log as it grows, piece by piece, until the attempt ends
        (`farmd logs --follow`): its end first, then what follows, asked every `pause`
        seconds while the frame runs."""
        log = self.logs(job_id, frame)
        yield log["text"]
        if not log.get("size") and log["text"]:
            return  # a worker older than version 6 sends only a log's end: no following
        running = bool(log.get("running"))
        while True:
            if running:
                time.sleep(pause)
            log = self.logs(job_id, log["frame"], offset=log["size"])
            if log["text"]:
                yield log["text"]
            if not running:  # this ask came after the end: the log is whole
                return
            running = bool(log.get("running"))

    def wait(self, job_ids: Iterable[int], timeout: float | None = None) -> dict[str, Any]:
        """Block until every job has ended or cannot end without an admin (it is blocked
        or suspended, or waits for a job that is), or `timeout` seconds pass.

        Returns `{"ended": {"ID": "complete"|"failed"|"killed"}, "pending": [ID...],
        "stuck": {"ID": "why"}}`: `pending` lists the jobs that have not ended, and
        `stuck` those of them that cannot end without an admin, each with why in one
        line. A job in `pending` but not in `stuck` was still going at the timeout.
        """
        # The socket must outwait the supervisor's own deadline.
        wait = math.inf if timeout is None else timeout + self.timeout
        result: dict[str, Any] = self._call(
            Wait, wait=wait, job_ids=tuple(job_ids), timeout=timeout
        )
        return result


__all__ = ["Client", "ConnectionLostError", "FarmdError", "resolve_address", "resolve_token"]
