"""The `farmd` command line: the daemons (`serve`, `worker`, `up`) and the admin commands,
which are thin wrappers over `farmd.client`.

Every refusal is one line on stderr (`farmd: error: ...`) and a non-zero exit: 1 for a
refused request or unreachable supervisor, 2 for a bad command line. `farmd wait` exits
0 when all jobs completed, 1 when any failed or was killed or cannot end without an admin
(stuck: blocked, suspended, or waiting for a job that is; each is printed with why), 2 on
timeout, 3 on error. A command whose output nobody reads any more (`farmd jobs | head`)
stops quietly, with its error exit.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from farmd import __version__
from farmd.errors import FarmdError, UserError
from farmd.jobs import DONE, Control
from farmd.jobspec import doc, option_flag, spec_fields

ERROR_EXIT = 1
USAGE_EXIT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"farmd: error: {message}\n")


def _first_farmd_error(exc: BaseException) -> FarmdError | None:
    if isinstance(exc, FarmdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_farmd_error(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
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
        error = _first_farmd_error(exc)
        if error is None:
            raise
        print(f"farmd: error: {_one_line(str(error))}", file=sys.stderr)
        return getattr(args, "error_exit", ERROR_EXIT)
    return result


def _quiet_stdout() -> None:
    """Whoever read our output has gone (`farmd jobs | head`): stop writing, with no
    traceback. Python flushes stdout again at exit, which would fail the same way, so
    stdout now points at /dev/null (the Python docs' note on SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- parser


def _build_parser() -> argparse.ArgumentParser:
    """`farmd`'s parser: each command's parser comes from its own function in
    `_COMMANDS`, in the order `farmd --help` lists them."""
    parser = _Parser(prog="farmd", description="A Qube-style hierarchical render farm.")
    parser.add_argument("--version", action="version", version=f"farmd {__version__}")
    command = _CommandMaker(parser.add_subparsers(title="commands", metavar="COMMAND"))
    for add_command in _COMMANDS:
        add_command(command)
    return parser


class _CommandMaker:
    """`command(name, run, text)` adds the parser of one `farmd` command, which runs
    `run(args)`; an admin command also gets the options that reach the supervisor.
    `subparsers` is for a group of commands (`farmd config ...`)."""

    def __init__(self, subparsers: argparse._SubParsersAction[_Parser]) -> None:
        self.subparsers = subparsers

    def __call__(
        self, name: str, run: Callable[[argparse.Namespace], int], text: str, admin: bool = True
    ) -> argparse.ArgumentParser:
        sub = self.subparsers.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        if admin:
            _add_connection_options(sub)
        return sub


def _add_serve_command(command: _CommandMaker) -> None:
    """`farmd serve`: the supervisor daemon."""
    serve = command("serve", _serve, "run the supervisor daemon", admin=False)
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:7531)"
    )
    serve.add_argument(
        "--state",
        metavar="DIR",
        help="state directory (default $FARMD_STATE, else the config file's state_dir, "
        "else $XDG_STATE_HOME/farmd, else ~/.local/state/farmd)",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML farm configuration")
    serve.add_argument(
        "--store",
        choices=["sqlite", "memory"],
        help="where the queue is "
        "kept: sqlite (default, STATE/farmd.db, survives restarts) or memory",
    )
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (GET /metrics) on this address (default: off)",
    )
    serve.add_argument(
        "--preempt-policy",
        choices=["passive", "aggressive", "disabled"],
        help="when a better job waits for a busy slot: let the frame finish (passive, "
        "default), stop it at once (aggressive) or keep the slot with its job (disabled)",
    )
    _add_log_options(serve)


