"""The job spec: what a submission asks for, declared once.

Theory of operation
-------------------
`JobSpec` is the one list of a job's fields: each with its type, its default, the check
a value must pass to cross the wire, its unit and a line of documentation (`Doc`, in
the field's metadata). Everything else that speaks of a job's fields is derived from it,
or checked against it by `tests/test_jobspec.py`:

- the wire's `submit` (`farmd.protocol.Submit`) *is* a `JobSpec` with a request id and
  an idempotency key: it inherits the fields and their checks, and a refusal names the
  field and the message (`refused`);
- the core's `SubmitJob` (`farmd.core`) is a `JobSpec` with the time and the submitter,
  built from the same fields but *without* their checks (`unchecked`): the core takes a
  spec as given, and `draft_job` refuses a bad one in the core's own words, so that a
  submission made in-process is judged as one that came over the wire;
- `farmd submit`'s options are generated from the fields' `Doc` (the flag is the field's
  name with dashes, `--cross-cluster`; `command` is the positional `argv`);
- the client's `submit_job` keyword arguments and the store's columns are checked
  against the fields by tests (a typed Python signature is worth one restatement, and
  renaming a stored column is a schema migration).

One name per concept: a field's name is its name on the wire, in `farmd job --json`,
in the client's keyword arguments and, with dashes, on the command line. Adding a field
is one edit here, plus what it means to the core (`draft_job`) and the store.

The checks here are the wire's, about shape (a string, an integer >= 0, a bounded name
without control characters); what a value means (a cluster path, a frame range, a
requirement expression) is parsed and refused by the core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs

from farmd.errors import FarmdError, JobSpecError
from farmd.values import (
    MAX_NAME_CHARS,
    as_tuple,
    is_count,
    is_int,
    is_seconds,
    is_str,
    show,
    text_problem,
)

DOC: Final = "farmd.jobspec"  # the metadata key of a field's `Doc`


@attrs.frozen(kw_only=True)
class Doc:
    """What a field of the spec means, for people and for the command line.

    `parse` names how `farmd submit` reads the option's text (`farmd.cli` maps each to
    a parser): `text` as it is, `int`, `count` (0 or more), `positive` (1 or more),
    `seconds` (a number >= 0), `job_id`, `dependencies` (repeatable, comma-separated)
    or `flag` (no value). `option` False: not an option (the command is positional)."""

    help: str
    unit: str = ""
    metavar: str | None = None
    parse: str = "text"
    option: bool = True


PARSES: Final = frozenset(
    {"text", "int", "count", "positive", "seconds", "job_id", "dependencies", "flag", "env"}
)


def doc(field: attrs.Attribute[Any]) -> Doc:
    """The documentation of one of `JobSpec`'s fields."""
    found: Doc = field.metadata[DOC]
    return found


def option_flag(name: str) -> str:
    """The command-line flag of a field: its name with dashes."""
    return "--" + name.replace("_", "-")


def _meta(help: str, **more: Any) -> dict[str, Doc]:
    return {DOC: Doc(help=help, **more)}


# --------------------------------------------------------------------------- checks

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _rule(predicate: Callable[[Any], bool], why: str) -> Validator:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not predicate(value):
            raise type(instance).refused(attribute.name, why, value)

    return validate


