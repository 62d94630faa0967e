"""What the shell may ask of the farm: the scheduler's named queries, read-only.

The shell never reads the core's dicts; it asks these. They change nothing, and most
delegate to `farmd.core.views`, which shapes the answers for the wire. `Scheduler`
inherits them, so the queries and the door are one object for the shell.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from farmd.core import views
from farmd.core.authority import ADMIN
from farmd.core.restore import missing_job
from farmd.core.vocabulary import FarmSize, FarmStatistics, ReplyRoom
from farmd.errors import UnknownJobError
from farmd.frames import Frame
from farmd.jobs import Job, JobState
from farmd.workers import Worker

if TYPE_CHECKING:
    from farmd.core.authority import Principal
    from farmd.core.dependencies import Dependencies
    from farmd.core.drafting import Draft
    from farmd.core.identities import Identities
    from farmd.core.scheduler import Scheduler
    from farmd.core.submission import Submissions
    from farmd.core.vocabulary import SubmitJob
    from farmd.core.workforce import Workforce


class Queries:
    """The scheduler's read-only side (see module docs)."""

    jobs: dict[int, Job]
    quarantined: dict[int, str]
    workers: dict[str, Worker]
    workforce: Workforce
    submissions: Submissions
    dependencies: Dependencies
    identities: Identities
    recalled: set[int]
    _next_id: int

    @property
    def _core(self) -> Scheduler:
        # the views read the whole scheduler; only a `Scheduler` is ever a `Queries`
        return cast("Scheduler", self)

    def quarantine_report(self) -> dict[int, str]:
        """The jobs `Restore` quarantined, by id, each with why (a copy)."""
        return dict(self.quarantined)

    def size(self) -> FarmSize:
        """How much the farm holds, for the shell's log lines."""
        return FarmSize(
            jobs=len(self.jobs),
            frames=sum(len(job.frames) for job in self.jobs.values()),
            orphans=self.workforce.orphans,
            quarantined=len(self.quarantined),
        )

    def job_summary(self, job_id: int) -> dict[str, Any]:
        """One job as `jobs_page` lists it (what a submit answers)."""
        return views.job_summary(self._core, job_id)

    def submit_warnings(self, job_ids: Iterable[int]) -> dict[int, list[str]]:
        """Of `job_ids` (a submit's), those no connected worker could ever run, with
        why: one line each (see `views.submit_warnings`)."""
        return views.submit_warnings(self._core, job_ids)

    def worker_settings(self, name: str) -> dict[str, Any] | None:
        """The settings connected worker `name` runs with (as a `WorkerReconfigured`
        would set them), or None if it is not connected."""
        worker = self.workers.get(name)
        return worker.settings() if worker is not None else None

    @property
    def next_job_id(self) -> int:
        """The id the next submitted job gets (ids are never reused)."""
        return self._next_id

    @property
    def orphans(self) -> int:
        """How many frames a restart found running still wait for their worker."""
        return self.workforce.orphans

    @property
    def locks(self) -> dict[str, str]:
        """The locked workers by name, connected or not, with their mode (`drain`,
        `purge`); the workforce's, to read."""
        return self.workforce.locks

    @property
    def max_command_bytes(self) -> int:
        """The longest command a job may have (see `Submissions`)."""
        return self.submissions.max_command_bytes

    def knows_key(self, key: str | None) -> bool:
        """A submission under `key` would repeat an earlier one (and build nothing)."""
        return self.submissions.knows_key(key)

    def draft(self, event: SubmitJob) -> Draft:
        """`draft_job` with this farm's limits (pure: see `Submissions.draft`)."""
        return self.submissions.draft(event)

    def draft_batch(self, jobs: tuple[SubmitJob, ...]) -> tuple[Draft, ...]:
        """`draft` of each job of a batch (pure as `draft`), refused whole."""
        return self.submissions.draft_batch(jobs)

    def dependents_of(self, job_id: int) -> list[int]:
        """The jobs that depend on job `job_id` (in id order), whatever their state."""
        return self.dependencies.dependents_of(job_id)

    def job_token_refusal(self, job_id: int) -> str | None:
        """Why a frame's job token of `job_id` no longer opens or serves a session
        (its job is gone or has ended), or None while it works."""
        job = self.jobs.get(job_id)
        why = f"the job token of job {job_id} no longer works: the job"
        if job is None:
            return f"{why} does not exist"
        state = job.state
        if state.ended:
            return f"{why} has ended ({state.value})"
        return None

    def job(self, job_id: int) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            msg = missing_job(job_id, self.quarantined)
            raise UnknownJobError(msg)
        return job

    def worker(self, name: str) -> Worker:
        return self.workforce.worker(name)

    def jobs_page(
        self,
        limit: int | None = None,
        after: int | None = None,
        room: ReplyRoom | None = None,
        by: Principal = ADMIN,
        now: float | None = None,
    ) -> dict[str, Any]:
        """A page of job summaries after id `after`, with every job's counts (see
        `views.jobs_page`), as `by` may see them; `now` (the shell's clock) dates the
        elapsed times."""
        return views.jobs_page(self._core, limit, after, room, by, now)

    def readable(self, by: Principal, job_ids: Iterable[int]) -> None:
        """Refuse unless `by` may read each of `job_ids` (its cluster scope)."""
        views.readable(self._core, by, job_ids)

    def job_view(
        self,
        job_id: int,
        frame_limit: int | None = None,
        frame_after: int | None = None,
        room: ReplyRoom | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """A job's detail with a page of its frames (see `views.job_view`)."""
        return views.job_view(self._core, job_id, frame_limit, frame_after, room, now)

    def workers_view(self, by: Principal = ADMIN) -> list[dict[str, Any]]:
        return views.workers_view(self._core, by)

    def clusters_view(self, by: Principal = ADMIN) -> list[dict[str, Any]]:
        return views.clusters_view(self._core, by)

    def order_view(self, worker_name: str, limit: int) -> list[dict[str, Any]]:
        return views.order_view(self._core, worker_name, limit)

    def statistics(self) -> FarmStatistics:
        """Counts for the metrics, by cluster and state (see `FarmStatistics`)."""
        return views.statistics(self._core)

    def resources_view(self) -> dict[str, dict[str, float]]:
        return views.resources_view(self._core)

    def explain(self, job_id: int, worker_name: str | None = None) -> dict[str, Any]:
        """Why `job_id` does or does not run on each connected worker (see `views.explain`)."""
        return views.explain(self._core, job_id, worker_name)

    def ended(self, job_ids: Iterable[int]) -> dict[int, JobState]:
        """The jobs among `job_ids` that have ended, with their end state."""
        return views.ended(self._core, job_ids)

    def stuck(self, job_ids: Iterable[int]) -> dict[int, str]:
        """The jobs among `job_ids` that cannot end without an admin, each with why."""
        return views.stuck(self._core, job_ids)

    def settled(self, job_ids: Iterable[int]) -> bool:
        """Every job among `job_ids` has ended or is stuck: what `farmd wait` waits for."""
        return views.settled(self._core, job_ids)

    def frame_holder(self, job_id: int, number: int | None) -> tuple[Frame, str]:
        """The frame whose log `farmd logs` shows and the worker that ran it last."""
        return views.frame_holder(self._core, job_id, number)

    def users_view(self) -> list[dict[str, object]]:
        """Every user, revoked ones too, by name (no salt, no digest)."""
        return [user.view() for _, user in sorted(self.identities.users.items())]

    def user_secret(self, name: str) -> tuple[str, str] | None:
        """The salt and digest an active user's token must match, or None."""
        user = self.identities.users.get(name)
        if user is None or user.revoked_at is not None:
            return None
        return user.salt, user.digest

    def user_principal(self, name: str, floor: int) -> Principal | None:
        """The principal of active user `name` now (None: none, or revoked)."""
        return self.identities.principal(name, floor)

    def worker_tokens_view(self) -> list[dict[str, object]]:
        """Every worker token, revoked ones too, by id (no salt, no digest)."""
        return [token.view() for _, token in sorted(self.identities.worker_tokens.items())]

    @property
    def next_worker_token_id(self) -> int:
        """The id the next worker token gets (its secret is made for it)."""
        return self.identities.next_token_id

    def worker_token_secret(self, token_id: int) -> tuple[str, str] | None:
        """The salt and digest an active worker token's secret must match, or None."""
        token = self.identities.worker_tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return None
        return token.salt, token.digest

    def worker_token_principal(self, token_id: int) -> Principal | None:
        return self.identities.worker_principal(token_id)

    def live(self, job_id: int) -> bool:
        """Job `job_id` is in the live queue (in memory, and not only read back from
        history for a moment)."""
        return job_id in self.jobs and job_id not in self.recalled

    def unknown_jobs(self, job_ids: Iterable[int]) -> list[int]:
        """The ids among `job_ids` of jobs not in memory and not quarantined: those the
        shell recalls from history before a request that names them."""
        return [i for i in job_ids if i not in self.jobs and i not in self.quarantined]
