"""Argv templates of release job types: reading their placeholders and filling them in.

Theory of operation
-------------------
A job type's `command` is an argv template. In it, `{name}` stands for a declared
parameter, `{frame}`, `{start}`, `{end}`, `{release}` and `{python}` (`RESERVED`) for what
the worker knows when it runs a frame (`{python}` is the worker's own interpreter, which
runs Python tasks: `farmd.releases.params.task_command`), and `{{` / `}}` are literal
braces. The frame placeholders take a padding as in every job (`{frame:04d}`, `{####}`:
`farmd.placeholders`). Any other brace is an error at manifest time (`template_problem`).

A template is filled in two steps, at two places:

1. At submit, `fill_params` replaces each parameter placeholder by its value, *escaped*:
   every `{` of the value is written `{{` and every `}` is written `}}`. Literal `{{` and
   `}}` of the template are kept as they are, and so are the reserved placeholders. The
   result is still a template, in the same syntax, holding only reserved placeholders:
   this is the argv a release job stores.
2. On the worker, `fill_frame(argv, frame, start, end, release_dir, python=...)` reads
   that argv in one left-to-right pass (`farmd.placeholders.fill_arg`, the rules every
   job's command is filled by): `{{` -> `{`, `}}` -> `}`, reserved placeholder -> its
   value. Because step 1 doubled every brace of a value, a parameter whose value is
   the text `{frame}` reaches the frame as the text `{frame}`, never as a frame number;
   and a bare `####` is never a placeholder, so `--param output=/renders/a/####` reaches
   Blender as written, for Blender to fill.

A job that is not from a release (a raw argv) is filled by the same rules without
`{release}` and `{python}`: `fill_frame(..., release_dir=None)` is exactly what the
supervisor's dispatch sends (`farmd.core.dispatch`). A release job's argv is filled
only by the worker, with its release directory; dispatch passes it through untouched.

Everything here is pure, but for `fill_frame` reading `sys.executable` when it is not
told which interpreter fills `{python}`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

from farmd.placeholders import TOKEN, fill_arg, frame_name, problem

RESERVED: Final = ("frame", "start", "end", "release", "python")

# `{{`, `}}`, a placeholder `{...}` (group 1), or a lone brace (farmd.placeholders)
_TOKEN: Final = TOKEN
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template_problem(arg: str, known: Collection[str]) -> str | None:
    """Why `arg` is not a valid argv template whose placeholders are `known` names or
    `RESERVED`; None when it is."""
    for match in _TOKEN.finditer(arg):
        token, name = match.group(), match.group(1)
        if token in ("{{", "}}"):
            continue
        at = match.start() + 1
        if name is not None and frame_name(name) is not None:
            continue  # `{frame:04d}`, `{####}`
        if name is not None and (why := problem(token)) is not None:
            return f"{why}, at character {at}"
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
    """The placeholder names of a valid template argument, in order (repeats kept); a
    padded frame placeholder by its name (`{frame:04d}` and `{####}` are `frame`)."""
    return tuple(
        frame_name(m.group(1)) or m.group(1) for m in _TOKEN.finditer(arg) if m.group(1) is not None
    )


def escape(value: str) -> str:
    """A value as template text that reads back as itself: braces doubled."""
    return value.replace("{", "{{").replace("}", "}}")


def _substitute(arg: str, value_of: Callable[[str], str | None]) -> str:
    """One pass over `arg`: a placeholder `value_of` knows becomes its value; everything
    else, `{{` and `}}` included, stays as written."""
    if "{" not in arg and "}" not in arg:
        return arg

    def replace(match: re.Match[str]) -> str:
        token, name = match.group(), match.group(1)
        if token in ("{{", "}}"):
            return token
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

    return tuple(_substitute(arg, value_of) for arg in template)


def fill_frame(
    argv: Sequence[str],
    frame: int | str,
    start: int | str,
    end: int | str,
    release_dir: str | None,
    *,
    python: str | None = None,
) -> list[str]:
    """Step 2, on the worker: the argv a frame runs, by `farmd.placeholders.fill_arg`.

    `release_dir` None: a job without a release, filled exactly as dispatch fills it
    (`python` is not used; `{release}` and `{python}` stay as written). A release
    directory: a release job's argv (from `fill_params`), with `{release}` and
    `{python}` filled too; `{python}` by `python`, else by the interpreter running this
    code (`sys.executable`), so a release job never runs with a placeholder left in it.
    A lone brace (which `fill_params` never leaves) is kept.
    """
    if release_dir is None:
        return [fill_arg(arg, frame, start, end) for arg in argv]
    # sys.executable is "" when Python cannot tell; "python3" is then the best guess.
    extra = {
        "release": release_dir,
        "python": python if python is not None else (sys.executable or "python3"),
    }
    return [fill_arg(arg, frame, start, end, extra) for arg in argv]
