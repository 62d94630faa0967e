"""People and their tokens: the users of a farm, their roles and cluster scopes.

Theory of operation
-------------------
`farmd user add NAME --role ROLE [--clusters EXPR]` makes a user: a name, a `Role`, a
scope (a restriction expression such as `/show1/+`; None: the whole farm) and the
salted hash of a token handed out once. The shell makes the token and its hash (it
draws the randomness and spends the time `hashlib.scrypt` takes, off the loop); the
core checks and keeps the record, through the door like any change (`AddUser`,
`ModifyUser`, `RevokeUser`), so it is authorised (`Action.MANAGE_USERS`), stored with
the rows of the same commit, and audited.

A personal token reads `NAME~SECRET`: the name says whose hash to check, and the secret
is what is hashed. `Identities.principal` makes the principal of an active user; the
shell asks it again before every request of an open session, so a role or scope that
changes, or a revocation, takes effect on sessions already open. A revoked user stays
(revoked, with when) so that its name, which its jobs carry as their owner, is never
given to someone else. Pure: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import re

import attrs

from farmd.cluster import parse_restrictions
from farmd.core.authority import RESERVED_NAMES, Principal, Role
from farmd.core.vocabulary import (
    AddUser,
    AddWorkerToken,
    ModifyUser,
    RevokeUser,
    RevokeWorkerToken,
)
from farmd.errors import JobSpecError, UnknownUserError
from farmd.rows import UserRow, WorkerTokenRow

# POSIX-like account names, so that a user can be mapped to the OS account frames run as
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
TOKEN_MARK = "~"  # NAME~SECRET: no name holds it, nor does any other kind of token
MAX_USERS = 100_000


def check_name(name: object) -> str:
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        shown = repr(name)[:80]
        msg = f"bad user name {shown}: 1 to 32 of a-z 0-9 _ . - starting with a-z or _"
        raise JobSpecError(msg)
    if name in RESERVED_NAMES:
        msg = f"bad user name {name!r}: it names the jobs of the farm or shared token"
        raise JobSpecError(msg)
    return name


def check_role(role: object) -> Role:
    try:
        return Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        msg = f"bad role {str(role)[:40]!r}: one of {roles}"
        raise JobSpecError(msg) from None


def check_clusters(clusters: object) -> str | None:
    """A scope as stored: its expression normalised, or None for the whole farm
    (nothing given, or an empty expression)."""
    if clusters is None or clusters == "":
        return None
    return str(parse_restrictions(clusters))


def split_token(token: str) -> tuple[str, str] | None:
    """(name, secret) of a personal token, or None if `token` is not one."""
    name, mark, secret = token.partition(TOKEN_MARK)
    if not mark or not secret or not USER_NAME.fullmatch(name):
        return None
    return name, secret


@attrs.frozen(kw_only=True)
class User:
    name: str
    role: Role
    clusters: str | None  # None: the whole farm
    salt: str  # hex
    digest: str  # hex scrypt of the token's secret with `salt`
    created_at: float
    revoked_at: float | None = None

    def view(self) -> dict[str, object]:
        """What `farmd user list` shows: never the salt or the digest."""
        return {
            "name": self.name,
            "role": self.role.value,
            "clusters": self.clusters,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }

    def row(self) -> UserRow:
        return UserRow(**{**attrs.asdict(self), "role": self.role.value})


@attrs.frozen(kw_only=True)
class WorkerToken:
    """An enrolment token: the hosts it may register as, into which clusters."""

    id: int
    hosts: str  # a host pattern: node07, gpu-*, render[001-120]
    clusters: str | None
    salt: str
    digest: str
    created_at: float
    revoked_at: float | None = None

    def view(self) -> dict[str, object]:
        return {
            "id": self.id,
            "hosts": self.hosts,
            "clusters": self.clusters,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }

    def row(self) -> WorkerTokenRow:
        return WorkerTokenRow(**attrs.asdict(self))


def check_hosts(hosts: object) -> str:
    """A worker token's host pattern, as the workers config reads one."""
    from farmd.config.workers import parse_host_pattern
    from farmd.errors import ConfigError

    try:
        return parse_host_pattern(hosts).text
    except ConfigError as exc:
        msg = f"bad hosts {str(hosts)[:80]!r}: a host name, glob (gpu-*) or range (render[001-120])"
        raise JobSpecError(msg) from exc


def split_worker_token(token: str) -> tuple[int, str] | None:
    """(id, secret) of a worker token (`worker.ID.SECRET`), or None if it is not one."""
    kind, _, rest = token.partition(".")
    number, _, secret = rest.partition(".")
    if kind != "worker" or not number.isdigit() or len(number) > 18 or not secret:
        return None
    return int(number), secret


