"""The one error root of farmd and its branches, split by whose fault an error is.

- `UserError`: a person gave bad input (a cluster path, a restriction, a config file, a
  command-line value). Shown as one line, never as a traceback.
- `ProtocolError`: a peer sent bytes or a message that break the wire protocol.
- `InternalError`: farmd broke one of its own invariants; a bug to report.

Messages name the bad value, so the one line a user sees is enough to fix the input.
"""

from __future__ import annotations


class FarmdError(Exception):
    """Root of every error farmd raises on purpose."""


class UserError(FarmdError):
    """Bad input from a person: refused with one clear line, nothing changed."""


class ClusterPathError(UserError):
    """A cluster path that is not `/` or `/seg/seg...`."""


class RestrictionError(UserError):
    """A malformed restriction expression (`/A || /B/*`)."""


class PatternError(UserError):
    """A malformed cross-cluster priority pattern list (`/showA+,/showB`)."""


class JobSpecError(UserError):
    """A job or worker field with a bad value (priority, id, frame range...)."""


class UnknownJobError(UserError):
    """A job id that is not in the queue."""


class ConfigError(UserError):
    """A configuration file that is unreadable, unknown keys, or bad values."""


class ProtocolError(FarmdError):
    """A peer broke the wire protocol: malformed or oversized frame, bad message."""


class InternalError(FarmdError):
    """farmd broke one of its own invariants: a bug."""
