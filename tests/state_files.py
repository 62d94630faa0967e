"""A snapshot of a state dir's files, to show that a refusal changed nothing."""

from __future__ import annotations

from pathlib import Path

FileState = dict[str, tuple[bytes, int]]


def files(directory: Path) -> FileState:
    """Every file under `directory`: its bytes and its mtime in nanoseconds."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(directory))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def changed(before: FileState, after: FileState) -> list[str]:
    """What differs, one entry per file: created, deleted, bytes or mtime changed."""
    out = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            out.append(f"{name}: deleted")
        elif name not in before:
            out.append(f"{name}: created")
        elif before[name][0] != after[name][0]:
            out.append(f"{name}: bytes changed")
        elif before[name][1] != after[name][1]:
            out.append(f"{name}: mtime changed")
    return out
