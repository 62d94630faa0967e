"""The central worker configuration (Qube's qbwrk.conf, the `workers:` section): entries,
templates, host patterns (exact names, globs, numbered ranges) and how they combine into
one host's `WorkerSettings`.

Theory of operation
-------------------
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

Each value is checked by the rules every worker setting meets (`farmd.worker_settings`:
the same for a file, `farmd worker`'s flags and a registration), called from
`WorkerEntry`'s converters here and item by item by the file loader; a refusal is a
`FieldError` naming the key.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import attrs

from farmd import worker_settings
from farmd.cluster import ClusterPath, quote
from farmd.config.fields import FieldError
from farmd.errors import ClusterPathError, RestrictionError, WorkerSettingsError
from farmd.worker_settings import Fact

ENTRY_KEYS: Final = (
    "template",
    "cluster",
    "restrictions",
    "slots",
    "types",
    "properties",
    "resources",
    "run_as",
    "users",
    "env_passthrough",
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
        raise FieldError.refuse((exc.field,), exc.value, exc.problem) from None


def worker_cluster(value: object) -> ClusterPath:
    try:
        return _setting(worker_settings.check_cluster, value)
    except ClusterPathError as exc:
        problem = str(exc).removeprefix(f"bad cluster path {quote(str(value))}: ")
        raise FieldError.refuse(("cluster",), value, problem) from None


def worker_restrictions(value: object) -> str:
    """The canonical text of a restriction expression ('' for none)."""
    try:
        return str(_setting(worker_settings.check_restrictions, value))
    except RestrictionError as exc:
        problem = str(exc).removeprefix(f"bad restrictions {quote(str(value))} ")
        raise FieldError.refuse(("restrictions",), value, problem) from None


def worker_slots(value: object) -> int:
    return _setting(worker_settings.check_slots, value)


def job_type(value: object) -> str:
    return _setting(worker_settings.check_job_type, value)


def _worker_types(value: object) -> tuple[str, ...]:
    return _setting(worker_settings.check_types, value)


def property_name(name: object) -> str:
    return _setting(worker_settings.check_property_name, name)


def property_value(value: object) -> Fact:
    return _setting(worker_settings.check_property_value, value)


def _worker_properties(value: object) -> dict[str, Fact]:
    return _setting(worker_settings.check_properties, value)


def resource_name(name: object) -> str:
    return _setting(worker_settings.check_resource_name, name)


def resource_amount(value: object) -> float:
    return _setting(worker_settings.check_resource_amount, value)


def _worker_resources(value: object) -> dict[str, float]:
    return _setting(worker_settings.check_resources, value)


def worker_run_as(value: object) -> str:
    return _setting(worker_settings.check_run_as, value)


def worker_user_map(value: object) -> dict[str, str]:
    return _setting(worker_settings.check_user_map, value)


def worker_env_passthrough(value: object) -> tuple[str, ...]:
    return _setting(worker_settings.check_env_passthrough, value)


def _opt_run_as(value: object) -> str | None:
    return None if value is None else worker_run_as(value)


def _opt_passthrough(value: object) -> tuple[str, ...] | None:
    return None if value is None else worker_env_passthrough(value)


def template_name(name: object) -> str:
    if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
        problem = "a template's name is letters, digits, '_' and '-', starting with a letter"
        raise FieldError.refuse(("template",), name, problem)
    return name


def _template_list(value: object) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise FieldError.refuse(("template",), value, "must be a template name or a list")
    checked = tuple(template_name(name) for name in names)
    for i, name in enumerate(checked):
        if name in checked[:i]:
            raise FieldError.refuse(("template",), name, "is listed twice")
    return checked


# WorkerEntry's converters: None is "not set"; anything else must be a good value.
def _opt_cluster(value: object) -> ClusterPath | None:
    return None if value is None else worker_cluster(value)


def _opt_restrictions(value: object) -> str | None:
    return None if value is None else worker_restrictions(value)


def _opt_slots(value: object) -> int | None:
    return None if value is None else worker_slots(value)


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
    # the agent's own: how it runs frames (it applies them from its registration)
    run_as: str | None = attrs.field(default=None, converter=_opt_run_as)
    users: dict[str, str] = attrs.field(factory=dict, converter=worker_user_map)
    env_passthrough: tuple[str, ...] | None = attrs.field(default=None, converter=_opt_passthrough)


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
        raise FieldError.refuse(("host",), text, "must be a host name, glob or range")
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
        raise FieldError.refuse(("host",), text, problem)
    prefix, low, high, suffix = match.groups()
    if max(len(low), len(high)) > _MAX_RANGE_DIGITS:
        problem = f"the numbers of a range have at most {_MAX_RANGE_DIGITS} digits"
        raise FieldError.refuse(("host",), text, problem)
    padded = any(len(end) > 1 and end.startswith("0") for end in (low, high))
    if padded and len(low) != len(high):
        problem = (
            f"zero padding needs both ends of [{low}-{high}] written with the same number "
            "of digits, such as [001-120]"
        )
        raise FieldError.refuse(("host",), text, problem)
    first, last = int(low), int(high)
    if first > last:
        problem = f"the range [{low}-{high}] runs backwards: write [{high}-{low}]"
        raise FieldError.refuse(("host",), text, problem)
    if last - first + 1 > MAX_RANGE_HOSTS:
        problem = (
            f"a range names at most {MAX_RANGE_HOSTS} hosts, [{low}-{high}] names "
            f"{last - first + 1}"
        )
        raise FieldError.refuse(("host",), text, problem)
    return HostPattern(
        text, PatternKind.RANGE, prefix, suffix, first, last, len(low) if padded else 0
    )


def template_cycle(graph: Mapping[str, Sequence[str]]) -> tuple[str, ...] | None:
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
        template_name(name)
    entries = [inst.default, *templates.values(), *inst.hosts.values()]
    for entry in entries:
        for name in entry.templates:
            if name not in templates:
                raise FieldError.refuse(("template",), name, "is not a template")
    cycle = template_cycle({name: entry.templates for name, entry in templates.items()})
    if cycle is not None:
        raise FieldError.refuse(("template",), cycle[0], cycle_problem(cycle))


def cycle_problem(cycle: tuple[str, ...]) -> str:
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
    run_as: str | None = None
    users: dict[str, str] = attrs.field(factory=dict)
    env_passthrough: tuple[str, ...] | None = None
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

    def agent_settings(self) -> dict[str, Any]:
        """What the agent itself applies (how it runs frames), as set centrally: the
        keys this configuration sets, for `registered.settings.agent` (docs/protocol.md
        5.1). Each replaces the agent's own flag; `users` merges over `--user-map`."""
        out: dict[str, Any] = {}
        if self.run_as is not None:
            out["run_as"] = self.run_as
        if self.users:
            out["users"] = dict(self.users)
        if self.env_passthrough is not None:
            out["env_passthrough"] = list(self.env_passthrough)
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: lists for tuples."""
        return {
            **self.agent_settings(),
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
        values: dict[str, Any] = {"properties": {}, "resources": {}, "users": {}}
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


_REPLACED: Final = ("cluster", "restrictions", "slots", "types", "run_as", "env_passthrough")
_MERGED: Final = ("properties", "resources", "users")


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
