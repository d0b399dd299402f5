"""The overview's rows and summary, made from ``nodes.list`` dicts: no Bokeh, no I/O.

:mod:`dashboard.pages.overview` puts these into its document. Kept apart so the
page's shape at 2,000 nodes (what is counted, which nodes a filter keeps, the
SVG points of a sparkline) is tested as plain function calls.
"""

from __future__ import annotations

import html
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dashboard.pages.base import fmt_age, fmt_time

#: Nodes per page of the table (its rows are virtualised; the page bounds what the
#: document carries and what one sparkline query asks for).
PAGE_SIZE = 50
MAX_LABELS, SUMMARY_LABELS = 200, 12  # labels in the filter, in the summary (most common first)
SPARK_CACHE = 64  # pages whose sparklines are kept (for every tab), oldest dropped first
ROW_HEIGHT = 26
SPARK_W, SPARK_H, SPARK_MINUTES = 120.0, 20.0, 10
STATES = ("ready", "busy", "lost")
STATE_FILTERS = ("all", "up", *STATES)
ANY_LABEL = "(any label)"
NODE_COLUMNS = ("name", "state", "heartbeat", "cpu_now", "spark", "cpus", "memory", "perf",
                "pmu", "labels", "running", "cpu_line", "mem_line")
COLUMN_WIDTHS = {"name": 120, "state": 60, "heartbeat": 100, "cpu_now": 50,
                 "spark": int(SPARK_W) + 12, "cpus": 45, "pmu": 45, "perf": 110, "labels": 160,
                 "running": 140}
JOB_COLUMNS = ("id", "name", "state", "nodes", "created", "command")
#: One row's sparkline: CPU busy (blue) and memory used (orange) over 10 min. Its
#: points are numbers made here, and still escaped (``<%- %>``).
SPARK_TEMPLATE = (
    f'<svg width="{SPARK_W:g}" height="{SPARK_H:g}" viewBox="0 0 {SPARK_W:g} {SPARK_H:g}">'
    '<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="<%- cpu_line %>"/>'
    '<polyline fill="none" stroke="#ff7f0e" stroke-width="1.5" points="<%- mem_line %>"/>'
    '</svg>')


@dataclass(frozen=True)
class FleetSummary:
    """Every node counted: by state, and per label by state (most common first)."""

    total: int = 0
    states: dict[str, int] = field(default_factory=dict)
    labels: list[tuple[str, dict[str, int]]] = field(default_factory=list)


