"""The `farmd` command line."""

from __future__ import annotations

import argparse
import sys

from farmd import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="farmd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"farmd {__version__}")
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2
