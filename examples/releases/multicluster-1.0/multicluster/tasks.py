"""The tasks of the multicluster release, Tilebox's MultiCluster example as farmd Python
tasks. The worker runs each in a child process (`python -m farmd.releases.task_runner`)
with the release first on sys.path, and calls it with a `TaskContext`: the frame, the
job's parameters (`context.params`), and `context.submit_subjob(job_type, params,
cluster=..., depends_on=[...])`, which returns the new sub-job's id."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from farmd.releases.task_runner import TaskContext


def multi_cluster(context: TaskContext) -> None:
    # this submits a task to the same cluster as the one currently executing this task
    same_cluster = context.submit_subjob("dummy", {})
    other_cluster = context.submit_subjob(
        "dummy",
        {},
        # this task runs only on a worker in the other cluster
        cluster=context.params["other_cluster"],
        # dependencies can be specified across clusters
        depends_on=[same_cluster],
    )
    context.log(
        f"submitted job {same_cluster} in {context.cluster} and job {other_cluster} "
        f"in {context.params['other_cluster']}, which waits for it"
    )


def dummy(context: TaskContext) -> None:
    pass
