"""Reading a release's `farmd-release.yaml`, strictly, with located refusals.

Theory of operation
-------------------
A manifest looks like this (`examples/releases/pipeline-2.3/farmd-release.yaml`)::

    name: pipeline                  # a name: lowercase, digits, '_', '-', dots
    version: 2.3                    # as written: 2.10 stays "2.10"
    description: Studio pipeline tools
    job_types:
      blender-render:
        description: Render a Blender scene
        params:
          scene: {type: path, required: true}
          output: {type: path, required: true}
          engine: {type: choice, choices: [cycles, eevee], default: cycles}
        command: [blender, -b, "{scene}", -o, "{output}", -E, "{engine}", -f, "{frame}"]
        chunk: 1                    # optional defaults for the job's options:
        requires: host.os == linux  # chunk, requires, reserve, env,
        reserve: slots=2            # frame_timelimit, retries
      fan-out:
        python: pipeline.tasks:fan_out   # instead of a command: module:function

It is read the way the farm configuration is (`farmd.config.loader`): composed into YAML
nodes (never `yaml.load`), walked by hand with `farmd.config.yaml_nodes.Source`, and
only scalars with a standard tag are constructed. Every refusal is one line,
`FILE:LINE:COLUMN: KEY: what is wrong (got VALUE)`, a `ReleaseError`, pointing at the
bad value (or, for an unknown or duplicate key, at the key). The rules themselves are
`farmd.releases.model`'s `*_problem` functions, which the model's constructors apply
too, so a manifest and a release from the wire are held to the same rules.

The version is taken from the node's *source text*, not its constructed value: YAML
reads `2.10` as the float 2.1, and a version must stay what was written.

Bounds: the manifest text (`MAX_MANIFEST_BYTES`), job types per release
(`model.MAX_JOB_TYPES`), params per type (`model.MAX_PARAMS`); each refusal names its
bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from farmd.config.yaml_nodes import TAG, Source
from farmd.errors import ReleaseError
from farmd.releases import model
from farmd.releases.model import JobType, Param, ParamType, Release

MANIFEST_NAME: Final = "farmd-release.yaml"
MAX_MANIFEST_BYTES: Final = 256 * 1024

_RELEASE_KEYS: Final = ("name", "version", "description", "job_types")
_TYPE_KEYS: Final = (
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
_T = TypeVar("_T")
_PARAM_KEYS: Final = ("type", "default", "required", "choices", "description")
_SEQ_TAG: Final = TAG + "seq"
_STR_TAG: Final = TAG + "str"
# a version or a choice may be written unquoted: 2.3 (a float), 4 (an int)
_TEXT_TAGS: Final = frozenset({TAG + "str", TAG + "int", TAG + "float"})


def parse_manifest(text: str | bytes, filename: str) -> Release:
    """The release a manifest's text declares; `filename` names it in refusals."""
    if len(text) > MAX_MANIFEST_BYTES:
        msg = f"{filename}:1:1: manifest is {len(text)} bytes, over the {MAX_MANIFEST_BYTES} limit"
        raise ReleaseError(msg)
    if isinstance(text, bytes):
        text = _decode(text, filename)
    source = Source(filename, Path(filename).parent, error_type=ReleaseError)
    root = _compose(text, filename)
    if root is None:
        msg = f"{filename}:1:1: the manifest is empty; it needs name, version and job_types"
        raise ReleaseError(msg)
    items = source.mapping(root, "top level", _RELEASE_KEYS, "release settings")
    for key in ("name", "version"):
        if key not in items:
            raise source.error(root, "top level", f"missing {key!r}")
    name = _checked(source, items["name"][1], "name", model.name_problem)
    version = _text(source, items["version"][1], "version")
    _located(source, items["version"][1], "version", model.version_problem, version)
    description = ""
    if "description" in items:
        node = items["description"][1]
        description = _checked(source, node, "description", model.text_value_problem)
    job_types: list[JobType] = []
    if "job_types" in items:
        types = source.mapping(items["job_types"][1], "job_types", None, "job types")
        if len(types) > model.MAX_JOB_TYPES:
            what = f"{len(types)} job types, at most {model.MAX_JOB_TYPES} are allowed"
            raise source.error(items["job_types"][1], "job_types", what)
        for type_name, (key_node, value_node) in types.items():
            key = f"job_types.{type_name}"
            _located(source, key_node, key, model.name_problem, type_name)
            job_types.append(_job_type(source, type_name, value_node, key))
    return _built(
        source,
        root,
        "top level",
        lambda: Release(
            name=name, version=version, description=description, job_types=tuple(job_types)
        ),
    )


