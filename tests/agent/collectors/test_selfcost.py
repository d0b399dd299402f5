"""SelfCostCollector: the agent's own cost."""

from __future__ import annotations

import time

from agent.collectors.selfcost import AGENT_FIELDS, SelfCostCollector


def test_rows_and_provider_values() -> None:
    c = SelfCostCollector("n1", lambda: {"samples_dropped": 3, "spool_depth": 7})
    (first,) = c.collect(time.time_ns())
    assert first.measurement == "agent" and first.tags == {"node": "n1"}
    assert first.fields == AGENT_FIELDS
    _, cpu, rss, dropped, depth = first.rows[0]
    assert cpu is None and rss > 0 and (dropped, depth) == (3, 7)
    sum(range(200_000))  # some CPU so the second sample has something to measure
    (second,) = c.collect(time.time_ns())
    assert second.rows[0][1] is not None and second.rows[0][1] >= 0


def test_failing_provider_leaves_fields_unset() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("spool gone")

    (s,) = SelfCostCollector("n1", broken).collect(time.time_ns())
    assert s.rows[0][3:] == [None, None]
