"""The handlers of the commands about people: `farmd user add|list|show|modify|revoke`
(an admin's) and `farmd login` (anyone's: keep a personal token where the CLI finds it).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from farmd.cli.connection import client_for
from farmd.cli.output import print_json, print_table, safe_text
from farmd.errors import UserError

COLUMNS = ["name", "role", "clusters", "created_at", "revoked_at"]


def user_command(args: argparse.Namespace) -> int:
    action = args.action
    if action != "list" and not args.name:
        msg = f"farmd user {action} needs a NAME"
        raise UserError(msg)
    with client_for(args) as farm:
        if action == "add":
            if not args.role:
                raise UserError("farmd user add needs --role (viewer, artist, wrangler, admin)")
            result: Any = farm.add_user(args.name, args.role, args.clusters)
        elif action == "modify":
            clusters = "" if args.whole_farm else args.clusters
            result = farm.modify_user(
                args.name, role=args.role, clusters=clusters, new_token=args.new_token
            )
        elif action == "revoke":
            result = farm.revoke_user(args.name)
        else:
            users = farm.users()
            if action == "show":
                found = [user for user in users if user["name"] == args.name]
                if not found:
                    msg = f"user {args.name!r} does not exist"
                    raise UserError(msg)
                users = found
            result = users
    if args.json:
        print_json(result)
        return 0
    if isinstance(result, list):
        print_table([_shown(user) for user in result], COLUMNS)
        return 0
    print_table([_shown(result)], COLUMNS)
    if "token" in result:
        print(f"token (shown this once; the farm keeps only its hash): {result['token']}")
        print(f"give it to {safe_text(result['name'])}, who runs: farmd login")
    return 0


def _shown(user: dict[str, Any]) -> dict[str, Any]:
    return {**user, "clusters": user["clusters"] or "(whole farm)"}


def login_command(args: argparse.Namespace) -> int:
    """Read a personal token (from stdin, or asked for on a terminal), check it opens a
    session, and keep it in the personal token file, mode 0600."""
    from farmd.client import Client, personal_token_file

    if sys.stdin.isatty():
        token = getpass.getpass("farmd token: ").strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        raise UserError("no token given: paste the token `farmd user add` printed")
    with Client(args.supervisor, token=token, ca=args.ca, pin=args.pin) as farm:
        farm.jobs(limit=1)  # the token opens a session: it is the farm's
    path = personal_token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, 0o600)
        handle.write(token + "\n")
    print(f"logged in; the token is kept in {path}")
    return 0


def add_user_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("action", choices=["add", "list", "show", "modify", "revoke"])
    sub.add_argument("name", nargs="?", metavar="NAME")
    sub.add_argument(
        "--role",
        choices=["viewer", "artist", "wrangler", "admin"],
        help="what the user may do (required by add; modify: kept unless given)",
    )
    sub.add_argument(
        "--clusters",
        metavar="EXPR",
        help="the cluster scope, a restriction expression such as /show1/+ (default: the "
        "whole farm)",
    )
    sub.add_argument(
        "--whole-farm", action="store_true", help="modify: scope the user to the whole farm"
    )
    sub.add_argument(
        "--new-token", action="store_true", help="modify: a new token; the old one stops working"
    )
    sub.add_argument("--json", action="store_true")


AUDIT_COLUMNS = ["id", "when", "who", "peer", "request", "target", "result"]
_SPANS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(text: str) -> float:
    """`--since`: an ISO date or time (`2026-12-03`, `2026-12-03T10:00`), or a span
    back from now (`30m`, `2h`, `7d`); as seconds since the epoch."""
    import datetime
    import re
    import time

    span = re.fullmatch(r"(\d{1,9})([smhd])", text.strip())
    if span:
        return time.time() - int(span.group(1)) * _SPANS[span.group(2)]
    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        msg = f"bad time {text!r}: an ISO date or time (2026-12-03T10:00) or a span (2h, 7d)"
        raise argparse.ArgumentTypeError(msg) from None


def audit_command(args: argparse.Namespace) -> int:
    import time

    with client_for(args) as farm:
        page = farm.audit(
            limit=args.limit, before=args.before, user=args.user, job=args.job, since=args.since
        )
    if args.json:
        print_json(page)
        return 0
    rows = [
        {**entry, "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"]))}
        for entry in page["entries"]
    ]
    print_table(rows, AUDIT_COLUMNS)
    if page["next"] is not None:
        print(f"more before entry {page['next']}: farmd audit --before {page['next']}")
    return 0


def add_audit_options(sub: argparse.ArgumentParser, page_size: Any, job_id: Any) -> None:
    sub.add_argument("--user", metavar="NAME", help="only what this user did or was refused")
    sub.add_argument("--job", type=job_id, metavar="ID", help="only what named this job")
    sub.add_argument(
        "--since",
        type=since_time,
        metavar="TIME",
        help="ISO time, or an age: 2h, 7d (default: all)",
    )
    sub.add_argument(
        "--limit", type=page_size, metavar="N", help="entries per page (default: the supervisor's)"
    )
    sub.add_argument("--before", type=job_id, metavar="ID", help="the entries before id ID")
    sub.add_argument("--json", action="store_true")


def worker_token_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        if args.action == "add":
            if not args.target:
                raise UserError(
                    "farmd worker-token add needs HOSTS (node07, gpu-*, render[001-120])"
                )
            result: Any = farm.add_worker_token(args.target, args.clusters)
        elif args.action == "revoke":
            if not (args.target or "").isdigit():
                raise UserError(
                    "farmd worker-token revoke needs the token's ID (farmd worker-token list)"
                )
            result = farm.revoke_worker_token(int(args.target))
        else:
            result = farm.worker_tokens()
    if args.json:
        print_json(result)
        return 0
    rows = result if isinstance(result, list) else [result]
    print_table(
        [{**row, "clusters": row["clusters"] or "(any)"} for row in rows],
        ["id", "hosts", "clusters", "created_at", "revoked_at"],
    )
    if isinstance(result, dict) and "token" in result:
        print(f"token (shown this once; the farm keeps only its hash): {result['token']}")
        print("give it to those hosts' workers: farmd worker --token-file FILE")
    return 0


def add_worker_token_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("action", choices=["add", "list", "revoke"])
    sub.add_argument("target", nargs="?", metavar="HOSTS|ID")
    sub.add_argument(
        "--clusters", metavar="EXPR", help="the clusters its workers may join (default: any)"
    )
    sub.add_argument("--json", action="store_true")
