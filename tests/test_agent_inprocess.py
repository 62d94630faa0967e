"""In-process: a real `Agent` connected to a real `Supervisor`, both in the test's trio run.

The agent reaches the supervisor over an in-memory stream (its `connect` seam) and runs
real frames under its shepherd, so these tests keep the real clock: a child process is
something a MockClock would jump past. The frames are `sh -c` one-liners.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from farmd.agent import BACKOFF_FIRST, BACKOFF_MAX, STANDBY_BACKOFF_MAX, backoff
from farmd.errors import UserError
from farmd.protocol import GetJob, GetLog, Kill, ListWorkers, Submit, Wait
from tests.inprocess import (
    WAIT,
    Cuttable,
    Peer,
    agent_of,
    start_agent,
    start_supervisor,
    supervisor_config,
    until,
)


async def ended(admin: Peer, *job_ids: int) -> dict[str, str]:
    result = await admin.ask(Wait, job_ids=job_ids, timeout=WAIT)
    assert not result["pending"], result
    return dict(result["ended"])


async def frames(admin: Peer, job_id: int) -> dict[int, dict[str, Any]]:
    job = await admin.ask(GetJob, job_id=job_id)
    return {f["frame"]: f for f in job["frame_list"]}


async def test_frames_run_as_processes_with_their_exit_codes_and_logs(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))
    await start_agent(nursery, agent_of(farm, tmp_path, "w1", slots=2))
    admin = await farm.admin()
    ok = (await admin.ask(Submit, argv=("sh", "-c", "echo hello {frame}"), frames="1-2"))["id"]
    bad = (await admin.ask(Submit, argv=("sh", "-c", "echo oops >&2; exit 3")))["id"]
    missing = (await admin.ask(Submit, argv=("no-such-renderer-xyz",)))["id"]
    assert await ended(admin, ok, bad, missing) == {
        str(ok): "complete",
        str(bad): "failed",
        str(missing): "failed",
    }
    assert [
        (f["state"], f["worker"], f["exit_code"]) for f in (await frames(admin, ok)).values()
    ] == [("complete", "w1", 0)] * 2
    assert (await frames(admin, bad))[1]["exit_code"] == 3
    assert (await frames(admin, missing))[1]["exit_code"] == 127
    log = await admin.ask(GetLog, job_id=ok, frame=2)
    assert (log["worker"], log["attempt"], log["text"]) == ("w1", 1, "hello 2\n")
    assert (await admin.ask(GetLog, job_id=bad, frame=1))["text"] == "oops\n"
    assert (await admin.ask(GetLog, job_id=missing, frame=1))["text"] == (
        "farmd: could not start 'no-such-renderer-xyz': No such file or directory\n"
    )


async def test_a_killed_frame_is_stopped_and_the_agent_forgets_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))
    agent = await start_agent(nursery, agent_of(farm, tmp_path, "w1"))
    admin = await farm.admin()
    pid_file = tmp_path / "frame.pid"
    job_id = (await admin.ask(Submit, argv=("sh", "-c", f"echo $$ > {pid_file}; exec sleep 60")))[
        "id"
    ]
    pid = int(await until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the pid"))
    assert alive(pid)
    assert await admin.ask(Kill, job_ids=(job_id,)) == [job_id]
    assert await ended(admin, job_id) == {str(job_id): "killed"}
    await until(lambda: not agent.running, "the agent to forget the killed frame")
    assert not alive(pid)
    (worker,) = await admin.ask(ListWorkers)
    assert (worker["name"], worker["running"]) == ("w1", [])


async def test_a_frame_whose_launcher_dies_is_reported_lost_and_the_next_one_runs(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))
    agent = await start_agent(nursery, agent_of(farm, tmp_path, "w1"))
    admin = await farm.admin()
    pid_file = tmp_path / "frame.pid"
    job_id = (await admin.ask(Submit, argv=("sh", "-c", f"echo $$ > {pid_file}; exec sleep 60")))[
        "id"
    ]
    pid = int(await until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the pid"))
    launcher = agent.launcher_pid
    assert launcher is not None
    os.kill(launcher, signal.SIGKILL)  # the launcher alone: its shepherd kills the frame

    assert await ended(admin, job_id) == {str(job_id): "failed"}
    # SIGKILL has been sent (by its shepherd and by the agent); the death itself is the
    # kernel's, and comes a moment later on a busy machine
    await until(lambda: not alive(pid), "the frame to die")
    assert (await frames(admin, job_id))[1]["exit_code"] == -signal.SIGKILL
    text = (await admin.ask(GetLog, job_id=job_id, frame=1))["text"]
    assert text.startswith(f"farmd: lost: the frame launcher {launcher} ended"), text

    again = (await admin.ask(Submit, argv=("sh", "-c", "echo again")))["id"]
    assert await ended(admin, again) == {str(again): "complete"}
    assert agent.launcher_pid not in (None, launcher)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_refused_agent_stops_with_the_supervisors_reason(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))
    await start_agent(nursery, agent_of(farm, tmp_path, "x"))
    second = agent_of(farm, tmp_path, "x")
    reason = (
        "the supervisor refused this worker: worker name 'x' is in use by x (the default "
        "name is the host name: give each agent on a host its own --name)"
    )
    # it ends on its own, with the reason (the CLI prints it: tests/test_connections_e2e.py)
    refusal = pytest.RaisesExc(UserError, match=f"^{re.escape(reason)}$")
    with trio.fail_after(WAIT), pytest.RaisesGroup(refusal):
        await second.run()
    admin = await farm.admin()
    assert [w["name"] for w in await admin.ask(ListWorkers)] == ["x"]


async def test_an_agent_cut_off_without_a_word_comes_back_over_its_ghost_session(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The agent's connection is lost while the supervisor still holds its session open
    (no EOF, no reset: a network failure). The agent reconnects at once; the supervisor
    takes the new session as the same agent (its instance) and drops the ghost."""
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))
    streams: list[Cuttable] = []

    async def connect() -> trio.abc.Stream:
        streams.append(Cuttable(farm.open_stream("ghosted")))
        return streams[-1]

    agent = await start_agent(nursery, agent_of(farm, tmp_path, "ghosted", connect))
    admin = await farm.admin()
    (before,) = await admin.ask(ListWorkers)
    registered = agent.registered
    streams[-1].cut()
    with trio.fail_after(WAIT):
        await until(lambda: agent.registered is not registered, "a new session")
        await agent.registered.wait()
    assert len(streams) == 2
    (after,) = await admin.ask(ListWorkers)
    assert after["name"] == "ghosted"
    assert after["connected_at"] > before["connected_at"]
    job_id = (await admin.ask(Submit, argv=("true",)))["id"]
    assert await ended(admin, job_id) == {str(job_id): "complete"}
    assert (await frames(admin, job_id))[1]["worker"] == "ghosted"


def test_a_failover_in_progress_keeps_the_reconnect_pace_within_a_second() -> None:
    """After passes where no supervisor answers, the pause doubles to BACKOFF_MAX; once a
    standby answers (a takeover is under way), it comes down to STANDBY_BACKOFF_MAX and
    stays there, so the worker is back soon after the new active supervisor starts."""
    pauses, delay = [], BACKOFF_FIRST
    for met_standby in [False] * 6 + [True] * 3 + [False] * 2:
        pause, delay = backoff(delay, met_standby=met_standby)
        pauses.append(pause)
    assert pauses == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 1.0, 1.0, 1.0, 1.0, 2.0]
    assert (STANDBY_BACKOFF_MAX, BACKOFF_MAX) == (1.0, 5.0)
