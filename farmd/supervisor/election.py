"""Which of the supervisors sharing one PostgreSQL database is active, and fencing.

Theory of operation
-------------------
Every supervisor whose store is a `postgresql://` URL runs an `Election`. It owns one
database session of its own, the *lock session*, and asks PostgreSQL for the farm's
session advisory lock (`pg_try_advisory_lock(LOCK_KEY)`) every `POLL_SECONDS`. While it
cannot have it, the supervisor is a standby: it answers peers "standby; the active
supervisor is HOST:PORT" and holds nothing of the farm.

The supervisor that gets the lock, in one transaction, bumps the farm's **epoch** (meta
`epoch`) and records itself as active (meta `active`: where peers reach it, its epoch,
since when). Its store is then fenced at that epoch (`PostgresStore.fence`): every commit
first reads the epoch `FOR SHARE` and writes nothing unless it is still its own. A bump
waits for a commit in flight (the row lock) and fails every later commit of the deposed
supervisor, which therefore can never write again, whatever it believes.

The lock is held by a session, so a supervisor that dies (`kill -9`: its sockets close)
frees it at once. One that stops without dying (SIGSTOP, a GC pause, a hung host, a
partition) keeps its TCP connection open; PostgreSQL ends its session anyway after
`LEASE_SECONDS` idle (`idle_session_timeout`, set on the active's lock session only), and
the active pings every `PING_SECONDS` to stay inside that lease. So a paused supervisor
loses the lock `LEASE_SECONDS` after its last ping, by the database's clock, and a
standby takes over; when it wakes, its ping and its next commit both fail, and it stops
with one line (`Deposed`). Its store's sessions are ended the same way if they were
caught inside a transaction (`idle_in_transaction_session_timeout`), so a paused commit
cannot hold the epoch row against the bump either.

Each supervisor keeps a row in `supervisors` (where, role, epoch, pid, host, when last
seen, by the database's clock) for `farmd status`. The active's row is written only
while the epoch is still its own: a deposed supervisor writes no row at all.

All of this is blocking psycopg on the lock session, called from worker threads
(`trio.to_thread`); the ping runs in a thread of its own (`_LeaseKeeper`), so a long
turn of the event loop (a large restore) does not cost the lease, while a process-wide
pause does.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import attrs

from farmd.errors import UserError
from farmd.store_postgres import Deposed, describe_url

if TYPE_CHECKING:
    import psycopg

    from farmd.config import Address

# the farm's advisory lock: one key for every farm database ("farmd" in ASCII)
LOCK_KEY: Final = 0x6661726D64
POLL_SECONDS: Final = 0.2  # how often a standby asks for the lock
LEASE_SECONDS: Final = 3.0  # idle time after which PostgreSQL ends the active's session
PING_SECONDS: Final = 0.5  # how often the active shows PostgreSQL it is alive
SEEN_SECONDS: Final = 2.0  # how often a supervisor refreshes its `supervisors` row
STALE_SECONDS: Final = 10.0  # a standby not seen for this long is not listed
CONNECT_SECONDS: Final = 5  # to reach the database at all


@attrs.frozen
class Standing:
    """What a standby tells peers: the active supervisor's address ("" when none has
    been active yet) and epoch."""

    active: str = ""
    epoch: int = 0


def connect(url: str, purpose: str) -> psycopg.Connection[Any]:
    """A session on the farm database, named for `pg_stat_activity` (and for a test
    that checks who wrote what); TCP keepalives so a dead server is noticed."""
    import psycopg

    try:
        return psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_SECONDS,
            application_name=f"farmd {purpose} {os.getpid()}",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
    except psycopg.Error as exc:
        why = " ".join(str(exc).split())
        msg = f"cannot reach the farm database {describe_url(url)}: {why}"
        raise UserError(msg) from None


class Election:
    """One supervisor's part in choosing the active one (see module docs). Its methods
    block: the supervisor calls them from worker threads."""

    def __init__(self, url: str, advertise: Address) -> None:
        self.url = url
        self.advertise = str(advertise)
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.epoch = 0
        self.since = 0.0  # when this one became active, by the database's clock
        self._session = connect(url, "election")
        self._lock = threading.Lock()  # the lock session is used by one thread at a time
        self._seen_at = 0.0

    # ------------------------------------------------------------------ standby

    def try_to_win(self) -> bool:
        """One attempt at the lock; on success, bump the epoch and record this one as
        active. Between attempts, keep this standby's row fresh."""
        with self._lock:
            won = self._session.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            if not (won and won[0]):
                if time.monotonic() - self._seen_at >= SEEN_SECONDS:
                    self._record("standby")
                return False
            with self._session.transaction():
                row = self._session.execute(
                    "INSERT INTO meta (key, value) VALUES ('epoch', '1') ON CONFLICT (key)"
                    " DO UPDATE SET value = (meta.value::bigint + 1)::text"
                    " RETURNING value, extract(epoch from now())"
                ).fetchone()
                assert row is not None
                self.epoch, self.since = int(row[0]), float(row[1])
                active = {
                    "address": self.advertise,
                    "epoch": self.epoch,
                    "since": self.since,
                    "host": self.host,
                    "pid": os.getpid(),
                }
                self._session.execute(
                    "INSERT INTO meta (key, value) VALUES ('active', %s) ON CONFLICT (key)"
                    " DO UPDATE SET value = EXCLUDED.value",
                    (json.dumps(active, sort_keys=True),),
                )
                self._record("active")
            # from now on PostgreSQL ends this session if the pings stop: the lease
            self._session.execute(f"SET idle_session_timeout = {int(LEASE_SECONDS * 1000)}")
            return True

    def standing(self) -> Standing:
        """Who is active, as the database says (for a standby's answer to peers)."""
        with self._lock:
            row = self._session.execute("SELECT value FROM meta WHERE key = 'active'").fetchone()
        if row is None:
            return Standing()
        try:
            active = json.loads(row[0])
            return Standing(str(active["address"]), int(active["epoch"]))
        except (TypeError, ValueError, KeyError):
            return Standing()

    # ------------------------------------------------------------------ active

    def ping(self) -> None:
        """Show PostgreSQL this active supervisor is alive (the lease), refreshing its
        row while the epoch is its own; `Deposed` once its session or epoch is gone."""
        import psycopg

        try:
            with self._lock:
                if time.monotonic() - self._seen_at < SEEN_SECONDS:
                    self._session.execute("SELECT 1")
                    return
                current = self._session.execute(
                    "SELECT value::bigint FROM meta WHERE key = 'epoch'"
                ).fetchone()
                if current is None or int(current[0]) != self.epoch:
                    found = "none" if current is None else current[0]
                    msg = (
                        f"this supervisor was deposed: the farm's epoch is now {found}, "
                        f"this supervisor's was {self.epoch}; it writes nothing more"
                    )
                    raise Deposed(msg)
                self._record("active")
        except psycopg.Error as exc:
            why = " ".join(str(exc).split())
            msg = (
                f"this supervisor lost its database session ({why}): another may be active "
                f"now (epoch {self.epoch} was this one's); it writes nothing more"
            )
            raise Deposed(msg) from None

    def _record(self, role: str) -> None:
        """This supervisor's row in `supervisors`; the active's only under its epoch."""
        self._session.execute(
            "INSERT INTO supervisors (address, role, epoch, pid, host, started_at, seen_at)"
            " SELECT %(address)s, %(role)s, %(epoch)s, %(pid)s, %(host)s, %(started)s,"
            " extract(epoch from clock_timestamp())"
            " WHERE %(role)s <> 'active'"
            " OR (SELECT value FROM meta WHERE key = 'epoch') = %(epoch_text)s"
            " ON CONFLICT (address) DO UPDATE SET role = EXCLUDED.role, epoch = EXCLUDED.epoch,"
            " pid = EXCLUDED.pid, host = EXCLUDED.host, started_at = EXCLUDED.started_at,"
            " seen_at = EXCLUDED.seen_at",
            {
                "address": self.advertise,
                "role": role,
                "epoch": self.epoch if role == "active" else None,
                "epoch_text": str(self.epoch),
                "pid": os.getpid(),
                "host": self.host,
                "started": self.started_at,
            },
        )
        self._seen_at = time.monotonic()

    def close(self) -> None:
        """End the lock session: an active supervisor stopping on purpose frees the
        lock at once, so a standby takes over without waiting for the lease."""
        import psycopg

        try:
            with self._lock:
                self._session.close()
        except psycopg.Error:
            pass


