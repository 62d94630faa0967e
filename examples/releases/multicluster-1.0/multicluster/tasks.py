"""The tasks of the multicluster release. The worker runs each in a child process with
the release on sys.path and calls it with a context: the frame, the job's parameters,
and `submit_subjob(type, params, cluster=..., depends_on=[...])`."""

from typing import Any


def multi_cluster(context: Any) -> None:
    # this submits a task to the same cluster as the one currently executing this task
    same_cluster = context.submit_subjob("dummy", {})
    context.submit_subjob(
        "dummy",
        {},
        # this task runs only on a worker in the other cluster
        cluster=context.params["other_cluster"],
        # dependencies can be specified across clusters
        depends_on=[same_cluster],
    )


def dummy(context: Any) -> None:
    pass
