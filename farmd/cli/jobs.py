"""The handlers of the commands about jobs and the queue: `submit`, `jobs`, `job`,
`wait`, the controls (`kill`, `block`, ...), `remove`, `modify`, `logs`, `explain` and
`order`. Each takes the parsed arguments, asks the supervisor through `farmd.client`,
prints the answer and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from farmd.cli.connection import client_for
from farmd.cli.output import (
    cell_text,
    done_of,
    duration,
    frame_counts,
    iso_times,
    one_line,
    percent,
    print_json,
    print_table,
    safe_text,
    when,
)
from farmd.errors import UserError
from farmd.jobs import DONE, Control
from farmd.jobspec import doc, spec_fields


def submit_command(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command and not args.job_type:
        msg = (
            "a command is required: farmd submit [OPTIONS] -- COMMAND ARG..., or a job type "
            "from a release: farmd submit --type TYPE --param NAME=VALUE... (farmd types)"
        )
        raise UserError(msg)
    with client_for(args) as farm:
        spec = {f.name: getattr(args, f.name) for f in spec_fields() if doc(f).option}
        job = farm.submit_job(command, key=args.key, **spec)
    # accepted all the same: a worker that can run it may join later (stderr, so
    # stdout stays the id, or the JSON, for scripts)
    for line in job.get("warnings") or ():
        print(f"farmd: warning: {safe_text(line)}", file=sys.stderr)
    if args.json:
        print_json(job)
    else:
        print(job["id"])
    return 0


def jobs_command(args: argparse.Namespace) -> int:
    """A page of the live queue's jobs (with `--history`, of history's too; every page
    of both, with `--all`), then every job's counts by state and, when more jobs follow,
    the command that lists them."""
    history = args.all or args.history
    with client_for(args) as farm:
        page = farm.jobs(args.limit, args.after, history=history)
        if args.all:
            jobs = page["jobs"]
            while page["next"] is not None:
                page = farm.jobs(args.limit, page["next"], history=True)
                jobs.extend(page["jobs"])
            page["jobs"] = jobs  # one page of them all, with the last counts
    if args.json:
        print_json(page)
        return 0
    _print_jobs(page["jobs"])
    counts = ", ".join(f"{n} {state}" for state, n in page["counts"].items() if n)
    total = page["total"]
    print(f"{total} job{'' if total == 1 else 's'}{': ' if counts else ''}{counts}")
    if page["next"] is not None:
        limit = f" --limit {args.limit}" if args.limit else ""
        print(
            f"listed {len(page['jobs'])}; more after job {page['next']}: "
            f"farmd jobs{limit}{' --history' if history else ''} --after {page['next']}"
            " (or --all)"
        )
    return 0


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    # sub-jobs are listed under their parent, indented; one whose parent was removed
    # is listed at the top
    ids = {job["id"] for job in jobs}
    children: dict[int | None, list[dict[str, Any]]] = {}
    for job in jobs:
        children.setdefault(job["parent"] if job["parent"] in ids else None, []).append(job)
    rows: list[dict[str, Any]] = []
    stack = [(job, 0) for job in reversed(children.get(None, []))]
    while stack:
        job, depth = stack.pop()
        stack.extend((child, depth + 1) for child in reversed(children.get(job["id"], [])))
        rows.append(
            {
                **job,
                "id": "  " * depth + str(job["id"]),
                "progress": percent(job.get("progress")),
                "done": done_of(job),
                "elapsed": duration(job.get("elapsed")),
                "eta": duration(job.get("eta")),
                "counts": frame_counts(job),
                "reason": job["reason"] or None,
            }
        )
    print_table(rows, JOBS_COLUMNS)


# `farmd jobs`'s columns: progress and done count frames (not chunks), elapsed runs from
# the first frame's start, eta is the protocol's estimate (docs/protocol.md 6.1)
JOBS_COLUMNS = [
    "id",
    "name",
    "state",
    "cluster",
    "priority",
    "owner",
    "progress",
    "done",
    "elapsed",
    "eta",
    "counts",
    "reason",
]


def job_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        job = farm.job(args.job_id, frame_limit=args.frame_limit, frame_after=args.frame_after)
    if args.json:
        print_json(iso_times(job))
        return 0
    print(f"job {job['id']} {job['name']!r}: {job['state']}")
    if job["reason"]:
        print(f"  reason: {safe_text(job['reason'])}")
    for line in _times(job, time.time()):
        print(f"  {line}")
    keys = ["cluster", "priority", "restrictions", "cross_cluster", "depends_on", "waiting_on"]
    keys += ["parent", "subjob_ids", "chunk"]
    for key in keys:
        print(f"  {key}: {cell_text(job[key]) if job[key] != '' else '-'}")
    print(f"  command: {' '.join(map(safe_text, job['argv']))}")
    if job.get("release"):
        print(f"  release: {safe_text(job['release'])} (job type {safe_text(job['job_type'])})")
        params = " ".join(f"{k}={v}" for k, v in sorted(job.get("params", {}).items()))
        print(f"  params: {safe_text(params)}")
    print(f"  frames: {frame_counts(job)}")
    now = time.time()
    for frame in job["frame_list"]:
        frame["duration"] = _frame_duration(frame, now)
    print_table(
        job["frame_list"],
        [
            "frames",
            "state",
            "worker",
            "attempts",
            "started_at",
            "finished_at",
            "duration",
            "exit_code",
        ],
    )
    if job["frame_next"] is not None:
        limit = f" --frame-limit {args.frame_limit}" if args.frame_limit else ""
        print(
            f"listed {len(job['frame_list'])} of {job['frame_list_total']}; more after frame "
            f"{job['frame_next']}: farmd job {job['id']}{limit} --frame-after {job['frame_next']}"
        )
    return 0


def _times(job: dict[str, Any], now: float) -> list[str]:
    """A job's dates and durations as `farmd job` prints them: submitted, started (after
    how long a wait), ended (after how long a run), progress and the estimate of what
    is left. `now` (this host's clock) dates a wait that has not ended."""
    submitted, started = job["submitted_at"], job.get("started_at")
    ended, elapsed = job.get("ended_at"), job.get("elapsed")
    lines = [f"submitted: {when(submitted)}"]
    if started is None:
        lines.append(f"started: - (waiting for {duration(now - submitted)})")
    else:
        lines.append(f"started: {when(started)} (after {duration(started - submitted)})")
    if ended is not None:
        lines.append(f"ended: {when(ended)} (ran {duration(elapsed)})")
    elif started is not None:
        lines.append(f"ended: - (running for {duration(elapsed)})")
    progress = f"progress: {percent(job.get('progress'))}, {done_of(job)} frames"
    if job.get("eta") is not None:
        progress += f", about {duration(job['eta'])} left"
    lines.append(progress)
    return lines


def _frame_duration(frame: dict[str, Any], now: float) -> str:
    """How long a frame's last attempt ran (runs, for a running one: by this host's
    clock)."""
    started, finished = frame.get("started_at"), frame.get("finished_at")
    if started is None:
        return "-"
    if finished is None:
        return duration(now - started) if frame.get("state") == "running" else "-"
    return duration(finished - started)


def wait_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        result = farm.wait(args.job_ids, args.timeout)
    stuck = result.get("stuck", {})  # an older supervisor sends none
    if args.json:
        print_json(result)
    else:
        for job_id, state in sorted(result["ended"].items(), key=lambda kv: int(kv[0])):
            print(f"{job_id} {state}")
        for job_id in result["pending"]:
            if str(job_id) in stuck:
                print(f"{job_id} stuck: {one_line(stuck[str(job_id)])}")
            else:
                print(f"{job_id} still going")
    if any(str(job_id) not in stuck for job_id in result["pending"]):
        return 2  # the timeout came first
    ended = result["ended"].values()
    return 0 if not result["pending"] and all(s == "complete" for s in ended) else 1


def control_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        if args.action == "kill" and all(t.strip().isdigit() for t in args.targets):
            # whole jobs: a job that has ended already is left as it is, not refused
            changed = [str(i) for i in farm.kill(int(t) for t in args.targets)]
        else:
            changed = farm.control(args.action, args.targets)
    done = DONE[Control(args.action)]
    if args.json:
        print_json({done: changed})
    else:
        print(f"{done} " + " ".join(changed))
    return 0


def remove_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        removed = farm.remove(args.job_ids)
    if args.json:
        print_json({"removed": removed})
    else:
        print("removed " + " ".join(map(str, removed)))
    return 0


def modify_command(args: argparse.Namespace) -> int:
    options = (
        args.priority,
        args.cluster,
        args.restrictions,
        args.cross_cluster,
        args.instances,
        args.retries,
        args.retry_delay,
        args.time_limit,
    )
    if all(v is None for v in options):
        msg = (
            "nothing to modify: give --priority, --cluster, --restrictions, --cross-cluster, "
            "--instances, --retries, --retry-delay or --time-limit"
        )
        raise UserError(msg)
    with client_for(args) as farm:
        job = farm.modify(
            args.job_id,
            priority=args.priority,
            cluster=args.cluster,
            restrictions=args.restrictions,
            cross_cluster=args.cross_cluster,
            instances=args.instances,
            retries=args.retries,
            retry_delay=args.retry_delay,
            time_limit=args.time_limit,
        )
    if args.json:
        print_json(job)
    else:
        print(f"job {job['id']}: cluster {job['cluster']}, priority {job['priority']}")
    return 0


def logs_command(args: argparse.Namespace) -> int:
    text = args.target
    job_text, _, frame_text = text.partition(":")
    try:
        job_id = int(job_text)
        frame = int(frame_text) if frame_text else None
    except ValueError:
        msg = f"bad log target {text!r}: expected ID or ID:FRAME"
        raise UserError(msg) from None
    with client_for(args) as farm:
        if args.follow and not args.json:
            for piece in farm.follow_log(job_id, frame):
                sys.stdout.write(piece)
                sys.stdout.flush()
            return 0
        log = farm.logs(job_id, frame)
    if args.json:
        print_json(log)
    else:
        sys.stdout.write(log["text"])
    return 0


def explain_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        report = farm.explain(args.job_id, worker=args.worker)
    if args.json:
        print_json(report)
        return 0
    print(
        f"job {report['job']} {report['name']!r} ({report['state']}), cluster "
        f"{safe_text(report['cluster'])}, priority {report['priority']}"
    )
    if not report["workers"]:
        print("  no worker is connected")
    for entry in report["workers"]:
        where = f"  {safe_text(entry['worker'])} ({safe_text(entry['cluster'])})"
        rank = entry["rank"]
        ranked = f" [order {rank['order']}, priority {rank['priority']}]" if rank else ""
        if entry["runs"]:
            print(f"{where}{ranked}: runs {', '.join(map(safe_text, entry['running']))}")
        elif not entry["reasons"]:
            print(f"{where}{ranked}: would run next")
        for reason in entry["reasons"]:
            print(f"{where}{ranked}: {safe_text(reason)}")
    return 0


def order_command(args: argparse.Namespace) -> int:
    with client_for(args) as farm:
        ranked = farm.order(args.worker, args.limit)
    if args.json:
        print_json(ranked)
        return 0
    print_table(ranked, ["order", "priority", "id", "name", "cluster"])
    return 0