def _add_worker_command(command: _CommandMaker) -> None:
    """`farmd worker`: the agent on a render host."""
    worker = command("worker", _worker, "run a worker agent on this host", admin=False)
    worker.add_argument(
        "--supervisor",
        metavar="HOST:PORT",
        help="supervisor address (default $FARMD_SUPERVISOR or 127.0.0.1:7531)",
    )
    worker.add_argument("--token-file", metavar="FILE", help="file holding the farm token")
    worker.add_argument(
        "--name", default=socket.gethostname(), help="worker name (default: the host name)"
    )
    worker.add_argument("--cluster", default="/", help="cluster path (default /)")
    worker.add_argument("--slots", type=_positive_int, default=1, help="frames run at once")
    worker.add_argument(
        "--restrictions",
        default="",
        metavar="EXPR",
        help="job clusters this worker accepts, e.g. '/show1/+ || /comp'",
    )
    worker.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="TYPE",
        help="a job type this worker runs (repeatable); jobs of a type run only where it is",
    )
    worker.add_argument(
        "--property",
        dest="properties",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a host fact for job requirements (host.KEY); os, arch, cpus, memory and "
        "hostname are found",
    )
    worker.add_argument(
        "--resource",
        dest="resources",
        action="append",
        default=[],
        metavar="NAME=AMOUNT",
        help="a counter jobs reserve here, e.g. gpu=2 (memory defaults to the host's)",
    )
    worker.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where frame logs are kept (default STATE/worker-logs/NAME)",
    )
    _add_log_options(worker)


def _add_up_command(command: _CommandMaker) -> None:
    """`farmd up`: a supervisor and local workers in one process."""
    up = command("up", _up, "run a supervisor and N local workers in one process", admin=False)
    up.add_argument("--workers", type=_positive_int, default=2, help="local workers (default 2)")
    up.add_argument("--slots", type=_positive_int, default=1, help="slots per worker")
    up.add_argument("--listen", metavar="HOST:PORT")
    up.add_argument("--state", metavar="DIR")
    up.add_argument("--config", metavar="FILE")
    up.add_argument("--store", choices=["sqlite", "memory"])
    _add_log_options(up)


def _add_submit_command(command: _CommandMaker) -> None:
    """`farmd submit` (its job options: `_add_job_options`)."""
    submit = command("submit", _submit, "submit a job; prints its id")
    _add_spec_options(submit)
    submit.add_argument(
        "--key",
        metavar="KEY",
        help="idempotency key (1-128 of A-Z a-z 0-9 . _ : -): submitting again with the "
        "same key and job prints the first job's id instead of making a second job "
        "(default: a fresh key, which farmd's own retries of a lost connection reuse)",
    )
    submit.add_argument("--json", action="store_true")
    submit.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARG...")


def _add_listings_command(command: _CommandMaker) -> None:
    """`farmd jobs`, `job`, `workers`, `clusters`: what the farm holds."""
    jobs = command("jobs", _jobs, "list jobs")
    jobs.add_argument("--json", action="store_true")

    job = command("job", _job, "show a job and each of its frames")
    job.add_argument("job_id", type=_job_id, metavar="ID")
    job.add_argument("--json", action="store_true")

    workers = command("workers", _workers, "list connected workers")
    workers.add_argument("--json", action="store_true")

    clusters = command("clusters", _clusters, "show the cluster tree with counts")
    clusters.add_argument("--json", action="store_true")


def _add_wait_command(command: _CommandMaker) -> None:
    """`farmd wait`: its exit status says how the jobs ended."""
    wait = command(
        "wait",
        _wait,
        "wait for jobs to end or get stuck (exit 0 complete, 1 failed, killed or stuck "
        "(blocked, suspended, or waiting for a job that is: printed with why), 2 timeout, "
        "3 error)",
    )
    wait.add_argument("job_ids", type=_job_id, nargs="+", metavar="ID")
    wait.add_argument("--timeout", type=float, metavar="S")
    wait.add_argument("--json", action="store_true")
    wait.set_defaults(error_exit=3)


def _add_controls_command(command: _CommandMaker) -> None:
    """`farmd kill`, `block`, `unblock`, `retry`, `suspend`, `resume`: one control each."""
    for name, text in (
        ("kill", "kill jobs or frames (their running processes are killed)"),
        ("block", "stop and hold jobs or frames until unblocked"),
        ("unblock", "release blocked jobs or frames"),
        ("retry", "run failed or killed frames again"),
        ("suspend", "stop (SIGSTOP) running frames, keeping their slots, and hold the rest"),
        ("resume", "continue (SIGCONT) suspended frames and release the rest"),
    ):
        control = command(name, _control, f"{text}: ID, ID:FRAME or ID:RANGE (12:1-10)")
        control.add_argument("targets", nargs="+", metavar="TARGET")
        control.add_argument("--json", action="store_true")
        control.set_defaults(action=name)


def _add_remove_command(command: _CommandMaker) -> None:
    """`farmd remove`."""
    remove = command("remove", _remove, "forget jobs that have ended (kill them first)")
    remove.add_argument("job_ids", type=_job_id, nargs="+", metavar="ID")
    remove.add_argument("--json", action="store_true")


