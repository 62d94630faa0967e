"""A job type's parameters as a submit gives them, typed, and its command filled in.

Theory of operation
-------------------
`resolve_params(job_type, given)` turns what a user typed (`--param scene=/a.blend`,
text) into typed values: each given value is read by its parameter's type, each
parameter not given takes its default, and a missing required one, an unknown one or an
ill-typed value is refused with one line naming the job type, the parameter and the
value (a `ParamError`). A value that is already typed (a Python task's
`submit_subjob(params={"count": 3})`) is taken if it is of the parameter's type.

Text is read as:

- `str`: any text; `path`: any text but the empty one; `choice`: one of its choices.
- `int`: `[+-]digits`, a signed 64-bit integer (no `_`, no `0x`).
- `float`: a decimal number, optionally with an exponent; never nan or inf.
- `bool`: true/false, yes/no, 1/0, in any case.

No value holds a NUL or is longer than `model.MAX_TEXT_CHARS`: they become arguments.

`fill_command(job_type, values)` is step 1 of `farmd.releases.template`: parameter
placeholders filled (values escaped), `{frame}`, `{start}`, `{end}`, `{release}` and
`{python}` left for the worker's `fill_frame`. A value is written as text the way it
reads back: an int in decimal, a float by `repr` (`0.5`, `1e+20`), a bool as
`true`/`false`.

A Python job type (`python: module:function`) has no template: its argv is
`task_command`, the worker's interpreter running `farmd.releases.task_runner` on the
release directory and the function. Its parameters do not go into the argv at all; the
frame reads them as JSON from `FARMD_PARAMS` (typed values, as `resolve_params` made
them), so they need no escaping and keep their types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from farmd.errors import ParamError
from farmd.releases import model
from farmd.releases.model import JobType, Param, ParamType, ParamValue
from farmd.releases.template import RESERVED, escape, fill_params, placeholders
from farmd.values import is_int, show

_INT: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})
MAX_GIVEN: Final = model.MAX_PARAMS
TASK_RUNNER: Final = "farmd.releases.task_runner"


def resolve_params(job_type: JobType, given: Mapping[str, object]) -> dict[str, ParamValue]:
    """The typed values of a job of `job_type`: `given` (text, or already typed values)
    read by type, defaults for the rest; refused in one line naming the parameter."""
    if len(given) > MAX_GIVEN:
        msg = f"job type {job_type.name!r}: {len(given)} params given, at most {MAX_GIVEN}"
        raise ParamError(msg)
    values: dict[str, ParamValue] = {}
    for name, value in given.items():
        param = job_type.param(name) if isinstance(name, str) else None
        if param is None:
            known = ", ".join(p.name for p in job_type.params) or "it has none"
            msg = f"job type {job_type.name!r} has no param {show(name)}; params: {known}"
            raise ParamError(msg)
        values[name] = _typed(job_type, param, value)
    for param in job_type.params:
        if param.name in values:
            continue
        if param.required:
            usage = f"--param {param.name}={_metavar(param)}"
            msg = f"job type {job_type.name!r} needs param {param.name!r} ({usage})"
            raise ParamError(msg)
        if param.default is not None:
            values[param.name] = param.default
    return values


def _metavar(param: Param) -> str:
    if param.type is ParamType.CHOICE:
        return "|".join(param.choices)
    return str(param.type.value).upper()


def _typed(job_type: JobType, param: Param, value: object) -> ParamValue:
    why = None
    typed: object = value
    if isinstance(value, str):
        typed, why = _from_text(param, value)
    if why is None:
        why = model.default_problem(param.type, typed, param.choices)
    if why is not None:
        msg = (
            f"job type {job_type.name!r}: param {param.name}={show(value)}: "
            f"not a valid {param.type.value}: {why}"
        )
        raise ParamError(msg)
    if param.type is ParamType.FLOAT:
        return float(typed)  # type: ignore[arg-type]  # checked: an int or a float
    return typed  # type: ignore[return-value]  # checked by default_problem


def _from_text(param: Param, text: str) -> tuple[object, str | None]:
    """A value read from text by the param's type, or the reason it cannot be."""
    kind = param.type
    if kind is ParamType.INT:
        number = int(text) if _INT.fullmatch(text.strip()) else None
        if number is None or not is_int(number):
            return None, "must be a whole number (a signed 64-bit integer)"
        return number, None
    if kind is ParamType.FLOAT:
        if not _FLOAT.fullmatch(text.strip()):
            return None, "must be a number such as 0.5 or 1e-3"
        real = float(text)
        return (real, None) if math.isfinite(real) else (None, "must be a finite number")
    if kind is ParamType.BOOL:
        word = text.strip().lower()
        if word in _TRUE:
            return True, None
        if word in _FALSE:
            return False, None
        return None, "must be true/false, yes/no or 1/0"
    return text, None


def format_value(value: ParamValue) -> str:
    """A typed value as the text a command receives."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def fill_command(job_type: JobType, values: Mapping[str, ParamValue]) -> tuple[str, ...]:
    """The argv a release job stores: its type's template with `values` (from
    `resolve_params`) filled in, escaped, and the worker's placeholders left in place.
    A Python job type's is `task_command` (its values travel in `FARMD_PARAMS`)."""
    if job_type.python is not None:
        return task_command(job_type)
    if job_type.command is None:  # the model holds exactly one of command and python
        msg = f"job type {job_type.name!r} has neither a command nor a python function"
        raise ParamError(msg)
    texts = {name: format_value(value) for name, value in values.items()}
    for arg in job_type.command:
        for name in placeholders(arg):
            if name not in texts and name not in RESERVED:
                msg = f"job type {job_type.name!r}: param {name!r} has no value"
                raise ParamError(msg)
    return fill_params(job_type.command, texts)


def task_command(job_type: JobType) -> tuple[str, ...]:
    """The argv template of a Python job type: the worker's interpreter (`{python}`)
    running `farmd.releases.task_runner` on the release directory (`{release}`) and the
    type's `module:function`, which `fill_frame` turns into exactly
    `[python, -m, farmd.releases.task_runner, RELEASE_DIR, module:function]`."""
    if job_type.python is None:
        msg = f"job type {job_type.name!r} runs a command, not a python function"
        raise ParamError(msg)
    # escape() is a no-op on a valid `module:function` (no braces); it keeps the
    # template a template should the rule ever allow more.
    return ("{python}", "-m", TASK_RUNNER, "{release}", escape(job_type.python))
