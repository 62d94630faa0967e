"""End-to-end: dependency modes and sub-jobs on real `farmd` processes.

Dependencies (`farmd submit --depends-on ID[:complete|done|failed|frames]`): a dependent
waits, runs once its dependencies hold, and is `blocked` with a one-line `reason` when
one can no longer hold, until the job it names is retried. Sub-jobs: a running frame
submits jobs with nothing but its environment (FARMD_SUPERVISOR, FARMD_TOKEN, its job
token, and FARMD_JOB_ID), through `farmd submit` or `farmd.client`; the parent waits for
them, fails with them, is killed and removed with them, and the job token does nothing
but submit and read.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e_support import (
    Farm,
    assert_refused,
    describe,
    lines,
    wait_for,
)

pytestmark = pytest.mark.e2e

FARMD = [sys.executable, "-m", "farmd"]  # the command line, as a frame runs it


def state(farm: Farm, job_id: int) -> str:
    return str(farm.job(job_id)["state"])


def frame_states(farm: Farm, job_id: int) -> dict[int, str]:
    return {n: f["state"] for n, f in farm.frames(job_id).items()}


def shell(*commands: Sequence[str]) -> list[str]:
    """`sh -c` running each command (an argv) in turn, whatever their exit statuses."""
    return ["sh", "-c", "\n".join(shlex.join(c) for c in commands)]


def unless_marker(marker: Path, command: Sequence[str]) -> list[str]:
    """A frame that exits 1 while `marker` exists, else runs `command`."""
    return ["sh", "-c", f"test ! -e {shlex.quote(str(marker))} && exec {shlex.join(command)}"]


# --------------------------------------------------------------------------- dependencies


def test_a_complete_dependency_of_a_failed_job_blocks_until_it_is_retried(farm: Farm) -> None:
    trace = farm.root / "trace.txt"
    marker = farm.root / "fail-A"
    marker.touch()
    farm.worker("w")
    a = farm.submit_cli(
        "--name",
        "A",
        "--",
        *unless_marker(
            marker, farm.frame("--block", str(farm.release_path("A")), "--append", str(trace), "A")
        ),
    )
    b = farm.submit_cli(
        "--name",
        "B",
        "--depends-on",
        f"{a}:complete",
        "--",
        *farm.frame("--append", str(trace), "B"),
    )
    assert farm.wait_jobs([a]) == {str(a): "failed"}

    reason = f"job {a} is failed but must be complete (retry it to release this job)"
    blocked = farm.cli_json("job", str(b))
    assert (blocked["state"], blocked["reason"]) == ("blocked", reason)
    assert (blocked["depends_on"], blocked["waiting_on"]) == ([f"{a}:complete"], [a])
    assert [(f["state"], f["attempts"]) for f in blocked["frame_list"]] == [("pending", 0)]
    text = farm.cli_ok("job", str(b)).splitlines()
    assert text[:2] == [f"job {b} 'B': blocked", f"  reason: {reason}"]
    listed = farm.cli_ok("jobs").splitlines()
    assert next(row for row in listed if row.startswith(f"{b} ")).endswith(reason)
    stuck = farm.cli("wait", str(b), "--timeout", "0")  # it cannot end: no need to wait
    assert (stuck.returncode, stuck.stdout) == (1, f"{b} stuck: {reason}\n"), describe(stuck)
    assert farm.cli_json("order", "w") == []
    assert lines(trace) == []

    # The frame no longer fails: a retry of A releases B, which waits for A again.
    marker.unlink()
    assert farm.cli_ok("retry", str(a)) == f"retried {a}:1\n"
    wait_for(lambda: state(farm, a) == "running", "A to run again")
    waiting = farm.cli_json("job", str(b))
    assert (waiting["state"], waiting["reason"]) == ("waiting", f"waiting for job {a}")
    assert waiting["waiting_on"] == [a]
    assert farm.cli_ok("job", str(b)).splitlines()[1] == f"  reason: waiting for job {a}"

    farm.release("A")
    done = farm.cli("wait", str(b), "--timeout", "20")
    assert (done.returncode, done.stdout) == (0, f"{b} complete\n"), describe(done)
    assert lines(trace) == ["A", "B"]
    assert farm.frames(a)[1]["attempts"] == 2
    completed = farm.cli_json("job", str(b))
    assert (completed["state"], completed["reason"], completed["waiting_on"]) == (
        "complete",
        "",
        [],
    )


def test_done_and_failed_dependencies_and_several_at_once(farm: Farm) -> None:
    trace = farm.root / "trace.txt"
    farm.worker("w", slots=2)
    a = farm.submit(
        farm.frame(
            "--block", str(farm.release_path("A")), "--append", str(trace), "A", "--exit", "1"
        ),
        name="A",
    )
    x = farm.submit(
        farm.frame("--block", str(farm.release_path("X")), "--append", str(trace), "X"), name="X"
    )
    wait_for(lambda: {state(farm, a), state(farm, x)} == {"running"}, "A and X to run")

    def dependent(name: str, *depends: str) -> int:
        options = [arg for dep in depends for arg in ("--depends-on", dep)]
        return farm.submit_cli(
            "--name", name, *options, "--", *farm.frame("--append", str(trace), name)
        )

    b = dependent("B", f"{a}:done")
    c = dependent("C", f"{a}:failed")
    d = dependent("D", f"{x}:failed")
    e = dependent("E", f"{a}:failed,{x}")  # comma-separated: both must hold
    f = dependent("F", f"{a}:done", f"{x}:failed")  # repeated: both must hold
    views = {job_id: farm.cli_json("job", str(job_id)) for job_id in (b, c, d, e, f)}
    assert {job_id: (v["state"], v["reason"]) for job_id, v in views.items()} == {
        b: ("waiting", f"waiting for job {a}"),
        c: ("waiting", f"waiting for job {a}"),
        d: ("waiting", f"waiting for job {x}"),
        e: ("waiting", f"waiting for job {a}, {x}"),
        f: ("waiting", f"waiting for job {a}, {x}"),
    }
    assert views[e]["depends_on"] == [f"{a}:failed", f"{x}:complete"]
    assert views[f]["depends_on"] == [f"{a}:done", f"{x}:failed"]

    # X completes: a `failed` dependency on it can no longer hold.
    farm.release("X")
    assert farm.wait_jobs([x]) == {str(x): "complete"}
    broken = f"job {x} is complete but must be failed"
    assert (state(farm, d), farm.job(d)["reason"]) == ("blocked", broken)
    assert (state(farm, f), farm.job(f)["reason"]) == ("blocked", broken)
    assert (state(farm, e), farm.job(e)["reason"]) == ("waiting", f"waiting for job {a}")
    assert farm.job(e)["waiting_on"] == [a]
    assert lines(trace) == ["X"]

    # A fails: `done` and `failed` dependents run; the blocked ones stay blocked.
    farm.release("A")
    assert farm.wait_jobs([a, b, c, e]) == {
        str(a): "failed",
        str(b): "complete",
        str(c): "complete",
        str(e): "complete",
    }
    written = lines(trace)
    assert written[:2] == ["X", "A"]
    assert sorted(written[2:]) == ["B", "C", "E"]
    for job_id in (d, f):
        view = farm.cli_json("job", str(job_id))
        assert (view["state"], view["reason"]) == ("blocked", broken)
        assert [(fr["state"], fr["attempts"]) for fr in view["frame_list"]] == [("pending", 0)]
    text = farm.cli_ok("job", str(d)).splitlines()
    assert text[:2] == [f"job {d} 'D': blocked", f"  reason: {broken}"]


def test_a_frames_dependency_releases_frame_by_frame(farm: Farm) -> None:
    trace = farm.root / "trace.txt"
    farm.worker("w", slots=4)  # A's three frames and one free slot
    a = farm.submit_cli(
        "--name",
        "A",
        "--frames",
        "1-3",
        "--",
        *farm.frame(
            "--block", str(farm.release_path("A{frame}")), "--append", str(trace), "A:{frame}"
        ),
    )
    wait_for(lambda: set(frame_states(farm, a).values()) == {"running"}, "A's frames to run")
    b = farm.submit_cli(
        "--name",
        "B",
        "--frames",
        "1-3",
        "--depends-on",
        f"{a}:frames",
        "--",
        *farm.frame("--append", str(trace), "B:{frame}"),
    )
    view = farm.cli_json("job", str(b))
    assert (view["state"], view["reason"]) == ("waiting", f"waiting for job {a}:frames")
    assert (view["depends_on"], view["waiting_on"]) == ([f"{a}:frames"], [])
    assert [(fr["frame"], fr["state"], fr["waits"]) for fr in view["frame_list"]] == [
        (1, "pending", 1),
        (2, "pending", 1),
        (3, "pending", 1),
    ]
    assert farm.cli_json("order", "w") == []  # a slot is free, but B has nothing ready

    farm.release("A2")
    wait_for(lambda: frame_states(farm, b)[2] == "complete", "B's frame 2 to complete")
    assert lines(trace) == ["A:2", "B:2"]
    assert frame_states(farm, a) == {1: "running", 2: "complete", 3: "running"}
    view = farm.cli_json("job", str(b))
    assert (view["state"], view["reason"]) == ("waiting", f"waiting for job {a}:frames")
    assert [
        (fr["frame"], fr["state"], fr["attempts"], fr["waits"]) for fr in view["frame_list"]
    ] == [
        (1, "pending", 0, 1),
        (2, "complete", 1, 0),
        (3, "pending", 0, 1),
    ]
    assert farm.cli_json("order", "w") == []

    farm.release("A1")
    wait_for(lambda: frame_states(farm, b)[1] == "complete", "B's frame 1 to complete")
    assert lines(trace) == ["A:2", "B:2", "A:1", "B:1"]
    assert frame_states(farm, b)[3] == "pending"

    farm.release("A3")
    assert farm.wait_jobs([a, b]) == {str(a): "complete", str(b): "complete"}
    assert lines(trace) == ["A:2", "B:2", "A:1", "B:1", "A:3", "B:3"]
    for number in (1, 2, 3):
        assert farm.frames(b)[number]["started_at"] >= farm.frames(a)[number]["finished_at"]


# --------------------------------------------------------------------------- sub-jobs


def test_a_frame_submits_sub_jobs_with_the_command_line(farm: Farm) -> None:
    trace = farm.root / "trace.txt"
    farm.worker("w1", "/show1", slots=2)
    farm.worker("w2", "/show2")

    def child(name: str, *options: str) -> list[str]:
        """`farmd submit` of a sub-job whose frame blocks until `name` is released."""
        frame = farm.frame("--block", str(farm.release_path(name)), "--append", str(trace), name)
        return [*FARMD, "submit", "--name", name, *options, "--", *frame]

    parent = farm.submit_cli(
        "--name",
        "parent",
        "--cluster",
        "/show1",
        "--priority",
        "50",
        "--",
        *shell(child("child1"), child("child2", "--cluster", "/show2")),
    )
    # A top-level job that no worker takes, submitted after the parent, before its sub-jobs.
    other = farm.submit(["true"], name="other", cluster="/nowhere", restrictions="/nowhere")
    after = farm.submit(
        farm.frame("--append", str(trace), "after"), name="after", depends_on=[parent]
    )
    wait_for(lambda: frame_states(farm, parent) == {1: "complete"}, "the parent's frame to end")
    log = farm.cli_ok("logs", f"{parent}:1").split()
    assert len(log) == 2, log  # `farmd submit` printed each new id
    child1, child2 = map(int, log)
    assert other < after < child1 < child2

    view = farm.cli_json("job", str(parent))
    waiting_for_both = f"waiting for sub-jobs {child1}, {child2}"
    assert (view["state"], view["reason"]) == ("waiting", waiting_for_both)
    assert (view["subjobs"], view["subjob_ids"]) == (2, [child1, child2])
    assert [(f["state"], f["exit_code"]) for f in view["frame_list"]] == [("complete", 0)]
    children = [farm.cli_json("job", str(job_id)) for job_id in (child1, child2)]
    assert [(c["name"], c["parent"], c["cluster"], c["priority"]) for c in children] == [
        ("child1", parent, "/show1", 50),  # the parent's cluster and priority
        ("child2", parent, "/show2", 50),
    ]
    assert farm.cli_json("job", str(other))["parent"] is None
    wait_for(
        lambda: frame_states(farm, child1) == frame_states(farm, child2) == {1: "running"},
        "both sub-jobs to run",
    )

    table = farm.cli_ok("jobs").splitlines()
    assert table[-1] == "5 jobs: 2 waiting, 1 pending, 2 running", table  # every job's counts
    assert [row.split()[:3] for row in table[1:-1]] == [
        [str(parent), "parent", "waiting"],
        [str(child1), "child1", "running"],
        [str(child2), "child2", "running"],
        [str(other), "other", "pending"],
        [str(after), "after", "waiting"],
    ]
    assert table[1].startswith(f"{parent} ")
    assert table[2].startswith(f"  {child1} ")  # indented under its parent
    assert table[3].startswith(f"  {child2} ")
    assert table[4].startswith(f"{other} ")
    assert table[1].endswith(waiting_for_both)
    assert [j["parent"] for j in farm.cli_json("jobs")["jobs"]] == [
        None,
        None,
        None,
        parent,
        parent,
    ]

    # child2 ends: the parent still waits for child1, and `farmd wait` says so.
    farm.release("child2")
    assert farm.wait_jobs([child2]) == {str(child2): "complete"}
    view = farm.cli_json("job", str(parent))
    assert (view["state"], view["reason"]) == ("waiting", f"waiting for sub-jobs {child1}")
    early = farm.cli("wait", str(parent), "--timeout", "0.5")
    assert (early.returncode, early.stdout) == (2, f"{parent} still going\n"), describe(early)
    waiter = farm.spawn(
        "wait",
        [
            "wait",
            "--supervisor",
            farm.address,
            "--token-file",
            str(farm.token_file),
            str(parent),
            "--timeout",
            "20",
        ],
    )
    assert lines(trace) == ["child2"]
    assert (state(farm, after), farm.job(after)["reason"]) == (
        "waiting",
        f"waiting for job {parent}",
    )

    farm.release("child1")
    assert waiter.popen.wait(timeout=30) == 0, waiter.stderr()
    assert waiter.stdout() == f"{parent} complete\n"
    assert state(farm, child1) == "complete"  # it ended before its parent
    ended = farm.cli_json("job", str(parent))
    assert (ended["state"], ended["reason"]) == ("complete", "")
    # A job that depends on the parent ran only once its sub-jobs had completed too.
    assert farm.wait_jobs([after]) == {str(after): "complete"}
    assert lines(trace) == ["child2", "child1", "after"]


CLIENT_SCRIPT = """
import os, sys
from farmd.client import Client

