"""In-process: farmd's blocking `Client` against a real `Supervisor` in the test's trio run.

The supervisor listens on 127.0.0.1 (port 0); each test's client calls run in a worker
thread (`trio.to_thread.run_sync`), as a pipeline's Python would call them, while the
supervisor, and an in-process agent where frames must run, serve in the trio loop. Real
sockets and real processes: the real clock.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from farmd.client import Client
from farmd.errors import FarmdError, ForbiddenError, UnknownJobError
from tests.inprocess import (
    WAIT,
    Farm,
    agent_of,
    start_agent,
    start_supervisor,
    supervisor_config,
    until,
)


def client_of(farm: Farm, token: str | None = None) -> Client:
    return Client(farm.address, token=token or farm.token, timeout=WAIT)


async def in_thread(farm: Farm, script: Any, token: str | None = None) -> Any:
    """Run `script(client)` in a worker thread with a client of `farm`; closes it."""

    def run() -> Any:
        with client_of(farm, token) as client:
            return script(client)

    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(run)


async def test_the_client_submits_waits_and_reads_from_synchronous_code(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path))
    await start_agent(nursery, agent_of(farm, tmp_path, "w", cluster="/pipeline"))

    def script(client: Client) -> None:
        job_id = client.submit(
            ["sh", "-c", "echo hello {frame}"],
            name="from-python",
            cluster="/pipeline",
            priority=10,
            frames="1-3",
        )
        assert isinstance(job_id, int)
        result = client.wait([job_id], timeout=WAIT)
        assert result == {"ended": {str(job_id): "complete"}, "pending": [], "stuck": {}}
        job = client.job(job_id)
        assert (job["name"], job["cluster"], job["priority"], job["state"]) == (
            "from-python",
            "/pipeline",
            10,
            "complete",
        )
        assert [(f["frame"], f["state"], f["worker"]) for f in job["frame_list"]] == [
            (n, "complete", "w") for n in (1, 2, 3)
        ]
        assert client.logs(job_id, 2)["text"] == "hello 2\n"
        with pytest.raises(UnknownJobError, match="job 999 does not exist"):
            client.job(999)
        # a refusal leaves the connection usable
        assert [j["id"] for j in client.jobs()["jobs"]] == [job_id]
        assert client.wait([job_id], timeout=0) == result

    await in_thread(farm, script)


async def test_an_idle_closed_session_is_replaced_before_the_next_request(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor closes a session idle for `idle_timeout`; the client sees it closed
    before it sends anything on it, and opens a new one: each next call just works, a
    control included. (A control that crossed the idle close on the wire was never read,
    the `idle` error says so, and it is sent again: this used to fail one run in five.)"""
    caplog.set_level(logging.INFO, logger="farmd.supervisor")
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, idle_timeout=0.2))
    client = client_of(farm)
    try:
        job_id = await trio.to_thread.run_sync(client.submit, ["true"])
        for _ in range(2):
            before = caplog.messages.count("session idle")
            await until(
                lambda before=before: caplog.messages.count("session idle") > before,
                "the client's session to be closed as idle",
            )
            assert [j["id"] for j in (await trio.to_thread.run_sync(client.jobs))["jobs"]] == [
                job_id
            ]
        await until(lambda: caplog.messages.count("session idle") > 2, "one more idle close")
        assert await trio.to_thread.run_sync(client.kill, [job_id]) == [job_id]
    finally:
        client.close()
    assert (await in_thread(farm, lambda c: c.job(job_id)))["state"] == "killed"


async def test_tokens_decide_what_a_client_may_do(nursery: trio.Nursery, tmp_path: Path) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))

    def as_user(client: Client) -> int:
        job_id = client.submit(["true"], name="artist")
        assert [j["name"] for j in client.jobs()["jobs"]] == ["artist"]
        with pytest.raises(
            ForbiddenError, match="a user token may only submit jobs and read the queue, not"
        ):
            client.kill([job_id])
        return job_id

    job_id = await in_thread(farm, as_user, farm.user_token)
    assert await in_thread(farm, lambda c: c.kill([job_id])) == [job_id]

    def as_stranger(client: Client) -> None:
        raise AssertionError("a wrong token was let in")

    with pytest.raises(FarmdError, match="wrong token"):
        await in_thread(farm, as_stranger, "not-the-token")


async def test_the_client_follows_next_through_every_page_of_jobs_and_frames(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path, store="memory"))

    def script(client: Client) -> None:
        ids = client.submit_many([{"argv": ["true"], "cluster": "/nowhere"}] * 5)
        big = client.submit(["true"], frames="1-2500", cluster="/nowhere")
        assert [j["id"] for j in client.iter_jobs(limit=2)] == [*ids, big]
        assert [j["id"] for j in client.iter_jobs(limit=2, after=ids[3])] == [ids[4], big]
        page = client.jobs(limit=2)
        assert (page["next"], page["total"], page["counts"]["pending"]) == (ids[1], 6, 6)
        assert [f["frame"] for f in client.iter_frames(big, limit=1000)] == list(range(1, 2501))
        detail = client.job(big, frame_limit=3, frame_after=2497)
        assert [f["frame"] for f in detail["frame_list"]] == [2498, 2499, 2500]
        assert detail["frame_next"] is None

    await in_thread(farm, script)
