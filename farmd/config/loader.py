"""Reading a config file: its sections, each parsed into its settings class, and the
`parse_*`/`load_*` entry points.

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
      history_after: 300.0          # seconds an ended job stays in `farmd jobs`
      history_days: 30              # days history keeps it; 0: for ever
      audit_days: 90                # days the audit log keeps an entry; 0: for ever
      shared_user_token: true       # the old shared STATE/user_token still works
      store: sqlite                 # or memory, or postgresql://HOST/DB (active/standby)
      advertise: farm1.example.com:7531   # where peers reach this one (standbys say so)
      preempt_policy: passive       # or aggressive, disabled
      resources:                    # farm-wide counters; names need a dot
        license.nuke: 10
      notify:                       # told (a JSON POST) when a job there ends
        /show1: https://chat.example.com/hooks/show1
      notify_allow: [https://chat.example.com/]   # what a job's own --notify may be
      tls:                          # farmd.tls
        mode: auto                  # TLS; plaintext only on loopback. Or required, off
        names: [farm.example.com]   # more names the farm's own certificate names
        # cert: site.pem            # a site's certificate and key instead of the
        # key: site.key             # farm's own (made in STATE/tls), and the CA
        # ca: site-ca.pem           # its peers are given
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
        # how agents run frames (applied when they register): as the job's owner
        # (a root agent; never as root), mapped to an OS account; which of the agent's
        # environment variables a frame gets
        farm[01-40]: {run_as: owner, users: {alice: alice_r}, env_passthrough: [PATH, OCIO]}

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
converters of `SupervisorConfig`, `Address`, `WorkerEntry` and `WorkersConfig` (the
worker values by `farmd.worker_settings`), so a config built in code is held to the
same rules as one read from a file; the workers loader calls the same converter
functions item by item, to point at the item. They raise `FieldError`, a `ConfigError`
that also carries the field name and the bare problem, which the loader turns into a
located message. Everything here is pure apart from reading the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import yaml

from farmd.config.addresses import Address, address_or_problem
from farmd.config.fields import FieldError
from farmd.config.state_dir import expand_user
from farmd.config.supervisor_settings import SUPERVISOR_KEYS, SupervisorConfig
from farmd.config.tls_settings import TLS_MODES, TlsSettings
from farmd.config.workers import (
    ENTRY_KEYS,
    WorkerEntry,
    WorkersConfig,
    cycle_problem,
    job_type,
    parse_host_pattern,
    property_name,
    property_value,
    resource_amount,
    resource_name,
    template_cycle,
    template_name,
    worker_cluster,
    worker_env_passthrough,
    worker_restrictions,
    worker_run_as,
    worker_slots,
    worker_user_map,
)
from farmd.config.yaml_nodes import TAG, Source
from farmd.errors import ConfigError, UserError
from farmd.resources import check_name, is_global
from farmd.worker_settings import Fact


@attrs.frozen(kw_only=True)
class FarmConfig:
    """Everything a config file holds: the supervisor's settings and the central worker
    configuration, each its defaults where the file has no such section."""

    supervisor: SupervisorConfig = attrs.field(factory=SupervisorConfig)
    workers: WorkersConfig = attrs.field(factory=WorkersConfig)


@attrs.define
class _Document:
    """What a config file holds, one attribute per section; None where it has none."""

    supervisor: SupervisorConfig | None = None
    workers: WorkersConfig | None = None


def _supervisor_section(source: Source, node: yaml.Node, doc: _Document) -> None:
    items = source.mapping(node, "supervisor", SUPERVISOR_KEYS, "supervisor settings")
    # Values are checked by SupervisorConfig's validators; only the two that need a
    # conversion from text are read here.
    values: dict[str, Any] = {}
    for name, (_, value_node) in items.items():
        key = f"supervisor.{name}"
        if name == "resources":
            values[name] = _resources_value(source, value_node, key)
            continue
        if name == "tls":
            values[name] = _tls_value(source, value_node, key)
            continue
        if name == "notify":
            urls = {}
            for cluster, (_, url_node) in source.mapping(value_node, key, None, "URLs").items():
                urls[cluster] = source.scalar(url_node, f"{key}.{cluster}")
            values[name] = urls
            continue
        if name == "notify_allow":
            prefixes = _sequence(source, value_node, key, "URL prefixes")
            values[name] = [source.scalar(item, key) for item in prefixes]
            continue
        value = source.scalar(value_node, key)
        if name == "listen" or (name in ("metrics", "http", "advertise") and value is not None):
            value = _address_value(source, value_node, key, value)
        elif name == "state_dir":
            value = _path_value(source, value_node, key, value)
        values[name] = value
    try:
        doc.supervisor = SupervisorConfig(**values)
    except FieldError as exc:
        for field in exc.fields:
            if field in items:
                value_node = items[field][1]
                problem = exc.problem
                if value_node.tag == TAG + "bool":
                    problem += "; in YAML, yes/no/on/off are true/false"
                raise source.error(value_node, f"supervisor.{field}", problem) from None
        raise source.error(node, "supervisor", exc.problem) from None  # defaults clash
    except ConfigError as exc:  # default_state_dir() found no home directory
        raise source.error(node, "supervisor", str(exc)) from None


def _resources_value(source: Source, node: yaml.Node, key: str) -> dict[str, float]:
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


_TLS_KEYS: Final = ("mode", "cert", "key", "ca", "names")


def _tls_value(source: Source, node: yaml.Node, key: str) -> TlsSettings:
    """`tls: {mode: auto, cert: FILE, key: FILE, ca: FILE, names: [NAME, ...]}`."""
    items = source.mapping(node, key, _TLS_KEYS, "TLS settings")
    values: dict[str, Any] = {}
    for name, (_, value_node) in items.items():
        where = f"{key}.{name}"
        if name == "names":
            if not isinstance(value_node, yaml.SequenceNode) or value_node.tag != _SEQ_TAG:
                raise source.error(value_node, where, "must be a list of host names or addresses")
            names = []
            for item in value_node.value:
                text = source.scalar(item, where)
                if not isinstance(text, str):
                    raise source.error(item, where, "must be a host name or address")
                names.append(text)
            values[name] = tuple(names)
            continue
        value = source.scalar(value_node, where)
        if name == "mode":
            if value is False:  # YAML 1.1 reads an unquoted `off` as false
                value = "off"
            if value not in TLS_MODES:
                raise source.error(value_node, where, f"must be one of {', '.join(TLS_MODES)}")
            values[name] = value
        elif value is not None:
            values[name] = _file_value(source, value_node, where, value)
    try:
        return TlsSettings(**values)
    except ConfigError as exc:
        raise source.error(node, key, str(exc)) from None


def _file_value(source: Source, node: yaml.Node, key: str, value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise source.error(node, key, "must be a file path")
    return _path_value(source, node, key, value)


def _address_value(source: Source, node: yaml.Node, key: str, value: object) -> Address:
    if not isinstance(value, str):
        what = "must be an address such as '127.0.0.1:7531' or ':7531', quoted if IPv6"
        raise source.error(node, key, what)
    result = address_or_problem(value)
    if isinstance(result, str):
        raise source.error(node, key, result)
    return result


def _path_value(source: Source, node: yaml.Node, key: str, value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise source.error(node, key, "must be a directory path")
    if "\0" in value:
        raise source.error(node, key, "must not contain a NUL character")
    path = expand_user(Path(value))
    if path is None:
        raise source.error(node, key, "cannot expand '~' in this path")
    return source.directory / path


_WORKERS_KEYS: Final = ("default", "templates", "hosts")
_SEQ_TAG: Final = TAG + "seq"
_BOOL_WORDS: Final = ("true", "false")

# A template reference as the file wrote it: the entry's key path, the name, its node.
_Ref = tuple[str, str, yaml.Node]


def _workers_section(source: Source, node: yaml.Node, doc: _Document) -> None:
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
            _located(source, key_node, f"{key}.{name}", template_name, name)
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
    cycle = template_cycle({name: entry.templates for name, entry in templates.items()})
    if cycle is not None:
        # point at the reference that closes the cycle
        closing = f"workers.templates.{cycle[-2]}.template"
        ref_node = next(n for k, name, n in refs if k == closing and name == cycle[-1])
        raise source.error(ref_node, closing, cycle_problem(cycle))
    doc.workers = WorkersConfig(default=default, templates=templates, hosts=hosts)


def _worker_entry(source: Source, node: yaml.Node, key: str, refs: list[_Ref]) -> WorkerEntry:
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
        elif name == "users":
            values[name] = _users_value(source, value_node, where)
        elif name == "env_passthrough":
            names = []
            for item in _sequence(source, value_node, where, "variable names"):
                one = _located(
                    source, item, where, worker_env_passthrough, [source.scalar(item, where)]
                )
                names.extend(one)
            values[name] = _located(source, value_node, where, worker_env_passthrough, names)
        else:
            convert = {
                "cluster": worker_cluster,
                "restrictions": worker_restrictions,
                "slots": worker_slots,
                "run_as": worker_run_as,
            }[name]
            values[name] = _located(source, value_node, where, convert)
    return WorkerEntry(**values)


def _users_value(source: Source, node: yaml.Node, key: str) -> dict[str, str]:
    """`users: {alice: alice_r}`: a job owner -> the OS account its frames run as."""
    found: dict[str, str] = {}
    for owner, (key_node, value_node) in source.mapping(node, key, None, "owners").items():
        account = source.scalar(value_node, f"{key}.{owner}")
        # each checked where it is written: the owner at its key, the account at its value
        _located(source, key_node, key, worker_user_map, {owner: "account"})
        _located(source, value_node, f"{key}.{owner}", worker_user_map, {"owner": account})
        found[owner] = str(account)
    return found


_FROM_NODE: Final = object()


def _located(
    source: Source,
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
    except FieldError as exc:
        problem = exc.problem
        if node.tag == TAG + "bool":
            problem += "; in YAML, yes/no/on/off are true/false"
        raise source.error(node, key, problem) from None


def _sequence(source: Source, node: yaml.Node, key: str, what: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ_TAG:
        raise source.error(node, key, f"must be a list of {what}")
    return list(node.value)


def _template_refs(source: Source, node: yaml.Node, key: str, refs: list[_Ref]) -> list[str]:
    item_nodes: list[yaml.Node] = [node]
    if not isinstance(node, yaml.ScalarNode):
        item_nodes = _sequence(source, node, key, "template names, or one name")
    names: list[str] = []
    for item in item_nodes:
        name = _located(source, item, key, template_name)
        if name in names:
            raise source.error(item, key, "template listed twice")
        names.append(name)
        refs.append((key, name, item))
    return names


def _types_value(source: Source, node: yaml.Node, key: str) -> list[str]:
    types: list[str] = []
    for item in _sequence(source, node, key, "job types, such as [blender, nuke]"):
        name = _located(source, item, key, job_type)
        if name in types:
            raise source.error(item, key, "job type listed twice")
        types.append(name)
    return types


def _facts_value(source: Source, node: yaml.Node, key: str) -> dict[str, Fact]:
    facts: dict[str, Fact] = {}
    for name, (key_node, value_node) in source.mapping(node, key, None, "properties").items():
        where = f"{key}.{name}"
        _located(source, key_node, where, property_name, name)
        if value_node.tag == TAG + "bool" and value_node.value.lower() not in _BOOL_WORDS:
            what = "YAML 1.1 reads this as true/false: write true or false, or quote the text"
            raise source.error(value_node, where, what)
        value = source.scalar(value_node, where)
        if value is None:
            raise source.error(value_node, where, "must be a string, a number or true/false")
        facts[name] = _located(source, value_node, where, property_value, value)
    return facts


def _amounts_value(source: Source, node: yaml.Node, key: str) -> dict[str, float]:
    amounts: dict[str, float] = {}
    for name, (key_node, value_node) in source.mapping(node, key, None, "counters").items():
        where = f"{key}.{name}"
        _located(source, key_node, where, resource_name, name)
        value = source.scalar(value_node, where)
        if value is None:
            raise source.error(value_node, where, "must be an amount such as 2 or 64G")
        amounts[name] = _located(source, value_node, where, resource_amount, value)
    return amounts


_SectionParser = Callable[[Source, yaml.Node, _Document], None]

# Top-level key -> its parser. A new section is a parser, an entry here and an
# attribute of _Document.
_SECTIONS: Final[Mapping[str, _SectionParser]] = {
    "supervisor": _supervisor_section,
    "workers": _workers_section,
}


def _parse_document(text: str, filename: str) -> _Document:
    source = Source(filename, Path(filename).absolute().parent)
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
