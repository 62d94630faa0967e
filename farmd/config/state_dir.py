"""Where the supervisor keeps its state: `$FARMD_STATE`, a config file's `state_dir`,
`$XDG_STATE_HOME/farmd` or `~/.local/state/farmd`, in that order."""

from __future__ import annotations

import os
from pathlib import Path

from farmd.errors import ConfigError


def default_state_dir() -> Path:
    """Where the supervisor keeps its state unless the config says otherwise.

    In order, the first that applies:

    1. `$FARMD_STATE`, if set and not empty (a relative value is taken from the current
       directory; `~` is expanded);
    2. `$XDG_STATE_HOME/farmd`, if `$XDG_STATE_HOME` is set to an absolute path (the XDG
       Base Directory spec says to ignore a relative one);
    3. `~/.local/state/farmd`.

    The result is absolute. Refuses with `ConfigError` only when it must fall back to the
    home directory and there is none.

    A config file's `state_dir` comes between 1 and 2: `$FARMD_STATE`, like `--state`,
    wins over the file (`environment_state_dir`), the XDG and home defaults do not.
    """
    from_environment = environment_state_dir()
    if from_environment is not None:
        return from_environment
    xdg_state = os.environ.get("XDG_STATE_HOME")
    if xdg_state and Path(xdg_state).is_absolute():
        return Path(xdg_state) / "farmd"
    home = expand_user(Path("~"))
    if home is None:
        msg = "cannot find the home directory for the default state dir: set $FARMD_STATE"
        raise ConfigError(msg)
    return home / ".local" / "state" / "farmd"


def environment_state_dir() -> Path | None:
    """`$FARMD_STATE` as an absolute path, or None when it is unset or empty. It wins
    over a config file's `state_dir`, as the environment does over a file everywhere."""
    farmd_state = os.environ.get("FARMD_STATE")
    if not farmd_state:
        return None
    expanded = expand_user(Path(farmd_state))
    if expanded is None:
        msg = f"bad $FARMD_STATE {farmd_state!r}: cannot expand '~'"
        raise ConfigError(msg)
    return expanded.absolute()


def expand_user(path: Path) -> Path | None:
    """`path` with a leading `~` or `~user` expanded, or None when that cannot be done."""
    try:
        expanded = path.expanduser()
    except RuntimeError:  # no home directory, or no such user
        return None
    return None if expanded.parts[:1] and expanded.parts[0].startswith("~") else expanded
