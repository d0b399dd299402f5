"""Node-wide OS metrics: the ``cpu``, ``mem``, ``disk`` and ``net`` measurements.

Every figure except the memory gauges is a rate computed from the difference
between two samples, so the first :meth:`SystemCollector.collect` only primes
the counters and returns the ``mem`` row (with its page-fault rates unset).
Elapsed time comes from ``time.monotonic()`` so that a wall-clock step cannot
produce a negative or huge rate; ``now_ns`` is only the row timestamp. A
counter that went backwards (a reset, or a 32-bit driver counter wrapping)
counts as zero for that interval.

Choices worth knowing when reading the data (docs/architecture.md#metric-path):

* ``cpu.user`` includes nice time, as vmstat's ``us`` does, so the seven
  fields add up to 100. Guest time is already inside user on Linux and is not
  counted twice. Per-CPU rows carry the kernel's CPU number.
* ``mem``: ``used`` is total minus available and ``percent`` is ``used`` over
  total, as psutil and ``free`` compute them; ``available`` is the kernel's
  ``MemAvailable``; ``swap_used`` is ``SwapTotal - SwapFree``.
* ``disk`` covers whole block devices only (the entries of ``/sys/block``,
  listed once at start): partitions would count the same I/O twice. ``loop*``
  and ``ram*`` are skipped; ``zram`` is kept because it shows swapping.
  ``busy_pct`` is the share of the interval the device had I/O in flight.
* ``net`` keeps ``lo``: loopback traffic is what single-node tests generate.
  ``errors`` and ``drops`` are per-second rates, in and out together.

The counters come from ``/proc`` directly (:mod:`agent.collectors.procfs`),
five files kept open; psutil is only the fallback where there is no ``/proc``.
Cost on the 2-vCPU dev VM (8 loop devices filtered out, 4 NICs): 0.1 ms per
sample in a tight loop, from 0.35 ms through psutil; at 1 Hz in the agent,
where every sample starts with cold caches, 0.35-0.55 ms, from 0.7-2 ms.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import psutil

from agent.collectors import procfs
from bus.metrics import Series

log = logging.getLogger(__name__)

CPU_FIELDS = ("user", "system", "iowait", "irq", "softirq", "steal", "idle")
MEM_FIELDS = ("used", "available", "percent", "swap_used", "pgfault_ps", "pgmajfault_ps")
DISK_FIELDS = ("read_bps", "write_bps", "read_iops", "write_iops", "busy_pct")
NET_FIELDS = ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "errors", "drops")

_SKIP_DISK_PREFIXES = ("loop", "ram")
_SYS_BLOCK = "/sys/block"


class _Sample(NamedTuple):
    """What one sample read; the counters are kept until the next to compute rates."""

    mono: float
    cpu: dict[str, Sequence[float]]  # label -> times in CPU_FIELDS order
    vmstat: dict[str, int]
    disk: dict[str, procfs.DiskCounters]
    net: dict[str, procfs.NetCounters]
    mem: procfs.MemFigures | None


def cpu_percentages(prev: Sequence[float], cur: Sequence[float]) -> tuple[float, ...] | None:
    """Percent of time per CPU state (``CPU_FIELDS`` order) between two samples of
    cumulative times in that order.

    Returns ``None`` when no time elapsed (or the counters went backwards, as
    after a CPU hot-unplug), since no meaningful split exists then.
    """
    deltas = [max(b - a, 0) for a, b in zip(prev, cur, strict=True)]
    total = sum(deltas)
    if total <= 0:
        return None
    return tuple(round(100.0 * d / total, 2) for d in deltas)


def _whole_disks() -> frozenset[str] | None:
    try:
        return frozenset(d for d in os.listdir(_SYS_BLOCK)
                         if not d.startswith(_SKIP_DISK_PREFIXES))
    except OSError:
        return None  # no sysfs (container): fall back to the name filter alone


class _ProcSource:
    """Reads the five ``/proc`` files, each kept open; a file that fails gives nothing."""

    def __init__(self, disks: frozenset[str] | None) -> None:
        self._disks = disks
        self._files: dict[str, procfs.ProcFile] = {}
        for path in (procfs.STAT, procfs.MEMINFO, procfs.VMSTAT, procfs.DISKSTATS,
                     procfs.NET_DEV):
            try:
                self._files[path] = procfs.ProcFile(path)
            except OSError as exc:
                log.warning("cannot open %s (%s); its measurements are left out", path, exc)
        self._failed: set[str] = set()

    def sample(self) -> _Sample:
        mono = time.monotonic()
        info = self._parse(procfs.MEMINFO, procfs.parse_meminfo)
        mem = procfs.mem_figures(info) if info else None
        if info and mem is None:  # no MemAvailable: psutil estimates it from zoneinfo
            mem = _psutil_mem()
        return _Sample(
            mono=mono,
            cpu=self._parse(procfs.STAT, procfs.parse_stat),
            vmstat=self._parse(procfs.VMSTAT, procfs.parse_vmstat),
            disk=self._parse(procfs.DISKSTATS, self._parse_disks),
            net=self._parse(procfs.NET_DEV, procfs.parse_net_dev),
            mem=mem,
        )

    def _parse_disks(self, data: bytes) -> dict[str, procfs.DiskCounters]:
        return procfs.parse_diskstats(data, self._disks, _SKIP_DISK_PREFIXES)

    def _parse(self, path: str, parse: Callable[[bytes], Any]) -> Any:
        """``parse`` of the file's content; ``{}`` if the file is missing or unreadable."""
        f = self._files.get(path)
        if f is None:
            return {}
        try:
            return parse(f.read())
        except (OSError, ValueError, IndexError) as exc:
            if path not in self._failed:  # once: it would fail the same way every second
                self._failed.add(path)
                log.warning("cannot read %s (%s); its measurements are left out", path, exc)
            return {}

    def close(self) -> None:
        for f in self._files.values():
            f.close()


