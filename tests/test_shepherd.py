"""The frame launcher and its shepherds (farmd/shepherd.py, farmd/launcher.py) on real
processes: a shepherd passes the command's exit status, environment, signal dispositions
and descriptors through unchanged, gives a killed command its grace, and kills the frame's
whole process group when the agent process dies (through the launcher), and only then.

"The agent" here is a small Python process (AGENT below) that starts a frame the way
farmd's agent does (a `Launcher`: its launcher process, a shepherd forked per frame, the
report pipe). The tests kill it with SIGKILL and look at the frame's processes through
/proc. Every wait is bounded; every process a test starts is ended by its pid (or its
group) at the end, also when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from farmd import shepherd
from farmd.launcher import Launcher
from tests.e2e_support import pid_alive, wait_for

pytestmark = pytest.mark.e2e

# A frame: writes its pid to DIR/frame.pid, starts a grandchild (this script again, which
# writes DIR/grandchild.pid), then waits for the file RELEASE (30 s at most) and exits 0.
# With a third argument `trap`, a SIGTERM makes it write DIR/term and exit 3.
FRAME = r"""
import os, signal, subprocess, sys, time
pids, release = sys.argv[1], sys.argv[2]
role = sys.argv[3] if len(sys.argv) > 3 else "frame"

def write(name, text):
    with open(os.path.join(pids, name + ".tmp"), "w") as handle:
        handle.write(text)
    os.replace(os.path.join(pids, name + ".tmp"), os.path.join(pids, name))

def term(signum, frame):
    write("term", "1")
    sys.exit(3)

if role == "trap":
    signal.signal(signal.SIGTERM, term)
child = None
if role != "grandchild":
    child = subprocess.Popen([sys.executable, sys.argv[0], pids, release, "grandchild"])
write(("grandchild" if role == "grandchild" else "frame") + ".pid", str(os.getpid()))
deadline = time.monotonic() + 30
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.02)
if child is not None:
    child.wait()
"""

# The agent: starts the frame argv in argv[1] (JSON) through a Launcher, prints
# {"shepherd": PID, "report": TEXT, "launcher": PID} once the command started, then
# {"status": N} when the shepherd exits.
AGENT = r"""
import json, os, sys, trio
from farmd.launcher import Launcher

async def main():
    argv = json.loads(sys.argv[1])
    async with trio.open_nursery() as nursery:
        launcher = Launcher(nursery)
        with open(os.devnull, "wb") as output:  # stdout is the test's, to read to its end
            child, report = await launcher.start(argv, dict(os.environ), output)
        started = {"shepherd": child.pid, "report": report, "launcher": launcher.pid}
        print(json.dumps(started), flush=True)
        print(json.dumps({"status": await child.wait()}), flush=True)
        launcher.close()

