"""The handlers of the commands that run and configure the farm: the daemons (`serve`,
`worker`, `up`), which read their settings from a config file, the environment and their
flags (`farm_config`), and `reload` and `config check`. As in the rest of the command
line, each handler imports trio and the parts of farmd it runs when it runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from farmd.cli.connection import client_for
from farmd.cli.output import duration, iso_times, print_json, safe_text, when
from farmd.errors import UserError


def _supervisor_config(args: argparse.Namespace) -> Any:
    return farm_config(args)[0]


def farm_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The supervisor's settings (the file's, then the environment's and the flags over
    them) and the central worker configuration."""
    import attrs

    from farmd.config import (
        SupervisorConfig,
        WorkersConfig,
        environment_state_dir,
        load_farm_config,
        parse_address,
    )

    if args.config:
        farm = load_farm_config(args.config)
        config, workers = farm.supervisor, farm.workers
    else:
        config, workers = SupervisorConfig(), WorkersConfig()
    changes: dict[str, Any] = {}
    if args.listen:
        changes["listen"] = parse_address(args.listen)
    if args.state:
        changes["state_dir"] = Path(args.state).expanduser().resolve()
    elif args.config and (from_environment := environment_state_dir()) is not None:
        changes["state_dir"] = from_environment  # $FARMD_STATE wins over the file
    if args.store:
        changes["store"] = args.store
    if getattr(args, "advertise", None):
        changes["advertise"] = parse_address(args.advertise)
    if getattr(args, "preempt_policy", None):
        changes["preempt_policy"] = args.preempt_policy
    if getattr(args, "http", None):
        changes["http"] = None if args.http == "off" else parse_address(args.http)
    if getattr(args, "metrics", None):
        changes["metrics"] = parse_address(args.metrics)
    return (attrs.evolve(config, **changes) if changes else config), workers


def serve_command(args: argparse.Namespace) -> int:
    import trio

    from farmd import logs
    from farmd.supervisor import serve

    logs.configure(args.log_level, json_lines=args.log_json)
    from farmd.config import load_supervisor_config

    config, workers = farm_config(args)
    path = Path(args.config).resolve() if args.config else None
    file_settings = load_supervisor_config(path) if path else None
    run = functools.partial(
        serve, config, workers=workers, config_path=path, file_settings=file_settings
    )
    trio.run(run)
    return 0


def worker_command(args: argparse.Namespace) -> int:
    import trio

    from farmd import logs
    from farmd.agent import DEFAULT_ENV_PASSTHROUGH, AgentConfig, run_agent
    from farmd.client import resolve_supervisors, resolve_token
    from farmd.config import default_state_dir
    from farmd.resources import parse_resources
    from farmd.tls import trust_for
    from farmd.worker_settings import check_worker

    resources = parse_resources(",".join(args.resources), "--resource")
    properties: dict[str, object] = {}
    for item in args.properties:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"bad --property {item!r}: expected KEY=VALUE"
            raise UserError(msg)
        properties[key.strip()] = _fact_value(value.strip())
    # refuse bad input before connecting, by the rules the supervisor applies
    check_worker(
        name=args.name,
        cluster=args.cluster,
        restrictions=args.restrictions,
        slots=args.slots,
        types=args.types,
        properties=properties,
        resources=resources,
    )
    types = tuple(args.types)
    logs.configure(args.log_level, json_lines=args.log_json)
    log_dir = (
        Path(args.log_dir) if args.log_dir else default_state_dir() / "worker-logs" / args.name
    )
    supervisors = resolve_supervisors(args.supervisor)
    supervisor = supervisors[0]
    for other in supervisors[1:]:  # each must be trusted: refused now, not at a failover
        trust_for(other, ca=args.ca, pin=args.pin)
    config = AgentConfig(
        supervisor=supervisor,
        supervisors=supervisors,
        token=resolve_token(None, args.token_file),
        name=args.name,
        cluster=args.cluster,
        restrictions=args.restrictions,
        slots=args.slots,
        log_dir=log_dir,
        types=types,
        properties=properties,
        resources=resources,
        env_passthrough=(*DEFAULT_ENV_PASSTHROUGH, *args.pass_env),
        run_as=args.run_as,
        user_map=_user_map(args.user_map),
        trust=trust_for(supervisor, ca=args.ca, pin=args.pin),
        release_dir=Path(args.release_dir) if args.release_dir else None,
    )
    if args.run_as == "owner" and os.geteuid() != 0:
        msg = "--run-as owner needs the agent to run as root (it starts each frame as its owner)"
        raise UserError(msg)
    trio.run(run_agent, config)
    return 0


