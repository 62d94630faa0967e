"""What a worker may be configured with, and the one place those values are checked.

Theory of operation
-------------------
A worker's settings are its name, cluster, restrictions, slots, job types, properties
(host facts a requirement reads as `host.KEY`) and resources (its own counters, such as
`gpu` and `memory`). They come from three places, all held to the rules here:

- the `workers:` section of a config file (`farmd.config`): its loader calls the
  per-value functions item by item, to point at the line and column of a bad one;
- `farmd worker`'s flags: `check_worker` runs before the agent connects, so a bad flag
  is one line on the terminal, not a refused registration;
- a `register` from any peer: the core calls `check_worker` on what the worker said
  with the central configuration over it (`WorkerSettings.combine`), at the door, for
  every registration and reconfiguration. A peer that is not farmd's agent meets the
  same rules, and one refusal names the rule it broke.

The codec (`protocol.Register`) checks only the shape a message needs to be held at all
(types, sizes, no control characters in names); it leaves meaning to the door, so a
well-formed registration that breaks a rule is answered `registration refused`, naming
the value, rather than dropped as a broken peer.

The rules:

- slots: an integer, 1..MAX_SLOTS.
- types: a list of job-type names (`resources.check_name`), each at most once.
- properties: a name a requirement can read (`host.NAME`: letters, digits, `_`, `.`,
  `-`, not starting with a digit), never one of `RESERVED_PROPERTIES`, the facts farmd
  fills in itself; a value is one string, a finite number (a 64-bit one if whole) or
  true/false. `host.memory` is the `memory` counter (farmd's agent reports the host's
  physical memory there): a `memory` property is refused rather than shadowed.
- resources: a host counter's name (no dot: dotted names are farm-wide counters, which
  the supervisor declares; never `slots`), an amount 0..2**62 (`8G` in text).
- names (of types, properties, counters) are at most MAX_NAME_CHARS characters, as on
  the wire.

Every refusal is a `WorkerSettingsError` carrying the field, the bad value and the bare
problem; a cluster path or restriction expression that does not parse keeps its own
error (`ClusterPathError`, `RestrictionError`) and wire code.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Mapping
from typing import Final

import attrs

from farmd.cluster import ClusterPath, Restrictions, parse_cluster, parse_restrictions
from farmd.errors import UserError, WorkerSettingsError
from farmd.protocol import MAX_NAME_CHARS, odd_character
from farmd.resources import check_name, is_global, parse_amount

Fact = str | int | float | bool  # a host property's value

MAX_SLOTS: Final = 2**31 - 1
# A property's name as a requirement reads it (`host.KEY`, requirements._KEY).
_PROPERTY_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Facts farmd fills in itself (workers.Worker.facts): a property of that name would be
# shadowed without a word, so it is refused with the setting to use instead, spelled
# for the config file and for `farmd worker`.
RESERVED_PROPERTIES: Final = {
    "name": "the worker's name is its host name (--name)",
    "cluster": "use the cluster: key (--cluster)",
    "slots": "use the slots: key (--slots)",
    "types": "use the types: key (--type)",
    "memory": "use resources: {memory: 64G} (--resource memory=64G)",
}

_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother = 60, 60


def _refuse(field: str, value: object, problem: str) -> WorkerSettingsError:
    return WorkerSettingsError(f"bad {field} {_SHOW.repr(value)}: {problem}", field, value, problem)


def check_worker_name(name: object) -> str:
    """A worker's name is printed in listings and logs, one per line."""
    if not isinstance(name, str):
        raise _refuse("worker name", name, "must be a string")
    why = odd_character(name)
    if not name or len(name) > MAX_NAME_CHARS:
        why = f"must be 1 to {MAX_NAME_CHARS} characters, not {len(name)}"
    if why is not None:
        raise _refuse("worker name", name, why)
    return name


def check_cluster(value: object) -> ClusterPath:
    """A normalised cluster path; a path that does not parse is a ClusterPathError."""
    if not isinstance(value, str):
        raise _refuse("cluster", value, "must be a cluster path such as '/' or '/show1/lighting'")
    return parse_cluster(value)


def check_restrictions(value: object) -> Restrictions:
    """A parsed restriction expression ('' for none); a bad one is a RestrictionError."""
    if not isinstance(value, str):
        problem = "must be a restriction expression such as '/show1/+ || /comp'"
        raise _refuse("restrictions", value, problem)
    return parse_restrictions(value)


