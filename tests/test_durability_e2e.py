"""End-to-end durability: real `farmd serve` and `farmd worker` processes on 127.0.0.1,
with the supervisor stopped (SIGTERM) or killed (SIGKILL) and started again on the same
state dir and the same port, so its workers find it again on their own.

What must hold (the issue's proof requirements):

- every acknowledged submit survives a restart, with its frames, states and rank;
- a frame running when the supervisor went away keeps running on its worker, which
  reports its result to the new supervisor: it runs once and completes once;
- a frame whose worker does not come back within `lost_worker_grace` goes back to
  pending and completes on another worker (in process, on a MockClock:
  tests/test_supervisor_inprocess.py; here under random kills);
- a state dir that is locked, from a newer farmd, or corrupt is refused with one line,
  and no file in it changes.

Every wait is bounded (`wait_for`, `Client.wait` with a timeout, loops with a count);
every process is ended by its pid by the farm fixture, also when a test fails. The one
`time.sleep` picks the random moment of a kill; it waits for no condition.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from farmd.client import Client
from farmd.errors import ConnectionLostError
from farmd.store import DATABASE_FILE, LOCK_FILE, SCHEMA_VERSION
from tests.e2e_support import (
    LOCALHOST,
    START_TIMEOUT,
    Farm,
    Proc,
    assert_refused,
    describe,
    lines,
    wait_for,
)
from tests.state_files import changed, files

pytestmark = pytest.mark.e2e

FAST = "supervisor:\n  heartbeat_interval: 0.2\n  heartbeat_timeout: 1\n"


def timeless(job: dict[str, Any]) -> dict[str, Any]:
    """A job's summary or detail without what changes with the clock alone."""
    return {key: value for key, value in job.items() if key not in ("elapsed", "eta")}


@pytest.fixture
def farm(bare_farm: Farm) -> Farm:
    """A farm directory with nothing started yet: each test starts its supervisor."""
    return bare_farm


# --------------------------------------------------------------------------- helpers


def write_config(farm: Farm, extra: str = "") -> Path:
    path = farm.root / "farm.yaml"
    path.write_text(FAST + extra)
    return path


def start_supervisor(farm: Farm, label: str, config: Path, port: int = 0) -> Proc:
    """`farmd serve` on 127.0.0.1:`port` (0: any) and the farm's state dir; returns once
    it has written its address. Each start gets its own log files (`label`)."""
    address_file = farm.state / "address"
    address_file.unlink(missing_ok=True)  # a restart would find the last one's
    proc = farm.spawn(
        label,
        [
            "serve",
            "--listen",
            f"{LOCALHOST}:{port}",
            "--http",  # its own port 0: the fixed one may be another farm's
            f"{LOCALHOST}:0",
            "--state",
            str(farm.state),
            "--config",
            str(config),
            "--log-json",
            "--log-level",
            "debug",
        ],
    )

    def written() -> str:
        if not proc.running():
            msg = f"{label} exited with {proc.popen.returncode}:\n{proc.stderr()}"
            raise AssertionError(msg)
        try:
            text = address_file.read_text()
        except OSError:
            return ""
        return text.strip() if text.endswith("\n") else ""

    address = wait_for(written, f"{label} to write its address", timeout=START_TIMEOUT)
    if port:
        assert address == f"{LOCALHOST}:{port}", address
    farm.supervisor = proc
    farm.address = address
    farm.api.close()  # the next request connects to this supervisor
    return proc


def port_of(farm: Farm) -> int:
    return int(farm.address.rpartition(":")[2])


def events(proc: Proc) -> list[dict[str, Any]]:
    """The log events (`--log-json`) a process has written so far."""
    out = []
    for line in proc.stderr().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by SIGKILL
                continue
    return out


def named(proc: Proc, event: str) -> list[dict[str, Any]]:
    return [e for e in events(proc) if e["event"] == event]


def registered(farm: Farm, name: str) -> bool:
    try:
        return name in farm.worker_names()
    except ConnectionLostError:
        return False