def load_manifest(path: str | os.PathLike[str]) -> Release:
    """Read a manifest file (bounded; UTF-8 YAML)."""
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        msg = f"{filename}: cannot read the release manifest: {exc.strerror or exc}"
        raise ReleaseError(msg) from None
    return parse_manifest(data, filename)


# --------------------------------------------------------------------------- parts


def _job_type(source: Source, name: str, node: yaml.Node, key: str) -> JobType:
    items = source.mapping(node, key, _TYPE_KEYS, "job type settings")
    values: dict[str, Any] = {}
    params: list[Param] = []
    if "params" in items:
        params_node = items["params"][1]
        declared = source.mapping(params_node, f"{key}.params", None, "parameters")
        if len(declared) > model.MAX_PARAMS:
            what = f"{len(declared)} params, at most {model.MAX_PARAMS} are allowed"
            raise source.error(params_node, f"{key}.params", what)
        for param_name, (key_node, value_node) in declared.items():
            where = f"{key}.params.{param_name}"
            _located(source, key_node, where, model.param_name_problem, param_name)
            params.append(_param(source, param_name, value_node, where))
    has_command, has_python = "command" in items, "python" in items
    if has_command == has_python:
        what = "give exactly one of command (an argv) and python (module:function)"
        raise source.error(items["python"][0] if has_python else node, key, what)
    if has_command:
        values["command"] = _command(source, items["command"][1], f"{key}.command", params)
    checks: dict[str, Callable[[Any], str | None]] = {
        "description": model.text_value_problem,
        "python": model.python_problem,
        "chunk": model.chunk_problem,
        "requires": model.requires_problem,
        "reserve": model.reserve_problem,
        "frame_timelimit": model.seconds_problem,
        "retries": model.retries_problem,
    }
    for field, check in checks.items():
        if field in items:
            values[field] = _checked(source, items[field][1], f"{key}.{field}", check)
    if "env" in items:
        values["env"] = _env(source, items["env"][1], f"{key}.env")
    return _built(source, node, key, lambda: JobType(name=name, params=tuple(params), **values))


def _param(source: Source, name: str, node: yaml.Node, key: str) -> Param:
    items = source.mapping(node, key, _PARAM_KEYS, "parameter settings")
    if "type" not in items:
        raise source.error(node, key, "missing 'type'")
    type_node = items["type"][1]
    type_text = source.scalar(type_node, f"{key}.type")
    try:
        kind = ParamType(type_text)
    except ValueError:
        allowed = ", ".join(t.value for t in ParamType)
        raise source.error(type_node, f"{key}.type", f"must be one of {allowed}") from None
    choices: tuple[str, ...] = ()
    if "choices" in items:
        choices_node = items["choices"][1]
        if kind is not ParamType.CHOICE:
            what = f"only a choice parameter has choices (this one is {kind.value})"
            raise source.error(items["choices"][0], f"{key}.choices", what)
        nodes = _sequence(source, choices_node, f"{key}.choices", "choices")
        if not nodes or len(nodes) > model.MAX_CHOICES:
            what = f"must list 1 to {model.MAX_CHOICES} choices"
            raise source.error(choices_node, f"{key}.choices", what)
        listed: list[str] = []
        for item in nodes:
            choice = _text(source, item, f"{key}.choices")
            _located(source, item, f"{key}.choices", model.choice_problem, choice)
            if choice in listed:
                raise source.error(item, f"{key}.choices", "choice listed twice")
            listed.append(choice)
        choices = tuple(listed)
    elif kind is ParamType.CHOICE:
        raise source.error(node, key, "a choice parameter needs choices: [a, b, ...]")
    required = False
    if "required" in items:
        required_node = items["required"][1]
        required = source.scalar(required_node, f"{key}.required")  # type: ignore[assignment]
        if not isinstance(required, bool):
            raise source.error(required_node, f"{key}.required", "must be true or false")
    default: model.ParamValue | None = None
    if "default" in items:
        default_node = items["default"][1]
        where = f"{key}.default"
        if required:
            raise source.error(default_node, where, "a required parameter may not have a default")
        if kind in (ParamType.STR, ParamType.PATH, ParamType.CHOICE):
            default = _text(source, default_node, where)  # `default: 4` is the text "4"
        else:
            default = source.scalar(default_node, where)  # type: ignore[assignment]
        why = model.default_problem(kind, default, choices)
        if why is not None:
            raise source.error(default_node, where, f"not a valid {kind.value}: {why}")
        if kind is ParamType.FLOAT:
            default = float(default)  # type: ignore[arg-type]
    description = ""
    if "description" in items:
        description_node = items["description"][1]
        where = f"{key}.description"
        description = _checked(source, description_node, where, model.text_value_problem)
    return _built(
        source,
        node,
        key,
        lambda: Param(
            name=name,
            type=kind,
            default=default,
            required=required,
            choices=choices,
            description=description,
        ),
    )


