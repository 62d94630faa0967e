"""Personal tokens as the supervisor checks and hands them out.

The users themselves (role, scope, the salted hash of their token) are the core's
(`farmd.core.identities`): it decides who may manage them and keeps the records with
the farm's rows. This is the shell's part, the I/O and the slow work:

- `People.principal` turns a personal token (`NAME~SECRET`) presented in a `hello` into
  the user's principal: the secret's scrypt digest (in a worker thread, one at a time,
  so a flood of bad tokens costs one thread, not the loop) must match the user's. A token
  once checked is remembered (by a SHA-256 of it) while the user's digest is unchanged, so
  a CLI that connects for every command pays the hash once.
- `People.current` is asked before every request of an open personal session: the
  user's role and scope as they are now, or `Revoked` once the user was revoked or given
  a new token, which ends the session.
- `People.answer` serves `add_user`, `list_users`, `modify_user` and `revoke_user`: it
  makes a new token and its digest off the loop, then hands the core the event.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from farmd.core import (
    Action,
    Credential,
    Outcome,
    Principal,
    Scheduler,
)
from farmd.core import AddUser as AddUserEvent
from farmd.core import AddWorkerToken as AddWorkerTokenEvent
from farmd.core import ModifyUser as ModifyUserEvent
from farmd.core import RevokeUser as RevokeUserEvent
from farmd.core import RevokeWorkerToken as RevokeWorkerTokenEvent
from farmd.core.identities import check_name, split_token, split_worker_token
from farmd.errors import ProtocolError
from farmd.protocol import (
    AddUser,
    AddWorkerToken,
    ListUsers,
    ListWorkerTokens,
    ModifyUser,
    RevokeUser,
    RevokeWorkerToken,
)
from farmd.supervisor.tokens import personal_token, token_digest, worker_token

T = TypeVar("T")

MAX_VERIFIED = 4096  # tokens remembered as checked; past it the memory starts again
# A host that presents this many wrong personal or worker tokens within the window is
# refused at once, without hashing, until the window has passed: a guesser cannot keep
# the one hashing thread busy for everyone else. Hosts remembered: bounded too.
MAX_WRONG_TOKENS = 10
WRONG_TOKEN_WINDOW = 60.0  # seconds
MAX_WRONG_HOSTS = 10_000

UserRequest = (
    AddUser
    | ListUsers
    | ModifyUser
    | RevokeUser
    | AddWorkerToken
    | ListWorkerTokens
    | RevokeWorkerToken
)


PEOPLE_REQUESTS = (
    AddUser,
    ListUsers,
    ModifyUser,
    RevokeUser,
    AddWorkerToken,
    ListWorkerTokens,
    RevokeWorkerToken,
)


class Revoked(Exception):
    """The user of an open session was revoked, or given a new token."""


class People:
    """The shell's side of personal tokens (see module docs)."""

    def __init__(self, core: Scheduler, clock: Callable[[], float], floor: int) -> None:
        self._core = core
        self._clock = clock
        self._floor = floor  # highest_user_priority
        self._verified: dict[tuple[str, str], str] = {}  # (name, sha256) -> digest
        # one hash at a time, in a thread of trio's own pool (whose use a test's
        # MockClock watches): a flood of tokens queues here, not on every thread
        self._hashing = trio.Lock()
        self._wrong: dict[str, list[float]] = {}  # host -> when it presented a wrong token

    async def principal(self, token: str, host: str = "") -> Principal | None:
        """The principal of a personal or worker token; None if `token` is neither (the
        farm's, a job's...); refused (`bad_token`) if it is a wrong one, or at once if
        `host` presented `MAX_WRONG_TOKENS` wrong ones within `WRONG_TOKEN_WINDOW`."""
        if split_worker_token(token) is None and split_token(token) is None:
            return None
        now = trio.current_time()
        recent = [at for at in self._wrong.get(host, ()) if now - at < WRONG_TOKEN_WINDOW]
        if len(recent) >= MAX_WRONG_TOKENS:
            wait = math.ceil(WRONG_TOKEN_WINDOW - (now - recent[0]))
            msg = f"too many wrong tokens from {host or 'this host'}: try again in {wait} s"
            raise ProtocolError(msg, code="bad_token")
        try:
            return await self._principal(token)
        except ProtocolError:
            if len(self._wrong) >= MAX_WRONG_HOSTS and host not in self._wrong:
                self._wrong.clear()
            self._wrong[host] = [*recent, now]
            raise

    async def _principal(self, token: str) -> Principal | None:
        worker = split_worker_token(token)
        if worker is not None:
            token_id, secret = worker
            await self._check(
                f"worker.{token_id}", secret, self._core.worker_token_secret(token_id)
            )
            found = self._core.worker_token_principal(token_id)
        else:
            parts = split_token(token)
            if parts is None:
                return None
            name, secret = parts
            await self._check(name, secret, self._core.user_secret(name))
            found = self._core.user_principal(name, self._floor)
        if found is None:  # revoked while its token was being checked
            raise ProtocolError("wrong token", code="bad_token")
        return found

    async def _check(self, name: str, secret: str, kept: tuple[str, str] | None) -> None:
        """Refuse (`bad_token`) unless `secret` hashes, with the kept salt, to the kept
        digest of `name` (None: no such active user or token)."""
        if kept is None:
            raise ProtocolError("wrong token", code="bad_token")
        salt, digest = kept
        key = (name, hashlib.sha256(secret.encode()).hexdigest())
        if self._verified.get(key) != digest:
            computed = await self._in_thread(token_digest, secret, salt)
            if not hmac.compare_digest(computed, digest):
                raise ProtocolError("wrong token", code="bad_token")
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
            self._verified[key] = digest

    def current(self, principal: Principal, digest_at_hello: str | None) -> Principal:
        """`principal` as its user is now (role and scope may have changed); `Revoked`
        if the user was revoked, or given a new token since the session opened (or, for
        a worker token, once it is revoked)."""
        if principal.credential is Credential.WORKER_TOKEN:
            assert principal.token_id is not None
            if self._core.worker_token_principal(principal.token_id) is None:
                raise Revoked(f"worker token {principal.token_id} was revoked")
            return principal
        if principal.credential is not Credential.PERSONAL:
            return principal
        kept = self._core.user_secret(principal.user)
        now = self._core.user_principal(principal.user, self._floor)
        if now is None or kept is None or kept[1] != digest_at_hello:
            raise Revoked(f"the token of user {principal.user!r} was revoked")
        return now

    def digest_of(self, principal: Principal) -> str | None:
        """The digest a personal session's token matched (to notice a new token)."""
        if principal.credential is not Credential.PERSONAL:
            return None
        kept = self._core.user_secret(principal.user)
        return kept[1] if kept is not None else None

    async def answer(self, request: UserRequest, by: Principal) -> tuple[Any, Outcome | None]:
        """A user request's answer, and the outcome it must wait for (None: a read)."""
        self._core.authorize(by, Action.MANAGE_USERS)  # before any hashing
        now = self._clock()
        match request:
            case ListUsers():
                return self._core.users_view(), None
            case AddUser() | ModifyUser():
                adding = isinstance(request, AddUser)
                if adding:
                    check_name(request.name)  # before spending the hash on it
                token, salt, digest = "", "", ""
                if adding or (isinstance(request, ModifyUser) and request.new_token):
                    token, salt, digest = await self._new_token(request.name)
                kind: Any = AddUserEvent if adding else ModifyUserEvent
                event = kind(
                    name=request.name,
                    role=request.role,
                    clusters=request.clusters,
                    salt=salt,
                    digest=digest,
                    now=now,
                    by=by,
                )
                outcome = self._core.handle(event)
                result = dict(outcome.result)
                if token:  # the one time it is ever sent
                    result["token"] = token
                return result, outcome
            case RevokeUser():
                outcome = self._core.handle(RevokeUserEvent(name=request.name, now=now, by=by))
                return outcome.result, outcome
            case ListWorkerTokens():
                return self._core.worker_tokens_view(), None
            case AddWorkerToken():
                token_id = self._core.next_worker_token_id
                token, salt, digest = await self._in_thread(worker_token, token_id)
                event = AddWorkerTokenEvent(
                    token_id=token_id,
                    hosts=request.hosts,
                    clusters=request.clusters,
                    salt=salt,
                    digest=digest,
                    now=now,
                    by=by,
                )
                outcome = self._core.handle(event)
                return {**outcome.result, "token": token}, outcome
            case RevokeWorkerToken():
                revoke = RevokeWorkerTokenEvent(token_id=request.token_id, now=now, by=by)
                outcome = self._core.handle(revoke)
                return outcome.result, outcome

    async def _new_token(self, name: str) -> tuple[str, str, str]:
        return await self._in_thread(personal_token, name)

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        async with self._hashing:
            return await trio.to_thread.run_sync(work, *args)
