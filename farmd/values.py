"""What a value on the wire may be: msgpack's own types, and bounded, printable names.

Shared by the protocol's messages and the job spec (`farmd.jobspec`), which the protocol
derives its `submit` from: both check a field the same way, so this sits below both.
"""

from __future__ import annotations

import math
import re
import reprlib
import urllib.parse
from typing import Final

from farmd.errors import JobSpecError

# Names (of a job, worker, job type, property, resource) and the short texts that name
# jobs (a dependency, a control target) are printed in listings and logs, one per line:
# bounded, and without control characters (docs/protocol.md, "Names").
MAX_NAME_CHARS: Final = 256

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 3, 40, 40


def show(value: object) -> str:
    """A refused value as a short line: reprlib bounds depth and length, so a hostile
    value must not cost a deep recursion."""
    shown = _SHOW.repr(value)
    return shown[:77] + "..." if len(shown) > 80 else shown


def is_plain(value: object, depth: int = 0) -> bool:
    """Only msgpack's own types, nested at most 32 deep: what may cross the wire."""
    if value is None or isinstance(value, bool | str | float):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if depth >= 32:
        return False
    if isinstance(value, list | tuple):
        return all(is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v, depth + 1) for k, v in value.items())
    return False


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**64


def is_str(v: object) -> bool:
    return isinstance(v, str)


def is_number(v: object) -> bool:
    """A float, or an int msgpack can carry."""
    return isinstance(v, float) or is_int(v)


def is_count(v: object) -> bool:
    return is_int(v) and v >= 0  # type: ignore[operator]


def is_seconds(v: object) -> bool:
    return is_number(v) and math.isfinite(v) and v >= 0  # type: ignore[arg-type, operator]


def as_tuple(value: object) -> object:
    """A list (as msgpack decodes an array) as a tuple; anything else as it is, for the
    validator to refuse."""
    return tuple(value) if isinstance(value, list | tuple) else value


# Unicode's control characters (category Cc: C0, DEL and C1) and the line and paragraph
# separators: each can end or fake a line of a listing or a log. Format characters (Cf,
# such as a zero-width joiner) are legitimate in names; listings escape them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def odd_character(text: str) -> str | None:
    """Why `text` may not be a name: the first control character it holds, or None."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    char, at = found.group(), found.start() + 1
    return f"holds the control character {char!r} (U+{ord(char):04X}) at character {at}"


def text_problem(value: object, limit: int, *, empty: bool) -> str | None:
    """Why `value` is not a name (or a job-naming text) of at most `limit` characters."""
    if not isinstance(value, str):
        return "must be a string"
    if not value and not empty:
        return "must not be empty"
    if len(value) > limit:
        return f"is {len(value)} characters long, at most {limit} are allowed"
    return odd_character(value)


MAX_RETRIES = 1000  # a job's retries per frame, at most


MAX_URL_CHARS = 2048


def check_notify(url: object) -> str:
    """A job's `notify` URL: "" (none), or an http(s) URL with a host, one line, bounded;
    refused naming it. Which URLs a farm allows is the supervisor's (`notify_allow`)."""
    if url == "":
        return ""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        msg = f"bad notify URL {reprlib.repr(url)}: at most {MAX_URL_CHARS} characters of text"
        raise JobSpecError(msg)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"bad notify URL {reprlib.repr(url)}: expected http:// or https:// and a host"
        raise JobSpecError(msg)
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        msg = f"bad notify URL {reprlib.repr(url)}: no spaces or control characters"
        raise JobSpecError(msg)
    return url