def _command(source: Source, node: yaml.Node, key: str, params: list[Param]) -> tuple[str, ...]:
    nodes = _sequence(source, node, key, "arguments, such as [blender, -b, '{scene}']")
    why = model.command_problem(nodes)
    if why is not None:
        raise source.error(node, key, why)
    args = []
    for item in nodes:
        if not (isinstance(item, yaml.ScalarNode) and item.tag in _TEXT_TAGS):
            raise source.error(item, key, "an argument must be a string")
        arg = str(item.value)  # as written: `-f 01` keeps its 0
        _located(source, item, key, lambda a: model.command_arg_problem(a, tuple(params)), arg)
        args.append(arg)
    return tuple(args)


def _env(source: Source, node: yaml.Node, key: str) -> tuple[tuple[str, str], ...]:
    variables = source.mapping(node, key, None, "environment variables")
    if len(variables) > model.MAX_ENV:
        what = f"{len(variables)} variables, at most {model.MAX_ENV} are allowed"
        raise source.error(node, key, what)
    env = []
    for name, (key_node, value_node) in variables.items():
        where = f"{key}.{name}"
        _located(source, key_node, where, model.env_name_problem, name)
        value = _text(source, value_node, where)
        _located(source, value_node, where, model.env_value_problem, value)
        env.append((name, value))
    return tuple(env)


# --------------------------------------------------------------------------- helpers


def _checked(
    source: Source, node: yaml.Node, key: str, problem: Callable[[Any], str | None]
) -> Any:
    """The scalar at `node`, refused (located there) if `problem` has one with it."""
    return _located(source, node, key, problem, source.scalar(node, key))


def _located(
    source: Source, node: yaml.Node, key: str, problem: Callable[[Any], str | None], value: Any
) -> Any:
    why = problem(value)
    if why is not None:
        if node.tag == TAG + "bool":
            why += "; in YAML, yes/no/on/off are true/false"
        raise source.error(node, key, why)
    return value


def _text(source: Source, node: yaml.Node, key: str) -> str:
    """A scalar's source text (`2.10` stays "2.10"): a string, or an unquoted number."""
    if not (isinstance(node, yaml.ScalarNode) and node.tag in _TEXT_TAGS):
        source.scalar(node, key)  # refuses mappings, lists and odd tags with their words
        raise source.error(node, key, "must be a string")
    return str(node.value)


def _sequence(source: Source, node: yaml.Node, key: str, what: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ_TAG:
        raise source.error(node, key, f"must be a list of {what}")
    return list(node.value)


def _built(source: Source, node: yaml.Node, key: str, build: Callable[[], _T]) -> _T:
    """`build()`, whose model checks the reader has already made with located refusals;
    one it did not foresee is still refused, located at the enclosing node."""
    try:
        return build()
    except ReleaseError as exc:
        raise source.error(node, key, str(exc)) from None


def _compose(text: str, filename: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1:1"
        parts = " ".join("; ".join(p for p in (exc.context, exc.problem) if p).split())
        msg = f"{filename}:{where}: YAML syntax: {parts}"
        raise ReleaseError(msg) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        msg = f"{filename}:{line}:{column}: YAML: control character {char!r} is not allowed"
        raise ReleaseError(msg) from None
    except yaml.YAMLError as exc:
        msg = f"{filename}:1:1: YAML: {' '.join(str(exc).split())}"
        raise ReleaseError(msg) from None
    except RecursionError:
        msg = f"{filename}:1:1: YAML: nested too deeply"
        raise ReleaseError(msg) from None


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        msg = f"{filename}:{line}:{column}: not UTF-8 text (got {data[exc.start : exc.end]!r})"
        raise ReleaseError(msg) from None
