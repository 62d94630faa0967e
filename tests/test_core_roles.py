"""Roles scoped to cluster subtrees, in the core: every role × action × (own job or
another's) × (in scope or out), against one table of what a farm admin expects
(issue 14). Adding an action adds a row to `EXPECTED`; the rules themselves live in
`farmd.core.authority`, and this table is written apart from them, so the two must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from farmd.core import (
    ControlFrames,
    KillJobs,
    LockWorker,
    ModifyJob,
    Principal,
    RemoveJobs,
    Role,
    Scheduler,
    SubmitJob,
)
from farmd.core.authority import Action
from farmd.errors import ForbiddenError
from farmd.jobs import Control
from tests.test_core import joined

VIEWER, ARTIST, WRANGLER, ADMIN = Role.VIEWER, Role.ARTIST, Role.WRANGLER, Role.ADMIN
ANY, OWN = "any job in scope", "own jobs in scope"

# action -> the roles that may take it, and on which jobs. A role not named may not.
EXPECTED: dict[str, dict[Role, str]] = {
    "read": {VIEWER: ANY, ARTIST: ANY, WRANGLER: ANY, ADMIN: ANY},
    "submit": {ARTIST: ANY, WRANGLER: ANY, ADMIN: ANY},
    "kill": {ARTIST: OWN, WRANGLER: ANY, ADMIN: ANY},
    "block": {ARTIST: OWN, WRANGLER: ANY, ADMIN: ANY},
    "suspend": {ARTIST: OWN, WRANGLER: ANY, ADMIN: ANY},
    "remove": {ARTIST: OWN, WRANGLER: ANY, ADMIN: ANY},
    "modify": {ARTIST: OWN, WRANGLER: ANY, ADMIN: ANY},
    "move": {WRANGLER: ANY, ADMIN: ANY},
    "urgent priority": {WRANGLER: ANY, ADMIN: ANY},
    "lock": {WRANGLER: ANY, ADMIN: ANY},
    "reload": {ADMIN: ANY},
    "manage users": {ADMIN: ANY},
}
SCOPE = "/show1/+"
FLOOR = 100  # highest_user_priority


def farm(owner: str, cluster: str, *, ended: bool = False) -> Scheduler:
    """Job 1 of `owner` in `cluster` (pending: no worker may run it); with `ended`, killed."""
    core = Scheduler()
    core.handle(joined("w-in", cluster="/show1/x", types=("other",)))
    core.handle(joined("w-out", cluster="/show2/x", types=("other",)))
    author = Principal.personal(owner, ADMIN)
    core.handle(SubmitJob(argv=("true",), cluster=cluster, job_type="render", now=1.0, by=author))
    if ended:
        core.handle(KillJobs(job_ids=(1,), now=2.0))
    return core


def attempt(action: str, core: Scheduler, cluster: str, by: Principal) -> Any:
    acts: dict[str, Callable[[], Any]] = {
        "read": lambda: core.authorize(by, Action.READ),
        "submit": lambda: core.handle(
            SubmitJob(argv=("true",), cluster=cluster, priority=FLOOR, now=3.0, by=by)
        ),
        "kill": lambda: core.handle(KillJobs(job_ids=(1,), now=3.0, by=by)),
        "block": lambda: core.handle(
            ControlFrames(control=Control.BLOCK, targets=("1",), now=3.0, by=by)
        ),
        "suspend": lambda: core.handle(
            ControlFrames(control=Control.SUSPEND, targets=("1",), now=3.0, by=by)
        ),
        "remove": lambda: core.handle(RemoveJobs(job_ids=(1,), now=3.0, by=by)),
        "modify": lambda: core.handle(ModifyJob(job_id=1, priority=FLOOR + 1, now=3.0, by=by)),
        "move": lambda: core.handle(
            ModifyJob(job_id=1, cluster=cluster.replace("/a", "/b"), now=3.0, by=by)
        ),
        "urgent priority": lambda: core.handle(ModifyJob(job_id=1, priority=1, now=3.0, by=by)),
        "lock": lambda: core.handle(
            LockWorker(name="w-in" if cluster.startswith("/show1") else "w-out", now=3.0, by=by)
        ),
        "reload": lambda: core.authorize(by, Action.RELOAD),
        "manage users": lambda: core.authorize(by, Action.MANAGE_USERS),
    }
    return acts[action]()


CASES = [
    (action, role, own, inside)
    for action in EXPECTED
    for role in Role
    for own in (True, False)
    for inside in (True, False)
]


@pytest.mark.parametrize(
    ("action", "role", "own", "inside"),
    CASES,
    ids=[f"{a}-{r.value}-{'own' if o else 'other'}-{'in' if i else 'out'}" for a, r, o, i in CASES],
)
def test_each_role_may_do_what_the_table_says_and_nothing_else(
    action: str, role: Role, own: bool, inside: bool
) -> None:
    cluster = "/show1/a" if inside else "/show2/a"
    core = farm("alice" if own else "bob", cluster, ended=action == "remove")
    by = Principal.personal("alice", role, SCOPE, floor=FLOOR)
    may = EXPECTED[action].get(role)
    touches_jobs = action not in ("read", "reload", "manage users")
    allowed = may is not None and (not touches_jobs or inside) and (may == ANY or own)
    if allowed:
        attempt(action, core, cluster, by)
        return
    with pytest.raises(ForbiddenError) as refused:
        attempt(action, core, cluster, by)
    text = str(refused.value)
    assert f"alice ({role.value}, {SCOPE})" in text, text  # who, with role and scope
    reasons = {
        "role": f"(the {role.value} role)" in text or "more urgent than" in text,
        "scope": "it is confined to /show1/+" in text,
        "owner": "it belongs to bob" in text,
    }
    assert sum(reasons.values()) == 1, text  # one rule, named
    if may is not None:  # the role may: the job's place or owner refused it
        assert reasons["scope"] if touches_jobs and not inside else reasons["owner"], text


def test_a_refusal_names_the_person_the_role_the_scope_and_the_owner() -> None:
    core = farm("bob", "/show1/a")
    alice = Principal.personal("alice", ARTIST, SCOPE)
    with pytest.raises(ForbiddenError) as refused:
        core.handle(KillJobs(job_ids=(1,), now=3.0, by=alice))
    assert str(refused.value) == "alice (artist, /show1/+) may not kill job 1: it belongs to bob"


def test_a_job_records_its_submitter_and_a_frame_s_sub_jobs_its_owner() -> None:
    core = Scheduler()
    core.handle(joined("w1"))
    alice = Principal.personal("alice", ARTIST)
    core.handle(SubmitJob(argv=("true",), now=1.0, by=alice))
    core.handle(SubmitJob(argv=("true",), now=2.0, by=Principal.job_token(1)))
    core.handle(SubmitJob(argv=("true",), now=3.0))  # the farm token
    owners = [job["owner"] for job in core.jobs_page()["jobs"]]
    assert owners == ["alice", "alice", "farm"]