# --------------------------------------------------------------------------- restart


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_running_frame_keeps_running_through_a_supervisor_restart(
    farm: Farm, signum: signal.Signals
) -> None:
    config = write_config(farm)
    first = start_supervisor(farm, "supervisor-1", config)
    port = port_of(farm)
    worker = farm.worker("w1")
    starts = farm.root / "starts.txt"
    job_id = farm.submit(
        farm.frame(
            "--pid-dir",
            str(farm.pids),
            "--append",
            str(starts),
            "start",
            "--block",
            str(farm.release_path("frame")),
        ),
        name="long",
        cluster="/show1",
        priority=42,
    )
    pid = farm.wait_frame_pid(f"w1-{job_id}-1-1")

    status = first.stop(signum)
    assert status == (0 if signum == signal.SIGTERM else -signal.SIGKILL), first.stderr()
    assert farm.frame_alive(pid), "the frame died with the supervisor"

    second = start_supervisor(farm, "supervisor-2", config, port)
    (restored,) = named(second, "state restored")
    assert (restored["jobs"], restored["frames"], restored["orphans"]) == (1, 1, 1)
    wait_for(lambda: registered(farm, "w1"), "w1 to reconnect on its own")

    (view,) = [w for w in farm.api.workers() if w["name"] == "w1"]
    assert view["running"] == [f"{job_id}:1"]
    job = farm.job(job_id)
    assert (job["name"], job["cluster"], job["priority"], job["state"]) == (
        "long",
        "/show1",
        42,
        "running",
    )
    frame = farm.frames(job_id)[1]
    assert (frame["state"], frame["worker"], frame["attempts"]) == ("running", "w1", 1)
    assert farm.frame_alive(pid)

    farm.release("frame")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    frame = farm.frames(job_id)[1]
    assert (frame["state"], frame["worker"], frame["attempts"], frame["exit_code"]) == (
        "complete",
        "w1",
        1,
        0,
    )
    assert lines(starts) == ["start"], "the frame was started again"
    assert list(farm.frame_pids()) == [f"w1-{job_id}-1-1"]
    assert named(second, "unclaimed frames requeued") == []
    assert named(second, "stale frame stopped") == []
    assert worker.running()
    reconnects = [
        line
        for line in worker.stderr().splitlines()
        if " registered " in line and "still_running=1" in line
    ]
    assert reconnects, "w1 did not register again with its frame"


