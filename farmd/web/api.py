"""The JSON API's endpoints (`/api/v1/...`): each builds a protocol request and hands it
to the farm (`Call.perform`); the table `ENDPOINTS` declares them all.

Results are the protocol's own (docs/protocol.md 6.1: job page, job detail, worker
summaries, cluster nodes, explanation, log map...), as JSON. Two things are the API's
own:

- **Filters on the job list** (`cluster`: a subtree, `state`: one or more states,
  `owner`, `q`: text in the name, case-insensitive) page the *filtered* list: a page
  holds up to `limit` matching jobs, by id, and `next` says where the next page
  starts. To find them the API reads the queue a protocol page at a time, at most
  `MAX_SCANNED` jobs per call, so one call costs a bounded amount of the supervisor's
  time however rare the match: a page may then hold fewer than `limit` jobs, even
  none, with `next` set (`scanned` says how many were read). Follow `next` until it is
  null. `counts` and `total` are the farm's, unfiltered, as in the protocol.
- `GET /api/v1/me`: who the token stands for and what it may do (the page shows the
  actions a person may take, and no others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from farmd.cluster import is_within, parse_cluster
from farmd.jobs import JobState
from farmd.protocol import (
    DEFAULT_PAGE,
    MAX_NAME_CHARS,
    MAX_PAGE,
    ControlRequest,
    Explain,
    GetJob,
    GetLog,
    Kill,
    ListAudit,
    ListClusters,
    ListJobs,
    ListWorkers,
    Lock,
    Modify,
    Remove,
    Submit,
    Unlock,
)
from farmd.protocol_releases import ListJobTypes, ListReleases
from farmd.web.calls import ApiError, Call, Endpoint, Param, build

MAX_SCANNED: Final = 20_000  # jobs one filtered page reads at most (module docs)
STATES: Final = tuple(state.value for state in JobState)

JOB_ID = Param(name="job_id", low=1, help="a job id")
WORKER = Param(name="worker", kind="str", max_chars=MAX_NAME_CHARS, help="a worker's name")
LIMIT = Param(name="limit", low=1, high=MAX_PAGE, default=DEFAULT_PAGE, help="entries at most")
CLUSTER_Q = Param(name="cluster", kind="str", help="a cluster path")


@attrs.frozen(kw_only=True)
class JobFilter:
    """Which jobs a filtered list keeps (module docs); all None/empty: every job."""

    cluster: str | None = None
    states: frozenset[str] = frozenset()
    owner: str | None = None
    text: str | None = None  # lower case

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> JobFilter:
        cluster = params.get("cluster")
        states: frozenset[str] = frozenset()
        if params.get("state"):
            states = frozenset(s.strip() for s in params["state"].split(","))
            unknown = sorted(states - set(STATES))
            if unknown:
                msg = f"bad 'state': {', '.join(unknown)} (states: {', '.join(STATES)})"
                raise ApiError(msg)
        text = params.get("q")
        return cls(
            cluster=parse_cluster(cluster) if cluster else None,
            states=states,
            owner=params.get("owner"),
            text=text.lower() if text else None,
        )

    def __bool__(self) -> bool:
        return bool(self.cluster or self.states or self.owner is not None or self.text)

    def matches(self, job: Mapping[str, Any]) -> bool:
        return (
            (self.cluster is None or is_within(job["cluster"], self.cluster))
            and (not self.states or job["state"] in self.states)
            and (self.owner is None or job["owner"] == self.owner)
            and (self.text is None or self.text in job["name"].lower())
        )


async def list_jobs(call: Call) -> Any:
    p = call.params
    wanted = JobFilter.of(p)
    if not wanted:
        return await call.perform(
            ListJobs(request_id=0, limit=p["limit"], after=p["after"], history=p["history"])
        )
    found: list[dict[str, Any]] = []
    after, scanned = p["after"], 0
    while True:
        page = await call.perform(
            ListJobs(request_id=0, limit=MAX_PAGE, after=after, history=p["history"])
        )
        jobs = page["jobs"]
        scanned += len(jobs)
        for index, job in enumerate(jobs):
            if wanted.matches(job):
                found.append(job)
                if len(found) == p["limit"]:
                    more = index + 1 < len(jobs) or page["next"] is not None
                    after = job["id"] if more else None
                    return _filtered(page, found, after, scanned)
        after = page["next"]
        if after is None or scanned >= MAX_SCANNED:
            return _filtered(page, found, after, scanned)


def _filtered(
    page: Mapping[str, Any], jobs: list[dict[str, Any]], after: int | None, scanned: int
) -> dict[str, Any]:
    return {
        "jobs": jobs,
        "next": after,
        "counts": page["counts"],
        "total": page["total"],
        "scanned": scanned,
    }


async def get_job(call: Call) -> Any:
    p = call.params
    request = GetJob(
        request_id=0, job_id=p["job_id"], frame_limit=p["frame_limit"], frame_after=p["frame_after"]
    )
    return await call.perform(request)


async def explain(call: Call) -> Any:
    return await call.perform(
        Explain(request_id=0, job_id=call.params["job_id"], worker=call.params["worker"])
    )


async def frame_log(call: Call) -> Any:
    p = call.params
    return await call.perform(
        GetLog(request_id=0, job_id=p["job_id"], frame=p["frame"], offset=p["offset"])
    )


async def list_workers(call: Call) -> Any:
    return await call.perform(ListWorkers(request_id=0))


async def list_clusters(call: Call) -> Any:
    return await call.perform(ListClusters(request_id=0))


async def list_releases(call: Call) -> Any:
    return await call.perform(ListReleases(request_id=0, cluster=call.params["cluster"]))


async def list_types(call: Call) -> Any:
    return await call.perform(ListJobTypes(request_id=0, cluster=call.params["cluster"] or "/"))


async def list_audit(call: Call) -> Any:
    p = call.params
    request = ListAudit(
        request_id=0,
        limit=p["limit"],
        before=p["before"],
        user=p["user"],
        job=p["job"],
        since=p["since"],
    )
    return await call.perform(request)


async def me(call: Call) -> Any:
    who = call.who
    return {
        "who": who.who,
        "user": who.user or who.owner,
        "role": who.role.value if who.role is not None else who.credential.value,
        "admin": who.is_admin,
        "clusters": str(who.clusters) if who.clusters is not None else None,
        "actions": sorted(action.value for action in who.allowed),
    }


async def submit(call: Call) -> Any:
    return await call.perform(build(Submit, call.body))


async def kill(call: Call) -> Any:
    return await call.perform(Kill(request_id=0, job_ids=(call.params["job_id"],)))


async def control(call: Call) -> Any:
    return await call.perform(build(ControlRequest, call.body))


async def modify(call: Call) -> Any:
    return await call.perform(build(Modify, call.body, job_id=call.params["job_id"]))


async def remove(call: Call) -> Any:
    return await call.perform(Remove(request_id=0, job_ids=(call.params["job_id"],)))


async def lock(call: Call) -> Any:
    return await call.perform(build(Lock, call.body, worker=call.params["worker"]))


async def unlock(call: Call) -> Any:
    return await call.perform(Unlock(request_id=0, worker=call.params["worker"]))


V1: Final = "/api/v1"

ENDPOINTS: Final = (
    Endpoint(
        method="GET",
        path=f"{V1}/me",
        handler=me,
        summary="Who the token stands for, and the actions it may take",
        result="Me",
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/jobs",
        handler=list_jobs,
        summary="A page of jobs by id, filtered (filters page the filtered list)",
        query=(
            LIMIT,
            Param(name="after", low=0, help="the `next` of the previous page"),
            Param(name="history", kind="bool", default=False, help="jobs in history too"),
            Param(name="cluster", kind="str", help="jobs in this cluster or below it"),
            Param(name="state", kind="str", help="comma-separated job states"),
            Param(name="owner", kind="str", max_chars=MAX_NAME_CHARS, help="the owner"),
            Param(name="q", kind="str", max_chars=MAX_NAME_CHARS, help="text in the name"),
        ),
        result="JobPage",
    ),
    Endpoint(
        method="POST",
        path=f"{V1}/jobs",
        handler=submit,
        summary="Submit a job (the body: submit's fields, docs/protocol.md 6.2)",
        body="JobSpec",
        result="JobSummary",
        status=201,
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/jobs/{{job_id}}",
        handler=get_job,
        summary="A job in detail, with a page of its frames",
        path_params=(JOB_ID,),
        query=(
            Param(name="frame_limit", low=1, high=MAX_PAGE, default=DEFAULT_PAGE),
            Param(name="frame_after", low=0, help="the `frame_next` of the previous page"),
        ),
        result="JobDetail",
    ),
    Endpoint(
        method="PATCH",
        path=f"{V1}/jobs/{{job_id}}",
        handler=modify,
        summary="Modify a job (priority, cluster, restrictions, ...)",
        path_params=(JOB_ID,),
        body="Modify",
        result="JobSummary",
    ),
    Endpoint(
        method="DELETE",
        path=f"{V1}/jobs/{{job_id}}",
        handler=remove,
        summary="Remove an ended job, with its sub-jobs",
        path_params=(JOB_ID,),
        result="IdList",
    ),
    Endpoint(
        method="POST",
        path=f"{V1}/jobs/{{job_id}}/kill",
        handler=kill,
        summary="Kill a job and its sub-jobs",
        path_params=(JOB_ID,),
        result="IdList",
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/jobs/{{job_id}}/explain",
        handler=explain,
        summary="Why the job does or does not run on each worker",
        path_params=(JOB_ID,),
        query=(attrs.evolve(WORKER, help="only this worker"),),
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/jobs/{{job_id}}/frames/{{frame}}/log",
        handler=frame_log,
        summary="A frame's log, from the worker that last ran it (its end, or from `offset`)",
        path_params=(JOB_ID, Param(name="frame", low=0, help="a frame (any in a chunk)")),
        query=(Param(name="offset", low=0, help="the `size` of the last answer: what follows"),),
        result="Log",
    ),
    Endpoint(
        method="POST",
        path=f"{V1}/control",
        handler=control,
        summary="Kill, block, unblock, retry, suspend or resume frames (all or none)",
        body="Control",
        result="StringList",
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/workers",
        handler=list_workers,
        summary="The connected workers",
    ),
    Endpoint(
        method="POST",
        path=f"{V1}/workers/{{worker}}/lock",
        handler=lock,
        summary="Lock a worker: drain (its frames finish) or purge (they are requeued)",
        path_params=(WORKER,),
        body="Lock",
        body_required=False,
        result="StringList",
    ),
    Endpoint(
        method="POST",
        path=f"{V1}/workers/{{worker}}/unlock",
        handler=unlock,
        summary="Unlock a worker",
        path_params=(WORKER,),
    ),
    Endpoint(
        method="GET", path=f"{V1}/clusters", handler=list_clusters, summary="The cluster tree"
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/releases",
        handler=list_releases,
        summary="The farm's releases; with `cluster`, what serves it",
        query=(CLUSTER_Q,),
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/types",
        handler=list_types,
        summary="The job types effective at a cluster (default /)",
        query=(CLUSTER_Q,),
    ),
    Endpoint(
        method="GET",
        path=f"{V1}/audit",
        handler=list_audit,
        summary="The audit log, newest first",
        query=(
            LIMIT,
            Param(name="before", low=0, help="entries older than this entry id"),
            Param(name="user", kind="str", max_chars=MAX_NAME_CHARS),
            Param(name="job", low=0),
            Param(name="since", kind="number", help="Unix time"),
        ),
    ),
)
