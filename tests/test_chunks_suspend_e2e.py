"""End-to-end: chunked jobs, and suspending and resuming frames, on real `farmd` processes.

Chunks: a job submitted with `--chunk N` runs N frames per process; the tests read what
each process was given (its argv and FARMD_* environment) from a file the frames append
to, and what `farmd job` reports. Suspend and resume: the tests look at the frames' real
processes (the state letter in /proc/PID/stat is `T` while a process is stopped) besides
what `farmd job` and `farmd workers` report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_support import Farm, assert_refused, lines, wait_for

pytestmark = pytest.mark.e2e

# A frame that appends one line to argv[1]: the rest of its argv, then what its
# environment says about the frames it runs. (No `{frame}`, `{start}` or `{end}` in it:
# farmd would fill those in.)
RECORD = (
    "import os, sys\n"
    "names = ('FARMD_FRAME', 'FARMD_FRAME_START', 'FARMD_FRAME_END', 'FARMD_FRAMES')\n"
    "line = ' '.join(sys.argv[2:] + [os.environ[n] for n in names])\n"
    "with open(sys.argv[1], 'a', encoding='utf-8') as out:\n"
    "    out.write(line + '\\n')\n"
)


def record(path: Path, *args: str) -> list[str]:
    """The argv of a frame that appends `args` (filled in) and its FARMD_FRAME* to `path`."""
    return [sys.executable, "-c", RECORD, str(path), *args]


def process_state(pid: int) -> str:
    """The state letter of process `pid` (`T`: stopped, `S`: sleeping, `R`: running...),
    or "" once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[0]


def wait_state(pid: int, wanted: set[str], what: str) -> str:
    """Wait until process `pid` is in one of the `wanted` states; that state."""

    def reached() -> str:
        state = process_state(pid)
        return state if state in wanted else ""

    return wait_for(reached, what)


def frame_views(farm: Farm, job_id: int) -> list[tuple[Any, ...]]:
    return [
        (f["frame"], f["frames"], f["state"], f["attempts"])
        for f in farm.cli_json("job", str(job_id))["frame_list"]
    ]


def counts(job: dict[str, Any]) -> dict[str, int]:
    """A job's frame counts, leaving out the states with none."""
    return {state: n for state, n in job["frames"].items() if n}


# --------------------------------------------------------------------------- chunks


def test_a_chunked_job_runs_one_process_per_chunk_with_its_frames(farm: Farm) -> None:
    farm.worker("w", slots=2)
    out = farm.root / "chunks.txt"
    argv = record(out, "{start}", "{end}", "{frame}", "shot_{start}-{end}.exr")
    submitted = farm.cli_json("submit", "--frames", "1-10", "--chunk", "4", "--", *argv)
    job_id = int(submitted["id"])
    assert submitted["chunk"] == 4
    assert sum(submitted["frames"].values()) == 10  # counted in frames, not chunks

    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    # exactly three processes: argv filled in, then FARMD_FRAME, _START, _END, FARMD_FRAMES
    assert sorted(lines(out), key=lambda line: int(line.split()[0])) == [
        "1 4 1 shot_1-4.exr 1 1 4 1-4",
        "5 8 5 shot_5-8.exr 5 5 8 5-8",
        "9 10 9 shot_9-10.exr 9 9 10 9-10",
    ]
    job = farm.cli_json("job", str(job_id))
    assert (job["state"], job["chunk"], counts(job)) == ("complete", 4, {"complete": 10})
    assert job["argv"] == argv  # as submitted: filled in per chunk only
    assert frame_views(farm, job_id) == [
        (1, "1-4", "complete", 1),
        (5, "5-8", "complete", 1),
        (9, "9-10", "complete", 1),
    ]

    shown = farm.cli_ok("job", str(job_id)).splitlines()
    assert "  chunk: 4" in shown
    assert "  frames: complete=10" in shown
    table = shown[shown.index("  frames: complete=10") + 1 :]
    assert table[0].split()[:2] == ["FRAMES", "STATE"]
    assert [row.split()[:4] for row in table[1:]] == [
        ["1-4", "complete", "w", "1"],
        ["5-8", "complete", "w", "1"],
        ["9-10", "complete", "w", "1"],
    ]


def test_chunks_of_a_stepped_range_take_frames_in_range_order(farm: Farm) -> None:
    farm.worker("w")
    out = farm.root / "chunks.txt"
    job_id = farm.submit_cli(
        "--frames", "1-10x3", "--chunk", "3", "--", *record(out, "{start}-{end}")
    )
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    # frames 1, 4, 7, 10: chunks 1,4,7 and 10; {end} is the chunk's last frame
    assert lines(out) == ["1-7 1 1 7 1,4,7", "10-10 10 10 10 10"]
    assert counts(farm.cli_json("job", str(job_id))) == {"complete": 4}
    assert frame_views(farm, job_id) == [(1, "1,4,7", "complete", 1), (10, "10", "complete", 1)]


