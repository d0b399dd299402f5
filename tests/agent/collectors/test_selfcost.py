"""SelfCostCollector: the agent's own cost."""

from __future__ import annotations

import time

from agent.collectors.selfcost import AGENT_FIELDS, SelfCostCollector


def test_rows_and_provider_values() -> None:
    c = SelfCostCollector("n1", lambda: {"samples_dropped": 3, "spool_depth": 7,
                                         "app_dropped": 5})
    (first,) = c.collect(time.time_ns())
    assert first.measurement == "agent" and first.tags == {"node": "n1"}
    assert first.fields == AGENT_FIELDS
    _, cpu, rss, dropped, depth, app_dropped = first.rows[0]
    assert cpu is None and rss > 0 and (dropped, depth, app_dropped) == (3, 7, 5)
    sum(range(200_000))  # some CPU so the second sample has something to measure
    (second,) = c.collect(time.time_ns())
    assert second.rows[0][1] is not None and second.rows[0][1] >= 0


def test_failing_provider_leaves_fields_unset() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("spool gone")

    (s,) = SelfCostCollector("n1", broken).collect(time.time_ns())
    assert s.rows[0][3:] == [None, None, None]


def test_rss_and_cpu_match_psutil() -> None:
    import psutil

    c = SelfCostCollector("n1", dict)
    me = psutil.Process()
    t0, cpu0 = time.monotonic(), me.cpu_times()
    c.collect(time.time_ns())
    busy_until = time.monotonic() + 0.3
    while time.monotonic() < busy_until:  # a known load: one busy thread for 0.3 s
        pass
    (s,) = c.collect(time.time_ns())
    t1, cpu1 = time.monotonic(), me.cpu_times()
    rss = me.memory_info().rss
    _, cpu_pct, ours, *_ = s.rows[0]
    assert abs(ours - rss) < 4 * 2**20  # both from /proc/self/statm, moments apart
    expected = 100 * (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0)
    assert cpu_pct is not None and abs(cpu_pct - expected) < 15  # psutil counts 10 ms ticks
    c.close()
