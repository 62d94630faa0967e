"""Listen addresses, the supervisor's settings and the strict YAML file they come from.

Theory of operation
-------------------
A config file is one YAML mapping of *sections*. `_SECTIONS` maps each top-level key to
the function that parses it; today only `supervisor:` exists, and every other key is
refused as unknown (a `workers:` or `resources:` section is added by writing its parser
and one table entry). Leaving a section out, or the whole file empty, means its
defaults::

    supervisor:
      listen: 127.0.0.1:7531        # or ":7531"; IPv6 must be quoted: "[::1]:7531"
      state_dir: /var/lib/farmd     # relative paths are taken from this file's directory
      default_priority: 9999        # 1 is the most urgent
      default_cluster: /
      heartbeat_interval: 5.0       # seconds
      heartbeat_timeout: 15.0       # seconds; must exceed heartbeat_interval
      lost_worker_grace: 60.0       # seconds a running frame's worker has to come back
      max_frame_bytes: 4194304      # 64 KiB .. 256 MiB
      store: sqlite                 # or memory
      preempt_policy: passive       # or aggressive, disabled
      resources:                    # farm-wide counters; names need a dot
        license.nuke: 10

The file is strict (STYLE.md, "Config is strict"): an unknown key, a duplicate key, a
value of the wrong type, a value out of range, a non-standard tag, a YAML syntax error or
an unreadable file is refused with one line, `FILE:LINE:COLUMN: KEY: what is wrong (got
VALUE)`, pointing at the value (or, for an unknown or duplicate key, at the key). YAML
1.1 reads `yes`, `no`, `on` and `off` as booleans; a boolean is never accepted where a
number belongs.

To know lines and columns the loader never calls `yaml.load`: it composes the document
into nodes (`yaml.compose` with `SafeLoader`), walks the mappings itself, and constructs
only the scalars it interprets, with `SafeConstructor`, after checking that their tags
are standard ones. Nodes it does not interpret are never constructed at all.

The values themselves are checked in exactly one place, the attrs validators of
`SupervisorConfig` and `Address`, so a config built in code is held to the same rules as
one read from a file. The validators raise `_FieldError`, a `ConfigError` that also
carries the field name and the bare problem, which the loader turns into a located
message. Everything here is pure apart from reading the file and the environment
(`default_state_dir`).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import yaml

from farmd.cluster import ROOT, ClusterPath, parse_cluster
from farmd.errors import ClusterPathError, ConfigError, UserError
from farmd.ranking import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY
from farmd.resources import check_name, is_global

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
    """
    farmd_state = os.environ.get("FARMD_STATE")
    if farmd_state:
        expanded = _expand_user(Path(farmd_state))
        if expanded is None:
            msg = f"bad $FARMD_STATE {farmd_state!r}: cannot expand '~'"
            raise ConfigError(msg)
        return expanded.absolute()
    xdg_state = os.environ.get("XDG_STATE_HOME")
    if xdg_state and Path(xdg_state).is_absolute():
        return Path(xdg_state) / "farmd"
    home = _expand_user(Path("~"))
    if home is None:
        msg = "cannot find the home directory for the default state dir: set $FARMD_STATE"
        raise ConfigError(msg)
    return home / ".local" / "state" / "farmd"


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
        problem = str(exc).removeprefix(f"bad cluster path {value!r}: ")
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
    - `resources`: farm-wide counters such as licenses, `{license.nuke: 10}`: a frame
      reserving one holds it while it runs, and no more frames hold one than its total.
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


_SUPERVISOR_KEYS: Final = tuple(field.name for field in attrs.fields(SupervisorConfig))

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
        if name == "listen":
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


_SectionParser = Callable[[_Source, yaml.Node, _Document], None]

# Top-level key -> its parser. A new section is a parser, an entry here and an
# attribute of _Document.
_SECTIONS: Final[Mapping[str, _SectionParser]] = {
    "supervisor": _supervisor_section,
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


def parse_supervisor_config(text: str, filename: str) -> SupervisorConfig:
    """The supervisor settings of config text; `filename` names it in messages, and a
    relative `state_dir` is resolved against its directory."""
    doc = _parse_document(text, filename)
    return doc.supervisor if doc.supervisor is not None else SupervisorConfig()


def load_supervisor_config(path: str | os.PathLike[str]) -> SupervisorConfig:
    """Read a config file (UTF-8 YAML) and return its supervisor settings."""
    filename = os.fspath(path)
    try:
        data = Path(filename).read_bytes()
    except OSError as exc:
        msg = f"{filename}: cannot read config file: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")  # valid up to the bad byte
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        bad = data[exc.start : exc.end]
        msg = f"{filename}:{line}:{column}: not UTF-8 text (got {bad!r})"
        raise ConfigError(msg) from None
    return parse_supervisor_config(text, filename)
