"""`farmd`'s argument parser: the `_COMMANDS` table of `_add_*_command` functions, one per
command (or group of commands) in the order `farmd --help` lists them, each naming the
handler that runs it; the job spec's options, generated from `farmd.jobspec`; and the
parsers of option values (`_job_id`, `_seconds`, ...), whose refusals argparse reports
as usage errors.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn

from farmd import __version__
from farmd.cli.completion import SHELLS, script
from farmd.cli.connection import add_connection_options, add_trust_options, trust_command
from farmd.cli.jobs import (
    control_command,
    explain_command,
    job_command,
    jobs_command,
    logs_command,
    modify_command,
    order_command,
    remove_command,
    submit_command,
    wait_command,
)
from farmd.cli.ops import (
    config_check_command,
    prune_command,
    reload_command,
    serve_command,
    status_command,
    up_command,
    worker_command,
)
from farmd.cli.releases import (
    add_release_options,
    add_types_options,
    release_command,
    types_command,
)
from farmd.cli.store import add_store_options
from farmd.cli.users import (
    add_audit_options,
    add_user_options,
    add_worker_token_options,
    audit_command,
    login_command,
    user_command,
    worker_token_command,
)
from farmd.cli.workers import (
    clusters_command,
    lock_command,
    resources_command,
    unlock_command,
    workers_command,
)
from farmd.errors import UserError
from farmd.jobspec import doc, option_flag, spec_fields
from farmd.protocol import DEFAULT_PAGE, MAX_PAGE

# `farmd`'s exit statuses (see `farmd.cli`): a refused request, and a bad command line.
ERROR_EXIT = 1
USAGE_EXIT = 2


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one `farmd: error:` line and `USAGE_EXIT`."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"farmd: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """`farmd`'s parser: each command's parser comes from its own function in
    `_COMMANDS`, in the order `farmd --help` lists them."""
    parser = _Parser(prog="farmd", description="A Qube-style hierarchical render farm.")
    parser.add_argument("--version", action="version", version=f"farmd {__version__}")
    command = _CommandMaker(parser.add_subparsers(title="commands", metavar="COMMAND"))
    for add_command in _COMMANDS:
        add_command(command)
    _fill_json_help(parser)
    return parser


def _fill_json_help(parser: argparse.ArgumentParser) -> None:
    """Every command's `--json` says what it prints, in one place rather than in each."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _fill_json_help(sub)
        elif "--json" in action.option_strings and not action.help:
            action.help = "print the answer as JSON, as the protocol gives it (docs/protocol.md)"


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
            add_connection_options(sub)
        return sub


def _add_serve_command(command: _CommandMaker) -> None:
    """`farmd serve`: the supervisor daemon."""
    serve = command("serve", serve_command, "run the supervisor daemon", admin=False)
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:7531)"
    )
    serve.add_argument(
        "--state",
        metavar="DIR",
        help="state directory (default $FARMD_STATE, else the config file's state_dir, "
        "else $XDG_STATE_HOME/farmd, else ~/.local/state/farmd)",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="YAML farm configuration (default: none, built-in settings)",
    )
    serve.add_argument(
        "--store",
        metavar="STORE",
        help="where the queue is kept: sqlite (default, STATE/farmd.db, survives restarts), "
        "memory, or postgresql://HOST/DB: every supervisor given that database is the active "
        "one or a standby that takes over when it dies",
    )
    serve.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="where peers reach this supervisor, as its standbys tell them (default: "
        "--listen, or this host's name when listening on a wildcard address)",
    )
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the HTTP API, the dashboard and /metrics on this address (default "
        "127.0.0.1:7532; port 0 when --listen's is 0); 'off': none",
    )
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="also serve the HTTP app (GET /metrics for Prometheus) on this address, as "
        "before --http (default: off)",
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
    worker = command("worker", worker_command, "run a worker agent on this host", admin=False)
    worker.add_argument(
        "--supervisor",
        metavar="HOST:PORT[,HOST:PORT]",
        help="supervisor address, or the active one and its standbys, tried in turn "
        "(default $FARMD_SUPERVISOR or 127.0.0.1:7531)",
    )
    worker.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the farm token (default $FARMD_TOKEN, else STATE/token)",
    )
    worker.add_argument(
        "--release-dir",
        metavar="DIR",
        help="where releases are unpacked (default: beside the frame logs, LOG_DIR.releases)",
    )
    add_trust_options(worker)
    worker.add_argument(
        "--name", default=socket.gethostname(), help="worker name (default: the host name)"
    )
    worker.add_argument("--cluster", default="/", help="cluster path (default /)")
    worker.add_argument(
        "--slots", type=_positive_int, default=1, help="frames run at once (default 1)"
    )
    worker.add_argument(
        "--restrictions",
        default="",
        metavar="EXPR",
        help="job clusters this worker accepts, e.g. '/show1/+ || /comp' (default: any)",
    )
    worker.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="TYPE",
        help="a job type this worker runs (repeatable; default: none); jobs of a type run "
        "only where it is",
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
        "--pass-env",
        dest="pass_env",
        action="append",
        default=[],
        metavar="NAME",
        help="a variable of this agent's environment its frames get too (a name, or a "
        "pattern such as 'ARNOLD_*'); frames get PATH, HOME, USER, LOGNAME, SHELL, LANG, "
        "LANGUAGE, LC_*, TZ and TMPDIR, their FARMD_* and nothing else",
    )
    worker.add_argument(
        "--run-as",
        choices=["agent", "owner"],
        default="agent",
        help="owner: run each frame as the OS account of its job's owner (needs an agent "
        "running as root; never as root); agent (default): as the agent's own account",
    )
    worker.add_argument(
        "--user-map",
        dest="user_map",
        action="append",
        default=[],
        metavar="OWNER=ACCOUNT",
        help="with --run-as owner: the account for a job owner (default: the same name)",
    )
    worker.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where frame logs are kept (default STATE/worker-logs/NAME)",
    )
    _add_log_options(worker)


