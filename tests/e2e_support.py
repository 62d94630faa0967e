"""Helpers for the end-to-end tests: real `farmd` processes on 127.0.0.1, and bounded waits.

A `Farm` lives in one test's `tmp_path` and owns every process the test starts there: the
supervisor (`farmd serve`, or `farmd up`) and its workers, each a `subprocess.Popen` of
`python -m farmd ...` whose stdout and stderr go to files under `tmp_path/logs`. Closing the
farm (the fixtures do it in a `finally`, so also when the test fails) ends each process by
its pid: SIGTERM, a bounded wait, then SIGKILL. A frame still running then (each runs in a
process group of its own, led by its shepherd, and dies with its agent) is found through
the pid file the frame script writes, and its group killed.

Nothing here sleeps to wait for something to happen: `wait_for` polls a condition until a
deadline and fails with a description of what it waited for; `Client.wait` blocks on the
supervisor's side. When a test fails, `attach_process_logs` (called from the report hook in
`tests/conftest.py`) adds each process's stderr to the failure report.

Frames run `FRAME_SCRIPT` (written to `tmp_path/frame.py`), a tiny command whose arguments
are steps: append a line to a file, write its pid, block until a file exists, print, exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from farmd.client import Client

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 15.0  # seconds for a daemon to listen or a worker to register
STOP_TIMEOUT = 10.0  # seconds for a process to exit after SIGTERM before SIGKILL
CLI_TIMEOUT = 60.0  # seconds for one `farmd` admin command
FRAME_BLOCK_LIMIT = 30.0  # a blocked frame gives up on its own after this many seconds
LOG_TAIL_CHARS = 20_000

T = TypeVar("T")

# --------------------------------------------------------------------------- waiting


def wait_for(
    predicate: Callable[[], T],
    what: str,
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
) -> T:
    """Poll `predicate` until it returns something truthy and return that.

    Bounded in time (`timeout`) and in count (`timeout / interval` polls plus one); raises
    AssertionError naming `what` and the last value seen when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    polls = int(timeout / interval) + 2
    value: T | None = None
    for _ in range(polls):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    msg = f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})"
    raise AssertionError(msg)


# --------------------------------------------------------------------------- frames

FRAME_SCRIPT = r'''"""A frame command for farmd's end-to-end tests; each argument group is a step.

  --append FILE TEXT   append the line TEXT to FILE
  --append-name FILE   append the line $FARMD_JOB_NAME to FILE
  --pid-dir DIR        write this process's pid to DIR/WORKER-JOB-FRAME-ATTEMPT.pid
  --block FILE         wait until FILE exists (exit 3 if it does not within the limit)
  --print TEXT         print TEXT on stdout
  --exit N             exit with status N
"""
import os
import sys
import time

LIMIT = float(os.environ.get("E2E_FRAME_BLOCK_LIMIT", "30"))


def append(path, text):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")


def main(args):
    env = os.environ
    tag = "-".join(
        env.get(k, "?")
        for k in ("FARMD_WORKER", "FARMD_JOB_ID", "FARMD_FRAME", "FARMD_ATTEMPT")
    )
    i = 0
    while i < len(args):
        step = args[i]
        if step == "--append":
            append(args[i + 1], args[i + 2])
            i += 3
        elif step == "--append-name":
            append(args[i + 1], env["FARMD_JOB_NAME"])
            i += 2
        elif step == "--pid-dir":
            path = os.path.join(args[i + 1], tag + ".pid")
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
            i += 2
        elif step == "--block":
            deadline = time.monotonic() + LIMIT
            while not os.path.exists(args[i + 1]):
                if time.monotonic() > deadline:
                    print("frame.py: gave up waiting for " + args[i + 1], flush=True)
                    return 3
                time.sleep(0.02)
            i += 2
        elif step == "--print":
            print(args[i + 1], flush=True)
            i += 2
        elif step == "--exit":
            return int(args[i + 1])
        else:
            print("frame.py: unknown step " + step, file=sys.stderr)
            return 2
    return 0


sys.exit(main(sys.argv[1:]))
'''


def pid_alive(pid: int, marker: str) -> bool:
    """True while `pid` runs a command line that mentions `marker` (so a reused pid of some
    unrelated process never counts, and is never signalled)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and marker.encode() in cmdline


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """One process a test started; ended by `stop`, by its pid."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `signum`, wait up to `timeout` seconds, then SIGKILL; the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(STOP_TIMEOUT)

    def stderr(self) -> str:
        return _read(self.stderr_path)

    def stdout(self) -> str:
        return _read(self.stdout_path)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


