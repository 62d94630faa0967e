"""A supervisor on a PostgreSQL store: a standby until it wins the election, then active.

Theory of operation
-------------------
`serve_elected` is `Supervisor.run` for a `postgresql://` store. In order:

1. Open the store (`PostgresStore`): a database it cannot use (unreachable, a newer
   schema) is refused with one line before anything listens.
2. Listen on the farm's address, as any supervisor does, and answer every hello with
   `standby` (where the active one is, from the database; an `error` with code
   `standby` for a peer older than protocol 7). Peers with a supervisor list go there.
   Meanwhile keep warm (`WarmStandby`): every `WARM_SECONDS`, off the event loop, read
   the rows that changed since the last look (by row version, `farmd.store_warm`) and
   build their jobs (`restore.prebuild`), so that a takeover of a farm of 100,000 jobs
   reads a few rows and builds a few jobs, not all of them (issue 17: kill to
   dispatching again within 5 s). The price: the standby holds the farm's rows and
   jobs in memory, and lists the live rows' versions every `WARM_SECONDS`.
   The HTTP app is served too: `/metrics` (role standby, the epoch seen) and the page;
   every API request is refused with 503 and the same words.
3. Ask for the farm's lock (`election.Election.try_to_win`) until it is ours. Then:
   name itself to hellos (they are served once the restore is done, instead of being
   sent back to the dead supervisor), fence the store at the new epoch, start the
   lease (`LeaseKeeper`), read what changed since the last look and restore the farm
   (the jobs built ahead taken as they are) exactly as a restarted supervisor does: running
   frames are orphans until their workers come back and readopt them, results they
   repeat are taken once (attempt fencing), submissions repeated with their request
   key are not duplicated. Then serve, as active, on the same sockets: peers that
   were told "standby" a moment ago are served on their next try.
4. Stop, with one line, when deposed: the lease is lost (`LeaseKeeper.wait`) or a
   commit finds another epoch (`Deposed` from the store). Nothing more is written.

The farm token lives in the database (`shared_secret`), so every supervisor of the farm
accepts the same workers and scripts; each also writes it to its own STATE/token for
the local CLI.

`farm_status` answers `farmd status` on any store: the active supervisor, its epoch and
since when, and the standbys the database has seen lately.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from farmd.config import Address, is_postgres_url
from farmd.core.restore import Built, prebuild
from farmd.logs import log_event
from farmd.protocol import STANDBY_VERSION, Error, Standby
from farmd.rows import Snapshot
from farmd.store import StateLock, StoreError, write_state_file
from farmd.store_postgres import Deposed, PostgresStore
from farmd.store_warm import WarmRows
from farmd.supervisor.connection import Goodbye
from farmd.supervisor.election import (
    POLL_SECONDS,
    Election,
    LeaseKeeper,
    Standing,
    status,
)
from farmd.supervisor.tokens import TOKEN_FILE, USER_TOKEN_FILE, ensure_token
from farmd.tls import shared_farm_ca

if TYPE_CHECKING:
    from farmd.supervisor.daemon import Supervisor

log = logging.getLogger("farmd.supervisor")

STANDING_SECONDS = 1.0  # how often a standby reads who is active, for its answers
WARM_SECONDS = 2.0  # how often a standby reads the changed rows (`WarmStandby`)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a farm is loaded and restored: those
    make a few million objects that all stay, and every collection on the way would
    walk the ones made so far (half the time of a 100,000-job restore, for nothing).
    Reference counting still frees what dies; the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def standby_text(standing: Standing) -> str:
    """What a standby says in words, to a hello and to an HTTP request alike."""
    where = standing.active or "not known yet (a takeover is under way)"
    return f"standby; the active supervisor is {where}"


def standby_goodbye(standing: Standing, version: int) -> Goodbye:
    """A standby's answer to a hello: `standby` naming the active supervisor, or, to a
    peer older than protocol 7, an `error` that says the same in words."""
    text = standby_text(standing)
    if version >= STANDBY_VERSION:
        answer: Error | Standby = Standby(
            active=standing.active, epoch=standing.epoch, message=text
        )
    else:
        answer = Error(code="standby", message=text)
    return Goodbye("debug", "standby answered", answer)


def advertised(listen: Address, port: int, advertise: Address | None) -> Address:
    """Where peers reach this supervisor: `advertise`, else the listen address, else (a
    wildcard) this host's name, with the port actually bound."""
    if advertise is not None:
        return advertise
    if listen.host in ("0.0.0.0", "::", ""):
        return Address(socket.getfqdn(), port)
    return Address(listen.host, port)


