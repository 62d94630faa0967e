"""Job-end notifications: where they go (the job's URL, else the farm's per cluster),
that they are retried with backoff and given up in time, and, end to end, that a real
supervisor POSTs the job's summary to a receiver on 127.0.0.1 when it ends."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from farmd.supervisor.notifier import RETRY_FOR, Notifier, url_for
from tests.e2e_support import LOCALHOST, Farm, describe, wait_for


def test_the_job_s_url_wins_else_the_deepest_cluster_s() -> None:
    defaults = {"/": "http://all/", "/show1": "http://show1/"}
    assert url_for("http://own/", "/show1/fx", defaults) == "http://own/"
    assert url_for("", "/show1/fx", defaults) == "http://show1/"
    assert url_for("", "/show2", defaults) == "http://all/"
    assert url_for("", "/show2", {}) == ""


async def test_a_failed_post_is_retried_with_backoff_then_given_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[float, dict[str, Any]]] = []
    answers = iter([500, 503, 200])
    taken = trio.Event()

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((trio.current_time(), json.loads(request.content)))
        status = next(answers, 500)
        if status == 200:
            taken.set()
        return httpx.Response(status)

    notifier = Notifier({"/": "http://hooks.example/h"}, lambda: "127.0.0.1:7531",
                        transport=httpx.MockTransport(handle))  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)
        start = trio.current_time()
        notifier.job_ended({"id": 7, "cluster": "/show1", "state": "complete"}, "")
        with trio.fail_after(60):
            await taken.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert notifier.sent == 1
        # three posts, 2 s then 4 s apart, the same message each time
        times = [round(t - start, 1) for t, _ in seen]
        assert times == [0.0, 2.0, 6.0]
        assert {body["id"] for _, body in seen} == {seen[0][1]["id"]}
        assert seen[0][1]["event"] == "job_ended"
        assert seen[0][1]["job"]["state"] == "complete"
        assert seen[0][1]["farm"] == "127.0.0.1:7531"
        # a receiver that never takes it: given up within RETRY_FOR
        seen.clear()
        notifier.job_ended({"id": 8, "cluster": "/", "state": "failed"}, "")
        await trio.sleep(RETRY_FOR + 1)
        count = len(seen)
        assert 5 <= count <= 30
        await trio.sleep(RETRY_FOR)
        assert len(seen) == count  # nothing more after giving up
        nursery.cancel_scope.cancel()


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOCALHOST}:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.e2e
def test_a_supervisor_posts_the_job_s_end_to_its_url(bare_farm: Farm) -> None:
    farm = bare_farm
    with receiver() as (base, bodies):
        config = farm.root / "farm.yaml"
        config.write_text(f"supervisor:\n  notify:\n    /show1: {base}/show1\n")
        farm.serve("--config", str(config))
        farm.worker("w1", "/show1")
        own = farm.submit_cli("--notify", f"{base}/mine", "--", "true")
        by_cluster = farm.submit_cli("--cluster", "/show1/fx", "--", "false")
        silent = farm.submit_cli("--cluster", "/show2", "--", "true")
        wait = farm.cli("wait", str(own), str(by_cluster), str(silent), "--timeout", "30")
        assert wait.returncode == 1, describe(wait)  # one failed
        got = wait_for(lambda: len(bodies) >= 2 and bodies, "two notifications")
        by_job = {body["job"]["id"]: body for body in got}
        assert set(by_job) == {own, by_cluster}  # /show2 has no URL: nobody told
        assert by_job[own]["job"]["state"] == "complete"
        assert by_job[by_cluster]["job"]["state"] == "failed"
        assert by_job[own]["farm"] == farm.address
    refused = farm.cli("submit", "--notify", "ftp://x", "--", "true")
    assert refused.returncode == 1
    assert refused.stderr == (
        "farmd: error: bad notify URL 'ftp://x': expected http:// or https:// and a host\n"
    )
