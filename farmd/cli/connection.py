"""How an admin command reaches the supervisor: the options every admin command takes
(`--supervisor`, `--token-file`) and the `farmd.client.Client` they name.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_connection_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--supervisor",
        metavar="HOST:PORT",
        help="supervisor address (default $FARMD_SUPERVISOR or 127.0.0.1:7531)",
    )
    sub.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the farm token (default $FARMD_TOKEN, else the local state dir's token)",
    )


def client_for(args: argparse.Namespace) -> Any:
    """A `farmd.client.Client` for the supervisor and token the command's options name."""
    from farmd.client import Client

    return Client(args.supervisor, token_file=args.token_file)
