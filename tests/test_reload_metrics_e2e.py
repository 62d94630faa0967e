"""End-to-end: reloading the central worker configuration, and the Prometheus metrics.

Real `farmd serve` (with `--config FILE`, and `--metrics 127.0.0.1:0`) and `farmd worker`
processes on 127.0.0.1. The `workers:` section of the config file wins over a worker's
own flags; `farmd reload` (or SIGHUP to the supervisor) reads the file again and applies
changed worker settings at once, from each worker's next pick, without disturbing the
frames it runs. A bad file is refused with one located line and changes nothing.

Frames block until the test releases them (`gated`), so what runs, and in which order,
is decided by the scheduler, not by timing; `trace` shows the order frames started in.
Metrics are scraped over HTTP with urllib and parsed with prometheus_client's parser.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e_support import (
    CLI_TIMEOUT,
    LOCALHOST,
    Farm,
    assert_refused,
    describe,
    gated,
    trace,
    wait_for,
)

pytestmark = pytest.mark.e2e

HTTP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- helpers


def write_config(path: Path, text: str) -> Path:
    """Write a config file whole (a new file then a rename: a reload never reads half)."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)
    return path


def hosts_config(cluster: str, supervisor: str = "{}") -> str:
    """A config file putting host w1 in `cluster`."""
    return f"supervisor: {supervisor}\nworkers:\n  hosts:\n    w1: {{cluster: {cluster}}}\n"


def worker_view(farm: Farm, name: str) -> dict[str, Any]:
    """A worker as `farmd workers --json` shows it."""
    workers = {w["name"]: w for w in farm.cli_json("workers")}
    return workers[name]


def frame_view(farm: Farm, job_id: int, number: int) -> dict[str, Any]:
    """A frame as `farmd job --json` shows it."""
    job = farm.cli_json("job", str(job_id))
    frames = {f["frame"]: f for f in job["frame_list"]}
    return frames[number]


