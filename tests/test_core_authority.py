"""Who may do what is decided in the core: every event an outside party causes carries
its principal, and `Scheduler.handle` refuses (before anything changes) what the rules
of `farmd.core.authority` do not allow, naming the rule. A principal confined to a
cluster subtree (the seam for roles per show) acts only on jobs and workers there.
"""

from __future__ import annotations

import attrs
import pytest

from farmd.cluster import parse_restrictions
from farmd.core import (
    ADMIN,
    Action,
    Credential,
    FrameEnded,
    KillJobs,
    LockWorker,
    ModifyJob,
    Principal,
    RemoveJobs,
    Scheduler,
    SetResourceTotal,
    SubmitJob,
)
from farmd.core import vocabulary as vocabulary_module
from farmd.core.authority import RULES, refusal
from farmd.core.vocabulary import ACTION_OF
from farmd.errors import ForbiddenError
from tests.test_core import joined, submit

# A wrangler of /show1: the farm token's rights, confined to /show1 and below.
WRANGLER = Principal(credential=Credential.FARM_TOKEN, clusters=parse_restrictions("/show1/+"))


def test_the_rules_are_a_table_and_a_refusal_names_the_rule() -> None:
    assert RULES[Credential.FARM_TOKEN] == frozenset(Action)
    user = Principal.shared_user(highest_priority=10)
    assert refusal(user, Action.SUBMIT) is None
    assert refusal(user, Action.READ) is None
    assert refusal(user, Action.CONTROL) == (
        "a user token may only submit jobs and read the queue, not control jobs "
        "(the user token rule)"
    )
    assert refusal(Principal.job_token(3), Action.WORK) == (
        "a frame's job token may only submit jobs and read the queue, not run a worker "
        "(the job token rule)"
    )


def test_every_event_that_carries_a_principal_is_checked_at_the_door() -> None:
    carrying = {
        cls
        for cls in vars(vocabulary_module).values()
        if isinstance(cls, type) and attrs.has(cls) and "by" in attrs.fields_dict(cls)
    }
    assert carrying == set(ACTION_OF)


@pytest.mark.parametrize(
    ("event", "action"),
    [
        (KillJobs(job_ids=(1,), now=1.0), "control jobs"),
        (RemoveJobs(job_ids=(1,), now=1.0), "remove jobs"),
        (ModifyJob(job_id=1, priority=3, now=1.0), "modify jobs"),
        (LockWorker(name="w1", now=1.0), "lock workers"),
        (SetResourceTotal(name="license.x", total=2, now=1.0), "set resource totals"),
    ],
)
def test_a_user_is_refused_what_its_rule_does_not_allow_and_nothing_changes(
    event: object, action: str
) -> None:
    core = Scheduler(resources={"license.x": 1})
    core.handle(joined("w1"))
    core.handle(submit(frames="1-3"))
    before = core.job_view(1), core.workers_view(), core.resources_view()
    user = Principal.shared_user(highest_priority=10)
    with pytest.raises(ForbiddenError, match=f"a user token may only .*, not {action} "):
        core.handle(attrs.evolve(event, by=user))  # type: ignore[misc]
    assert (core.job_view(1), core.workers_view(), core.resources_view()) == before


def test_a_job_token_stops_working_once_its_job_has_ended() -> None:
    core = Scheduler()
    core.handle(submit(frames="1"))
    token = Principal.job_token(1, highest_priority=10)
    core.authorize(token, Action.READ)
    core.handle(SubmitJob(argv=("true",), now=1.0, by=token))  # a sub-job of job 1
    core.handle(KillJobs(job_ids=(1,), now=2.0))
    with pytest.raises(ForbiddenError, match="the job token of job 1 no longer works"):
        core.authorize(token, Action.READ)
    with pytest.raises(ForbiddenError, match="the job token of job 1 no longer works"):
        core.handle(SubmitJob(argv=("true",), now=3.0, by=token))
    assert sorted(view["id"] for view in core.jobs_page()["jobs"]) == [1, 2]


def test_a_principal_confined_to_a_subtree_acts_only_there() -> None:
    core = Scheduler()
    core.handle(joined("w1", "/show2"))
    inside = core.handle(SubmitJob(argv=("a",), cluster="/show1/fx", now=1.0, by=WRANGLER))
    outside = core.handle(submit(cluster="/show2", frames="1-2")).result
    with pytest.raises(ForbiddenError) as refused:
        core.handle(SubmitJob(argv=("b",), cluster="/show2", now=2.0, by=WRANGLER))
    assert str(refused.value) == (
        "the farm token may not submit jobs in /show2: it is confined to /show1/+"
    )
    for event in (
        KillJobs(job_ids=(outside,), now=3.0, by=WRANGLER),
        RemoveJobs(job_ids=(outside,), now=3.0, by=WRANGLER),
        ModifyJob(job_id=outside, priority=2, now=3.0, by=WRANGLER),
        # moving its own job out of its subtree is refused too
        ModifyJob(job_id=inside.result, cluster="/show2", now=3.0, by=WRANGLER),
        LockWorker(name="w1", now=3.0, by=WRANGLER),
    ):
        with pytest.raises(ForbiddenError, match="it is confined to /show1/"):
            core.handle(event)
    assert core.job_view(outside)["state"] == "pending"  # nothing changed
    assert core.job_view(outside)["priority"] != 2
    assert core.job_view(inside.result)["cluster"] == "/show1/fx"
    assert core.workers_view()[0]["locked"] in (None, "")
    # inside its subtree it has the farm token's rights
    core.handle(ModifyJob(job_id=inside.result, priority=3, now=4.0, by=WRANGLER))
    core.handle(KillJobs(job_ids=(inside.result,), now=4.0, by=WRANGLER))
    assert core.job_view(inside.result)["state"] == "killed"
    assert ADMIN.clusters is None


def test_a_control_that_reaches_sub_jobs_outside_the_subtree_is_refused_whole() -> None:
    core = Scheduler()
    parent = core.handle(SubmitJob(argv=("a",), cluster="/show1", now=1.0)).result
    core.handle(SubmitJob(argv=("b",), cluster="/show2", parent=parent, now=1.0))
    with pytest.raises(ForbiddenError, match="control jobs in /show2"):
        core.handle(KillJobs(job_ids=(parent,), now=2.0, by=WRANGLER))
    assert {view["state"] for view in core.jobs_page()["jobs"]} == {"pending"}


def test_a_worker_joins_and_reports_only_with_a_credential_that_may_run_one() -> None:
    core = Scheduler()
    user = Principal.shared_user(highest_priority=10)
    with pytest.raises(ForbiddenError, match="not run a worker \\(the user token rule\\)"):
        core.handle(attrs.evolve(joined("w1"), by=user))
    with pytest.raises(ForbiddenError, match="may not run a worker in /show2"):
        core.handle(attrs.evolve(joined("w1", "/show2"), by=WRANGLER))
    assert core.workers_view() == []
    core.handle(attrs.evolve(joined("w1", "/show1/fx"), by=WRANGLER))
    core.handle(submit(frames="1"))
    result = FrameEnded(worker="w1", job_id=1, frame=1, attempt=1, exit_code=0, now=2.0, by=user)
    with pytest.raises(ForbiddenError, match="not run a worker"):
        core.handle(result)
    assert core.job_view(1)["state"] == "running"
    core.handle(attrs.evolve(result, by=ADMIN))
    assert core.job_view(1)["state"] == "complete"
