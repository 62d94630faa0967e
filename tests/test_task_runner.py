"""farmd.releases.task_runner: Python tasks run as a frame runs them (a child process,
its exit status and stderr what the frame's log shows), their context read from the
frame's environment, and the multicluster example's sub-jobs across clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from farmd.errors import TaskSetupError
from farmd.releases import JobType, fill_command, fill_frame, load_manifest, task_command
from farmd.releases.task_runner import TaskContext, load_task

EXAMPLES = Path(__file__).parent.parent / "examples" / "releases"
MULTICLUSTER = EXAMPLES / "multicluster-1.0"

TASKS = """\
import json
import os
import sys


def record(context):
    fields = {
        "job_id": context.job_id,
        "job_name": context.job_name,
        "frame": context.frame,
        "start": context.start,
        "end": context.end,
        "cluster": context.cluster,
        "params": context.params,
        "release_dir": str(context.release_dir),
        "first_path": sys.path[0],
    }
    context.log("recorded")
    with open(os.environ["OUT"], "w") as out:
        json.dump(fields, out)


def fail(context):
    raise RuntimeError(f"frame {context.frame} went wrong")


def leave(context):
    sys.exit(7)


not_callable = 42
"""

FRAME_ENV = {
    "FARMD_JOB_ID": "12",
    "FARMD_JOB_NAME": "shot 010",
    "FARMD_FRAME": "5",
    "FARMD_FRAME_START": "5",
    "FARMD_FRAME_END": "8",
    "FARMD_CLUSTER": "/show1/fx",
    "FARMD_PARAMS": json.dumps({"scene": "/a.blend", "samples": 64, "fast": True}),
}


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "cache" / ("f" * 64)
    (root / "studio").mkdir(parents=True)
    (root / "studio" / "__init__.py").write_text("")
    (root / "studio" / "tasks.py").write_text(TASKS)
    (root / "studio" / "broken.py").write_text("import no_such_module_anywhere\n")
    return root


def run_task(
    release: Path, target: str, env: Mapping[str, str] = FRAME_ENV, *args: str
) -> subprocess.CompletedProcess[str]:
    """The argv a worker runs for a Python job type, filled as the worker fills it."""
    argv = fill_frame(
        task_command(JobType(name="t", python="m:f")), 5, 5, 8, str(release), python=sys.executable
    )
    argv = [*argv[:-1], target, *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith("FARMD_")}
    return subprocess.run(
        argv,
        env={**base, **env, "OUT": str(release.parent / "out.json")},
        cwd=release.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- the argv


def test_a_python_type_runs_the_task_runner() -> None:
    job_type = JobType(name="t", python="studio.tasks:record")
    argv = fill_command(job_type, {})
    assert argv == task_command(job_type)
    assert fill_frame(argv, 3, 1, 9, "/cache/abc", python="/usr/bin/python3") == [
        "/usr/bin/python3", "-m", "farmd.releases.task_runner", "/cache/abc",
        "studio.tasks:record",
    ]  # fmt: skip
    # Not told which interpreter, the worker fills in its own.
    assert fill_frame(argv, 3, 1, 9, "/r")[0] == sys.executable


def test_python_placeholder_is_left_alone_without_a_release() -> None:
    assert fill_frame(["{python}", "{frame}"], 3, 3, 3, None, python="/py") == ["{python}", "3"]


# --------------------------------------------------------------------------- as a process


def test_a_task_gets_its_context_and_exits_0(release: Path) -> None:
    done = run_task(release, "studio.tasks:record")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "recorded\n"
    assert json.loads((release.parent / "out.json").read_text()) == {
        "job_id": 12,
        "job_name": "shot 010",
        "frame": 5,
        "start": 5,
        "end": 8,
        "cluster": "/show1/fx",
        "params": {"scene": "/a.blend", "samples": 64, "fast": True},
        "release_dir": str(release),
        "first_path": str(release),
    }


def test_no_params_is_an_empty_dict(release: Path) -> None:
    env = {k: v for k, v in FRAME_ENV.items() if k != "FARMD_PARAMS"}
    assert run_task(release, "studio.tasks:record", env).returncode == 0
    assert json.loads((release.parent / "out.json").read_text())["params"] == {}


def test_a_raising_task_prints_its_traceback_and_exits_1(release: Path) -> None:
    done = run_task(release, "studio.tasks:fail")
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):\n")
    assert 'studio/tasks.py", line' in done.stderr
    assert "task_runner.py" not in done.stderr  # the runner's own frame is left out
    assert done.stderr.endswith("RuntimeError: frame 5 went wrong\n")


def test_a_module_failing_to_import_is_the_tasks_failure(release: Path) -> None:
    done = run_task(release, "studio.broken:anything")
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" in done.stderr


def test_a_task_may_choose_its_exit_status(release: Path) -> None:
    assert run_task(release, "studio.tasks:leave").returncode == 7


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("studio.nope:run", "studio.nope:run: no module named 'studio.nope' in the release"),
        ("nowhere:run", "nowhere:run: no module named 'nowhere' in the release or the worker"),
        ("studio.tasks:nope", "studio.tasks:nope: module 'studio.tasks' has no 'nope'"),
        ("studio.tasks:not_callable", "'not_callable' is a int, not a function"),
        ("studio.tasks", "'studio.tasks' is not 'module:function'"),
    ],
)
def test_a_bad_target_is_one_line_and_exit_2(release: Path, target: str, message: str) -> None:
    done = run_task(release, target)
    assert done.returncode == 2
    assert done.stderr.startswith("farmd task: error: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FARMD_PARAMS": "[1, 2]"}, "FARMD_PARAMS must be a JSON object of the job's params"),
        ({"FARMD_PARAMS": "{oops"}, "FARMD_PARAMS is not JSON"),
        ({"FARMD_FRAME": "five"}, "FARMD_FRAME is 'five', not a whole number"),
        ({"FARMD_JOB_ID": ""}, "FARMD_JOB_ID is '', not a whole number"),
    ],
)
def test_a_bad_frame_environment_is_exit_2(
    release: Path, env: dict[str, str], message: str
) -> None:
    done = run_task(release, "studio.tasks:record", {**FRAME_ENV, **env})
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.count("\n") == 1


def test_bad_invocations_are_exit_2(release: Path, tmp_path: Path) -> None:
    done = run_task(tmp_path / "missing", "studio.tasks:record")
    assert done.returncode == 2
    assert "release directory" in done.stderr
    assert "does not exist" in done.stderr
    done = run_task(release, "studio.tasks:record", FRAME_ENV, "extra")
    assert done.returncode == 2
    assert "usage: python -m farmd.releases.task_runner RELEASE_DIR module:function" in done.stderr


# --------------------------------------------------------------------------- sub-jobs


class FakeClient:
    """Records what `farmd.client.Client.submit` would be asked; numbers jobs from 100."""

    def __init__(self) -> None:
        self.submitted: list[tuple[list[str], dict[str, Any]]] = []
        self.closed = False

    def submit(self, argv: Sequence[str], **options: Any) -> int:
        self.submitted.append((list(argv), options))
        return 100 + len(self.submitted) - 1

    def close(self) -> None:
        self.closed = True


def context(release_dir: Path, client: FakeClient, **env: str) -> TaskContext:
    made: list[FakeClient] = []

    def connect() -> FakeClient:
        made.append(client)
        assert len(made) == 1, "one client serves every sub-job of a task"
        return client

    return TaskContext.from_env(release_dir, {**FRAME_ENV, **env}, connect=connect)


def test_submit_subjob_defaults(tmp_path: Path) -> None:
    client = FakeClient()
    ctx = context(tmp_path, client)
    assert ctx.submit_subjob("dummy") == 100
    assert ctx.submit_subjob("render", {"n": 3}, name="r", frames="1-10", depends_on=["100:done"])
    assert client.submitted == [
        (
            [],
            {
                "job_type": "dummy",
                "params": {},
                "cluster": "/show1/fx",
                "restrictions": "/show1/fx/+",
                "parent": 12,
                "depends_on": [],
                "name": "",
                "frames": "",
            },
        ),
        (
            [],
            {
                "job_type": "render",
                "params": {"n": 3},
                "cluster": "/show1/fx",
                "restrictions": "/show1/fx/+",
                "parent": 12,
                "depends_on": ["100:done"],
                "name": "r",
                "frames": "1-10",
            },
        ),
    ]
    ctx.close()
    assert client.closed


def test_the_multicluster_example_submits_across_clusters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(MULTICLUSTER))
    client = FakeClient()
    ctx = context(
        MULTICLUSTER,
        client,
        FARMD_CLUSTER="/testing",
        FARMD_PARAMS=json.dumps({"other_cluster": "/other-cluster"}),
    )

    load_task("multicluster.tasks:multi_cluster")(ctx)

    first, second = client.submitted
    assert first[1]["job_type"] == second[1]["job_type"] == "dummy"
    assert (first[1]["cluster"], first[1]["depends_on"]) == ("/testing", [])
    # The second runs only in the other cluster, after the first: a cross-cluster dependency.
    assert (second[1]["cluster"], second[1]["depends_on"]) == ("/other-cluster", [100])
    assert second[1]["restrictions"] == "/other-cluster/+"  # never on another's worker
    assert first[1]["parent"] == second[1]["parent"] == 12
    load_task("multicluster.tasks:dummy")(ctx)
    assert len(client.submitted) == 2


def test_every_example_python_entry_is_a_real_function(monkeypatch: pytest.MonkeyPatch) -> None:
    for manifest in sorted(EXAMPLES.glob("*/farmd-release.yaml")):
        monkeypatch.syspath_prepend(str(manifest.parent))
        for job_type in load_manifest(manifest).job_types:
            if job_type.python is not None:
                assert callable(load_task(job_type.python)), job_type.python


def test_load_task_refusals_are_setup_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(MULTICLUSTER))
    with pytest.raises(TaskSetupError, match="has no 'nope'"):
        load_task("multicluster.tasks:nope")


def test_the_example_dummy_runs_as_a_frame() -> None:
    env = {**FRAME_ENV, "FARMD_PARAMS": json.dumps({"other_cluster": "/o"})}
    done = run_task(MULTICLUSTER, "multicluster.tasks:dummy", env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_task_module_may_import_the_context_class(release: Path) -> None:
    (release / "typed.py").write_text(
        textwrap.dedent(
            """\
            from farmd.releases.task_runner import TaskContext

            def check(context):
                assert isinstance(context, TaskContext), type(context)
            """
        )
    )
    done = run_task(release, "typed:check")
    assert (done.returncode, done.stderr) == (0, "")
