"""Listen addresses, the supervisor's settings, the central worker configuration and the
strict YAML file they come from.

Theory of operation
-------------------
A config file is one YAML mapping of *sections*. `_SECTIONS` maps each top-level key to
the function that parses it: `supervisor:` and `workers:`; every other key is refused
as unknown (a new section is its parser, one table entry and a `_Document` attribute).
Leaving a section out, or the whole file empty, means its defaults::

    supervisor:
      listen: 127.0.0.1:7531        # or ":7531"; IPv6 must be quoted: "[::1]:7531"
      state_dir: /var/lib/farmd     # relative paths are taken from this file's directory
      default_priority: 9999        # 1 is the most urgent
      default_cluster: /
      heartbeat_interval: 5.0       # seconds
      heartbeat_timeout: 15.0       # seconds; must exceed heartbeat_interval
      lost_worker_grace: 60.0       # seconds a running frame's worker has to come back
      max_frame_bytes: 4194304      # 64 KiB .. 256 MiB
      outbox_pause_bytes: 1048576   # a session is not read while more waits to be sent
      max_outbox_bytes: 33554432    # a peer with more waiting than this is dropped
      idle_timeout: 300.0           # seconds an admin session may go without a request
      max_handshakes: 256           # connections that have not finished their hello
      max_admin_sessions: 256       # sessions with the farm token
      max_user_sessions: 1024       # sessions with the user token or a job token
      max_worker_sessions: 10000    # worker connections
      store: sqlite                 # or memory
      preempt_policy: passive       # or aggressive, disabled
      resources:                    # farm-wide counters; names need a dot
        license.nuke: 10
    workers:                        # Qube's qbwrk.conf
      default:                      # every host
        slots: 1
      templates:                    # named entries other entries inherit
        gpu: {types: [blender], resources: {gpu: 2}}
        lighting: {template: gpu, cluster: /show1/lighting}
      hosts:
        render[001-120]: {template: lighting, slots: 8}   # render001 .. render120
        gpu-*: {template: gpu}                            # a glob: * and ?
        node07: {cluster: /show2/comp, properties: {rack: b}}

Central worker configuration
----------------------------
An entry (`default`, a template, a host entry) may set `cluster` (a path),
`restrictions` (an expression), `slots` (1 or more), `types` (a list of job types),
`properties` (name -> string, number or true/false; read by requirements as
`host.NAME`), `resources` (a host's counters: `gpu: 2`, `memory: 64G`; no dot, not
slots), and `template` (one name or a list). A host entry's key is an exact name, a glob
(`*`, `?`; case-sensitive) or a numbered range: one `[FIRST-LAST]` part, at most
100000 hosts; a leading zero on either end pads every number to that width, so both
ends must then have the same number of digits.

`WorkersConfig.settings_for(host)` applies, in order: `default`; the globs and ranges
that match the host, in file order; the host's exact entry. Each entry's templates come
just before its own keys: depth-first in listed order, parents first, each template
once per entry. A later value replaces an earlier one; `properties` and `resources`
merge name by name; `types` is replaced whole. Nothing can be unset, only overridden.

The result, a `WorkerSettings`, is what the supervisor gives a worker when it
registers. A value it holds (None: not set centrally) wins over the worker's own flag,
as qbwrk.conf wins over a host's own settings; the worker's flags (`farmd worker
--cluster/--restrictions/--slots/--type/--property/--resource`, or their defaults)
fill in the rest, and its properties and resources keep every name the central
configuration does not set. `WorkerSettings.combine` is that rule.

The file is strict (STYLE.md, "Config is strict"): an unknown key, a duplicate key, a
value of the wrong type, a value out of range, a non-standard tag, a YAML syntax error or
an unreadable file is refused with one line, `FILE:LINE:COLUMN: KEY: what is wrong (got
VALUE)`, pointing at the value (or, for an unknown or duplicate key, at the key). YAML
1.1 reads `yes`, `no`, `on` and `off` as booleans; a boolean is never accepted where a
number belongs, and a property spelled so is refused (write true/false, or quote it).

To know lines and columns the loader never calls `yaml.load`: it composes the document
into nodes (`yaml.compose` with `SafeLoader`), walks the mappings itself, and constructs
only the scalars it interprets, with `SafeConstructor`, after checking that their tags
are standard ones. Nodes it does not interpret are never constructed at all.

The values themselves are checked in exactly one place, the attrs validators and
converters of `SupervisorConfig`, `Address`, `WorkerEntry` and `WorkersConfig`, so a
config built in code is held to the same rules as one read from a file; the workers
loader calls the same converter functions item by item, to point at the item. They
raise `_FieldError`, a `ConfigError` that also carries the field name and the bare
problem, which the loader turns into a located message. Everything here is pure apart
from reading the file and the environment (`default_state_dir`).
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import yaml

from farmd import worker_settings
from farmd.cluster import ROOT, ClusterPath, parse_cluster, quote
from farmd.errors import (
    ClusterPathError,
    ConfigError,
    RestrictionError,
    UserError,
    WorkerSettingsError,
)
from farmd.ranking import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY
from farmd.resources import check_name, is_global
from farmd.worker_settings import Fact

# --------------------------------------------------------------------------- addresses

DEFAULT_PORT: Final = 7531
DEFAULT_HOST: Final = "127.0.0.1"

_PORT = re.compile(r"[0-9]{1,5}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")


def _host_problem(host: object) -> str | None:
    """Why `host` (unbracketed) is not a hostname, IPv4 or IPv6 address, or None."""
    if not isinstance(host, str):
        return "the host must be a string"
    if not host:
        return "the host is empty"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"host {host!r} is not an IPv6 address"
        return None
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"host {host!r} is not an IPv4 address"
        return None
    name = host[:-1] if host.endswith(".") else host  # one trailing dot: a rooted name
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return f"host {host!r} is not a hostname or IP address"
    return None


def _port_problem(port: object) -> str | None:
    if isinstance(port, bool) or not isinstance(port, int):
        return "the port must be an integer"
    if not 0 <= port <= 65535:
        return f"port {port} is out of range 0..65535"
    return None


def _check_host(_: object, __: object, value: str) -> None:
    problem = _host_problem(value)
    if problem is not None:
        msg = f"bad address host {value!r}: {problem}"
        raise ConfigError(msg)


def _check_port(_: object, __: object, value: int) -> None:
    problem = _port_problem(value)
    if problem is not None:
        msg = f"bad address port {value!r}: {problem}"
        raise ConfigError(msg)


@attrs.frozen
class Address:
    """A TCP endpoint. `host` is a hostname, an IPv4 or an (unbracketed) IPv6 address;
    `port` 0 asks the OS for a free port. `str()` gives the text `parse_address` reads."""

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(validator=_check_port)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


DEFAULT_LISTEN: Final = Address(DEFAULT_HOST, DEFAULT_PORT)


def _parse_address(text: str) -> Address | str:
    """The address `text` names, or why it names none (shared with the file loader)."""
    if any(ch.isspace() for ch in text):
        return "must not contain spaces"
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return "'[' without a matching ']'"
        host, rest = text[1:close], text[close + 1 :]
        if ":" not in host:
            return "brackets are only for IPv6 addresses, such as '[::1]:7531'"
        if not rest.startswith(":"):
            return "expected ':PORT' after ']', such as '[::1]:7531'"
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            return "expected HOST:PORT or :PORT, such as '127.0.0.1:7531'"
        if ":" in host:
            return "write an IPv6 address in brackets, such as '[::1]:7531'"
        host = host or DEFAULT_HOST
    if not _PORT.fullmatch(port_text):
        return f"port {port_text!r} is not a number 0..65535"
    port = int(port_text)
    problem = _host_problem(host) or _port_problem(port)
    if problem is not None:
        return problem
    return Address(host, port)


def parse_address(text: str) -> Address:
    """Read `HOST:PORT`, `:PORT` (host 127.0.0.1) or `[IPV6]:PORT`; port 0..65535.

    Refuses anything else with a one-line `ConfigError` quoting `text`.
    """
    result = _parse_address(text)
    if isinstance(result, str):
        msg = f"bad address {text!r}: {result}"
        raise ConfigError(msg)
    return result


# --------------------------------------------------------------------------- state dir


def default_state_dir() -> Path:
    """Where the supervisor keeps its state unless the config says otherwise.

    In order, the first that applies:

    1. `$FARMD_STATE`, if set and not empty (a relative value is taken from the current
       directory; `~` is expanded);
    2. `$XDG_STATE_HOME/farmd`, if `$XDG_STATE_HOME` is set to an absolute path (the XDG
       Base Directory spec says to ignore a relative one);
    3. `~/.local/state/farmd`.

    The result is absolute. Refuses with `ConfigError` only when it must fall back to the
    home directory and there is none.

    A config file's `state_dir` comes between 1 and 2: `$FARMD_STATE`, like `--state`,
    wins over the file (`environment_state_dir`), the XDG and home defaults do not.
    """
    from_environment = environment_state_dir()
    if from_environment is not None:
        return from_environment
    xdg_state = os.environ.get("XDG_STATE_HOME")
    if xdg_state and Path(xdg_state).is_absolute():
        return Path(xdg_state) / "farmd"
    home = _expand_user(Path("~"))
    if home is None:
        msg = "cannot find the home directory for the default state dir: set $FARMD_STATE"
        raise ConfigError(msg)
    return home / ".local" / "state" / "farmd"


def environment_state_dir() -> Path | None:
    """`$FARMD_STATE` as an absolute path, or None when it is unset or empty. It wins
    over a config file's `state_dir`, as the environment does over a file everywhere."""
    farmd_state = os.environ.get("FARMD_STATE")
    if not farmd_state:
        return None
    expanded = _expand_user(Path(farmd_state))
    if expanded is None:
        msg = f"bad $FARMD_STATE {farmd_state!r}: cannot expand '~'"
        raise ConfigError(msg)
    return expanded.absolute()


