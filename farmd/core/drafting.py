"""Drafting a submission: everything about a job that does not depend on the farm.

Theory of operation
-------------------
A submission is checked in two steps. `draft_job` checks what the request alone decides
(the command and its size, the name, the cluster path, restrictions, patterns,
dependency syntax, options, the requirement, the reservation) and builds its frames
into a `Draft`. It is pure, reading only the event, so the shell may run it in a worker
thread for a large job (a million frames take seconds) and hand the draft back in
`SubmitJob.prepared`. `Submissions` (`submission`) then checks the draft against the
farm (parent, dependencies, who asks) on the loop, in time that does not grow with frames.

`submission_digest` is what an idempotency key remembers of its submission, so a repeat
of the key is accepted only for the same request.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import reprlib
from collections.abc import Iterable

import attrs

from farmd.cluster import (
    ClusterPath,
    CrossClusterPatterns,
    Restrictions,
    parse_cluster,
    parse_patterns,
    parse_restrictions,
    quote,
)
from farmd.core.authority import Credential, Principal
from farmd.core.vocabulary import SubmitJob, SubmitJobs
from farmd.errors import JobSpecError, UserError
from farmd.frames import MAX_FRAMES_PER_JOB, FrameNumbers, frame_numbers, frames_named
from farmd.jobs import Dependency, parse_dependency
from farmd.placeholders import problem as placeholder_problem
from farmd.protocol import MAX_NAME_CHARS, odd_character
from farmd.requirements import Requirement, parse_requirement
from farmd.resources import Reservation, check_name, parse_reservation
from farmd.values import MAX_RETRIES, check_notify

MAX_COMMAND_BYTES = 256 * 1024


@attrs.frozen(kw_only=True)
class Draft:
    """A submission checked for everything that does not depend on the farm's state,
    with its frames built (`draft_job`). Used once: the job it becomes takes its
    frames as they are."""

    argv: tuple[str, ...]
    cluster: ClusterPath | None  # None: the parent's, or the default
    restrictions: Restrictions
    cross_cluster: CrossClusterPatterns
    depends_on: tuple[Dependency, ...]
    job_type: str | None
    requires: Requirement
    reserve: Reservation
    numbers: FrameNumbers = attrs.field(eq=False, repr=False)  # every frame, in order
    frame_range: str  # the same as a frame range, for the store
    env: dict[str, str] = attrs.field(factory=dict)  # added to each frame's environment
    # a job of a release's type (no command of its own): its parameters as given, which
    # the farm's releases resolve at the job's cluster (`farmd.core.rollout`)
    params: dict[str, str] = attrs.field(factory=dict)
    notify: str = ""  # an http(s) URL told when the job ends (`check_notify`)

    @property
    def typed(self) -> bool:
        """A job of a release's type: it has no command of its own."""
        return not self.argv


def draft_job(event: SubmitJob, max_command_bytes: int = MAX_COMMAND_BYTES) -> Draft:
    """Check `event` for everything but the farm's state and build its frames. Pure:
    it reads only `event`, so the supervisor runs it in a worker thread for a large
    job (a million frames take seconds) while the loop serves everyone else."""
    argv = tuple(event.argv)
    params = parse_params(event.params)
    if not argv and event.job_type:
        pass  # a job of a release's type: the release gives the command
    elif not argv or not argv[0]:
        msg = (
            "bad job: a command is required (farmd submit ... -- COMMAND ARG...), "
            "or a job type from a release (farmd submit --type TYPE --param NAME=VALUE)"
        )
        raise JobSpecError(msg)
    elif params:
        msg = (
            "bad job: --param is for a job of a release's type, which has no command of "
            f"its own; this job has one ({reprlib.repr(argv[0])})"
        )
        raise JobSpecError(msg)
    size = sum(len(arg.encode()) + 1 for arg in argv)
    if size > max_command_bytes:
        msg = f"bad job: the command is {size} bytes, over the {max_command_bytes} limit"
        raise JobSpecError(msg)
    for position, arg in enumerate(argv, 1):
        why = placeholder_problem(arg)
        if why is not None:
            msg = f"bad job: argument {position} of the command: {why}"
            raise JobSpecError(msg)
    if len(event.name) > MAX_NAME_CHARS:
        msg = f"bad job name {event.name[:40]!r}...: longer than {MAX_NAME_CHARS} characters"
        raise JobSpecError(msg)
    odd = odd_character(event.name)  # the wire refuses it too; so does the core
    if odd is not None:
        msg = f"bad job name {quote(event.name)}: {odd}"
        raise JobSpecError(msg)
    cluster = parse_cluster(event.cluster) if event.cluster else None
    restrictions = parse_restrictions(event.restrictions)
    patterns = parse_patterns(event.cross_cluster)
    depends_on = tuple(dict.fromkeys(parse_dependency(d) for d in event.depends_on))
    _check_options(event.instances, event.retries, event.retry_delay, event.time_limit)
    job_type = check_name(event.job_type, "job type") if event.job_type else None
    requires = parse_requirement(event.requires)
    reserve = parse_reservation(event.reserve)
    chunk = event.chunk
    whole = isinstance(chunk, int) and not isinstance(chunk, bool)
    if not whole or not 1 <= chunk <= MAX_FRAMES_PER_JOB:
        msg = f"bad chunk {chunk!r}: must be a whole number of frames, at least 1"
        raise JobSpecError(msg)
    numbers = frame_numbers(event.frames) if event.frames else FrameNumbers((1,))
    return Draft(
        argv=argv,
        cluster=cluster,
        restrictions=restrictions,
        cross_cluster=patterns,
        depends_on=depends_on,
        job_type=job_type,
        requires=requires,
        reserve=reserve,
        numbers=numbers,
        frame_range=numbers.text(),
        env=parse_env(event.env),
        params=params,
        notify=check_notify(event.notify),
    )