def test_every_job_and_frame_comes_back_with_its_state_and_rank(farm: Farm) -> None:
    config = write_config(farm)
    first = start_supervisor(farm, "supervisor-1", config)
    port = port_of(farm)
    farm.worker("w1", "/show1/comp")
    done = farm.submit(["true"], name="done", cluster="/show1/comp")
    failed = farm.submit(["false"], name="failed", cluster="/show1/comp", frames="1-2")
    assert farm.wait_jobs([done, failed]) == {str(done): "complete", str(failed): "failed"}
    blocker = farm.submit(
        farm.frame("--block", str(farm.release_path("blocker"))),
        name="blocker",
        cluster="/show1/comp",
        priority=1,
    )
    wait_for(lambda: farm.frames(blocker)[1]["state"] == "running", "the blocker to run")
    waiting = farm.submit(
        ["true"], name="waiting", cluster="/show1/comp", frames="1-10x3", depends_on=[blocker]
    )
    order_file = farm.root / "order.txt"
    queued = [  # name, cluster, priority, options
        ("c", "/show1/comp", 500, {}),
        ("near", "/show1", 10, {"frames": "5,1,3"}),
        ("far", "/show2", 5, {"cross_cluster": "/show1/comp,/show3+"}),
        ("cousin", "/show1/light", 1, {"restrictions": "/show1/+"}),
        ("elsewhere", "/", 1, {"restrictions": "/show2/+"}),  # never runs on w1
    ]
    ids = {
        name: farm.submit(
            farm.frame("--append-name", str(order_file)),
            name=name,
            cluster=cluster,
            priority=priority,
            **options,
        )
        for name, cluster, priority, options in queued
    }
    killed = farm.submit(["true"], name="killed", frames="1-4", depends_on=[blocker])
    farm.api.kill([killed])
    farm.api.modify(ids["c"], priority=3)

    def everything() -> dict[str, Any]:
        # a running job's elapsed time and ETA grow with the clock, not with a restart
        jobs = [timeless(job) for job in farm.api.jobs()["jobs"]]
        return {
            "jobs": jobs,
            "details": {job["id"]: timeless(farm.job(job["id"])) for job in jobs},
            "order": farm.api.order("w1"),
            "clusters": farm.api.clusters(),
        }

    before = everything()
    states = {job["name"]: job["state"] for job in before["jobs"]}
    assert states == {
        "done": "complete",
        "failed": "failed",
        "blocker": "running",
        "waiting": "waiting",
        "c": "pending",
        "near": "pending",
        "far": "pending",
        "cousin": "pending",
        "elsewhere": "pending",
        "killed": "killed",
    }
    assert [entry["name"] for entry in before["order"]] == ["c", "far", "cousin", "near"]

    first.stop(signal.SIGKILL)
    start_supervisor(farm, "supervisor-2", config, port)
    wait_for(lambda: registered(farm, "w1"), "w1 to reconnect on its own")
    assert everything() == before

    farm.release("blocker")
    runnable = [blocker, waiting, *(ids[n] for n in ("c", "far", "cousin", "near"))]
    assert set(farm.wait_jobs(runnable).values()) == {"complete"}
    assert lines(order_file) == ["c", "far", "cousin", "near", "near", "near"]  # 3 frames
    assert farm.job(ids["elsewhere"])["state"] == "pending"
    assert farm.job(killed)["state"] == "killed"


# --------------------------------------------------------------------------- kill -9


KILL_CYCLES = 20
KILL_SEED = 20_231_123
MAX_SUBMITS = 400  # bounds the submitter; at its pace it makes about 150
SUBMIT_PACE = 0.04  # seconds between submits: a stream, not a flood
FRAMES = "1-2"


class Submitter(threading.Thread):
    """Submits jobs with unique names until told to stop, and records which submits
    were acknowledged (an id came back) and which were lost with the supervisor."""

    def __init__(self, farm: Farm, argv: list[str]) -> None:
        super().__init__(name="submitter", daemon=True)
        self.client = Client(farm.address, token_file=farm.token_file, timeout=10.0)
        self.argv = argv
        self.up = threading.Event()  # set while a supervisor is listening
        self.stop = threading.Event()
        self.acked: dict[int, str] = {}
        self.lost: list[str] = []
        self.names: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            for n in range(MAX_SUBMITS):
                if self.stop.is_set() or not self.up.wait(timeout=START_TIMEOUT):
                    break
                name = f"s{n}"
                self.names.append(name)
                try:
                    job_id = self.client.submit(self.argv, name=name, frames=FRAMES)
                except ConnectionLostError:
                    self.lost.append(name)  # may or may not have been committed
                    continue
                assert job_id not in self.acked, f"id {job_id} acknowledged twice"
                self.acked[job_id] = name
                self.stop.wait(SUBMIT_PACE)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.client.close()


