"""The farmd wire protocol: typed messages and a sans-IO codec (see docs/protocol.md).

Theory of operation
-------------------
On the wire a message is a *frame*: a 4-byte big-endian unsigned length, then that many
bytes of msgpack holding one map whose `"type"` names the message and whose other keys
are its fields. In memory a message is a frozen attrs class that validates every field
in its constructor, so a message that exists is well formed; the codec turns the map
into the class at the border and nothing deeper ever sees a raw dict.

The codec that turns bytes into these messages and back is `farmd.codec` (sans-IO,
h11's shape).

Only msgpack's own types cross the wire: nil, bool, int, float, str, array, map (no
binary, no extension types), so a peer can be written in any language from the doc.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, TypeVar

import attrs

from farmd.errors import FarmdError, ProtocolError
from farmd.jobspec import JobSpec
from farmd.values import MAX_NAME_CHARS as MAX_NAME_CHARS
from farmd.values import as_tuple as _tuple
from farmd.values import is_count as _is_count
from farmd.values import is_int as _is_int
from farmd.values import is_number as _is_number
from farmd.values import is_plain as is_plain
from farmd.values import is_seconds as _is_seconds
from farmd.values import is_str as _is_str
from farmd.values import odd_character as odd_character
from farmd.values import show, text_problem

PROTOCOL_VERSION: Final = 7
# Versions a worker may speak: what a worker sends did not change from 2 to 5, and 6
# adds releases, which the supervisor sends only to a worker that speaks 6, so the
# supervisor can be upgraded before its agents (docs/protocol.md, section 2). 7 adds
# `standby`, a standby supervisor's answer to the hello (an older peer gets an `error`).
WORKER_VERSIONS: Final = frozenset({2, 3, 4, 5, 6, 7})
STANDBY_VERSION: Final = 7  # the first version whose peers read `standby`
RELEASE_VERSION: Final = 6  # the first version whose workers fetch releases


def register_of_version(register: Register, version: int) -> Register:
    """A worker's `register` as version 3 reads it. farmd's version-2 agent sent the
    host's memory twice, as the `memory` resource and as a `memory` property; version 3
    reserves that property name (`host.memory` reads the resource), so the copy goes."""
    if version >= 3 or "memory" not in register.properties:
        return register
    properties = {k: v for k, v in register.properties.items() if k != "memory"}
    return attrs.evolve(register, properties=properties)


HEADER_BYTES: Final = 4
DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
MIN_FRAME_BYTES: Final = 64 * 1024
MAX_BATCH: Final = 10_000
MAX_TARGET_CHARS: Final = 4096  # `ID:RANGE`: a frame list may be long
MAX_NAMES: Final = 256  # job types a worker runs
MAX_INSTANCE_CHARS: Final = 64  # register.instance
MAX_ADDRESS_CHARS: Final = 300  # `standby.active`: a host name and a port
# A listing's page (`list_jobs.limit`, `get_job.frame_limit`): entries by default and at
# most. A page is also cut short to fit one frame (docs/protocol.md, 6.1 "Pages").
DEFAULT_PAGE: Final = 1000
MAX_PAGE: Final = 10_000


class Role(enum.Enum):
    WORKER = "worker"
    ADMIN = "admin"


# --------------------------------------------------------------------------- fields


def _fail(cls_name: str, field: str, why: str, value: object) -> ProtocolError:
    return ProtocolError(f"bad field {field!r} of {cls_name!r}: {why} (got {show(value)})")


def _check_texts(
    limit: int, *, empty: bool = True, optional: bool = False, many: bool = False
) -> Callable[[Any, Any, Any], None]:
    """A validator of a name (or, `many`, a tuple of them): bounded, no control
    characters; the refusal says which rule the value broke."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if optional and value is None:
            return
        if many:
            if not isinstance(value, tuple):
                raise _fail(type(instance).TYPE, attribute.name, "must be a list", value)
            items = value
        else:
            items = (value,)
        for item in items:
            why = text_problem(item, limit, empty=empty)
            if why is not None:
                raise _fail(type(instance).TYPE, attribute.name, why, item)

    return validate


