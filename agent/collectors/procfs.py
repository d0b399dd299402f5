"""Plain readers of the node-wide ``/proc`` files behind the ``cpu``, ``mem``, ``disk`` and
``net`` measurements.

They replace psutil's ``cpu_times``, ``virtual_memory``, ``swap_memory``,
``disk_io_counters`` and ``net_io_counters`` on the agent's hot path: those
re-open each file, build named tuples for every CPU, disk and NIC, open
``/sys/block/<dev>/queue/hw_sector_size`` for every line of
``/proc/diskstats`` and keep wrap-around state: at 1 Hz the largest part of the
agent's CPU before this module. Here each file stays open and is read again
with one ``pread`` at offset 0 (the kernel regenerates a ``/proc`` file on every
read from the start), and only the columns the measurements use are parsed.

The parsers take the file's bytes and return plain tuples, so they are tested
on fixed sample text as well as against psutil on the machine that runs them.
The numbers match psutil's (same formulas); the one difference is that
counters are raw, without psutil's wrap-around correction: the collector
counts a counter that went backwards as zero for that interval.
"""

from __future__ import annotations

import os

STAT = "/proc/stat"
MEMINFO = "/proc/meminfo"
VMSTAT = "/proc/vmstat"
DISKSTATS = "/proc/diskstats"
NET_DEV = "/proc/net/dev"

#: The kernel counts diskstats sectors in 512-byte units whatever the device's
#: real sector size (include/linux/blk_types.h, SECTOR_SHIFT).
SECTOR = 512

_READ_SIZE = 65536
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Files of many records (diskstats, net/dev, vmstat) come about a page per read; a
# read well short of a page was the end, which saves the read that returns b"".
_READ_SLACK = 256

#: One CPU's times in the order of ``system.CPU_FIELDS``: user (with nice), system,
#: iowait, irq, softirq, steal, idle; clock ticks.
CpuTimes = tuple[int, int, int, int, int, int, int]
#: ``(read_bytes, write_bytes, reads, writes, busy_ms)``, cumulative.
DiskCounters = tuple[int, int, int, int, int]
#: ``(rx_bytes, tx_bytes, rx_packets, tx_packets, errors in+out, drops in+out)``, cumulative.
NetCounters = tuple[int, int, int, int, int, int]
#: ``(used, available, percent, swap_used)``: bytes, bytes, percent of total, bytes.
MemFigures = tuple[int, int, float, int]


class ProcFile:
    """One ``/proc`` file, opened once and read again from the start on every :meth:`read`.

    Raises ``OSError`` from the constructor if the file does not exist here.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDONLY)

    def read(self) -> bytes:
        """The file's current content (``OSError`` if it can no longer be read)."""
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        chunk = data = os.pread(self._fd, _READ_SIZE, 0)
        while len(chunk) >= _PAGE - _READ_SLACK:
            chunk = os.pread(self._fd, _READ_SIZE, len(data))
            data += chunk
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def parse_stat(data: bytes) -> dict[str, CpuTimes]:
    """CPU times from ``/proc/stat``: ``"total"`` for the ``cpu`` line, ``"0"``, ``"1"``…
    for the ``cpuN`` lines (offline CPUs have none).

    ``user`` includes ``nice``; guest time is already inside user. Columns an old
    kernel does not print count as 0.
    """
    out: dict[str, CpuTimes] = {}
    pos = 0
    # The cpu lines come first; the (long) intr line after them is never split.
    while data.startswith(b"cpu", pos):
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data)
        name, *cols = data[pos:end].split()
        v = [int(c) for c in cols[:8]] + [0] * (8 - len(cols[:8]))
        user, nice, system, idle, iowait, irq, softirq, steal = v
        out[name[3:].decode() or "total"] = (user + nice, system, iowait, irq, softirq, steal,
                                             idle)
        pos = end + 1
    return out


