"""In-process: personal identities (issue 14). An admin adds users with a role and a
cluster scope; each user's token opens a session that acts as that person, and their
jobs carry them as owner; a refusal names the rule; a revocation or a change of role
takes effect on a session already open; users survive a restart. A real `Supervisor` in
the test's trio run on the SQLite store, the real clock (tokens are hashed in threads).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from farmd.protocol import (
    PROTOCOL_VERSION,
    AddUser,
    AddWorkerToken,
    Error,
    GetJob,
    Hello,
    Kill,
    ListAudit,
    ListClusters,
    ListJobs,
    ListUsers,
    ListWorkers,
    ListWorkerTokens,
    ModifyUser,
    Refused,
    Registered,
    RevokeUser,
    RevokeWorkerToken,
    Role,
    Submit,
)
from farmd.supervisor import people
from tests.inprocess import FakeWorker, Farm, Peer, start_supervisor, supervisor_config


async def session(farm: Farm, token: str) -> Peer:
    peer = farm.connect("person")
    await peer.hello(token)
    return peer


async def add(admin: Peer, name: str, role: str, clusters: str | None = None) -> str:
    added = await admin.ask(AddUser, name=name, role=role, clusters=clusters)
    assert added["name"] == name
    token: str = added["token"]
    assert token.startswith(f"{name}~")
    return token


async def test_a_person_acts_as_themselves_within_their_role_and_scope(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path))
    admin = await farm.admin()
    alice = await session(farm, await add(admin, "alice", "artist", "/show1/+"))
    bob = await session(farm, await add(admin, "bob", "wrangler", "/show1/+"))

    mine = await alice.ask(Submit, argv=("true",), cluster="/show1/a", job_type="never")
    assert mine["owner"] == "alice"
    theirs = await bob.ask(Submit, argv=("true",), cluster="/show1/a", job_type="never")
    out = await alice.request(Submit, argv=("true",), cluster="/show2/a")
    assert isinstance(out, Refused)
    assert out.code == "forbidden"
    assert out.message == (
        "alice (artist, /show1/+) may not submit jobs in /show2/a: it is confined to /show1/+"
    )
    refused = await alice.request(Kill, job_ids=[theirs["id"]])
    assert isinstance(refused, Refused)
    assert refused.message == (
        f"alice (artist, /show1/+) may not kill job {theirs['id']}: it belongs to bob"
    )
    assert await bob.ask(Kill, job_ids=[mine["id"]]) == [mine["id"]]  # a wrangler's is any

    users = await admin.ask(ListUsers)
    assert [(u["name"], u["role"], u["clusters"]) for u in users] == [
        ("alice", "artist", "/show1/+"),
        ("bob", "wrangler", "/show1/+"),
    ]
    assert all("token" not in u and "digest" not in u for u in users)
    refused = await alice.request(ListUsers)
    assert isinstance(refused, Refused)
    assert "(the artist role)" in refused.message


async def test_a_wrong_token_opens_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path))
    token = await add(await farm.admin(), "alice", "viewer")
    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), "mallory~" + token[6:]):
        peer = farm.connect("person")
        await peer.send(Hello(version=PROTOCOL_VERSION, role=Role.ADMIN.value, token=wrong))
        assert await peer.expect(Error) == Error(code="bad_token", message="wrong token")
        await peer.expect_closed()


async def test_a_revocation_or_a_new_role_takes_effect_on_an_open_session(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path))
    admin = await farm.admin()
    carol = await session(farm, await add(admin, "carol", "viewer"))
    refused = await carol.request(Submit, argv=("true",), job_type="never")
    assert isinstance(refused, Refused)
    await admin.ask(ModifyUser, name="carol", role="artist")
    assert (await carol.ask(Submit, argv=("true",), job_type="never"))["owner"] == "carol"

    await admin.ask(RevokeUser, name="carol")
    await carol.send(ListJobs(request_id=99))
    assert await carol.expect(Error) == Error(
        code="bad_token", message="the token of user 'carol' was revoked"
    )
    await carol.expect_closed()


async def test_users_survive_a_restart_and_a_new_token_replaces_the_old(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = supervisor_config(tmp_path)
    farm = await start_supervisor(nursery, config)
    admin = await farm.admin()
    old = await add(admin, "dave", "artist")
    await farm.stop()

    farm = await start_supervisor(nursery, config)
    dave = await session(farm, old)
    assert (await dave.ask(Submit, argv=("true",), job_type="never"))["owner"] == "dave"
    admin = await farm.admin()
    new = (await admin.ask(ModifyUser, name="dave", new_token=True))["token"]
    assert new != old
    await dave.send(ListJobs(request_id=99))  # the open session of the old token ends
    assert (await dave.expect(Error)).code == "bad_token"
    await session(farm, new)
    stale = farm.connect("person")
    await stale.send(Hello(version=PROTOCOL_VERSION, role=Role.ADMIN.value, token=old))
    assert (await stale.expect(Error)).code == "bad_token"


async def test_the_audit_log_records_changes_and_refusals_newest_first(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = supervisor_config(tmp_path)
    farm = await start_supervisor(nursery, config)
    admin = await farm.admin()
    alice = await session(farm, await add(admin, "alice", "artist"))
    mine = await alice.ask(Submit, argv=("true",), job_type="never", name="mine")
    theirs = await admin.ask(Submit, argv=("true",), job_type="never", name="theirs")
    refused = await alice.request(Kill, job_ids=[theirs["id"]])
    assert isinstance(refused, Refused)
    await alice.ask(ListJobs)  # a read: not logged
    await admin.ask(Kill, job_ids=[mine["id"]])

    log = (await admin.ask(ListAudit))["entries"]
    assert [(e["user"], e["request"], e["result"]) for e in log] == [
        ("", "kill", "ok"),
        ("alice", "kill", refused.message),
        ("", "submit", "ok"),
        ("alice", "submit", "ok"),
        ("", "add_user", "ok"),
    ]
    assert log[0]["who"] == "the farm token"
    assert log[1]["who"] == "alice (artist, the whole farm)"
    assert log[1]["peer"] == "person"
    assert "name=mine" in log[3]["target"]
    only_alice = (await admin.ask(ListAudit, user="alice"))["entries"]
    assert [e["request"] for e in only_alice] == ["kill", "submit"]
    about_mine = (await admin.ask(ListAudit, job=mine["id"]))["entries"]
    assert [(e["user"], e["request"]) for e in about_mine] == [("", "kill"), ("alice", "submit")]
    page = await admin.ask(ListAudit, limit=2)
    rest = await admin.ask(ListAudit, limit=10, before=page["next"])
    assert [e["id"] for e in page["entries"] + rest["entries"]] == [e["id"] for e in log]
    forbidden = await alice.request(ListAudit)
    assert isinstance(forbidden, Refused)

    await farm.stop()  # as a crash: what was acknowledged is there, each with its row
    db = sqlite3.connect(config.state_dir / "farmd.db")
    try:
        jobs = {row[0] for row in db.execute("SELECT id FROM jobs")}
        named = [row[0] for row in db.execute("SELECT job_ids FROM audit WHERE result = 'ok'")]
    finally:
        db.close()
    assert jobs == {mine["id"], theirs["id"]}
    assert {int(i) for text in named for i in text.strip(",").split(",") if i} == jobs


async def test_a_worker_token_registers_only_its_hosts_into_its_clusters(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path))
    admin = await farm.admin()
    made = await admin.ask(AddWorkerToken, hosts="render[01-02]", clusters="/show1/+")
    token = made["token"]
    assert token.startswith(f"worker.{made['id']}.")
    assert (made["hosts"], made["clusters"]) == ("render[01-02]", "/show1/+")

    good = FakeWorker(farm.open_stream("render01"))
    assert isinstance(await good.try_register(token, "render01", cluster="/show1/a"), Registered)
    who = f"worker token {made['id']} (render[01-02], /show1/+)"
    for name, cluster, why in (
        ("render03", "/show1/a", f"{who} may not register a worker named 'render03'"),
        ("render02", "/show2", f"{who} may not run a worker in /show2: it is confined to /show1/+"),
    ):
        bad = FakeWorker(farm.open_stream(name))
        refused = await bad.try_register(token, name, cluster=cluster)
        assert isinstance(refused, Error)
        assert refused.message.startswith(f"registration refused: {why}"), refused.message
    user = farm.connect("someone")
    await user.send(Hello(version=PROTOCOL_VERSION, role=Role.ADMIN.value, token=token))
    assert (await user.expect(Error)).code == "bad_token"  # it opens no admin session

    await admin.ask(RevokeWorkerToken, token_id=made["id"])
    assert await good.expect(Error) == Error(
        code="bad_token", message=f"worker token {made['id']} was revoked"
    )
    again = FakeWorker(farm.open_stream("render01"))
    await again.send(
        Hello(version=PROTOCOL_VERSION, role=Role.WORKER.value, token=token, name="render01")
    )
    assert await again.expect(Error) == Error(code="bad_token", message="wrong token")
    listed = await admin.ask(ListWorkerTokens)
    assert [(t["id"], t["revoked_at"] is not None) for t in listed] == [(made["id"], True)]


async def test_a_scoped_person_reads_only_what_is_in_their_scope(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await start_supervisor(nursery, supervisor_config(tmp_path))
    admin = await farm.admin()
    await farm.worker("w1", cluster="/show1/a", types=("other",))
    await farm.worker("w2", cluster="/show2/a", types=("other",))
    inside = await admin.ask(Submit, argv=("true",), cluster="/show1/a", job_type="never")
    outside = await admin.ask(Submit, argv=("true",), cluster="/show2/a", job_type="never")
    viewer = await session(farm, await add(admin, "vera", "viewer", "/show1/+"))

    page = await viewer.ask(ListJobs)
    assert [j["id"] for j in page["jobs"]] == [inside["id"]]
    assert page["total"] == 1
    assert sum(page["counts"].values()) == 1
    assert (await admin.ask(ListJobs))["total"] == 2
    refused = await viewer.request(GetJob, job_id=outside["id"])
    assert isinstance(refused, Refused)
    assert refused.message == (
        "vera (viewer, /show1/+) may not read the queue in /show2/a: it is confined to /show1/+"
    )
    assert (await viewer.ask(GetJob, job_id=inside["id"]))["id"] == inside["id"]
    assert [w["name"] for w in await viewer.ask(ListWorkers)] == ["w1"]
    paths = [node["path"] for node in await viewer.ask(ListClusters)]
    assert "/show2" not in paths
    assert "/show2/a" not in paths
    assert {"/", "/show1", "/show1/a"} <= set(paths)


async def test_without_the_shared_user_token_an_old_one_opens_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = supervisor_config(tmp_path)
    farm = await start_supervisor(nursery, config)
    shared = farm.user_token
    assert (await session(farm, shared)).stream is not None  # it works while allowed
    await farm.stop()

    farm = await start_supervisor(nursery, attrs.evolve(config, shared_user_token=False))
    peer = farm.connect("someone")
    await peer.send(Hello(version=PROTOCOL_VERSION, role=Role.ADMIN.value, token=shared))
    assert await peer.expect(Error) == Error(code="bad_token", message="wrong token")


async def test_a_host_guessing_tokens_is_refused_without_hashing_for_a_while(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the real clock (the hashing thread is not the one a MockClock's metronome watches)
    # and a short window
    monkeypatch.setattr(people, "WRONG_TOKEN_WINDOW", 2.0)
    farm = await start_supervisor(nursery, supervisor_config(tmp_path))
    token = await add(await farm.admin(), "alice", "viewer")
    wrong = token[:-4] + "AAAA" if not token.endswith("AAAA") else token[:-4] + "BBBB"

    async def hello(peer_name: str, presented: str) -> Error | None:
        peer = farm.connect(peer_name)
        await peer.send(Hello(version=PROTOCOL_VERSION, role=Role.ADMIN.value, token=presented))
        answer = await peer.receive()
        await peer.aclose()
        return answer if isinstance(answer, Error) else None

    for _ in range(people.MAX_WRONG_TOKENS):
        assert await hello("guesser", wrong) == Error(code="bad_token", message="wrong token")
    refused = await hello("guesser", token)  # even the right one, for now
    assert refused is not None
    assert refused.message.startswith("too many wrong tokens from guesser: try again in ")
    assert await hello("elsewhere", token) is None  # another host is not held back
    for _ in range(50):  # the window passes (2 s): the host is heard again
        if await hello("guesser", token) is None:
            break
        await trio.sleep(0.2)
    else:
        raise AssertionError("the host was still refused after 10 s")
