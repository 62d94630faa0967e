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
person's own token (`PERSONAL`, `farmd user add`) takes those of its `Role` in
`ROLE_RULES`; a scope is an expression checked against the cluster of each job an event
touches. A role scoped to a cluster subtree (a show's wranglers own `/show1/+`) is
therefore a principal with `clusters` set and a row in `ROLE_RULES`, not a new code
path. Some actions a role takes on its own jobs only (`OWN_JOBS_ONLY`: an artist kills
their own jobs, a wrangler anyone's in scope): every job records its `owner`
(`owner_of`), and `check_jobs` checks scope and ownership of each job an event touches.
The rules that need the farm's state (a job token stops working once its job ends; its
sub-jobs go under its own job) live with the scheduler, which knows the jobs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from farmd.cluster import ClusterPath, Restrictions, parse_restrictions
from farmd.errors import ForbiddenError

if TYPE_CHECKING:
    from farmd.jobs import Job


class Credential(enum.Enum):
    """What opened a session."""

    FARM_TOKEN = "farm token"  # the root credential: everything
    USER_TOKEN = "user token"  # the shared token of older farms: submit and read
    JOB_TOKEN = "job token"  # a frame's FARMD_TOKEN: sub-jobs of its job, and read
    PERSONAL = "personal token"  # one person's (`farmd user add`): what their role may
    WORKER_TOKEN = "worker token"  # an enrolment token: register some hosts, in some clusters


class Role(enum.Enum):
    """What a person may do, within their cluster scope (`ROLE_RULES`)."""

    VIEWER = "viewer"
    ARTIST = "artist"
    WRANGLER = "wrangler"
    ADMIN = "admin"


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
    MOVE = "move jobs between clusters"
    MANAGE_USERS = "manage users and worker tokens"
    READ_AUDIT = "read the audit log"
    RELEASE = "upload and remove releases"
    DEPLOY = "deploy releases"  # and undeploy, roll back: checked against the cluster


# What each credential may do, whole: anything else is refused, naming the rule. A
# personal token's actions are its role's.
RULES: dict[Credential, frozenset[Action]] = {
    Credential.FARM_TOKEN: frozenset(Action),
    Credential.USER_TOKEN: frozenset({Action.SUBMIT, Action.READ}),
    Credential.JOB_TOKEN: frozenset({Action.SUBMIT, Action.READ}),
    Credential.PERSONAL: frozenset(),
    Credential.WORKER_TOKEN: frozenset({Action.WORK}),
}
_ARTIST = frozenset({Action.READ, Action.SUBMIT, Action.CONTROL, Action.REMOVE, Action.MODIFY})
ROLE_RULES: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset({Action.READ}),
    Role.ARTIST: _ARTIST,
    Role.WRANGLER: _ARTIST | {Action.LOCK, Action.MOVE, Action.RELEASE, Action.DEPLOY},
    Role.ADMIN: frozenset(Action) - {Action.WORK},
}
# What a role does to its own jobs only; anyone else's job in scope is refused.
OWN_JOBS_ONLY: dict[Role, frozenset[Action]] = {
    Role.ARTIST: frozenset({Action.CONTROL, Action.REMOVE, Action.MODIFY}),
}
# The roles held to the priority floor (`highest_user_priority`); the others set any.
FLOORED_ROLES = frozenset({Role.VIEWER, Role.ARTIST})
# The owners recorded for jobs submitted without a personal token; no user takes them.
FARM_OWNER = "farm"
SHARED_OWNER = "shared"
RESERVED_NAMES = frozenset({FARM_OWNER, SHARED_OWNER})

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
    user: str = ""  # a personal token's user, or the owner a job token acts as
    role: Role | None = None  # a personal token's
    token_id: int | None = None  # a worker token's
    hosts: str | None = None  # a worker token's host pattern: the names it may register

    @classmethod
    def shared_user(cls, highest_priority: int = 1, clusters: str | None = None) -> Principal:
        scope = parse_restrictions(clusters) if clusters is not None else None
        return cls(
            credential=Credential.USER_TOKEN, highest_priority=highest_priority, clusters=scope
        )

    @classmethod
    def job_token(cls, job: int, highest_priority: int = 1) -> Principal:
        return cls(credential=Credential.JOB_TOKEN, job=job, highest_priority=highest_priority)

    @classmethod
    def personal(
        cls, user: str, role: Role, clusters: str | None = None, floor: int = 1
    ) -> Principal:
        """A person's token: their role's rules within `clusters` (None: the whole farm);
        viewers and artists are held to the priority `floor`."""
        scope = parse_restrictions(clusters) if clusters is not None else None
        highest = floor if role in FLOORED_ROLES else 1
        return cls(
            credential=Credential.PERSONAL,
            user=user,
            role=role,
            clusters=scope,
            highest_priority=highest,
        )

    @classmethod
    def worker_token(cls, token_id: int, hosts: str, clusters: str | None) -> Principal:
        """An enrolment token: registers workers named by `hosts` into `clusters`."""
        scope = parse_restrictions(clusters) if clusters is not None else None
        return cls(
            credential=Credential.WORKER_TOKEN, token_id=token_id, hosts=hosts, clusters=scope
        )

    @property
    def who(self) -> str:
        if self.credential is Credential.WORKER_TOKEN:
            scope = str(self.clusters) if self.clusters is not None else "any cluster"
            return f"worker token {self.token_id} ({self.hosts}, {scope})"
        if self.credential is Credential.PERSONAL:
            assert self.role is not None
            scope = str(self.clusters) if self.clusters is not None else "the whole farm"
            return f"{self.user} ({self.role.value}, {scope})"
        return _WHO[self.credential]

    @property
    def is_admin(self) -> bool:
        return self.credential is Credential.FARM_TOKEN or self.role is Role.ADMIN

    @property
    def allowed(self) -> frozenset[Action]:
        if self.role is not None:
            return ROLE_RULES[self.role]
        return RULES[self.credential]

    @property
    def owner(self) -> str:
        """The owner a job this principal submits records (a job token's sub-jobs get
        its job's owner from the scheduler)."""
        if self.credential is Credential.PERSONAL or self.credential is Credential.JOB_TOKEN:
            return self.user
        return FARM_OWNER if self.credential is Credential.FARM_TOKEN else SHARED_OWNER


