"""End-to-end: locking workers (`farmd lock`, `farmd unlock`) and `farmd explain`.

Real `farmd serve` and `farmd worker` processes on 127.0.0.1. A locked worker takes no
new work: with `--drain` (the default) its running frames finish, with `--purge` they are
stopped and go back to pending without using a retry. A lock is kept by the worker's
name, so it holds when the worker (or the supervisor) comes back. `farmd explain ID`
says, worker by worker, why a job does or does not run there.

Frames block until the test releases them, so what runs where is decided by the
scheduler, not by timing. The supervisor dispatches while it handles a request or a
result, before it answers or shows anything: right after `farmd submit` returns, the
frames it could start are running; once a frame shows as complete, a free slot that could
take a waiting frame has already taken it. So "nothing more started" is checked at those
moments, without waiting for something not to happen.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e_support import (
    Farm,
    Proc,
    assert_refused,
    gated,
    lines,
    trace,
    wait_for,
)

pytestmark = pytest.mark.e2e

LOCKED_DRAIN = "the worker is locked (drain): it takes no new work"
LOCKED_PURGE = "the worker is locked (purge): it takes no new work"


# --------------------------------------------------------------------------- helpers


def spawn_worker(farm: Farm, name: str, *extra: str, label: str = "") -> Proc:
    """`farmd worker --name NAME EXTRA...`; does not wait for it to register."""
    return farm.worker(name, extra=extra, label=label, wait=False)


def start_worker(farm: Farm, name: str, *extra: str, label: str = "") -> Proc:
    return farm.worker(name, extra=extra, label=label)


def frames(farm: Farm, job_id: int) -> dict[int, tuple[Any, ...]]:
    """Frame number -> (state, worker, attempts, failures) as `farmd job --json` shows."""
    job = farm.cli_json("job", str(job_id))
    return {
        f["frame"]: (f["state"], f["worker"], f["attempts"], f["failures"])
        for f in job["frame_list"]
    }


def workers(farm: Farm) -> dict[str, dict[str, Any]]:
    """`farmd workers --json`, by name."""
    return {w["name"]: w for w in farm.cli_json("workers")}


def lock_state(farm: Farm, name: str) -> tuple[Any, ...]:
    """(state, locked, running) of a worker as `farmd workers --json` shows it."""
    worker = workers(farm)[name]
    return worker["state"], worker["locked"], worker["running"]


def explain(farm: Farm, job_id: int, *args: str) -> dict[str, Any]:
    """`farmd explain --json ID ARGS...`"""
    report: dict[str, Any] = farm.cli_json("explain", str(job_id), *args)
    return report


def reasons(farm: Farm, job_id: int, worker: str) -> list[str]:
    """What `farmd explain ID --worker NAME --json` says holds the job back there."""
    (entry,) = explain(farm, job_id, "--worker", worker)["workers"]
    assert entry["worker"] == worker
    found: list[str] = entry["reasons"]
    return found


def test_drain_lets_the_running_frame_finish_and_the_other_worker_takes_the_rest(
    farm: Farm,
) -> None:
    farm.worker("w1")
    farm.worker("w2")
    job = farm.submit(gated(farm, "F", "f{frame}"), name="shots", frames="1-3")
    table = frames(farm, job)
    on = {worker: n for n, (state, worker, _, _) in table.items() if state == "running"}
    assert sorted(on) == ["w1", "w2"], table
    assert table[3] == ("pending", None, 0, 0)
    pid = farm.wait_frame_pid(f"w1-{job}-{on['w1']}-1")

    assert farm.cli_ok("lock", "w1") == "locked w1 (drain)\n"
    assert lock_state(farm, "w1") == ("locked", "drain", [f"{job}:{on['w1']}"])
    assert lock_state(farm, "w2") == ("busy", None, [f"{job}:{on['w2']}"])
    assert farm.frame_alive(pid), "drain stopped the running frame"
    assert frames(farm, job)[on["w1"]] == ("running", "w1", 1, 0)

    # w1's frame finishes; the frame left waits for w2, not for the locked w1
    farm.release(f"f{on['w1']}")
    wait_for(lambda: frames(farm, job)[on["w1"]][0] == "complete", "w1's frame to complete")
    table = frames(farm, job)
    assert table[on["w1"]] == ("complete", "w1", 1, 0)
    assert table[3] == ("pending", None, 0, 0)
    assert lock_state(farm, "w1") == ("locked", "drain", [])
    assert reasons(farm, job, "w1") == [LOCKED_DRAIN]

    farm.release(f"f{on['w2']}")
    farm.wait_frame_pid(f"w2-{job}-3-1")
    assert frames(farm, job)[3] == ("running", "w2", 1, 0)
    farm.release("f3")
    assert farm.wait_jobs([job]) == {str(job): "complete"}
    assert frames(farm, job) == {
        on["w1"]: ("complete", "w1", 1, 0),
        on["w2"]: ("complete", "w2", 1, 0),
        3: ("complete", "w2", 1, 0),
    }
    assert sorted(trace(farm)) == sorted(f"F{n} {e}" for n in (1, 2, 3) for e in ("start", "end"))

    # unlocked, w1 takes work again: a two-frame job runs on both workers at once
    assert farm.cli_ok("unlock", "w1") == "unlocked w1\n"
    assert lock_state(farm, "w1") == ("idle", None, [])
    again = farm.submit(gated(farm, "G", "g"), name="again", frames="1-2")
    assert {worker for state, worker, _, _ in frames(farm, again).values()} == {"w1", "w2"}
    assert {state for state, *_ in frames(farm, again).values()} == {"running"}
    farm.release("g")
    assert farm.wait_jobs([again]) == {str(again): "complete"}


def test_a_locked_only_worker_runs_nothing_until_unlocked(farm: Farm) -> None:
    farm.worker("w1")
    assert farm.cli_ok("lock", "w1", "--drain") == "locked w1 (drain)\n"
    assert lock_state(farm, "w1") == ("locked", "drain", [])
    text = farm.cli_ok("workers")
    assert "locked" in text.splitlines()[-1], text

    out = farm.root / "out.txt"
    job = farm.submit_cli(
        "--name", "waits", "--priority", "50", "--", *farm.frame("--append", str(out), "ran")
    )
    assert frames(farm, job) == {1: ("pending", None, 0, 0)}
    assert farm.cli_json("job", str(job))["state"] == "pending"
    assert farm.cli_ok("explain", str(job)).splitlines() == [
        f"job {job} 'waits' (pending), cluster /, priority 50",
        f"  w1 (/) [order 1, priority 50]: {LOCKED_DRAIN}",
    ]

    assert farm.cli_json("unlock", "w1") == {"unlocked": "w1"}
    assert farm.wait_jobs([job]) == {str(job): "complete"}
    assert frames(farm, job) == {1: ("complete", "w1", 1, 0)}
    assert lines(out) == ["ran"]
    assert lock_state(farm, "w1") == ("idle", None, [])


def test_a_lock_survives_the_worker_reconnecting(farm: Farm) -> None:
    first = start_worker(farm, "w1")
    assert farm.cli_ok("lock", "w1") == "locked w1 (drain)\n"
    assert first.stop() == 0, first.stderr()
    wait_for(lambda: "w1" not in farm.worker_names(), "w1 to leave the farm")
    assert workers(farm) == {}

    start_worker(farm, "w1", label="w1-again")
    assert lock_state(farm, "w1") == ("locked", "drain", [])
    job = farm.submit(farm.frame("--print", "hi"), name="later")
    assert frames(farm, job) == {1: ("pending", None, 0, 0)}
    assert reasons(farm, job, "w1") == [LOCKED_DRAIN]

    assert farm.cli_ok("unlock", "w1") == "unlocked w1\n"
    assert farm.wait_jobs([job]) == {str(job): "complete"}
    assert frames(farm, job) == {1: ("complete", "w1", 1, 0)}


def test_a_lock_survives_a_supervisor_restart(farm: Farm) -> None:
    farm.worker("w1")
    assert farm.cli_json("lock", "w1", "--purge") == {
        "locked": "w1",
        "mode": "purge",
        "requeued": [],
    }
    farm.restart()
    wait_for(lambda: "w1" in farm.worker_names(), "w1 to reconnect on its own")
    assert lock_state(farm, "w1") == ("locked", "purge", [])
    job = farm.submit(farm.frame("--print", "hi"), name="after-restart")
    assert frames(farm, job) == {1: ("pending", None, 0, 0)}
    assert reasons(farm, job, "w1") == [LOCKED_PURGE]

    assert farm.cli_ok("unlock", "w1") == "unlocked w1\n"
    assert farm.wait_jobs([job]) == {str(job): "complete"}
    assert frames(farm, job) == {1: ("complete", "w1", 1, 0)}


# --------------------------------------------------------------------------- purge


def test_purge_kills_the_running_frame_and_requeues_it_without_a_failure(farm: Farm) -> None:
    farm.worker("w1")
    job = farm.submit(gated(farm, "P", "p"), name="purged")
    pid = farm.wait_frame_pid(f"w1-{job}-1-1")

    assert farm.cli_ok("lock", "w1", "--purge") == f"locked w1 (purge); requeued {job}:1\n"
    wait_for(lambda: not farm.frame_alive(pid), "the purged frame's process to end")
    assert frames(farm, job) == {1: ("pending", "w1", 1, 0)}
    assert farm.cli_json("job", str(job))["state"] == "pending"
    wait_for(lambda: lock_state(farm, "w1") == ("locked", "purge", []), "w1's slot to be free")
    assert reasons(farm, job, "w1") == [LOCKED_PURGE]

    # it runs again elsewhere, as its second attempt, with no failure counted
    farm.worker("w2")
    farm.wait_frame_pid(f"w2-{job}-1-2")
    assert frames(farm, job) == {1: ("running", "w2", 2, 0)}
    farm.release("p")
    assert farm.wait_jobs([job]) == {str(job): "complete"}
    assert frames(farm, job) == {1: ("complete", "w2", 2, 0)}
    assert farm.frames(job)[1]["exit_code"] == 0
    assert trace(farm) == ["P1 start", "P1 start", "P1 end"]  # killed before its end
    assert lock_state(farm, "w1") == ("locked", "purge", [])


# --------------------------------------------------------------------------- refusals


def test_lock_and_unlock_refusals_are_one_line(farm: Farm) -> None:
    farm.worker("w1")
    refused = assert_refused(farm.cli("lock", "nosuch"))
    assert refused == "farmd: error: worker 'nosuch' is not connected"
    refused = assert_refused(farm.cli("unlock", "w1"))
    assert refused == "farmd: error: worker 'w1' is not locked"
    refused = assert_refused(farm.cli("lock", "w1", "--drain", "--purge"), exit_code=2)
    assert "not allowed with argument" in refused
    assert lock_state(farm, "w1") == ("idle", None, [])

    assert farm.cli_ok("lock", "w1") == "locked w1 (drain)\n"
    assert farm.cli_ok("unlock", "w1") == "unlocked w1\n"
    refused = assert_refused(farm.cli("unlock", "w1"))
    assert refused == "farmd: error: worker 'w1' is not locked"
    assert lock_state(farm, "w1") == ("idle", None, [])


# --------------------------------------------------------------------------- explain


def test_explain_names_what_holds_the_job_back_on_each_worker(farm: Farm) -> None:
    render = ("--type", "render", "--property", "ram=64")
    specs = {
        "busy": ("--cluster", "/show/busy", *render),
        "runs": ("--cluster", "/show", *render),
        "wside": ("--cluster", "/show", "--restrictions", "/other/+", *render),
        "jside": ("--cluster", "/other", *render),
        "notype": ("--cluster", "/show", "--type", "comp", "--property", "ram=64"),
        "small": ("--cluster", "/show", "--type", "render", "--property", "ram=8"),
        "locked": ("--cluster", "/show", *render),
    }
    farm.await_workers({name: spawn_worker(farm, name, *args) for name, args in specs.items()})
    farm.cli_ok("lock", "locked")

    # two better jobs that only `busy` may run: one holds it, both have frames waiting
    urgent = farm.submit(
        gated(farm, "A", "a"),
        name="urgent",
        cluster="/show/busy",
        priority=10,
        frames="1-2",
        restrictions="/show/busy",
    )
    following = farm.submit(
        gated(farm, "B", "a"),
        name="following",
        cluster="/show/busy",
        priority=20,
        restrictions="/show/busy",
    )
    assert frames(farm, urgent) == {1: ("running", "busy", 1, 0), 2: ("pending", None, 0, 0)}
    assert frames(farm, following) == {1: ("pending", None, 0, 0)}

    target = farm.submit_cli(
        "--name",
        "target",
        "--cluster",
        "/show",
        "--priority",
        "500",
        "--job-type",
        "render",
        "--requires",
        "host.ram >= 32",
        "--restrictions",
        "/show/+",
        "--frames",
        "1-2",
        "--",
        *gated(farm, "T", "t"),
    )
    assert frames(farm, target) == {1: ("running", "runs", 1, 0), 2: ("pending", None, 0, 0)}

    report = explain(farm, target)
    assert {k: report[k] for k in ("job", "name", "state", "cluster", "priority")} == {
        "job": target,
        "name": "target",
        "state": "running",
        "cluster": "/show",
        "priority": 500,
    }
    assert report["everywhere"] == []
    by_worker = {e["worker"]: e for e in report["workers"]}
    assert list(by_worker) == sorted(specs)
    # where it runs, it waits its turn for the slot its own frame holds (the wording of
    # what is short is not pinned here)
    (next_here,) = by_worker["runs"]["reasons"]
    assert next_here.startswith("it is next here, once"), next_here
    assert {name: e["reasons"] for name, e in by_worker.items() if name != "runs"} == {
        "busy": [
            f"outranked by 2 jobs that fit here; the first is job {urgent} "
            "(cluster order 1, priority 10)"
        ],
        "wside": [
            "cluster restriction on the worker's side: it accepts jobs in '/other/+' only, "
            "and the job is in /show"
        ],
        "jside": [
            "cluster restriction on the job's side: it accepts workers in '/show/+' only, "
            "and the worker is in /other"
        ],
        "notype": ["type missing: the job is a 'render' job; the worker runs comp"],
        "small": ["requirement not met: host.ram >= 32"],
        "locked": [LOCKED_DRAIN],
    }
    assert {name: (e["runs"], e["running"]) for name, e in by_worker.items()} == {
        name: (True, [f"{target}:1"]) if name == "runs" else (False, []) for name in specs
    }
    assert {name: e["cluster"] for name, e in by_worker.items()} == {
        name: args[1] for name, args in specs.items()
    }
    assert {name: e["rank"] for name, e in by_worker.items()} == {
        "busy": {"order": 3, "priority": 500, "ahead": 2},
        "runs": {"order": 1, "priority": 500, "ahead": 0},
        "wside": None,
        "jside": None,
        "notype": {"order": 1, "priority": 500},
        "small": {"order": 1, "priority": 500},
        "locked": {"order": 1, "priority": 500},
    }

    text = farm.cli_ok("explain", str(target)).splitlines()
    assert text[0] == f"job {target} 'target' (running), cluster /show, priority 500"
    for line in (
        f"  busy (/show/busy) [order 3, priority 500]: outranked by 2 jobs that fit here; "
        f"the first is job {urgent} (cluster order 1, priority 10)",
        f"  runs (/show) [order 1, priority 500]: runs {target}:1",
        "  small (/show) [order 1, priority 500]: requirement not met: host.ram >= 32",
        f"  locked (/show) [order 1, priority 500]: {LOCKED_DRAIN}",
        "  wside (/show): cluster restriction on the worker's side: it accepts jobs in "
        "'/other/+' only, and the job is in /show",
    ):
        assert line in text, "\n".join(text)
    assert len(text) == 1 + 7 + 1  # a line per reason, and `runs` has its run line too

    # one worker
    only = explain(farm, target, "--worker", "small")
    assert [e["worker"] for e in only["workers"]] == ["small"]
    assert only["workers"][0]["reasons"] == ["requirement not met: host.ram >= 32"]
    assert farm.cli_ok("explain", str(target), "--worker", "notype").splitlines() == [
        f"job {target} 'target' (running), cluster /show, priority 500",
        "  notype (/show) [order 1, priority 500]: type missing: the job is a 'render' job; "
        "the worker runs comp",
    ]
    refused = assert_refused(farm.cli("explain", str(target), "--worker", "nosuch"))
    assert refused == "farmd: error: worker 'nosuch' is not connected"
    refused = assert_refused(farm.cli("explain", "999"))
    assert refused == "farmd: error: job 999 does not exist"

    # once the job has ended, that is the one reason everywhere
    farm.release("t")
    farm.release("a")
    assert farm.wait_jobs([target, urgent, following]) == {
        str(target): "complete",
        str(urgent): "complete",
        str(following): "complete",
    }
    assert {f[1] for f in frames(farm, target).values()} == {"runs"}
    ended = explain(farm, target)
    assert ended["everywhere"] == ["the job has ended (complete)"]
    assert {e["worker"]: e["reasons"] for e in ended["workers"]}["runs"] == [
        "the job has ended (complete)"
    ]


def test_explain_of_a_job_waiting_on_a_dependency_says_so_on_every_worker(farm: Farm) -> None:
    farm.worker("w1")
    farm.worker("w2", cluster="/show")
    first = farm.submit(gated(farm, "D", "d"), name="first")
    out = farm.root / "out.txt"
    then = farm.submit(farm.frame("--append", str(out), "then"), name="then", depends_on=[first])
    assert frames(farm, then) == {1: ("pending", None, 0, 0)}

    report = explain(farm, then)
    assert report["state"] == "waiting"
    waiting = f"waiting for job {first}"
    assert report["everywhere"] == [waiting]
    assert [(e["worker"], e["runs"], e["reasons"]) for e in report["workers"]] == [
        ("w1", False, [waiting]),
        ("w2", False, [waiting]),
    ]
    text = farm.cli_ok("explain", str(then)).splitlines()
    assert text == [
        f"job {then} 'then' (waiting), cluster /, priority 9999",
        f"  w1 (/) [order 1, priority 9999]: {waiting}",
        f"  w2 (/show) [order 3, priority 9999]: {waiting}",
    ]

    farm.release("d")
    assert farm.wait_jobs([first, then]) == {str(first): "complete", str(then): "complete"}
    assert lines(out) == ["then"]
