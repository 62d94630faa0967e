"""Python tasks: a release's `module:function`, run in a frame's process with a context.

Theory of operation
-------------------
A job type with `python: module:function` runs each frame as (`params.task_command`)::

    PYTHON -m farmd.releases.task_runner RELEASE_DIR module:function

where PYTHON is the worker's own interpreter (farmd is importable there) and RELEASE_DIR
the release unpacked in the worker's cache. `main` puts RELEASE_DIR first on
`sys.path`, imports the module, builds a `TaskContext` from the frame's environment and
calls `function(context)`, as Tilebox calls `Task.execute(context)`. The frame's end is
the process's exit status:

- 0: the function returned (what it returned is not used);
- 1: it raised (or importing its module did): the traceback is on stderr, in the
  frame's log, and the frame failed like any command that exits 1;
- 2: the frame could not be started as asked: a bad `module:function` (no such module
  or function, not callable), a missing release directory, or a frame environment that
  is not farmd's (`FARMD_PARAMS` not a JSON object, `FARMD_FRAME` not a number...); one
  line on stderr naming what is wrong.

A task that calls `sys.exit(n)` exits `n`, as any Python program.

The context holds what the frame's environment says (the agent sets it): `job_id`
(`FARMD_JOB_ID`), `job_name` (`FARMD_JOB_NAME`), `frame`, `start`, `end`
(`FARMD_FRAME`, `FARMD_FRAME_START`, `FARMD_FRAME_END`), `cluster` (`FARMD_CLUSTER`,
the job's), `params` (`FARMD_PARAMS`, the job's typed parameter values as a JSON
object) and `release_dir`. `submit_subjob` submits a job of another type as a sub-job
of this frame's job, in this job's cluster unless told another (a cross-cluster
workflow, Tilebox's MultiCluster), through one `farmd.client.Client` made on first use
from the frame's environment (`FARMD_SUPERVISOR`, and `FARMD_TOKEN`, the frame's job
token, which may submit sub-jobs), and closed when the task ends.

This module imports nothing of farmd's at the top but `farmd.errors`: a task's process
starts fast, and `farmd.client` is imported only when a sub-job is submitted.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

from farmd.errors import TaskSetupError

USAGE: Final = "usage: python -m farmd.releases.task_runner RELEASE_DIR module:function"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_CALL: Final = 2


class SubJobClient(Protocol):
    """What a task's context needs of `farmd.client.Client`."""

    def submit(self, argv: Sequence[str], **options: Any) -> int: ...

    def close(self) -> None: ...


def _farm_client() -> SubJobClient:
    from farmd.client import Client  # only a task that submits pays for the import

    return Client()


def log(message: object) -> None:
    """Print a line to the frame's log at once (stdout, flushed)."""
    print(message, flush=True)


@attrs.frozen(kw_only=True)
class TaskContext:
    """What a Python task is called with: its frame, its job's parameters, and a way to
    submit sub-jobs. Frozen, but for `params`, a plain dict the task may read freely."""

    job_id: int
    job_name: str = ""
    frame: int
    start: int
    end: int
    cluster: str
    params: dict[str, Any] = attrs.field(factory=dict)
    release_dir: Path
    # How to reach the supervisor; tests give a fake. One client serves every
    # submit_subjob of the task (held in `_client`, the one mutable part).
    connect: Callable[[], SubJobClient] = attrs.field(default=_farm_client, repr=False, eq=False)
    _client: list[SubJobClient] = attrs.field(factory=list, init=False, repr=False, eq=False)

    @classmethod
    def from_env(
        cls,
        release_dir: str | os.PathLike[str],
        environ: Mapping[str, str] | None = None,
        connect: Callable[[], SubJobClient] = _farm_client,
    ) -> TaskContext:
        """The context of the frame whose environment is `environ` (os.environ)."""
        env = os.environ if environ is None else environ
        return cls(
            job_id=_int_var(env, "FARMD_JOB_ID"),
            job_name=env.get("FARMD_JOB_NAME", ""),
            frame=_int_var(env, "FARMD_FRAME"),
            start=_int_var(env, "FARMD_FRAME_START"),
            end=_int_var(env, "FARMD_FRAME_END"),
            cluster=_text_var(env, "FARMD_CLUSTER"),
            params=_params(env),
            release_dir=Path(release_dir),
            connect=connect,
        )

    def submit_subjob(
        self,
        job_type: str,
        params: Mapping[str, object] | None = None,
        *,
        cluster: str | None = None,
        depends_on: Sequence[int | str] = (),
        name: str | None = None,
        frames: str | None = None,
    ) -> int:
        """Submit a job of `job_type` (of a release effective at its cluster) with
        `params`, as a sub-job of this task's job; its id. It runs in this job's cluster
        unless `cluster` says another, after the jobs of `depends_on` (ids, or
        `"ID:MODE"` as `farmd submit --depends-on`), which may be in other clusters.
        It runs only on workers of that cluster or below it (a restriction), so a
        cluster with no capable worker keeps it queued rather than send it elsewhere.
        A refusal raises the supervisor's error (a `farmd.errors.FarmdError`)."""
        if not self._client:
            self._client.append(self.connect())
        where = cluster or self.cluster
        return self._client[0].submit(
            [],
            job_type=job_type,
            params=dict(params or {}),
            cluster=where,
            # Tilebox's rule: a task for a cluster runs there (its subtree) or waits,
            # never on another cluster's worker that happens to have the type too
            restrictions="/+" if where.rstrip("/") == "" else f"{where.rstrip('/')}/+",
            parent=self.job_id,
            depends_on=list(depends_on),
            name=name or "",
            frames=frames or "",
        )

    def log(self, message: object) -> None:
        """Print a line to the frame's log at once."""
        log(message)

    def close(self) -> None:
        """Close the connection `submit_subjob` opened, if any."""
        while self._client:
            self._client.pop().close()


