"""End-to-end: a real `farmd serve` and real `farmd worker` processes on 127.0.0.1.

Each test gets a farm of its own in `tmp_path` (see `tests/e2e_support.py`), drives it the
way a user would, through the `farmd` command line (and once through `farmd.client`), and
checks what a user sees: exit codes, printed output, job and frame details, frame logs and
the files the frames wrote. Every process is ended by the fixture, also when a test fails.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from farmd.codec import NEED_DATA, Codec
from farmd.protocol import PROTOCOL_VERSION, Error, Hello, Message
from tests.e2e_support import (
    LOCALHOST,
    Farm,
    Proc,
    assert_refused,
    describe,
    lines,
    wait_for,
    without_load,
)

pytestmark = pytest.mark.e2e

FRAME_FIELDS = {
    "frame",
    "state",
    "worker",
    "attempts",
    "started_at",
    "finished_at",
    "exit_code",
    "failures",
    "retry_at",
    "frames",
    "stopped",
    "waits",
}


def frame_running(farm: Farm, job_id: int, frame: int = 1) -> bool:
    return bool(farm.frames(job_id)[frame]["state"] == "running")


# --------------------------------------------------------------------------- rank order

# The example, for a worker in /A/B/C: cluster orders 1, 2, 2, 3, 3, 4, 5, 5,
# then priority (1 is the most urgent), then job id.
RANK_QUEUE = [  # (name, cluster, priority), in submission (id) order
    ("c", "/A/B/C", 9000),
    ("d", "/A/B/C/D", 50),
    ("e", "/A/B/C/D/E", 50),
    ("b", "/A/B", 100),
    ("f", "/A/B/F", 5),
    ("a", "/A", 100),
    ("root", "/", 100),
    ("g", "/G", 1),
]
RANK_ORDER = ["c", "d", "e", "f", "b", "a", "g", "root"]
CLUSTER_ORDER = {"c": 1, "d": 2, "e": 2, "b": 3, "f": 3, "a": 4, "root": 5, "g": 5}


def submit_rank_queue(farm: Farm, order_file: Path) -> dict[str, int]:
    ids = {}
    for name, cluster, priority in RANK_QUEUE:
        ids[name] = farm.submit(
            farm.frame("--append-name", str(order_file)),
            name=name,
            cluster=cluster,
            priority=priority,
        )
    return ids


def test_queue_submitted_before_any_worker_runs_in_rank_order(farm: Farm) -> None:
    order_file = farm.root / "order.txt"
    ids = submit_rank_queue(farm, order_file)
    queued = farm.cli_json("jobs")["jobs"]
    assert [(j["name"], j["state"]) for j in queued] == [(n, "pending") for n, _, _ in RANK_QUEUE]

    # Not waiting for it to register: it takes a job at once (and may finish the queue).
    farm.worker("w", "/A/B/C", slots=1, wait=False)
    ended = farm.wait_jobs(list(ids.values()), timeout=10)

    assert set(ended.values()) == {"complete"}
    assert lines(order_file) == RANK_ORDER
    for job_id in ids.values():
        assert [f["worker"] for f in farm.frames(job_id).values()] == ["w"]


def test_order_shows_rank_and_modify_priority_changes_it(farm: Farm) -> None:
    order_file = farm.root / "order.txt"
    farm.worker("w", "/A/B/C", slots=1)
    blocker = farm.submit(
        farm.frame("--block", str(farm.release_path("blocker")), "--append-name", str(order_file)),
        name="blocker",
        cluster="/A/B/C",
    )
    wait_for(lambda: frame_running(farm, blocker), "the blocker to fill the worker's slot")
    ids = submit_rank_queue(farm, order_file)
    priorities = {name: priority for name, _, priority in RANK_QUEUE}
    clusters = {name: cluster for name, cluster, _ in RANK_QUEUE}

    def expected(names: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "order": CLUSTER_ORDER[n],
                "priority": priorities[n],
                "id": ids[n],
                "name": n,
                "cluster": clusters[n],
            }
            for n in names
        ]

    assert farm.cli_json("order", "w") == expected(RANK_ORDER)
    table = farm.cli_ok("order", "w").splitlines()
    assert table[0].split() == ["ORDER", "PRIORITY", "ID", "NAME", "CLUSTER"]
    assert [row.split()[3] for row in table[1:]] == RANK_ORDER
    assert farm.cli_json("order", "w", "--limit", "3") == expected(RANK_ORDER[:3])

    # /A/B jumps ahead of /A/B/F (same cluster order); / and /G tie on priority 1, so the
    # lower id (/) goes first.
    modified = farm.cli_json("modify", str(ids["b"]), "--priority", "1")
    assert (modified["id"], modified["priority"]) == (ids["b"], 1)
    assert farm.cli_ok("modify", str(ids["root"]), "--priority", "1").strip() == (
        f"job {ids['root']}: cluster /, priority 1"
    )
    priorities.update(b=1, root=1)
    new_order = ["c", "d", "e", "b", "f", "a", "root", "g"]
    assert farm.cli_json("order", "w") == expected(new_order)

    farm.release("blocker")
    ended = farm.wait_jobs([blocker, *ids.values()])
    assert set(ended.values()) == {"complete"}
    assert lines(order_file) == ["blocker", *new_order]
    assert farm.cli_json("order", "w") == []


# --------------------------------------------------------------------------- restrictions


def test_worker_restrictions_keep_it_off_other_shows(farm: Farm) -> None:
    farm.worker("show1-only", "/show1", restrictions="/show1/+")
    farm.worker("anything", "/show2")
    # Hold the unrestricted worker's only slot (the job accepts workers in /show2 only).
    blocker = farm.submit(
        farm.frame("--block", str(farm.release_path("blocker"))),
        cluster="/show2",
        restrictions="/show2",
    )
    wait_for(lambda: frame_running(farm, blocker), "the blocker to run")
    assert farm.frames(blocker)[1]["worker"] == "anything"

    run = farm.frame("--print", "frame {frame}")
    show2 = [farm.submit(run, cluster=cluster, frames="1-2") for cluster in ("/show2", "/show2/fx")]
    show1 = [
        farm.submit(run, cluster=cluster, frames="1-2") for cluster in ("/show1", "/show1/light")
    ]
    assert set(farm.wait_jobs(show1).values()) == {"complete"}
    for job_id in show1:
        assert {f["worker"] for f in farm.frames(job_id).values()} == {"show1-only"}

    # The restricted worker is idle, yet the /show2 jobs wait for the busy one.
    workers = {w["name"]: w for w in farm.cli_json("workers")}
    assert workers["show1-only"]["state"] == "idle"
    assert workers["anything"]["running"] == [f"{blocker}:1"]
    for job_id in show2:
        job = farm.cli_json("job", str(job_id))
        assert job["state"] == "pending"
        assert [(f["state"], f["attempts"]) for f in job["frame_list"]] == [("pending", 0)] * 2
    assert farm.cli_json("order", "show1-only") == []
    assert [row["id"] for row in farm.cli_json("order", "anything")] == show2

    farm.release("blocker")
    assert set(farm.wait_jobs([blocker, *show2]).values()) == {"complete"}
    for job_id in show2:
        assert {f["worker"] for f in farm.cli_json("job", str(job_id))["frame_list"]} == {
            "anything"
        }


def test_job_restrictions_pick_workers_in_children_of_a_cluster(farm: Farm) -> None:
    farm.worker("gpu-head", "/farm/gpu")  # /farm/gpu/* is the children, not /farm/gpu
    farm.worker("gpu1", "/farm/gpu/node1")
    farm.worker("cpu1", "/farm/cpu/node1")
    farm.worker("deep", "/farm/gpu/node2/x")
    job_id = farm.submit_cli(
        "--cluster",
        "/farm",
        "--restrictions",
        "/farm/gpu/*",
        "--frames",
        "1-4",
        "--",
        *farm.frame("--print", "frame {frame}"),
    )
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    job = farm.cli_json("job", str(job_id))
    assert job["restrictions"] == "/farm/gpu/*"
    assert [(f["frame"], f["worker"]) for f in job["frame_list"]] == [
        (n, "gpu1") for n in range(1, 5)
    ]


# --------------------------------------------------------------------------- dependencies


def test_dependency_across_clusters_waits_for_completion(farm: Farm) -> None:
    trace = farm.root / "trace.txt"
    farm.worker("s1", "/show1", slots=2)
    farm.worker("s2", "/show2")
    a = farm.submit(
        farm.frame("--block", str(farm.release_path("A")), "--append", str(trace), "A:{frame}"),
        name="A",
        cluster="/show1",
        frames="1-2",
    )
    b_summary = farm.cli_json(
        "submit",
        "--name",
        "B",
        "--cluster",
        "/show2",
        "--depends-on",
        str(a),
        "--frames",
        "1-2",
        "--",
        *farm.frame("--append", str(trace), "B:{frame}"),
    )
    b = b_summary["id"]
    assert b_summary["state"] == "waiting"
    assert b_summary["depends_on"] == [f"{a}:complete"]
    wait_for(
        lambda: all(f["state"] == "running" for f in farm.frames(a).values()),
        "both frames of A to run",
    )

    job_b = farm.cli_json("job", str(b))
    assert job_b["state"] == "waiting"
    assert job_b["waiting_on"] == [a]
    assert [(f["state"], f["attempts"]) for f in job_b["frame_list"]] == [("pending", 0)] * 2
    assert {w["name"]: w["state"] for w in farm.cli_json("workers")}["s2"] == "idle"
    assert farm.cli_json("order", "s2") == []  # a waiting job is not offered
    assert lines(trace) == []

    farm.release("A")
    wait = farm.cli("wait", str(b), "--timeout", "20")
    assert wait.returncode == 0, describe(wait)
    assert wait.stdout == f"{b} complete\n"
    assert farm.wait_jobs([a, b]) == {str(a): "complete", str(b): "complete"}

    written = lines(trace)
    assert sorted(written[:2]) == ["A:1", "A:2"]
    assert sorted(written[2:]) == ["B:1", "B:2"]
    a_finished = max(f["finished_at"] for f in farm.frames(a).values())
    b_started = min(f["started_at"] for f in farm.frames(b).values())
    assert b_started >= a_finished
    assert farm.cli_json("job", str(b))["waiting_on"] == []


# --------------------------------------------------------------------------- lost worker


def test_sigkill_of_a_worker_requeues_its_frame_on_another(farm: Farm) -> None:
    w1 = farm.worker("w1")
    farm.worker("w2")
    job_id = farm.submit(
        farm.frame(
            "--pid-dir",
            str(farm.pids),
            "--block",
            str(farm.release_path("frames")),
            "--print",
            "frame {frame} attempt done",
        ),
        frames="1-3",
    )

    def both_started() -> dict[str, int]:
        pids = farm.frame_pids()
        return pids if len(pids) == 2 else {}

    wait_for(both_started, "a frame to start on each worker (pid files)")
    running = {f["worker"]: n for n, f in farm.frames(job_id).items() if f["state"] == "running"}
    assert set(running) == {"w1", "w2"}
    lost = running["w1"]
    orphan = farm.frame_pids()[f"w1-{job_id}-{lost}-1"]

    assert w1.stop(signal.SIGKILL) == -signal.SIGKILL

    def requeued() -> bool:
        return "w1" not in farm.worker_names() and farm.frames(job_id)[lost]["state"] == "pending"

    wait_for(requeued, f"the supervisor to drop w1 and requeue frame {lost}")
    assert farm.cli_json("job", str(job_id))["frames"]["running"] == 1  # w2's, still blocked

    farm.release("frames")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    job = farm.cli_json("job", str(job_id))
    assert job["frames"] == {
        "pending": 0,
        "running": 0,
        "complete": 3,
        "failed": 0,
        "killed": 0,
        "blocked": 0,
        "suspended": 0,
    }
    frames = {f["frame"]: f for f in job["frame_list"]}
    assert sorted(frames) == [1, 2, 3]
    for number, frame in frames.items():
        assert frame["state"] == "complete"
        assert frame["exit_code"] == 0
        assert frame["worker"] == "w2"
        assert frame["attempts"] == (2 if number == lost else 1)
    log = farm.cli("logs", f"{job_id}:{lost}")
    assert log.returncode == 0, describe(log)
    assert log.stdout == f"frame {lost} attempt done\n"
    # The frame w1 was running died with it (its shepherd killed its group).
    wait_for(lambda: not farm.frame_alive(orphan), "the orphaned attempt of w1 to exit")


# --------------------------------------------------------------------------- bad peers


def exchange(address: str, data: bytes) -> tuple[list[Message], bytes]:
    """Send `data` on a new connection; read until the supervisor closes it. Returns the
    messages decoded and any bytes that were not a whole message."""
    host, _, port = address.rpartition(":")
    received = bytearray()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        for _ in range(1000):
            chunk = sock.recv(65536)  # a socket timeout fails the test: it must close
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail("the supervisor kept sending and never closed the connection")
    codec = Codec()
    codec.receive_data(bytes(received))
    messages = []
    for _ in range(100):
        message = codec.next_message()
        if message is NEED_DATA:
            break
        assert isinstance(message, Message)
        messages.append(message)
    return messages, bytes(received)


def test_garbage_and_wrong_tokens_leave_the_daemon_serving(farm: Farm) -> None:
    farm.worker("w")
    before = without_load(farm.cli_json("workers"))
    garbage = b"\xc1" + bytes(range(7, 38))  # 0xc1 is never valid msgpack
    wrong_hello = Codec().send(
        Hello(version=PROTOCOL_VERSION, role="worker", token="not-the-token", name="intruder")
    )
    cases = [
        ("garbage", len(garbage).to_bytes(4, "big") + garbage, "bad_frame"),
        ("2 GiB header", (2**31).to_bytes(4, "big"), "frame_too_large"),
        ("wrong token", wrong_hello, "bad_token"),
    ]
    for label, data, code in cases:
        messages, raw = exchange(farm.address, data)
        assert len(messages) == 1, (label, raw)
        assert isinstance(messages[0], Error), (label, messages)
        assert messages[0].code == code, (label, messages[0])

    # A peer that hangs up halfway through a header is just gone.
    port = int(farm.address.rpartition(":")[2])
    with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
        sock.sendall(b"\x00\x00")

    wrong_token = farm.root / "wrong-token"
    wrong_token.write_text("not-the-token\n")
    refused = farm.cli("jobs", "--token-file", str(wrong_token))
    assert "wrong token" in assert_refused(refused)

    assert farm.supervisor is not None
    assert farm.supervisor.running()
    assert without_load(farm.cli_json("workers")) == before  # same worker, same connection
    job_id = farm.submit_cli("--", *farm.frame("--print", "still serving"))
    wait = farm.cli("wait", str(job_id), "--timeout", "20")
    assert wait.returncode == 0, describe(wait)
    assert farm.frames(job_id)[1]["worker"] == "w"
    assert farm.cli_ok("logs", str(job_id)) == "still serving\n"

    log = farm.supervisor.stderr()
    for code in ("bad_frame", "frame_too_large", "bad_token"):
        assert f"code={code}" in log, log


# --------------------------------------------------------------------------- the CLI


def test_submit_json_frame_ranges_and_logs(farm: Farm) -> None:
    farm.worker("w", slots=2)
    out = farm.cli_ok(
        "submit",
        "--json",
        "--name",
        "ranged",
        "--cluster",
        "/show/comp",
        "--priority",
        "42",
        "--frames",
        "1-10x3",
        "--",
        sys.executable,
        "-c",
        "import os, sys; print('frame', sys.argv[1], os.environ['FARMD_FRAME'])",
        "shot_{frame}.exr",
    )
    summary = json.loads(out)
    job_id = summary["id"]
    assert isinstance(job_id, int)
    assert (summary["name"], summary["cluster"], summary["priority"]) == (
        "ranged",
        "/show/comp",
        42,
    )
    assert sum(summary["frames"].values()) == 4

    wait = farm.cli("wait", str(job_id), "--timeout", "20")
    assert (wait.returncode, wait.stdout) == (0, f"{job_id} complete\n"), describe(wait)
    job = farm.cli_json("job", str(job_id))
    assert [f["frame"] for f in job["frame_list"]] == [1, 4, 7, 10]
    assert job["argv"][-1] == "shot_{frame}.exr"
    for number in (1, 4, 7, 10):
        log = farm.cli("logs", f"{job_id}:{number}")
        assert log.returncode == 0, describe(log)
        assert log.stdout == f"frame shot_{number}.exr {number}\n"
    assert farm.cli_ok("logs", str(job_id)) == "frame shot_1.exr 1\n"
    log_json = farm.cli_json("logs", f"{job_id}:7")
    assert log_json["frame"] == 7
    assert log_json["attempt"] == 1
    assert log_json["worker"] == "w"
    assert log_json["text"] == "frame shot_7.exr 7\n"

    plain = farm.cli_ok("submit", "--", *farm.frame())
    assert plain.strip() == str(job_id + 1)


def test_wait_exit_codes_and_kill(farm: Farm) -> None:
    farm.worker("w")
    ok = farm.submit(farm.frame("--exit", "0"))
    bad = farm.submit(farm.frame("--print", "about to fail", "--exit", "3"))

    wait = farm.cli("wait", str(ok), "--timeout", "20")
    assert (wait.returncode, wait.stdout) == (0, f"{ok} complete\n"), describe(wait)
    wait = farm.cli("wait", str(bad), "--timeout", "20")
    assert (wait.returncode, wait.stdout) == (1, f"{bad} failed\n"), describe(wait)
    wait = farm.cli("wait", str(ok), str(bad), "--timeout", "20")
    assert (wait.returncode, wait.stdout) == (1, f"{ok} complete\n{bad} failed\n"), describe(wait)
    failed = farm.cli_json("job", str(bad))
    assert failed["state"] == "failed"
    assert [(f["state"], f["exit_code"]) for f in failed["frame_list"]] == [("failed", 3)]
    assert farm.cli_ok("logs", f"{bad}:1") == "about to fail\n"

    blocked = farm.submit(
        farm.frame("--pid-dir", str(farm.pids), "--block", str(farm.release_path("never")))
    )
    wait_for(lambda: frame_running(farm, blocked), "the blocked job to run")
    started = time.monotonic()
    wait = farm.cli("wait", str(blocked), "--timeout", "0.5")
    assert time.monotonic() - started < 10
    assert (wait.returncode, wait.stdout) == (2, f"{blocked} still going\n"), describe(wait)
    wait = farm.cli("wait", "--json", str(blocked), "--timeout", "0")
    assert wait.returncode == 2, describe(wait)
    assert json.loads(wait.stdout) == {"ended": {}, "pending": [blocked], "stuck": {}}

    pid = farm.wait_frame_pid(f"w-{blocked}-1-1")
    assert farm.cli_ok("kill", str(blocked)) == f"killed {blocked}\n"
    wait = farm.cli("wait", str(blocked), "--timeout", "20")
    assert (wait.returncode, wait.stdout) == (1, f"{blocked} killed\n"), describe(wait)
    killed = farm.cli_json("job", str(blocked))
    assert killed["state"] == "killed"
    assert [f["state"] for f in killed["frame_list"]] == ["killed"]
    wait_for(lambda: not farm.frame_alive(pid), "the killed frame's process to end")

    # The slot is free again.
    after = farm.submit(farm.frame())
    assert farm.wait_jobs([after]) == {str(after): "complete"}


def job_states(farm: Farm) -> list[tuple[Any, ...]]:
    return [
        (j["id"], j["name"], j["state"], j["cluster"], j["priority"], json.dumps(j["frames"]))
        for j in farm.cli_json("jobs")["jobs"]
    ]


def test_refusals_are_one_line_and_change_nothing(farm: Farm) -> None:
    farm.worker("w", "/show")
    done = farm.submit(farm.frame(), name="done")
    farm.wait_jobs([done])
    # No worker is in /nowhere: this one stays pending.
    parked = farm.submit(["true"], name="parked", restrictions="/nowhere")
    before = job_states(farm)
    workers_before = without_load(farm.cli_json("workers"))

    cases: list[tuple[list[str], int, str]] = [
        (["submit", "--cluster", "show1", "--", "true"], 1, "bad cluster path 'show1'"),
        (["submit", "--restrictions", "/show1/+ &&", "--", "true"], 1, "bad restrictions"),
        (["submit", "--"], 1, "a command is required"),
        (["submit", "--frames", "10-1", "--", "true"], 1, "bad frame range"),
        (["submit", "--priority", "0", "--", "true"], 1, "priority"),
        (["submit", "--depends-on", "999", "--", "true"], 1, "job 999 does not exist"),
        (["submit", "--priority", "high", "--", "true"], 2, "'high'"),
        (["job", "999"], 1, "job 999 does not exist"),
        (["kill", str(parked), "999"], 1, "job 999 does not exist"),
        (["modify", "999", "--priority", "5"], 1, "job 999 does not exist"),
        (["modify", str(parked), "--cluster", "nope"], 1, "bad cluster path 'nope'"),
        (["modify", str(parked), "--priority", "5", "--restrictions", "|| /x"], 1, "restrictions"),
        (["modify", str(parked)], 1, "nothing to modify"),
        (["logs", "999:1"], 1, "job 999 does not exist"),
        (["logs", f"{parked}:1"], 1, "has not run yet"),
        (["order", "nobody"], 1, "worker 'nobody' is not connected"),
        (["wait", "999", "--timeout", "1"], 3, "job 999 does not exist"),
    ]
    for args, code, text in cases:
        result = farm.cli(*args)
        line = assert_refused(result, code)
        assert text in line, describe(result)

    assert job_states(farm) == before
    assert without_load(farm.cli_json("workers")) == workers_before
    assert farm.cli_json("job", str(parked))["restrictions"] == "/nowhere"

    # An unreachable supervisor: a port bound on 127.0.0.1 that nobody listens on.
    with socket.socket() as unused:
        unused.bind((LOCALHOST, 0))
        address = f"{LOCALHOST}:{unused.getsockname()[1]}"
        argv = [sys.executable, "-m", "farmd", "jobs", "--supervisor", address]
        result = subprocess.run(
            [*argv, "--token-file", str(farm.token_file)],
            capture_output=True,
            text=True,
            env=farm.env,
            timeout=60,
            check=False,
        )
    assert "cannot reach the supervisor" in assert_refused(result, 1)


def test_listings_have_the_documented_fields(farm: Farm) -> None:
    farm.worker("light1", "/show/light", slots=2)
    running = farm.submit(
        farm.frame("--block", str(farm.release_path("busy"))), name="busy", cluster="/show/light"
    )
    parked = farm.submit(["true"], name="parked", cluster="/show/comp", restrictions="/x")
    wait_for(lambda: frame_running(farm, running), "the busy job to run")

    workers = farm.cli_json("workers")
    assert len(workers) == 1
    worker = workers[0]
    assert {"name", "cluster", "state", "slots", "running"} <= set(worker)
    assert (worker["name"], worker["cluster"], worker["state"], worker["slots"]) == (
        "light1",
        "/show/light",
        "busy",
        2,
    )
    assert worker["running"] == [f"{running}:1"]
    table = farm.cli_ok("workers").splitlines()
    header = ["NAME", "CLUSTER", "STATE", "SLOTS", "CPU", "MEMORY", "LOAD", "TYPES", "RUNNING"]
    assert table[0].split() == [*header, "RESTRICTIONS"]
    row = table[1].split()
    assert row[:4] == ["light1", "/show/light", "busy", "1/2"]
    assert row[-2:] == ["-", f"{running}:1"]  # types, running (no restrictions: blank)

    clusters = {c["path"]: c for c in farm.cli_json("clusters")}
    assert set(clusters) == {"/", "/show", "/show/light", "/show/comp"}
    for node in clusters.values():
        assert {"path", "workers_here", "workers_total", "jobs_here", "jobs_total"} <= set(node)
    counts = {
        path: (n["workers_here"], n["workers_total"], n["jobs_here"], n["jobs_total"])
        for path, n in clusters.items()
    }
    assert counts == {
        "/": (0, 1, 0, 2),
        "/show": (0, 1, 0, 2),
        "/show/light": (1, 1, 1, 1),
        "/show/comp": (0, 0, 1, 1),
    }

    jobs = {j["id"]: j for j in farm.cli_json("jobs")["jobs"]}
    assert set(jobs) == {running, parked}
    for job in jobs.values():
        assert {"id", "name", "cluster", "priority", "state", "frames"} <= set(job)
        assert set(job["frames"]) == {
            "pending",
            "running",
            "complete",
            "failed",
            "killed",
            "blocked",
            "suspended",
        }
    assert (jobs[running]["state"], jobs[running]["frames"]["running"]) == ("running", 1)
    assert (jobs[parked]["state"], jobs[parked]["priority"]) == ("pending", 9999)
    table = farm.cli_ok("jobs").splitlines()
    header = ["ID", "NAME", "STATE", "CLUSTER", "PRIORITY", "OWNER", "PROGRESS", "DONE"]
    header += ["ELAPSED", "ETA", "COUNTS", "REASON"]
    assert table[0].split() == header
    rows = {line.split()[0]: line for line in table[1:3]}  # then the counts
    # progress, done/total, elapsed (a running job's: it started), no estimate yet
    assert rows[str(running)].split()[6:8] == ["0%", "0/1"]
    assert rows[str(running)].split()[9] == "-"
    assert rows[str(parked)].endswith("restrictions '/x' match no worker")
    assert jobs[parked]["reason"] == "restrictions '/x' match no worker"
    assert {jobs[running]["owner"], jobs[parked]["owner"]} == {"farm"}  # the farm token's

    detail = farm.cli_json("job", str(running))
    (frame,) = detail["frame_list"]
    assert set(frame) == FRAME_FIELDS
    assert (frame["frame"], frame["state"], frame["worker"], frame["attempts"]) == (
        1,
        "running",
        "light1",
        1,
    )
    assert frame["started_at"] is not None
    assert (frame["finished_at"], frame["exit_code"]) == (None, None)

    farm.release("busy")
    assert farm.wait_jobs([running]) == {str(running): "complete"}
    (frame,) = farm.cli_json("job", str(running))["frame_list"]
    assert frame["state"] == "complete"
    assert frame["exit_code"] == 0
    assert frame["finished_at"] >= frame["started_at"]


# --------------------------------------------------------------------------- shutdown


def stop_within(proc: Proc, seconds: float) -> None:
    """SIGTERM `proc`; it must exit with status 0 within `seconds`."""
    started = time.monotonic()
    status = proc.stop(signal.SIGTERM, timeout=seconds)
    assert status == 0, f"{proc.name} exited with {status}:\n{proc.stderr()}"
    assert time.monotonic() - started < seconds
    assert "shutting down" in proc.stderr()


def test_sigterm_stops_a_worker_and_its_frame(farm: Farm) -> None:
    procs = {"w1": farm.worker("w1"), "w2": farm.worker("w2")}
    job_id = farm.submit(
        farm.frame("--pid-dir", str(farm.pids), "--block", str(farm.release_path("never")))
    )
    first_pid = wait_for(lambda: list(farm.frame_pids().values()), "the frame's pid file")[0]
    first = farm.frames(job_id)[1]["worker"]
    other = "w2" if first == "w1" else "w1"

    stop_within(procs[first], 5.0)
    wait_for(lambda: not farm.frame_alive(first_pid), "the stopped worker's frame to end")

    # The supervisor sees the worker go and hands the frame to the other one.
    wait_for(
        lambda: farm.frames(job_id)[1]["worker"] == other and frame_running(farm, job_id),
        f"frame 1 to run again on {other}",
    )
    assert farm.frames(job_id)[1]["attempts"] == 2
    assert farm.worker_names() == {other}
    second_pid = farm.wait_frame_pid(f"{other}-{job_id}-1-2")

    stop_within(procs[other], 5.0)
    wait_for(lambda: not farm.frame_alive(second_pid), "the last frame to end")
    wait_for(lambda: not farm.worker_names(), "the supervisor to see no workers")
    assert farm.frames(job_id)[1]["state"] == "pending"

    assert farm.supervisor is not None
    stop_within(farm.supervisor, 5.0)


def test_sigterm_stops_the_supervisor_and_its_workers_carry_on(farm: Farm) -> None:
    worker = farm.worker("w")
    job_id = farm.submit(
        farm.frame("--pid-dir", str(farm.pids), "--block", str(farm.release_path("never")))
    )
    pid = farm.wait_frame_pid(f"w-{job_id}-1-1")

    assert farm.supervisor is not None
    stop_within(farm.supervisor, 5.0)
    assert "cannot reach the supervisor" in assert_refused(farm.cli("jobs"))

    # Frames outlive the connection (farmd/agent.py): the worker notices the supervisor
    # is gone, keeps its frame and keeps trying to reconnect.
    wait_for(
        lambda: "supervisor unreachable" in worker.stderr() or not worker.running(),
        "the worker to try to reconnect (or to exit)",
    )
    assert worker.running(), f"the worker exited with {worker.popen.returncode}"
    assert "connection lost" in worker.stderr()
    assert "Traceback" not in worker.stderr()
    assert farm.frame_alive(pid)

    stop_within(worker, 5.0)
    wait_for(lambda: not farm.frame_alive(pid), "the frame to end with its worker")


def test_up_runs_a_local_farm_with_two_workers(bare_farm: Farm) -> None:
    up = bare_farm.up(workers=2)
    names = wait_for(
        lambda: bare_farm.worker_names() if len(bare_farm.worker_names()) == 2 else None,
        "two local workers to register",
    )
    banner = wait_for(up.stdout, "the 'farmd up' banner")
    assert f"farmd up: supervisor on {bare_farm.address}" in banner

    job_id = bare_farm.submit_cli("--frames", "1-4", "--", *bare_farm.frame("--print", "f{frame}"))
    wait = bare_farm.cli("wait", str(job_id), "--timeout", "20")
    assert (wait.returncode, wait.stdout) == (0, f"{job_id} complete\n"), describe(wait)
    frames = bare_farm.cli_json("job", str(job_id))["frame_list"]
    assert [f["state"] for f in frames] == ["complete"] * 4
    assert {f["worker"] for f in frames} == names
    assert bare_farm.cli_ok("logs", f"{job_id}:3") == "f3\n"

    started = time.monotonic()
    assert up.stop(signal.SIGTERM, timeout=5.0) == 0, up.stderr()
    assert time.monotonic() - started < 5.0


# --------------------------------------------------------------------------- Python client


def test_jobs_lists_a_page_with_every_jobs_counts_and_the_command_for_the_next(
    farm: Farm,
) -> None:
    ids = farm.api.submit_many(
        [{"argv": ["true"], "name": f"j{n}", "cluster": "/nowhere"} for n in range(5)]
    )
    farm.api.kill([ids[4]])
    listing = farm.cli_ok("jobs", "--limit", "2").splitlines()
    assert [row.split()[:3] for row in listing[1:3]] == [
        [str(ids[0]), "j0", "pending"],
        [str(ids[1]), "j1", "pending"],
    ]
    assert listing[3:] == [
        "5 jobs: 4 pending, 1 killed",
        f"listed 2; more after job {ids[1]}: farmd jobs --limit 2 --after {ids[1]} (or --all)",
    ]
    rest = farm.cli_json("jobs", "--limit", "2", "--after", str(ids[1]))
    assert ([j["id"] for j in rest["jobs"]], rest["next"]) == (ids[2:4], ids[3])
    assert (rest["total"], rest["counts"]["killed"]) == (5, 1)
    every = farm.cli_json("jobs", "--limit", "2", "--all")
    assert ([j["id"] for j in every["jobs"]], every["next"]) == (ids, None)
    refused = farm.cli("jobs", "--limit", "0")
    assert refused.returncode != 0
    assert "'0' must be at least 1" in refused.stderr, describe(refused)