class _PsutilSource:
    """The same sample through psutil, for systems without ``/proc`` (psutil knows how
    to read their counters; ``pgfault`` rates stay unset there)."""

    def __init__(self, disks: frozenset[str] | None) -> None:
        self._disks = disks

    def sample(self) -> _Sample:
        disks = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
        nics = psutil.net_io_counters(pernic=True, nowrap=True) or {}
        cpus = {"total": psutil.cpu_times()}
        cpus.update((str(i), t) for i, t in enumerate(psutil.cpu_times(percpu=True)))
        return _Sample(
            mono=time.monotonic(),
            cpu={k: _psutil_cpu(t) for k, t in cpus.items()},
            vmstat={},
            disk={d: (c.read_bytes, c.write_bytes, c.read_count, c.write_count,
                      getattr(c, "busy_time", 0))
                  for d, c in disks.items() if self._is_whole_disk(d)},
            net={n: (c.bytes_recv, c.bytes_sent, c.packets_recv, c.packets_sent,
                     c.errin + c.errout, c.dropin + c.dropout) for n, c in nics.items()},
            mem=_psutil_mem(),
        )

    def _is_whole_disk(self, dev: str) -> bool:
        if self._disks is not None:
            return dev in self._disks
        return not dev.startswith(_SKIP_DISK_PREFIXES)

    def close(self) -> None:
        pass


def _psutil_cpu(t: Any) -> tuple[float, ...]:
    return (t.user + t.nice, t.system, getattr(t, "iowait", 0.0), getattr(t, "irq", 0.0),
            getattr(t, "softirq", 0.0), getattr(t, "steal", 0.0), t.idle)


def _psutil_mem() -> procfs.MemFigures:
    vm = psutil.virtual_memory()
    return vm.used, vm.available, vm.percent, psutil.swap_memory().used


