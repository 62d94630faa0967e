"""How busy a worker's host is, read from Linux's /proc for the agent's `host_load`.

Theory of operation
-------------------
CPU use is not a reading but a difference: /proc/stat counts, since boot, the time all
cores together spent in each state (in clock ticks). The agent keeps the last sample and
reports the share of the ticks since then that were not idle (idle and iowait count as
idle: a core waiting on a disk could run a frame), so the figure covers exactly the
interval between two reports, whatever it was. Memory comes from /proc/meminfo: used is
`MemTotal - MemAvailable`, the kernel's own estimate of what a new process could get
without swapping (page cache counts as free, as `free` shows it); a kernel older than
3.14 has no `MemAvailable`, and then free, buffers and cache stand in. The load averages
are `os.getloadavg()`.

The parsers are pure functions of the files' text, so they are tested on sample text;
`LoadSampler` is the thin shell that reads the files. A host without /proc (macOS, the
BSDs) reports nothing: `LoadSampler.sample` returns None, and the agent sends no
`host_load`, which is allowed (docs/protocol.md 5.7).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from farmd.protocol_load import MAX_LOAD_AVERAGE, HostLoad


@attrs.frozen
class CpuTimes:
    """Clock ticks of all cores since boot: not idle, and in all."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate `cpu` line of /proc/stat: `cpu user nice system idle iowait irq
    softirq steal guest guest_nice`. guest and guest_nice are already counted in user
    and nice (the kernel adds them to both), so they are left out of the total.
    ValueError if there is no such line."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(f) for f in fields[1:9]]  # up to steal; older kernels have fewer
            if len(ticks) < 4:
                break
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            total = sum(ticks)
            return CpuTimes(busy=total - idle, total=total)
    msg = "no aggregate 'cpu' line in /proc/stat"
    raise ValueError(msg)


def cpu_busy(before: CpuTimes, after: CpuTimes) -> float:
    """The share of the ticks between two samples that were busy, 0 to 1 (0 when no
    tick passed, or a counter went back, as after a CPU was hot-unplugged)."""
    total = after.total - before.total
    busy = after.busy - before.busy
    if total <= 0 or busy <= 0:
        return 0.0
    return min(busy / total, 1.0)


def parse_meminfo(text: str) -> tuple[int, int]:
    """(used, total) bytes from /proc/meminfo, whose figures are in kB (KiB).
    ValueError without `MemTotal`."""
    kib: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kib[name.strip()] = int(fields[0])
    if "MemTotal" not in kib:
        msg = "no 'MemTotal' in /proc/meminfo"
        raise ValueError(msg)
    total = kib["MemTotal"]
    available = kib.get("MemAvailable")
    if available is None:  # before Linux 3.14
        available = kib.get("MemFree", 0) + kib.get("Buffers", 0) + kib.get("Cached", 0)
    used = min(max(total - available, 0), total)
    return used * 1024, total * 1024


class LoadSampler:
    """Reads the host's load; keeps the last CPU sample so each report covers the time
    since the one before."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._last: CpuTimes | None = None

    def _read(self, name: str) -> str:
        # /proc files are generated in memory by the kernel: reading them never waits on
        # a disk, so the agent reads them on its event loop
        return (self._proc / name).read_text(encoding="ascii", errors="replace")

    def sample(self) -> HostLoad | None:
        """The load since the last sample; None at the first (CPU use needs two) and
        on a host whose /proc cannot be read or parsed."""
        try:
            now = parse_proc_stat(self._read("stat"))
            used, total = parse_meminfo(self._read("meminfo"))
            averages = os.getloadavg()
        except (OSError, ValueError):
            return None
        before, self._last = self._last, now
        if before is None:
            return None
        return HostLoad(
            cpu=cpu_busy(before, now),
            memory_used=used,
            memory_total=total,
            load_average=tuple(round(min(max(a, 0.0), MAX_LOAD_AVERAGE), 2) for a in averages),
        )
