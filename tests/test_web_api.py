"""The HTTP API in process: httpx's ASGI transport against the app of a real in-process
`Supervisor` (tests/inprocess.py: memory streams), so every call goes through the
supervisor's own `perform` (the socket session's rules, audit, durability). The event
stream's test runs on a MockClock, its heartbeats in virtual time.

Event streams are read by calling the ASGI app directly (httpx's ASGI transport waits
for a response to end, and an event stream does not); each read is bounded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from openapi_spec_validator import validate
from starlette.routing import Route

from farmd.protocol import AddUser, FetchLog, LogData, RevokeUser, RunFrame, Submit
from farmd.supervisor.web_backend import SupervisorBackend
from farmd.web import create_app
from farmd.web.api import ENDPOINTS
from farmd.web.calls import MAX_BODY_BYTES
from tests.inprocess import WAIT, FakeWorker, Farm, start_supervisor, supervisor_config

PEER = ("192.0.2.7", 50123)


@pytest.fixture
async def farm(nursery: trio.Nursery, tmp_path: Path) -> Farm:
    config = supervisor_config(tmp_path, store="sqlite")  # the audit log is in the store
    return await start_supervisor(nursery, config, clock=trio.current_time)


def app_of(farm: Farm, heartbeat: float = 15.0) -> Any:
    return create_app(
        SupervisorBackend(farm.supervisor, farm.supervisor.notices), heartbeat=heartbeat
    )


@pytest.fixture
async def api(farm: Farm) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the farm token."""
    async with client(farm, farm.token) as c:
        yield c


def client(farm: Farm, token: str | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app_of(farm), client=PEER)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=transport, base_url="http://farm", headers=headers)


def error_of(response: httpx.Response, status: int) -> tuple[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    return error["code"], error["message"]


async def person(farm: Farm, name: str, role: str, clusters: str | None = None) -> str:
    admin = await farm.admin()
    return str((await admin.ask(AddUser, name=name, role=role, clusters=clusters))["token"])


async def submit(api: httpx.AsyncClient, **spec: Any) -> int:
    response = await api.post("/api/v1/jobs", json={"argv": ["true"], **spec})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


# --------------------------------------------------------------------------- who asks


async def test_no_token_or_a_wrong_one_is_401_in_json(farm: Farm) -> None:
    async with client(farm) as anonymous:
        code, message = error_of(await anonymous.get("/api/v1/jobs"), 401)
        assert (code, message) == (
            "unauthorized",
            "no token: send 'Authorization: Bearer TOKEN', or log in",
        )
    async with client(farm, "not-a-token") as wrong:
        assert error_of(await wrong.get("/api/v1/jobs"), 401) == ("bad_token", "wrong token")
    async with client(farm) as odd:
        answer = await odd.get("/api/v1/jobs", headers={"Authorization": "Basic abc"})
        assert error_of(answer, 401)[0] == "bad_token"


async def test_a_viewer_may_read_but_not_kill_and_the_refusal_names_the_rule(
    farm: Farm, api: httpx.AsyncClient
) -> None:
    job = await submit(api, name="shot")
    async with client(farm, await person(farm, "vic", "viewer")) as vic:
        assert [j["id"] for j in (await vic.get("/api/v1/jobs")).json()["jobs"]] == [job]
        me = (await vic.get("/api/v1/me")).json()
        assert (me["user"], me["role"], me["admin"]) == ("vic", "viewer", False)
        assert "kill" not in me["actions"]
        code, message = error_of(await vic.post(f"/api/v1/jobs/{job}/kill"), 403)
    assert code == "forbidden"
    assert message == (
        "vic (viewer, the whole farm) may only read the queue, not control jobs (the viewer role)"
    )
    # the refusal is audited, with the HTTP peer's address
    (entry,) = (await api.get("/api/v1/audit", params={"user": "vic"})).json()["entries"]
    assert (entry["request"], entry["result"]) == ("kill", message)
    assert entry["peer"] == f"{PEER[0]}:{PEER[1]}"


async def test_a_revoked_token_is_refused_at_its_next_request(
    farm: Farm, api: httpx.AsyncClient
) -> None:
    token = await person(farm, "ann", "artist")
    async with client(farm, token) as ann:
        assert (await ann.get("/api/v1/jobs")).status_code == 200
        admin = await farm.admin()
        await admin.ask(RevokeUser, name="ann")
        assert error_of(await ann.get("/api/v1/jobs"), 401)[0] == "bad_token"


async def test_the_cookie_needs_the_csrf_header_to_change_anything(
    farm: Farm, api: httpx.AsyncClient
) -> None:
    job = await submit(api)
    async with client(farm) as browser:
        # logging in is a change too: a cross-site form cannot do it
        code, _ = error_of(await browser.post("/api/v1/login", json={"token": farm.token}), 403)
        assert code == "csrf"
        headers = {"X-Farmd-Request": "1"}
        login = await browser.post("/api/v1/login", json={"token": farm.token}, headers=headers)
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].lower()
        assert "farmd_token=" in cookie
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "secure" not in cookie  # plain HTTP: a Secure cookie would never be sent
        assert (await browser.get(f"/api/v1/jobs/{job}")).status_code == 200
        code, message = error_of(await browser.post(f"/api/v1/jobs/{job}/kill"), 403)
        assert code == "csrf"
        assert "X-Farmd-Request: 1" in message
        assert (await api.get(f"/api/v1/jobs/{job}")).json()["state"] == "pending"
        killed = await browser.post(f"/api/v1/jobs/{job}/kill", headers=headers)
        assert killed.status_code == 200, killed.text
        logout = await browser.post("/api/v1/logout", headers=headers)
        assert logout.status_code == 200
        browser.cookies.clear()  # as the browser does on the Max-Age=0 answer
        assert error_of(await browser.get("/api/v1/jobs"), 401)[0] == "unauthorized"