def _add_modify_command(command: _CommandMaker) -> None:
    """`farmd modify`: a job's rank and options."""
    modify = command("modify", _modify, "change a job's rank (takes effect at the next pick)")
    modify.add_argument("job_id", type=_job_id, metavar="ID")
    modify.add_argument("--priority", type=int)
    modify.add_argument("--cluster")
    modify.add_argument("--restrictions", metavar="EXPR")
    modify.add_argument("--cross-cluster", metavar="PATTERNS")
    _add_job_options(modify, defaults=False)
    modify.add_argument("--json", action="store_true")


def _add_lock_command(command: _CommandMaker) -> None:
    """`farmd lock`: drain or purge a worker."""
    lock = command("lock", _lock, "stop a worker taking new work (qblock)")
    lock.add_argument("worker", metavar="WORKER")
    mode = lock.add_mutually_exclusive_group()
    mode.add_argument(
        "--drain", dest="mode", action="store_const", const="drain", help="running frames finish"
    )
    mode.add_argument(
        "--purge",
        dest="mode",
        action="store_const",
        const="purge",
        help="running frames are stopped and requeued (no retry used)",
    )
    lock.add_argument("--json", action="store_true")
    lock.set_defaults(mode="drain")


def _add_unlock_command(command: _CommandMaker) -> None:
    """`farmd unlock`."""
    unlock = command("unlock", _unlock, "let a locked worker take work again")
    unlock.add_argument("worker", metavar="WORKER")
    unlock.add_argument("--json", action="store_true")


def _add_explain_command(command: _CommandMaker) -> None:
    """`farmd explain`."""
    explain = command("explain", _explain, "why a job does or does not run on each worker")
    explain.add_argument("job_id", type=_job_id, metavar="ID")
    explain.add_argument("--worker", metavar="NAME", help="only this worker")
    explain.add_argument("--json", action="store_true")


def _add_reload_command(command: _CommandMaker) -> None:
    """`farmd reload`."""
    reload = command(
        "reload", _reload, "read the supervisor's configuration file again (as SIGHUP does)"
    )
    reload.add_argument("--json", action="store_true")


def _add_resources_command(command: _CommandMaker) -> None:
    """`farmd resources`: farm-wide counters, and setting their totals."""
    resources = command("resources", _resources, "farm-wide counters (licenses): used and free")
    resources.add_argument(
        "set", nargs="*", metavar="NAME=TOTAL", help="change totals until the next restart"
    )
    resources.add_argument("--json", action="store_true")


def _add_logs_command(command: _CommandMaker) -> None:
    """`farmd logs`."""
    logs = command("logs", _logs, "print the log of a frame (ID or ID:FRAME)")
    logs.add_argument("target", metavar="ID[:FRAME]")
    logs.add_argument("--json", action="store_true")


def _add_order_command(command: _CommandMaker) -> None:
    """`farmd order`."""
    order = command("order", _order, "the jobs a worker would run next, in rank order")
    order.add_argument("worker", metavar="WORKER")
    order.add_argument("--limit", type=_positive_int, default=50)
    order.add_argument("--json", action="store_true")


def _add_config_command(command: _CommandMaker) -> None:
    """`farmd config check`: a group with its own subcommands."""
    config = command.subparsers.add_parser("config", help="farm configuration files")
    config_commands = config.add_subparsers(title="commands", metavar="COMMAND", required=True)
    text = "validate a farm configuration; with --host, show that host's effective settings"
    check = config_commands.add_parser("check", help=text, description=text)
    check.set_defaults(run=_config_check)
    check.add_argument("file", metavar="FILE")
    check.add_argument("--host", metavar="NAME", help="a worker's name (its host name)")
    check.add_argument("--json", action="store_true")


_COMMANDS: Final[tuple[Callable[[_CommandMaker], None], ...]] = (
    _add_serve_command,
    _add_worker_command,
    _add_up_command,
    _add_submit_command,
    _add_listings_command,
    _add_wait_command,
    _add_controls_command,
    _add_remove_command,
    _add_modify_command,
    _add_lock_command,
    _add_unlock_command,
    _add_explain_command,
    _add_reload_command,
    _add_resources_command,
    _add_logs_command,
    _add_order_command,
    _add_config_command,
)


