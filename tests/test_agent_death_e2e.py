"""End-to-end: a frame never runs twice at once when its worker agent dies.

`kill -9` of the agent process alone (a crash, the OOM killer) used to leave its frames
running as orphans, while the supervisor, having lost the worker, handed them out again:
two attempts of one frame ran at the same time. Each frame now runs under a shepherd
(farmd/shepherd.py) that kills the frame's process group when the agent process dies.
These tests kill a real `farmd worker` by its pid and look at the frames' real processes
(and a grandchild each frame starts) through /proc; a frame surviving a *supervisor*
restart is tests/test_durability_e2e.py's.
"""

from __future__ import annotations

import re
import shlex
import signal
import sys
from pathlib import Path

import pytest

from tests.e2e_support import Farm, lines, wait_for

pytestmark = pytest.mark.e2e

DEATH_TIMEOUT = 5.0  # seconds for a dead agent's frames to be gone (it takes milliseconds)


def family(farm: Farm, gate: str) -> list[str]:
    """A frame that starts a grandchild (both write pid files: the grandchild's key is
    `gc-` + the frame's), appends `start FRAME ATTEMPT` to the trace, waits for
    `farm.release(gate)`, then appends `end FRAME ATTEMPT`."""
    python, script = shlex.quote(sys.executable), shlex.quote(str(farm.frame_script))
    pids, trace = shlex.quote(str(farm.pids)), shlex.quote(str(farm.root / "trace.txt"))
    release = shlex.quote(str(farm.release_path(gate)))
    step = f"{python} {script} --pid-dir {pids}"
    return [
        "sh",
        "-c",
        f"FARMD_WORKER=gc-$FARMD_WORKER {step} --block {release} & "
        f'exec {step} --append {trace} "start {{frame}} $FARMD_ATTEMPT" --block {release} '
        f'--append {trace} "end {{frame}} $FARMD_ATTEMPT"',
    ]


def processes(farm: Farm, keys: list[str]) -> dict[str, int]:
    """The pids of the frame attempts (and grandchildren) `keys`, once all have started."""
    found = wait_for(
        lambda: (pids := farm.frame_pids()).keys() >= set(keys) and pids,
        f"{keys} to write their pids",
    )
    return {key: found[key] for key in keys}


def process_state(pid: int) -> str:
    """The state letter of `pid` in /proc (`T` stopped, `S` sleeping...); "" once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return ""


def test_a_killed_agent_takes_its_frames_with_it_and_each_frame_runs_once_at_a_time(
    farm: Farm,
) -> None:
    agent = farm.worker("w1", slots=2)
    job_id = farm.submit(family(farm, "go"), frames="1-2")
    first = processes(farm, [f"{who}w1-{job_id}-{n}-1" for n in (1, 2) for who in ("", "gc-")])
    assert all(farm.frame_alive(pid) for pid in first.values())

    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL  # the agent alone, by its pid

    wait_for(
        lambda: not any(farm.frame_alive(pid) for pid in first.values()),
        "every frame and grandchild of the killed agent to be gone",
        timeout=DEATH_TIMEOUT,
    )

    def requeued() -> bool:
        frames = farm.frames(job_id).values()
        return "w1" not in farm.worker_names() and all(f["state"] == "pending" for f in frames)

    wait_for(requeued, "the supervisor to drop w1 and requeue both frames")
    farm.worker("w1", slots=2, label="w1-again")  # the agent, restarted on its host
    second = processes(farm, [f"w1-{job_id}-{n}-2" for n in (1, 2)])
    assert all(farm.frame_alive(pid) for pid in second.values())
    assert not any(farm.frame_alive(pid) for pid in first.values())

    farm.release("go")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert [(f["state"], f["attempts"]) for f in farm.frames(job_id).values()] == [
        ("complete", 2),
        ("complete", 2),
    ]
    # Each attempt started once, and the first ones never went on to their end.
    trace = lines(farm.root / "trace.txt")
    assert sorted(trace) == [
        "end 1 2",
        "end 2 2",
        "start 1 1",
        "start 1 2",
        "start 2 1",
        "start 2 2",
    ]
    for frame in (1, 2):
        assert trace.index(f"start {frame} 1") < trace.index(f"start {frame} 2")


def test_a_suspended_frame_dies_with_its_agent(farm: Farm) -> None:
    agent = farm.worker("w1")
    job_id = farm.submit(family(farm, "never"))
    pids = processes(farm, [f"w1-{job_id}-1-1", f"gc-w1-{job_id}-1-1"])
    farm.cli_ok("suspend", str(job_id))
    for key, pid in pids.items():
        wait_for(lambda pid=pid: process_state(pid) == "T", f"{key} to be stopped")

    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL

    wait_for(
        lambda: not any(farm.frame_alive(pid) for pid in pids.values()),
        "the stopped frame and its grandchild to be gone",
        timeout=DEATH_TIMEOUT,
    )


def test_statuses_through_the_shepherd_a_command_not_found_and_a_killed_frame(
    farm: Farm,
) -> None:
    agent = farm.worker("w1")
    missing = farm.submit(["no-such-renderer-xyz", "{frame}"])
    assert farm.wait_jobs([missing]) == {str(missing): "failed"}
    assert farm.frames(missing)[1]["exit_code"] == 127
    assert farm.cli_ok("logs", f"{missing}:1") == (
        "farmd: could not start 'no-such-renderer-xyz': No such file or directory\n"
    )

    # `farmd kill`: SIGTERM to the group, which the shepherd leaves to the command: the
    # agent reports the command's own death by SIGTERM, -15 (the supervisor keeps no exit
    # code for a killed frame).
    killed = farm.submit(family(farm, "never"))
    pid = processes(farm, [f"w1-{killed}-1-1"])[f"w1-{killed}-1-1"]
    farm.cli_ok("kill", str(killed))
    assert farm.wait_jobs([killed]) == {str(killed): "killed"}
    wait_for(lambda: not farm.frame_alive(pid), "the killed frame's process to end")
    assert farm.frames(killed)[1]["exit_code"] is None
    finished = wait_for(
        lambda: re.findall(rf"'frame finished' job={killed} .*", agent.stderr()),
        "the agent to log the killed frame's end",
    )
    assert "exit_code=-15" in finished[0], finished
    assert "killed=true" in finished[0], finished