def _int_var(env: Mapping[str, str], name: str) -> int:
    text = env.get(name)
    try:
        return int(text)  # type: ignore[arg-type]  # None is refused just below
    except (TypeError, ValueError):
        what = "is not set" if text is None else f"is {text!r}, not a whole number"
        msg = f"{name} {what}: run Python tasks through a farmd worker"
        raise TaskSetupError(msg) from None


def _text_var(env: Mapping[str, str], name: str) -> str:
    text = env.get(name)
    if not text:
        msg = f"{name} is not set: run Python tasks through a farmd worker"
        raise TaskSetupError(msg)
    return text


def _params(env: Mapping[str, str]) -> dict[str, Any]:
    text = env.get("FARMD_PARAMS", "").strip()
    if not text:
        return {}  # a job type without parameters
    try:
        params = json.loads(text)
    except ValueError as exc:
        msg = f"FARMD_PARAMS is not JSON ({exc})"
        raise TaskSetupError(msg) from None
    if not isinstance(params, dict):
        msg = f"FARMD_PARAMS must be a JSON object of the job's params, not {type(params).__name__}"
        raise TaskSetupError(msg)
    return params


def load_task(target: str) -> Callable[[TaskContext], object]:
    """The function `module:function` names (a dotted function: `mod:Class.method`),
    imported from `sys.path`. A bad name is a `TaskSetupError`; an error raised while
    the module runs is the task's own, and propagates."""
    module_name, colon, function_name = target.partition(":")
    if not colon or not module_name or not function_name:
        msg = f"{target!r} is not 'module:function'"
        raise TaskSetupError(msg)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module named here being missing is a bad name; one that it imports
        # being missing is the task's own failure, with its traceback.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            msg = f"{target}: no module named {exc.name!r} in the release or the worker"
            raise TaskSetupError(msg) from None
        raise
    found: object = module
    for part in function_name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            msg = f"{target}: module {module_name!r} has no {function_name!r}"
            raise TaskSetupError(msg) from None
    if not callable(found):
        msg = f"{target}: {function_name!r} is a {type(found).__name__}, not a function"
        raise TaskSetupError(msg)
    return found  # callable; its signature is the task's to get right


def run(release_dir: str, target: str, environ: Mapping[str, str] | None = None) -> int:
    """Run one task as `main` does; its exit status."""
    here = Path(release_dir)
    try:
        if not here.is_dir():
            msg = f"release directory {release_dir!r} does not exist"
            raise TaskSetupError(msg)
        sys.path.insert(0, str(here))
        context = TaskContext.from_env(here, environ)
        function = load_task(target)
    except TaskSetupError as exc:
        print(f"farmd task: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_CALL
    except Exception as exc:  # importing the task's module failed: the task's own fault
        _print_traceback(exc)
        return EXIT_FAILED
    try:
        function(context)
    except Exception as exc:
        _print_traceback(exc)
        return EXIT_FAILED
    finally:
        context.close()
    return EXIT_OK


def _print_traceback(exc: BaseException) -> None:
    """The traceback without this module's own frame, which only says it called."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(f"farmd task: error: {USAGE}", file=sys.stderr, flush=True)
        return EXIT_BAD_CALL
    return run(args[0], args[1])


if __name__ == "__main__":
    # Run as `-m`, this file is `__main__`; call the one importable as
    # farmd.releases.task_runner, so that a task importing TaskContext gets the class
    # its context is an instance of.
    from farmd.releases import task_runner

    sys.exit(task_runner.main())