def _add_up_command(command: _CommandMaker) -> None:
    """`farmd up`: a supervisor and local workers in one process."""
    up = command(
        "up", up_command, "run a supervisor and N local workers in one process", admin=False
    )
    up.add_argument("--workers", type=_positive_int, default=2, help="local workers (default 2)")
    up.add_argument("--slots", type=_positive_int, default=1, help="slots per worker (default 1)")
    up.add_argument(
        "--listen", metavar="HOST:PORT", help="supervisor address (default 127.0.0.1:7531)"
    )
    up.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="the HTTP API and dashboard (default 127.0.0.1:7532); 'off': none",
    )
    up.add_argument("--state", metavar="DIR", help="state directory (default as for serve)")
    up.add_argument("--config", metavar="FILE", help="YAML farm configuration (default: none)")
    up.add_argument(
        "--store",
        choices=["sqlite", "memory"],
        help="where the queue is kept: sqlite (default, STATE/farmd.db) or memory",
    )
    _add_log_options(up)


def _add_submit_command(command: _CommandMaker) -> None:
    """`farmd submit` (its job options: `_add_job_options`)."""
    submit = command("submit", submit_command, "submit a job; prints its id")
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
    jobs = command("jobs", jobs_command, "list jobs by id, a page at a time, with counts")
    jobs.add_argument(
        "--limit",
        type=_page_size,
        metavar="N",
        help=f"jobs per page, 1 to {MAX_PAGE} (default: the supervisor's, {DEFAULT_PAGE})",
    )
    jobs.add_argument(
        "--after",
        type=_job_id,
        metavar="ID",
        help="list the jobs after id ID (default: from the first)",
    )
    jobs.add_argument(
        "--all",
        action="store_true",
        help="every job, those in history too, every page one after the other",
    )
    jobs.add_argument(
        "--history",
        action="store_true",
        help="list the jobs in history too (ended, out of the live queue), a page at a time",
    )
    jobs.add_argument("--json", action="store_true")

    job = command("job", job_command, "show a job and a page of its frames")
    job.add_argument("job_id", type=_job_id, metavar="ID")
    job.add_argument(
        "--frame-limit",
        type=_page_size,
        metavar="N",
        help=f"frames (chunks) per page, 1 to {MAX_PAGE} (default: the supervisor's, "
        f"{DEFAULT_PAGE})",
    )
    job.add_argument(
        "--frame-after",
        type=_frame_number,
        metavar="FRAME",
        help="list the frames after the one that runs frame FRAME, in the job's order "
        "(default: from the first)",
    )
    job.add_argument("--json", action="store_true")

    workers = command("workers", workers_command, "list connected workers")
    workers.add_argument("--json", action="store_true")

    clusters = command("clusters", clusters_command, "show the cluster tree with counts")
    clusters.add_argument("--json", action="store_true")


def _add_wait_command(command: _CommandMaker) -> None:
    """`farmd wait`: its exit status says how the jobs ended."""
    wait = command(
        "wait",
        wait_command,
        "wait for jobs to end or get stuck (exit 0 complete, 1 failed, killed or stuck "
        "(blocked, suspended, or waiting for a job that is: printed with why), 2 timeout, "
        "3 error)",
    )
    wait.add_argument("job_ids", type=_job_id, nargs="+", metavar="ID")
    wait.add_argument(
        "--timeout", type=float, metavar="S", help="seconds to wait at most (default: no limit)"
    )
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
        control = command(name, control_command, f"{text}: ID, ID:FRAME or ID:RANGE (12:1-10)")
        control.add_argument("targets", nargs="+", metavar="TARGET")
        control.add_argument("--json", action="store_true")
        control.set_defaults(action=name)