def _expand_user(path: Path) -> Path | None:
    """`path` with a leading `~` or `~user` expanded, or None when that cannot be done."""
    try:
        expanded = path.expanduser()
    except RuntimeError:  # no home directory, or no such user
        return None
    return None if expanded.parts[:1] and expanded.parts[0].startswith("~") else expanded


# --------------------------------------------------------------------------- supervisor

MIN_FRAME_BYTES: Final = 64 * 1024
MAX_FRAME_BYTES: Final = 256 * 1024 * 1024
DEFAULT_FRAME_BYTES: Final = 4 * 1024 * 1024


class _FieldError(ConfigError):
    """A refused field value: `fields` names the field(s) at fault, the first most
    directly, and `problem` says what is wrong without quoting the value, so that the
    file loader can point at the right line and quote the source text instead.

    It keeps ConfigError's one-argument constructor (`errors.error_for_code` may build
    any subclass from a message); `refuse` is the way to build one with its details."""

    def __init__(self, message: str, fields: tuple[str, ...] = (), problem: str = "") -> None:
        super().__init__(message)
        self.fields = fields
        self.problem = problem or message

    @classmethod
    def refuse(cls, fields: tuple[str, ...], value: object, problem: str) -> _FieldError:
        return cls(f"bad {fields[0]} {value!r}: {problem}", fields, problem)


def _refuse(attribute: attrs.Attribute[Any], value: object, problem: str) -> None:
    raise _FieldError.refuse((attribute.name,), value, problem)


def _check_metrics(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Address):
        _refuse(attribute, value, "must be an address such as '127.0.0.1:9531', or null (off)")


def _check_listen(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Address):
        _refuse(attribute, value, "must be an Address, such as parse_address(':7531')")


def _check_state_dir(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Path):
        _refuse(attribute, value, "must be a pathlib.Path")
    elif "\0" in str(value):
        _refuse(attribute, value, "must not contain a NUL character")


def _check_priority(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool):
        _refuse(attribute, value, "must be an integer, not true/false")
    elif not isinstance(value, int):
        _refuse(attribute, value, "must be an integer (1 is the most urgent)")
    elif not HIGHEST_PRIORITY <= value <= LOWEST_PRIORITY:
        _refuse(attribute, value, f"must be in {HIGHEST_PRIORITY}..{LOWEST_PRIORITY}")


def _to_cluster(value: str) -> ClusterPath:
    """Normalise a cluster path; anything that is not a string is left to the validator."""
    if not isinstance(value, str):
        return value  # refused by _check_default_cluster
    try:
        return parse_cluster(value)
    except ClusterPathError as exc:
        problem = str(exc).removeprefix(f"bad cluster path {quote(value)}: ")
        raise _FieldError.refuse(("default_cluster",), value, problem) from None


