"""A small InfluxQL reader for the dashboard: history for the charts, run summaries.

The dashboard reads InfluxDB itself (docs/architecture.md#processes-and-sockets: "HTTP /query (history)")
instead of importing the manager's sink, so ``dashboard`` depends on ``bus``
and InfluxDB only. Queries go as ``POST /query`` with ``epoch=ns`` through
Tornado's ``AsyncHTTPClient`` on the one asyncio loop; several statements
share one request (``;``-separated), one round trip per page.

Every value put into a query is either an integer or passes through
:func:`quote_str`, and node names and job ids are also validated where they
enter the dashboard (:mod:`dashboard.pages.base`).
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from config.schema import InfluxDB
from dashboard.series import Update, View, extract

log = logging.getLogger(__name__)


class HistoryUnavailable(Exception):
    """InfluxDB did not answer, or refused a query; the message is one line."""


def quote_str(value: str) -> str:
    """An InfluxQL string literal (``'...'``) for ``value``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier (``"..."``), safe for keywords such as ``user``."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _any_of(tag: str, values: tuple[str, ...] | list[str]) -> str:
    return "(" + " OR ".join(f"{quote_ident(tag)} = {quote_str(v)}" for v in values) + ")"


class InfluxReader:
    """Reads with InfluxQL over InfluxDB's v1 ``/query`` (1.x, or 2.x/3.x v1-compat with a token)."""

    def __init__(self, cfg: InfluxDB) -> None:
        self.url = cfg.url.rstrip("/")
        self.db = cfg.database
        self._timeout = cfg.timeout
        self._headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if cfg.username:
            # Basic auth: InfluxDB 1.x reads credentials from the URL or this header,
            # never from a form body.
            pair = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {pair}"
        elif cfg.token:
            self._headers["Authorization"] = f"Token {cfg.token}"
        self._client: AsyncHTTPClient | None = None

    def _http(self) -> AsyncHTTPClient:
        # Made on first use: Tornado ties a client to the loop running then.
        if self._client is None:
            self._client = AsyncHTTPClient(force_instance=True, max_clients=8)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def query(self, statements: list[str]) -> list[list[dict[str, Any]]]:
        """Run the statements in one request; for each, its series
        (``{"name", "tags", "columns", "values"}``; times as ns integers)."""
        form = {"q": ";\n".join(statements), "db": self.db, "epoch": "ns"}
        request = HTTPRequest(f"{self.url}/query", method="POST", headers=self._headers,
                              body=urllib.parse.urlencode(form),
                              connect_timeout=self._timeout, request_timeout=self._timeout)
        try:
            response = await self._http().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as exc:
            raise HistoryUnavailable(f"InfluxDB at {self.url}: {exc}") from exc
        if response.code != 200:
            body = (response.body or b"")[:200].decode(errors="replace")
            raise HistoryUnavailable(f"InfluxDB at {self.url}: HTTP {response.code} {body}")
        doc = json.loads(response.body or b"{}")
        out: list[list[dict[str, Any]]] = []
        for result in doc.get("results", []):
            if "error" in result:
                raise HistoryUnavailable(f"InfluxDB query failed: {result['error']}")
            out.append(list(result.get("series") or []))
        return out

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


def _window(start_ns: int, end_ns: int | None) -> str:
    cond = f"time >= {int(start_ns)}"
    return cond if end_ns is None else f"{cond} AND time <= {int(end_ns)}"


def history_statements(view: View, start_ns: int, end_ns: int | None, limit: int) -> list[str]:
    """The InfluxQL for :meth:`InfluxReader.history` (one statement per measurement)."""
    nodes, when = _any_of("node", view.nodes), _window(start_ns, end_ns)
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


async def sparklines(reader: InfluxReader, minutes: int = 10,
                     step_s: int = 15) -> dict[str, dict[str, list[float]]]:
    """Per node: ``t``, ``cpu`` (busy %) and ``mem`` (%) averaged per ``step_s`` over
    the last ``minutes``: the overview's sparklines, one request for all nodes."""
    since = time.time_ns() - minutes * 60 * 10**9
    group = f"GROUP BY time({int(step_s)}s), \"node\" fill(none)"
    results = await reader.query([
        f"SELECT 100 - mean(\"idle\") FROM cpu WHERE \"cpu\" = 'total' AND time >= {since} {group}",
        f"SELECT mean(\"percent\") FROM mem WHERE time >= {since} {group}",
    ])
    out: dict[str, dict[str, dict[float, float]]] = {}
    for name, series_list in zip(("cpu", "mem"), results, strict=False):
        for s in series_list:
            node = (s.get("tags") or {}).get("node", "")
            per = out.setdefault(node, {}).setdefault(name, {})
            for ts, v in s.get("values") or []:
                if v is not None:
                    per[ts / 1e6] = round(float(v), 2)
    return {node: _align(d) for node, d in out.items()}


def _align(d: dict[str, dict[float, float]]) -> dict[str, list[float]]:
    ts = sorted(set(d.get("cpu", {})) | set(d.get("mem", {})))
    nan = float("nan")
    return {"t": ts, "cpu": [d.get("cpu", {}).get(t, nan) for t in ts],
            "mem": [d.get("mem", {}).get(t, nan) for t in ts]}