def test_blocking_a_frame_of_a_chunked_job_blocks_its_chunk(farm: Farm) -> None:
    out = farm.root / "chunks.txt"
    job_id = farm.submit_cli(
        "--frames", "1-10", "--chunk", "4", "--", *record(out, "{start}", "{end}")
    )
    # no worker yet: nothing runs before the block
    assert farm.cli_ok("block", f"{job_id}:6") == f"blocked {job_id}:5\n"
    job = farm.cli_json("job", str(job_id))
    assert (job["state"], counts(job)) == ("pending", {"pending": 6, "blocked": 4})
    assert frame_views(farm, job_id) == [
        (1, "1-4", "pending", 0),
        (5, "5-8", "blocked", 0),
        (9, "9-10", "pending", 0),
    ]
    no_frame = assert_refused(farm.cli("block", f"{job_id}:11"))
    assert no_frame == f"farmd: error: job {job_id} has no frame 11"

    farm.worker("w")

    def held() -> dict[str, Any]:
        job = farm.job(job_id)
        return job if job["state"] == "blocked" else {}

    wait_for(held, f"job {job_id} to run all but its blocked chunk")
    job = farm.cli_json("job", str(job_id))
    assert counts(job) == {"complete": 6, "blocked": 4}
    assert job["reason"] == "frames blocked by an admin (farmd unblock)"
    assert sorted(lines(out)) == ["1 4 1 1 4 1-4", "9 10 9 9 10 9-10"]

    assert farm.cli_ok("unblock", f"{job_id}:8") == f"unblocked {job_id}:5\n"
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert sorted(lines(out)) == ["1 4 1 1 4 1-4", "5 8 5 5 8 5-8", "9 10 9 9 10 9-10"]
    assert counts(farm.cli_json("job", str(job_id))) == {"complete": 10}


# --------------------------------------------------------------------------- suspend


def test_suspend_stops_running_frames_holds_the_rest_and_resume_continues_them(
    farm: Farm,
) -> None:
    farm.worker("w", slots=2)
    out = farm.root / "done.txt"
    # each frame writes its pid, then waits for release-FRAME before it finishes
    job_id = farm.submit_cli(
        "--frames",
        "1-3",
        "--",
        *farm.frame(
            "--pid-dir",
            str(farm.pids),
            "--block",
            str(farm.root / "release-{frame}"),
            "--append",
            str(out),
            "{frame}",
        ),
    )
    pid1 = farm.wait_frame_pid(f"w-{job_id}-1-1")
    pid2 = farm.wait_frame_pid(f"w-{job_id}-2-1")

    assert farm.cli_ok("suspend", str(job_id)) == f"suspended {job_id}:1 {job_id}:2 {job_id}:3\n"
    wait_state(pid1, {"T"}, f"frame {job_id}:1's process to be stopped")
    wait_state(pid2, {"T"}, f"frame {job_id}:2's process to be stopped")
    job = farm.cli_json("job", str(job_id))
    assert (job["state"], counts(job)) == ("suspended", {"suspended": 3})
    assert job["reason"] == "suspended by an admin (farmd resume)"
    assert [(f["state"], f["stopped"], f["attempts"]) for f in job["frame_list"]] == [
        ("suspended", True, 1),
        ("suspended", True, 1),
        ("suspended", False, 0),
    ]
    (worker,) = farm.cli_json("workers")
    assert (worker["used"], worker["running"]) == (2, [f"{job_id}:1", f"{job_id}:2"])

    # Resume frame 2 alone and let it finish: its slot frees, but frame 3 stays held.
    assert farm.cli_ok("resume", f"{job_id}:2") == f"resumed {job_id}:2\n"
    wait_state(pid2, {"S", "R"}, f"frame {job_id}:2's process to continue")
    assert process_state(pid1) == "T"
    farm.release("2")
    wait_for(lambda: farm.frames(job_id)[2]["state"] == "complete", f"frame {job_id}:2 to complete")
    # Another job takes the free slot (and only that one: frame 1 keeps its slot).
    other = farm.submit(farm.frame("--block", str(farm.release_path("other"))), name="other")
    wait_for(lambda: farm.frames(other)[1]["state"] == "running", "the other job to run")
    (worker,) = farm.cli_json("workers")
    assert (worker["used"], worker["running"]) == (2, sorted([f"{job_id}:1", f"{other}:1"]))
    job = farm.cli_json("job", str(job_id))
    assert (job["state"], counts(job)) == ("suspended", {"complete": 1, "suspended": 2})
    assert [(f["state"], f["stopped"], f["attempts"]) for f in job["frame_list"]] == [
        ("suspended", True, 1),
        ("complete", False, 1),
        ("suspended", False, 0),
    ]
    farm.release("other")
    assert farm.wait_jobs([other]) == {str(other): "complete"}
    # a slot is free (dispatch happened as the other job ended), yet frame 3 is held
    (worker,) = farm.cli_json("workers")
    assert (worker["used"], worker["running"]) == (1, [f"{job_id}:1"])
    frame3 = farm.frames(job_id)[3]
    assert (frame3["state"], frame3["attempts"], frame3["worker"]) == ("suspended", 0, None)
    assert f"w-{job_id}-3-1" not in farm.frame_pids()
    assert process_state(pid1) == "T"
    assert lines(out) == ["2"]

    # Resume the job: frame 1 continues (the same process, the same attempt), frame 3 runs.
    assert farm.cli_ok("resume", str(job_id)) == f"resumed {job_id}:1 {job_id}:3\n"
    wait_state(pid1, {"S", "R"}, f"frame {job_id}:1's process to continue")
    pid3 = farm.wait_frame_pid(f"w-{job_id}-3-1")
    job = farm.cli_json("job", str(job_id))
    assert job["state"] == "running"
    assert [(f["state"], f["stopped"], f["attempts"]) for f in job["frame_list"]] == [
        ("running", False, 1),
        ("complete", False, 1),
        ("running", False, 1),
    ]
    farm.release("1")
    farm.release("3")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert sorted(lines(out)) == ["1", "2", "3"]
    assert counts(farm.cli_json("job", str(job_id))) == {"complete": 3}
    assert not farm.frame_alive(pid1)
    assert not farm.frame_alive(pid3)


