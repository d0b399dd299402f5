"""The history object of a series (shape in ``manager/history/__init__.py``).

Pure: summaries in, plain JSON values out. Each change point names the job
where the step starts and opens with the environment differences between
the last job before it and that job: a new kernel, governor, command or tag
explains a step better than any statistic (as in a comparison,
``manager/analysis/compare.py``). The version and commit tags differ from
job to job by design, so they are left out.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

from manager.analysis import metrics
from manager.analysis.compare import JOB_KEYS
from manager.analysis.report import ENV_KEYS
from manager.analysis.stats import Direction
from manager.history import SCHEMA_VERSION
from manager.history import series as series_mod
from manager.history.changepoints import ChangePoint, Detector
from manager.history.summaries import lookup


def history_object(name: str, summaries: list[dict[str, Any]], asked: list[str], *,
                   last: int = 0, detector: Detector | None = None, now: float,
                   notes: list[str] | None = None) -> dict[str, Any]:
    """The history of series ``name`` from its jobs' ``summaries`` (any order)."""
    detector = detector or Detector()
    jobs, order = series_mod.ordered(summaries)
    notes = list(notes or [])
    skipped = len(summaries) - len(jobs)
    if skipped:
        notes.append(f"{skipped} job(s) of the series did not succeed and make no point")
    if last > 0:
        jobs = jobs[-last:]
    declared = metrics.declared_directions((jobs[-1]["job"].get("tags") or {}) if jobs else {})
    entries = []
    for mid in series_mod.wanted_metrics(jobs, asked):
        try:
            mdef = metrics.with_declared(lookup(mid), declared)
        except KeyError:
            notes.append(f"unknown metric {mid[:80]!r}: see docs/analysis.md for metric ids")
            continue
        entries.append(_metric_entry(mdef, jobs, detector))
    for entry in entries:
        if not entry["points"]:
            notes.append(f"no job of the series has {entry['metric']}")
    return {
        "kind": "ptap.history", "schema_version": SCHEMA_VERSION, "generated_at": now,
        "series": name, "order": order, "detector": detector.describe(),
        "jobs": [_job_entry(s["job"]) for s in jobs], "metrics": entries, "notes": notes,
    }


def _job_entry(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "series", "state", "created_at", "ended_at", "tags", "nodes")
    return {**{k: job.get(k) for k in keys}, "label": series_mod.label(job)}


def _metric_entry(mdef: metrics.MetricDef, jobs: list[dict[str, Any]],
                  detector: Detector) -> dict[str, Any]:
    pts = series_mod.points(jobs, mdef.id)
    change_points = [_change_entry(cp, pts, jobs, mdef.direction)
                     for cp in detector.find(pts.median)]
    return {
        "metric": mdef.id, "label": mdef.label, "unit": mdef.unit,
        "direction": mdef.direction.value,
        # Python lists first: reading numpy arrays element by element is slow.
        "points": [{"index": i, "job": jobs[i]["job"]["id"], "median": _num(m),
                    "low": _num(lo), "high": _num(hi), "runs": r}
                   for i, m, lo, hi, r in zip(pts.index.tolist(), pts.median.tolist(),
                                              pts.low.tolist(), pts.high.tolist(),
                                              pts.runs.tolist(), strict=True)],
        "change_points": change_points,
    }


def _change_entry(cp: ChangePoint, pts: series_mod.SeriesPoints, jobs: list[dict[str, Any]],
                  direction: Direction) -> dict[str, Any]:
    at, before = int(pts.index[cp.index]), int(pts.index[cp.index - 1])
    worse = cp.step_abs > 0 if direction is Direction.LOWER else cp.step_abs < 0
    return {
        "environment_differences": environment_differences(jobs[before], jobs[at]),
        "index": at, "job": jobs[at]["job"]["id"], "label": series_mod.label(jobs[at]["job"]),
        "before": _num(cp.before), "after": _num(cp.after), "step": _num(cp.step),
        "step_abs": _num(cp.step_abs), "ci": [_num(cp.ci[0]), _num(cp.ci[1])],
        "p_value": _num(cp.p_value), "direction": "regression" if worse else "improvement",
    }


def environment_differences(base: dict[str, Any], cand: dict[str, Any]) -> list[dict[str, str]]:
    """Job settings, tags (less version and commit) and node facts that differ
    between two summaries; each side's values as one string."""
    out = []
    hb, hc = base["job"], cand["job"]
    for key in (k for k in JOB_KEYS if k != "tags"):
        if hb.get(key) != hc.get(key):
            out.append({"scope": "job", "key": key, "base": _text(hb.get(key)),
                        "cand": _text(hc.get(key))})
    tb, tc = hb.get("tags") or {}, hc.get("tags") or {}
    for tag in sorted((tb.keys() | tc.keys()) - set(series_mod.ORDER_TAGS)):
        if tb.get(tag) != tc.get(tag):
            out.append({"scope": "job", "key": f"tag {tag}", "base": _text(tb.get(tag)),
                        "cand": _text(tc.get(tag))})
    for key in ENV_KEYS:
        vb, vc = _env_values(base, key), _env_values(cand, key)
        if vb != vc:
            out.append({"scope": "node", "key": key, "base": vb, "cand": vc})
    return out


def _env_values(summary: dict[str, Any], key: str) -> str:
    values = sorted({_text(env.get(key)) for env in (summary.get("environment") or {}).values()
                     if env.get("source") != "unknown"})
    return ", ".join(values) if values else "unknown"


def _text(value: Any) -> str:
    if isinstance(value, list):
        return shlex.join(str(v) for v in value).replace("\n", "\\n")
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "-" if value is None else str(value)


def _num(value: float) -> float | None:
    """A JSON-safe float: None for NaN and infinities."""
    return value if math.isfinite(value) else None