class LeaseKeeper:
    """Pings for the active supervisor from a thread of its own (see module docs) until
    stopped or deposed; `wait` blocks until it is deposed and returns why."""

    def __init__(self, election: Election) -> None:
        self._election = election
        self._stopped = threading.Event()
        self._lost = threading.Event()
        self.why: Deposed | None = None
        self._thread = threading.Thread(target=self._run, name="farmd-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(PING_SECONDS):
            try:
                self._election.ping()
            except Deposed as exc:
                self.why = exc
                self._lost.set()
                return

    def wait(self) -> Deposed:
        self._lost.wait()
        assert self.why is not None
        return self.why

    def stop(self) -> None:
        self._stopped.set()
        self._lost.set() if self.why is not None else None
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=PING_SECONDS + CONNECT_SECONDS)


def status(url: str) -> dict[str, Any]:
    """The farm database's view of its supervisors: the active one (address, epoch,
    since, host, pid) and the standbys seen in the last `STALE_SECONDS`, for `farmd
    status` (read by the active supervisor, answering a `status` request)."""
    session = connect(url, "status")
    try:
        row = session.execute("SELECT value FROM meta WHERE key = 'active'").fetchone()
        active = json.loads(row[0]) if row is not None else None
        rows = session.execute(
            "SELECT address, role, epoch, pid, host, started_at, seen_at,"
            " extract(epoch from clock_timestamp()) - seen_at FROM supervisors"
            " ORDER BY address"
        ).fetchall()
    finally:
        session.close()
    standbys = [
        {"address": r[0], "pid": r[3], "host": r[4], "started_at": r[5], "seen_at": r[6]}
        for r in rows
        if r[1] == "standby" and r[7] <= STALE_SECONDS
    ]
    return {"active": active, "standbys": standbys}
