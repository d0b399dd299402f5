"""The /proc parsers: fixed sample text, and the same numbers psutil reads on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from agent.collectors import procfs
from agent.collectors.procfs import (
    ProcFile,
    mem_figures,
    parse_diskstats,
    parse_meminfo,
    parse_net_dev,
    parse_stat,
    parse_vmstat,
)

# Trimmed from a 2-vCPU KVM guest (kernel 6.1); the intr line is shortened.
STAT = b"""\
cpu  1252043 175914 3494 1177509 3588 10 325 33 0 0
cpu0 603652 85530 1155 614074 1422 5 158 17 0 0
cpu1 648390 90384 2338 563435 2165 5 166 16 0 0
intr 45623 9 0 0 0 0 0 0 0 0 0 0 0 144 0 0 0
ctxt 98765432
btime 1780000000
processes 123456
procs_running 2
procs_blocked 0
softirq 1234 5 6 7 8 9 10 11 12 13 14
"""

MEMINFO = b"""\
MemTotal:       25276416 kB
MemFree:        23000000 kB
MemAvailable:   24170312 kB
Buffers:          120000 kB
Cached:           900000 kB
SwapCached:            0 kB
SwapTotal:       4194300 kB
SwapFree:        4000000 kB
HugePages_Free:        0
"""

VMSTAT = b"""\
nr_free_pages 5750000
pgfault_fake 99
pgpgin 3647984
pgfault 211323390
pgmajfault 5804
pgrefill 0
"""

# Whole disks (vda, zram0), a partition, a loop device, and a pre-2.6.25 partition line.
DISKSTATS = b"""\
   7       0 loop0 52 0 2176 12 0 0 0 0 0 20 12 0 0 0 0 0 0
 254       0 vda 166891 19614 7267242 89943 370755 271271 34753648 190844 0 79448 315161 147029 63 22085504 19136 90511 15236
 254       1 vda1 166000 19000 7200000 89000 370000 271000 34700000 190000 0 79000 315000 0 0 0 0 0 0
 253       0 zram0 10 0 80 0 20 0 160 0 0 4 0 0 0 0 0 0 0
   3       1 hda1 8 16 24 32
"""

NET_DEV = b"""\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 27068168910 5492110    0    0    0     0          0         0 27068168910 5492110    0    0    0     0       0          0
  eth0: 974727418   36599    3    4    0     0          0         0  2737912   26230    5    6    0     0       0          0
