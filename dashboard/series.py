"""From metric series to chart columns: the one transform behind live data and backfill.

Both the live feed (``MetricBatch`` series from the manager's PUB) and the
InfluxDB backfill (``GROUP BY *`` query results) arrive as wire series
``[measurement, tags, fields, rows]`` (:mod:`bus.metrics`), so one function,
:func:`extract`, turns either into :class:`Update` objects that the live view
streams into its Bokeh sources. Pure functions, no I/O: tested as such.

Charts and their columns (``t`` is the sample time in ms since the epoch,
the unit of Bokeh's datetime axis):

=======  ===================================================  ==========================
chart    columns                                              from
=======  ===================================================  ==========================
node     t, and                                               joined on ``t``:
         user, system, iowait, busy (100 - idle)              ``cpu`` rows of ``cpu=total``
         percent, used_gb, swap_gb                            ``mem``
         read_mbs, write_mbs, busy_pct (all devices)          ``disk``
         rx_mbs, tx_mbs (all interfaces)                      ``net``
proc     t, cpu_pct, rss_mb                                   ``proc`` row ``pid=tree``
tree     pid, comm, cpu_pct, rss_mb, threads (replace)        other ``proc`` rows
perf     t, value (per second; one source per event)          ``perf`` (not ``ipc``)
ipc      t, ipc                                               ``perf`` event ``ipc``
app      t, value (one source per name)                       ``app``
mark     t, text                                              ``mark``
=======  ===================================================  ==========================

The node-wide measurements share one source per node because the agent
samples them together: one update a second is then one stream message per
browser tab instead of four (Bokeh sends one websocket message per change).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NAN = float("nan")
MB = 1e6
GB = 1e9

#: Column names of each streamed chart (``tree`` is a table replaced, not streamed).
NODE_PARTS: dict[str, tuple[str, ...]] = {  # the measurements joined into ``node``
    "cpu": ("user", "system", "iowait", "busy"),
    "mem": ("percent", "used_gb", "swap_gb"),
    "disk": ("read_mbs", "write_mbs", "busy_pct"),
    "net": ("rx_mbs", "tx_mbs"),
}
CHART_COLUMNS: dict[str, tuple[str, ...]] = {
    "node": ("t", *(c for cols in NODE_PARTS.values() for c in cols)),
    "proc": ("t", "cpu_pct", "rss_mb"),
    "tree": ("pid", "comm", "cpu_pct", "rss_mb", "threads"),
    "perf": ("t", "value"),
    "ipc": ("t", "ipc"),
    "app": ("t", "value"),
    "mark": ("t", "text"),
}


@dataclass(slots=True)
class Update:
    """New rows for one live source.

    ``job`` is empty for node-wide measurements; ``scope`` is the perf scope
    (``job``/``system``); ``label`` tells sources of one chart apart (perf
    event, app name). ``replace`` means "these rows are the whole table now".
    """

    chart: str
    node: str
    columns: dict[str, list[Any]]
    job: str = ""
    scope: str = ""
    label: str = ""
    replace: bool = False

    @property
    def key(self) -> str:
        """The Bokeh source name, e.g. ``node:node1`` or ``app:node1:latency``."""
        base = f"{self.chart}:{self.node}"
        return f"{base}:{self.label}" if self.label else base

    def __len__(self) -> int:
        return len(self.columns.get("t") or self.columns.get("pid") or [])


@dataclass(frozen=True, slots=True)
class View:
    """What one live document shows: which nodes, which job (``""``: any), perf scope."""

    nodes: tuple[str, ...]
    job: str = ""
    scope: str = field(default="system")

    def wants(self, u: Update) -> bool:
        """Does an update belong in this view?"""
        if u.node not in self.nodes:
            return False
        if u.job and self.job and u.job != self.job:
            return False
        return not (u.chart in ("perf", "ipc") and u.scope != self.scope)


def _num(v: Any, scale: float = 1.0) -> float:
    """A chart value: numbers scaled, anything missing or odd as NaN (a gap)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return NAN
    return float(v) / scale


def _col(fields: list[str], name: str) -> int | None:
    try:
        return fields.index(name)
    except ValueError:
        return None


def _pick(row: list[Any], idx: int | None, scale: float = 1.0) -> float:
    """Field ``idx`` of a ``[ts, *values]`` row, or NaN when the row lacks it."""
    if idx is None or idx + 1 >= len(row):
        return NAN
    return _num(row[idx + 1], scale)


def _ms(ts_ns: Any) -> float:
    return float(ts_ns) / 1e6