def summarise(nodes: list[dict[str, Any]]) -> FleetSummary:
    states: Counter[str] = Counter()
    by_label: dict[str, Counter[str]] = {}
    for n in nodes:
        state = str(n.get("state", ""))
        states[state] += 1
        for label in (n.get("facts") or {}).get("labels") or []:
            by_label.setdefault(str(label), Counter())[state] += 1
    labels = sorted(by_label.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    return FleetSummary(len(nodes), dict(states),
                        [(name, dict(counts)) for name, counts in labels[:MAX_LABELS]])


def display_order(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(nodes, key=lambda n: (n.get("state") == "lost", str(n.get("name", ""))))


def select_nodes(nodes: list[dict[str, Any]], state: str, label: str,
                 text: str) -> list[dict[str, Any]]:
    """The nodes the filters keep: ``state`` (``all``, ``up`` or a state), ``label``
    (:data:`ANY_LABEL` or one label) and ``text`` (part of the name)."""
    states = {"all": None, "up": {"ready", "busy"}}.get(state, {state})
    text = text.strip().lower()
    return [n for n in nodes
            if (states is None or n.get("state") in states)
            and (label == ANY_LABEL or label in ((n.get("facts") or {}).get("labels") or []))
            and (not text or text in str(n.get("name", "")).lower())]


def summary_html(s: FleetSummary) -> str:
    """The summary block (every value escaped)."""
    counts = " · ".join(f"<span class='state-{st}'>{s.states.get(st, 0):,} {st}</span>"
                        for st in STATES)
    head = f"<p><b>{s.total:,} node{'' if s.total == 1 else 's'}</b>: {counts}</p>"
    if not s.labels:
        return head
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{c.get(st, 0):,}</td>" for st in STATES)
        + f"<td>{sum(c.values()):,}</td></tr>"
        for name, c in s.labels[:SUMMARY_LABELS])
    more = len(s.labels) - SUMMARY_LABELS
    tail = f"<p class='muted'>and {more:,} more labels (filter by any)</p>" if more > 0 else ""
    return (head + "<table class='summary'><tr><th>label</th>"
            + "".join(f"<th>{st}</th>" for st in STATES) + "<th>total</th></tr>"
            + rows + "</table>" + tail)


def polyline(times: list[float], values: list[float], start_ms: float) -> str:
    """SVG points of one sparkline over the last :data:`SPARK_MINUTES` (0–100 %)."""
    span = SPARK_MINUTES * 60_000.0
    points = []
    for t, v in zip(times, values, strict=False):
        if v is None or math.isnan(v):
            continue
        x = max(0.0, min(SPARK_W, (t - start_ms) / span * SPARK_W))
        y = SPARK_H - max(0.0, min(100.0, v)) / 100.0 * SPARK_H
        points.append(f"{x:.1f},{y:.1f}")
    if len(points) == 1:  # a line needs two points: a lone one is drawn as a dash
        x, y = (float(v) for v in points[0].split(","))
        points.insert(0, f"{max(0.0, x - 3):.1f},{y:.1f}")
    return " ".join(points)


def node_columns(nodes: list[dict[str, Any]],
                 sparks: dict[str, dict[str, list[float]]]) -> dict[str, list[Any]]:
    """The rows of one page: capabilities in words, sparklines as SVG points."""
    out: dict[str, list[Any]] = {c: [] for c in NODE_COLUMNS}
    start_ms = time.time() * 1000 - SPARK_MINUTES * 60_000
    for n in nodes:
        facts = n.get("facts") or {}
        paranoid = facts.get("perf_paranoid")
        perf = "yes" if facts.get("perf_available") else "no"
        if facts.get("perf_available") and paranoid is not None:
            perf += f" (paranoid {paranoid})"
        spark = sparks.get(str(n.get("name", ""))) or {"t": [], "cpu": [], "mem": []}
        cpu_now = next((v for v in reversed(spark["cpu"]) if not math.isnan(v)), None)
        out["name"].append(n.get("name", ""))
        out["state"].append(n.get("state", ""))
        out["heartbeat"].append(fmt_age(n.get("silent_for")))
        out["cpu_now"].append("—" if cpu_now is None else f"{cpu_now:.0f} %")
        out["spark"].append("")
        out["cpus"].append(facts.get("cpus", ""))
        out["memory"].append(f"{(facts.get('memory_bytes') or 0) / 2**30:.1f} GiB")
        out["perf"].append(perf)
        out["pmu"].append("yes" if facts.get("pmu_hardware") else "no")
        out["labels"].append(", ".join(facts.get("labels") or []))
        out["running"].append(", ".join(n.get("running") or []) or "—")
        out["cpu_line"].append(polyline(spark["t"], spark["cpu"], start_ms))
        out["mem_line"].append(polyline(spark["t"], spark["mem"], start_ms))
    return out


def options(values: Iterable[str]) -> list[str | tuple[Any, str]]:
    """A Select's options (its property's type, which a plain list[str] is not)."""
    return list(values)


def job_columns(jobs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c: [] for c in JOB_COLUMNS}
    for j in jobs:
        spec = j.get("spec") or {}
        out["id"].append(j.get("id", ""))
        out["name"].append(j.get("name") or spec.get("name") or "")
        out["state"].append(j.get("state", ""))
        out["nodes"].append(", ".join(sorted({r.get("node", "") for r in j.get("runs", [])})))
        out["created"].append(fmt_time(j.get("created_at")))
        out["command"].append(" ".join(spec.get("command") or [])[:120])
    return out
