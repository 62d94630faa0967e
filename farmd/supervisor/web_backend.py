"""The supervisor as the HTTP app's `FarmBackend`, and the change notices it publishes.

`SupervisorBackend` is a thin adapter: a request is answered by `Supervisor.perform`
(the admin session's own way, `AdminRequests._decide`); a token becomes a principal
as a `hello`'s does (a personal or worker token through `People`, else the farm's, the
shared user token or a job token through `principal_for`), then must be allowed to
read, as a session is admitted. Asked on every HTTP request, so a revoked personal
token, or the job token of a job that has ended, is refused at once; a personal token
once checked is remembered by `People`, so this costs a hash only the first time.

`ChangeNotices` turns what the core did into notices for the dashboard
(`farmd.web.events`): every outcome, once durable, names the jobs it changed (its job
and frame rows, removed ids, and its commands' job ids), and whether workers changed
(frames started or stopped, locks). They are gathered for `FLUSH_INTERVAL` and then
published at once, so a burst of dispatches costs one notice per reader, and nothing
at all is gathered while no one listens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import trio

from farmd.core import (
    Action,
    Credential,
    JobEnded,
    JobHeld,
    KillOnWorker,
    Outcome,
    Principal,
    RunOnWorker,
)
from farmd.errors import ForbiddenError, ProtocolError, UnavailableError
from farmd.protocol import Request
from farmd.supervisor.standby import standby_text
from farmd.supervisor.tokens import principal_for
from farmd.web.events import Broadcaster, Subscription

if TYPE_CHECKING:
    from farmd.supervisor.daemon import Supervisor

FLUSH_INTERVAL: Final = 0.1  # seconds changes are gathered before they are published


class ChangeNotices:
    """Changed job ids and worker changes, gathered and published (module docs)."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self._jobs: set[int] = set()
        self._workers = False
        self._due = trio.Event()

    def note(self, outcome: Outcome) -> None:
        """What `outcome` changed (called once it is durable)."""
        if not self.broadcaster.subscribers:
            return
        changes = outcome.changes
        jobs = self._jobs
        jobs.update(row.id for row in changes.jobs)
        jobs.update(row.job_id for row in changes.frames)
        jobs.update(changes.removed)
        workers = bool(changes.frames) or changes.locks is not None
        for command in outcome.commands:
            if isinstance(command, JobEnded | JobHeld):
                jobs.add(command.job_id)
            elif isinstance(command, RunOnWorker | KillOnWorker):
                jobs.add(command.job_id)
                workers = True
        self._workers = self._workers or workers
        if jobs or self._workers:
            self._due.set()

    def workers_changed(self) -> None:
        """A worker joined, left or was reconfigured."""
        if self.broadcaster.subscribers:
            self._workers = True
            self._due.set()

    def flush(self) -> None:
        """Publish what was gathered: `jobs`, `workers`, and `clusters` after either
        (a cluster node counts both)."""
        jobs, self._jobs = self._jobs, set()
        workers, self._workers = self._workers, False
        if jobs:
            self.broadcaster.publish("jobs", jobs)
        if workers:
            self.broadcaster.publish("workers")
        if jobs or workers:
            self.broadcaster.publish("clusters")

    async def run(self) -> None:
        """Publish gathered changes at most every FLUSH_INTERVAL."""
        while True:
            await self._due.wait()
            await trio.sleep(FLUSH_INTERVAL)
            self._due = trio.Event()
            self.flush()


class SupervisorBackend:
    """The `FarmBackend` of a running supervisor (module docs)."""

    def __init__(self, supervisor: Supervisor, notices: ChangeNotices) -> None:
        self._supervisor = supervisor
        self._notices = notices

    async def perform(self, request: Request, who: Principal, peer: str, session: int) -> Any:
        return await self._supervisor.perform(request, who, peer, session)

    async def authenticate(self, token: str, host: str) -> Principal:
        supervisor = self._supervisor
        if supervisor.standing is not None:  # a standby holds no farm: where to go instead
            raise UnavailableError(standby_text(supervisor.standing))
        principal = await supervisor.people.principal(token, host)
        if principal is None:  # not a personal token: the farm's, the shared, a job's
            principal = principal_for(
                supervisor.token,
                supervisor.user_token,
                token,
                supervisor.config.highest_user_priority,
            )
        if principal.credential is Credential.WORKER_TOKEN:
            raise ProtocolError("a worker token registers workers only", code="bad_token")
        try:  # a job token whose job has ended opens nothing
            supervisor.core.authorize(principal, Action.READ)
        except ForbiddenError as exc:
            raise ProtocolError(str(exc), code="bad_token") from None
        return principal

    def metrics(self) -> tuple[bytes, str]:
        return self._supervisor.metrics.exposition()

    def events(self) -> Subscription:
        return self._notices.broadcaster.subscribe()