def test_kill_9_at_random_moments_loses_no_acknowledged_job_and_runs_frames_once(
    farm: Farm,
) -> None:
    rng = random.Random(KILL_SEED)
    # A short grace: frames of a worker slow to come back are reclaimed and run again,
    # so the results of their first attempts must be fenced off.
    config = write_config(farm, "  lost_worker_grace: 0.3\n")
    supervisor = start_supervisor(farm, "supervisor-0", config)
    port = port_of(farm)
    runs = farm.root / "runs.txt"
    argv = [
        "sh",
        "-c",
        # recorded at its start, then runs a moment, so that kills find frames running
        'echo "$FARMD_JOB_ID:$FARMD_FRAME:$FARMD_ATTEMPT:$FARMD_WORKER" >> "$0"; sleep 0.05',
        str(runs),
    ]
    workers = [farm.worker("w1", slots=2), farm.worker("w2", slots=2)]
    submitter = Submitter(farm, argv)
    submitter.up.set()
    submitter.start()
    supervisors = [supervisor]
    try:
        for cycle in range(1, KILL_CYCLES + 1):
            time.sleep(rng.uniform(0.05, 0.5))  # the random moment of the kill
            submitter.up.clear()
            assert supervisor.stop(signal.SIGKILL) == -signal.SIGKILL, supervisor.stderr()
            supervisor = start_supervisor(farm, f"supervisor-{cycle}", config, port)
            supervisors.append(supervisor)
            submitter.up.set()
    finally:
        submitter.stop.set()
        submitter.up.set()
        submitter.join(timeout=30)
    assert not submitter.is_alive(), "the submitter did not stop"
    assert submitter.errors == []
    assert len(submitter.acked) >= KILL_CYCLES, "too few submits to prove anything"

    # Let everything finish: the workers come back on their own and run what is left.
    jobs = {job["id"]: job for job in farm.api.jobs()["jobs"]}
    assert farm.wait_jobs(sorted(jobs), timeout=40) == {str(i): "complete" for i in jobs}
    jobs = {job["id"]: job for job in farm.api.jobs()["jobs"]}

    # Every acknowledged submit is there, under the name it was given: no id was lost or
    # reused. A submit lost with the supervisor is there at most once.
    for job_id, name in submitter.acked.items():
        assert job_id in jobs, f"acknowledged job {job_id} ({name}) was lost"
        assert jobs[job_id]["name"] == name, f"job id {job_id} was reused"
    names = Counter(job["name"] for job in jobs.values())
    assert max(names.values()) == 1, [n for n, count in names.items() if count > 1]
    assert set(names) <= set(submitter.names)
    assert set(names) >= set(submitter.acked.values())

    # Each frame completed exactly once; every run the frames recorded is accounted for.
    recorded = [tuple(line.split(":")) for line in lines(runs)]
    runs_of = Counter((int(j), int(f), int(a)) for j, f, a, _ in recorded)
    repeated = [key for key, count in runs_of.items() if count > 1]
    assert repeated == [], f"attempts run more than once: {repeated}"
    worker_of = {(int(j), int(f), int(a)): w for j, f, a, w in recorded}
    frames_seen = set()
    for job_id in jobs:
        for frame in farm.api.job(job_id)["frame_list"]:
            key = (job_id, frame["frame"])
            frames_seen.add(key)
            assert frame["state"] == "complete", (key, frame)
            assert frame["exit_code"] == 0, (key, frame)
            attempts = frame["attempts"]
            assert attempts >= 1, (key, frame)
            ran = sorted(a for j, f, a in runs_of if (j, f) == key)
            assert ran, f"frame {key} is complete but never ran"
            assert max(ran) <= attempts, (key, frame, ran)
            assert (*key, attempts) in runs_of, f"the completing attempt of {key} never ran"
            assert worker_of[(*key, attempts)] == frame["worker"], (key, frame)
    assert {(j, f) for j, f, _ in runs_of} <= frames_seen, "a run of an unknown frame"

    for proc in workers:
        assert proc.running(), f"{proc.name} exited:\n{proc.stderr()}"
    for proc in supervisors:
        assert "Traceback" not in proc.stderr(), proc.stderr()
    # What the kills hit, for the report of a failure (`-rP` shows it on success).
    seen_events = Counter(e["event"] for proc in supervisors for e in events(proc))
    print(
        f"{len(submitter.acked)} submits acknowledged, {len(submitter.lost)} lost with the "
        f"supervisor; {len(recorded)} runs, {sum(a > 1 for _, _, a in runs_of)} retries;",
        {k: v for k, v in seen_events.items() if "stale" in k or "orphan" in k or "re" in k},
    )


# --------------------------------------------------------------------------- refusals