def _fact_value(text: str) -> object:
    """A --property value: a number if it reads as one a property may hold (`8`, `2.5`:
    finite, 64-bit if whole; not `inf` or `nan`), else the text."""
    try:
        whole = int(text)
    except ValueError:
        pass
    else:
        return whole if -(2**63) <= whole < 2**63 else text
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _user_map(entries: list[str]) -> dict[str, str]:
    """`--user-map OWNER=ACCOUNT` flags as a dict; a bad one is refused naming it."""
    found = {}
    for entry in entries:
        owner, mark, account = entry.partition("=")
        if not mark or not owner or not account:
            msg = f"bad --user-map {entry!r}: expected OWNER=ACCOUNT"
            raise UserError(msg)
        found[owner] = account
    return found


def up_command(args: argparse.Namespace) -> int:
    import trio

    from farmd import logs
    from farmd.local import run_local_farm

    logs.configure(args.log_level, json_lines=args.log_json)
    config = _supervisor_config(args)
    trio.run(run_local_farm, config, args.workers, args.slots)
    return 0


def reload_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        result = farm.reload()
    if args.json:
        print_json(result)
        return 0
    moved = result["reconfigured"]
    print("reloaded; workers reconfigured: " + (" ".join(map(safe_text, moved)) or "none"))
    if result["restart_needed"]:
        print("changed, applies at the next restart: " + ", ".join(result["restart_needed"]))
    return 0


def status_command(args: argparse.Namespace) -> int:
    """`farmd status`: the active supervisor, its epoch and since when, the standbys."""
    with client_for(args) as farm:
        result = farm.status()
    if args.json:
        print_json(iso_times(result))
        return 0
    active = result.get("active")
    now = time.time()
    if active is None:
        print("active   none recorded yet")
    else:
        epoch = "-" if active.get("epoch") is None else active["epoch"]
        since = active.get("since")
        text = when(since) + (f" ({duration(now - since)} ago)" if since else "")
        print(
            f"active   {safe_text(str(active.get('address')))}  epoch {epoch}  since {text}"
            f"  host {safe_text(str(active.get('host')))}  pid {active.get('pid')}"
        )
    for standby in result.get("standbys", []):
        seen = standby.get("seen_at")
        ago = f"seen {duration(max(0.0, now - seen))} ago" if seen else "not seen"
        print(
            f"standby  {safe_text(str(standby.get('address')))}  {ago}"
            f"  host {safe_text(str(standby.get('host')))}  pid {standby.get('pid')}"
        )
    if not result.get("standbys"):
        print("standby  none" + ("" if result.get("store") == "postgresql" else " (one store)"))
    print(f"store    {result.get('store')}")
    return 0


def prune_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        result = farm.prune_history(args.days)
    if args.json:
        print_json(result)
        return 0
    if result["before"] is None:
        print("history is kept for ever (history_days: 0); nothing was pruned")
        return 0
    cut = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result["before"]))
    removed = result["removed"]
    print(f"removed {removed} job{'' if removed == 1 else 's'} that moved to history before {cut}")
    return 0


def config_check_command(args: argparse.Namespace) -> int:
    from farmd.config import load_farm_config
    from farmd.resources import format_amount

    farm = load_farm_config(args.file)
    workers = farm.workers
    if args.host is None:
        summary = {
            "file": args.file,
            "ok": True,
            "listen": str(farm.supervisor.listen),
            "resources": farm.supervisor.resources,
            "templates": len(workers.templates),
            "hosts": len(workers.hosts),
        }
        if args.json:
            print_json(summary)
            return 0
        print(f"{args.file}: ok")
        print(f"  supervisor: listen {summary['listen']}, store {farm.supervisor.store}")
        totals = ", ".join(f"{n}={t:g}" for n, t in sorted(farm.supervisor.resources.items()))
        print(f"  farm-wide resources: {totals or '-'}")
        print(f"  workers: {summary['templates']} templates, {summary['hosts']} host entries")
        return 0
    settings = workers.settings_for(args.host)
    if args.json:
        print_json({"host": args.host, **settings.as_dict()})
        return 0
    # each value with the entry it came from; a key set nowhere is left to the worker
    print(f"{args.host}: {', '.join(settings.sources)}")
    shown: dict[str, str | None] = {
        "cluster": settings.cluster,
        "restrictions": None if settings.restrictions is None else settings.restrictions or "''",
        "slots": None if settings.slots is None else str(settings.slots),
        "types": None if settings.types is None else json.dumps(list(settings.types)),
    }
    shown |= {f"properties.{n}": json.dumps(v) for n, v in sorted(settings.properties.items())}
    shown |= {f"resources.{n}": format_amount(v) for n, v in sorted(settings.resources.items())}
    for key, value in shown.items():
        if value is None:
            print(f"  {key}: not set (the worker's own flag)")
        else:
            print(f"  {key}: {value}  ({settings.origins[key]})")
    return 0
