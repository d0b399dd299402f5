"""A job's analysis: each run's window of every metric, per-run figures, and the report object.

:func:`analyse` cuts each run's points out of the job's series
(:mod:`manager.analysis.series`) and computes one *figure* per metric per
run (the mean of its points, or the peak of ``proc.rss``, plus the ``run.*`` figures). The result,
:class:`JobAnalysis`, feeds both :func:`report_object` (the JSON report of
docs/report-schema.json) and :mod:`manager.analysis.compare`.

Windows: node-wide metrics use the run's ``[started_at, ended_at]``.
Job-scoped ones (``proc``, ``perf`` of the tree, ``app``, ``mark``) are
tagged with the job, so their window reaches a little further on each side
(:func:`grace`: the agent takes a last sample just after the run ends) but
never into the node's previous or next run of the same job. A run that has
not ended is cut at ``now``; a run that never started has no window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manager.analysis import metrics
from manager.analysis.query import Window
from manager.analysis.series import NodeSeries, TimeSeries, node_series
from manager.analysis.stats import summarize

SCHEMA_VERSION = 1
TIMELINE_POINTS = 300
MAX_TIMELINE_METRICS = 16
MAX_PHASES = 100
#: A report of a job that ended less than this long ago warns that late points may be missing.
SETTLE_S = 5.0
ENV_KEYS = ("hostname", "kernel", "cpu_model", "governor", "cpus", "memory_bytes",
            "agent_version", "perf_available", "perf_paranoid", "pmu_hardware")
_NS = 1_000_000_000


@dataclass(slots=True)
class RunData:
    """One run's share of the job's data."""

    run: dict[str, Any]
    start: float | None
    end: float | None
    points: dict[str, TimeSeries] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    marks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def node(self) -> str:
        return str(self.run["node"])


@dataclass(slots=True)
class JobAnalysis:
    """Everything a report or a comparison of one job needs."""

    job: dict[str, Any]
    runs: list[RunData]
    catalogue: dict[str, metrics.MetricDef]
    environment: dict[str, dict[str, Any]]
    notes: list[str]
    generated_at: float


def grace(job: dict[str, Any]) -> float:
    """Seconds a job-scoped window reaches past the run: two sampling intervals, ≥ 0.5 s."""
    return max(0.5, 2.0 * float(job.get("spec", {}).get("interval") or 1.0))


def run_end(run: dict[str, Any], now: float) -> float:
    """When a run's window ends: its ``ended_at``, or ``now`` while it has none."""
    return float(run["ended_at"]) if run.get("ended_at") is not None else now


def query_window(job: dict[str, Any], now: float) -> Window | None:
    """The one time window (and nodes) to read for the whole job; None if no run started."""
    started = [r for r in job["runs"] if r.get("started_at") is not None]
    if not started:
        return None
    pad = grace(job)
    lo = min(float(r["started_at"]) for r in started) - pad
    hi = max(run_end(r, now) for r in started) + pad
    nodes = tuple(sorted({str(r["node"]) for r in started}))
    return Window(str(job["id"]), nodes, int(lo * _NS), int(hi * _NS))


def analyse(job: dict[str, Any], environment: dict[str, dict[str, Any]],
            raw: dict[str, Any], now: float) -> JobAnalysis:
    """Slice the job's data (``raw``, from :func:`manager.analysis.query.fetch`) per run."""
    by_node = node_series(raw)
    runs = [RunData(r, r.get("started_at"), None) for r in job["runs"]]
    for node_runs in _group_by_node(runs).values():
        boundary = -np.inf  # job-scoped windows of one node's runs never overlap
        for i, rd in enumerate(node_runs):
            nxt = node_runs[i + 1].start if i + 1 < len(node_runs) else None
            boundary = _fill_run(rd, by_node.get(rd.node, NodeSeries()), job, now, boundary, nxt)
    declared = metrics.declared_directions(job.get("spec", {}).get("tags") or {})
    ids = {m for rd in runs for m in (*rd.points, *rd.figures)}
    catalogue = {m: metrics.with_declared(metrics.lookup(m), declared)
                 for m in sorted(ids, key=metrics.sort_key)}
    return JobAnalysis(job, runs, catalogue, environment, _job_notes(job, now), now)