def _name_field(default: str | None = None, *, empty: bool = True) -> Any:
    validator = _check_texts(MAX_NAME_CHARS, empty=empty)
    if default is None:
        return attrs.field(validator=validator)
    return attrs.field(default=default, validator=validator)


def _check_keys(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Every key of a map is a name (a property's, a resource's); the refusal names it."""
    for key in value:
        why = text_problem(key, MAX_NAME_CHARS, empty=False)
        if why is not None:
            raise _fail(type(instance).TYPE, attribute.name, f"a name {why}", key)


def _check(predicate: Callable[[Any], bool], why: str) -> Callable[[Any, Any, Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not predicate(value):
            raise _fail(type(instance).TYPE, attribute.name, why, value)

    return validate


def _int_field() -> Any:
    return attrs.field(validator=_check(_is_int, "must be an integer"))


def _str_field(default: str | None = None) -> Any:
    validator = _check(_is_str, "must be a string")
    if default is None:
        return attrs.field(validator=validator)
    return attrs.field(default=default, validator=validator)


def _opt(predicate: Callable[[Any], bool], why: str) -> Any:
    return attrs.field(default=None, validator=_check(lambda v: v is None or predicate(v), why))


def _str_tuple(default: tuple[str, ...] | None = None) -> Any:
    check = _check(lambda v: isinstance(v, tuple) and all(map(_is_str, v)), "must be strings")
    if default is None:
        return attrs.field(converter=_tuple, validator=check)
    return attrs.field(default=default, converter=_tuple, validator=check)


def _int_tuple() -> Any:
    check = _check(lambda v: isinstance(v, tuple) and all(map(_is_int, v)), "must be integers")
    return attrs.field(default=(), converter=_tuple, validator=check)


def _str_map() -> Any:
    check = _check(
        lambda v: isinstance(v, Mapping) and all(_is_str(k) and _is_str(x) for k, x in v.items()),
        "must map strings to strings",
    )
    return attrs.field(factory=dict, validator=check)


def _is_fact(v: object) -> bool:
    """A host property: a string, number or bool, or a list of strings."""
    if isinstance(v, list | tuple):
        return len(v) <= 256 and all(map(_is_str, v))
    return _is_str(v) or _is_number(v) or isinstance(v, bool)


def _facts() -> Any:
    check = _check(
        lambda v: (
            isinstance(v, Mapping)
            and len(v) <= 256
            and all(_is_str(k) and _is_fact(x) for k, x in v.items())
        ),
        "must map names to strings, numbers, bools or lists of strings",
    )
    return attrs.field(factory=dict, validator=[check, _check_keys])


def _amounts() -> Any:
    check = _check(
        lambda v: (
            isinstance(v, Mapping)
            and len(v) <= MAX_NAMES
            and all(
                _is_str(k) and _is_number(x) and math.isfinite(x) and x >= 0 for k, x in v.items()
            )
        ),
        f"must map at most {MAX_NAMES} names to numbers >= 0",
    )
    return attrs.field(factory=dict, validator=[check, _check_keys])


# --------------------------------------------------------------------------- registry


class Message:
    """Base of every wire message. `TYPE` is its name on the wire."""

    __slots__ = ()
    TYPE: ClassVar[str]


MESSAGES: dict[str, type[Message]] = {}
M = TypeVar("M", bound=type[Message])


def _message(name: str) -> Callable[[M], M]:
    def register(cls: M) -> M:
        cls.TYPE = name
        MESSAGES[name] = cls
        return cls

    return register


# --------------------------------------------------------------------------- handshake


@_message("hello")
@attrs.frozen(kw_only=True)
class Hello(Message):
    """First message of every connection, from the connecting peer."""

    version: int = _int_field()
    role: str = attrs.field(
        validator=_check(
            lambda v: isinstance(v, str) and v in {r.value for r in Role},
            "must be 'worker' or 'admin'",
        )
    )
    token: str = _str_field()
    name: str = _name_field("")


@_message("welcome")
@attrs.frozen(kw_only=True)
class Welcome(Message):
    """The supervisor accepted the hello."""

    version: int = _int_field()
    supervisor: str = _str_field()
    heartbeat_interval: float = attrs.field(
        validator=_check(lambda v: _is_number(v) and v > 0, "must be a positive number")
    )
    # the largest frame body the supervisor accepts; peers size what they send to it
    max_frame_bytes: int = attrs.field(
        validator=_check(
            lambda v: _is_int(v) and v >= MIN_FRAME_BYTES,
            f"must be an integer >= {MIN_FRAME_BYTES}",
        )
    )


@_message("error")
@attrs.frozen(kw_only=True)
class Error(Message):
    """A fatal error: the sender closes the connection after it."""

    code: str = _str_field()
    message: str = _str_field()


@_message("standby")
@attrs.frozen(kw_only=True)
class Standby(Message):
    """A standby supervisor's answer to the hello (version 7): it serves nothing and
    closes; `active` is where the active supervisor said it serves (`HOST:PORT`, or ""
    when none is active yet), the peer's next address to try."""

    active: str = attrs.field(
        validator=_check(
            lambda v: _is_str(v) and len(v) <= MAX_ADDRESS_CHARS,
            f"must be HOST:PORT of at most {MAX_ADDRESS_CHARS} characters",
        )
    )
    epoch: int = _int_field()
    message: str = _str_field()


@_message("heartbeat")
@attrs.frozen(kw_only=True)
class Heartbeat(Message):
    """Sent by both sides of a worker connection every heartbeat interval."""


# --------------------------------------------------------------------------- worker side


def _running_entries(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(tuple(e) if isinstance(e, list | tuple) else e for e in value)
    return value


def _is_running_entry(v: object) -> bool:
    return isinstance(v, list | tuple) and len(v) == 3 and all(map(_is_int, v))


@_message("register")
@attrs.frozen(kw_only=True)
class Register(Message):
    """A worker announces itself (after `welcome`), and what it is still running."""

    name: str = _name_field(empty=False)
    cluster: str = _str_field()
    restrictions: str = _str_field("")
    slots: int = attrs.field(validator=_check(lambda v: _is_int(v) and v >= 1, "must be >= 1"))
    types: tuple[str, ...] = attrs.field(  # the job types it runs
        default=(),
        converter=_tuple,
        validator=[
            _check(
                lambda v: isinstance(v, tuple) and len(v) <= MAX_NAMES,
                f"must be a list of at most {MAX_NAMES} job types",
            ),
            _check_texts(MAX_NAME_CHARS, empty=False, many=True),
        ],
    )
    properties: dict[str, Any] = _facts()  # noqa: RUF009 (an attrs field, not a call)
    resources: dict[str, float] = _amounts()  # noqa: RUF009 (its own counters, not slots)
    # (job id, frame, attempt) of each frame the worker is still running
    running: tuple[tuple[int, int, int], ...] = attrs.field(
        default=(),
        converter=_running_entries,
        validator=_check(
            lambda v: isinstance(v, tuple) and all(map(_is_running_entry, v)),
            "must be a list of [job, frame, attempt]",
        ),
    )
    # The agent process's random id: its new session may replace its own old one
    # (docs/protocol.md, 5.1); "" for none.
    instance: str = attrs.field(
        default="",
        validator=_check(
            lambda v: _is_str(v) and len(v) <= MAX_INSTANCE_CHARS,
            f"must be a string of at most {MAX_INSTANCE_CHARS} characters",
        ),
    )


@_message("registered")
@attrs.frozen(kw_only=True)
class Registered(Message):
    """The supervisor accepted a registration; `settings` are the worker's effective
    ones (its own, with the central worker configuration over them)."""

    name: str = _str_field()
    settings: dict[str, Any] = attrs.field(
        factory=dict,
        validator=_check(
            lambda v: isinstance(v, dict) and is_plain(v), "must be a map of plain data"
        ),
    )


@_message("run_frame")
@attrs.frozen(kw_only=True)
class RunFrame(Message):
    """Start one attempt of a frame (or chunk): `argv` is run without a shell."""

    job_id: int = _int_field()
    job_name: str = _str_field()
    frame: int = _int_field()
    attempt: int = _int_field()
    argv: tuple[str, ...] = _str_tuple()
    env: dict[str, str] = _str_map()  # noqa: RUF009 (an attrs field with a factory, not a call)
    # seconds the attempt may run before the worker kills it; 0: no limit
    time_limit: float = attrs.field(default=0.0, validator=_check(_is_seconds, "must be >= 0"))
    # a release job's pinned release (version 6): the worker fills argv's {release}
    # and {python} itself, and {frame}, {start}, {end} (`farmd.releases.template`)
    release: dict[str, Any] | None = attrs.field(
        default=None,
        validator=_check(
            lambda v: v is None or _releases.is_release_pin(v),
            "must be nil or {name, version, digest, size[, python]}",
        ),
    )


@_message("kill_frame")
@attrs.frozen(kw_only=True)
class KillFrame(Message):
    """Kill the process group of one attempt of a frame."""

    job_id: int = _int_field()
    frame: int = _int_field()
    attempt: int = _int_field()


@_message("suspend_frame")
@attrs.frozen(kw_only=True)
class SuspendFrame(Message):
    """Stop (SIGSTOP) the process group of one attempt; its time limit pauses too."""

    job_id: int = _int_field()
    frame: int = _int_field()
    attempt: int = _int_field()


@_message("resume_frame")
@attrs.frozen(kw_only=True)
class ResumeFrame(Message):
    """Continue (SIGCONT) the process group of a suspended attempt."""

    job_id: int = _int_field()
    frame: int = _int_field()
    attempt: int = _int_field()


@_message("frame_finished")
@attrs.frozen(kw_only=True)
class FrameFinished(Message):
    """An attempt ended. `exit_code` is the process's; a negative value is the signal
    that ended it; `error` says why a process could not be started at all."""

    job_id: int = _int_field()
    frame: int = _int_field()
    attempt: int = _int_field()
    exit_code: int = _int_field()
    error: str = _str_field("")


@_message("result_ack")
@attrs.frozen(kw_only=True)
class ResultAck(Message):
    """The supervisor has applied (or deliberately ignored) a `frame_finished`: the
    worker may forget it. Until then the worker repeats it after every reconnect."""

    job_id: int = _int_field()
    frame: int = _int_field()
    attempt: int = _int_field()


@_message("fetch_log")
@attrs.frozen(kw_only=True)
class FetchLog(Message):
    """The supervisor asks a worker for the log of a frame's latest attempt it ran."""

    request_id: int = _int_field()
    job_id: int = _int_field()
    frame: int = _int_field()
    attempt: int = _int_field()
    # version 6: the bytes from this offset on; -1 (and absent, for older workers): the end
    offset: int = attrs.field(
        default=-1, validator=_check(lambda v: _is_int(v) and v >= -1, "must be >= -1")
    )


@_message("log_data")
@attrs.frozen(kw_only=True)
class LogData(Message):
    """A worker's answer to `fetch_log`; `found` is false when it has no such log."""

    request_id: int = _int_field()
    found: bool = attrs.field(validator=_check(lambda v: isinstance(v, bool), "must be a bool"))
    text: str = _str_field("")
    size: int = attrs.field(default=0, validator=_check(_is_count, "must be >= 0"))  # version 6


# --------------------------------------------------------------------------- admin side


class Request(Message):
    """An admin request; the supervisor answers with `reply` or `refused` of the same id."""

    __slots__ = ()
    request_id: int


MAX_KEY_CHARS: Final = 128
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_KEY_WHY = f"must be 1 to {MAX_KEY_CHARS} characters of A-Z a-z 0-9 . _ : -"


def _is_key(v: object) -> bool:
    """A submission's idempotency key (6.2): short, printable, no spaces."""
    return isinstance(v, str) and 1 <= len(v) <= MAX_KEY_CHARS and _KEY_CHARS.issuperset(v)


@_message("submit")
@attrs.frozen(kw_only=True)
class Submit(JobSpec, Request):
    """A job (the fields of `farmd.jobspec.JobSpec`, with their checks) and the request's
    own fields."""

    request_id: int = _int_field()
    # idempotency: a repeat of the same key gets the job the first one made (6.2)
    key: str | None = _opt(_is_key, _KEY_WHY)

    @classmethod
    def refused(cls, field: str, why: str, value: object) -> FarmdError:
        return _fail(cls.TYPE, field, why, value)


def _job_specs(value: object) -> object:
    """The `jobs` of a submit_batch, each a map of submit's fields (no request_id)."""
    if not isinstance(value, list | tuple):
        return value
    specs = []
    for item in value:
        if isinstance(item, Submit):
            specs.append(item)
        elif isinstance(item, dict) and "request_id" not in item:
            specs.append(Submit(request_id=0, **item))
        else:
            return value  # refused by the validator
    return tuple(specs)


@_message("submit_batch")
@attrs.frozen(kw_only=True)
class SubmitBatch(Request):
    """Several jobs in one request, submitted all or none; the reply is their ids."""

    request_id: int = _int_field()
    jobs: tuple[Submit, ...] = attrs.field(
        converter=_job_specs,
        validator=_check(
            lambda v: (
                isinstance(v, tuple)
                and 1 <= len(v) <= MAX_BATCH
                and all(isinstance(j, Submit) and j.key is None for j in v)
            ),
            f"must be 1 to {MAX_BATCH} maps of submit's fields (without request_id and"
            " key: a batch's key is its own)",
        ),
    )
    key: str | None = _opt(_is_key, _KEY_WHY)  # as submit's, for the whole batch


def _page_field() -> Any:
    return attrs.field(
        default=DEFAULT_PAGE,
        validator=_check(lambda v: _is_int(v) and 1 <= v <= MAX_PAGE, f"must be 1 to {MAX_PAGE}"),
    )


@_message("list_jobs")
@attrs.frozen(kw_only=True)
class ListJobs(Request):
    """A page of jobs by id: those after `after` (every id, when nil), at most `limit`;
    the live queue, or with `history` the jobs in history too."""

    request_id: int = _int_field()
    limit: int = _page_field()
    after: int | None = _opt(_is_int, "must be an integer or nil")
    history: bool = attrs.field(
        default=False, validator=_check(lambda v: isinstance(v, bool), "must be a bool")
    )


@_message("get_job")
@attrs.frozen(kw_only=True)
class GetJob(Request):
    """One job in detail, with a page of its frames: those after frame `frame_after` in
    the job's order (from the first, when nil), at most `frame_limit`."""

    request_id: int = _int_field()
    job_id: int = _int_field()
    frame_limit: int = _page_field()
    frame_after: int | None = _opt(_is_int, "must be an integer or nil")


@_message("list_workers")
@attrs.frozen(kw_only=True)
class ListWorkers(Request):
    request_id: int = _int_field()


@_message("list_clusters")
@attrs.frozen(kw_only=True)
class ListClusters(Request):
    request_id: int = _int_field()


@_message("kill")
@attrs.frozen(kw_only=True)
class Kill(Request):
    request_id: int = _int_field()
    job_ids: tuple[int, ...] = _int_tuple()


CONTROL_ACTIONS: Final = ("kill", "block", "unblock", "retry", "suspend", "resume")


@_message("control")
@attrs.frozen(kw_only=True)
class ControlRequest(Request):
    """Kill, block, unblock, retry, suspend or resume frames: targets are `ID` (the
    whole job) or `ID:FRAMES` (a frame or a Qube frame range). All or none."""

    request_id: int = _int_field()
    action: str = attrs.field(
        validator=_check(
            lambda v: v in CONTROL_ACTIONS, f"must be one of {', '.join(CONTROL_ACTIONS)}"
        )
    )
    targets: tuple[str, ...] = attrs.field(
        converter=_tuple, validator=_check_texts(MAX_TARGET_CHARS, many=True)
    )


@_message("remove")
@attrs.frozen(kw_only=True)
class Remove(Request):
    """Forget jobs that have ended. All or none."""

    request_id: int = _int_field()
    job_ids: tuple[int, ...] = _int_tuple()


@_message("modify")
@attrs.frozen(kw_only=True)
class Modify(Request):
    """Change a job's rank; a field left out (nil) is unchanged."""

    request_id: int = _int_field()
    job_id: int = _int_field()
    priority: int | None = _opt(_is_int, "must be an integer")
    cluster: str | None = _opt(_is_str, "must be a string")
    restrictions: str | None = _opt(_is_str, "must be a string")
    cross_cluster: str | None = _opt(_is_str, "must be a string")
    instances: int | None = _opt(_is_count, "must be an integer >= 0")
    retries: int | None = _opt(_is_count, "must be an integer >= 0")
    retry_delay: float | None = _opt(_is_seconds, "must be a number >= 0")
    time_limit: float | None = _opt(_is_seconds, "must be a number >= 0")


@_message("lock")
@attrs.frozen(kw_only=True)
class Lock(Request):
    """No new work for a worker: `drain` lets its frames finish, `purge` stops them."""

    request_id: int = _int_field()
    worker: str = _name_field()
    mode: str = attrs.field(
        default="drain",
        validator=_check(lambda v: v in ("drain", "purge"), "must be drain or purge"),
    )


@_message("unlock")
@attrs.frozen(kw_only=True)
class Unlock(Request):
    request_id: int = _int_field()
    worker: str = _name_field()


@_message("explain")
@attrs.frozen(kw_only=True)
class Explain(Request):
    """Why a job does or does not run on each worker (or on the named one)."""

    request_id: int = _int_field()
    job_id: int = _int_field()
    worker: str | None = attrs.field(
        default=None, validator=_check_texts(MAX_NAME_CHARS, optional=True)
    )


@_message("list_resources")
@attrs.frozen(kw_only=True)
class ListResources(Request):
    request_id: int = _int_field()


@_message("set_resource")
@attrs.frozen(kw_only=True)
class SetResource(Request):
    """Change the total of a global counter (`license.nuke`) until the next restart."""

    request_id: int = _int_field()
    name: str = _name_field()
    total: float = attrs.field(validator=_check(_is_seconds, "must be a number >= 0"))


@_message("reload")
@attrs.frozen(kw_only=True)
class Reload(Request):
    """Read the configuration file again (as SIGHUP does); a bad file changes nothing."""

    request_id: int = _int_field()


@_message("status")
@attrs.frozen(kw_only=True)
class Status(Request):
    """Which supervisor is active, its epoch and since when, and the standbys (7)."""

    request_id: int = _int_field()


@_message("add_user")
@attrs.frozen(kw_only=True)
class AddUser(Request):
    """Make a user with a role and a cluster scope (nil: the whole farm); the answer
    carries the user's token, the only time the supervisor ever sends it."""

    request_id: int = _int_field()
    name: str = _name_field(empty=False)
    role: str = _name_field(empty=False)
    clusters: str | None = _opt(_is_str, "must be a string")


@_message("list_users")
@attrs.frozen(kw_only=True)
class ListUsers(Request):
    """Every user, revoked ones too: name, role, scope, when made and revoked."""

    request_id: int = _int_field()


@_message("modify_user")
@attrs.frozen(kw_only=True)
class ModifyUser(Request):
    """Change a user's role or scope (`clusters` "": the whole farm; nil: unchanged),
    or with `new_token` give them a new token (the old one stops working)."""

    request_id: int = _int_field()
    name: str = _name_field(empty=False)
    role: str | None = _opt(_is_str, "must be a string")
    clusters: str | None = _opt(_is_str, "must be a string")
    new_token: bool = attrs.field(
        default=False, validator=_check(lambda v: isinstance(v, bool), "must be a bool")
    )


@_message("revoke_user")
@attrs.frozen(kw_only=True)
class RevokeUser(Request):
    """The user's token stops working, on sessions already open too."""

    request_id: int = _int_field()
    name: str = _name_field(empty=False)


@_message("add_worker_token")
@attrs.frozen(kw_only=True)
class AddWorkerToken(Request):
    """Make a worker enrolment token for the hosts `hosts` names (a host name, glob or
    range) into the clusters `clusters` accepts (nil: any); the answer carries the token,
    the only time the supervisor ever sends it."""

    request_id: int = _int_field()
    hosts: str = _name_field(empty=False)
    clusters: str | None = _opt(_is_str, "must be a string")


@_message("list_worker_tokens")
@attrs.frozen(kw_only=True)
class ListWorkerTokens(Request):
    """Every worker token, revoked ones too: id, hosts, clusters, when made and revoked."""

    request_id: int = _int_field()


@_message("revoke_worker_token")
@attrs.frozen(kw_only=True)
class RevokeWorkerToken(Request):
    """The worker token registers nothing any more; its workers' sessions end."""

    request_id: int = _int_field()
    token_id: int = _int_field()


@_message("list_audit")
@attrs.frozen(kw_only=True)
class ListAudit(Request):
    """A page of the audit log, newest first: the entries with an id below `before`
    (from the newest, when nil), at most `limit`, of `user` and naming job `job` when
    given, at `since` (seconds since the epoch) or later."""

    request_id: int = _int_field()
    limit: int = _page_field()
    before: int | None = _opt(_is_int, "must be an integer or nil")
    user: str | None = _opt(_is_str, "must be a string")
    job: int | None = _opt(_is_int, "must be an integer or nil")
    since: float | None = _opt(_is_seconds, "must be a number >= 0")


@_message("prune_history")
@attrs.frozen(kw_only=True)
class PruneHistory(Request):
    """Remove the jobs that moved to history more than `days` ago (the configured
    `history_days`, when nil) from the store."""

    request_id: int = _int_field()
    days: float | None = _opt(lambda v: _is_number(v) and 0 <= v <= 1e6, "must be 0 to 1e6")


@_message("order")
@attrs.frozen(kw_only=True)
class Order(Request):
    """The pending jobs a worker would run, in rank order (Qube's qbjoborder)."""

    request_id: int = _int_field()
    worker: str = _name_field()
    limit: int = attrs.field(
        default=100, validator=_check(lambda v: _is_int(v) and v >= 1, "must be >= 1")
    )


@_message("get_log")
@attrs.frozen(kw_only=True)
class GetLog(Request):
    """A frame's log: its end (nil `offset`), or what follows byte `offset` (version 6:
    `farmd logs --follow` asks again from the `size` it was given)."""

    request_id: int = _int_field()
    job_id: int = _int_field()
    frame: int | None = _opt(_is_int, "must be an integer")
    offset: int | None = _opt(_is_count, "must be an integer >= 0")


@_message("wait")
@attrs.frozen(kw_only=True)
class Wait(Request):
    """Answered when every job has ended, or with the ones still going at `timeout`."""

    request_id: int = _int_field()
    job_ids: tuple[int, ...] = _int_tuple()
    timeout: float | None = _opt(lambda v: _is_number(v) and v >= 0, "must be >= 0")


@_message("reply")
@attrs.frozen(kw_only=True)
class Reply(Message):
    """A request's answer: plain data as described per request in docs/protocol.md."""

    request_id: int = _int_field()
    result: Any = attrs.field(
        default=None,
        validator=_check(
            is_plain,
            "must be plain msgpack data (nil, bool, int, float, str, array, map with string keys)",
        ),
    )


@_message("refused")
@attrs.frozen(kw_only=True)
class Refused(Message):
    """A request was refused and changed nothing; the connection stays open."""

    request_id: int = _int_field()
    code: str = _str_field()
    message: str = _str_field()


# the release and host-load messages register themselves here; they use the helpers above
from farmd import protocol_load as _load  # noqa: E402, F401
from farmd import protocol_releases as _releases  # noqa: E402