def _add_spec_options(
    sub: argparse.ArgumentParser, names: Iterable[str] | None = None, *, defaults: bool = True
) -> None:
    """Options for the job spec's fields (`farmd.jobspec`; all of them, or those
    `names`), generated from each field's documentation: the flag is the field's name
    with dashes, the option's text is read by the parser its `Doc.parse` names, the
    default is the field's (`defaults` False: None, "not given")."""
    parsers: dict[str, Callable[[str], Any]] = {
        "text": str,
        "int": int,
        "count": _count,
        "positive": _positive_int,
        "seconds": _seconds,
        "job_id": _job_id,
        "dependencies": _dependencies,
    }
    wanted = None if names is None else set(names)
    for field in spec_fields():
        meta = doc(field)
        if not meta.option or (wanted is not None and field.name not in wanted):
            continue
        flag, default = option_flag(field.name), field.default if defaults else None
        if meta.parse == "flag":
            sub.add_argument(flag, dest=field.name, action="store_true", help=meta.help)
        elif meta.parse == "dependencies":  # repeatable: the values add up
            sub.add_argument(
                flag,
                dest=field.name,
                type=_dependencies,
                action="extend",
                default=list(field.default or ()) if defaults else None,
                metavar=meta.metavar,
                help=meta.help,
            )
        else:
            sub.add_argument(
                flag,
                dest=field.name,
                type=parsers[meta.parse],
                default=default,
                metavar=meta.metavar,
                help=meta.help,
            )


# The job's options that `farmd modify` changes too.
_JOB_OPTIONS = ("instances", "retries", "retry_delay", "time_limit")