def _group_by_node(runs: list[RunData]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for rd in sorted(runs, key=lambda r: (r.node, r.start or 0.0, r.run.get("iteration", 0))):
        out.setdefault(rd.node, []).append(rd)
    return out


def _job_scoped(metric_id: str) -> bool:
    return metric_id.startswith(("proc.", "app.")) or (
        metric_id.startswith("perf.") and not metric_id.startswith("perf.system."))


def _fill_run(rd: RunData, ns: NodeSeries, job: dict[str, Any], now: float,
              after: float, next_start: float | None) -> float:
    """Cut this run's points; returns where its job-scoped window ended (the next
    run of the node starts its window after that)."""
    run = rd.run
    if run.get("state") == "lost":
        rd.notes.append(f"node {rd.node} was lost during this run: the figures cover the "
                        "points that reached InfluxDB before")
    if rd.start is None:
        rd.notes.append(f"the run did not start ({run.get('state')}): no metrics")
        return after
    rd.start = float(rd.start)
    rd.end = run_end(run, now)
    if run.get("ended_at") is None:
        rd.notes.append("the run has not ended: its window is cut at the report's time")
    pad = grace(job)
    lo_job = max(rd.start - pad, after + 1e-6)
    hi_job = rd.end + pad if next_start is None else min(rd.end + pad, float(next_start) - 1e-6)
    for mid, series in ns.metrics.items():
        lo, hi = (lo_job, hi_job) if _job_scoped(mid) else (rd.start, rd.end)
        cut = _slice(series, lo, hi)
        if cut[0].size:
            rd.points[mid] = cut
            rd.figures[mid] = metrics.run_figure(mid, cut[1])
    rd.marks = [m for m in ns.marks if lo_job * _NS <= m[0] <= hi_job * _NS]
    _run_figures(rd, {k: _slice(v, lo_job, hi_job) for k, v in ns.counts.items()})
    return hi_job


def _slice(series: TimeSeries, lo: float, hi: float) -> TimeSeries:
    """The points with ``lo <= t <= hi`` (seconds; infinite bounds allowed)."""
    lo_ns = int(lo * _NS) if np.isfinite(lo) else None
    hi_ns = int(hi * _NS) if np.isfinite(hi) else None
    return slice_ns(series, lo_ns, hi_ns)


def slice_ns(series: TimeSeries, lo: int | None, hi: int | None) -> TimeSeries:
    """The points with ``lo <= ts <= hi`` (ns; None for no bound); arrays are views."""
    ts, values = series
    a = int(np.searchsorted(ts, lo, "left")) if lo is not None else 0
    b = int(np.searchsorted(ts, hi, "right")) if hi is not None else ts.size
    return ts[a:b], values[a:b]


def _run_figures(rd: RunData, counts: dict[str, TimeSeries]) -> None:
    """``run.duration``, ``run.cpu_seconds`` and ``run.ipc`` when their inputs exist."""
    if rd.run.get("ended_at") is not None and rd.start is not None:
        duration = float(rd.run["ended_at"]) - rd.start
        rd.figures["run.duration"] = duration
        if "proc.cpu_pct" in rd.figures:
            rd.figures["run.cpu_seconds"] = rd.figures["proc.cpu_pct"] / 100.0 * duration
    cycles = counts.get("cycles") or counts.get("cpu-cycles")
    instructions = counts.get("instructions")
    if cycles is not None and instructions is not None and cycles[1].sum() > 0:
        rd.figures["run.ipc"] = float(instructions[1].sum() / cycles[1].sum())


def _job_notes(job: dict[str, Any], now: float) -> list[str]:
    notes = []
    if job.get("ended_at") is None:
        notes.append(f"job {job['id']} is {job.get('state')}: this report covers it so far")
    elif now - float(job["ended_at"]) < SETTLE_S:
        notes.append("the job ended moments ago: the last samples may still be on their way "
                     "to InfluxDB; ask again for a complete report")
    return notes


# --- the report object ---------------------------------------------------------------


def report_object(a: JobAnalysis) -> dict[str, Any]:
    """The JSON report (docs/report-schema.json); plain Python values only."""
    by_node = _group_by_node(a.runs)
    return {
        "kind": "ptap.report",
        "schema_version": SCHEMA_VERSION,
        "generated_at": a.generated_at,
        "job": job_header(a.job),
        "notes": list(a.notes),
        "environment": {n: a.environment.get(n, {"source": "unknown"}) for n in by_node},
        "metrics": {m: metric_info(d) for m, d in a.catalogue.items()},
        "overall": _aggregate(a.runs, a.catalogue),
        "nodes": {n: _aggregate(rs, a.catalogue) for n, rs in by_node.items()},
        "observer": {n: _observer(rs) for n, rs in by_node.items()},
        "runs": [_run_object(rd, a.catalogue) for rd in a.runs],
    }


def job_header(job: dict[str, Any]) -> dict[str, Any]:
    """The job's identity and spec as a report shows it."""
    spec = job.get("spec", {})
    return {
        "id": job["id"], "name": job.get("name", ""), "state": job.get("state"),
        "created_at": job.get("created_at"), "ended_at": job.get("ended_at"),
        "command": list(spec.get("command", [])), "targets": list(spec.get("targets", [])),
        "collect": list(spec.get("collect", [])), "interval": spec.get("interval"),
        "repeat": spec.get("repeat", 1), "tags": dict(spec.get("tags") or {}),
        "nodes": sorted({str(r["node"]) for r in job.get("runs", [])}),
        "series": str(spec.get("series") or ""),
    }


def metric_info(d: metrics.MetricDef) -> dict[str, Any]:
    return {"label": d.label, "unit": d.unit, "direction": d.direction.value,
            "source": f"{d.measurement}.{d.field}", "main": d.main}


def _summaries(runs: list[RunData], catalogue: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for mid in catalogue:
        parts = [rd.points[mid][1] for rd in runs if mid in rd.points]
        summary = summarize(np.concatenate(parts)) if parts else None
        if summary is not None:
            out[mid] = summary
    return out


def _aggregate(runs: list[RunData], catalogue: dict[str, Any]) -> dict[str, Any]:
    """Pooled points of these runs, and the spread of their per-run figures."""
    figures = {}
    for mid in catalogue:
        values = [rd.figures[mid] for rd in runs if mid in rd.figures]
        if values:
            figures[mid] = summarize(np.asarray(values))
    return {"runs": len(runs), "metrics": _summaries(runs, catalogue), "figures": figures}


def _observer(runs: list[RunData]) -> dict[str, Any]:
    """What the agent cost on this node while the job ran (``agent`` measurement)."""
    def pooled(mid: str) -> np.ndarray:
        parts = [rd.points[mid][1] for rd in runs if mid in rd.points]
        return np.concatenate(parts) if parts else np.empty(0)

    dropped, lost_app = pooled("agent.samples_dropped"), pooled("agent.app_dropped")
    return {
        "cpu_pct": summarize(pooled("agent.cpu_pct")),
        "rss": summarize(pooled("agent.rss")),
        "spool_depth_max": float(pooled("agent.spool_depth").max(initial=0.0)),
        "samples_dropped": float(dropped.max() - dropped.min()) if dropped.size else 0.0,
        # The kernel's drops on the runs' app UDP endpoints (a running total, as above).
        "app_dropped": float(lost_app.max() - lost_app.min()) if lost_app.size else 0.0,
    }


def _run_object(rd: RunData, catalogue: dict[str, Any]) -> dict[str, Any]:
    run = rd.run
    keys = ("id", "node", "iteration", "state", "exit_code", "started_at", "ended_at", "error")
    out: dict[str, Any] = {k: run.get(k) for k in keys}
    out["duration"] = rd.figures.get("run.duration")
    out["lost"] = run.get("state") == "lost"
    out["notes"] = list(rd.notes)
    out["metrics"] = _summaries([rd], catalogue)
    out["figures"] = dict(rd.figures)
    out["marks"] = [{"offset": _offset(ts, rd), "label": phase_label(f), "fields": f}
                    for ts, f in rd.marks]
    out["phases"] = _phases(rd, catalogue)
    out["timeline"] = timeline(rd, catalogue)
    return out


def _offset(ts_ns: int, rd: RunData) -> float:
    return round(ts_ns / _NS - (rd.start or 0.0), 3)


def phase_label(fields: dict[str, Any]) -> str:
    """A mark's name: its ``phase``, else its fields as ``k=v``."""
    if "phase" in fields:
        return str(fields["phase"])
    return " ".join(f"{k}={v}" for k, v in sorted(fields.items())) or "mark"


def _phases(rd: RunData, catalogue: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per mark: from it to the next mark (or the run's end), with the main
    metrics' summaries inside that span."""
    if not rd.marks or rd.start is None or rd.end is None:
        return []
    marks = rd.marks[:MAX_PHASES]
    ends = [m[0] for m in marks[1:]] + [int(rd.end * _NS)]
    out = []
    for i, ((ts, fields), end) in enumerate(zip(marks, ends, strict=True)):
        last = i == len(marks) - 1  # a point on a boundary belongs to the phase it starts
        stats = {}
        for mid in (m for m, d in catalogue.items() if d.main and m in rd.points):
            cut = slice_ns(rd.points[mid], ts, end if last else end - 1)
            summary = summarize(cut[1])
            if summary is not None:
                stats[mid] = summary
        out.append({"phase": phase_label(fields), "fields": fields, "start": _offset(ts, rd),
                    "end": _offset(end, rd), "duration": round((end - ts) / _NS, 3),
                    "metrics": stats})
    return out


def timeline(rd: RunData, catalogue: dict[str, Any]) -> dict[str, Any]:
    """The main metrics over the run, at most TIMELINE_POINTS points each (bucket means):
    ``{metric: {"t": [seconds since start], "v": [values]}}``."""
    out = {}
    main = [m for m, d in catalogue.items() if d.main and m in rd.points]
    for mid in main[:MAX_TIMELINE_METRICS]:
        ts, values = rd.points[mid]
        t = ts / _NS - (rd.start or 0.0)
        t, values = downsample(t, values, TIMELINE_POINTS)
        out[mid] = {"t": [round(x, 3) for x in t.tolist()],
                    "v": [float(f"{x:.6g}") for x in values.tolist()]}
    return out


def downsample(t: np.ndarray, v: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` points: consecutive buckets of equal count, averaged."""
    if t.size <= limit:
        return t, v
    edges = np.unique(np.linspace(0, t.size, limit + 1).astype(int)[:-1])
    counts = np.diff(np.append(edges, t.size))
    return np.add.reduceat(t, edges) / counts, np.add.reduceat(v, edges) / counts