class SystemCollector:
    """Collect cpu, mem, disk and net series for one node, all tagged ``node``.

    Synchronous: the reads take CPU only, never wait on I/O (see
    :mod:`agent.sampling` for where they run).
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._prev: _Sample | None = None
        self._tag_sets: dict[tuple[str, str], dict[str, str]] = {}
        disks = _whole_disks()
        self._source: _ProcSource | _PsutilSource = (
            _ProcSource(disks) if os.path.exists(procfs.STAT) else _PsutilSource(disks))

    def collect(self, now_ns: int) -> list[Series]:
        """Sample now; return the series (rates need a previous sample)."""
        cur = self._source.sample()
        prev, self._prev = self._prev, cur
        out = [self._mem(now_ns, prev, cur)]
        if prev is not None:
            dt = cur.mono - prev.mono
            if dt > 0:
                out += self._cpu(now_ns, prev, cur)
                out += self._disk(now_ns, prev, cur, dt)
                out += self._net(now_ns, prev, cur, dt)
        return [s for s in out if s.rows]

    def close(self) -> None:
        """Close the ``/proc`` files kept open."""
        self._source.close()

    def _mem(self, now_ns: int, prev: _Sample | None, cur: _Sample) -> Series:
        s = Series("mem", self._tags("node", self.node), MEM_FIELDS)
        if cur.mem is None:
            return s  # /proc/meminfo unreadable: no row rather than zeros
        faults: list[float | None] = [None, None]
        if prev is not None and cur.mono > prev.mono:
            dt = cur.mono - prev.mono
            for i, key in enumerate(("pgfault", "pgmajfault")):
                if key in cur.vmstat and key in prev.vmstat:
                    faults[i] = _rate(cur.vmstat[key], prev.vmstat[key], dt)
        s.rows.append([now_ns, *cur.mem, *faults])
        return s

    def _cpu(self, now_ns: int, prev: _Sample, cur: _Sample) -> list[Series]:
        out = []
        for label, b in cur.cpu.items():
            a = prev.cpu.get(label)
            pct = None if a is None else cpu_percentages(a, b)
            if pct is not None:
                out.append(Series("cpu", self._tags("cpu", label), CPU_FIELDS,
                                  [[now_ns, *pct]]))
        return out

    def _disk(self, now_ns: int, prev: _Sample, cur: _Sample, dt: float) -> list[Series]:
        out = []
        for dev, c in cur.disk.items():
            p = prev.disk.get(dev)
            if p is None:
                continue  # new device: primed now, reported next time
            busy_pct = round(min(100.0, max(c[4] - p[4], 0) / (dt * 10.0)), 2)  # ms per s → %
            out.append(Series("disk", self._tags("dev", dev), DISK_FIELDS, [[
                now_ns, _rate(c[0], p[0], dt), _rate(c[1], p[1], dt), _rate(c[2], p[2], dt),
                _rate(c[3], p[3], dt), busy_pct]]))
        return out

    def _net(self, now_ns: int, prev: _Sample, cur: _Sample, dt: float) -> list[Series]:
        out = []
        for nic, c in cur.net.items():
            p = prev.net.get(nic)
            if p is not None:
                out.append(Series("net", self._tags("nic", nic), NET_FIELDS,
                                  [[now_ns, *[_rate(x, y, dt) for x, y in zip(c, p, strict=True)]]]))
        return out

    def _tags(self, key: str, value: str) -> dict[str, str]:
        """The tag set of one series, built once: the same few are sent every second."""
        tags = self._tag_sets.get((key, value))
        if tags is None:
            tags = {"node": self.node} if key == "node" else {"node": self.node, key: value}
            self._tag_sets[key, value] = tags
        return tags


def _rate(cur: float, prev: float, dt: float) -> float:
    """Per-second rate; a counter that went backwards (reset) counts as zero."""
    return round(max(cur - prev, 0) / dt, 2)
