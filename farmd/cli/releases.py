"""The handlers of `farmd release ...` and `farmd types`: upload and deploy releases per
cluster, see what serves where and why, and the job types a cluster offers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from farmd.cli.connection import client_for
from farmd.cli.output import print_json, print_table, safe_text
from farmd.errors import UserError

RELEASE_ACTIONS = ("deploy", "list", "show", "undeploy", "rollback", "remove")


def add_release_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("action", choices=RELEASE_ACTIONS)
    sub.add_argument(
        "target",
        nargs="?",
        metavar="PATH|NAME[@VERSION]",
        help="deploy: a release directory or .tar.gz (uploaded first), or NAME@VERSION the "
        "farm holds; show, undeploy, rollback: NAME; remove: NAME@VERSION",
    )
    sub.add_argument("--cluster", metavar="PATH", help="where to deploy, undeploy, roll back")
    sub.add_argument("--json", action="store_true")


def add_types_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--cluster", default="/", metavar="PATH", help="default /")
    sub.add_argument("--json", action="store_true")


def _name_version(target: str | None, action: str) -> tuple[str, str]:
    name, at, version = (target or "").partition("@")
    if not name or not at or not version:
        msg = f"farmd release {action} needs NAME@VERSION (got {target!r})"
        raise UserError(msg)
    return name, version


def _needs(value: str | None, what: str, action: str) -> str:
    if not value:
        msg = f"farmd release {action} needs {what}"
        raise UserError(msg)
    return value


def release_command(args: argparse.Namespace) -> int:
    action = args.action
    with client_for(args) as farm:
        if action == "deploy":
            cluster = _needs(args.cluster, "--cluster PATH", action)
            target = _needs(args.target, "a release (PATH, or NAME@VERSION)", action)
            if Path(target).exists():
                uploaded = farm.upload_release(target)
                name, version = uploaded["name"], uploaded["version"]
                if not args.json:
                    types = ", ".join(uploaded["job_types"]) or "no job types"
                    print(f"uploaded {name} {version} ({uploaded['digest']}): {types}")
            else:
                name, version = _name_version(target, action)
            result: Any = farm.deploy_release(name, version, cluster)
            if not args.json:
                was = f" (was {result['previous']})" if result.get("previous") else ""
                state = "deployed" if result["changed"] else "already deployed"
                print(f"{name} {version} {state} at {result['cluster']}{was}")
        elif action in ("undeploy", "rollback"):
            name = _needs(args.target, "NAME", action)
            cluster = _needs(args.cluster, "--cluster PATH", action)
            if action == "undeploy":
                result = farm.undeploy_release(name, cluster)
                text = f"{name} undeployed at {result['cluster']} (was {result['previous']})"
            else:
                result = farm.rollback_release(name, cluster)
                text = f"{name} rolled back to {result['version']} at {result['cluster']}"
            if not args.json:
                print(text)
        elif action == "remove":
            name, version = _name_version(args.target, action)
            result = farm.remove_release(name, version)
            if not args.json:
                print(f"{name} {version} removed")
        else:
            result = farm.releases(args.cluster)
            if action == "show":
                name = _needs(args.target, "NAME[@VERSION]", action)
                wanted, _, version = name.partition("@")
                result["releases"] = [
                    r
                    for r in result["releases"]
                    if r["name"] == wanted and (not version or r["version"] == version)
                ]
                if not result["releases"]:
                    msg = f"the farm holds no release {name!r}"
                    raise UserError(msg)
            if not args.json:
                _print_releases(result)
    if args.json:
        print_json(result)
    return 0


def _print_releases(result: dict[str, Any]) -> None:
    rows = [
        {
            "name": r["name"],
            "version": r["version"],
            "deployed_at": ",".join(r["deployed_at"]) or "-",
            "workers": r["workers_ready"],
            "job_types": ",".join(r["job_types"]) or "-",
            "digest": r["digest"][:19],
        }
        for r in result["releases"]
    ]
    print_table(rows, ["name", "version", "deployed_at", "workers", "job_types", "digest"])
    if "cluster" in result:
        print(f"\nat {safe_text(result['cluster'])}:")
        for line in result["why"]:
            print(f"  {safe_text(line)}")


def types_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        types = farm.job_types(args.cluster)
    if args.json:
        print_json(types)
        return 0
    if not types:
        print(f"no job types at {args.cluster}: no release deployed there provides one")
        return 0
    for kind in types:
        print(f"{kind['name']}  ({kind['release']} {kind['version']})  {kind['description']}")
        for param in kind["params"]:
            if param.get("required"):
                note = "required"
            elif param.get("default") is not None:
                default = param["default"]
                shown = str(default).lower() if isinstance(default, bool) else str(default)
                note = f"default {shown}"
            else:
                note = "optional"
            choices = f" {'|'.join(param['choices'])}" if param.get("choices") else ""
            line = f"    --param {param['name']}=<{param['type']}{choices}>  {note}"
            if param.get("description"):
                line += f"  {param['description']}"
            print(safe_text(line))
    return 0