def _number(data: bytes, key: bytes) -> int | None:
    """The first number after ``key`` (which starts with a newline) in ``data``."""
    i = data.find(key)
    if i < 0:
        return None
    i += len(key)
    end = data.find(b"\n", i)
    return int(data[i:end if end >= 0 else len(data)].split()[0])


def parse_meminfo(data: bytes) -> dict[str, int]:
    """``MemTotal``, ``MemFree``, ``MemAvailable``, ``SwapTotal``, ``SwapFree`` in bytes
    (the ones present) from ``/proc/meminfo``."""
    data = b"\n" + data  # every key is then matched at the start of a line
    out = {}
    for key in ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree"):
        kib = _number(data, b"\n" + key.encode() + b":")
        if kib is not None:
            out[key] = kib * 1024
    return out


def mem_figures(info: dict[str, int]) -> MemFigures | None:
    """``(used, available, percent, swap_used)`` as psutil computes them (psutil 7:
    used = total - available, percent of total rounded to 0.1; swap used = total -
    free); ``None`` without a usable ``MemAvailable`` (kernels before 3.14, or the
    0 it sometimes shows), where psutil's estimate is needed instead."""
    total, avail = info.get("MemTotal", 0), info.get("MemAvailable", 0)
    if not total or not avail:
        return None
    if avail > total:  # inside some containers (psutil and procps do the same)
        avail = info.get("MemFree", avail)
    used = total - avail
    swap_used = info.get("SwapTotal", 0) - info.get("SwapFree", 0)
    return used, avail, round(used / total * 100, 1), swap_used  # psutil's float order


def parse_vmstat(data: bytes) -> dict[str, int]:
    """The page-fault counters ``pgfault`` and ``pgmajfault`` (those present) from
    ``/proc/vmstat``."""
    data = b"\n" + data
    out = {}
    for key in ("pgfault", "pgmajfault"):
        n = _number(data, b"\n" + key.encode() + b" ")
        if n is not None:
            out[key] = n
    return out


def parse_diskstats(data: bytes, wanted: frozenset[str] | None,
                    skip_prefixes: tuple[str, ...] = ()) -> dict[str, DiskCounters]:
    """Counters of the devices in ``wanted`` (all but ``skip_prefixes`` when ``None``)
    from ``/proc/diskstats``.

    Bytes are sectors × 512; ``busy_ms`` is ``io_ticks``, the time the device
    had I/O in flight. Lines of fewer than 14 columns (partitions on kernels
    before 2.6.25) are left out.
    """
    out: dict[str, DiskCounters] = {}
    for line in data.splitlines():
        head = line.split(None, 3)  # major, minor, name, the counters
        if len(head) < 4:
            continue
        name = head[2].decode("utf-8", "surrogateescape")  # os.fsdecode, without its wrapper
        if wanted is not None and name not in wanted:
            continue
        if wanted is None and name.startswith(skip_prefixes):
            continue
        c = head[3].split()
        if len(c) < 11:
            continue
        # reads, reads merged, sectors read, ms reading, writes, merged, sectors
        # written, ms writing, in flight, io_ticks, weighted ms (Documentation/iostats)
        out[name] = (int(c[2]) * SECTOR, int(c[6]) * SECTOR, int(c[0]), int(c[4]), int(c[9]))
    return out


def parse_net_dev(data: bytes) -> dict[str, NetCounters]:
    """Counters of every interface in ``/proc/net/dev`` (two header lines, then
    ``name: 8 receive columns, 8 transmit columns``)."""
    out: dict[str, NetCounters] = {}
    for line in data.splitlines()[2:]:
        name, sep, rest = line.rpartition(b":")
        c = rest.split()
        if not sep or len(c) < 12:
            continue
        # rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop …
        out[name.strip().decode("utf-8", "surrogateescape")] = (
            int(c[0]), int(c[8]), int(c[1]), int(c[9]),
            int(c[2]) + int(c[10]), int(c[3]) + int(c[11]))
    return out