with Client() as farm:  # FARMD_SUPERVISOR and FARMD_TOKEN, from the worker
    me = int(os.environ["FARMD_JOB_ID"])
    child = farm.submit(sys.argv[1:], name="doomed", parent=me)
    print(child, farm.job(child)["parent"], farm.job(me)["state"])
"""


def test_a_sub_job_from_the_python_client_that_fails_fails_its_parent(farm: Farm) -> None:
    trace = farm.root / "trace.txt"
    marker = farm.root / "fail-child"
    marker.touch()
    farm.worker("w", "/show1")
    child_frame = unless_marker(marker, farm.frame("--append", str(trace), "child"))
    parent = farm.submit_cli(
        "--cluster", "/show1", "--", sys.executable, "-c", CLIENT_SCRIPT, *child_frame
    )
    ended = farm.cli("wait", str(parent), "--timeout", "20")
    assert (ended.returncode, ended.stdout) == (1, f"{parent} failed\n"), describe(ended)
    child_id, seen_parent, seen_state = farm.cli_ok("logs", f"{parent}:1").split()
    child = int(child_id)
    assert (int(seen_parent), seen_state) == (parent, "running")

    view = farm.cli_json("job", str(parent))
    assert (view["state"], view["reason"], view["subjob_ids"]) == ("failed", "", [child])
    assert [(f["state"], f["exit_code"]) for f in view["frame_list"]] == [("complete", 0)]
    sub = farm.cli_json("job", str(child))
    assert (sub["name"], sub["parent"], sub["cluster"], sub["state"]) == (
        "doomed",
        parent,
        "/show1",
        "failed",
    )
    assert [(f["state"], f["exit_code"]) for f in sub["frame_list"]] == [("failed", 1)]
    assert lines(trace) == []

    # Retrying the sub-job, which now succeeds, lets the parent complete.
    marker.unlink()
    assert farm.cli_ok("retry", str(child)) == f"retried {child}:1\n"
    ended = farm.cli("wait", str(parent), "--timeout", "20")
    assert (ended.returncode, ended.stdout) == (0, f"{parent} complete\n"), describe(ended)
    assert state(farm, child) == "complete"
    assert lines(trace) == ["child"]


def test_a_job_token_only_submits_and_reads(farm: Farm) -> None:
    farm.worker("w", slots=2)
    other = farm.submit(
        farm.frame("--pid-dir", str(farm.pids), "--block", str(farm.release_path("other"))),
        name="other",
        priority=70,
    )
    wait_for(lambda: frame_states(farm, other) == {1: "running"}, "the other job to run")
    pid = farm.wait_frame_pid(f"w-{other}-1-1")

    def attempt(*args: str) -> str:
        """A line of shell: run `farmd ARGS...` (its stdout dropped), print its exit status."""
        return f'{shlex.join([*FARMD, *args])} 2>&1 >/dev/null; echo "exit $?"'

    target = str(other)
    script = [
        attempt("job", target),  # reading is allowed
        attempt("jobs"),
        attempt("logs", f"{other}:1"),
        attempt("wait", target, "--timeout", "0"),
        attempt("kill", target),
        attempt("block", target),
        attempt("remove", target),
        attempt("modify", target, "--priority", "1"),
        attempt("submit", "--parent", target, "--", "true"),
    ]
    prober = farm.submit(["sh", "-c", "\n".join(script)], name="prober")
    assert farm.wait_jobs([prober]) == {str(prober): "complete"}
    log = farm.cli_ok("logs", f"{prober}:1").splitlines()
    refused = "farmd: error: a frame's job token may only submit jobs and read the queue, not "
    assert log == [
        "exit 0",
        "exit 0",
        "exit 0",
        "exit 2",  # `farmd wait`: still going
        refused + "control jobs (the job token rule)",
        "exit 1",
        refused + "control jobs (the job token rule)",
        "exit 1",
        refused + "remove jobs (the job token rule)",
        "exit 1",
        refused + "modify jobs (the job token rule)",
        "exit 1",
        f"farmd: error: bad parent {other}: a frame of job {prober} may only add sub-jobs "
        f"under job {prober}",
        "exit 1",
    ]

    # Nothing changed: the other job still runs its first attempt, with its priority.
    view = farm.cli_json("job", str(other))
    assert (view["state"], view["priority"], view["subjobs"]) == ("running", 70, 0)
    assert [(f["state"], f["attempts"]) for f in view["frame_list"]] == [("running", 1)]
    assert farm.frame_alive(pid)
    assert [j["id"] for j in farm.cli_json("jobs")["jobs"]] == [other, prober]
    farm.release("other")
    assert farm.wait_jobs([other]) == {str(other): "complete"}


def test_killing_a_parent_kills_its_sub_jobs_and_removing_it_removes_them(farm: Farm) -> None:
    farm.worker("w", slots=2)
    block = ["--pid-dir", str(farm.pids), "--block", str(farm.release_path("never"))]
    parent = farm.submit_cli(
        "--name",
        "parent",
        "--",
        *shell(
            [*FARMD, "submit", "--name", "child", "--", *farm.frame(*block)], farm.frame(*block)
        ),
    )
    child = wait_for(lambda: farm.job(parent)["subjob_ids"], "the sub-job to be submitted")[0]
    parent_pid = farm.wait_frame_pid(f"w-{parent}-1-1")
    child_pid = farm.wait_frame_pid(f"w-{child}-1-1")
    assert state(farm, parent) == state(farm, child) == "running"

    not_yet = assert_refused(farm.cli("remove", str(parent)))
    assert not_yet == f"farmd: error: job {parent} is running: kill it before removing it"

    assert farm.cli_ok("kill", str(parent)) == f"killed {parent}\n"
    assert farm.wait_jobs([parent, child]) == {str(parent): "killed", str(child): "killed"}
    wait_for(lambda: not farm.frame_alive(child_pid), "the sub-job's process to end")
    wait_for(lambda: not farm.frame_alive(parent_pid), "the parent's process to end")
    assert frame_states(farm, child) == {1: "killed"}

    alone = assert_refused(farm.cli("remove", str(child)))
    assert alone == (
        f"farmd: error: job {child} is a sub-job of job {parent}: remove job {parent} "
        "(its sub-jobs go with it)"
    )
    assert [j["id"] for j in farm.cli_json("jobs")["jobs"]] == [parent, child]
    assert farm.cli_ok("remove", str(parent)) == f"removed {parent} {child}\n"
    assert farm.cli_json("jobs")["jobs"] == []


def test_dependents_of_parents_keep_their_state_through_a_restart(farm: Farm) -> None:
    farm.worker("w", slots=2)

    def parent_of(name: str, *child_steps: str) -> int:
        child = [*FARMD, "submit", "--name", f"{name}-child", "--", *farm.frame(*child_steps)]
        return farm.submit(child, name=name)

    failed = parent_of("failed", "--exit", "1")  # its sub-job fails
    assert farm.wait_jobs([failed]) == {str(failed): "failed"}
    going = parent_of("going", "--block", str(farm.release_path("child")))
    wait_for(
        lambda: farm.job(going)["reason"].startswith("waiting for sub-jobs"),
        "the second parent to wait for its sub-job",
    )
    after_complete = farm.submit(["true"], name="needs-complete", depends_on=[f"{failed}"])
    after_failure = farm.submit(["true"], name="needs-failure", depends_on=[f"{going}:failed"])

    def seen() -> dict[int, tuple[str, str]]:
        return {
            job_id: (view["state"], view["reason"])
            for job_id in (failed, going, after_complete, after_failure)
            for view in [farm.cli_json("job", str(job_id))]
        }

    going_child = farm.job(going)["subjob_ids"][0]
    expected = {
        failed: ("failed", ""),
        going: ("waiting", f"waiting for sub-jobs {going_child}"),
        after_complete: (
            "blocked",
            f"job {failed} is failed but must be complete (retry it to release this job)",
        ),
        after_failure: ("waiting", f"waiting for job {going}"),
    }
    assert seen() == expected
    farm.restart()
    assert seen() == expected
    farm.release("child")
    assert farm.wait_jobs([going]) == {str(going): "complete"}
