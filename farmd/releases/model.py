"""What a release is once read: `Release`, its `JobType`s and their `Param`s, the rules
every value follows, and the plain-data form they travel and are stored in.

Theory of operation
-------------------
The rules live here once, as `*_problem` functions returning why a value is refused (or
None). The manifest reader (`farmd.releases.manifest`) calls them with the YAML node at
hand, so its refusal points at `FILE:LINE:COLUMN`; the constructors of the frozen attrs
classes call them too (`attrs` validators), so a release built in code or read back
from the wire or the store (`from_wire`) is held to the very same rules. `from_wire`
takes hostile input: it checks the shape (a mapping with known keys, lists, bounds)
before it builds anything, and names the path of the bad field
(`job_types[1].params[0].type`).

Names: a release and a job type are names in the sense of
`farmd.resources.check_name` (lowercase letters, digits, '_' and '-', dot-separated; at
most `MAX_NAME_CHARS`), which makes them safe as directory names and as worker
`--type` labels. A choice is any short text without control characters. A parameter
is an identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most `MAX_PARAM_NAME_CHARS`), as it is
written `{name}` in a template and `--param name=v`.
A version is `[A-Za-z0-9][A-Za-z0-9._+-]*`, at most `MAX_VERSION_CHARS`: `2.3`,
`2.3.1-rc1`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from farmd.errors import ReleaseError, UserError
from farmd.releases.template import RESERVED, placeholders, template_problem
from farmd.requirements import parse_requirement
from farmd.resources import check_name, parse_reservation
from farmd.values import MAX_NAME_CHARS, MAX_RETRIES, is_int, show, text_problem

MAX_VERSION_CHARS: Final = 64
MAX_PARAM_NAME_CHARS: Final = 64
MAX_JOB_TYPES: Final = 256  # per release
MAX_PARAMS: Final = 64  # per job type
MAX_CHOICES: Final = 256  # per choice parameter
MAX_ARGS: Final = 1024  # arguments of a command template
MAX_TEXT_CHARS: Final = 4096  # an argument, a value, a description, an env value
MAX_ENV: Final = 256  # variables per job type
MAX_CHUNK: Final = 1_000_000

_VERSION: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_PARAM_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ParamType(enum.Enum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    PATH = "path"
    CHOICE = "choice"


ParamValue = str | int | float | bool

# --------------------------------------------------------------------------- rules


def name_problem(value: object) -> str | None:
    """A release, job-type or choice name."""
    why = text_problem(value, MAX_NAME_CHARS, empty=False)
    if why is not None:
        return why
    try:
        check_name(value)
    except UserError:
        return "must be lowercase letters, digits, '_' and '-', dot-separated, such as blender"
    return None


def choice_problem(value: object) -> str | None:
    """A choice: any short text without control characters (`4k`, `ProRes 422`)."""
    return text_problem(value, MAX_NAME_CHARS, empty=False)


def version_problem(value: object) -> str | None:
    why = text_problem(value, MAX_VERSION_CHARS, empty=False)
    if why is not None:
        return why
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        return "must be a version such as 2.3 or 2.3.1-rc1 (letters, digits, '.', '_', '+', '-')"
    return None


def param_name_problem(value: object) -> str | None:
    why = text_problem(value, MAX_PARAM_NAME_CHARS, empty=False)
    if why is not None:
        return why
    if not isinstance(value, str) or not _PARAM_NAME.fullmatch(value):
        return "a parameter is named by letters, digits and '_', not starting with a digit"
    if value in RESERVED:
        return f"{{{value}}} is filled in by the worker: {', '.join(RESERVED)} are reserved"
    return None


def text_value_problem(value: object) -> str | None:
    """A description or an env value: a string of bounded length without NULs."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_TEXT_CHARS:
        return f"is {len(value)} characters long, at most {MAX_TEXT_CHARS} are allowed"
    if "\0" in value:
        return "must not hold a NUL character"
    return None


def python_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be 'module:function', such as 'pipeline.tasks:render'"
    module, colon, function = value.partition(":")
    if not colon or not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(function):
        return "must be 'module:function', both dotted Python identifiers"
    if len(value) > MAX_NAME_CHARS:
        return f"is {len(value)} characters long, at most {MAX_NAME_CHARS} are allowed"
    return None