def farmd(farm: Farm, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`farmd ARGS...` in the farm's environment, to its end."""
    return farm.run(*args, timeout=timeout)


def metrics_address(farm: Farm) -> str:
    """STATE/metrics_address, once written whole."""
    path = farm.state / "metrics_address"

    def written() -> str:
        try:
            text = path.read_text()
        except OSError:
            return ""
        return text.strip() if text.endswith("\n") else ""

    address = wait_for(written, f"{path} to be written")
    host, _, port = address.rpartition(":")
    assert host == LOCALHOST, address
    assert int(port) > 0, address
    return address


def http_get(address: str, path: str) -> tuple[int, str, str]:
    """GET http://ADDRESS/PATH (127.0.0.1 only): status, Content-Type and body."""
    assert address.startswith(f"{LOCALHOST}:"), address
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=HTTP_TIMEOUT) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`GET /metrics`, parsed: (sample name, sorted labels) -> value."""
    status, kind, body = http_get(address, "/metrics")
    assert status == 200, body
    assert kind.startswith("text/plain"), kind
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k for k in samples)}"
    return samples[key]


# --------------------------------------------------------------------------- reload


def test_reload_and_sighup_move_a_worker_between_clusters_mid_run(bare_farm: Farm) -> None:
    farm = bare_farm
    config = write_config(farm.root / "farm.yaml", hosts_config("/show1"))
    supervisor = farm.serve("--config", str(config))
    farm.worker("w1", "/", slots=1)  # its own flag says /, the file wins
    assert worker_view(farm, "w1")["cluster"] == "/show1"

    show1 = farm.submit(
        gated(farm, "A", "A{frame}"), name="a", cluster="/show1", priority=50, frames="1-3"
    )
    farm.wait_frame_pid(f"w1-{show1}-1-1")
    show2 = farm.submit(
        gated(farm, "B", "B{frame}"), name="b", cluster="/show2", priority=50, frames="1-3"
    )
    pid = farm.wait_frame_pid(f"w1-{show1}-1-1")
    assert frame_view(farm, show2, 1)["state"] == "pending"

    # the file now puts w1 in /show2: reloaded, it moves at once, its frame keeps running
    write_config(config, hosts_config("/show2"))
    result = farm.cli_json("reload")
    assert result["reconfigured"] == ["w1"], result
    view = worker_view(farm, "w1")
    assert view["cluster"] == "/show2", view
    assert view["running"] == [f"{show1}:1"], view
    assert farm.frame_alive(pid)
    frame = frame_view(farm, show1, 1)
    assert (frame["state"], frame["worker"], frame["attempts"]) == ("running", "w1", 1), frame
    order = farm.cli_json("order", "w1")
    assert (order[0]["id"], order[0]["cluster"], order[0]["order"]) == (show2, "/show2", 1)

    # released, its next frame is the /show2 job's: order 1 in its new cluster
    farm.release(f"A{1}")
    wait_for(lambda: "B1 start" in trace(farm), "w1 to start frame 1 of the /show2 job")
    assert trace(farm) == ["A1 start", "A1 end", "B1 start"]
    assert frame_view(farm, show1, 1)["attempts"] == 1
    assert frame_view(farm, show1, 2)["state"] == "pending"
    assert frame_view(farm, show2, 1)["worker"] == "w1"

    # SIGHUP reads the file again too: back to /show1, whose job it then takes next
    write_config(config, hosts_config("/show1"))
    supervisor.popen.send_signal(signal.SIGHUP)
    wait_for(
        lambda: worker_view(farm, "w1")["cluster"] == "/show1", "w1 back in /show1 after SIGHUP"
    )
    assert supervisor.running()
    assert frame_view(farm, show2, 1)["state"] == "running"
    farm.release("B1")
    wait_for(lambda: "A2 start" in trace(farm), "w1 to start frame 2 of the /show1 job")
    assert trace(farm) == ["A1 start", "A1 end", "B1 start", "B1 end", "A2 start"]


def test_reload_refuses_an_invalid_file_and_keeps_the_running_configuration(
    bare_farm: Farm,
) -> None:
    farm = bare_farm
    config = write_config(farm.root / "farm.yaml", hosts_config("/show1"))
    supervisor = farm.serve("--config", str(config))
    farm.worker("w1", "/", slots=1)
    assert worker_view(farm, "w1")["cluster"] == "/show1"

    bad = "supervisor: {}\nworkers:\n  hosts:\n    w1: {cluster: /show2, slots: zero}\n"
    write_config(config, bad)
    line = assert_refused(farm.cli("reload"))
    assert re.search(rf"{re.escape(str(config))}:4:\d+: workers\.hosts\.w1\.slots: ", line), line

    assert worker_view(farm, "w1")["cluster"] == "/show1"
    # SIGHUP with the same bad file: refused in the log, the supervisor keeps serving
    supervisor.popen.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in supervisor.stderr(), "the SIGHUP reload to be refused")
    assert supervisor.running()
    assert worker_view(farm, "w1")["cluster"] == "/show1"
    job = farm.submit(farm.frame("--exit", "0"), cluster="/show1", frames="1-2")
    assert farm.wait_jobs([job]) == {str(job): "complete"}

    # mended, the file is read again
    write_config(config, hosts_config("/show2"))
    assert farm.cli_ok("reload").splitlines()[0] == "reloaded; workers reconfigured: w1"
    assert worker_view(farm, "w1")["cluster"] == "/show2"


def test_reload_reports_only_the_supervisor_settings_the_file_changed(bare_farm: Farm) -> None:
    """`restart_needed` names the supervisor settings the file changed; the ones given
    on the command line (`--listen`, `--state`, `--metrics`), which the file never set,
    are not changes of the file."""
    farm = bare_farm
    config = write_config(farm.root / "farm.yaml", hosts_config("/show1"))
    farm.serve("--config", str(config), "--metrics", f"{LOCALHOST}:0")
    farm.worker("w1", "/", slots=1)

    assert farm.cli_json("reload") == {"reconfigured": [], "restart_needed": []}
    assert farm.cli_ok("reload") == "reloaded; workers reconfigured: none\n"

    write_config(config, hosts_config("/show1", supervisor="{default_priority: 100}"))
    result = farm.cli_json("reload")
    assert result == {"reconfigured": [], "restart_needed": ["default_priority"]}, result


# --------------------------------------------------------------------------- metrics


def test_metrics_endpoint_reports_frames_workers_and_latencies(bare_farm: Farm) -> None:
    farm = bare_farm
    config = write_config(farm.root / "farm.yaml", "supervisor:\n  resources: {license.nuke: 2}\n")
    farm.serve("--config", str(config), "--metrics", f"{LOCALHOST}:0")
    address = metrics_address(farm)
    farm.worker("w1", "/show1", slots=1)
    job = farm.submit(gated(farm, "A", "A{frame}"), cluster="/show1", priority=50, frames="1-3")
    farm.wait_frame_pid(f"w1-{job}-1-1")

    samples = scrape(address)
    assert sample(samples, "farmd_frames", cluster="/show1", state="running") == 1
    assert sample(samples, "farmd_frames", cluster="/show1", state="pending") == 2
    assert sample(samples, "farmd_frames", cluster="/show1", state="complete") == 0
    assert sample(samples, "farmd_frames_subtree", cluster="/", state="pending") == 2
    assert sample(samples, "farmd_queue_depth", cluster="/show1") == 2
    assert sample(samples, "farmd_workers", cluster="/show1", state="busy") == 1
    assert sample(samples, "farmd_workers", cluster="/show1", state="idle") == 0
    assert sample(samples, "farmd_slots_used", cluster="/show1") == 1
    assert sample(samples, "farmd_slots_total", cluster="/show1") == 1
    assert sample(samples, "farmd_slots_free", cluster="/show1") == 0
    assert sample(samples, "farmd_frames_started_total") >= 1
    assert sample(samples, "farmd_dispatch_latency_seconds_count") >= 1
    assert sample(samples, "farmd_store_commit_seconds_count") >= 1
    assert sample(samples, "farmd_resource_total", resource="license.nuke") == 2
    assert sample(samples, "farmd_resource_used", resource="license.nuke") == 0

    # a finished frame moves the counts on, in the next scrape
    farm.release("A1")
    wait_for(lambda: "A2 start" in trace(farm), "frame 2 to start")
    samples = scrape(address)
    assert sample(samples, "farmd_frames", cluster="/show1", state="complete") == 1
    assert sample(samples, "farmd_frames", cluster="/show1", state="running") == 1
    assert sample(samples, "farmd_queue_depth", cluster="/show1") == 1
    assert sample(samples, "farmd_frames_started_total") >= 2
    assert sample(samples, "farmd_frames_completed_total") >= 1

    status, _, body = http_get(address, "/elsewhere")
    assert status == 404, body


# --------------------------------------------------------------------------- config check


def test_config_check_host_shows_effective_settings(bare_farm: Farm) -> None:
    farm = bare_farm
    config = write_config(
        farm.root / "farm.yaml",
        "supervisor: {}\n"
        "workers:\n"
        "  default: {slots: 2}\n"
        "  hosts:\n"
        "    w*: {restrictions: /show1}\n"
        "    w1: {cluster: /show1}\n",
    )
    result = farmd(farm, "config", "check", str(config), "--host", "w1", "--json")
    assert result.returncode == 0, describe(result)
    settings = json.loads(result.stdout)
    assert settings["host"] == "w1"
    assert settings["cluster"] == "/show1"
    assert settings["slots"] == 2
    assert settings["restrictions"] == "/show1"
    assert settings["types"] is None
    assert settings["origins"]["cluster"] == "host w1"
    assert settings["origins"]["slots"] == "default"
    assert settings["origins"]["restrictions"] == "host w*"

    other = json.loads(farmd(farm, "config", "check", str(config), "--host", "x9", "--json").stdout)
    assert (other["cluster"], other["slots"], other["restrictions"]) == (None, 2, None)


def test_json_logs_carry_the_ids_and_every_dispatch_with_its_rank(bare_farm: Farm) -> None:
    farm = bare_farm
    farm.serve("--log-json", "--log-level", "debug")
    farm.worker("w1", "/show1")
    job_id = farm.submit(["true"], cluster="/show1", priority=7, frames="1-2")
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}

    def events(name: str) -> list[dict[str, Any]]:
        assert farm.supervisor is not None
        found = []
        for line in farm.supervisor.stderr().splitlines():
            entry = json.loads(line)  # every line is one JSON object
            if entry["event"] == name:
                found.append(entry)
        return found

    dispatches = events("dispatch")
    assert [(d["job"], d["frame"], d["attempt"], d["worker"]) for d in dispatches] == [
        (job_id, 1, 1, "w1"),
        (job_id, 2, 1, "w1"),
    ]
    assert all(d["level"] == "debug" and d["rank"] == [1, 7, job_id] for d in dispatches)
    finished = events("frame finished")
    assert {(f["job"], f["frame"], f["attempt"], f["worker"], f["level"]) for f in finished} == {
        (job_id, 1, 1, "w1", "info"),
        (job_id, 2, 1, "w1", "info"),
    }
