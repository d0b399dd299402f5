"""The overview's rows and summary as plain function calls (dashboard/pages/overview_rows.py)."""

from __future__ import annotations

import math
import time
from typing import Any

from dashboard.pages.overview_rows import (
    ANY_LABEL,
    PAGE_SIZE,
    SPARK_H,
    SPARK_W,
    display_order,
    node_columns,
    polyline,
    select_nodes,
    summarise,
    summary_html,
)


def node(name: str, state: str, labels: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "state": state, "silent_for": 1.0, "running": [],
            "facts": {"cpus": 4, "memory_bytes": 2**31, "labels": labels or []}}


FLEET = [node(f"n{i:04d}", ("ready", "busy", "lost", "lost")[i % 4],
              [f"rack=r{i % 3}", *(["gpu"] if i % 5 == 0 else [])]) for i in range(2000)]


def test_summary_counts_every_node_by_state_and_label() -> None:
    s = summarise(FLEET)
    assert s.total == 2000 and s.states == {"ready": 500, "busy": 500, "lost": 1000}
    labels = dict(s.labels)
    assert [name for name, _ in s.labels][:3] == ["rack=r0", "rack=r1", "rack=r2"]
    assert sum(labels["gpu"].values()) == 400 and labels["gpu"]["ready"] == 100
    text = summary_html(s)
    assert "<b>2,000 nodes</b>" in text and "1,000 lost" in text and "<td>gpu</td>" in text


def test_summary_escapes_labels() -> None:
    text = summary_html(summarise([node("a", "ready", ["<script>x</script>"])]))
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_live_nodes_first_then_lost_by_name() -> None:
    ordered = display_order([node("b", "lost"), node("c", "ready"), node("a", "busy")])
    assert [n["name"] for n in ordered] == ["a", "c", "b"]


def test_filters_by_state_label_and_name() -> None:
    assert len(select_nodes(FLEET, "all", ANY_LABEL, "")) == 2000
    assert len(select_nodes(FLEET, "up", ANY_LABEL, "")) == 1000
    assert len(select_nodes(FLEET, "lost", "gpu", "")) == 200
    assert [n["name"] for n in select_nodes(FLEET, "all", ANY_LABEL, " N012 ")] == \
        [f"n{i:04d}" for i in range(120, 130)]


def test_page_rows_carry_their_sparkline_points() -> None:
    now_ms = time.time() * 1000
    sparks = {"n0000": {"t": [now_ms - 60_000, now_ms], "cpu": [50.0, math.nan],
                        "mem": [25.0, 100.0]}}
    rows = node_columns(FLEET[:PAGE_SIZE], sparks)
    assert len(rows["name"]) == PAGE_SIZE and rows["cpu_now"][0] == "50 %"
    assert rows["cpu_line"][1] == "" and rows["cpu_now"][1] == "—", "no data, no line"
    # A lone CPU point (the other is NaN) is drawn as a short dash, not lost.
    assert len(rows["cpu_line"][0].split()) == 2
    xs = [float(p.split(",")[0]) for p in rows["mem_line"][0].split()]
    ys = [float(p.split(",")[1]) for p in rows["mem_line"][0].split()]
    assert xs[0] < xs[1] <= SPARK_W and ys == [SPARK_H * 0.75, 0.0]


def test_polyline_clips_to_the_box() -> None:
    start = 1_000_000.0
    line = polyline([start - 5_000, start + 10**9], [150.0, -3.0], start)
    assert line == f"0.0,0.0 {SPARK_W:.1f},{SPARK_H:.1f}"