def draft_batch(
    jobs: tuple[SubmitJob, ...], max_command_bytes: int = MAX_COMMAND_BYTES
) -> tuple[Draft, ...]:
    """`draft_job` of each job of a batch, refused whole; pure as it is. A batch names
    at most `MAX_FRAMES_PER_JOB` frames in all, as one job may."""
    named = 0
    for number, spec in enumerate(jobs):
        named += frames_named(spec.frames) if isinstance(spec.frames, str) else 0
        if named > MAX_FRAMES_PER_JOB:
            msg = (
                f"bad batch: its jobs name more than {MAX_FRAMES_PER_JOB} frames in all "
                f"(by job {number + 1}); submit it in several batches (nothing was submitted)"
            )
            raise JobSpecError(msg)
    drafts = []
    for number, spec in enumerate(jobs):
        try:
            drafts.append(draft_job(spec, max_command_bytes))
        except UserError as exc:
            raise _in_batch(exc, number) from None
    return tuple(drafts)


def _in_batch(exc: UserError, number: int) -> UserError:
    msg = f"job {number + 1} of the batch: {exc} (nothing was submitted)"
    return type(exc)(msg)


# Fields of a submission that are not what it asks for: left out of its digest.
_NOT_SPEC = frozenset({"now", "key", "by", "prepared", "digest"})


def submission_digest(event: SubmitJob | SubmitJobs) -> str:
    """What a submission asked for, as a short digest: a repeat of its key must ask
    the same. Fields at their defaults are left out, so a field a later farmd adds
    does not change the digest of a submission stored before it. Pure: the shell
    computes it off the loop for a large submission."""
    if isinstance(event, SubmitJob):
        return _digest("submit", (event,), event.by)
    return _digest("submit_batch", event.jobs, event.by)


# A field's name in a digest when it is not its own: digests are stored with the jobs,
# and a key repeated across an upgrade must still match what it first asked for.
_DIGEST_NAMES = {"cross_cluster": "patterns"}


