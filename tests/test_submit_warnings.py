"""A submit warns, without refusing, when no connected worker could ever run the job
(docs/protocol.md 6.2, "Submit warnings"): in the core (`submit_warnings`), in the
batch answer, and in `farmd submit` against a real supervisor."""

from __future__ import annotations

import json

import pytest

from farmd.core import LockWorker, Scheduler
from farmd.core.placement import MAX_WARNING_CHARS
from farmd.supervisor.admin import MAX_BATCH_WARNINGS, batch_answer
from tests.e2e_support import Farm
from tests.test_core import joined, submit


def warned(core: Scheduler, **job: object) -> list[str]:
    job_id = core.handle(submit(now=1.0, **job)).result
    return core.submit_warnings([job_id]).get(job_id, [])


@pytest.mark.parametrize(
    ("workers", "job", "why"),
    [
        ([], {}, "no worker connected"),
        ([{"types": ("blender",)}], {"job_type": "nuke"}, "no worker runs type 'nuke'"),
        ([{"slots": 8}], {"reserve": "slots=16"}, "needs slots=16; the largest host has 8"),
        ([{}], {"restrictions": "/show9/+"}, "restrictions '/show9/+' match no worker"),
        (
            [{"restrictions": "/show1/+"}],
            {"cluster": "/show2"},
            "no worker accepts jobs in /show2 (its restrictions)",
        ),
        (
            [{"resources": {"gpu": 1}}],
            {"reserve": "slots=1,gpu=2"},
            "needs gpu=2; the most a host has is 1",
        ),
        ([{}], {"reserve": "license.nuke=2"}, "needs license.nuke=2; the farm has 1"),
        # a job waiting for another is judged too: it will not run once released either
        ([{"types": ("blender",)}], {"job_type": "nuke", "depends_on": (1,)}, None),
    ],
)
def test_submit_warns_when_no_connected_worker_could_run_the_job(
    workers: list[dict[str, object]], job: dict[str, object], why: str | None
) -> None:
    core = Scheduler(resources={"license.nuke": 1})
    for n, fields in enumerate(workers):
        cluster = str(fields.pop("cluster", "/"))
        core.handle(joined(f"w{n}", cluster, now=0.0, **fields))
    if why is None:  # the dependency case: job 1 first
        core.handle(submit(now=0.5, job_type="nuke"))
        why = "no worker runs type 'nuke'"
    job_id = core.handle(submit(now=1.0, **job)).result  # accepted all the same
    assert core.submit_warnings([job_id]) == {
        job_id: [f"no connected worker could run job {job_id}: {why}"]
    }


def test_no_warning_for_a_job_some_worker_could_run() -> None:
    core = Scheduler()
    core.handle(joined("w1", slots=1, now=0.0, types=("nuke",)))
    assert warned(core, job_type="nuke") == []  # it runs at once
    assert warned(core, job_type="nuke") == []  # it waits for the slot: no warning
    core.handle(LockWorker(name="w1", now=2.0))
    assert warned(core, job_type="nuke") == []  # a lock is lifted: a wait, not never


def test_a_warning_line_is_bounded() -> None:
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    restrictions = ",".join(f"/show{n}/+" for n in range(300))  # ~3 KB of them
    (line,) = warned(core, restrictions=restrictions)
    assert len(line) == MAX_WARNING_CHARS
    assert line.endswith("...")


def test_a_batch_answer_lists_each_jobs_warnings_bounded() -> None:
    warnings = {n: [f"w {n}"] for n in range(1, 101)}
    answer = batch_answer(list(range(1, 201)), warnings)
    assert answer["ids"] == list(range(1, 201))
    assert len(answer["warnings"]) == MAX_BATCH_WARNINGS
    assert answer["warnings"]["1"] == ["w 1"]
    assert answer["warnings_omitted"] == 100 - MAX_BATCH_WARNINGS
    assert batch_answer([1], {}) == {"ids": [1], "warnings": {}, "warnings_omitted": 0}


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_farmd_submit_warns_on_stderr_and_still_submits(farm: Farm) -> None:
    farm.worker("w1", extra=("--type", "blender"))
    result = farm.cli("submit", "--job-type", "nuke", "--", "true")
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    assert result.stderr.splitlines() == [
        f"farmd: warning: no connected worker could run job {job_id}: no worker runs type 'nuke'"
    ]
    assert farm.job(job_id)["state"] == "pending"
    # --json: the summary carries them; a job that can run has none
    result = farm.cli("submit", "--json", "--job-type", "blender", "--", "true")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["warnings"] == []
    batch = farm.api.submit_batch([{"argv": ["true"], "job_type": "nuke"}, {"argv": ["true"]}])
    first, _ = batch["ids"]
    assert batch["warnings"] == {
        str(first): [f"no connected worker could run job {first}: no worker runs type 'nuke'"]
    }
    assert batch["warnings_omitted"] == 0
