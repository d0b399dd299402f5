"""Fetching a job's raw points from InfluxDB: one InfluxQL query per measurement per job.

The number of queries does not grow with runs, nodes or metrics: each
measurement is read once for the job's whole time window (every run's
``[started_at, ended_at]`` plus a little grace) and all its nodes, with raw
points (``epoch=ns``), split into series by ``GROUP BY`` tags. The report
then slices each run's window out of these arrays with numpy.

* node-wide measurements (``cpu`` total row, ``mem``, ``disk``, ``net``,
  ``agent``) are selected by time window and node;
* job-scoped ones (``proc`` tree row, ``app``, ``mark``) by the ``job`` tag;
* ``perf`` by either: the job's tree (``job`` tag) or the node
  (``scope = 'system'``).

Queries go through anything with ``InfluxV1Sink.query``'s signature (v1
``/query``, also what InfluxDB 2/3 serve for v1 clients with a token); the
quoting and the answer checks are :mod:`bus.influxql`'s, shared with the
dashboard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bus.influxql import QueryFailed, quote_ident, quote_str, statement_series
from manager.analysis.metrics import SOURCE_FIELDS, TREE_PID


class QueryClient(Protocol):
    """What a report needs from InfluxDB (:class:`manager.sinks.InfluxV1Sink` has it)."""

    async def query(self, influxql: str, db: str | None = None, *,
                    epoch: str | None = "ns") -> dict[str, Any]: ...

    async def close(self) -> None: ...


class QueryError(Exception):
    """InfluxDB answered, but not with everything asked for (e.g. a truncated result)."""


@dataclass(frozen=True, slots=True)
class Window:
    """What to read: ``job_id``'s points, on ``nodes``, between two ns timestamps."""

    job_id: str
    nodes: tuple[str, ...]
    start_ns: int
    end_ns: int


@dataclass(slots=True)
class SeriesData:
    """One series of a query answer: its ``GROUP BY`` tags, sorted ns timestamps
    (int64), and one array per column (float64 with NaN for "not measured",
    or object arrays for string columns such as mark phases)."""

    measurement: str
    tags: dict[str, str]
    ts: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)


#: measurement → list of series, as read for one job.
RawData = dict[str, list[SeriesData]]


def _fields(names: Iterable[str]) -> str:
    return ",".join(quote_ident(n) for n in names)


def statements(w: Window) -> dict[str, str]:
    """The InfluxQL of each measurement for window ``w`` (one statement each)."""
    time = f"time >= {w.start_ns} AND time <= {w.end_ns}"
    nodes = "(" + " OR ".join(f'"node" = {quote_str(n)}' for n in w.nodes) + ")"
    job = f'"job" = {quote_str(w.job_id)}'

    def select(m: str, where: str, group: str = '"node"') -> str:
        return (f"SELECT {_fields(SOURCE_FIELDS[m])} FROM {quote_ident(m)} "
                f"WHERE {where} AND {time} GROUP BY {group}")

    return {
        "cpu": select("cpu", f"{nodes} AND \"cpu\" = 'total'"),
        "mem": select("mem", nodes),
        "disk": select("disk", nodes, '"node","dev"'),
        "net": select("net", nodes, '"node","nic"'),
        "agent": select("agent", nodes),
        "proc": select("proc", f'{job} AND "pid" = {quote_str(TREE_PID)}'),
        "perf": f'SELECT "value","per_sec" FROM "perf" WHERE {time} AND ({job} OR '
                f'("scope" = \'system\' AND {nodes})) GROUP BY "node","scope","event"',
        "app": f'SELECT "value" FROM "app" WHERE {job} AND {time} GROUP BY "node","name"',
        "mark": f'SELECT * FROM "mark" WHERE {job} AND {time} GROUP BY "node"',
    }


async def fetch(client: QueryClient, w: Window, db: str | None = None) -> RawData:
    """Run :func:`statements` concurrently, then parse every answer into arrays in
    the default executor (a long job's answers hold millions of values)."""
    if not w.nodes:
        return {}
    plan = statements(w)
    answers = await asyncio.gather(*(client.query(q, db, epoch="ns") for q in plan.values()))

    def parse_all() -> RawData:
        return {m: parse(m, doc) for m, doc in zip(plan, answers, strict=True)}

    return await asyncio.get_running_loop().run_in_executor(None, parse_all)


def parse(measurement: str, doc: dict[str, Any]) -> list[SeriesData]:
    """InfluxDB's JSON answer (one statement, ``epoch=ns``) → :class:`SeriesData` list."""
    results = doc.get("results") or [{}]
    try:
        found = statement_series(results[0], f"the {measurement} points")
    except QueryFailed as exc:  # the one reader's checks (bus.influxql)
        raise QueryError(str(exc)) from exc
    return [_series(measurement, s) for s in found]


def _series(measurement: str, raw: dict[str, Any]) -> SeriesData:
    columns: list[str] = raw["columns"]
    values: list[list[Any]] = raw.get("values") or []
    ts = np.fromiter((row[0] for row in values), dtype=np.int64, count=len(values))
    out = SeriesData(measurement, dict(raw.get("tags") or {}), ts)
    if not values:
        return out
    try:
        table = np.array(values, dtype=float)
        for i, name in enumerate(columns[1:], start=1):
            out.columns[name] = table[:, i]
    except (TypeError, ValueError):  # a string column (marks): keep the objects
        table = np.array(values, dtype=object)
        for i, name in enumerate(columns[1:], start=1):
            out.columns[name] = table[:, i]
    order = np.argsort(ts, kind="stable")
    if np.any(order != np.arange(order.size)):
        out.ts = ts[order]
        out.columns = {k: v[order] for k, v in out.columns.items()}
    return out