def chunk_problem(value: object) -> str | None:
    if not is_int(value) or not 1 <= value <= MAX_CHUNK:  # type: ignore[operator]
        return f"must be a whole number of frames, 1 to {MAX_CHUNK}"
    return None


def retries_problem(value: object) -> str | None:
    if not is_int(value) or not 0 <= value <= MAX_RETRIES:  # type: ignore[operator]
        return f"must be a whole number, 0 to {MAX_RETRIES}"
    return None


def seconds_problem(value: object) -> str | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:  # type: ignore[arg-type, operator]
        return "must be a number of seconds, 0 or more"
    return None


def requires_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a requirement such as 'host.os == linux'"
    try:
        parse_requirement(value)
    except UserError as exc:
        return str(exc)
    return None


def reserve_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a reservation such as 'slots=2,memory=8G'"
    try:
        parse_reservation(value)
    except UserError as exc:
        return str(exc)
    return None


def env_name_problem(value: object) -> str | None:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value) or len(value) > 128:
        return "must be a variable name: letters, digits and '_', not starting with a digit"
    if value.startswith("FARMD_"):
        return "FARMD_* variables are the farm's"
    return None


def env_value_problem(value: object) -> str | None:
    why = text_value_problem(value)
    if why is None and "\n" in value:  # type: ignore[operator]
        return "a value is one line of text"
    return why


def default_problem(kind: ParamType, value: object, choices: tuple[str, ...]) -> str | None:
    """Why `value` is not a valid default (an already typed value) for a `kind` param."""
    if kind is ParamType.BOOL:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is ParamType.INT:
        return None if is_int(value) else "must be a whole number"
    if kind is ParamType.FLOAT:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None if math.isfinite(value) else "must be a finite number"
        return "must be a number"
    if kind is ParamType.CHOICE:
        if value in choices and isinstance(value, str):
            return None
        return f"must be one of {', '.join(choices)}"
    why = text_value_problem(value)
    if why is None and kind is ParamType.PATH and not value:
        return "a path must not be empty"
    return why


# --------------------------------------------------------------------------- classes


