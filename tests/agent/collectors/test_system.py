"""SystemCollector on the real machine."""

from __future__ import annotations

import os
import socket
import time

from agent.collectors.system import (
    CPU_FIELDS,
    MEM_FIELDS,
    SystemCollector,
    _ProcSource,
    _PsutilSource,
    _whole_disks,
    cpu_percentages,
)


def _loopback_traffic() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        for _ in range(20):
            tx.sendto(b"x" * 1000, rx.getsockname())


def _by(series, measurement):
    return {tuple(sorted(s.tags.items())): s for s in series if s.measurement == measurement}


def test_first_call_primes_and_emits_only_mem() -> None:
    c = SystemCollector("n1")
    out = c.collect(time.time_ns())
    assert [s.measurement for s in out] == ["mem"]
    (mem,) = out
    assert mem.tags == {"node": "n1"}
    assert mem.fields == MEM_FIELDS
    row = dict(zip(("ts",) + MEM_FIELDS, mem.rows[0], strict=True))
    assert row["used"] > 0 and row["available"] > 0 and 0 < row["percent"] < 100
    assert row["pgfault_ps"] is None and row["pgmajfault_ps"] is None


def test_second_call_gives_rates_for_cpu_total_and_lo() -> None:
    c = SystemCollector("n1")
    c.collect(time.time_ns())
    deadline = time.monotonic() + 10
    series: list = []
    # cpu_times tick at 10 ms, so poll until a second sample has moved them.
    while time.monotonic() < deadline:
        _loopback_traffic()
        series = c.collect(time.time_ns())
        if any(s.measurement == "cpu" and s.tags["cpu"] == "total" for s in series):
            break
        time.sleep(0.02)  # wait-ok: poll step under a deadline
    cpu = _by(series, "cpu")
    total = cpu[(("cpu", "total"), ("node", "n1"))]
    assert total.fields == CPU_FIELDS
    assert abs(sum(total.rows[0][1:]) - 100.0) < 0.5
    assert all(v >= 0 for v in total.rows[0][1:])
    net = {s.tags["nic"]: s for s in series if s.measurement == "net"}
    assert "lo" in net
    lo = dict(zip(("ts",) + net["lo"].fields, net["lo"].rows[0], strict=True))
    assert lo["rx_bps"] > 0 and lo["tx_pps"] > 0
    mem = _by(series, "mem")[(("node", "n1"),)]
    assert mem.rows[0][5] is not None  # pgfault_ps now a rate
    for s in series:
        if s.measurement == "disk":
            assert not s.tags["dev"].startswith(("loop", "ram"))
            assert 0 <= s.rows[0][5] <= 100


def test_cpu_percentages() -> None:
    prev = (100, 50, 0, 0, 0, 0, 850)
    assert cpu_percentages(prev, (130, 60, 0, 0, 0, 0, 910)) == (30.0, 10.0, 0, 0, 0, 0, 60.0)
    assert cpu_percentages(prev, prev) is None  # no time passed
    assert cpu_percentages(prev, (90, 40, 0, 0, 0, 0, 800)) is None  # went backwards


def _online_cpus() -> set[str]:
    """``/sys/devices/system/cpu/online`` ("0-3,6") as a set of CPU numbers."""
    with open("/sys/devices/system/cpu/online") as f:
        spans = [part.split("-") for part in f.read().strip().split(",")]
    return {str(n) for span in spans for n in range(int(span[0]), int(span[-1]) + 1)}


def test_per_cpu_rows_carry_the_kernel_cpu_numbers() -> None:
    expected = {"total"} | _online_cpus()
    c = SystemCollector("n1")
    c.collect(time.time_ns())
    labels: set[str] = set()
    deadline = time.monotonic() + 10
    while labels != expected and time.monotonic() < deadline:
        time.sleep(0.02)  # wait-ok: poll step under a deadline (cpu times tick at 10 ms)
        labels = {s.tags["cpu"] for s in c.collect(time.time_ns()) if s.measurement == "cpu"}
    c.close()
    assert labels == expected


def test_psutil_fallback_gives_the_same_sample() -> None:
    """Without /proc the collector reads through psutil: the same counters, in the same order."""
    disks = _whole_disks()
    proc, fallback = _ProcSource(disks), _PsutilSource(disks)
    try:
        a, b = proc.sample(), fallback.sample()
    finally:
        proc.close()
    assert set(a.cpu) == set(b.cpu) and set(a.disk) == set(b.disk) and set(a.net) == set(b.net)
    tick = os.sysconf("SC_CLK_TCK")
    for label, times in a.cpu.items():
        assert all(abs(x / tick - y) < 0.5 for x, y in zip(times, b.cpu[label], strict=True))
    for dev, counters in a.disk.items():
        assert all(x <= y for x, y in zip(counters, b.disk[dev], strict=True))  # read first
    for nic, counters in a.net.items():
        assert all(x <= y for x, y in zip(counters, b.net[nic], strict=True))
    assert a.mem is not None and b.mem is not None
    assert abs(a.mem[0] - b.mem[0]) < 64 * 2**20 and abs(a.mem[2] - b.mem[2]) <= 0.5