def _add_remove_command(command: _CommandMaker) -> None:
    """`farmd remove`."""
    remove = command("remove", remove_command, "forget jobs that have ended (kill them first)")
    remove.add_argument("job_ids", type=_job_id, nargs="+", metavar="ID")
    remove.add_argument("--json", action="store_true")


def _add_modify_command(command: _CommandMaker) -> None:
    """`farmd modify`: a job's rank and options."""
    modify = command(
        "modify", modify_command, "change a job's rank (takes effect at the next pick)"
    )
    modify.add_argument("job_id", type=_job_id, metavar="ID")
    modify.add_argument(
        "--priority", type=int, metavar="P", help="new priority, 1 most urgent (default: kept)"
    )
    modify.add_argument("--cluster", metavar="PATH", help="move to this cluster (default: kept)")
    modify.add_argument(
        "--restrictions",
        metavar="EXPR",
        help="worker clusters it accepts, e.g. '/show1/+ || /comp'; '' for any (default: kept)",
    )
    modify.add_argument(
        "--cross-cluster",
        metavar="PATTERNS",
        help="clusters where it ranks as local, e.g. '/showA+,/showB' (default: kept)",
    )
    _add_job_options(modify, defaults=False)
    modify.add_argument("--json", action="store_true")


def _add_lock_command(command: _CommandMaker) -> None:
    """`farmd lock`: drain or purge a worker."""
    lock = command("lock", lock_command, "stop a worker taking new work (qblock)")
    lock.add_argument("worker", metavar="WORKER")
    mode = lock.add_mutually_exclusive_group()
    mode.add_argument(
        "--drain",
        dest="mode",
        action="store_const",
        const="drain",
        help="running frames finish (the default)",
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
    unlock = command("unlock", unlock_command, "let a locked worker take work again")
    unlock.add_argument("worker", metavar="WORKER")
    unlock.add_argument("--json", action="store_true")


def _add_explain_command(command: _CommandMaker) -> None:
    """`farmd explain`."""
    explain = command("explain", explain_command, "why a job does or does not run on each worker")
    explain.add_argument("job_id", type=_job_id, metavar="ID")
    explain.add_argument(
        "--worker", metavar="NAME", help="only this worker (default: every connected one)"
    )
    explain.add_argument("--json", action="store_true")


def _add_reload_command(command: _CommandMaker) -> None:
    """`farmd reload`."""
    reload = command(
        "reload", reload_command, "read the supervisor's configuration file again (as SIGHUP does)"
    )
    reload.add_argument("--json", action="store_true")


def _add_status_command(command: _CommandMaker) -> None:
    """`farmd status`."""
    status = command(
        "status",
        status_command,
        "which supervisor is active, its epoch and since when, and the standbys",
    )
    status.add_argument("--json", action="store_true")


def _add_resources_command(command: _CommandMaker) -> None:
    """`farmd resources`: farm-wide counters, and setting their totals."""
    resources = command(
        "resources", resources_command, "farm-wide counters (licenses): used and free"
    )
    resources.add_argument(
        "set", nargs="*", metavar="NAME=TOTAL", help="change totals until the next restart"
    )
    resources.add_argument("--json", action="store_true")


def _add_logs_command(command: _CommandMaker) -> None:
    """`farmd logs`."""
    logs = command("logs", logs_command, "print the log of a frame (ID or ID:FRAME)")
    logs.add_argument("target", metavar="ID[:FRAME]")
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing a running frame's log as it grows, until the attempt ends",
    )
    logs.add_argument("--json", action="store_true")


def _add_order_command(command: _CommandMaker) -> None:
    """`farmd order`."""
    order = command("order", order_command, "the jobs a worker would run next, in rank order")
    order.add_argument("worker", metavar="WORKER")
    order.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="jobs listed (default 50)"
    )
    order.add_argument("--json", action="store_true")


def _add_history_command(command: _CommandMaker) -> None:
    """`farmd history prune`: jobs that ended and left the live queue."""
    text = "jobs that ended and left the queue: prune removes those older than DAYS days"
    history = command("history", prune_command, text)
    history.add_argument("action", choices=["prune"], metavar="prune")
    history.add_argument(
        "--days", type=_days, metavar="DAYS", help="default: the supervisor's history_days"
    )
    history.add_argument("--json", action="store_true")


