"""Per-job summaries, kept once in the manager's SQLite file so a history reads no raw points.

A summary is what a job contributes to its series: per metric, the median of
its runs' figures with their range, plus the job's header (tags, command)
and each node's facts for the environment differences. It is computed from
the job's analysis (:func:`manager.analysis.report.analyse`) once the job has
ended, and never again: a history of 500 jobs reads 500 small rows.

The table lives in the state database (``server.cfg [state] path``) beside
``jobs`` and ``runs``, on a connection of its own (WAL lets it read while the
store writes). It is created here, not in ``manager/state.py``'s migrations,
because it is a cache: dropping it loses nothing, the summaries are computed
again on first use. :data:`SUMMARY_VERSION` in each row lets a later ptap
recompute summaries it would read differently.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from manager.analysis import metrics
from manager.analysis.report import JobAnalysis, RunData, job_header
from manager.analysis.stats import Direction

#: 2: a run's ``proc.rss`` figure is its peak, no longer the mean of its points.
SUMMARY_VERSION = 2
#: Job states whose jobs are summarised (and so may count in a history).
FINAL_STATES = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_summaries (
    job_id     TEXT PRIMARY KEY,
    series     TEXT NOT NULL,
    created_at REAL NOT NULL,
    version    INTEGER NOT NULL,
    summary    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_summaries_series ON job_summaries(series, created_at);
"""
#: A job's series as the ``jobs`` table's spec JSON holds it: ``series``, else ``name``.
_SERIES_SQL = ("coalesce(nullif(json_extract(spec, '$.series'), ''), "
               "json_extract(spec, '$.name'), '')")


#: A figure of the history's own: the tree's CPU time over the run, integrated sample by
#: sample. ``run.cpu_seconds`` (mean CPU share x duration) drifts when the agent's samples
#: come unevenly, as on a loaded host; each sample's share times the time it covers does not.
CPU_TIME = metrics.MetricDef(
    "run.cpu_time", "run", "cpu_time", "s", Direction.LOWER,
    "CPU time of the tree (each sample's CPU share x the time it covers, summed)")
OWN_METRICS = {CPU_TIME.id: CPU_TIME}


def lookup(metric_id: str) -> metrics.MetricDef:
    """The definition of a metric a history may show (KeyError if none)."""
    return OWN_METRICS.get(metric_id) or metrics.lookup(metric_id)


def cpu_time(rd: RunData) -> float | None:
    """Seconds of CPU the run's tree used: each ``proc.cpu_pct`` sample's share over the
    time since the previous sample (the first one since the run's start), and the last
    share until the run's end; None without samples. Samples after the end are left
    out: a process that has exited cannot be read, so the one sample that spans its
    exit shows less than it used, often nothing."""
    found = rd.points.get("proc.cpu_pct")
    if found is None or rd.start is None or rd.end is None:
        return None
    t = found[0] / 1e9
    keep = t <= rd.end
    if not keep.any():
        return None
    t, share = t[keep], found[1][keep] / 100.0
    covered = np.clip(t - np.concatenate(([rd.start], t[:-1])), 0.0, None)
    return float(share @ covered + share[-1] * max(0.0, rd.end - t[-1]))


def series_of(spec: dict[str, Any]) -> str:
    """The series a job spec belongs to: its ``series``, else its ``name`` ("" for none)."""
    return str(spec.get("series") or spec.get("name") or "")


def summarise(analysis: JobAnalysis) -> dict[str, Any]:
    """One job's contribution to its series (plain JSON values)."""
    out: dict[str, dict[str, float]] = {}
    own = {CPU_TIME.id: [v for rd in analysis.runs if (v := cpu_time(rd)) is not None]}
    for mid in [*analysis.catalogue, *own]:
        values = np.array(own[mid] if mid in own else
                          [rd.figures[mid] for rd in analysis.runs if mid in rd.figures])
        values = values[np.isfinite(values)]
        if values.size:
            out[mid] = {"median": float(np.median(values)), "low": float(values.min()),
                        "high": float(values.max()), "runs": int(values.size)}
    spec = analysis.job.get("spec", {})
    header = job_header(analysis.job)
    header["series"] = series_of({**spec, "name": analysis.job.get("name", "")})
    return {"version": SUMMARY_VERSION, "job": header,
            "environment": analysis.environment, "metrics": out}


class SummaryStore:
    """The ``job_summaries`` table of the state database at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put(self, summary: dict[str, Any]) -> None:
        """Keep ``summary`` (from :func:`summarise`), replacing an older one of its job."""
        job = summary["job"]
        self._db.execute(
            "INSERT OR REPLACE INTO job_summaries (job_id, series, created_at, version, summary) "
            "VALUES (?,?,?,?,?)",
            (job["id"], job["series"], float(job.get("created_at") or 0.0), SUMMARY_VERSION,
             json.dumps(summary, separators=(",", ":"))))

    def of_series(self, series: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The summaries of ``series``' jobs created at or after ``since``, oldest first."""
        rows = self._db.execute(
            "SELECT summary FROM job_summaries WHERE series = ? AND created_at >= ? "
            "AND version = ? ORDER BY created_at", (series, since, SUMMARY_VERSION)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def missing(self, series: str, since: float = 0.0) -> list[str]:
        """Ids of ``series``' ended jobs (per the ``jobs`` table) with no current summary."""
        rows = self._db.execute(
            f"SELECT j.id FROM jobs j LEFT JOIN job_summaries s "
            f"ON s.job_id = j.id AND s.version = ? "
            f"WHERE s.job_id IS NULL AND j.state IN ({','.join('?' * len(FINAL_STATES))}) "
            f"AND j.created_at >= ? AND {_SERIES_SQL} = ? ORDER BY j.seq",
            (SUMMARY_VERSION, *FINAL_STATES, since, series)).fetchall()
        return [r[0] for r in rows]

    def has_jobs(self, series: str) -> bool:
        """Whether any job at all (finished or not) belongs to ``series``."""
        row = self._db.execute(f"SELECT 1 FROM jobs WHERE {_SERIES_SQL} = ? LIMIT 1",
                               (series,)).fetchone()
        return row is not None