REFUSALS = ["locked", "newer", "not-a-database", "corrupt-page", "truncated", "killed-then-corrupt"]


def serve_refused(farm: Farm) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "farmd",
            "serve",
            "--listen",
            f"{LOCALHOST}:0",
            "--state",
            str(farm.state),
        ],
        capture_output=True,
        text=True,
        env=farm.env,
        cwd=farm.root,
        timeout=20,  # refused at once; a supervisor that started instead is killed here
        check=False,
    )


def clobber_middle_page(path: Path) -> None:
    """A page of garbage in the middle of the file: its b-tree header is destroyed,
    which SQLite's quick_check detects (garbage inside a row's bytes it would not)."""
    size = 4096
    pages = path.stat().st_size // size
    assert pages >= 4, f"{path} has only {pages} pages"
    with path.open("r+b") as handle:
        handle.seek(pages // 2 * size)
        handle.write(b"\xa5" * size)


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_state_dir_is_refused_with_one_line_and_left_alone(farm: Farm, case: str) -> None:
    config = write_config(farm)
    holder = start_supervisor(farm, "holder", config)
    # Enough jobs for a database of several pages.
    for n in range(60):
        farm.submit(["true"], name=f"job-{n:03}-" + "x" * 200, frames="1-5", cluster="/a/b")
    db = farm.state / DATABASE_FILE
    if case == "killed-then-corrupt":
        # A farm that ran a while: most pages are in farmd.db (a clean stop checkpoints),
        # the last commits only in farmd.db-wal (a kill does not). Then a page of
        # farmd.db is damaged. The WAL is the newest good data: it must survive too.
        assert holder.stop(signal.SIGTERM) == 0, holder.stderr()
        second = start_supervisor(farm, "holder-2", config, port_of(farm))
        for n in range(3):
            farm.submit(["true"], name=f"late-{n}")
        assert second.stop(signal.SIGKILL) == -signal.SIGKILL
        assert (farm.state / f"{DATABASE_FILE}-wal").stat().st_size > 0
        clobber_middle_page(db)
        (farm.state / "token").unlink()  # and no new token may appear
    elif case != "locked":
        assert holder.stop(signal.SIGTERM) == 0, holder.stderr()
        assert not (farm.state / f"{DATABASE_FILE}-wal").exists()
        if case == "newer":
            connection = sqlite3.connect(db)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            connection.close()
        elif case == "not-a-database":
            db.write_bytes(random.Random(7).randbytes(db.stat().st_size))
        elif case == "corrupt-page":
            clobber_middle_page(db)
        elif case == "truncated":
            os.truncate(db, db.stat().st_size // 2 // 4096 * 4096)
        (farm.state / "token").unlink()  # and no new token may appear
    before = files(farm.state)

    result = serve_refused(farm)
    line = assert_refused(result)
    expected = {
        "locked": f"in use by another running farmd supervisor (pid {holder.pid})",
        "newer": f"written by a newer farmd (schema {SCHEMA_VERSION + 1}",
        "not-a-database": "is corrupt or unreadable",
        "corrupt-page": "is corrupt",
        "truncated": "is corrupt",
        "killed-then-corrupt": "is corrupt",
    }[case]
    assert expected in line, describe(result)
    assert "nothing was changed" in line, describe(result)

    after = files(farm.state)
    assert ("token" in after) == (case == "locked"), "a token was written"
    # Everything but the contents of farmd.db-shm: SQLite's WAL index, scratch that any
    # reader of a crashed database rebuilds from the WAL, holding no data.
    everything = changed(before, after)
    scratch = (f"{DATABASE_FILE}-shm: bytes changed", f"{DATABASE_FILE}-shm: mtime changed")
    serious = [line for line in everything if line not in scratch]
    assert not serious, f"the refusal changed the state dir ({LOCK_FILE} included): {serious}"
    if case == "locked":
        assert holder.running()
        assert farm.api.jobs()["jobs"], "the running supervisor is unaffected"