ADMIN = Principal(credential=Credential.FARM_TOKEN)


def refusal(principal: Principal, action: Action) -> str | None:
    """Why `principal` may not take `action` at all, or None: the rule, in one line."""
    allowed = principal.allowed
    if action in allowed:
        return None
    may = " and ".join(a.value for a in Action if a in allowed)
    if principal.role is not None:
        return (
            f"{principal.who} may only {may}, not {action.value} (the {principal.role.value} role)"
        )
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


def check_jobs(principal: Principal, action: Action, jobs: Iterable[Job], verb: str = "") -> None:
    """Refuse (ForbiddenError, naming the rule) unless `principal` may take `action` on
    every job of `jobs`: each within its subtree, and its own where its role acts on its
    own jobs only (`OWN_JOBS_ONLY`). `verb` says what the action does (`kill`)."""
    own_only = principal.role is not None and action in OWN_JOBS_ONLY.get(principal.role, ())
    for job in jobs:
        why = scope_refusal(principal, action, job.cluster)
        if why is None and own_only and job.owner != principal.user:
            owner = job.owner or "no one"
            what = verb or action.value
            why = f"{principal.who} may not {what} job {job.id}: it belongs to {owner}"
        if why is not None:
            raise ForbiddenError(why)


def check_host(principal: Principal, name: str) -> None:
    """Refuse (ForbiddenError) a worker token registering a host its pattern does not
    name: a stolen token cannot register as another host."""
    if principal.hosts is None:
        return
    from farmd.config.workers import parse_host_pattern  # a value type of the config's

    if not parse_host_pattern(principal.hosts).matches(name):
        msg = f"{principal.who} may not register a worker named {name!r}: not one of its hosts"
        raise ForbiddenError(msg)