class Identities:
    """The farm's users and worker tokens (see module docs); the scheduler routes their
    events here."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.worker_tokens: dict[int, WorkerToken] = {}
        self.changed: list[UserRow] = []  # rows to write, taken with the event's changes
        self.changed_tokens: list[WorkerTokenRow] = []

    def handle(
        self, event: AddUser | ModifyUser | RevokeUser | AddWorkerToken | RevokeWorkerToken
    ) -> tuple[dict[str, object], tuple[str, dict[str, object]]]:
        """Carry out a user or worker-token event (authorised by the scheduler's door):
        its result, and the log line it makes (event, fields)."""
        match event:
            case AddUser():
                result = self.add(
                    event.name, event.role, event.clusters, event.salt, event.digest, event.now
                )
                return result, ("user added", {"user": event.name, "role": event.role})
            case ModifyUser():
                result = self.modify(
                    event.name, event.role, event.clusters, event.salt, event.digest
                )
                return result, ("user modified", {"user": event.name})
            case RevokeUser():
                return self.revoke(event.name, event.now), ("user revoked", {"user": event.name})
            case AddWorkerToken():
                result = self.add_token(
                    event.hosts, event.clusters, event.salt, event.digest, event.now, event.token_id
                )
                return result, ("worker token added", {"token": event.token_id})
            case RevokeWorkerToken():
                result = self.revoke_token(event.token_id, event.now)
                return result, ("worker token revoked", {"token": event.token_id})

    def add_token(
        self, hosts: str, clusters: str | None, salt: str, digest: str, now: float, token_id: int
    ) -> dict[str, object]:
        """A new worker token; `token_id` is the one its secret was made for, which must be
        the next (`next_token_id`)."""
        if token_id != self.next_token_id:
            msg = f"worker token {token_id} is not the next one ({self.next_token_id}): ask again"
            raise JobSpecError(msg)
        if len(self.worker_tokens) >= MAX_USERS:
            msg = f"the farm has {MAX_USERS} worker tokens, the most it keeps"
            raise JobSpecError(msg)
        token = WorkerToken(
            id=token_id,
            hosts=check_hosts(hosts),
            clusters=check_clusters(clusters),
            salt=salt,
            digest=digest,
            created_at=now,
        )
        self._set_token(token)
        return token.view()

    def revoke_token(self, token_id: int, now: float) -> dict[str, object]:
        token = self.worker_tokens.get(token_id)
        if token is None:
            msg = f"worker token {token_id} does not exist"
            raise UnknownUserError(msg)
        if token.revoked_at is None:
            self._set_token(attrs.evolve(token, revoked_at=now))
        return self.worker_tokens[token_id].view()

    @property
    def next_token_id(self) -> int:
        return max(self.worker_tokens, default=0) + 1

    def worker_principal(self, token_id: int) -> Principal | None:
        token = self.worker_tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return None
        return Principal.worker_token(token.id, token.hosts, token.clusters)

    def _set_token(self, token: WorkerToken) -> None:
        self.worker_tokens[token.id] = token
        self.changed_tokens.append(token.row())

    def restore(self, users: tuple[UserRow, ...], tokens: tuple[WorkerTokenRow, ...]) -> None:
        """The records as stored, each checked as it was when made."""
        for row in users:
            fields = attrs.asdict(row)
            fields.update(role=check_role(row.role), clusters=check_clusters(row.clusters))
            self.users[row.name] = User(**fields)
        for token in tokens:
            fields = attrs.asdict(token)
            fields.update(hosts=check_hosts(token.hosts), clusters=check_clusters(token.clusters))
            self.worker_tokens[token.id] = WorkerToken(**fields)

    def add(
        self, name: str, role: str, clusters: str | None, salt: str, digest: str, now: float
    ) -> dict[str, object]:
        name = check_name(name)
        user = User(
            name=name,
            role=check_role(role),
            clusters=check_clusters(clusters),
            salt=salt,
            digest=digest,
            created_at=now,
        )
        if name in self.users:
            revoked = " (revoked: a name is never given to someone else)"
            why = revoked if self.users[name].revoked_at is not None else ""
            msg = f"user {name!r} exists{why}"
            raise JobSpecError(msg)
        if len(self.users) >= MAX_USERS:
            msg = f"the farm has {MAX_USERS} users, the most it keeps"
            raise JobSpecError(msg)
        self._set(user)
        return user.view()

    def modify(
        self, name: str, role: str | None, clusters: str | None, salt: str, digest: str
    ) -> dict[str, object]:
        """Change a user's role, scope (`clusters`: "" for the whole farm, None to keep
        it) or token (`digest`, "" to keep it); refused for a revoked user."""
        user = self.user(name)
        if user.revoked_at is not None:
            msg = f"user {name!r} is revoked: add a user under another name"
            raise JobSpecError(msg)
        changed = attrs.evolve(
            user,
            role=check_role(role) if role is not None else user.role,
            clusters=check_clusters(clusters) if clusters is not None else user.clusters,
            salt=salt or user.salt,
            digest=digest or user.digest,
        )
        self._set(changed)
        return changed.view()

    def revoke(self, name: str, now: float) -> dict[str, object]:
        user = self.user(name)
        if user.revoked_at is None:
            self._set(attrs.evolve(user, revoked_at=now))
        return self.users[name].view()

    def user(self, name: str) -> User:
        user = self.users.get(name) if isinstance(name, str) else None
        if user is None:
            msg = f"user {str(name)[:40]!r} does not exist"
            raise UnknownUserError(msg)
        return user

    def principal(self, name: str, floor: int) -> Principal | None:
        """The principal of active user `name` (None if there is none, or it is
        revoked), held to the priority `floor` as its role says."""
        user = self.users.get(name)
        if user is None or user.revoked_at is not None:
            return None
        return Principal.personal(user.name, user.role, user.clusters, floor)

    def _set(self, user: User) -> None:
        self.users[user.name] = user
        self.changed.append(user.row())
