"""SystemCollector on the real machine."""

from __future__ import annotations

import socket
import time

from agent.collectors.system import CPU_FIELDS, MEM_FIELDS, SystemCollector, cpu_percentages


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


def test_cpu_percentages_counter_going_backwards_is_none() -> None:
    import psutil

    t = psutil.cpu_times()
    assert cpu_percentages(t, t) is None