def _digest(kind: str, specs: Iterable[SubmitJob], by: Principal) -> str:
    defaults = {f.name: f.default for f in attrs.fields(SubmitJob)}
    body = [
        {
            _DIGEST_NAMES.get(name, name): value
            for name, value in attrs.asdict(spec, recurse=False).items()
            if name not in _NOT_SPEC and value != defaults[name]
        }
        for spec in specs
    ]
    who = {  # the words digests were first stored with: keep them
        Credential.FARM_TOKEN: "admin",
        Credential.USER_TOKEN: "user",
        Credential.JOB_TOKEN: f"job {by.job}",
        Credential.PERSONAL: f"user {by.user}",
    }[by.credential]
    text = json.dumps([kind, who, body], sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# A job's own variables for its frames: names as a shell writes them, a value a line of
# text; never FARMD_* (the supervisor's), and bounded (they ride in every run_frame).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_ENV_BYTES = 65536


def parse_env(entries: object) -> dict[str, str]:
    """A job's `env` (`NAME=VALUE` strings) as a dict; refused naming the bad entry."""
    return _name_values(
        entries, "env", "env entry", _ENV_NAME, "a variable name", MAX_ENV_BYTES, farm_names=True
    )


def _name_values(
    entries: object,
    field: str,
    entry_word: str,
    names: re.Pattern[str],
    name_rule: str,
    limit: int,
    *,
    farm_names: bool = False,
) -> dict[str, str]:
    """`NAME=VALUE` strings as a dict (a job's `env` and `params`): each name by the
    rule `names`, values of one line, at most `limit` bytes in all. `farm_names` (env)
    refuses FARMD_* names and lets a repeated name's last value win, as a shell does;
    otherwise (params) a name is given once."""
    if not isinstance(entries, tuple | list):
        msg = f"bad {field} {reprlib.repr(entries)}: expected NAME=VALUE strings"
        raise JobSpecError(msg)
    found: dict[str, str] = {}
    size = 0
    for entry in entries:
        name, mark, value = entry.partition("=") if isinstance(entry, str) else ("", "", "")
        shown = reprlib.repr(entry)
        if not mark or not names.fullmatch(name):
            msg = f"bad {entry_word} {shown}: expected NAME=VALUE, NAME {name_rule}"
            raise JobSpecError(msg)
        if farm_names and name.startswith("FARMD_"):
            msg = f"bad {entry_word} {shown}: FARMD_* variables are the farm's"
            raise JobSpecError(msg)
        if not farm_names and name in found:
            msg = f"bad {entry_word} {shown}: {name} is given twice"
            raise JobSpecError(msg)
        if "\0" in value or "\n" in value:
            msg = f"bad {entry_word} {shown}: a value is one line of text"
            raise JobSpecError(msg)
        size += len(entry.encode())
        found[name] = value
    if size > limit:
        msg = f"bad {field}: {size} bytes, over the {limit} limit"
        raise JobSpecError(msg)
    return found


_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_PARAMS_BYTES = 65536


def parse_params(entries: object) -> dict[str, str]:
    """A job's `params` (`NAME=VALUE` strings) as a dict of text; refused naming the bad
    entry. What each means is its job type's to say (`farmd.releases.params`)."""
    return _name_values(entries, "params", "param", _PARAM_NAME, "an identifier", MAX_PARAMS_BYTES)


_PIN_KEYS = frozenset({"name", "version", "digest", "size", "python"})


def release_pin(text: object) -> dict[str, object] | None:
    """A stored job's pinned release (JSON text, or None); refused (a poisoned row is
    quarantined) unless it is the shape the farm writes."""
    if text is None:
        return None
    try:
        pin = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        pin = None
    if (
        not isinstance(pin, dict)
        or not {"name", "version", "digest", "size"} <= set(pin) <= _PIN_KEYS
        or not all(isinstance(pin[k], str) for k in ("name", "version", "digest"))
        or isinstance(pin["size"], bool)
        or not isinstance(pin["size"], int)
        or not isinstance(pin.get("python", ""), str)
    ):
        msg = f"bad release of a job: {reprlib.repr(text)}"
        raise JobSpecError(msg)
    return pin


def release_params(text: object) -> dict[str, object]:
    """A stored job's resolved parameters (a JSON object of plain values)."""
    if text == "{}":  # most jobs' (none): no parser for it
        return {}
    try:
        params = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        params = None
    plain = (str, int, float, bool)
    if not isinstance(params, dict) or not all(isinstance(v, plain) for v in params.values()):
        msg = f"bad params of a job: {reprlib.repr(text)}"
        raise JobSpecError(msg)
    return params


def _check_options(instances: int, retries: int, retry_delay: float, time_limit: float) -> None:
    """Refuse bad job options, naming the value."""
    fields: tuple[tuple[str, float, bool], ...] = (
        ("instances", instances, True),
        ("retries", retries, True),
        ("retry delay", retry_delay, False),
        ("frame time limit", time_limit, False),
    )
    for name, value, whole in fields:
        kinds = (int,) if whole else (int, float)
        bad = isinstance(value, bool) or not isinstance(value, kinds)
        if bad or not math.isfinite(value) or value < 0:
            unit = "a whole number" if whole else "a number of seconds"
            msg = f"bad {name} {value!r}: must be {unit}, 0 or more"
            raise JobSpecError(msg)
    if retries > MAX_RETRIES:
        msg = f"bad retries {retries}: at most {MAX_RETRIES}"
        raise JobSpecError(msg)