def _columns(fields: list[str], rows: list[list[Any]],
             spec: list[tuple[str, str, float]]) -> dict[str, list[Any]]:
    """``spec``: (column, field, scale) → columns with ``t`` first."""
    idx = [(col, _col(fields, f), scale) for col, f, scale in spec]
    out: dict[str, list[Any]] = {"t": [_ms(r[0]) for r in rows]}
    for col, i, scale in idx:
        out[col] = [_pick(r, i, scale) for r in rows]
    return out


def _cpu(node: str, tags: dict[str, str], fields: list[str], rows: list[list[Any]]
         ) -> list[Update]:
    if tags.get("cpu") != "total":
        return []
    cols = _columns(fields, rows, [("user", "user", 1), ("system", "system", 1),
                                   ("iowait", "iowait", 1), ("idle", "idle", 1)])
    cols["busy"] = [NAN if math.isnan(i) else round(100.0 - i, 2) for i in cols.pop("idle")]
    return [Update("cpu", node, cols)]


def _mem(node: str, tags: dict[str, str], fields: list[str], rows: list[list[Any]]
         ) -> list[Update]:
    cols = _columns(fields, rows, [("percent", "percent", 1), ("used_gb", "used", GB),
                                   ("swap_gb", "swap_used", GB)])
    return [Update("mem", node, cols)]


def _proc(node: str, tags: dict[str, str], fields: list[str], rows: list[list[Any]]
          ) -> list[Update]:
    job = tags.get("job", "")
    if tags.get("pid") == "tree":
        cols = _columns(fields, rows, [("cpu_pct", "cpu_pct", 1), ("rss_mb", "rss", MB)])
        return [Update("proc", node, cols, job=job)]
    last = rows[-1]
    cpu, rss, thr = _col(fields, "cpu_pct"), _col(fields, "rss"), _col(fields, "threads")
    cols = {"pid": [tags.get("pid", "?")], "comm": [tags.get("comm", "")],
            "cpu_pct": [_pick(last, cpu)], "rss_mb": [_pick(last, rss, MB)],
            "threads": [_pick(last, thr)], "_t": [_ms(last[0])]}
    return [Update("tree", node, cols, job=job, replace=True)]


def _perf(node: str, tags: dict[str, str], fields: list[str], rows: list[list[Any]]
          ) -> list[Update]:
    event, scope, job = tags.get("event", ""), tags.get("scope", ""), tags.get("job", "")
    if event == "ipc":
        cols = _columns(fields, rows, [("ipc", "value", 1)])
        return [Update("ipc", node, cols, job=job, scope=scope)]
    per_sec, value = _col(fields, "per_sec"), _col(fields, "value")
    t = [_ms(r[0]) for r in rows]
    vals = [_pick(r, per_sec) for r in rows]
    vals = [v if not math.isnan(v) else _pick(r, value) for v, r in zip(vals, rows, strict=True)]
    return [Update("perf", node, {"t": t, "value": vals}, job=job, scope=scope, label=event)]


def _app(node: str, tags: dict[str, str], fields: list[str], rows: list[list[Any]]
         ) -> list[Update]:
    cols = _columns(fields, rows, [("value", "value", 1)])
    return [Update("app", node, cols, job=tags.get("job", ""), label=tags.get("name", "?"))]


def _mark(node: str, tags: dict[str, str], fields: list[str], rows: list[list[Any]]
          ) -> list[Update]:
    text = []
    for r in rows:
        parts = [f"{f}={_fmt(v)}" for f, v in zip(fields, r[1:], strict=False) if v is not None]
        text.append(" ".join(parts))
    return [Update("mark", node, {"t": [_ms(r[0]) for r in rows], "text": text},
                   job=tags.get("job", ""))]


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


_EXTRACTORS = {"cpu": _cpu, "mem": _mem, "proc": _proc, "perf": _perf, "app": _app,
               "mark": _mark}
_SUMMED = {  # measurements summed over a tag (devices, interfaces) per timestamp
    "disk": ("dev", [("read_mbs", "read_bps", MB), ("write_mbs", "write_bps", MB),
                     ("busy_pct", "busy_pct", 1)]),
    "net": ("nic", [("rx_mbs", "rx_bps", MB), ("tx_mbs", "tx_bps", MB)]),
}