def _add_user_commands(command: _CommandMaker) -> None:
    """`farmd user ...` (an admin's) and `farmd login`."""
    user = command("user", user_command, "people: add, list, show, modify or revoke a user")
    add_user_options(user)
    text = "keep a personal token (read from stdin) where farmd commands find it"
    login = command("login", login_command, text)
    login.set_defaults(token_file=None)
    text = "show the key of the supervisor at HOST:PORT and, once confirmed, trust it (TLS)"
    trust = command.subparsers.add_parser("trust", help=text, description=text)
    trust.set_defaults(run=trust_command)
    trust.add_argument("address", metavar="HOST:PORT")
    trust.add_argument("--yes", action="store_true", help="trust it without asking")
    trust.add_argument(
        "--expect", metavar="sha256:HEX", help="trust it only if its key has this pin"
    )
    text = "worker enrolment tokens: add one for some hosts and clusters, list, revoke"
    add_worker_token_options(command("worker-token", worker_token_command, text))
    text = "the audit log, newest first: every change and every refusal, who, from where"
    add_audit_options(command("audit", audit_command, text), _page_size, _job_id)


def _add_release_commands(command: _CommandMaker) -> None:
    """`farmd release ...` and `farmd types`."""
    text = "releases per cluster: deploy (upload), list, show, undeploy, rollback, remove"
    add_release_options(command("release", release_command, text))
    text = "the job types the releases at a cluster provide, with their parameters"
    add_types_options(command("types", types_command, text))


def _add_config_command(command: _CommandMaker) -> None:
    """`farmd config check`: a group with its own subcommands."""
    config = command.subparsers.add_parser("config", help="farm configuration files")
    config_commands = config.add_subparsers(title="commands", metavar="COMMAND", required=True)
    text = "validate a farm configuration; with --host, show that host's effective settings"
    check = config_commands.add_parser("check", help=text, description=text)
    check.set_defaults(run=config_check_command)
    check.add_argument("file", metavar="FILE")
    check.add_argument("--host", metavar="NAME", help="a worker's name (its host name)")
    check.add_argument("--json", action="store_true")


def _add_store_command(command: _CommandMaker) -> None:
    """`farmd store migrate`: a group with its own subcommands, run beside the store."""
    text = "the farm's store: migrate a farm from SQLite to PostgreSQL"
    add_store_options(command.subparsers.add_parser("store", help=text, description=text))


def _add_completion_command(command: _CommandMaker) -> None:
    """`farmd completion`: a shell completion script made from this parser."""
    text = 'print a completion script for bash, zsh or fish (e.g. eval "$(farmd completion bash)")'
    completion = command("completion", completion_command, text, admin=False)
    completion.add_argument("shell", choices=SHELLS, metavar="bash|zsh|fish")


def completion_command(args: argparse.Namespace) -> int:
    sys.stdout.write(script(build_parser(), args.shell))
    return 0


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
    _add_status_command,
    _add_resources_command,
    _add_logs_command,
    _add_order_command,
    _add_config_command,
    _add_history_command,
    _add_user_commands,
    _add_release_commands,
    _add_store_command,
    _add_completion_command,
)


# Shorter spellings of some spec options, as people type them: `farmd submit --type
# blender-render --param scene=/a.blend` (issue 15's words).
OPTION_ALIASES: Final = {"job_type": ("--type",), "params": ("--param",)}


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
        flags = (flag, *OPTION_ALIASES.get(field.name, ()))
        if meta.parse == "flag":
            sub.add_argument(flag, dest=field.name, action="store_true", help=meta.help)
        elif meta.parse == "env":  # repeatable: NAME=VALUE, each its own
            sub.add_argument(
                *flags,
                dest=field.name,
                action="append",
                default=list(field.default or ()) if defaults else None,
                metavar=meta.metavar,
                help=meta.help,
            )
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
                *flags,
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


def _add_log_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe log lines written (default info)",
    )
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


def _days(text: str) -> float:
    try:
        value = _seconds(text)  # a finite number, 0 or more
    except argparse.ArgumentTypeError:
        msg = f"{text!r} is not a number of days (0 or more)"
        raise argparse.ArgumentTypeError(msg) from None
    if value > 1e6:
        msg = f"{text!r} must be 0 to 1000000 days"
        raise argparse.ArgumentTypeError(msg)
    return value


def _page_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_PAGE:
        msg = f"{text!r} is more than a page holds (at most {MAX_PAGE})"
        raise argparse.ArgumentTypeError(msg)
    return value


def _frame_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"{text!r} is not a frame number"
        raise argparse.ArgumentTypeError(msg)
    return value


def _job_id(text: str) -> int:
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        msg = f"{text!r} is not a job id"
        raise argparse.ArgumentTypeError(msg) from None