def _optional(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or predicate(v)


def _names(*, optional: bool = False, many: bool = False) -> Validator:
    """A name (or, `many`, a tuple of names or job-naming texts): bounded, without
    control characters; the refusal says which rule the value broke and shows it."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if optional and value is None:
            return
        if many and not isinstance(value, tuple):
            raise type(instance).refused(attribute.name, "must be a list", value)
        for item in value if many else (value,):
            why = text_problem(item, MAX_NAME_CHARS, empty=True)
            if why is not None:
                raise type(instance).refused(attribute.name, why, item)

    return validate


def _dependencies(value: object) -> object:
    """`depends_on` entries are "ID" or "ID:MODE" strings; a bare integer id is "ID"."""
    if not isinstance(value, list | tuple):
        return value
    return tuple(str(v) if is_int(v) else v for v in value)


_IS_STRINGS = _rule(lambda v: isinstance(v, tuple) and all(map(is_str, v)), "must be strings")
_IS_STR = _rule(is_str, "must be a string")
_IS_COUNT = _rule(is_count, "must be >= 0")
_IS_SECONDS = _rule(is_seconds, "must be >= 0")
_IS_BOOL = _rule(lambda v: isinstance(v, bool), "must be a bool")


def _text(help: str, metavar: str | None = None) -> Any:
    return attrs.field(default="", validator=_IS_STR, metadata=_meta(help, metavar=metavar))


def _params(value: Any) -> Any:
    """A job type's parameters as `NAME=VALUE` strings; a mapping (the Python client's
    `params={"scene": "/a.blend", "frames": 10}`) is written so, a bool as true/false."""
    if isinstance(value, dict):
        return tuple(f"{name}={_param_text(item)}" for name, item in value.items())
    return as_tuple(value)


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- the spec


@attrs.frozen(kw_only=True)
class JobSpec:
    """A job as submitted: the command, where and when it may run, what it needs."""

    argv: tuple[str, ...] = attrs.field(
        converter=as_tuple,
        validator=_IS_STRINGS,
        metadata=_meta(
            "the command and its arguments, run without a shell; {frame}, {start} and {end}"
            " are filled in",
            option=False,
        ),
    )
    name: str = attrs.field(
        default="",
        validator=_names(),
        metadata=_meta("the job's name (default: jobID)", metavar="NAME"),
    )
    cluster: str | None = attrs.field(
        default=None,
        validator=_rule(_optional(is_str), "must be a string"),
        metadata=_meta("cluster path (default: the farm's default)", metavar="PATH"),
    )
    priority: int | None = attrs.field(
        default=None,
        validator=_rule(_optional(is_int), "must be an integer"),
        metadata=_meta("1 is the most urgent (default 9999)", metavar="P", parse="int"),
    )
    restrictions: str = _text("worker clusters the job accepts, e.g. '/show1/*'", "EXPR")
    cross_cluster: str = _text(
        "clusters where the job ranks as in its own, e.g. '/showA+'", "PATTERNS"
    )
    frames: str = _text("frames as Qube writes them: 1-100, 1,3,5, 1-10x3", "RANGE")
    depends_on: tuple[int | str, ...] = attrs.field(
        default=(),
        converter=_dependencies,
        validator=[
            _rule(lambda v: isinstance(v, tuple), 'must be job ids or "ID:MODE" strings'),
            _names(many=True),
        ],
        metadata=_meta(
            "wait for job ID: until it is complete (the default), done (ended, however), "
            "failed, or frames (frame N waits for frame N of ID); repeatable, or "
            "comma-separated",
            metavar="ID[:MODE]",
            parse="dependencies",
        ),
    )
    instances: int = attrs.field(
        default=0,
        validator=_IS_COUNT,
        metadata=_meta(
            "frames of the job running at once at most (default: no cap)",
            unit="frames",
            metavar="N",
            parse="count",
        ),
    )
    retries: int = attrs.field(
        default=0,
        validator=_IS_COUNT,
        metadata=_meta("times a failed frame runs again (default 0)", metavar="N", parse="count"),
    )
    retry_delay: float = attrs.field(
        default=0.0,
        validator=_IS_SECONDS,
        metadata=_meta(
            "seconds before a failed frame runs again (default 0)",
            unit="seconds",
            metavar="S",
            parse="seconds",
        ),
    )
    time_limit: float = attrs.field(
        default=0.0,
        validator=_IS_SECONDS,
        metadata=_meta(
            "kill and fail an attempt after S seconds (default 0: no limit)",
            unit="seconds",
            metavar="S",
            parse="seconds",
        ),
    )
    chunk: int = attrs.field(
        default=1,
        validator=_rule(lambda v: is_int(v) and v >= 1, "must be >= 1"),
        metadata=_meta(
            "run N frames per dispatch: {start} and {end} in the command, "
            "FARMD_FRAME_START and FARMD_FRAME_END in its environment",
            unit="frames",
            metavar="N",
            parse="positive",
        ),
    )
    # the job this one is a sub-job of; a frame's own token always sets its job here
    parent: int | None = attrs.field(
        default=None,
        validator=_rule(_optional(is_int), "must be an integer"),
        metadata=_meta(
            "submit as a sub-job of job ID (inside a frame, its own job is the parent)",
            metavar="ID",
            parse="job_id",
        ),
    )
    uninterruptible: bool = attrs.field(
        default=False,
        validator=_IS_BOOL,
        metadata=_meta("never preempt this job's frames", parse="flag"),
    )
    # not `type`: that is a wire message's own key
    job_type: str | None = attrs.field(
        default=None,
        validator=_names(optional=True),
        metadata=_meta("run only on workers that advertise this job type", metavar="TYPE"),
    )
    requires: str = _text(
        "what a host must satisfy, e.g. 'host.os == linux and host.memory >= 16G'", "EXPR"
    )
    reserve: str = _text(
        "what a frame holds while it runs: slots=N (N+ at least, N* an idle host), "
        "memory=8G, gpu=1, license.nuke=1 (default slots=1)",
        "NAME=AMOUNT,...",
    )
    env: tuple[str, ...] = attrs.field(
        default=(),
        converter=as_tuple,
        validator=[_IS_STRINGS, _rule(lambda v: len(v) <= 256, "at most 256 variables")],
        metadata=_meta(
            "a variable of the frame's environment, NAME=VALUE (not FARMD_*); repeatable",
            metavar="NAME=VALUE",
            parse="env",
        ),
    )

    notify: str = _text(
        "POST the job's summary as JSON to this http(s) URL when it ends (retried for "
        "up to an hour; default: the farm's for the job's cluster)",
        "URL",
    )
    params: tuple[str, ...] = attrs.field(
        default=(),
        converter=_params,
        validator=[_IS_STRINGS, _rule(lambda v: len(v) <= 256, "at most 256 parameters")],
        metadata=_meta(
            "a parameter of the job type, NAME=VALUE (a job of a release's type, with no "
            "command of its own: `farmd types` lists them); repeatable",
            metavar="NAME=VALUE",
            parse="env",
        ),
    )

    @classmethod
    def refused(cls, field: str, why: str, value: object) -> FarmdError:
        """The error for a value of `field` that fails its check; a message that is a
        spec (the wire's `submit`) names itself instead."""
        return JobSpecError(f"bad job field {field!r}: {why} (got {show(value)})")


def spec_fields() -> Iterator[attrs.Attribute[Any]]:
    """`JobSpec`'s fields, in order."""
    yield from attrs.fields(JobSpec)


SPEC_NAMES: Final = tuple(field.name for field in attrs.fields(JobSpec))


def unchecked(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    """An attrs `field_transformer`: the spec's fields without their wire checks and
    conversions, for a class that takes a spec as given (the core's `SubmitJob`)."""
    return [f.evolve(validator=None, converter=None) for f in fields]