# --------------------------------------------------------------------------- jobs


async def test_submit_kill_and_the_audit_entry(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        "/api/v1/jobs", json={"argv": ["echo", "{frame}"], "frames": "1-3", "name": "shot"}
    )
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert (job["name"], job["state"], job["frames"]["pending"]) == ("shot", "pending", 3)
    detail = (await api.get(f"/api/v1/jobs/{job['id']}", params={"frame_limit": 2})).json()
    assert [f["frame"] for f in detail["frame_list"]] == [1, 2]
    assert detail["frame_next"] == 2
    assert (await api.post(f"/api/v1/jobs/{job['id']}/kill")).json() == [job["id"]]
    assert (await api.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "killed"
    audit = (await api.get("/api/v1/audit", params={"job": job["id"]})).json()["entries"]
    assert [(entry["request"], entry["result"]) for entry in audit] == [
        ("kill", "ok"),
        ("submit", "ok"),
    ]


async def test_bad_input_is_400_naming_the_value(api: httpx.AsyncClient) -> None:
    code, message = error_of(await api.post("/api/v1/jobs", json={"argv": ["x"], "bogus": 1}), 400)
    assert code == "bad_request"
    assert message.startswith("unknown field 'bogus' for 'submit' (fields: argv, ")
    code, message = error_of(await api.post("/api/v1/jobs", json={"frames": "1"}), 400)
    assert message == "missing field 'argv' for 'submit'"
    code, message = error_of(
        await api.post("/api/v1/jobs", json={"argv": ["x"], "priority": 0}), 400
    )
    assert code == "bad_job"
    code, message = error_of(await api.post("/api/v1/jobs", content=b"[1]"), 400)
    assert message == "bad JSON body: expected an object, got list"
    code, message = error_of(await api.get("/api/v1/jobs", params={"limit": "0"}), 400)
    assert message == "bad 'limit': 0 is not in 1..10000"
    code, message = error_of(await api.get("/api/v1/jobs", params={"state": "done"}), 400)
    assert message.startswith("bad 'state': done (states: waiting, pending")
    assert (
        error_of(await api.get("/api/v1/jobs/x"), 400)[1] == "bad 'job_id': 'x' is not an integer"
    )
    assert error_of(await api.get("/api/v1/jobs/42"), 404) == (
        "unknown_job",
        "job 42 does not exist",
    )
    assert error_of(await api.get("/api/v1/nowhere"), 404)[0] == "not_found"
    assert error_of(await api.put("/api/v1/jobs"), 405)[0] == "method_not_allowed"
    too_big = b'{"argv": ["' + b"x" * MAX_BODY_BYTES + b'"]}'
    assert error_of(await api.post("/api/v1/jobs", content=too_big), 413)[0] == "too_large"


async def test_pages_and_filters(api: httpx.AsyncClient) -> None:
    ids = [
        await submit(api, name="alpha shot", cluster="/show1"),
        await submit(api, name="beta", cluster="/show1/comp"),
        await submit(api, name="Gamma shot", cluster="/show2"),
        await submit(api, name="delta", cluster="/show10"),
    ]
    await api.post(f"/api/v1/jobs/{ids[1]}/kill")
    first = (await api.get("/api/v1/jobs", params={"limit": 2})).json()
    assert ([j["id"] for j in first["jobs"]], first["next"], first["total"]) == (ids[:2], ids[1], 4)
    rest = (await api.get("/api/v1/jobs", params={"after": first["next"]})).json()
    assert ([j["id"] for j in rest["jobs"]], rest["next"]) == (ids[2:], None)

    async def listed(**params: Any) -> list[int]:
        page = (await api.get("/api/v1/jobs", params=params)).json()
        return [j["id"] for j in page["jobs"]]

    assert await listed(cluster="/show1") == ids[:2]  # the subtree, not /show10
    assert await listed(cluster="/show1", state="pending") == ids[:1]
    assert await listed(state="killed,pending") == ids
    assert await listed(q="SHOT") == [ids[0], ids[2]]
    assert await listed(owner="farm") == ids
    assert await listed(owner="bob") == []
    # filters page the filtered list
    page = (await api.get("/api/v1/jobs", params={"q": "shot", "limit": 1})).json()
    assert ([j["id"] for j in page["jobs"]], page["next"]) == ([ids[0]], ids[0])
    page = (await api.get("/api/v1/jobs", params={"q": "shot", "after": page["next"]})).json()
    assert ([j["id"] for j in page["jobs"]], page["next"], page["total"]) == ([ids[2]], None, 4)
    assert error_of(await api.get("/api/v1/jobs", params={"cluster": "show"}), 400)[0] == (
        "bad_cluster"
    )


async def test_controls_modify_remove_and_locks(farm: Farm, api: httpx.AsyncClient) -> None:
    job = await submit(api, frames="1-10", cluster="/a")
    blocked = await api.post("/api/v1/control", json={"action": "block", "targets": [f"{job}:1-3"]})
    assert blocked.json() == [f"{job}:1", f"{job}:2", f"{job}:3"]
    changed = await api.patch(f"/api/v1/jobs/{job}", json={"priority": 5})
    assert changed.json()["priority"] == 5
    code, message = error_of(await api.delete(f"/api/v1/jobs/{job}"), 400)
    assert (code, message) == ("bad_job", f"job {job} is pending: kill it before removing it")
    await api.post(f"/api/v1/jobs/{job}/kill")
    assert (await api.delete(f"/api/v1/jobs/{job}")).json() == [job]
    assert error_of(await api.get(f"/api/v1/jobs/{job}"), 404)[0] == "unknown_job"

    await farm.worker("w1", cluster="/a")
    assert (await api.post("/api/v1/workers/w1/lock", json={"mode": "drain"})).json() == []
    (worker,) = (await api.get("/api/v1/workers")).json()
    assert worker["locked"] in (True, "drain")
    assert (await api.post("/api/v1/workers/w1/unlock")).json() == "w1"
    assert error_of(await api.post("/api/v1/workers/nobody/unlock"), 404)[0] == "unknown_worker"
    assert [node["path"] for node in (await api.get("/api/v1/clusters")).json()] == ["/", "/a"]


async def test_explain_and_a_frame_log_from_its_worker(
    farm: Farm, api: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    worker = await farm.worker("w1")
    job = await submit(api, frames="1-2")
    run = await worker.expect(RunFrame)
    explained = (await api.get(f"/api/v1/jobs/{job}/explain", params={"worker": "w1"})).json()
    assert "w1" in json.dumps(explained)
    await worker.finish(run)

    async def serve_logs(w: FakeWorker) -> None:
        for _ in range(100):
            message = await w.receive()
            if message is None:
                return
            if isinstance(message, FetchLog):
                text = f"log of {message.job_id}:{message.frame}\n"
                await w.send(LogData(request_id=message.request_id, found=True, text=text))

    nursery.start_soon(serve_logs, worker)
    with trio.fail_after(WAIT):
        log = (await api.get(f"/api/v1/jobs/{job}/frames/{run.frame}/log")).json()
    assert (log["worker"], log["text"]) == ("w1", f"log of {job}:{run.frame}\n")


# --------------------------------------------------------------------------- the rest


async def test_metrics_and_the_openapi_document(api: httpx.AsyncClient) -> None:
    metrics = await api.get("/metrics", headers={"Authorization": ""})
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "farmd_jobs" in metrics.text
    document = (await api.get("/api/v1/openapi.json")).json()
    validate(document)
    app = app_of_routes(api)
    for route in app:
        if not route.path.startswith(("/api/", "/metrics")):
            continue  # the page's own files (`/`, `/static/...`) are not the API
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in document["paths"][route.path], (method, route.path)
    assert set(document["components"]["schemas"]["JobSpec"]["properties"]) >= {"argv", "frames"}


def app_of_routes(api: httpx.AsyncClient) -> list[Route]:
    transport = api._transport
    assert isinstance(transport, httpx.ASGITransport)
    return [r for r in transport.app.routes if isinstance(r, Route)]  # type: ignore[attr-defined]


def test_every_endpoint_is_routed_once() -> None:
    keys = [(e.method, e.path) for e in ENDPOINTS]
    assert len(keys) == len(set(keys))


async def read_events(app: Any, token: str, until: str) -> str:
    """Call the app's event stream as a server would, until `until` is in what it sent
    (bounded), then disconnect; what it sent."""
    sent = ""
    done = trio.Event()
    got = trio.Event()

    async def receive() -> dict[str, Any]:
        if not got.is_set():
            got.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message["type"] == "http.response.body":
            sent += message.get("body", b"").decode()
            if until in sent:
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
        "client": PEER,
        "server": ("farm", 80),
    }
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app, scope, receive, send)
            await done.wait()
            nursery.cancel_scope.cancel()
    return sent


async def test_a_submit_is_heard_on_the_event_stream_with_heartbeats(
    farm: Farm, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    app = app_of(farm, heartbeat=5.0)
    admin = await farm.admin()

    async def submit_soon() -> None:
        await trio.sleep(12.0)  # after two heartbeats
        await admin.ask(Submit, argv=("true",), name="heard")

    nursery.start_soon(submit_soon)
    sent = await read_events(app, farm.token, "event: jobs")
    assert sent.startswith("retry: 3000\n")
    assert sent.count(": heartbeat\n\n") == 2
    assert 'event: jobs\ndata: {"ids": [1]}\n\n' in sent
    assert farm.supervisor.notices.broadcaster.subscribers == 0  # given back at the end
