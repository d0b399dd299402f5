"""Per-run summary of the collected metrics, read from InfluxDB over each run's window.

The report page shows the manager's analysis report (``report.get``) when the
manager has one; this summary is shown beside it, and alone when the manager
answers with an error: for each run, samples, mean and max of the node's CPU
and memory, the job's process tree, IPC, and each app metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dashboard.influx import HistoryUnavailable, InfluxReader, quote_str

#: (label, measurement, value expression over field, filter, job-scoped?)
METRICS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("cpu busy %", "cpu", '100 - "idle"', "\"cpu\" = 'total'", False),
    ("memory used %", "mem", '"percent"', "", False),
    ("tree cpu %", "proc", '"cpu_pct"', "\"pid\" = 'tree'", True),
    ("tree RSS MB", "proc", '"rss" / 1000000', "\"pid\" = 'tree'", True),
    ("IPC", "perf", '"value"', "\"event\" = 'ipc' AND \"scope\" = 'job'", True),
)


@dataclass
class RunSummary:
    """One run: outcome and ``rows`` of (metric, samples, mean, p95, max)."""

    run: dict[str, Any]
    rows: list[tuple[str, int, float, float, float]] = field(default_factory=list)
    error: str = ""


def _statements(job_id: str, run: dict[str, Any]) -> list[str]:
    start = int((run.get("started_at") or 0) * 1e9)
    end = int((run.get("ended_at") or time.time()) * 1e9)
    node = f"\"node\" = {quote_str(str(run.get('node', '')))}"
    job = f"\"job\" = {quote_str(job_id)}"
    when = f"time >= {start} AND time <= {end}"
    out = []
    for _, measurement, expr, cond, scoped in METRICS:
        where = " AND ".join(filter(None, [node, job if scoped else "", cond, when]))
        # A subquery gives the expression a name the aggregates can use.
        out.append(f"SELECT count(v), mean(v), percentile(v, 95), max(v) FROM "
                   f"(SELECT {expr} AS v FROM {measurement} WHERE {where})")
    out.append(f"SELECT count(\"value\"), mean(\"value\"), percentile(\"value\", 95), "
               f"max(\"value\") FROM app WHERE {node} AND {job} AND {when} GROUP BY \"name\"")
    return out


def _rows(results: list[list[dict[str, Any]]]) -> list[tuple[str, int, float, float, float]]:
    rows = []
    for (label, *_), series in zip(METRICS, results, strict=False):
        rows += [(label, *_values(s)) for s in series]
    for s in results[len(METRICS)] if len(results) > len(METRICS) else []:
        rows.append((f"app {(s.get('tags') or {}).get('name', '?')}", *_values(s)))
    return [r for r in rows if r[1]]


def _values(s: dict[str, Any]) -> tuple[int, float, float, float]:
    _, count, mean, p95, top = (s.get("values") or [[0, 0, 0, 0, 0]])[0]
    return int(count or 0), float(mean or 0), float(p95 or 0), float(top or 0)


async def run_summaries(influx: InfluxReader, job: dict[str, Any]) -> list[RunSummary]:
    """A :class:`RunSummary` for every run that started (one InfluxDB request per run)."""
    out = []
    for run in job.get("runs", []):
        summary = RunSummary(run)
        if run.get("started_at"):
            try:
                summary.rows = _rows(await influx.query(_statements(str(job["id"]), run)))
            except HistoryUnavailable as exc:
                summary.error = str(exc)
        out.append(summary)
    return out