async def serve_elected(sup: Supervisor, task_status: trio.TaskStatus[Address]) -> None:
    """`Supervisor.run` on a PostgreSQL store (see module docs)."""
    config = sup.config
    url = config.store
    # the state dir (its address file, its TLS files, the local copy of the farm token)
    # is this supervisor's alone, as with SQLite; the farm itself is in the database
    state_lock = StateLock(config.state_dir)
    try:
        store = await trio.to_thread.run_sync(PostgresStore, url)
    except BaseException:
        state_lock.release(keep=False)
        raise
    state_lock.claim()
    try:
        settings = config.tls
        if settings.mode != "off" and settings.cert is None:
            # the farm's own CA, shared through the database: peers given the CA file of
            # any supervisor of the farm trust whichever one is active
            await trio.to_thread.run_sync(
                shared_farm_ca,
                config.state_dir,
                settings.names,
                lambda own: store.shared_secret("tls_ca", lambda: own),
            )
        sup.standing = Standing()
        listeners = await sup.listen(role="standby")
        assert sup.address is not None
        advertise = advertised(config.listen, sup.address.port, config.advertise)
        election = await trio.to_thread.run_sync(Election, url, advertise)
        keeper = LeaseKeeper(election)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, sup.serve_stream, listeners)
                # the HTTP app as a standby: /metrics says so (a scrape of the standby is
                # not a dead target), the API answers 503 naming the active supervisor
                await sup.serve_http(nursery)
                task_status.started(sup.address)
                warm = WarmStandby(store)
                async with trio.open_nursery() as warming:
                    warming.start_soon(warm.keep)
                    await _wait_to_win(sup, election)
                    warming.cancel_scope.cancel()  # waits for a read under way to end
                won_at = time.monotonic()
                # from now on a hello is told that this one is active (it is served as
                # soon as the restore is done), not sent back to the dead supervisor
                sup.standing = Standing(active=str(advertise), epoch=election.epoch)
                store.fence(election.epoch)
                keeper.start()
                nursery.start_soon(_watch_lease, keeper)
                await _take_over(sup, store, warm)
                await sup.start_services(nursery, store)
                sup.standing = None  # from here on, hellos are served
                sup.metrics.observe_election(
                    "active", election.epoch, election.since, time.monotonic() - won_at
                )
                log_event(
                    log,
                    "info",
                    "supervisor active",
                    address=str(advertise),
                    epoch=election.epoch,
                    takeover_seconds=round(time.monotonic() - won_at, 3),
                )
        finally:
            keeper.stop()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(election.close)
    finally:
        store.close()
        state_lock.release(keep=True)


async def _wait_to_win(sup: Supervisor, election: Election) -> None:
    """Ask for the lock until it is ours, keeping the standby's answer current."""
    log_event(log, "info", "supervisor standby", epoch_seen=0)
    read_at = 0.0
    sup.metrics.observe_election("standby", 0, 0.0, None)
    while not await trio.to_thread.run_sync(election.try_to_win):
        if time.monotonic() - read_at >= STANDING_SECONDS:
            sup.standing = await trio.to_thread.run_sync(election.standing)
            sup.metrics.observe_election("standby", sup.standing.epoch, 0.0, None)
            read_at = time.monotonic()
        await trio.sleep(POLL_SECONDS)


async def _watch_lease(keeper: LeaseKeeper) -> None:
    """Stop the supervisor, with the one line `Deposed` carries, once the lease is lost."""
    why = await trio.to_thread.run_sync(keeper.wait, abandon_on_cancel=True)
    raise why


