"""The `farmd` command line: the daemons (`serve`, `worker`, `up`) and the admin commands,
which are thin wrappers over `farmd.client`. This module holds `main`, which turns each
refusal into its one line and exit status; the package's modules hold the parser
(`parser`), the commands' handlers (`jobs`, `workers`, `ops`), how an admin command
reaches the supervisor (`connection`) and how output is printed (`output`).

Every refusal is one line on stderr (`farmd: error: ...`) and a non-zero exit: 1 for a
refused request or unreachable supervisor, 2 for a bad command line. `farmd wait` exits
0 when all jobs completed, 1 when any failed or was killed or cannot end without an admin
(stuck: blocked, suspended, or waiting for a job that is; each is printed with why), 2 on
timeout, 3 on error. A command whose output nobody reads any more (`farmd jobs | head`)
stops quietly, with its error exit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from farmd.cli.output import one_line
from farmd.cli.parser import ERROR_EXIT, USAGE_EXIT, build_parser
from farmd.errors import FarmdError

__all__ = ["ERROR_EXIT", "USAGE_EXIT", "build_parser", "first_farmd_error", "main"]


def first_farmd_error(exc: BaseException) -> FarmdError | None:
    """`exc` if it is a `FarmdError`, else the first one in it, depth first, when it is an
    exception group (trio raises a nursery's failures as one), else None."""
    if isinstance(exc, FarmdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_farmd_error(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return USAGE_EXIT
    try:
        result: int = args.run(args)
        sys.stdout.flush()  # here, so that a closed pipe is seen while it can be handled
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return getattr(args, "error_exit", ERROR_EXIT)
    except BaseException as exc:
        error = first_farmd_error(exc)
        if error is None:
            raise
        print(f"farmd: error: {one_line(str(error))}", file=sys.stderr)
        return getattr(args, "error_exit", ERROR_EXIT)
    return result


def _quiet_stdout() -> None:
    """Whoever read our output has gone (`farmd jobs | head`): stop writing, with no
    traceback. Python flushes stdout again at exit, which would fail the same way, so
    stdout now points at /dev/null (the Python docs' note on SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