def check_slots(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse("slots", value, f"must be an integer 1..{MAX_SLOTS}")
    if not 1 <= value <= MAX_SLOTS:
        raise _refuse("slots", value, f"must be in 1..{MAX_SLOTS}")
    return value


def _bounded(field: str, name: object) -> None:
    """A name is at most MAX_NAME_CHARS characters, as on the wire (docs/protocol.md 6.5)."""
    if isinstance(name, str) and len(name) > MAX_NAME_CHARS:
        problem = f"a name is at most {MAX_NAME_CHARS} characters, not {len(name)}"
        raise _refuse(field, name, problem)


def _is_name(value: object) -> bool:
    """A resource or job-type name (`resources.check_name`)."""
    try:
        check_name(value)
    except UserError:
        return False
    return True


def check_job_type(value: object) -> str:
    _bounded("types", value)
    if not isinstance(value, str) or not _is_name(value):
        problem = (
            "a job type is lowercase letters, digits, '_' and '-', dot-separated, such as blender"
        )
        raise _refuse("types", value, problem)
    return value


def check_types(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _refuse("types", value, "must be a list of job types, such as [blender, nuke]")
    checked = tuple(check_job_type(item) for item in value)
    for i, name in enumerate(checked):
        if name in checked[:i]:
            raise _refuse("types", name, "is listed twice")
    return checked


def check_property_name(name: object) -> str:
    _bounded("properties", name)
    if not isinstance(name, str) or not _PROPERTY_NAME.fullmatch(name):
        problem = (
            "a property name is letters, digits, '_', '.' and '-', not starting with a "
            "digit, so that a requirement reads it as host.NAME"
        )
        raise _refuse("properties", name, problem)
    if name in RESERVED_PROPERTIES:
        problem = f"farmd sets host.{name} itself: {RESERVED_PROPERTIES[name]}"
        raise _refuse("properties", name, problem)
    return name


def check_property_value(value: object) -> Fact:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    problem = "must be a string, a finite number (a 64-bit one if whole) or true/false"
    raise _refuse("properties", value, problem)


def check_properties(value: object) -> dict[str, Fact]:
    if not isinstance(value, Mapping):
        problem = "must be a mapping of names to values, such as {rack: b}"
        raise _refuse("properties", value, problem)
    return {check_property_name(n): check_property_value(fact) for n, fact in value.items()}


def check_resource_name(name: object) -> str:
    _bounded("resources", name)
    if not isinstance(name, str) or not _is_name(name):
        problem = "a counter's name is lowercase letters, digits, '_' and '-', such as gpu"
        raise _refuse("resources", name, problem)
    if is_global(name):
        problem = "a host's counter has no dot; farm-wide counters go in supervisor.resources"
        raise _refuse("resources", name, problem)
    if name == "slots":
        raise _refuse("resources", name, "use the slots: key (--slots)")
    return name


def check_resource_amount(value: object) -> float:
    """An amount 0..2**62: a number, or text such as `64G` (whole amounts stay ints)."""
    problem = "must be an amount such as 2, 0.5 or 64G (K, M, G, T: powers of 1024)"
    if isinstance(value, bool):
        raise _refuse("resources", value, problem)
    try:
        return parse_amount(value, "resources")
    except UserError:
        raise _refuse("resources", value, problem) from None


def check_resources(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        problem = "must be a mapping of counters to amounts, such as {gpu: 2}"
        raise _refuse("resources", value, problem)
    return {check_resource_name(n): check_resource_amount(amount) for n, amount in value.items()}


@attrs.frozen(kw_only=True)
class WorkerSpec:
    """A worker's settings, checked and normalised: what the core builds a worker from."""

    name: str
    cluster: ClusterPath
    restrictions: Restrictions
    slots: int
    types: frozenset[str]
    properties: dict[str, Fact]
    resources: dict[str, float]


def check_worker(
    *,
    name: object,
    cluster: object,
    restrictions: object,
    slots: object,
    types: object,
    properties: object,
    resources: object,
) -> WorkerSpec:
    """Every setting of one worker, by the rules above; a refusal names the worker, the
    setting and the bad value (`bad worker 'node07': types: a job type is ... (got
    'Nuke')`), as a config file's refusals do."""
    checked_name = check_worker_name(name)
    try:
        return WorkerSpec(
            name=checked_name,
            cluster=check_cluster(cluster),
            restrictions=check_restrictions(restrictions),
            slots=check_slots(slots),
            types=frozenset(check_types(types)),
            properties=check_properties(properties),
            resources={n: float(a) for n, a in check_resources(resources).items()},
        )
    except WorkerSettingsError as exc:
        shown = _SHOW.repr(exc.value)
        msg = f"bad worker {checked_name!r}: {exc.field}: {exc.problem} (got {shown})"
        raise WorkerSettingsError(msg, exc.field, exc.value, exc.problem) from None


# --------------------------------------------------------------------------- the agent's own

RUN_AS: Final = ("agent", "owner")
MAX_ENV_PASSTHROUGH: Final = 256
MAX_USER_MAP: Final = 10_000
# an account name as POSIX tools accept it, and a variable name or fnmatch pattern
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_ENV_PATTERN = re.compile(r"[A-Za-z_*?][A-Za-z0-9_*?]{0,127}")


def check_run_as(value: object) -> str:
    """`run_as`: `agent` (frames run as the agent's account) or `owner` (as the OS
    account of the job's owner; the agent must be root, and never runs one as root)."""
    if value not in RUN_AS:
        raise _refuse("run_as", value, "must be agent or owner")
    return str(value)


def check_user_map(value: object) -> dict[str, str]:
    """`users`: a job owner's name -> the OS account its frames run as."""
    if not isinstance(value, Mapping):
        raise _refuse("users", value, "must map job owners to OS accounts")
    if len(value) > MAX_USER_MAP:
        raise _refuse("users", len(value), f"at most {MAX_USER_MAP} entries")
    for owner, account in value.items():
        if not isinstance(owner, str) or not _ACCOUNT.fullmatch(owner):
            raise _refuse("users", owner, "an owner is a user name (a-z 0-9 _ . -)")
        if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
            raise _refuse(f"users.{owner}", account, "an account name is a-z 0-9 _ . -")
    return dict(value)


def check_env_passthrough(value: object) -> tuple[str, ...]:
    """`env_passthrough`: the agent's variables a frame gets, names or patterns."""
    if not isinstance(value, list | tuple):
        raise _refuse("env_passthrough", value, "must be a list of variable names")
    if len(value) > MAX_ENV_PASSTHROUGH:
        raise _refuse("env_passthrough", len(value), f"at most {MAX_ENV_PASSTHROUGH} names")
    for name in value:
        if not isinstance(name, str) or not _ENV_PATTERN.fullmatch(name):
            why = "a variable name, or a pattern such as ARNOLD_* (letters, digits, _, * ?)"
            raise _refuse("env_passthrough", name, why)
        if name.startswith("FARMD_"):
            raise _refuse("env_passthrough", name, "FARMD_* variables are the farm's")
    return tuple(value)
