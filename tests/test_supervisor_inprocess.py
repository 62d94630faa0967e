"""In-process: a real `Supervisor` in the test's trio run, its timers on a MockClock.

Each test starts the supervisor with `nursery.start` (tests/inprocess.py) and speaks the
wire protocol to it over in-memory streams, as workers and admins; the clock is pytest-
trio's `autojump_clock` (`MockClock(autojump_threshold=0)`), so heartbeat timeouts, retry
delays, the orphan grace after a restart and the idle timeout pass in virtual time, and
each bound below (not before the timeout, and soon after it) is exact.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

from farmd.protocol import (
    PROTOCOL_VERSION,
    Error,
    GetJob,
    Heartbeat,
    Hello,
    Kill,
    ListWorkers,
    Register,
    Registered,
    Reply,
    Role,
    RunFrame,
    Submit,
    Wait,
    Welcome,
)
from tests.inprocess import FakeWorker, Farm, Peer, start_supervisor, supervisor_config

INTERVAL = 1.0  # heartbeat_interval of these farms
TIMEOUT = 5.0  # heartbeat_timeout


async def farm_of(nursery: trio.Nursery, tmp_path: Path, **settings: object) -> Farm:
    """A supervisor stamping events with the (mock) trio clock; an in-memory store
    unless `store="sqlite"`."""
    defaults: dict[str, object] = {
        "store": "memory",
        "heartbeat_interval": INTERVAL,
        "heartbeat_timeout": TIMEOUT,
    }
    config = supervisor_config(tmp_path, **{**defaults, **settings})
    return await start_supervisor(nursery, config, clock=trio.current_time)


async def frame_of(admin: Peer, job_id: int, number: int = 1) -> dict[str, object]:
    frames = (await admin.ask(GetJob, job_id=job_id))["frame_list"]
    (frame,) = [f for f in frames if f["frame"] == number]
    return dict(frame)


async def beating(nursery: trio.Nursery, worker: FakeWorker) -> FakeWorker:
    """`worker`, heartbeating every INTERVAL until the test ends."""
    await nursery.start(worker.beat, INTERVAL)
    return worker


# --------------------------------------------------------------------------- heartbeats


async def test_a_silent_worker_is_lost_and_its_frame_runs_elsewhere(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    farm = await farm_of(nursery, tmp_path)
    admin = await farm.admin()
    job_id = (await admin.ask(Submit, argv=("true",)))["id"]
    silent_since = trio.current_time()  # no later than its last word, the registration
    mute = await farm.worker("mute")
    run = await mute.expect(RunFrame)
    assert (run.job_id, run.frame, run.attempt) == (job_id, 1, 1)
    assert (await frame_of(admin, job_id))["worker"] == "mute"

    # "mute" now says nothing, not even heartbeats, and keeps its stream open
    await mute.expect_closed()
    assert TIMEOUT < trio.current_time() - silent_since <= TIMEOUT + INTERVAL
    assert await admin.ask(ListWorkers) == []
    frame = await frame_of(admin, job_id)
    assert (frame["state"], frame["attempts"]) == ("pending", 1)
    assert "heartbeat timeout" in caplog.messages

    w1 = await beating(nursery, await farm.worker("w1"))
    run = await w1.expect(RunFrame)
    assert (run.job_id, run.frame, run.attempt) == (job_id, 1, 2)
    await w1.finish(run)
    assert (await admin.ask(Wait, job_ids=(job_id,)))["ended"] == {str(job_id): "complete"}
    frame = await frame_of(admin, job_id)
    assert (frame["worker"], frame["attempts"], frame["state"]) == ("w1", 2, "complete")


async def test_a_heartbeating_worker_keeps_its_frame_past_many_timeouts(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = await farm_of(nursery, tmp_path)
    admin = await farm.admin()
    job_id = (await admin.ask(Submit, argv=("true",)))["id"]
    w1 = await beating(nursery, await farm.worker("w1"))
    run = await w1.expect(RunFrame)
    # four heartbeat timeouts pass; the supervisor's own heartbeats keep coming, one
    # every other interval (docs/protocol.md, 5.7: never two intervals without a word)
    heard = [trio.current_time()]  # the run_frame
    with trio.move_on_after(4 * TIMEOUT):
        while len(heard) < 1000:  # bounded; about 10 arrive in the time
            assert isinstance(await w1.receive(), Heartbeat)
            heard.append(trio.current_time())
    beats = len(heard) - 1
    assert 4 * TIMEOUT / (2 * INTERVAL) - 1 <= beats <= 4 * TIMEOUT / (2 * INTERVAL)
    assert max(b - a for a, b in itertools.pairwise(heard)) <= 2 * INTERVAL
    assert [w["name"] for w in await admin.ask(ListWorkers)] == ["w1"]
    assert (await frame_of(admin, job_id))["state"] == "running"
    await w1.finish(run)
    assert (await admin.ask(Wait, job_ids=(job_id,)))["ended"] == {str(job_id): "complete"}


async def test_a_namesake_replaces_a_worker_only_once_it_is_silent_past_its_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = await farm_of(nursery, tmp_path)
    first = FakeWorker(farm.open_stream("10.0.0.1:4000"))
    await first.register(farm.token, "node", instance="first")
    taken = trio.current_time()
    # `first` now says nothing, not even heartbeats, and keeps its stream open; another
    # agent of that name (another instance) tries once a (virtual) second
    refusals = []
    for _ in range(100):  # bounded: the timeout is a few tries away
        namesake = FakeWorker(farm.open_stream("10.0.0.2:4000"))
        answer = await namesake.try_register(farm.token, "node", instance="second")
        if isinstance(answer, Registered):
            break
        refusals.append(answer)
        await namesake.expect_closed()
        with trio.move_on_after(INTERVAL):
            await trio.sleep_forever()  # the pause between two tries, in virtual time
    else:
        raise AssertionError("the namesake was never accepted")
    assert len(refusals) >= TIMEOUT / INTERVAL - 1
    assert set(refusals) == {
        Error(
            code="name_in_use",
            message="worker name 'node' is in use by 10.0.0.1:4000 (the default name is the "
            "host name: give each agent on a host its own --name)",
        )
    }
    assert TIMEOUT < trio.current_time() - taken <= TIMEOUT + 2 * INTERVAL
    await first.expect_closed()  # the silent session is ended, not left open
    admin = await farm.admin()
    assert [w["name"] for w in await admin.ask(ListWorkers)] == ["node"]


# --------------------------------------------------------------------------- restart


async def test_after_a_restart_a_frame_waits_the_grace_period_for_its_worker(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Two frames run on two workers when the supervisor stops. Restarted on the same
    state dir, it gives each worker `lost_worker_grace` to come back: the one that does
    keeps its frame (attempt 1), the other's frame goes back to pending at the end of
    the grace period, not before, and runs elsewhere as attempt 2."""
    grace = 30.0
    first = await farm_of(nursery, tmp_path, store="sqlite", lost_worker_grace=grace)
    admin = await first.admin()
    job_id = (await admin.ask(Submit, argv=("true",), frames="1-2"))["id"]
    runs = {}
    for name in ("back", "gone"):
        worker = await beating(nursery, await first.worker(name))
        runs[name] = await worker.expect(RunFrame)
    assert {run.frame for run in runs.values()} == {1, 2}
    await first.stop()

    restarted = trio.current_time()
    second = await farm_of(nursery, tmp_path, store="sqlite", lost_worker_grace=grace)
    back = await beating(nursery, await second.worker("back", running=(_key(runs["back"]),)))
    admin = await second.admin()
    frame = await frame_of(admin, job_id, runs["gone"].frame)
    assert (frame["state"], frame["worker"]) == ("running", "gone")

    spare = await beating(nursery, await second.worker("spare"))
    run = await spare.expect(RunFrame)  # the frame of "gone", once the grace has passed
    assert grace <= trio.current_time() - restarted <= grace + INTERVAL
    assert (run.job_id, run.frame, run.attempt) == (job_id, runs["gone"].frame, 2)
    frame = await frame_of(admin, job_id, runs["back"].frame)
    assert (frame["state"], frame["worker"], frame["attempts"]) == ("running", "back", 1)

    await back.finish(runs["back"])
    await spare.finish(run)
    assert (await admin.ask(Wait, job_ids=(job_id,)))["ended"] == {str(job_id): "complete"}
    frames = (await admin.ask(GetJob, job_id=job_id))["frame_list"]
    assert sorted((f["frame"], f["worker"], f["attempts"]) for f in frames) == sorted(
        [(runs["back"].frame, "back", 1), (runs["gone"].frame, "spare", 2)]
    )


