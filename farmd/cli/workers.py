"""The handlers of the commands about the farm's capacity: `workers`, `lock` and
`unlock` (a worker), `clusters` (the tree, with its counts) and `resources` (farm-wide
counters). Each takes the parsed arguments, asks the supervisor through `farmd.client`,
prints the answer and returns the exit status.
"""

from __future__ import annotations

import argparse
from typing import Any

from farmd.cli.connection import client_for
from farmd.cli.output import print_json, print_table, safe_text


def workers_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        workers = farm.workers()
    if args.json:
        print_json(workers)
        return 0
    columns = ["name", "cluster", "state", "slots", "cpu", "memory", "load", "types"]
    columns += ["running", "restrictions"]
    failures = []
    for worker in workers:
        worker["slots"] = f"{worker['used']:g}/{worker['slots']}"
        worker.update(load_cells(worker.get("load")))
        releases = worker.get("releases") or {}
        worker["releases"] = ",".join(f"{n} {v}" for n, v in sorted(releases.items())) or "-"
        for name, why in sorted((worker.get("release_failures") or {}).items()):
            failures.append(f"{worker['name']} could not get release {name} {why}")
    if any(w["releases"] != "-" for w in workers) or failures:
        columns.insert(columns.index("types") + 1, "releases")
    print_table(workers, columns)
    for line in failures:
        print(safe_text(line))
    return 0


def load_cells(load: dict[str, Any] | None) -> dict[str, str]:
    """The host-load columns: CPU busy (% of all cores), memory used/total (GiB), the
    1-minute load average; `-` for a worker that reported none (an older agent, a host
    without /proc, or the first seconds after it joined)."""
    if not load:
        return {"cpu": "-", "memory": "-", "load": "-"}
    gib = 1024**3
    return {
        "cpu": f"{load['cpu'] * 100:.0f}%",
        "memory": f"{load['memory_used'] / gib:.1f}/{load['memory_total'] / gib:.1f}G",
        "load": f"{load['load_average'][0]:.2f}",
    }


def clusters_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        nodes = farm.clusters()
    if args.json:
        print_json(nodes)
        return 0
    rows = []
    for node in nodes:
        path = node["path"]
        label = "/" if path == "/" else "  " * (path.count("/") - 1) + path.rsplit("/", 1)[1]
        share = node.get("shares") or {}
        rows.append(
            {
                "cluster": label,
                "workers": f"{node['workers_here']} ({node['workers_total']})",
                "jobs": f"{node['jobs_here']} ({node['jobs_total']})",
                "slots": f"{share.get('slots', 0):g}",
                "used": f"{share.get('used', 0):g}",
                "lent": f"{share.get('lent', 0):g}",
                "borrowed": f"{share.get('borrowed', 0):g}",
                "queued": share.get("queued", 0),
            }
        )
    columns = ["cluster", "workers", "jobs", "slots", "used", "lent", "borrowed", "queued"]
    print_table(rows, columns)
    print("counts: at the cluster (at and below it). Of each subtree: slots its workers own,")
    print("used by its jobs anywhere, lent (its slots held by other clusters' jobs), borrowed")
    print("(its jobs on other clusters' workers), queued frames")
    return 0


def lock_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        requeued = farm.lock(args.worker, purge=args.mode == "purge")
    if args.json:
        print_json({"locked": args.worker, "mode": args.mode, "requeued": requeued})
    else:
        print(
            f"locked {args.worker} ({args.mode})"
            + (f"; requeued {' '.join(requeued)}" if requeued else "")
        )
    return 0


def unlock_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        farm.unlock(args.worker)
    if args.json:
        print_json({"unlocked": args.worker})
    else:
        print(f"unlocked {args.worker}")
    return 0


def resources_command(args: argparse.Namespace) -> int:
    from farmd.resources import parse_resources

    with client_for(args) as farm:
        for name, total in parse_resources(",".join(args.set), "totals").items():
            farm.set_resource(name, total)
        totals = farm.resources()
    if args.json:
        print_json(totals)
        return 0
    rows = [{"resource": name, **values} for name, values in totals.items()]
    print_table(rows, ["resource", "used", "free", "total"])
    return 0