"""


def _file(tmp_path: Path, name: str, content: bytes) -> ProcFile:
    path = tmp_path / name
    path.write_bytes(content)
    return ProcFile(str(path))


# --- fixed samples ------------------------------------------------------------------


def test_stat_total_and_per_cpu_in_field_order(tmp_path: Path) -> None:
    cpu = parse_stat(_file(tmp_path, "stat", STAT).read())
    assert list(cpu) == ["total", "0", "1"]
    # user+nice, system, iowait, irq, softirq, steal, idle
    assert cpu["total"] == (1252043 + 175914, 3494, 3588, 10, 325, 33, 1177509)
    assert cpu["1"] == (648390 + 90384, 2338, 2165, 5, 166, 16, 563435)


def test_stat_old_kernel_without_steal_columns() -> None:
    cpu = parse_stat(b"cpu  10 2 3 40 5\ncpu0 10 2 3 40 5\nintr 1\n")
    assert cpu["total"] == (12, 3, 5, 0, 0, 0, 40)


def test_meminfo_and_figures(tmp_path: Path) -> None:
    info = parse_meminfo(_file(tmp_path, "meminfo", MEMINFO).read())
    assert info == {"MemTotal": 25276416 * 1024, "MemFree": 23000000 * 1024,
                    "MemAvailable": 24170312 * 1024, "SwapTotal": 4194300 * 1024,
                    "SwapFree": 4000000 * 1024}
    used, avail, percent, swap_used = mem_figures(info) or (0, 0, 0.0, 0)
    assert (used, avail) == ((25276416 - 24170312) * 1024, 24170312 * 1024)
    assert percent == 4.4  # 1106104 / 25276416 = 4.376 %
    assert swap_used == (4194300 - 4000000) * 1024


def test_mem_figures_edge_cases() -> None:
    assert mem_figures({"MemTotal": 100, "MemFree": 50}) is None  # no MemAvailable
    assert mem_figures({"MemTotal": 100, "MemFree": 50, "MemAvailable": 0}) is None
    # MemAvailable above MemTotal (some containers): free is used instead, as psutil does.
    assert mem_figures({"MemTotal": 100, "MemFree": 40, "MemAvailable": 150}) == (
        60, 40, 60.0, 0)


def test_vmstat_matches_whole_keys_only(tmp_path: Path) -> None:
    assert parse_vmstat(_file(tmp_path, "vmstat", VMSTAT).read()) == {
        "pgfault": 211323390, "pgmajfault": 5804}
    assert parse_vmstat(b"nr_free_pages 1\n") == {}


def test_diskstats_wanted_devices_in_bytes(tmp_path: Path) -> None:
    data = _file(tmp_path, "diskstats", DISKSTATS).read()
    disks = parse_diskstats(data, frozenset({"vda", "zram0"}))
    # read_bytes, write_bytes (sectors of 512), reads, writes, io_ticks (ms busy)
    assert disks == {"vda": (7267242 * 512, 34753648 * 512, 166891, 370755, 79448),
                     "zram0": (80 * 512, 160 * 512, 10, 20, 4)}


def test_diskstats_without_sysfs_filters_by_name() -> None:
    disks = parse_diskstats(DISKSTATS, None, ("loop", "ram"))
    assert set(disks) == {"vda", "vda1", "zram0"}  # hda1's 4-counter line is left out


def test_net_dev(tmp_path: Path) -> None:
    nics = parse_net_dev(_file(tmp_path, "dev", NET_DEV).read())
    # rx_bytes, tx_bytes, rx_packets, tx_packets, errors in+out, drops in+out
    assert nics == {"lo": (27068168910, 27068168910, 5492110, 5492110, 0, 0),
                    "eth0": (974727418, 2737912, 36599, 26230, 3 + 5, 4 + 6)}


def test_procfile_reads_past_a_page_and_again_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 100_000)
    f = ProcFile(str(path))
    try:
        assert f.read() == b"x" * 100_000
        with open(path, "r+b") as w:  # same inode, as /proc content changes under an open fd
            w.write(b"new")
        assert f.read()[:4] == b"newx"
    finally:
        f.close()
    with pytest.raises(OSError):
        f.read()


# --- against psutil on this machine -----------------------------------------------------
# Counters move between two reads, so each of ours must lie between psutil's before and
# after; gauges may move a little either way.

pytestmark_linux = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc")


def _read(path: str) -> bytes:
    f = ProcFile(path)
    try:
        return f.read()
    finally:
        f.close()


@pytestmark_linux
def test_stat_matches_psutil_cpu_times() -> None:
    tick = os.sysconf("SC_CLK_TCK")
    before = [psutil.cpu_times(), *psutil.cpu_times(percpu=True)]
    ours = parse_stat(_read(procfs.STAT))
    after = [psutil.cpu_times(), *psutil.cpu_times(percpu=True)]
    assert list(ours)[0] == "total" and len(ours) == len(before)  # cpuN lines in psutil's order
    for (label, times), b, a in zip(ours.items(), before, after, strict=True):
        lo = (b.user + b.nice, b.system, b.iowait, b.irq, b.softirq, b.steal, b.idle)
        hi = (a.user + a.nice, a.system, a.iowait, a.irq, a.softirq, a.steal, a.idle)
        for ours_t, low, high in zip(times, lo, hi, strict=True):
            assert low - 0.011 <= ours_t / tick <= high + 0.011, label


@pytestmark_linux
def test_meminfo_matches_psutil_memory() -> None:
    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    figures = mem_figures(parse_meminfo(_read(procfs.MEMINFO)))
    assert figures is not None
    used, avail, percent, swap_used = figures
    slack = 64 * 2**20  # other processes allocate meanwhile
    assert abs(used - vm.used) < slack and abs(avail - vm.available) < slack
    assert abs(percent - vm.percent) <= 0.5
    assert abs(swap_used - swap.used) < slack


@pytestmark_linux
def test_diskstats_and_net_dev_match_psutil() -> None:
    wanted = frozenset(d for d in os.listdir("/sys/block") if not d.startswith(("loop", "ram")))
    disks_before = psutil.disk_io_counters(perdisk=True)
    nics_before = psutil.net_io_counters(pernic=True)
    disks = parse_diskstats(_read(procfs.DISKSTATS), wanted)
    nics = parse_net_dev(_read(procfs.NET_DEV))
    disks_after = psutil.disk_io_counters(perdisk=True)
    nics_after = psutil.net_io_counters(pernic=True)
    assert set(disks) == wanted & set(disks_before)
    for dev, ours in disks.items():
        b, a = disks_before[dev], disks_after[dev]
        for i, field in enumerate(("read_bytes", "write_bytes", "read_count", "write_count",
                                   "busy_time")):
            assert getattr(b, field) <= ours[i] <= getattr(a, field), (dev, field)
    assert set(nics) == set(nics_before)
    for nic, ours in nics.items():
        b, a = nics_before[nic], nics_after[nic]
        for i, field in enumerate(("bytes_recv", "bytes_sent", "packets_recv",
                                   "packets_sent")):
            assert getattr(b, field) <= ours[i] <= getattr(a, field), (nic, field)
        assert b.errin + b.errout <= ours[4] <= a.errin + a.errout
        assert b.dropin + b.dropout <= ours[5] <= a.dropin + a.dropout


@pytestmark_linux
def test_vmstat_page_faults_count_up() -> None:
    first = parse_vmstat(_read(procfs.VMSTAT))
    bytearray(8 * 2**20)  # fresh pages: page faults
    second = parse_vmstat(_read(procfs.VMSTAT))
    assert set(first) == {"pgfault", "pgmajfault"}
    assert second["pgfault"] > first["pgfault"] and second["pgmajfault"] >= first["pgmajfault"]
