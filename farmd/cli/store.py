"""`farmd store ...`: the farm's store itself, run on the supervisor's machine rather
than through a supervisor. `farmd store migrate` copies a farm from a SQLite state dir
into an empty PostgreSQL database (`farmd.store_migrate`)."""

from __future__ import annotations

import argparse


def add_store_options(store: argparse.ArgumentParser) -> None:
    """`farmd store`'s subcommands and their options."""
    commands = store.add_subparsers(title="commands", metavar="COMMAND", required=True)
    text = "copy a stopped farm from a SQLite state dir into an empty PostgreSQL database"
    migrate = commands.add_parser("migrate", help=text, description=text)
    migrate.set_defaults(run=store_migrate_command)
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="sqlite:STATE",
        help="the state dir of the farm (its supervisor stopped)",
    )
    migrate.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="postgresql://...",
        help="the farm database, empty (its tables are made if it has none)",
    )


def store_migrate_command(args: argparse.Namespace) -> int:
    from farmd.store_migrate import migrate, parse_source
    from farmd.store_postgres import describe_url

    state_dir = parse_source(args.source)
    copied = migrate(state_dir, args.target)
    print(copied.line(state_dir, describe_url(args.target)))
    return 0