PROCESSES = pytest.StashKey[list[Proc]]()


def attach_process_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """Add the stderr of every process `item` started to its report, when it failed."""
    if not report.failed:
        return
    for proc in item.stash.get(PROCESSES, []):
        status = proc.popen.poll()
        state = "running" if status is None else f"exit {status}"
        text = proc.stderr()
        if len(text) > LOG_TAIL_CHARS:
            text = f"[... last {LOG_TAIL_CHARS} characters]\n" + text[-LOG_TAIL_CHARS:]
        report.sections.append((f"{proc.name} stderr (pid {proc.pid}, {state})", text))


# --------------------------------------------------------------------------- the farm


def clean_env(root: Path) -> dict[str, str]:
    """The environment of every process: no FARMD_* from the caller, a private state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARMD_")}
    env["FARMD_STATE"] = str(root / "default-state")
    env["XDG_CONFIG_HOME"] = str(root / "config")  # where `farmd login` writes
    env["E2E_FRAME_BLOCK_LIMIT"] = str(FRAME_BLOCK_LIMIT)
    return env


class Farm:
    """A supervisor and its workers in `root`, driven through the CLI and the client."""

    def __init__(self, root: Path, processes: list[Proc]) -> None:
        self.root = root
        self.state = root / "state"
        self.logs = root / "logs"
        self.pids = root / "pids"
        self.frame_script = root / "frame.py"
        self.env = clean_env(root)
        self.processes = processes
        self.supervisor: Proc | None = None
        self.address = ""
        self.restarts = 0
        self.http = False  # whether `serve` started its HTTP server
        self._client: Client | None = None
        for directory in (self.logs, self.pids):
            directory.mkdir(parents=True, exist_ok=True)
        self.frame_script.write_text(FRAME_SCRIPT)

    # ------------------------------------------------------------------ processes

    def spawn(self, name: str, args: Sequence[str]) -> Proc:
        stdout_path = self.logs / f"{name}.stdout"
        stderr_path = self.logs / f"{name}.stderr"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "farmd", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.root,
            )
        proc = Proc(name, popen, stdout_path, stderr_path)
        self.processes.append(proc)
        return proc

    def serve(self, *extra: str, http: bool = False) -> Proc:
        """Start `farmd serve` on 127.0.0.1, port 0; return once it wrote its address.
        Its HTTP server (the API, the dashboard) is off unless `http` (on port 0): most
        tests speak the socket protocol, and the web stack costs every start a quarter
        of a second (the HTTP tests ask for it)."""
        self.http = http or "--http" in extra
        web = [] if "--http" in extra else ["--http", f"{LOCALHOST}:0" if http else "off"]
        proc = self.spawn(
            "supervisor",
            ["serve", "--listen", f"{LOCALHOST}:0", "--state", str(self.state), *web, *extra],
        )
        self._await_address(proc)
        self.supervisor = proc
        return proc

    def restart(self, *extra: str) -> Proc:
        """Stop `farmd serve` (SIGTERM) and start it again on the same state dir and
        port, so its workers find it again on their own."""
        assert self.supervisor is not None
        port = self.address.rpartition(":")[2]
        assert self.supervisor.stop() == 0, self.supervisor.stderr()
        (self.state / "address").unlink(missing_ok=True)
        self.restarts += 1
        proc = self.spawn(
            f"supervisor-{self.restarts + 1}",
            [
                "serve",
                "--listen",
                f"{LOCALHOST}:{port}",
                "--http",  # its own port 0: the fixed one may be another farm's
                f"{LOCALHOST}:0" if self.http else "off",
                "--state",
                str(self.state),
                *extra,
            ],
        )
        self._await_address(proc)
        assert self.address.endswith(f":{port}"), self.address
        self.supervisor = proc
        self.api.close()  # the next request connects to the new supervisor
        return proc

    def up(self, workers: int, slots: int = 1) -> Proc:
        """Start `farmd up` (supervisor and local workers in one process)."""
        proc = self.spawn(
            "up",
            [
                "up",
                "--workers",
                str(workers),
                "--slots",
                str(slots),
                "--listen",
                f"{LOCALHOST}:0",
                "--state",
                str(self.state),
            ],
        )
        self._await_address(proc)
        self.supervisor = proc
        return proc

    def _await_address(self, proc: Proc) -> None:
        path = self.state / "address"

        def written() -> str:
            if not proc.running():
                msg = f"{proc.name} exited with {proc.popen.returncode}:\n{proc.stderr()}"
                raise AssertionError(msg)
            try:
                text = path.read_text()
            except OSError:
                return ""
            return text.strip() if text.endswith("\n") else ""

        address = wait_for(written, f"{path} to be written", timeout=START_TIMEOUT)
        host, _, port = address.rpartition(":")
        assert host == LOCALHOST, address
        assert int(port) > 0, address
        self.address = address

    @property
    def token_file(self) -> Path:
        return self.state / "token"

    def worker(
        self,
        name: str,
        cluster: str = "/",
        *,
        slots: int = 1,
        restrictions: str = "",
        extra: Sequence[str] = (),
        label: str = "",
        wait: bool = True,
    ) -> Proc:
        """Start `farmd worker` (with `extra` arguments: `--type`, `--property`...);
        return once the supervisor lists it as connected (unless `wait` is false).
        `label` names its log files (a worker started again under the same name gets
        files of its own)."""
        label = label or name
        proc = self.spawn(
            f"worker-{label}",
            [
                "worker",
                "--supervisor",
                self.address,
                "--token-file",
                str(self.token_file),
                "--name",
                name,
                "--cluster",
                cluster,
                "--slots",
                str(slots),
                "--restrictions",
                restrictions,
                "--log-dir",
                str(self.root / "worker-logs" / label),
                *extra,
            ],
        )
        if wait:
            self.await_workers({name: proc})
        return proc

    def await_workers(self, procs: dict[str, Proc]) -> None:
        """Wait until the supervisor lists every worker of `procs` (name -> process)."""

        def registered() -> bool:
            for name, proc in procs.items():
                if not proc.running():
                    msg = f"worker {name} exited with {proc.popen.returncode}:\n{proc.stderr()}"
                    raise AssertionError(msg)
            return set(procs) <= self.worker_names()

        wait_for(registered, f"workers {sorted(procs)} to register", timeout=START_TIMEOUT)

    # ------------------------------------------------------------------ talking to it

    @property
    def api(self) -> Client:
        """A client for the test's own polling (the CLI is what the assertions use)."""
        if self._client is None:
            self._client = Client(self.address, token_file=self.token_file, timeout=20.0)
        return self._client

    def worker_names(self) -> set[str]:
        return {w["name"] for w in self.api.workers()}

    def run(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run `farmd ARGS...` in the farm's environment, to its end (no supervisor
        options added: for `farmd config check`, `farmd serve` and the like)."""
        return subprocess.run(
            [sys.executable, "-m", "farmd", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=timeout,
            check=False,
        )

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run `farmd COMMAND --supervisor ADDR --token-file TOKEN ARGS...`."""
        command, *rest = args
        supervisor = ("--supervisor", self.address, "--token-file", str(self.token_file))
        return self.run(command, *supervisor, *rest, timeout=timeout)

    def cli_ok(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """Run a command that must succeed; its stdout."""
        result = self.cli(*args, timeout=timeout)
        assert result.returncode == 0, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        return result.stdout

    def cli_json(self, command: str, *args: str) -> Any:
        """`farmd COMMAND --json ARGS...` (before any `--`); its output, decoded."""
        return json.loads(self.cli_ok(command, "--json", *args))

    def submit(self, argv: Sequence[str], **options: Any) -> int:
        """Submit through the client (quicker than the CLI, for a test's setup); the id.
        Options as for `Client.submit_job`."""
        return self.api.submit(argv, **options)

    def submit_cli(self, *args: str) -> int:
        """`farmd submit --json ARGS...`; the new job's id."""
        job = self.cli_json("submit", *args)
        return int(job["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.api.job(job_id))

    def frames(self, job_id: int) -> dict[int, dict[str, Any]]:
        return {f["frame"]: f for f in self.api.job(job_id)["frame_list"]}

    def wait_jobs(self, job_ids: Sequence[int], timeout: float = 20.0) -> dict[str, str]:
        """Block (on the supervisor) until the jobs end; their end states by id text."""
        result = self.api.wait(job_ids, timeout=timeout)
        assert not result["pending"], f"jobs still going after {timeout}s: {result}"
        ended: dict[str, str] = result["ended"]
        return ended

    # ------------------------------------------------------------------ frames

    def frame(self, *steps: str) -> list[str]:
        """The argv of a frame running the frame script with these steps."""
        return [sys.executable, str(self.frame_script), *steps]

    def release_path(self, name: str) -> Path:
        return self.root / f"release-{name}"

    def release(self, name: str) -> None:
        self.release_path(name).touch()

    def frame_pids(self) -> dict[str, int]:
        """WORKER-JOB-FRAME-ATTEMPT -> pid of every frame that wrote a pid file."""
        out = {}
        for path in sorted(self.pids.glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                out[path.stem] = int(path.read_text())
        return out

    def wait_frame_pid(self, key: str) -> int:
        """The pid of frame attempt `key` (WORKER-JOB-FRAME-ATTEMPT), once it has started."""
        pid = wait_for(lambda: self.frame_pids().get(key), f"frame {key} to write its pid")
        assert pid is not None
        return pid

    def frame_alive(self, pid: int) -> bool:
        return pid_alive(pid, str(self.frame_script))

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """End every process, newest first, each by its pid; then any orphaned frame."""
        if self._client is not None:
            self._client.close()
            self._client = None
        errors = []
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception as exc:  # keep going: every process must be ended
                errors.append(f"{proc.name} (pid {proc.pid}): {exc!r}")
        for pid in self.frame_pids().values():
            if self.frame_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    group = os.getpgid(pid)  # its shepherd's: frames run in groups of their own
                    if group != os.getpgrp():
                        os.killpg(group, signal.SIGKILL)
        assert not errors, errors


def lines(path: Path) -> list[str]:
    """The lines frames appended to `path` (none if no frame wrote it yet)."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def gated(farm: Farm, label: str, gate: str) -> list[str]:
    """A frame that writes its pid, appends `LABEL<frame> start` to the farm's trace,
    waits for `farm.release(GATE)` (`{frame}` in GATE is the frame number), then appends
    `LABEL<frame> end`."""
    trace_file = str(farm.root / "trace.txt")
    return farm.frame(
        "--pid-dir",
        str(farm.pids),
        "--append",
        trace_file,
        f"{label}{{frame}} start",
        "--block",
        str(farm.release_path(gate)),
        "--append",
        trace_file,
        f"{label}{{frame}} end",
    )


def trace(farm: Farm) -> list[str]:
    """What `gated` frames appended, in order."""
    return lines(farm.root / "trace.txt")


def forget_farmd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test's farm is its own: no FARMD_* setting of the shell running the tests."""
    for name in [k for k in os.environ if k.startswith("FARMD_")]:
        monkeypatch.delenv(name)


@contextlib.contextmanager
def open_farm(root: Path, item: pytest.Item) -> Iterator[Farm]:
    processes: list[Proc] = []
    item.stash[PROCESSES] = processes
    farm = Farm(root, processes)
    try:
        yield farm
    finally:
        farm.close()


# --------------------------------------------------------------------------- assertions


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"command: {' '.join(map(str, result.args))}\nexit: {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def assert_refused(result: subprocess.CompletedProcess[str], exit_code: int = 1) -> str:
    """A refusal: exit `exit_code`, nothing on stdout, one `farmd: error:` line, no
    traceback. Returns the line."""
    assert result.returncode == exit_code, describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("farmd: error: "), describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    return lines[0]


def serve_again(farm: Farm, *extra: str) -> Proc:
    """Start `farmd serve` again on the farm's state dir and port after its supervisor
    ended however, a `kill -9` too (which `Farm.restart`, asserting a clean stop, does
    not allow); return once it wrote its address."""
    assert farm.supervisor is not None
    assert not farm.supervisor.running(), "stop (or kill) the supervisor first"
    port = farm.address.rpartition(":")[2]
    (farm.state / "address").unlink(missing_ok=True)  # the dead one's would be found
    farm.restarts += 1
    proc = farm.spawn(
        f"supervisor-{farm.restarts + 1}",
        [
            "serve",
            "--listen",
            f"{LOCALHOST}:{port}",
            "--http",  # its own port 0: the fixed one may be another farm's
            f"{LOCALHOST}:0" if farm.http else "off",
            "--state",
            str(farm.state),
            *extra,
        ],
    )
    farm._await_address(proc)
    assert farm.address.endswith(f":{port}"), farm.address
    farm.supervisor = proc
    farm.api.close()  # the next request connects to the new supervisor
    return proc


def without_load(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Workers as listed, without their host load: it changes by itself, at every report,
    so a comparison of before and after leaves it out."""
    return [{k: v for k, v in worker.items() if k != "load"} for worker in workers]
