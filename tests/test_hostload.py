"""Host load: the agent's /proc parsers on sample text, the core keeping each worker's
last report (listings, metrics), and what `farmd workers` prints of it."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
import trio.lowlevel
from prometheus_client.parser import text_string_to_metric_families

from farmd.cli.workers import load_cells
from farmd.core import Scheduler, WorkerJoined, WorkerLoad, WorkerLost, WorkerReconfigured
from farmd.core.authority import Principal
from farmd.errors import ForbiddenError, InternalError, UnknownWorkerError
from farmd.hostload import CpuTimes, LoadSampler, cpu_busy, parse_meminfo, parse_proc_stat
from farmd.metrics import FarmMetrics
from farmd.protocol import Error, Hello, ListWorkers, Register, Registered, Role, Welcome
from farmd.protocol_load import HostLoad
from tests.inprocess import FakeWorker, Farm, start_supervisor, supervisor_config

STAT = """\
cpu  4705 356 584 3699 23 23 0 0 0 0
cpu0 1393 280 176 1745 5 11 0 0 0 0
cpu1 3312 76 408 1954 18 12 0 0 0 0
intr 114930548 113199788 3 0 5 263 0 4 [... 29 more]
ctxt 1990473
btime 1062191376
"""

MEMINFO = """\
MemTotal:       16318412 kB
MemFree:         1015612 kB
MemAvailable:   10261476 kB
Buffers:          470216 kB
Cached:          8644572 kB
SwapCached:            0 kB
HugePages_Total:       0
"""


def test_proc_stat_counts_idle_and_iowait_as_idle() -> None:
    times = parse_proc_stat(STAT)
    total = 4705 + 356 + 584 + 3699 + 23 + 23 + 0 + 0  # guest fields left out
    assert times == CpuTimes(busy=total - 3699 - 23, total=total)


def test_proc_stat_without_a_cpu_line_is_refused() -> None:
    with pytest.raises(ValueError, match="'cpu' line"):
        parse_proc_stat("intr 1 2 3\n")


def test_cpu_busy_is_the_share_of_ticks_between_two_samples() -> None:
    assert cpu_busy(CpuTimes(100, 400), CpuTimes(175, 500)) == 0.75
    assert cpu_busy(CpuTimes(100, 400), CpuTimes(100, 400)) == 0.0  # no tick passed
    assert cpu_busy(CpuTimes(100, 400), CpuTimes(50, 300)) == 0.0  # counters went back


def test_meminfo_used_is_total_minus_available_in_bytes() -> None:
    assert parse_meminfo(MEMINFO) == ((16318412 - 10261476) * 1024, 16318412 * 1024)


def test_meminfo_before_memavailable_counts_free_buffers_and_cache() -> None:
    old = "\n".join(line for line in MEMINFO.splitlines() if "MemAvailable" not in line)
    available = 1015612 + 470216 + 8644572
    assert parse_meminfo(old) == ((16318412 - available) * 1024, 16318412 * 1024)


def test_meminfo_without_a_total_is_refused() -> None:
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo("MemFree: 12 kB\n")


def test_sampler_reports_from_the_second_sample(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 0 300 0 0 0 0 0 0\n")
    (tmp_path / "meminfo").write_text(MEMINFO)
    sampler = LoadSampler(tmp_path)
    assert sampler.sample() is None  # CPU use takes two samples
    (tmp_path / "stat").write_text("cpu  130 0 0 370 0 0 0 0 0 0\n")
    load = sampler.sample()
    assert load is not None
    assert load.cpu == 0.3
    assert (load.memory_used, load.memory_total) == parse_meminfo(MEMINFO)
    assert len(load.load_average) == 3


def test_sampler_on_a_host_without_proc_reports_nothing(tmp_path: Path) -> None:
    sampler = LoadSampler(tmp_path / "nowhere")
    assert sampler.sample() is None
    assert sampler.sample() is None


def test_sampler_on_this_host_gives_a_valid_message() -> None:
    sampler = LoadSampler()
    sampler.sample()  # the first primes the CPU counters
    load = sampler.sample()
    if load is None:
        pytest.skip("no /proc on this host")
    assert isinstance(load, HostLoad)
    assert 0 <= load.cpu <= 1
    assert 0 < load.memory_used <= load.memory_total


# --------------------------------------------------------------------------- the core


def load(name: str, cpu: float = 0.5, *, now: float = 1.0, **fields: object) -> WorkerLoad:
    values: dict[str, object] = {
        "memory_used": 4 << 30,
        "memory_total": 16 << 30,
        "load_average": (1.5, 1.0, 0.5),
    }
    values.update(fields)
    return WorkerLoad(name=name, cpu=cpu, now=now, **values)  # type: ignore[arg-type]


def test_core_keeps_each_workers_last_load_with_its_time() -> None:
    core = Scheduler()
    core.handle(WorkerJoined(name="w1", cluster="/A", slots=1, now=0.0))
    core.handle(WorkerJoined(name="w2", cluster="/A", slots=1, now=0.0))
    (w1, w2) = core.workers_view()
    assert w1["load"] is None  # nothing reported yet
    assert w2["load"] is None
    outcome = core.handle(load("w1", 0.25, now=5.0))
    assert outcome.commands == ()  # data only: nothing to do, nothing to store
    assert not outcome.changes
    core.handle(load("w1", 0.75, now=15.0, memory_used=8 << 30))
    (w1, w2) = core.workers_view()
    assert w1["load"] == {
        "cpu": 0.75,
        "memory_used": 8 << 30,
        "memory_total": 16 << 30,
        "load_average": [1.5, 1.0, 0.5],
        "at": 15.0,
    }
    assert w2["load"] is None


def test_load_survives_a_reconfiguration_and_goes_with_the_worker() -> None:
    core = Scheduler()
    core.handle(WorkerJoined(name="w1", cluster="/A", slots=1, now=0.0))
    core.handle(load("w1", 0.5))
    core.handle(WorkerReconfigured(name="w1", cluster="/B", slots=2, now=2.0))
    assert core.workers_view()[0]["load"]["cpu"] == 0.5
    core.handle(WorkerLost(name="w1", now=3.0))
    core.handle(WorkerJoined(name="w1", cluster="/A", slots=1, now=4.0))
    assert core.workers_view()[0]["load"] is None  # a new session reports afresh


def test_load_of_a_worker_not_connected_is_refused() -> None:
    core = Scheduler()
    with pytest.raises(UnknownWorkerError, match="'ghost' is not connected"):
        core.handle(load("ghost"))


def test_load_is_a_workers_act() -> None:
    core = Scheduler()
    core.handle(WorkerJoined(name="w1", cluster="/", slots=1, now=0.0))
    user = Principal.shared_user()
    with pytest.raises(ForbiddenError):
        core.handle(attrs.evolve(load("w1"), by=user))


@pytest.mark.parametrize(
    "fields",
    [{"cpu": 1.5}, {"memory_used": 32 << 30}, {"load_average": (1.0, -1.0, 0.0)}],
    ids=["cpu", "memory", "load average"],
)
def test_a_load_out_of_bounds_is_our_bug(fields: dict[str, object]) -> None:
    core = Scheduler()
    core.handle(WorkerJoined(name="w1", cluster="/", slots=1, now=0.0))
    with pytest.raises(InternalError, match="bad host load"):
        core.handle(load("w1", **fields))  # type: ignore[arg-type]
    assert core.workers_view()[0]["load"] is None


def test_metrics_show_load_per_cluster_not_per_worker() -> None:
    core = Scheduler()
    for name, cluster in (("a1", "/A"), ("a2", "/A"), ("a3", "/A"), ("b1", "/B")):
        core.handle(WorkerJoined(name=name, cluster=cluster, slots=1, now=0.0))
    core.handle(load("a1", 0.2))
    core.handle(load("a2", 0.6, memory_used=2 << 30))  # a3 has not reported
    text = FarmMetrics(core.statistics).exposition()[0].decode()
    samples = {
        (s.name, s.labels.get("cluster")): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("farmd_host_")
        for s in family.samples
    }
    assert samples == {
        ("farmd_host_load_workers", "/A"): 2,
        ("farmd_host_cpu_busy", "/A"): pytest.approx(0.4),
        ("farmd_host_cpu_busy_sum", "/A"): pytest.approx(0.8),
        ("farmd_host_memory_used_bytes", "/A"): (4 << 30) + (2 << 30),
        ("farmd_host_memory_bytes", "/A"): 2 * (16 << 30),
    }


def test_cli_load_columns() -> None:
    assert load_cells(None) == {"cpu": "-", "memory": "-", "load": "-"}
    view = {
        "cpu": 0.374,
        "memory_used": 6 << 30,
        "memory_total": 64 << 30,
        "load_average": [3.25, 2.0, 1.0],
        "at": 1.0,
    }
    assert load_cells(view) == {"cpu": "37%", "memory": "6.0/64.0G", "load": "3.25"}


# --------------------------------------------------------------------------- the supervisor


async def farm_of(nursery: trio.Nursery, tmp_path: Path) -> Farm:
    config = supervisor_config(tmp_path, store="memory")
    return await start_supervisor(nursery, config, clock=trio.current_time)


REPORT = HostLoad(cpu=0.5, memory_used=1 << 30, memory_total=4 << 30, load_average=(1, 2, 3))


async def test_a_version_6_workers_report_is_listed(nursery: trio.Nursery, tmp_path: Path) -> None:
    farm = await farm_of(nursery, tmp_path)
    worker = await farm.worker("w1")
    await worker.send(REPORT)
    admin = await farm.admin()
    for _ in range(100):  # bounded: the report is handled within a few turns of the loop
        (listed,) = await admin.ask(ListWorkers)
        if listed["load"] is not None:
            break
        await trio.lowlevel.checkpoint()
    assert {k: v for k, v in listed["load"].items() if k != "at"} == {
        "cpu": 0.5,
        "memory_used": 1 << 30,
        "memory_total": 4 << 30,
        "load_average": [1, 2, 3],
    }


async def test_an_older_worker_may_not_send_host_load(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    farm = await farm_of(nursery, tmp_path)
    old = FakeWorker(farm.open_stream())
    await old.send(
        Hello(version=5, role=Role.WORKER.value, token=farm.token, name="old"),
        Register(name="old", cluster="/", slots=1),
    )
    await old.expect(Welcome)
    await old.expect(Registered)
    await old.send(REPORT)
    error = await old.expect(Error)
    assert error == Error(
        code="bad_message", message="a worker of version 5 may not send 'host_load'"
    )