class WarmStandby:
    """What a standby keeps ready for its takeover: the farm's rows (`WarmRows`, read
    again every `WARM_SECONDS`, fetching only the changed ones) and the jobs built from
    them (`restore.prebuild`), both off the event loop. A takeover then reads what
    changed since the last look and builds only those jobs: the rest of the restore
    (the scheduler's indexes) is all that is left on the loop."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.rows = WarmRows(store.where)
        self.built: dict[int, Built] = {}

    def forget(self) -> None:
        """Drop the copy (after the takeover: the active supervisor needs none)."""
        self.rows = WarmRows(self.store.where)
        self.built = {}

    def refresh(self) -> Snapshot:
        """Read the changed rows and build their jobs (blocking: a worker thread)."""
        with paused_gc():
            snapshot = self.store.load_warm(self.rows)
            self.built = prebuild(snapshot, self.built)
        return snapshot

    async def keep(self) -> None:
        """Refresh until cancelled (when this standby wins); one line once warm. A
        refresh that fails (the database restarting, say) is tried again later: the
        copy is only a head start, and a takeover reads whatever it lacks."""
        started = time.monotonic()
        warm = False
        while True:
            try:
                snapshot = await trio.to_thread.run_sync(self.refresh)
            except StoreError as exc:
                log_event(log, "warning", "standby refresh failed", error=str(exc))
            else:
                if not warm:
                    warm = True
                    log_event(
                        log,
                        "info",
                        "standby warm",
                        jobs=len(snapshot.jobs),
                        built=len(self.built),
                        seconds=round(time.monotonic() - started, 3),
                    )
            await trio.sleep(WARM_SECONDS)

    async def load(self) -> tuple[Snapshot, dict[int, Built]]:
        """The farm as the database holds it now, and the jobs built ahead (the rows
        that changed since the last refresh are built by the restore)."""
        snapshot = await trio.to_thread.run_sync(self.store.load_warm, self.rows)
        return snapshot, self.built


async def _take_over(sup: Supervisor, store: Any, warm: WarmStandby) -> None:
    """Load the farm the database holds (off the loop: what changed since the standby's
    last look) and restore it; the farm token from the database (the first active
    supervisor's becomes the farm's); the release bundles from the database, as workers
    ask for them (`shelf`)."""
    state_dir = sup.config.state_dir
    with paused_gc():
        started = time.monotonic()
        snapshot, built = await warm.load()
        loaded = time.monotonic()
        sup.restore(snapshot, built)
        fetched = warm.rows.fetched
        warm.forget()  # each built job goes to one restore only; the rows are its own now
        log_event(
            log,
            "info",
            "takeover restored",
            jobs=len(snapshot.jobs),
            rows_fetched=fetched,
            load_seconds=round(loaded - started, 3),
            restore_seconds=round(time.monotonic() - loaded, 3),
        )
    sup.store = store
    sup.shelf.bundles = store  # release bundles live in the database too (`shelf`)
    sup.token = await trio.to_thread.run_sync(
        store.shared_secret, "token", lambda: ensure_token(state_dir)
    )
    write_state_file(state_dir / TOKEN_FILE, sup.token + "\n")
    if sup.config.shared_user_token:
        sup.user_token = await trio.to_thread.run_sync(
            store.shared_secret,
            "user_token",
            lambda: ensure_token(state_dir, USER_TOKEN_FILE, 0o640),
        )
        write_state_file(state_dir / USER_TOKEN_FILE, sup.user_token + "\n")
        (state_dir / USER_TOKEN_FILE).chmod(0o640)
    sup.report_restored()


async def farm_status(sup: Supervisor) -> dict[str, Any]:
    """`farmd status`: which supervisor is active, its epoch and since when, and the
    standbys (see module docs)."""
    config = sup.config
    here = {
        "address": str(sup.address),
        "store": "postgresql" if is_postgres_url(config.store) else config.store,
    }
    if not is_postgres_url(config.store):
        active = {
            "address": here["address"],
            "epoch": None,
            "since": sup.metrics.started_at,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        return {"active": active, "standbys": [], "store": here["store"]}
    found = await trio.to_thread.run_sync(status, config.store)
    return {**found, "store": here["store"]}


__all__ = ["Deposed", "farm_status", "serve_elected", "standby_goodbye", "standby_text"]
