"""Frame placeholders in a job's command: the one definition of how an argument is filled.

Theory of operation
-------------------
Every frame's argv is its job's argv read once, left to right, argument by argument:

- `{{` is a literal `{` and `}}` a literal `}`;
- `{frame}` is the frame number (a chunk's first), `{start}` and `{end}` the chunk's
  first and last frame;
- `{frame:SPEC}` (and `{start:SPEC}`, `{end:SPEC}`) formats the number with a Python
  format spec for an integer: `[[fill]align][sign][0][width][d]`, width at most 99, so
  `{frame:04d}` is `0007`. A spec of any other kind is refused at submit (`problem`);
- `{#...#}`, one to 99 `#` in braces, is the frame number zero-padded to as many digits,
  the way Nuke and Blender write a frame in a file name (`{####}` is `0007`). A bare
  `####` is left alone: the renderers that write it expand it themselves
  (`blender -o /renders/a/####`), and filling it first would change what they are told;
- a release job's worker also fills `{release}` and `{python}` (`extra`,
  `farmd.releases.template`);
- anything else stays as written: a lone brace, an unknown `{name}`.

The supervisor fills a plain job's argv at dispatch (`farmd.core.dispatch`); a worker
fills a release job's (`farmd.releases.template.fill_frame`). Both call `fill_arg`, so
the rules cannot drift apart.

Jobs stored before these rules were filled by plain text replacement of the three
exact placeholders: one whose argv holds a literal `{{`, `}}` or `{frame:...}` now fills
differently (`{{` becomes `{`). Nothing else changed for them.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

FRAME_NAMES: Final = ("frame", "start", "end")
MAX_WIDTH: Final = 99  # digits a padded frame number may take, at most

# `{{`, `}}`, a placeholder `{...}` (its body: group 1), or a lone brace: every brace of
# an argument is one of these, so a scan by this pattern sees all of them, in order.
TOKEN: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# An integer's format spec: [[fill]align][sign][0][width][d], width 1 to 99.
_SPEC: Final = re.compile(r"(?:[^{}]?[<>=^])?[+ -]?0?(?:[1-9][0-9]?)?d?")
_HASHES: Final = re.compile(f"#{{1,{MAX_WIDTH}}}")


def frame_name(body: str) -> str | None:
    """The frame placeholder a `{body}` is (`frame`, `start` or `end`; `{####}` is
    `frame`), with a valid spec; None if it is not one."""
    if _HASHES.fullmatch(body):
        return "frame"
    name, colon, spec = body.partition(":")
    if name in FRAME_NAMES and (not colon or _SPEC.fullmatch(spec)):
        return name
    return None


def problem(arg: str) -> str | None:
    """Why a command argument holds a frame placeholder that cannot be filled (a spec
    that is not an integer's, too many `#`), naming it; None when it has none."""
    for match in TOKEN.finditer(arg):
        body = match.group(1)
        if body is None or frame_name(body) is not None:
            continue
        name, colon, _ = body.partition(":")
        if name in FRAME_NAMES and colon:
            return (
                f"bad placeholder {{{body}}}: {{{name}:SPEC}} takes an integer format such "
                f"as {{{name}:04d}} ([[fill]align][sign][0][width][d], width at most "
                f"{MAX_WIDTH})"
            )
        if body.startswith("#") and set(body) == {"#"}:
            return f"bad placeholder {{{'#' * 3}...}}: at most {MAX_WIDTH} '#'"
    return None


def fill_arg(
    arg: str,
    frame: int | str,
    start: int | str,
    end: int | str,
    extra: Mapping[str, str] | None = None,
) -> str:
    """`arg` with its placeholders filled (see the module docs): the frame numbers
    (ints, or their decimal text), and the `extra` placeholders a release job has."""
    if "{" not in arg and "}" not in arg:
        return arg
    numbers = {"frame": frame, "start": start, "end": end}

    def replace(match: re.Match[str]) -> str:
        token, body = match.group(), match.group(1)
        if token in ("{{", "}}"):
            return token[0]
        if body is None:
            return token  # a lone brace
        if extra is not None and body in extra:
            return extra[body]
        name = frame_name(body)
        if name is None:
            return token
        value = numbers[name]
        if _HASHES.fullmatch(body):
            return format(int(value), f"0{len(body)}d")
        _, colon, spec = body.partition(":")
        return format(int(value), spec) if colon else str(value)

    return TOKEN.sub(replace, arg)
