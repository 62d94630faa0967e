"""Argv templates of release job types: reading their placeholders and filling them in.

Theory of operation
-------------------
A job type's `command` is an argv template. In it, `{name}` stands for a declared
parameter, `{frame}`, `{start}`, `{end}`, `{release}` and `{python}` (`RESERVED`) for what
the worker knows when it runs a frame (`{python}` is the worker's own interpreter, which
runs Python tasks: `farmd.releases.params.task_command`), and `{{` / `}}` are literal
braces. Any other brace is an error at manifest time (`template_problem`).

A template is filled in two steps, at two places:

1. At submit, `fill_params` replaces each parameter placeholder by its value, *escaped*:
   every `{` of the value is written `{{` and every `}` is written `}}`. Literal `{{` and
   `}}` of the template are kept as they are, and so are the reserved placeholders. The
   result is still a template, in the same syntax, holding only reserved placeholders:
   this is the argv a release job stores.
2. On the worker, `fill_frame(argv, frame, start, end, release_dir, python=...)` reads
   that argv in one left-to-right pass: `{{` -> `{`, `}}` -> `}`, reserved placeholder ->
   its value.
   Because step 1 doubled every brace of a value, a parameter whose value is the text
   `{frame}` reaches the frame as the text `{frame}`, never as a frame number.

A job that is not from a release (a raw argv, as every job was before releases) has no
escapes: `fill_frame(..., release_dir=None)` fills it exactly as the supervisor's
dispatch has always done (`farmd.core.dispatch._fill`): plain text replacement of
`{frame}`, `{start}` and `{end}`, nothing else touched (`{{` stays `{{`, `{release}`
and `{python}` stay as written). So the two forms must never be mixed: a release job's
argv is filled only by the worker, with its release directory; dispatch must pass it
through untouched.

Everything here is pure, but for `fill_frame` reading `sys.executable` when it is not
told which interpreter fills `{python}`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

RESERVED: Final = ("frame", "start", "end", "release", "python")

# `{{`, `}}`, a placeholder `{...}` (group 1), or a lone brace: every brace of a template
# is one of these, so a scan by this pattern sees all of them, in order.
_TOKEN: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template_problem(arg: str, known: Collection[str]) -> str | None:
    """Why `arg` is not a valid argv template whose placeholders are `known` names or
    `RESERVED`; None when it is."""
    for match in _TOKEN.finditer(arg):
        token, name = match.group(), match.group(1)
        if token in ("{{", "}}"):
            continue
        at = match.start() + 1
        if name is None:
            return f"unmatched {token!r} at character {at}; write {token * 2!r} for a brace"
        if name not in known and name not in RESERVED:
            if not _NAME.fullmatch(name):
                return (
                    f"{{{name}}} at character {at} is not a placeholder; write '{{{{' and "
                    "'}}' for literal braces"
                )
            allowed = ", ".join(f"{{{n}}}" for n in (*sorted(known), *RESERVED))
            return f"unknown placeholder {{{name}}} at character {at}; known: {allowed}"
    return None


def placeholders(arg: str) -> tuple[str, ...]:
    """The placeholder names of a valid template argument, in order (repeats kept)."""
    return tuple(m.group(1) for m in _TOKEN.finditer(arg) if m.group(1) is not None)


def escape(value: str) -> str:
    """A value as template text that reads back as itself: braces doubled."""
    return value.replace("{", "{{").replace("}", "}}")


def _substitute(arg: str, value_of: Callable[[str], str | None], unescape: bool) -> str:
    """One pass over `arg`: a placeholder `value_of` knows becomes its value; `{{`/`}}`
    become single braces if `unescape`, else stay; everything else stays as written."""
    if "{" not in arg and "}" not in arg:
        return arg

    def replace(match: re.Match[str]) -> str:
        token, name = match.group(), match.group(1)
        if token in ("{{", "}}"):
            return token[0] if unescape else token
        if name is not None:
            value = value_of(name)
            if value is not None:
                return value
        return token

    return _TOKEN.sub(replace, arg)


def fill_params(template: Sequence[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """Step 1: each `{name}` of `values` replaced by its (already formatted) text,
    escaped; reserved placeholders and literal `{{`/`}}` kept for the worker."""

    def value_of(name: str) -> str | None:
        if name in RESERVED:
            return None
        text = values.get(name)
        return None if text is None else escape(text)

    return tuple(_substitute(arg, value_of, unescape=False) for arg in template)


def fill_frame(
    argv: Sequence[str],
    frame: int | str,
    start: int | str,
    end: int | str,
    release_dir: str | None,
    *,
    python: str | None = None,
) -> list[str]:
    """Step 2, on the worker: the argv a frame runs.

    `release_dir` None: a job without a release, filled exactly as dispatch has always
    filled it (plain replacement of `{frame}`, `{start}`, `{end}`; no escapes; `python`
    is not used). A release directory: a release job's argv (from `fill_params`), read
    in one pass: `{{`/`}}` are single braces, `{frame}`, `{start}`, `{end}`,
    `{release}` and `{python}` are filled; `{python}` by `python`, else by the
    interpreter running this code (`sys.executable`), so a release job never runs with
    a placeholder left in it. A lone brace (which `fill_params` never leaves) is kept.
    """
    frame_text, start_text, end_text = str(frame), str(start), str(end)
    if release_dir is None:
        return [_legacy_fill(arg, frame_text, start_text, end_text) for arg in argv]
    reserved = {"frame": frame_text, "start": start_text, "end": end_text}
    reserved["release"] = release_dir
    # sys.executable is "" when Python cannot tell; "python3" is then the best guess.
    reserved["python"] = python if python is not None else (sys.executable or "python3")
    return [_substitute(arg, reserved.get, unescape=True) for arg in argv]


def _legacy_fill(arg: str, frame: str, first: str, last: str) -> str:
    """As `farmd.core.dispatch._fill`, which raw-argv jobs have always been filled by."""
    if "{" not in arg:
        return arg
    return arg.replace("{frame}", frame).replace("{start}", first).replace("{end}", last)