def _add_job_options(sub: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    _add_spec_options(sub, _JOB_OPTIONS, defaults=defaults)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"{text!r} is not a whole number"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 0:
        msg = f"{text!r} must be 0 or more"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"{text!r} is not a number of seconds"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= value < float("inf"):
        msg = f"{text!r} must be 0 or more seconds"
        raise argparse.ArgumentTypeError(msg)
    return value


def _add_connection_options(sub: argparse.ArgumentParser) -> None:
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


def _add_log_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub.add_argument("--log-json", action="store_true", help="one JSON object per line")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"{text!r} is not a whole number"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"{text!r} must be at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def _dependencies(text: str) -> list[str]:
    from farmd.jobs import parse_dependency

    items = [item.strip() for item in text.split(",")]
    try:
        return [str(parse_dependency(item)) for item in items]
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _job_id(text: str) -> int:
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        msg = f"{text!r} is not a job id"
        raise argparse.ArgumentTypeError(msg) from None


# --------------------------------------------------------------------------- daemons


def _supervisor_config(args: argparse.Namespace) -> Any:
    return _farm_config(args)[0]


def _farm_config(args: argparse.Namespace) -> tuple[Any, Any]:
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
    if getattr(args, "preempt_policy", None):
        changes["preempt_policy"] = args.preempt_policy
    if getattr(args, "metrics", None):
        changes["metrics"] = parse_address(args.metrics)
    return (attrs.evolve(config, **changes) if changes else config), workers


def _serve(args: argparse.Namespace) -> int:
    import trio

    from farmd import logs
    from farmd.supervisor import serve

    logs.configure(args.log_level, json_lines=args.log_json)
    from farmd.config import load_supervisor_config

    config, workers = _farm_config(args)
    path = Path(args.config).resolve() if args.config else None
    file_settings = load_supervisor_config(path) if path else None
    run = functools.partial(
        serve, config, workers=workers, config_path=path, file_settings=file_settings
    )
    trio.run(run)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import trio

    from farmd import logs
    from farmd.agent import AgentConfig, run_agent
    from farmd.client import resolve_address, resolve_token
    from farmd.config import default_state_dir
    from farmd.resources import parse_resources
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
    config = AgentConfig(
        supervisor=resolve_address(args.supervisor),
        token=resolve_token(None, args.token_file),
        name=args.name,
        cluster=args.cluster,
        restrictions=args.restrictions,
        slots=args.slots,
        log_dir=log_dir,
        types=types,
        properties=properties,
        resources=resources,
    )
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


def _up(args: argparse.Namespace) -> int:
    import trio

    from farmd import logs
    from farmd.local import run_local_farm

    logs.configure(args.log_level, json_lines=args.log_json)
    config = _supervisor_config(args)
    trio.run(run_local_farm, config, args.workers, args.slots)
    return 0


# --------------------------------------------------------------------------- admin


def _client(args: argparse.Namespace) -> Any:
    from farmd.client import Client

    return Client(args.supervisor, token_file=args.token_file)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[_cell(row.get(c), c) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(_safe(str(v)) for v in value) or "-"
    if isinstance(value, float) and column.endswith("_at"):  # a time: started_at...
        import time

        return time.strftime("%H:%M:%S", time.localtime(value))
    if isinstance(value, float):
        return f"{value:g}"
    return _safe(str(value))


def _safe(text: str) -> str:
    """`text` as a listing prints it: as it is when every character prints, else as its
    repr (quoted, with control and other odd characters escaped), so that no field (an
    argv, a name stored by an older farmd, a reason) can end a row or fake one."""
    return text if text.isprintable() else repr(text)


def _frame_counts(job: dict[str, Any]) -> str:
    counts = job["frames"]
    return " ".join(f"{state}={n}" for state, n in counts.items() if n) or "-"


def _submit(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        msg = "a command is required: farmd submit [OPTIONS] -- COMMAND ARG..."
        raise UserError(msg)
    with _client(args) as farm:
        spec = {f.name: getattr(args, f.name) for f in spec_fields() if doc(f).option}
        job = farm.submit_job(command, key=args.key, **spec)
    if args.json:
        _print_json(job)
    else:
        print(job["id"])
    return 0


def _jobs(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        jobs = farm.jobs()
    if args.json:
        _print_json(jobs)
        return 0
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
                "counts": _frame_counts(job),
                "reason": job["reason"] or None,
            }
        )
    _table(rows, ["id", "name", "state", "cluster", "priority", "counts", "reason"])
    return 0


def _job(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        job = farm.job(args.job_id)
    if args.json:
        _print_json(job)
        return 0
    print(f"job {job['id']} {job['name']!r}: {job['state']}")
    if job["reason"]:
        print(f"  reason: {_safe(job['reason'])}")
    keys = ["cluster", "priority", "restrictions", "cross_cluster", "depends_on", "waiting_on"]
    keys += ["parent", "subjob_ids", "chunk"]
    for key in keys:
        print(f"  {key}: {_cell(job[key]) if job[key] != '' else '-'}")
    print(f"  command: {' '.join(map(_safe, job['argv']))}")
    print(f"  frames: {_frame_counts(job)}")
    _table(
        job["frame_list"],
        ["frames", "state", "worker", "attempts", "started_at", "finished_at", "exit_code"],
    )
    return 0


def _lock(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        requeued = farm.lock(args.worker, purge=args.mode == "purge")
    if args.json:
        _print_json({"locked": args.worker, "mode": args.mode, "requeued": requeued})
    else:
        print(
            f"locked {args.worker} ({args.mode})"
            + (f"; requeued {' '.join(requeued)}" if requeued else "")
        )
    return 0


def _unlock(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        farm.unlock(args.worker)
    if args.json:
        _print_json({"unlocked": args.worker})
    else:
        print(f"unlocked {args.worker}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        report = farm.explain(args.job_id, worker=args.worker)
    if args.json:
        _print_json(report)
        return 0
    print(
        f"job {report['job']} {report['name']!r} ({report['state']}), cluster "
        f"{_safe(report['cluster'])}, priority {report['priority']}"
    )
    if not report["workers"]:
        print("  no worker is connected")
    for entry in report["workers"]:
        where = f"  {_safe(entry['worker'])} ({_safe(entry['cluster'])})"
        rank = entry["rank"]
        ranked = f" [order {rank['order']}, priority {rank['priority']}]" if rank else ""
        if entry["runs"]:
            print(f"{where}{ranked}: runs {', '.join(map(_safe, entry['running']))}")
        elif not entry["reasons"]:
            print(f"{where}{ranked}: would run next")
        for reason in entry["reasons"]:
            print(f"{where}{ranked}: {_safe(reason)}")
    return 0


def _reload(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        result = farm.reload()
    if args.json:
        _print_json(result)
        return 0
    moved = result["reconfigured"]
    print("reloaded; workers reconfigured: " + (" ".join(map(_safe, moved)) or "none"))
    if result["restart_needed"]:
        print("changed, applies at the next restart: " + ", ".join(result["restart_needed"]))
    return 0


def _resources(args: argparse.Namespace) -> int:
    from farmd.resources import parse_resources

    with _client(args) as farm:
        for name, total in parse_resources(",".join(args.set), "totals").items():
            farm.set_resource(name, total)
        totals = farm.resources()
    if args.json:
        _print_json(totals)
        return 0
    rows = [{"resource": name, **values} for name, values in totals.items()]
    _table(rows, ["resource", "used", "free", "total"])
    return 0


def _workers(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        workers = farm.workers()
    if args.json:
        _print_json(workers)
        return 0
    for worker in workers:
        worker["slots"] = f"{worker['used']:g}/{worker['slots']}"
    _table(workers, ["name", "cluster", "state", "slots", "types", "running", "restrictions"])
    return 0


def _clusters(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        nodes = farm.clusters()
    if args.json:
        _print_json(nodes)
        return 0
    rows = []
    for node in nodes:
        path = node["path"]
        label = "/" if path == "/" else "  " * (path.count("/") - 1) + path.rsplit("/", 1)[1]
        rows.append(
            {
                "cluster": label,
                "workers": f"{node['workers_here']} ({node['workers_total']})",
                "jobs": f"{node['jobs_here']} ({node['jobs_total']})",
            }
        )
    _table(rows, ["cluster", "workers", "jobs"])
    print("counts: at the cluster (at and below it)")
    return 0


def _wait(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        result = farm.wait(args.job_ids, args.timeout)
    stuck = result.get("stuck", {})  # an older supervisor sends none
    if args.json:
        _print_json(result)
    else:
        for job_id, state in sorted(result["ended"].items(), key=lambda kv: int(kv[0])):
            print(f"{job_id} {state}")
        for job_id in result["pending"]:
            if str(job_id) in stuck:
                print(f"{job_id} stuck: {_one_line(stuck[str(job_id)])}")
            else:
                print(f"{job_id} still going")
    if any(str(job_id) not in stuck for job_id in result["pending"]):
        return 2  # the timeout came first
    ended = result["ended"].values()
    return 0 if not result["pending"] and all(s == "complete" for s in ended) else 1


def _control(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        if args.action == "kill" and all(t.strip().isdigit() for t in args.targets):
            # whole jobs: a job that has ended already is left as it is, not refused
            changed = [str(i) for i in farm.kill(int(t) for t in args.targets)]
        else:
            changed = farm.control(args.action, args.targets)
    done = DONE[Control(args.action)]
    if args.json:
        _print_json({done: changed})
    else:
        print(f"{done} " + " ".join(changed))
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        removed = farm.remove(args.job_ids)
    if args.json:
        _print_json({"removed": removed})
    else:
        print("removed " + " ".join(map(str, removed)))
    return 0


def _modify(args: argparse.Namespace) -> int:
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
    with _client(args) as farm:
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
        _print_json(job)
    else:
        print(f"job {job['id']}: cluster {job['cluster']}, priority {job['priority']}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    text = args.target
    job_text, _, frame_text = text.partition(":")
    try:
        job_id = int(job_text)
        frame = int(frame_text) if frame_text else None
    except ValueError:
        msg = f"bad log target {text!r}: expected ID or ID:FRAME"
        raise UserError(msg) from None
    with _client(args) as farm:
        log = farm.logs(job_id, frame)
    if args.json:
        _print_json(log)
    else:
        sys.stdout.write(log["text"])
    return 0


def _order(args: argparse.Namespace) -> int:
    with _client(args) as farm:
        ranked = farm.order(args.worker, args.limit)
    if args.json:
        _print_json(ranked)
        return 0
    _table(ranked, ["order", "priority", "id", "name", "cluster"])
    return 0


def _config_check(args: argparse.Namespace) -> int:
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
            _print_json(summary)
            return 0
        print(f"{args.file}: ok")
        print(f"  supervisor: listen {summary['listen']}, store {farm.supervisor.store}")
        totals = ", ".join(f"{n}={t:g}" for n, t in sorted(farm.supervisor.resources.items()))
        print(f"  farm-wide resources: {totals or '-'}")
        print(f"  workers: {summary['templates']} templates, {summary['hosts']} host entries")
        return 0
    settings = workers.settings_for(args.host)
    if args.json:
        _print_json({"host": args.host, **settings.as_dict()})
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