trio.run(main)
"""


LINE_TIMEOUT = 15.0  # seconds for the agent to print its next line


@dataclass
class Agent:
    """An AGENT process and the lines it printed (read by a thread, so that a test
    waits for one with a deadline)."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    reader: threading.Thread

    def line(self) -> dict[str, int | str]:
        try:
            text = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            msg = f"the agent printed nothing in {LINE_TIMEOUT:g}s (exit: {self.process.poll()})"
            raise AssertionError(msg) from None
        assert text, f"the agent exited with {self.process.wait(10)}"
        result: dict[str, int | str] = json.loads(text)
        return result

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would end it."""
        self.process.kill()
        self.process.wait(10)


@dataclass
class Frames:
    """A test's directory: the frame script, its pid files, the agents started."""

    root: Path
    agents: list[Agent]
    groups: list[int]
    launchers: list[int] = field(default_factory=list)

    @property
    def script(self) -> Path:
        return self.root / "frame.py"

    @property
    def release(self) -> Path:
        return self.root / "release"

    def argv(self, role: str = "frame") -> list[str]:
        return [sys.executable, str(self.script), str(self.root), str(self.release), role]

    def pid(self, name: str) -> int:
        path = self.root / f"{name}.pid"
        text = wait_for(lambda: path.exists() and path.read_text(), f"{path} to be written")
        return int(text)

    def alive(self, pid: int) -> bool:
        return pid_alive(pid, str(self.script))

    def agent(self, argv: list[str]) -> tuple[Agent, int, str]:
        """Start AGENT for `argv`; it, the shepherd's pid and its report."""
        agent, started = self.agent_started(argv)
        return agent, int(started["shepherd"]), str(started["report"])

    def agent_started(self, argv: list[str]) -> tuple[Agent, dict[str, int | str]]:
        """Start AGENT for `argv`; it and what it printed once the frame started."""
        process = subprocess.Popen(
            [sys.executable, "-c", AGENT, json.dumps(argv)],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put("")  # end of output

        agent = Agent(process, lines, threading.Thread(target=read, daemon=True))
        self.agents.append(agent)
        agent.reader.start()
        started = agent.line()
        self.groups.append(int(started["shepherd"]))
        self.launchers.append(int(started["launcher"]))
        return agent, started

    def status(self, agent: Agent) -> int:
        """The shepherd's exit status, as its agent saw it."""
        status = int(agent.line()["status"])
        assert agent.process.wait(10) == 0
        return status


@pytest.fixture
def frames(tmp_path: Path) -> Iterator[Frames]:
    made = Frames(tmp_path, [], [])
    made.script.write_text(FRAME)
    try:
        yield made
    finally:
        for group in made.groups:  # what a shepherd left behind (before the fix: all)
            if made.alive(group) or pid_alive(group, "shepherd"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
        for name in ("frame", "grandchild"):
            path = tmp_path / f"{name}.pid"
            if path.exists() and made.alive(pid := int(path.read_text())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for launcher in made.launchers:
            if pid_alive(launcher, "shepherd"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(launcher, signal.SIGKILL)
        for agent in made.agents:
            if agent.process.poll() is None:
                agent.kill()
            agent.process.wait(10)
            agent.reader.join(10)  # it reads to the end of the agent's output, then returns
            if agent.process.stdout is not None and not agent.reader.is_alive():
                agent.process.stdout.close()


def shepherded(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run `argv` through a launcher started from this process; (status, report, output)."""

    async def run() -> tuple[int, str]:
        async with trio.open_nursery() as nursery:
            launcher = Launcher(nursery)
            try:
                child, report = await launcher.start(argv, env, output)
                assert child is not None, report
                with trio.fail_after(30):
                    return await child.wait(), report
            finally:
                launcher.close()

    with tempfile.TemporaryFile() as output:
        code, report = trio.run(run)
        output.seek(0)
        return code, report, output.read().decode()


def direct(argv: list[str], env: dict[str, str]) -> str:
    """What `argv` prints when the agent starts it itself, as it did before the shepherd."""
    return subprocess.run(
        argv, env=env, capture_output=True, check=True, start_new_session=True, timeout=30
    ).stdout.decode()


# --------------------------------------------------------------------------- the agent dies


def test_the_frame_and_its_grandchild_die_with_the_agent(frames: Frames) -> None:
    agent, group, report = frames.agent(frames.argv())
    assert report == ""
    frame, grandchild = frames.pid("frame"), frames.pid("grandchild")
    assert frames.alive(frame)
    assert frames.alive(grandchild)
    assert os.getpgid(frame) == os.getpgid(grandchild) == group  # the shepherd leads it

    agent.kill()  # SIGKILL of the agent alone, as a crash or the OOM killer does

    wait_for(
        lambda: not frames.alive(frame) and not frames.alive(grandchild),
        "the frame and its grandchild to die with their agent",
        timeout=5.0,
    )
    assert not pid_alive(group, "shepherd")


def test_a_stopped_frame_dies_with_the_agent_too(frames: Frames) -> None:
    agent, group, _ = frames.agent(frames.argv())
    frame = frames.pid("frame")
    os.killpg(group, signal.SIGSTOP)  # a suspended frame: the shepherd is stopped too
    wait_for(lambda: process_state(frame) == "T", "the frame to be stopped")
    wait_for(lambda: process_state(group) == "T", "the shepherd to be stopped")

    agent.kill()

    wait_for(
        lambda: not frames.alive(frame), "the stopped frame to die with its agent", timeout=5.0
    )


def test_the_forking_thread_ending_or_a_resume_does_not_kill_the_frame(frames: Frames) -> None:
    # The agent's thread that started the shepherd has ended (its parent-death signal
    # fired then); a resume sends the same signal. Neither is the agent's death.
    agent, started = frames.agent_started(frames.argv())
    group, launcher = int(started["shepherd"]), int(started["launcher"])
    frame = frames.pid("frame")
    os.killpg(group, signal.SIGSTOP)
    wait_for(lambda: process_state(frame) == "T", "the frame to be stopped")
    os.killpg(group, signal.SIGCONT)
    wait_for(lambda: process_state(frame) in {"S", "R"}, "the frame to run again")
    os.kill(launcher, signal.SIGCONT)  # what the end of the thread that started it sends

    frames.release.touch()
    assert frames.status(agent) == 0  # it ran to its end: nothing killed it


def test_the_frame_dies_with_its_launcher_and_the_agent_hears_it(frames: Frames) -> None:
    agent, started = frames.agent_started(frames.argv())
    launcher = int(started["launcher"])
    frame, grandchild = frames.pid("frame"), frames.pid("grandchild")
    os.kill(launcher, signal.SIGKILL)  # the launcher alone

    wait_for(
        lambda: not frames.alive(frame) and not frames.alive(grandchild),
        "the frame and its grandchild to die with their launcher",
        timeout=5.0,
    )
    assert frames.status(agent) == -signal.SIGKILL  # reported lost, not left waiting


async def test_a_dead_launcher_s_frames_are_lost_and_the_next_frame_gets_a_new_one(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        launcher = Launcher(nursery)
        try:
            with (tmp_path / "log").open("wb") as output:
                child, report = await launcher.start(["sleep", "30"], dict(os.environ), output)
                assert child is not None
                assert report == ""
                first = launcher.pid
                assert first is not None
                os.kill(first, signal.SIGKILL)
                with trio.fail_after(10):
                    assert await child.wait() == -signal.SIGKILL
                assert child.lost.startswith(f"lost: the frame launcher {first} ended")

                child, report = await launcher.start(["true"], dict(os.environ), output)
                assert child is not None
                with trio.fail_after(10):
                    assert (await child.wait(), report) == (0, "")
                assert launcher.pid not in (None, first)
        finally:
            launcher.close()


def test_a_sigterm_to_the_group_leaves_the_command_its_grace(frames: Frames) -> None:
    agent, group, _ = frames.agent(frames.argv("trap"))
    frames.pid("frame")
    os.killpg(group, signal.SIGTERM)  # the agent's kill: the shepherd must not end first
    assert frames.status(agent) == 3  # the command's own answer to SIGTERM
    assert (frames.root / "term").exists()


# --------------------------------------------------------------------------- pass-through


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("pass", 0),
        ("raise SystemExit(7)", 7),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", -signal.SIGKILL),
        ("import os, signal; os.kill(os.getpid(), signal.SIGUSR1)", -signal.SIGUSR1),
    ],
    ids=["exit-0", "exit-7", "sigterm", "sigkill", "sigusr1"],
)
def test_the_command_exit_status_is_the_shepherd_s(script: str, status: int) -> None:
    code, report, output = shepherded([sys.executable, "-c", script], dict(os.environ))
    assert (code, report, output) == (status, "", "")


def test_a_command_that_cannot_start_is_reported_with_why(tmp_path: Path) -> None:
    not_executable = tmp_path / "render.sh"
    not_executable.write_text("#!/bin/sh\n")
    env = dict(os.environ)
    assert shepherded(["no-such-renderer-xyz"], env) == (
        127,
        "could not start 'no-such-renderer-xyz': No such file or directory",
        "",
    )
    assert shepherded([str(not_executable)], env) == (
        126,
        f"could not start {str(not_executable)!r}: Permission denied",
        "",
    )


@pytest.mark.parametrize(
    "locale",
    [{}, {"LC_CTYPE": "C"}, {"LC_CTYPE": "C.UTF-8", "LANG": "C"}],
    ids=["no-lc-ctype", "lc-ctype-c", "lang-c"],
)
def test_the_command_sees_the_environment_the_agent_gave(locale: dict[str, str]) -> None:
    # Python coerces a C locale by setting LC_CTYPE in its own environment; the command
    # must see the frame's environment, not the shepherd's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env.update(locale, FARMD_FRAME="12", ODD="caf\u00e9 \u2603")
    argv = [
        sys.executable,
        "-c",
        "import sys; sys.stdout.buffer.write(open('/proc/self/environ', 'rb').read())",
    ]
    code, report, output = shepherded(argv, env)
    assert (code, report) == (0, "")
    assert output == direct(argv, env)
    assert dict(item.split("=", 1) for item in output.split("\0") if item) == env


def test_the_command_gets_the_signal_dispositions_and_descriptors_it_had() -> None:
    # the shepherd catches signals and holds the report pipe; the command inherits neither
    argv = ["sh", "-c", "grep -E '^Sig(Blk|Ign|Cgt)' /proc/self/status; ls /proc/self/fd"]
    env = dict(os.environ)
    code, report, output = shepherded(argv, env)
    assert (code, report) == (0, "")
    assert output == direct(argv, env)


def process_state(pid: int) -> str:
    """The state letter of `pid` in /proc (`T` stopped, `S` sleeping...); "" once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return ""


def test_the_launcher_imports_nothing_that_slows_each_fork() -> None:
    # `threading` runs Python in every forked child (its at-fork hook: about 0.5 ms of a
    # shepherd's CPU); a module the launcher lacks is imported anew by each shepherd that
    # needs it (`os.get_exec_path` imports `warnings`: about 1 ms a shepherd)
    probe = (
        "import sys; sys.path.append(sys.argv[1]); import shepherd; "
        "print(sorted({'threading', 'warnings', 'subprocess'} & set(sys.modules)))"
    )
    here = str(Path(shepherd.__file__).parent)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, here],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == "[]"
