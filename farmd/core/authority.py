"""Who may do what: the principal behind every request, and the rules that bind it.

Theory of operation
-------------------
Every event an outside party causes carries its `Principal` (`by`): which credential
opened the session (the farm token, the user token, a frame's job token) and, for the
credentials that have them, what it is confined to: the job a job token belongs to, the
most urgent priority it may set, and the cluster subtree it may act in (`clusters`, a
restriction expression such as `/show1/+`; None means the whole farm). The scheduler
decides, before it changes anything, whether the principal may take the event's
`Action`, and a refusal is one line that names the rule (`RULES`). The shell decides
nothing: it turns the token a session presented into a principal and passes it on.

The rules are data: `RULES` maps each credential to the actions it may take, and a
scope is an expression checked against the cluster of each job an event touches. A
role scoped to a cluster subtree (a show's wranglers own `/show1/+`) is therefore a
principal with `clusters` set and a row in `RULES`, not a new code path. The rules that
need the farm's state (a job token stops working once its job ends; its sub-jobs go
under its own job) live with the scheduler, which knows the jobs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from farmd.cluster import ClusterPath, Restrictions, parse_restrictions
from farmd.errors import ForbiddenError


class Credential(enum.Enum):
    """What opened a session."""

    FARM_TOKEN = "farm token"  # the root credential: everything
    USER_TOKEN = "user token"  # artists: submit and read
    JOB_TOKEN = "job token"  # a frame's FARMD_TOKEN: sub-jobs of its job, and read


class Action(enum.Enum):
    """What an event or request does, as the rules name it."""

    SUBMIT = "submit jobs"
    READ = "read the queue"
    CONTROL = "control jobs"  # kill, block, unblock, retry, suspend, resume
    REMOVE = "remove jobs"
    MODIFY = "modify jobs"
    LOCK = "lock workers"  # and unlock them
    SET_RESOURCE = "set resource totals"
    RELOAD = "reload the configuration"
    WORK = "run a worker"  # register, heartbeat, report results
    PRUNE = "prune history"


# What each credential may do, whole: anything else is refused, naming the rule.
RULES: dict[Credential, frozenset[Action]] = {
    Credential.FARM_TOKEN: frozenset(Action),
    Credential.USER_TOKEN: frozenset({Action.SUBMIT, Action.READ}),
    Credential.JOB_TOKEN: frozenset({Action.SUBMIT, Action.READ}),
}

_WHO = {
    Credential.FARM_TOKEN: "the farm token",
    Credential.USER_TOKEN: "a user token",
    Credential.JOB_TOKEN: "a frame's job token",
}


@attrs.frozen(kw_only=True)
class Principal:
    """Who asks: its credential; a job token's `job`; the most urgent priority it may
    set (`highest_priority`, 1 = any); the cluster subtree it may act in (None: all)."""

    credential: Credential
    job: int | None = None
    highest_priority: int = 1
    clusters: Restrictions | None = None

    @classmethod
    def user(cls, highest_priority: int = 1, clusters: str | None = None) -> Principal:
        scope = parse_restrictions(clusters) if clusters is not None else None
        return cls(
            credential=Credential.USER_TOKEN, highest_priority=highest_priority, clusters=scope
        )

    @classmethod
    def job_token(cls, job: int, highest_priority: int = 1) -> Principal:
        return cls(credential=Credential.JOB_TOKEN, job=job, highest_priority=highest_priority)

    @property
    def who(self) -> str:
        return _WHO[self.credential]

    @property
    def is_admin(self) -> bool:
        return self.credential is Credential.FARM_TOKEN


ADMIN = Principal(credential=Credential.FARM_TOKEN)


def refusal(principal: Principal, action: Action) -> str | None:
    """Why `principal` may not take `action` at all, or None: the rule, in one line."""
    allowed = RULES[principal.credential]
    if action in allowed:
        return None
    may = " and ".join(a.value for a in Action if a in allowed)
    rule = principal.credential.value
    return f"{principal.who} may only {may}, not {action.value} (the {rule} rule)"


def scope_refusal(principal: Principal, action: Action, cluster: ClusterPath) -> str | None:
    """Why `principal` may not take `action` on a job in `cluster`, or None."""
    scope = principal.clusters
    if scope is None or scope.accepts(cluster):
        return None
    return f"{principal.who} may not {action.value} in {cluster}: it is confined to {scope}"


def check_scope(principal: Principal, action: Action, clusters: Iterable[str]) -> None:
    """Refuse (ForbiddenError, naming the rule) unless every cluster an event touches is
    within `principal`'s subtree."""
    if principal.clusters is None:
        return
    for cluster in clusters:
        why = scope_refusal(principal, action, ClusterPath(cluster))
        if why is not None:
            raise ForbiddenError(why)