def test_a_suspended_chunk_can_be_killed(farm: Farm) -> None:
    farm.worker("w")
    # one chunk of frames 1-2, which would run for up to 30 s: only the kill ends it
    job_id = farm.submit_cli(
        "--frames",
        "1-2",
        "--chunk",
        "2",
        "--",
        *farm.frame("--pid-dir", str(farm.pids), "--block", str(farm.release_path("never"))),
    )
    pid = farm.wait_frame_pid(f"w-{job_id}-1-1")
    # frame 2 names the chunk that holds it
    assert farm.cli_ok("suspend", f"{job_id}:2") == f"suspended {job_id}:1\n"
    wait_state(pid, {"T"}, "the chunk's process to be stopped")
    shown = farm.cli_ok("job", str(job_id)).splitlines()
    assert shown[:2] == [
        f"job {job_id} 'job{job_id}': suspended",
        "  reason: suspended by an admin (farmd resume)",
    ]
    assert counts(farm.cli_json("job", str(job_id))) == {"suspended": 2}

    assert farm.cli_ok("kill", str(job_id)) == f"killed {job_id}\n"
    assert farm.wait_jobs([job_id]) == {str(job_id): "killed"}
    # SIGTERM reaches the stopped process (within the agent's 5 s grace before SIGKILL)
    wait_for(lambda: not farm.frame_alive(pid), "the stopped process to end", timeout=4.0)
    job = farm.cli_json("job", str(job_id))
    assert counts(job) == {"killed": 2}
    assert [(f["frames"], f["state"], f["stopped"], f["attempts"]) for f in job["frame_list"]] == [
        ("1-2", "killed", False, 1)
    ]
    # the slot it kept is free again
    wait_for(lambda: farm.api.workers()[0]["used"] == 0, "the worker's slot to be freed")
    after = farm.submit(farm.frame("--exit", "0"))
    assert farm.wait_jobs([after]) == {str(after): "complete"}


def test_resume_and_suspend_refuse_frames_in_the_wrong_state(farm: Farm) -> None:
    farm.worker("w")
    job_id = farm.submit_cli(
        "--", *farm.frame("--pid-dir", str(farm.pids), "--block", str(farm.release_path("go")))
    )
    pid = farm.wait_frame_pid(f"w-{job_id}-1-1")

    line = assert_refused(farm.cli("resume", f"{job_id}:1"))
    assert line == (
        f"farmd: error: frame {job_id}:1 is running: it cannot be resumed (it is not suspended)"
    )
    line = assert_refused(farm.cli("resume", str(job_id)))
    assert line == f"farmd: error: job {job_id} is running: no frame of it can be resumed"
    # nothing changed: the frame runs on, its process not stopped
    frame = farm.frames(job_id)[1]
    assert (frame["state"], frame["stopped"], frame["attempts"]) == ("running", False, 1)
    assert process_state(pid) in {"S", "R"}

    farm.release("go")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    line = assert_refused(farm.cli("suspend", f"{job_id}:1"))
    assert line == f"farmd: error: frame {job_id}:1 is complete: it cannot be suspended"
    line = assert_refused(farm.cli("suspend", str(job_id)))
    assert line == f"farmd: error: job {job_id} is complete: no frame of it can be suspended"
    assert farm.frames(job_id)[1]["state"] == "complete"
