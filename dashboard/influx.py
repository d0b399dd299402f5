"""The dashboard's InfluxDB reads: history for the charts, sparklines for the overview.

The dashboard reads InfluxDB itself (docs/architecture.md#processes-and-sockets)
instead of importing the manager's sink, so ``dashboard`` depends on ``bus``
and InfluxDB only. The reader, its quoting and its answer checks are
:mod:`bus.influxql`, the one InfluxQL reader the manager's analysis uses too;
this module holds the dashboard's statements. Several statements share one
request, one round trip per page.

Every value put into a query is either an integer or passes through
:func:`quote_str`, and node names and job ids are also validated where they
enter the dashboard (:mod:`dashboard.pages.base`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bus.influxql import InfluxQLReader, InfluxUnavailable, any_of, quote_ident, quote_str
from bus.influxql import time_window as _window
from config.schema import InfluxDB
from dashboard.series import Update, View, extract

log = logging.getLogger(__name__)

#: InfluxDB did not answer, or refused a query (the name the dashboard's callers know).
HistoryUnavailable = InfluxUnavailable
__all__ = ["HistoryUnavailable", "InfluxReader", "history_statements", "quote_ident",
           "quote_str", "sparklines"]


class InfluxReader(InfluxQLReader):
    """:class:`bus.influxql.InfluxQLReader` made from ``[influxdb]``, with the charts' history."""

    def __init__(self, cfg: InfluxDB) -> None:
        super().__init__(cfg.url, cfg.database, username=cfg.username or "",
                         password=cfg.password or "", token=cfg.token or "",
                         timeout=cfg.timeout)

    async def history(self, view: View, start_ns: int, end_ns: int | None = None,
                      limit: int = 5000) -> list[Update]:
        """Chart updates for ``view`` between ``start_ns`` and ``end_ns`` (now when None):
        the newest ``limit`` rows of each series, in time order."""
        statements = history_statements(view, start_ns, end_ns, limit)
        results = await self.query(statements)
        wire: list[list[Any]] = []
        for series_list in results:
            for s in series_list:
                rows = list(reversed(s.get("values") or []))  # DESC → oldest first
                wire.append([s.get("name", ""), s.get("tags") or {}, s["columns"][1:], rows])
        return extract(wire)


def history_statements(view: View, start_ns: int, end_ns: int | None, limit: int) -> list[str]:
    """The InfluxQL for :meth:`InfluxReader.history` (one statement per measurement)."""
    nodes, when = any_of("node", view.nodes), _window(start_ns, end_ns)
    job = f" AND {quote_ident('job')} = {quote_str(view.job)}" if view.job else ""
    tail = f"GROUP BY * ORDER BY time DESC LIMIT {int(limit)}"
    fields = {"cpu": '"user","system","iowait","idle"', "mem": '"percent","used","swap_used"',
              "disk": '"read_bps","write_bps","busy_pct"', "net": '"rx_bps","tx_bps"'}
    out = [f"SELECT {f} FROM {m} WHERE {nodes} AND {when}"
           + (" AND \"cpu\" = 'total'" if m == "cpu" else "") + f" {tail}"
           for m, f in fields.items()]
    scope = f"\"scope\" = {quote_str(view.scope)}"
    out += [
        f"SELECT \"cpu_pct\",\"rss\",\"threads\" FROM proc WHERE {nodes}{job} AND {when} {tail}",
        f"SELECT \"value\",\"per_sec\" FROM perf WHERE {nodes}{job} AND {scope} AND {when} {tail}",
        f"SELECT \"value\" FROM app WHERE {nodes}{job} AND {when} {tail}",
        f"SELECT * FROM mark WHERE {nodes}{job} AND {when} {tail}",
    ]
    return out


def sparkline_statement(nodes: list[str], since_ns: int, step_s: int = 15) -> str:
    """ONE InfluxQL statement for the overview's sparklines of ``nodes``: CPU idle (of
    the ``total`` series) and memory used, averaged per ``step_s``, one series per
    measurement and node. ``mem`` has no ``cpu`` tag, which InfluxQL reads as ''."""
    return (f"SELECT mean(\"idle\") AS \"idle\", mean(\"percent\") AS \"mem\" "
            f"FROM \"cpu\", \"mem\" WHERE {any_of('node', nodes)} "
            f"AND (\"cpu\" = 'total' OR \"cpu\" = '') AND time >= {int(since_ns)} "
            f"GROUP BY time({int(step_s)}s), \"node\" fill(none)")


async def sparklines(reader: InfluxReader, nodes: list[str], minutes: int = 10,
                     step_s: int = 15) -> dict[str, dict[str, list[float]]]:
    """Per node of ``nodes``: ``t`` (ms), ``cpu`` (busy %) and ``mem`` (%) averaged per
    ``step_s`` over the last ``minutes``, read with one statement for all of them
    (:func:`sparkline_statement`): the overview asks for the nodes it shows."""
    if not nodes:
        return {}
    since = time.time_ns() - minutes * 60 * 10**9
    (series_list,) = await reader.query([sparkline_statement(nodes, since, step_s)])
    out: dict[str, dict[str, dict[float, float]]] = {}
    for s in series_list:
        node = (s.get("tags") or {}).get("node", "")
        name, column = ("cpu", 1) if s.get("name") == "cpu" else ("mem", 2)
        per = out.setdefault(node, {}).setdefault(name, {})
        for row in s.get("values") or []:
            value = row[column]
            if value is not None:
                per[row[0] / 1e6] = round(100.0 - float(value) if name == "cpu"
                                          else float(value), 2)
    return {node: _align(d) for node, d in out.items()}


def _align(d: dict[str, dict[float, float]]) -> dict[str, list[float]]:
    ts = sorted(set(d.get("cpu", {})) | set(d.get("mem", {})))
    nan = float("nan")
    return {"t": ts, "cpu": [d.get("cpu", {}).get(t, nan) for t in ts],
            "mem": [d.get("mem", {}).get(t, nan) for t in ts]}
