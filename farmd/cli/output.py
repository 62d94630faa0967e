"""How the admin commands print: `--json` output, and the tables and fields of the text
output, every field made printable so that no value can end a row or fake one.

Times come from the protocol as seconds since the epoch and durations as seconds;
`--json` prints them so, and the tables as people read them: dates in local time
(`when`, `2026-12-03 14:05:12`) and durations in two units at most (`duration`, `3m12s`,
`2h05m`, `1d4h`). A table's `state` column is coloured by state, only when stdout is a
terminal and `NO_COLOR` is unset or empty (https://no-color.org): `use_colour`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from typing import Any, TextIO

# SGR colours of the states of jobs, frames and workers (those not named stay plain)
_COLOURS = {
    "running": "36",  # cyan
    "busy": "36",
    "complete": "32",  # green
    "idle": "32",
    "failed": "31",  # red
    "killed": "35",  # magenta
    "blocked": "33",  # yellow
    "suspended": "33",
    "locked": "33",
    "waiting": "2",  # dim
}


def use_colour(stream: TextIO | None = None) -> bool:
    """Colour `stream` (stdout): only a terminal, and never with `NO_COLOR` set to
    anything but the empty string."""
    if os.environ.get("NO_COLOR", ""):
        return False
    stream = stream if stream is not None else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def paint(text: str, state: str) -> str:
    """`text` in the colour of `state` (as it is, for a state with none)."""
    code = _COLOURS.get(state)
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def print_table(rows: list[dict[str, Any]], columns: list[str], colour: bool | None = None) -> None:
    """`columns` of `rows` as aligned text, under a header of the column names; the
    `state` column coloured when `colour` (None: `use_colour()`)."""
    colour = use_colour() if colour is None else colour
    cells = [[cell_text(row.get(c), c) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        texts = [v.ljust(w) for v, w in zip(row, widths, strict=True)]
        if colour:  # padded first: escape codes take no room on the screen
            texts = [
                paint(text, row[i]) if column == "state" else text
                for i, (text, column) in enumerate(zip(texts, columns, strict=True))
            ]
        print("  ".join(texts).rstrip())


def cell_text(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(safe_text(str(v)) for v in value) or "-"
    if isinstance(value, int | float) and column.endswith("_at"):  # a time: started_at...
        return when(value)
    if isinstance(value, float):
        return f"{value:g}"
    return safe_text(str(value))


def when(at: float | None) -> str:
    """A time (seconds since the epoch) as a local date and time, `-` for none."""
    if at is None or not math.isfinite(at):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def duration(seconds: float | None) -> str:
    """Seconds as people read a duration, in two units at most: `42s`, `3m12s`,
    `2h05m`, `1d4h` (rounded down); `-` for none."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def percent(progress: float | None) -> str:
    """0..1 as a whole percentage, rounded down: `100%` only when all is done."""
    if progress is None:
        return "-"
    return f"{math.floor(progress * 100 + 1e-9)}%"


def done_of(job: dict[str, Any]) -> str:
    """A job's complete frames over all its frames: `84/200`."""
    counts = job["frames"]
    return f"{counts.get('complete', 0)}/{sum(counts.values())}"


def safe_text(text: str) -> str:
    """`text` as a listing prints it: as it is when every character prints, else as its
    repr (quoted, with control and other odd characters escaped), so that no field (an
    argv, a name stored by an older farmd, a reason) can end a row or fake one."""
    return text if text.isprintable() else repr(text)


def frame_counts(job: dict[str, Any]) -> str:
    counts = job["frames"]
    return " ".join(f"{state}={n}" for state, n in counts.items() if n) or "-"


def one_line(text: str) -> str:
    """`text` with each run of whitespace, newlines too, made one space."""
    return " ".join(text.split())


def iso_times(value: Any) -> Any:
    """`value` with every `*_at` time (seconds since the epoch) as ISO 8601 in UTC, to
    the microsecond, so that `farmd job --json` reads as dates and still sorts as times
    (the protocol, the client and the API keep numbers)."""
    if isinstance(value, dict):
        return {
            key: _iso(item) if key.endswith("_at") else iso_times(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [iso_times(item) for item in value]
    return value


def _iso(seconds: Any) -> Any:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return seconds  # None (not yet), or anything else as it came
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="microseconds")
