"""How the admin commands print: `--json` output, and the tables and fields of the text
output, every field made printable so that no value can end a row or fake one.
"""

from __future__ import annotations

import json
from typing import Any


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """`columns` of `rows` as aligned text, under a header of the column names."""
    cells = [[cell_text(row.get(c), c) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cell_text(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(safe_text(str(v)) for v in value) or "-"
    if isinstance(value, float) and column.endswith("_at"):  # a time: started_at...
        import time

        return time.strftime("%H:%M:%S", time.localtime(value))
    if isinstance(value, float):
        return f"{value:g}"
    return safe_text(str(value))


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