def _check(problem: Callable[[Any], str | None]) -> Callable[[Any, Any, Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        why = problem(value)
        if why is not None:
            owner = getattr(instance, "name", "?")
            msg = f"bad {type(instance).__name__.lower()} {owner!r}: {attribute.name}: {why}"
            msg += f" (got {show(value)})"
            raise ReleaseError(msg)

    return validate


def _bool_problem(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _optional(problem: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else problem(v)


def _refuse(owner: str, why: str) -> ReleaseError:
    return ReleaseError(f"{owner}: {why}")


@attrs.frozen(kw_only=True)
class Param:
    """One typed parameter of a job type."""

    name: str = attrs.field(validator=_check(param_name_problem))
    type: ParamType = attrs.field(validator=attrs.validators.instance_of(ParamType))
    default: ParamValue | None = None
    required: bool = attrs.field(default=False, validator=_check(_bool_problem))
    choices: tuple[str, ...] = ()
    description: str = attrs.field(default="", validator=_check(text_value_problem))

    def __attrs_post_init__(self) -> None:
        owner = f"bad param {self.name!r}"
        if self.type is ParamType.CHOICE:
            if not self.choices:
                raise _refuse(owner, "a choice parameter needs choices")
            if len(self.choices) > MAX_CHOICES:
                raise _refuse(owner, f"more than {MAX_CHOICES} choices")
            for choice in self.choices:
                why = choice_problem(choice)
                if why is not None:
                    raise _refuse(owner, f"choice {show(choice)} {why}")
            if len(set(self.choices)) != len(self.choices):
                raise _refuse(owner, "a choice is listed twice")
        elif self.choices:
            what = f"only a choice parameter has choices (this one is {self.type.value})"
            raise _refuse(owner, what)
        if self.default is not None:
            if self.required:
                raise _refuse(owner, "a required parameter may not have a default")
            why = default_problem(self.type, self.default, self.choices)
            if why is not None:
                raise _refuse(owner, f"default {show(self.default)} {why}")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name, "type": self.type.value}
        wire["required"] = self.required
        if self.default is not None:
            wire["default"] = self.default
        if self.choices:
            wire["choices"] = list(self.choices)
        if self.description:
            wire["description"] = self.description
        return wire


@attrs.frozen(kw_only=True)
class JobType:
    """A kind of job a release provides: its parameters, what a frame runs (an argv
    template, or a Python `module:function`), and defaults for the job's options."""

    name: str = attrs.field(validator=_check(name_problem))
    description: str = attrs.field(default="", validator=_check(text_value_problem))
    params: tuple[Param, ...] = ()
    command: tuple[str, ...] | None = None
    python: str | None = attrs.field(default=None, validator=_check(_optional(python_problem)))
    chunk: int | None = attrs.field(default=None, validator=_check(_optional(chunk_problem)))
    requires: str | None = attrs.field(default=None, validator=_check(_optional(requires_problem)))
    reserve: str | None = attrs.field(default=None, validator=_check(_optional(reserve_problem)))
    env: tuple[tuple[str, str], ...] = ()
    frame_timelimit: float | None = attrs.field(
        default=None, validator=_check(_optional(seconds_problem))
    )
    retries: int | None = attrs.field(default=None, validator=_check(_optional(retries_problem)))

    def __attrs_post_init__(self) -> None:
        owner = f"bad job type {self.name!r}"
        if (self.command is None) == (self.python is None):
            raise _refuse(owner, "give exactly one of command and python")
        if len(self.params) > MAX_PARAMS:
            raise _refuse(owner, f"more than {MAX_PARAMS} params")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise _refuse(owner, "a param is declared twice")
        if self.command is not None:
            for index, arg in enumerate(self.command):
                why = command_arg_problem(arg, self.params)
                if why is not None:
                    raise _refuse(owner, f"command[{index}] {show(arg)}: {why}")
            why = command_problem(self.command)
            if why is not None:
                raise _refuse(owner, f"command: {why}")
        if len(self.env) > MAX_ENV:
            raise _refuse(owner, f"more than {MAX_ENV} env variables")
        for name, value in self.env:
            why = env_name_problem(name) or env_value_problem(value)
            if why is not None:
                raise _refuse(owner, f"env {show(name)}: {why}")

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name, "description": self.description}
        wire["params"] = [p.to_wire() for p in self.params]
        if self.command is not None:
            wire["command"] = list(self.command)
        for key in ("python", "chunk", "requires", "reserve", "frame_timelimit", "retries"):
            if getattr(self, key) is not None:
                wire[key] = getattr(self, key)
        if self.env:
            wire["env"] = dict(self.env)
        return wire


def command_problem(command: object) -> str | None:
    """The shape of a command template (its arguments are checked one by one by
    `command_arg_problem`)."""
    if not isinstance(command, tuple | list) or not command:
        return "must be a non-empty list of strings, such as [blender, -b, '{scene}']"
    if len(command) > MAX_ARGS:
        return f"{len(command)} arguments, at most {MAX_ARGS} are allowed"
    return None


def command_arg_problem(arg: object, params: tuple[Param, ...]) -> str | None:
    """One argument of a command template: text, with known placeholders only, and each
    parameter it names sure to have a value (required, or with a default)."""
    why = text_value_problem(arg)
    if why is not None:
        return why
    assert isinstance(arg, str)  # text_value_problem checked it
    why = template_problem(arg, [p.name for p in params])
    if why is not None:
        return why
    by_name = {p.name: p for p in params}
    for name in placeholders(arg):
        param = by_name.get(name)
        if param is not None and not param.required and param.default is None:
            return (
                f"{{{name}}} is neither required nor has a default, so a job could leave "
                "it without a value"
            )
    return None


@attrs.frozen(kw_only=True)
class Release:
    """A release as its manifest declares it."""

    name: str = attrs.field(validator=_check(name_problem))
    version: str = attrs.field(validator=_check(version_problem))
    description: str = attrs.field(default="", validator=_check(text_value_problem))
    job_types: tuple[JobType, ...] = ()

    def __attrs_post_init__(self) -> None:
        owner = f"bad release {self.name!r}"
        if len(self.job_types) > MAX_JOB_TYPES:
            raise _refuse(owner, f"more than {MAX_JOB_TYPES} job types")
        names = [t.name for t in self.job_types]
        if len(set(names)) != len(names):
            raise _refuse(owner, "a job type is declared twice")

    @property
    def label(self) -> str:
        """`pipeline 2.3`, as messages name a release."""
        return f"{self.name} {self.version}"

    def job_type(self, name: str) -> JobType | None:
        return next((t for t in self.job_types if t.name == name), None)

    def to_wire(self) -> dict[str, Any]:
        """Plain data (str, int, float, bool, lists, dicts): msgpack-able, for the wire
        and the store. `from_wire` reads it back."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "job_types": [t.to_wire() for t in self.job_types],
        }

    @classmethod
    def from_wire(cls, data: object) -> Release:
        """A release from `to_wire` data, which may be hostile: every field is checked
        and a refusal (ReleaseError) names the path of the bad field."""
        return _release_from_wire(data)


# --------------------------------------------------------------------------- wire

_RELEASE_KEYS: Final = ("name", "version", "description", "job_types")
_TYPE_KEYS: Final = (
    "name",
    "description",
    "params",
    "command",
    "python",
    "chunk",
    "requires",
    "reserve",
    "env",
    "frame_timelimit",
    "retries",
)
_PARAM_KEYS: Final = ("name", "type", "default", "required", "choices", "description")


class _WireError(Exception):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")


def _fields(data: object, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise _WireError(where, f"must be a mapping (got {show(data)})")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise _WireError(where, f"unknown key {show(unknown[0])}")
    return dict(data)


def _list(data: object, where: str, bound: int) -> list[Any]:
    if not isinstance(data, list | tuple):
        raise _WireError(where, f"must be a list (got {show(data)})")
    if len(data) > bound:
        raise _WireError(where, f"{len(data)} items, at most {bound} are allowed")
    return list(data)


def _required(fields: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in fields:
        raise _WireError(where, f"missing {key!r}")
    return fields[key]


def _release_from_wire(data: object) -> Release:
    try:
        fields = _fields(data, "release", _RELEASE_KEYS)
        types = []
        for i, item in enumerate(_list(fields.get("job_types", []), "job_types", MAX_JOB_TYPES)):
            types.append(_type_from_wire(item, f"job_types[{i}]"))
        return Release(
            name=_required(fields, "name", "release"),
            version=_required(fields, "version", "release"),
            description=fields.get("description", ""),
            job_types=tuple(types),
        )
    except (_WireError, ReleaseError) as exc:
        msg = f"bad release data: {exc}"
        raise ReleaseError(msg) from None


def _type_from_wire(data: object, where: str) -> JobType:
    fields = _fields(data, where, _TYPE_KEYS)
    params = []
    for i, item in enumerate(_list(fields.pop("params", []), f"{where}.params", MAX_PARAMS)):
        params.append(_param_from_wire(item, f"{where}.params[{i}]"))
    if "command" in fields:
        command = _list(fields.pop("command"), f"{where}.command", MAX_ARGS)
        fields["command"] = tuple(command)
    env = fields.pop("env", {})
    if not isinstance(env, Mapping) or len(env) > MAX_ENV:
        raise _WireError(f"{where}.env", f"must be a mapping of at most {MAX_ENV} variables")
    try:
        return JobType(
            name=_required(fields, "name", where),
            params=tuple(params),
            env=tuple(env.items()),
            **{k: v for k, v in fields.items() if k != "name"},
        )
    except ReleaseError as exc:
        raise _WireError(where, str(exc)) from None


def _param_from_wire(data: object, where: str) -> Param:
    fields = _fields(data, where, _PARAM_KEYS)
    kind = _required(fields, "type", where)
    try:
        fields["type"] = ParamType(kind)
    except ValueError:
        allowed = ", ".join(t.value for t in ParamType)
        raise _WireError(f"{where}.type", f"must be one of {allowed} (got {show(kind)})") from None
    if "choices" in fields:
        fields["choices"] = tuple(_list(fields["choices"], f"{where}.choices", MAX_CHOICES))
    try:
        return Param(
            name=_required(fields, "name", where),
            **{k: v for k, v in fields.items() if k != "name"},
        )
    except ReleaseError as exc:
        raise _WireError(where, str(exc)) from None