def _key(run: RunFrame) -> tuple[int, int, int]:
    return (run.job_id, run.frame, run.attempt)


# --------------------------------------------------------------------------- retries


async def test_a_failed_frame_is_retried_after_its_retry_delay(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = await farm_of(nursery, tmp_path)
    admin = await farm.admin()
    job_id = (await admin.ask(Submit, argv=("render",), retries=2, retry_delay=20.0))["id"]
    w1 = await beating(nursery, await farm.worker("w1"))
    run = await w1.expect(RunFrame)
    await w1.finish(run, exit_code=3)
    failed_at = trio.current_time()
    run = await w1.expect(RunFrame)  # heartbeats meanwhile; the same slot is free
    assert 20.0 <= trio.current_time() - failed_at <= 20.0 + INTERVAL
    assert (run.job_id, run.frame, run.attempt) == (job_id, 1, 2)
    await w1.finish(run)
    assert (await admin.ask(Wait, job_ids=(job_id,)))["ended"] == {str(job_id): "complete"}
    frame = await frame_of(admin, job_id)
    assert (frame["state"], frame["attempts"], frame["failures"]) == ("complete", 2, 1)


# --------------------------------------------------------------------------- sessions


async def test_an_idle_session_is_closed_but_a_waiting_one_only_after_its_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    idle_timeout = 30.0
    farm = await farm_of(nursery, tmp_path, idle_timeout=idle_timeout)
    setup = await farm.admin()
    job_id = (await setup.ask(Submit, argv=("true",)))["id"]  # no worker: it stays pending
    idle = await farm.admin()
    waiting = await farm.admin()
    opened = trio.current_time()
    await waiting.send(Wait(request_id=7, job_ids=(job_id,)))

    error = await idle.expect(Error)
    assert error == Error(
        code="idle",
        message="session closed after 30 s without a request (connect again to go on)",
    )
    assert idle_timeout <= trio.current_time() - opened <= idle_timeout + 1
    await idle.expect_closed()
    # more than an idle timeout passes: the session with a pending `wait` stays open
    with trio.move_on_after(1.5 * idle_timeout) as quiet:
        message = await waiting.receive()
        raise AssertionError(f"the waiting session got {message!r}")
    assert quiet.cancelled_caught
    killer = await farm.admin()
    assert await killer.ask(Kill, job_ids=(job_id,)) == [job_id]
    reply = await waiting.expect(Reply)
    assert reply.request_id == 7
    assert reply.result["ended"] == {str(job_id): "killed"}
    answered = trio.current_time()
    assert (await waiting.expect(Error)).code == "idle"
    assert idle_timeout <= trio.current_time() - answered <= idle_timeout + 1
    await waiting.expect_closed()


# --------------------------------------------------------------------------- versions


async def test_a_version_2_worker_joins_and_a_version_2_client_is_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Nothing a worker sends changed from protocol 2 to 3, so a supervisor can be
    upgraded before its agents; the memory that farmd's version-2 agent also sent as a
    property (a name version 3 reserves) is read from its resource alone."""
    farm = await farm_of(nursery, tmp_path)
    old = FakeWorker(farm.open_stream())
    await old.send(
        Hello(version=2, role=Role.WORKER.value, token=farm.token, name="old"),
        Register(
            name="old",
            cluster="/",
            slots=1,
            properties={"memory": 8 << 30, "os": "linux"},
            resources={"memory": 8 << 30},
        ),
    )
    assert (await old.expect(Welcome)).version == PROTOCOL_VERSION
    registered = await old.expect(Registered)
    assert registered.settings["properties"] == {"os": "linux"}
    assert registered.settings["resources"] == {"memory": 8 << 30}

    client = farm.connect()
    await client.send(Hello(version=2, role=Role.ADMIN.value, token=farm.token))
    assert await client.expect(Error) == Error(
        code="bad_version", message="protocol version 2 is not supported (this is 7)"
    )
    await client.expect_closed()
