"""Raw query answers → one time series per node per metric id.

:func:`node_series` takes what :func:`manager.analysis.query.fetch` read and
returns, per node, sorted ``(ts_ns, values)`` arrays keyed by metric id
(:mod:`manager.analysis.metrics`), NaNs ("not measured in this sample")
removed. Several tag sets of one node (disks, NICs) are combined per
timestamp as the catalogue says; ``cpu.busy`` and the ``*.total_bps``
totals are derived here, per point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manager.analysis import metrics
from manager.analysis.query import RawData, SeriesData

#: (ts_ns int64, values float64), sorted by time, finite values only.
TimeSeries = tuple[np.ndarray, np.ndarray]
#: perf ``value`` of these job-scope events is kept for ``run.ipc``.
IPC_EVENTS = ("instructions", "cycles", "cpu-cycles")
_EMPTY: TimeSeries = (np.empty(0, dtype=np.int64), np.empty(0))


@dataclass(slots=True)
class NodeSeries:
    """Everything one node recorded during a job."""

    metrics: dict[str, TimeSeries] = field(default_factory=dict)
    counts: dict[str, TimeSeries] = field(default_factory=dict)  # perf values for run.ipc
    marks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def finite(ts: np.ndarray, values: np.ndarray) -> TimeSeries:
    """Drop samples whose value is NaN (a field left out of that line)."""
    keep = np.isfinite(values)
    return (ts, values) if keep.all() else (ts[keep], values[keep])


def combine(parts: list[TimeSeries], how: str) -> TimeSeries:
    """Merge series of several tag sets into one: per timestamp, ``sum`` or ``max``."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        return _EMPTY
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    uniq, inverse = np.unique(ts, return_inverse=True)
    if how == "max":
        out = np.full(uniq.size, -np.inf)
        np.maximum.at(out, inverse, values)
    else:
        out = np.bincount(inverse, weights=values, minlength=uniq.size)
    return uniq, out


def _column(s: SeriesData, name: str) -> TimeSeries:
    col = s.columns.get(name)
    if col is None or s.ts.size == 0:
        return _EMPTY
    return finite(s.ts, col.astype(float, copy=False))


def _by_node(series: list[SeriesData]) -> dict[str, list[SeriesData]]:
    out: dict[str, list[SeriesData]] = {}
    for s in series:
        out.setdefault(s.tags.get("node", ""), []).append(s)
    return out


def node_series(raw: RawData) -> dict[str, NodeSeries]:
    """Per node: every metric's series, perf counts for IPC, and the marks."""
    nodes: dict[str, NodeSeries] = {}

    def node(name: str) -> NodeSeries:
        return nodes.setdefault(name, NodeSeries())

    for measurement in ("cpu", "mem", "disk", "net", "proc", "agent"):
        for name, group in _by_node(raw.get(measurement, [])).items():
            _fixed(node(name), measurement, group)
    for name, group in _by_node(raw.get("perf", [])).items():
        _perf(node(name), group)
    for name, group in _by_node(raw.get("app", [])).items():
        for s in group:
            node(name).metrics[f"app.{s.tags.get('name', '')}"] = _column(s, "value")
    for name, group in _by_node(raw.get("mark", [])).items():
        node(name).marks = _marks(group)
    return nodes


def _fixed(out: NodeSeries, measurement: str, group: list[SeriesData]) -> None:
    for f in metrics.SOURCE_FIELDS[measurement]:
        mdef = metrics.FIXED[f"{measurement}.{f}"]
        out.metrics[mdef.id] = combine([_column(s, f) for s in group], mdef.combine)
    if measurement == "cpu":
        ts, idle = out.metrics["cpu.idle"]
        out.metrics["cpu.busy"] = (ts, 100.0 - idle)
    totals = {"disk": ("read_bps", "write_bps"), "net": ("rx_bps", "tx_bps")}
    if measurement in totals:
        a, b = totals[measurement]
        parts = [_sum_fields(s, a, b) for s in group]
        out.metrics[f"{measurement}.total_bps"] = combine(parts, "sum")


def _sum_fields(s: SeriesData, a: str, b: str) -> TimeSeries:
    """``a + b`` per row; a row missing one of them counts it as 0, missing both is dropped."""
    if a not in s.columns or b not in s.columns:
        return _EMPTY
    va, vb = s.columns[a].astype(float), s.columns[b].astype(float)
    total = np.where(np.isnan(va) & np.isnan(vb), np.nan, np.nan_to_num(va) + np.nan_to_num(vb))
    return finite(s.ts, total)


def _perf(out: NodeSeries, group: list[SeriesData]) -> None:
    for s in group:
        event, scope = s.tags.get("event", ""), s.tags.get("scope", "job")
        mdef = metrics.perf_def(event, scope)
        out.metrics[mdef.id] = _column(s, mdef.field)
        if scope == "job" and event.split(":", 1)[0] in IPC_EVENTS:
            out.counts[event.split(":", 1)[0]] = _column(s, "value")


def _marks(group: list[SeriesData]) -> list[tuple[int, dict[str, Any]]]:
    marks: list[tuple[int, dict[str, Any]]] = []
    for s in group:
        names = [c for c in s.columns if c not in ("job", "node")]
        for i, ts in enumerate(s.ts.tolist()):
            fields = {n: _plain(s.columns[n][i]) for n in names}
            marks.append((int(ts), {k: v for k, v in fields.items() if v is not None}))
    marks.sort(key=lambda m: m[0])
    return marks


def _plain(value: Any) -> Any:
    """A mark field as JSON wants it: str, int-like floats as int, NaN as None."""
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return None
        return int(value) if float(value).is_integer() else float(value)
    return value if isinstance(value, str | int | bool) else str(value)