def extract(series: Iterable[list[Any]], node: str | None = None) -> list[Update]:
    """Updates for every chart fed by ``series`` (wire form; bad entries skipped).

    ``node`` defaults to each series' ``node`` tag. Rows of one chart and node
    that came in several series (a batch may hold more than one) are merged.
    """
    updates: list[Update] = []
    sums: dict[tuple[str, str], dict[float, list[float]]] = {}
    for s in series:
        try:
            measurement, tags, fields, rows = s
        except (TypeError, ValueError):
            continue
        if not rows or not isinstance(tags, dict) or not isinstance(fields, list):
            continue
        n = node or str(tags.get("node", ""))
        if measurement in _SUMMED:
            _accumulate(sums.setdefault((measurement, n), {}), fields, rows,
                        _SUMMED[measurement][1])
        elif measurement in _EXTRACTORS:
            updates.extend(_EXTRACTORS[measurement](n, tags, fields, rows))
    for (measurement, n), by_ts in sums.items():
        updates.append(_summed_update(measurement, n, by_ts))
    return merge(_join_node(updates))


def _join_node(updates: list[Update]) -> list[Update]:
    """The cpu, mem, disk and net updates of each node → one ``node`` update, joined on
    time; a measurement missing at a time is NaN there (a gap in its chart)."""
    rows: dict[str, dict[float, dict[str, Any]]] = {}
    out = []
    for u in updates:
        if u.chart not in NODE_PARTS:
            out.append(u)
            continue
        per_t = rows.setdefault(u.node, {})
        for i, t in enumerate(u.columns["t"]):
            row = per_t.setdefault(t, {})
            for c in NODE_PARTS[u.chart]:
                row[c] = u.columns[c][i]
    for node, per_t in rows.items():
        ts = sorted(per_t)
        cols = {c: [per_t[t].get(c, NAN) for t in ts] for c in CHART_COLUMNS["node"][1:]}
        out.append(Update("node", node, {"t": ts, **cols}))
    return out


def _accumulate(by_ts: dict[float, list[float]], fields: list[str], rows: list[list[Any]],
                spec: list[tuple[str, str, float]]) -> None:
    idx = [(_col(fields, f), scale) for _, f, scale in spec]
    for r in rows:
        acc = by_ts.setdefault(_ms(r[0]), [0.0] * len(spec))
        for k, (i, scale) in enumerate(idx):
            v = _pick(r, i, scale)
            if not math.isnan(v):
                acc[k] = max(acc[k], v) if spec[k][0] == "busy_pct" else acc[k] + v


def _summed_update(measurement: str, node: str, by_ts: dict[float, list[float]]) -> Update:
    spec = _SUMMED[measurement][1]
    ts = sorted(by_ts)
    cols: dict[str, list[Any]] = {"t": ts}
    for k, (col, _, _) in enumerate(spec):
        cols[col] = [round(by_ts[t][k], 4) for t in ts]
    return Update(measurement, node, cols)


def merge(updates: list[Update]) -> list[Update]:
    """Join updates for the same source (and job/scope) into one, rows in time order.

    Table updates (``replace``) keep only the rows of the newest sample time.
    """
    out: dict[tuple[str, str, str], Update] = {}
    for u in updates:
        k = (u.key, u.job, u.scope)
        prev = out.get(k)
        if prev is None:
            out[k] = Update(u.chart, u.node, {c: list(v) for c, v in u.columns.items()},
                            u.job, u.scope, u.label, u.replace)
        elif u.replace:
            _merge_table(prev, u)
        else:
            for c, v in u.columns.items():
                prev.columns.setdefault(c, []).extend(v)
    for u in out.values():
        if not u.replace and len(u) > 1 and not _sorted(u.columns["t"]):
            order = sorted(range(len(u)), key=u.columns["t"].__getitem__)
            u.columns = {c: [v[i] for i in order] for c, v in u.columns.items()}
    return list(out.values())


def _merge_table(prev: Update, u: Update) -> None:
    """Rows of a newer sample replace the table; rows of the same sample are added."""
    newest, mine = max(prev.columns["_t"]), u.columns["_t"][0]
    if mine > newest:
        prev.columns = {c: list(v) for c, v in u.columns.items()}
    elif mine == newest:
        for c, v in u.columns.items():
            prev.columns[c].extend(v)


def _sorted(values: list[float]) -> bool:
    return all(a <= b for a, b in zip(values, values[1:], strict=False))


def thin(u: Update, limit: int) -> Update:
    """At most ``limit`` rows, evenly spaced, the newest kept: a chart has only so
    many pixels, and a firehose node must not flood every browser."""
    n = len(u)
    if u.replace or n <= limit or limit < 2:
        return u
    step = (n - 1) / (limit - 1)
    keep = sorted({round(i * step) for i in range(limit)})
    u.columns = {c: [v[i] for i in keep] for c, v in u.columns.items()}
    return u