def _check_default_cluster(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        _refuse(attribute, value, "must be a cluster path such as '/' or '/show1/lighting'")


def _to_seconds(value: float) -> float:
    """Widen an integer to float; anything else is left to the validator to refuse."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    return value


def _seconds_problem(value: object) -> str | None:
    if isinstance(value, bool):
        return "must be a number of seconds, not true/false"
    if not isinstance(value, float):
        return "must be a number of seconds"
    if not math.isfinite(value):
        return "must be a finite number of seconds"
    return None


def _check_interval(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is None and not (isinstance(value, float) and value > 0):
        problem = "must be more than 0 seconds"
    if problem is not None:
        _refuse(attribute, value, problem)


def _check_timeout(inst: SupervisorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is not None:
        _refuse(attribute, value, problem)
    elif isinstance(value, float) and not value > inst.heartbeat_interval:
        problem = (
            f"heartbeat_timeout ({value}) must be greater than heartbeat_interval "
            f"({inst.heartbeat_interval})"
        )
        raise _FieldError.refuse(("heartbeat_timeout", "heartbeat_interval"), value, problem)


def _check_grace(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is None and not (isinstance(value, float) and value >= 0):
        problem = "must be 0 seconds or more"
    if problem is not None:
        _refuse(attribute, value, problem)


def _check_frame_bytes(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool):
        _refuse(attribute, value, "must be an integer number of bytes, not true/false")
    elif not isinstance(value, int):
        _refuse(attribute, value, "must be an integer number of bytes")
    elif not MIN_FRAME_BYTES <= value <= MAX_FRAME_BYTES:
        _refuse(attribute, value, f"must be in {MIN_FRAME_BYTES}..{MAX_FRAME_BYTES} bytes")


MIN_OUTBOX_BYTES: Final = 4 * 1024
MAX_OUTBOX_BYTES: Final = 2**40
MAX_SESSIONS: Final = 1_000_000


def _check_outbox_bytes(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool):
        _refuse(attribute, value, "must be an integer number of bytes, not true/false")
    elif not isinstance(value, int):
        _refuse(attribute, value, "must be an integer number of bytes")
    elif not MIN_OUTBOX_BYTES <= value <= MAX_OUTBOX_BYTES:
        _refuse(attribute, value, f"must be in {MIN_OUTBOX_BYTES}..{MAX_OUTBOX_BYTES} bytes")


def _check_outbox_limit(
    inst: SupervisorConfig, attribute: attrs.Attribute[Any], value: object
) -> None:
    _check_outbox_bytes(inst, attribute, value)
    if isinstance(value, int) and value < inst.outbox_pause_bytes:
        problem = (
            f"max_outbox_bytes ({value}) must be at least outbox_pause_bytes "
            f"({inst.outbox_pause_bytes})"
        )
        raise _FieldError.refuse(("max_outbox_bytes", "outbox_pause_bytes"), value, problem)


def _check_idle_timeout(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is None and not (isinstance(value, float) and value > 0):
        problem = "must be more than 0 seconds"
    if problem is not None:
        _refuse(attribute, value, problem)


def _check_sessions(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(attribute, value, "must be an integer number of connections")
    elif not 1 <= value <= MAX_SESSIONS:
        _refuse(attribute, value, f"must be in 1..{MAX_SESSIONS}")


STORES: Final = ("sqlite", "memory")


def _check_store(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in STORES:
        _refuse(attribute, value, f"must be one of {', '.join(STORES)}")


PREEMPT_POLICIES: Final = ("passive", "aggressive", "disabled")


def _check_preempt_policy(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in PREEMPT_POLICIES:
        _refuse(attribute, value, f"must be one of {', '.join(PREEMPT_POLICIES)}")


@attrs.frozen(kw_only=True)
class SupervisorConfig:
    """The supervisor's settings; every value is checked on construction.

    - `listen`: where workers and clients connect.
    - `state_dir`: where the queue survives restarts (`default_state_dir()`).
    - `default_priority`: for jobs submitted without one; 1 is the most urgent.
    - `default_cluster`: for jobs and workers that name none; normalised.
    - `heartbeat_interval`: seconds between a worker's heartbeats.
    - `heartbeat_timeout`: seconds of silence after which a worker is lost; more than
      `heartbeat_interval`.
    - `lost_worker_grace`: seconds after a supervisor restart that the worker of a
      running frame has to come back before the frame is requeued.
    - `max_frame_bytes`: the largest wire frame accepted, 64 KiB..256 MiB.
    - `store`: `sqlite` (the default: STATE/farmd.db, every acknowledged change durable)
      or `memory` (nothing survives a restart; for throwaway farms and benchmarks).
    - `preempt_policy`: Qube's supervisor_preempt_policy. `passive` (the default): a
      better job takes a busy slot when its frame ends; `aggressive`: the running frame
      is stopped and requeued (no retry used) at once; `disabled`: a slot stays with
      its job while the job has frames left.
    - `highest_user_priority`: the most urgent priority a non-admin (the user token in
      STATE/user_token, or a frame's job token) may set; 1, the default, is no limit.
    - `metrics`: where Prometheus scrapes `GET /metrics` (`127.0.0.1:9531`); null, the
      default, serves none.
    - `resources`: farm-wide counters such as licenses, `{license.nuke: 10}`: a frame
      reserving one holds it while it runs, and no more frames hold one than its total.
    - `outbox_pause_bytes`: a connection's next message is not read while more than
      this many bytes wait to be sent to it (backpressure: a peer that does not read
      its answers stops being served).
    - `max_outbox_bytes`: a peer is dropped when a message is to be sent to it while
      more than this many bytes already wait; at least `outbox_pause_bytes`.
    - `idle_timeout`: seconds after which an admin, user or job-token session with no
      request in flight is closed; also how long a paused connection (above) may take
      nothing before it is dropped.
    - `max_handshakes`, `max_admin_sessions`, `max_user_sessions`,
      `max_worker_sessions`: how many connections may be open at once still in their
      hello, with the farm token, with the user token or a job token, and as workers.
      The excess is refused with an `error` (`unavailable`).
    """

    listen: Address = attrs.field(default=DEFAULT_LISTEN, validator=_check_listen)
    state_dir: Path = attrs.field(factory=default_state_dir, validator=_check_state_dir)
    default_priority: int = attrs.field(default=DEFAULT_PRIORITY, validator=_check_priority)
    default_cluster: ClusterPath = attrs.field(
        default=ROOT, converter=_to_cluster, validator=_check_default_cluster
    )
    heartbeat_interval: float = attrs.field(
        default=5.0, converter=_to_seconds, validator=_check_interval
    )
    heartbeat_timeout: float = attrs.field(
        default=15.0, converter=_to_seconds, validator=_check_timeout
    )
    lost_worker_grace: float = attrs.field(
        default=60.0, converter=_to_seconds, validator=_check_grace
    )
    max_frame_bytes: int = attrs.field(default=DEFAULT_FRAME_BYTES, validator=_check_frame_bytes)
    store: str = attrs.field(default="sqlite", validator=_check_store)
    preempt_policy: str = attrs.field(default="passive", validator=_check_preempt_policy)
    resources: dict[str, float] = attrs.field(factory=dict)
    metrics: Address | None = attrs.field(default=None, validator=_check_metrics)
    highest_user_priority: int = attrs.field(default=1, validator=_check_priority)
    outbox_pause_bytes: int = attrs.field(default=2**20, validator=_check_outbox_bytes)
    max_outbox_bytes: int = attrs.field(default=32 * 2**20, validator=_check_outbox_limit)
    idle_timeout: float = attrs.field(
        default=300.0, converter=_to_seconds, validator=_check_idle_timeout
    )
    max_handshakes: int = attrs.field(default=256, validator=_check_sessions)
    max_admin_sessions: int = attrs.field(default=256, validator=_check_sessions)
    max_user_sessions: int = attrs.field(default=1024, validator=_check_sessions)
    max_worker_sessions: int = attrs.field(default=10_000, validator=_check_sessions)


_SUPERVISOR_KEYS: Final = tuple(field.name for field in attrs.fields(SupervisorConfig))

# --------------------------------------------------------------------------- workers

ENTRY_KEYS: Final = (
    "template",
    "cluster",
    "restrictions",
    "slots",
    "types",
    "properties",
    "resources",
)
MAX_RANGE_HOSTS: Final = 100_000
_MAX_RANGE_DIGITS: Final = 18
# A template's name.
_TEMPLATE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_HOST_TEXT = re.compile(r"[A-Za-z0-9_.-]+")
_GLOB_TEXT = re.compile(r"[A-Za-z0-9_.*?-]+")
_RANGE_TEXT = re.compile(r"([A-Za-z0-9_.-]*)\[([0-9]+)-([0-9]+)\]([A-Za-z0-9_.-]*)")
_DIGITS = re.compile(r"[0-9]+")

_T = TypeVar("_T")


def _setting(check: Callable[[object], _T], value: object) -> _T:
    """`check(value)` by a rule of `farmd.worker_settings` (the one every worker
    setting meets, from a file, a flag or the wire), a refusal made a config error."""
    try:
        return check(value)
    except WorkerSettingsError as exc:
        raise _FieldError.refuse((exc.field,), exc.value, exc.problem) from None


def _worker_cluster(value: object) -> ClusterPath:
    try:
        return _setting(worker_settings.check_cluster, value)
    except ClusterPathError as exc:
        problem = str(exc).removeprefix(f"bad cluster path {quote(str(value))}: ")
        raise _FieldError.refuse(("cluster",), value, problem) from None


def _worker_restrictions(value: object) -> str:
    """The canonical text of a restriction expression ('' for none)."""
    try:
        return str(_setting(worker_settings.check_restrictions, value))
    except RestrictionError as exc:
        problem = str(exc).removeprefix(f"bad restrictions {quote(str(value))} ")
        raise _FieldError.refuse(("restrictions",), value, problem) from None


def _worker_slots(value: object) -> int:
    return _setting(worker_settings.check_slots, value)


def _job_type(value: object) -> str:
    return _setting(worker_settings.check_job_type, value)


def _worker_types(value: object) -> tuple[str, ...]:
    return _setting(worker_settings.check_types, value)


def _property_name(name: object) -> str:
    return _setting(worker_settings.check_property_name, name)


def _property_value(value: object) -> Fact:
    return _setting(worker_settings.check_property_value, value)


def _worker_properties(value: object) -> dict[str, Fact]:
    return _setting(worker_settings.check_properties, value)


def _resource_name(name: object) -> str:
    return _setting(worker_settings.check_resource_name, name)


def _resource_amount(value: object) -> float:
    return _setting(worker_settings.check_resource_amount, value)


def _worker_resources(value: object) -> dict[str, float]:
    return _setting(worker_settings.check_resources, value)


def _template_name(name: object) -> str:
    if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
        problem = "a template's name is letters, digits, '_' and '-', starting with a letter"
        raise _FieldError.refuse(("template",), name, problem)
    return name


def _template_list(value: object) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise _FieldError.refuse(("template",), value, "must be a template name or a list")
    checked = tuple(_template_name(name) for name in names)
    for i, name in enumerate(checked):
        if name in checked[:i]:
            raise _FieldError.refuse(("template",), name, "is listed twice")
    return checked


# WorkerEntry's converters: None is "not set"; anything else must be a good value.
def _opt_cluster(value: object) -> ClusterPath | None:
    return None if value is None else _worker_cluster(value)


def _opt_restrictions(value: object) -> str | None:
    return None if value is None else _worker_restrictions(value)


def _opt_slots(value: object) -> int | None:
    return None if value is None else _worker_slots(value)


def _opt_types(value: object) -> tuple[str, ...] | None:
    return None if value is None else _worker_types(value)


@attrs.frozen(kw_only=True)
class WorkerEntry:
    """One entry of the `workers:` section: `default`, a template or a host entry.

    Each key is None (or empty) where the entry does not set it; `templates` are the
    ones it inherits (the `template:` key), applied in order before its own keys. Values
    are checked and normalised on construction: `cluster` as a cluster path,
    `restrictions` to its canonical text, `resources` amounts to numbers.
    """

    templates: tuple[str, ...] = attrs.field(default=(), converter=_template_list)
    cluster: ClusterPath | None = attrs.field(default=None, converter=_opt_cluster)
    restrictions: str | None = attrs.field(default=None, converter=_opt_restrictions)
    slots: int | None = attrs.field(default=None, converter=_opt_slots)
    types: tuple[str, ...] | None = attrs.field(default=None, converter=_opt_types)
    properties: dict[str, Fact] = attrs.field(factory=dict, converter=_worker_properties)
    resources: dict[str, float] = attrs.field(factory=dict, converter=_worker_resources)


class PatternKind(enum.Enum):
    EXACT = "exact"  # node07
    GLOB = "glob"  # gpu-*: fnmatch's * and ?, case-sensitive
    RANGE = "range"  # render[001-120]


@attrs.frozen
class HostPattern:
    """Which hosts a host entry names: one exact name, a glob (`*`, `?`) or a numbered
    range (`render[001-120]`: a leading zero on either end pads every number to that
    width; without one, numbers are written without leading zeros)."""

    text: str
    kind: PatternKind
    prefix: str = ""
    suffix: str = ""
    first: int = 0
    last: int = 0
    width: int = 0  # zero padding of a range's numbers; 0: none

    def matches(self, host: str) -> bool:
        if self.kind is PatternKind.EXACT:
            return host == self.text
        if self.kind is PatternKind.GLOB:
            return fnmatch.fnmatchcase(host, self.text)
        end = len(host) - len(self.suffix)
        if end <= len(self.prefix) or not (
            host.startswith(self.prefix) and host.endswith(self.suffix)
        ):
            return False
        digits = host[len(self.prefix) : end]
        if not _DIGITS.fullmatch(digits) or len(digits) > _MAX_RANGE_DIGITS:
            return False
        if self.width and len(digits) != self.width:
            return False
        if not self.width and digits != str(int(digits)):
            return False  # render007 is not in render[1-120]
        return self.first <= int(digits) <= self.last


def parse_host_pattern(text: object) -> HostPattern:
    """The hosts a host entry's key names; refuses anything but a name, glob or range."""
    if not isinstance(text, str) or not text:
        raise _FieldError.refuse(("host",), text, "must be a host name, glob or range")
    if _HOST_TEXT.fullmatch(text):
        return HostPattern(text, PatternKind.EXACT)
    if _GLOB_TEXT.fullmatch(text):
        return HostPattern(text, PatternKind.GLOB)
    match = _RANGE_TEXT.fullmatch(text)
    if match is None:
        if "[" in text or "]" in text:
            problem = (
                "brackets are only for one numbered range such as render[001-120], "
                "which cannot be combined with * or ?"
            )
        else:
            problem = (
                "a host name holds letters, digits, '_', '.' and '-'; a glob also * "
                "and ?; a range one [FIRST-LAST] part"
            )
        raise _FieldError.refuse(("host",), text, problem)
    prefix, low, high, suffix = match.groups()
    if max(len(low), len(high)) > _MAX_RANGE_DIGITS:
        problem = f"the numbers of a range have at most {_MAX_RANGE_DIGITS} digits"
        raise _FieldError.refuse(("host",), text, problem)
    padded = any(len(end) > 1 and end.startswith("0") for end in (low, high))
    if padded and len(low) != len(high):
        problem = (
            f"zero padding needs both ends of [{low}-{high}] written with the same number "
            "of digits, such as [001-120]"
        )
        raise _FieldError.refuse(("host",), text, problem)
    first, last = int(low), int(high)
    if first > last:
        problem = f"the range [{low}-{high}] runs backwards: write [{high}-{low}]"
        raise _FieldError.refuse(("host",), text, problem)
    if last - first + 1 > MAX_RANGE_HOSTS:
        problem = (
            f"a range names at most {MAX_RANGE_HOSTS} hosts, [{low}-{high}] names "
            f"{last - first + 1}"
        )
        raise _FieldError.refuse(("host",), text, problem)
    return HostPattern(
        text, PatternKind.RANGE, prefix, suffix, first, last, len(low) if padded else 0
    )


def _template_cycle(graph: Mapping[str, Sequence[str]]) -> tuple[str, ...] | None:
    """A cycle of templates inheriting each other, as `(a, b, a)`, or None. Names that
    are not in `graph` are taken as leaves."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path = [start]
        on_path = {start}
        iters = [iter(graph[start])]
        while iters:
            name = next(iters[-1], None)
            if name is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                iters.pop()
                continue
            if name in on_path:
                return (*path[path.index(name) :], name)
            if name in done or name not in graph:
                continue
            path.append(name)
            on_path.add(name)
            iters.append(iter(graph[name]))
    return None


def _check_templates(
    inst: WorkersConfig, _: attrs.Attribute[Any], templates: Mapping[str, WorkerEntry]
) -> None:
    for name in templates:
        _template_name(name)
    entries = [inst.default, *templates.values(), *inst.hosts.values()]
    for entry in entries:
        for name in entry.templates:
            if name not in templates:
                raise _FieldError.refuse(("template",), name, "is not a template")
    cycle = _template_cycle({name: entry.templates for name, entry in templates.items()})
    if cycle is not None:
        raise _FieldError.refuse(("template",), cycle[0], _cycle_problem(cycle))


def _cycle_problem(cycle: tuple[str, ...]) -> str:
    return f"templates inherit each other in a cycle: {' -> '.join(cycle)}"


def _to_patterns(hosts: Mapping[str, WorkerEntry]) -> dict[str, WorkerEntry]:
    for text in hosts:
        parse_host_pattern(text)
    return dict(hosts)


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """The effective central configuration of one host (`WorkersConfig.settings_for`).

    None (or, for `properties` and `resources`, a missing name) means "not set
    centrally": the worker's own flag, or its default, applies; `combine` does that.
    `sources` names the entries that applied, in order ("default", "template gpu",
    "host render[001-120]"); `origins` the one each key's value came from, by key
    ("cluster", "properties.rack", "resources.gpu").
    """

    cluster: str | None = None  # a normalised ClusterPath
    restrictions: str | None = None
    slots: int | None = None
    types: tuple[str, ...] | None = None
    properties: dict[str, Fact] = attrs.field(factory=dict)
    resources: dict[str, float] = attrs.field(factory=dict)
    sources: tuple[str, ...] = ()
    origins: dict[str, str] = attrs.field(factory=dict)

    def combine(
        self,
        *,
        cluster: str,
        restrictions: str,
        slots: int,
        types: Sequence[str],
        properties: Mapping[str, Any],
        resources: Mapping[str, float],
    ) -> dict[str, Any]:
        """A worker's own values (what it registered with, from its flags) with this
        configuration over them: every key set here wins, the worker's fill the rest;
        `properties` and `resources` merge name by name, `types` is replaced whole."""
        return {
            "cluster": cluster if self.cluster is None else self.cluster,
            "restrictions": restrictions if self.restrictions is None else self.restrictions,
            "slots": slots if self.slots is None else self.slots,
            "types": tuple(types) if self.types is None else self.types,
            "properties": {**properties, **self.properties},
            "resources": {**resources, **self.resources},
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: lists for tuples."""
        return {
            "cluster": self.cluster,
            "restrictions": self.restrictions,
            "slots": self.slots,
            "types": None if self.types is None else list(self.types),
            "properties": dict(self.properties),
            "resources": dict(self.resources),
            "sources": list(self.sources),
            "origins": dict(self.origins),
        }


@attrs.frozen(kw_only=True)
class WorkersConfig:
    """The central worker configuration (Qube's qbwrk.conf): a `default` entry for every
    host, named `templates` that entries inherit, and `hosts` entries keyed by an exact
    name, a glob or a numbered range, in file order. Checked on construction: template
    names, references to templates that exist, no inheritance cycle, host keys that
    parse (`parse_host_pattern`)."""

    default: WorkerEntry = attrs.field(factory=WorkerEntry)
    hosts: dict[str, WorkerEntry] = attrs.field(factory=dict, converter=_to_patterns)
    templates: dict[str, WorkerEntry] = attrs.field(factory=dict, validator=_check_templates)
    _patterns: tuple[tuple[HostPattern, WorkerEntry], ...] = attrs.field(
        init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        patterns = tuple((parse_host_pattern(text), e) for text, e in self.hosts.items())
        object.__setattr__(self, "_patterns", patterns)

    def settings_for(self, host: str) -> WorkerSettings:
        """The effective configuration of `host`: `default`, then the globs and ranges
        that match it in file order, then its exact entry; each entry's templates
        (depth-first, in listed order, each once) before its own keys."""
        chain = [("default", self.default)]
        chain += [
            (f"host {pattern.text}", entry)
            for pattern, entry in self._patterns
            if pattern.kind is not PatternKind.EXACT and pattern.matches(host)
        ]
        chain += [
            (f"host {pattern.text}", entry)
            for pattern, entry in self._patterns
            if pattern.kind is PatternKind.EXACT and pattern.matches(host)
        ]
        values: dict[str, Any] = {"properties": {}, "resources": {}}
        origins: dict[str, str] = {}
        sources: list[str] = []
        for label, entry in chain:
            for name in self._linearise(entry.templates):
                _apply(self.templates[name], f"template {name}", values, origins, sources)
            _apply(entry, label, values, origins, sources)
        return WorkerSettings(**values, sources=tuple(sources), origins=origins)

    def _linearise(self, roots: tuple[str, ...]) -> list[str]:
        """The templates `roots` bring in, parents first, each once (at the first place
        a depth-first walk in listed order reaches it)."""
        order: list[str] = []
        seen: set[str] = set()
        stack = [(name, False) for name in reversed(roots)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                order.append(name)
            elif name not in seen:
                seen.add(name)
                stack.append((name, True))
                stack.extend((parent, False) for parent in reversed(self.templates[name].templates))
        return order


_REPLACED: Final = ("cluster", "restrictions", "slots", "types")
_MERGED: Final = ("properties", "resources")


def _apply(
    entry: WorkerEntry,
    label: str,
    values: dict[str, Any],
    origins: dict[str, str],
    sources: list[str],
) -> None:
    sources.append(label)
    for key in _REPLACED:
        value = getattr(entry, key)
        if value is not None:
            values[key] = value
            origins[key] = label
    for key in _MERGED:
        for name, value in getattr(entry, key).items():
            values[key][name] = value
            origins[f"{key}.{name}"] = label


@attrs.frozen(kw_only=True)
class FarmConfig:
    """Everything a config file holds: the supervisor's settings and the central worker
    configuration, each its defaults where the file has no such section."""

    supervisor: SupervisorConfig = attrs.field(factory=SupervisorConfig)
    workers: WorkersConfig = attrs.field(factory=WorkersConfig)


# --------------------------------------------------------------------------- the file

_TAG: Final = "tag:yaml.org,2002:"
_MAP_TAG: Final = _TAG + "map"
_STR_TAG: Final = _TAG + "str"
_NULL_TAG: Final = _TAG + "null"
# Standard scalar tags SafeConstructor builds; a value of the wrong one of these is
# refused as a wrong type, any other tag (`!foo`, `!!python/...`) as non-standard.
_SCALAR_TAGS: Final = frozenset(
    _TAG + name for name in ("null", "bool", "int", "float", "str", "timestamp", "binary")
)
_MAX_SHOWN: Final = 60


@attrs.frozen
class _Source:
    """The file being read: its name for messages and its directory for relative paths."""

    filename: str
    directory: Path
    constructor: yaml.constructor.SafeConstructor = attrs.field(
        factory=yaml.constructor.SafeConstructor, eq=False
    )

    def error(self, node: yaml.Node, key: str, what: str) -> ConfigError:
        """`FILE:LINE:COLUMN: KEY: what (got VALUE)`, at the start of `node`."""
        mark = node.start_mark
        where = f"{self.filename}:{mark.line + 1}:{mark.column + 1}"
        return ConfigError(f"{where}: {key}: {what} (got {_show(node)})")

    def mapping(
        self, node: yaml.Node, key: str, allowed: tuple[str, ...] | None, what: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The items of a mapping node by key; refuses a non-mapping (a null is empty),
        keys that are not strings, duplicates and keys outside `allowed` (None: any)."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return {}
        if not isinstance(node, yaml.MappingNode) or node.tag != _MAP_TAG:
            raise self.error(node, key, f"must be a mapping of {what}")
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG):
                if key_node.tag == _TAG + "merge":
                    raise self.error(key_node, key, "merge keys ('<<') are not supported")
                raise self.error(key_node, key, f"{what} must be named by plain strings")
            name = key_node.value
            if allowed is not None and name not in allowed:
                raise self.error(key_node, key, f"unknown key; allowed: {', '.join(allowed)}")
            if name in items:
                first = items[name][0].start_mark
                where = f"{first.line + 1}:{first.column + 1}"
                raise self.error(
                    key_node, f"{key}.{name}", f"duplicate key, first given at {where}"
                )
            items[name] = (key_node, value_node)
        return items

    def scalar(self, node: yaml.Node, key: str) -> object:
        """The Python value of a scalar node with a standard tag."""
        if isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "must be a single value")
        if isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, "must be a single value")
        if node.tag not in _SCALAR_TAGS:
            tag = "!!" + node.tag.removeprefix(_TAG) if node.tag.startswith(_TAG) else node.tag
            raise self.error(node, key, f"non-standard YAML tag {tag!r} is not allowed")
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
            # An explicit standard tag on text it cannot read: `!!int abc`, `!!bool maybe`.
            tag = node.tag.removeprefix(_TAG)
            raise self.error(node, key, f"not a valid !!{tag} value") from None


def _show(node: yaml.Node) -> str:
    """The source text of a value, quoted and on one line, for `(got ...)`."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "null"
    text = str(node.value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return repr(text)


@attrs.define
class _Document:
    """What a config file holds, one attribute per section; None where it has none."""

    supervisor: SupervisorConfig | None = None
    workers: WorkersConfig | None = None


def _supervisor_section(source: _Source, node: yaml.Node, doc: _Document) -> None:
    items = source.mapping(node, "supervisor", _SUPERVISOR_KEYS, "supervisor settings")
    # Values are checked by SupervisorConfig's validators; only the two that need a
    # conversion from text are read here.
    values: dict[str, Any] = {}
    for name, (_, value_node) in items.items():
        key = f"supervisor.{name}"
        if name == "resources":
            values[name] = _resources_value(source, value_node, key)
            continue
        value = source.scalar(value_node, key)
        if name == "listen" or (name == "metrics" and value is not None):
            value = _address_value(source, value_node, key, value)
        elif name == "state_dir":
            value = _path_value(source, value_node, key, value)
        values[name] = value
    try:
        doc.supervisor = SupervisorConfig(**values)
    except _FieldError as exc:
        for field in exc.fields:
            if field in items:
                value_node = items[field][1]
                problem = exc.problem
                if value_node.tag == _TAG + "bool":
                    problem += "; in YAML, yes/no/on/off are true/false"
                raise source.error(value_node, f"supervisor.{field}", problem) from None
        raise source.error(node, "supervisor", exc.problem) from None  # defaults clash
    except ConfigError as exc:  # default_state_dir() found no home directory
        raise source.error(node, "supervisor", str(exc)) from None


def _resources_value(source: _Source, node: yaml.Node, key: str) -> dict[str, float]:
    """Farm-wide counters: `license.nuke: 10`; names need a dot, totals are >= 0."""
    totals = {}
    for name, (key_node, value_node) in source.mapping(node, key, None, "counters").items():
        try:
            check_name(name)
        except UserError as exc:
            raise source.error(key_node, f"{key}.{name}", str(exc)) from None
        if not is_global(name):
            what = f"a farm-wide counter's name needs a dot (license.{name})"
            raise source.error(key_node, f"{key}.{name}", what)
        value = source.scalar(value_node, f"{key}.{name}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**62:
            raise source.error(value_node, f"{key}.{name}", "must be a number, 0 or more")
        totals[name] = value
    return totals


def _address_value(source: _Source, node: yaml.Node, key: str, value: object) -> Address:
    if not isinstance(value, str):
        what = "must be an address such as '127.0.0.1:7531' or ':7531', quoted if IPv6"
        raise source.error(node, key, what)
    result = _parse_address(value)
    if isinstance(result, str):
        raise source.error(node, key, result)
    return result


def _path_value(source: _Source, node: yaml.Node, key: str, value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise source.error(node, key, "must be a directory path")
    if "\0" in value:
        raise source.error(node, key, "must not contain a NUL character")
    path = _expand_user(Path(value))
    if path is None:
        raise source.error(node, key, "cannot expand '~' in this path")
    return source.directory / path


_WORKERS_KEYS: Final = ("default", "templates", "hosts")
_SEQ_TAG: Final = _TAG + "seq"
_BOOL_WORDS: Final = ("true", "false")

# A template reference as the file wrote it: the entry's key path, the name, its node.
_Ref = tuple[str, str, yaml.Node]


def _workers_section(source: _Source, node: yaml.Node, doc: _Document) -> None:
    items = source.mapping(node, "workers", _WORKERS_KEYS, "worker settings")
    refs: list[_Ref] = []
    default = WorkerEntry()
    if "default" in items:
        default = _worker_entry(source, items["default"][1], "workers.default", refs)
    templates: dict[str, WorkerEntry] = {}
    if "templates" in items:
        key = "workers.templates"
        named = source.mapping(items["templates"][1], key, None, "templates")
        for name, (key_node, value_node) in named.items():
            _located(source, key_node, f"{key}.{name}", _template_name, name)
            templates[name] = _worker_entry(source, value_node, f"{key}.{name}", refs)
    hosts: dict[str, WorkerEntry] = {}
    if "hosts" in items:
        key = "workers.hosts"
        named = source.mapping(items["hosts"][1], key, None, "host entries")
        for text, (key_node, value_node) in named.items():
            _located(source, key_node, f"{key}.{text}", parse_host_pattern, text)
            hosts[text] = _worker_entry(source, value_node, f"{key}.{text}", refs)
    for key, name, ref_node in refs:
        if name not in templates:
            known = ", ".join(templates) or "none are defined"
            raise source.error(ref_node, key, f"unknown template; templates: {known}")
    cycle = _template_cycle({name: entry.templates for name, entry in templates.items()})
    if cycle is not None:
        # point at the reference that closes the cycle
        closing = f"workers.templates.{cycle[-2]}.template"
        ref_node = next(n for k, name, n in refs if k == closing and name == cycle[-1])
        raise source.error(ref_node, closing, _cycle_problem(cycle))
    doc.workers = WorkersConfig(default=default, templates=templates, hosts=hosts)


def _worker_entry(source: _Source, node: yaml.Node, key: str, refs: list[_Ref]) -> WorkerEntry:
    """One entry; its template references are added to `refs`, to be checked once every
    template is known. Every value is checked here, where its node is at hand, by the
    same functions WorkerEntry's converters call."""
    items = source.mapping(node, key, ENTRY_KEYS, "worker settings")
    values: dict[str, Any] = {}
    for name, (_, value_node) in items.items():
        where = f"{key}.{name}"
        if name == "template":
            values["templates"] = _template_refs(source, value_node, where, refs)
        elif name == "types":
            values[name] = _types_value(source, value_node, where)
        elif name == "properties":
            values[name] = _facts_value(source, value_node, where)
        elif name == "resources":
            values[name] = _amounts_value(source, value_node, where)
        else:
            convert = {
                "cluster": _worker_cluster,
                "restrictions": _worker_restrictions,
                "slots": _worker_slots,
            }[name]
            values[name] = _located(source, value_node, where, convert)
    return WorkerEntry(**values)


_FROM_NODE: Final = object()


def _located(
    source: _Source,
    node: yaml.Node,
    key: str,
    check: Callable[[Any], Any],
    value: object = _FROM_NODE,
) -> Any:
    """`check(value)` (by default, of the scalar at `node`), with a refusal turned into
    a message located at `node`."""
    if value is _FROM_NODE:
        value = source.scalar(node, key)
    try:
        return check(value)
    except _FieldError as exc:
        problem = exc.problem
        if node.tag == _TAG + "bool":
            problem += "; in YAML, yes/no/on/off are true/false"
        raise source.error(node, key, problem) from None


def _sequence(source: _Source, node: yaml.Node, key: str, what: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ_TAG:
        raise source.error(node, key, f"must be a list of {what}")
    return list(node.value)


def _template_refs(source: _Source, node: yaml.Node, key: str, refs: list[_Ref]) -> list[str]:
    item_nodes: list[yaml.Node] = [node]
    if not isinstance(node, yaml.ScalarNode):
        item_nodes = _sequence(source, node, key, "template names, or one name")
    names: list[str] = []
    for item in item_nodes:
        name = _located(source, item, key, _template_name)
        if name in names:
            raise source.error(item, key, "template listed twice")
        names.append(name)
        refs.append((key, name, item))
    return names


def _types_value(source: _Source, node: yaml.Node, key: str) -> list[str]:
    types: list[str] = []
    for item in _sequence(source, node, key, "job types, such as [blender, nuke]"):
        name = _located(source, item, key, _job_type)
        if name in types:
            raise source.error(item, key, "job type listed twice")
        types.append(name)
    return types


def _facts_value(source: _Source, node: yaml.Node, key: str) -> dict[str, Fact]:
    facts: dict[str, Fact] = {}
    for name, (key_node, value_node) in source.mapping(node, key, None, "properties").items():
        where = f"{key}.{name}"
        _located(source, key_node, where, _property_name, name)
        if value_node.tag == _TAG + "bool" and value_node.value.lower() not in _BOOL_WORDS:
            what = "YAML 1.1 reads this as true/false: write true or false, or quote the text"
            raise source.error(value_node, where, what)
        value = source.scalar(value_node, where)
        if value is None:
            raise source.error(value_node, where, "must be a string, a number or true/false")
        facts[name] = _located(source, value_node, where, _property_value, value)
    return facts


def _amounts_value(source: _Source, node: yaml.Node, key: str) -> dict[str, float]:
    amounts: dict[str, float] = {}
    for name, (key_node, value_node) in source.mapping(node, key, None, "counters").items():
        where = f"{key}.{name}"
        _located(source, key_node, where, _resource_name, name)
        value = source.scalar(value_node, where)
        if value is None:
            raise source.error(value_node, where, "must be an amount such as 2 or 64G")
        amounts[name] = _located(source, value_node, where, _resource_amount, value)
    return amounts


_SectionParser = Callable[[_Source, yaml.Node, _Document], None]

# Top-level key -> its parser. A new section is a parser, an entry here and an
# attribute of _Document.
_SECTIONS: Final[Mapping[str, _SectionParser]] = {
    "supervisor": _supervisor_section,
    "workers": _workers_section,
}


def _parse_document(text: str, filename: str) -> _Document:
    source = _Source(filename, Path(filename).absolute().parent)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(filename, exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        msg = f"{filename}:{line}:{column}: YAML: control character {char!r} is not allowed"
        raise ConfigError(msg) from None
    except yaml.YAMLError as exc:
        msg = f"{filename}:1:1: YAML: {_one_line(str(exc))}"
        raise ConfigError(msg) from None
    except RecursionError:
        msg = f"{filename}:1:1: YAML: nested too deeply"
        raise ConfigError(msg) from None
    doc = _Document()
    if root is None:  # an empty file, or only comments
        return doc
    allowed = tuple(_SECTIONS)
    items = source.mapping(root, "top level", allowed, "sections such as 'supervisor:'")
    for name, (_, value_node) in items.items():
        _SECTIONS[name](source, value_node, doc)
    return doc


def _syntax_error(filename: str, exc: yaml.MarkedYAMLError) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1:1"
    parts = [p for p in (exc.context, exc.problem) if p]
    return ConfigError(f"{filename}:{where}: YAML syntax: {_one_line('; '.join(parts))}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def parse_farm_config(text: str, filename: str) -> FarmConfig:
    """Everything config text holds; `filename` names it in messages, and a relative
    `state_dir` is resolved against its directory."""
    doc = _parse_document(text, filename)
    return FarmConfig(
        supervisor=doc.supervisor if doc.supervisor is not None else SupervisorConfig(),
        workers=doc.workers if doc.workers is not None else WorkersConfig(),
    )


def load_farm_config(path: str | os.PathLike[str]) -> FarmConfig:
    """Read a config file (UTF-8 YAML): the supervisor's settings and the workers'."""
    filename = os.fspath(path)
    return parse_farm_config(_read_text(filename), filename)


def parse_supervisor_config(text: str, filename: str) -> SupervisorConfig:
    """The supervisor settings of config text (the whole text is checked, `workers:`
    included); `filename` names it in messages, and a relative `state_dir` is resolved
    against its directory."""
    return parse_farm_config(text, filename).supervisor


def load_supervisor_config(path: str | os.PathLike[str]) -> SupervisorConfig:
    """Read a config file (UTF-8 YAML) and return its supervisor settings."""
    return load_farm_config(path).supervisor


def _read_text(filename: str) -> str:
    try:
        data = Path(filename).read_bytes()
    except OSError as exc:
        msg = f"{filename}: cannot read config file: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")  # valid up to the bad byte
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        bad = data[exc.start : exc.end]
        msg = f"{filename}:{line}:{column}: not UTF-8 text (got {bad!r})"
        raise ConfigError(msg) from None
