"""Baseline job against candidate job: per metric, the change of the median and a verdict.

Samples (``samples`` in each metric entry):

* ``iterations`` — one figure per run (the mean of the run's points, or a
  ``run.*`` figure), over every run of the job (all nodes, all
  iterations). Used when both jobs have at least two runs with the metric:
  what ``ptap run --repeat N`` is for;
* ``points`` — every raw point of every run, when a side has a single run.
  Consecutive points of a time series are correlated, so p-values over
  points are optimistic; the label says so in every output.

The statistics and the verdict rule are :mod:`manager.analysis.stats`'s.
Environment and job differences come first in the object, because a
kernel, governor or command that differs explains a change better than
any statistic.
"""

from __future__ import annotations

import shlex
from typing import Any

import numpy as np

from manager.analysis import metrics
from manager.analysis.report import (
    ENV_KEYS,
    SCHEMA_VERSION,
    JobAnalysis,
    RunData,
    job_header,
    metric_info,
    phase_label,
    timeline,
)
from manager.analysis.stats import (
    ALPHA,
    CONFIDENCE,
    MIN_SAMPLES,
    RESAMPLES,
    SEED,
    THRESHOLD,
    ChangeTest,
    Verdict,
    compare_samples,
)

#: Metrics of the test program itself; the overall verdict is drawn from these only.
#: Node-wide figures and the observer's cost are context: listed, not decisive.
OWN_PREFIXES = ("run.", "proc.", "app.")
JOB_KEYS = ("command", "interval", "collect", "repeat", "nodes", "tags")


def compare(base: JobAnalysis, cand: JobAnalysis, *, threshold: float = THRESHOLD,
            alpha: float = ALPHA, now: float) -> dict[str, Any]:
    """The comparison object of docs/report-schema.json (``kind`` ``ptap.compare``)."""
    catalogue = {**base.catalogue, **cand.catalogue}
    shared = [m for m in catalogue if m in base.catalogue and m in cand.catalogue]
    shared.sort(key=metrics.sort_key)
    entries = [_entry(m, catalogue[m], base, cand, threshold, alpha) for m in shared]
    counts = {v.value: sum(e["verdict"] == v.value for e in entries) for v in Verdict}
    return {
        "kind": "ptap.compare",
        "schema_version": SCHEMA_VERSION,
        "generated_at": now,
        "threshold": threshold,
        "alpha": alpha,
        "confidence": CONFIDENCE,
        "bootstrap": {"method": "percentile", "resamples": RESAMPLES, "seed": SEED},
        "base": job_header(base.job),
        "cand": job_header(cand.job),
        "environment_differences": environment_differences(base, cand),
        "verdict": overall_verdict(entries),
        "counts": counts,
        "notes": [f"baseline: {n}" for n in base.notes] + [f"candidate: {n}" for n in cand.notes],
        "metrics": entries,
        "overlay": {"base": overlay(base), "cand": overlay(cand)},
    }


def samples(metric_id: str, a: JobAnalysis, mode: str) -> np.ndarray:
    """The samples of one side: per-run figures (``iterations``) or pooled points."""
    if mode == "iterations":
        return np.asarray([rd.figures[metric_id] for rd in a.runs if metric_id in rd.figures])
    parts = [rd.points[metric_id][1] for rd in a.runs if metric_id in rd.points]
    return np.concatenate(parts) if parts else np.empty(0)


def sample_mode(metric_id: str, base: JobAnalysis, cand: JobAnalysis) -> str:
    """``iterations`` when both sides have ≥ 2 runs with the metric (or it is a
    one-value-per-run ``run.*`` figure), else ``points``."""
    if metric_id.startswith("run."):
        return "iterations"
    enough = all(len(samples(metric_id, a, "iterations")) >= MIN_SAMPLES for a in (base, cand))
    return "iterations" if enough else "points"


def _entry(mid: str, mdef: metrics.MetricDef, base: JobAnalysis, cand: JobAnalysis,
           threshold: float, alpha: float) -> dict[str, Any]:
    mode = sample_mode(mid, base, cand)
    test = compare_samples(samples(mid, base, mode), samples(mid, cand, mode), mdef.direction,
                           threshold=threshold, alpha=alpha)
    return {"metric": mid, **metric_info(mdef), "samples": mode, **_test_fields(test)}


def _test_fields(t: ChangeTest) -> dict[str, Any]:
    return {
        "n_base": t.n_base, "n_cand": t.n_cand,
        "base_median": t.base_median, "cand_median": t.cand_median,
        "diff": None if t.base_median is None or t.cand_median is None
        else t.cand_median - t.base_median,
        "change": _json_number(t.change),
        "ci": None if t.ci is None else [_json_number(t.ci[0]), _json_number(t.ci[1])],
        "p_value": t.p_value, "verdict": t.verdict.value, "reason": t.reason,
    }


def _json_number(x: float | None) -> float | str | None:
    """JSON has no infinity: an unbounded change or CI end is the string ``"inf"``
    or ``"-inf"`` (a baseline median of 0); ``None`` stays ``null`` (not computed)."""
    if x is None or np.isfinite(x):
        return x
    return "inf" if x > 0 else "-inf"


def overall_verdict(entries: list[dict[str, Any]]) -> str:
    """From the program's own metrics (OWN_PREFIXES and perf of the tree): any
    regression → regression; else any improvement → improvement; else
    unchanged when all are unchanged; else inconclusive."""
    own = [e["verdict"] for e in entries if e["metric"].startswith(OWN_PREFIXES)
           or (e["metric"].startswith("perf.") and not e["metric"].startswith("perf.system."))]
    for verdict in (Verdict.REGRESSION, Verdict.IMPROVEMENT):
        if verdict.value in own:
            return verdict.value
    return Verdict.UNCHANGED.value if own and set(own) == {"unchanged"} else \
        Verdict.INCONCLUSIVE.value


def environment_differences(base: JobAnalysis, cand: JobAnalysis) -> list[dict[str, str]]:
    """Job settings and node facts that differ; each value set shown as a string."""
    out = []
    hb, hc = job_header(base.job), job_header(cand.job)
    for key in JOB_KEYS:
        if hb[key] != hc[key]:
            out.append({"scope": "job", "key": key, "base": _text(hb[key]),
                        "cand": _text(hc[key])})
    for key in ENV_KEYS:
        vb, vc = _env_values(base, key), _env_values(cand, key)
        if vb != vc:
            out.append({"scope": "node", "key": key, "base": vb, "cand": vc})
    return out


def _env_values(a: JobAnalysis, key: str) -> str:
    values = sorted({_text(env.get(key)) for env in a.environment.values()
                     if env.get("source") != "unknown"})
    return ", ".join(values) if values else "unknown"


def _text(value: Any) -> str:
    if isinstance(value, list):  # a command: shell-quoted, newlines visible
        return shlex.join(str(v) for v in value).replace("\n", "\\n")
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "-" if value is None else str(value)


# --- overlay ----------------------------------------------------------------------------


def overlay(a: JobAnalysis) -> dict[str, Any] | None:
    """The run charted for this side: the first (by node, iteration) that has any
    main metric, with its timeline and marks (seconds since its start)."""
    ordered = sorted(a.runs, key=lambda rd: (rd.node, rd.run.get("iteration", 0)))
    rd: RunData | None = next(
        (r for r in ordered if any(a.catalogue[m].main for m in r.points)), None)
    if rd is None or rd.start is None:
        return None
    marks = [{"offset": round(ts / 1e9 - rd.start, 3), "label": phase_label(f)}
             for ts, f in rd.marks]
    return {"run": rd.run["id"], "node": rd.node, "marks": marks,
            "series": timeline(rd, a.catalogue)}


def mark_anchors(base_marks: list[dict[str, Any]], cand_marks: list[dict[str, Any]]
                 ) -> list[tuple[float, float]]:
    """``(cand_offset, base_offset)`` pairs that align the candidate's time on the
    baseline's: run start on run start, then the k-th mark of each label on the
    k-th mark of the same label; pairs that would run time backwards are skipped."""
    def occurrences(marks: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
        seen: dict[str, int] = {}
        out = {}
        for m in marks:
            k = seen[m["label"]] = seen.get(m["label"], 0) + 1
            out[(m["label"], k)] = float(m["offset"])
        return out

    ob, oc = occurrences(base_marks), occurrences(cand_marks)
    pairs = sorted((oc[key], ob[key]) for key in ob.keys() & oc.keys())
    anchors = [(0.0, 0.0)]
    for c, b in pairs:
        if c > anchors[-1][0] and b > anchors[-1][1]:
            anchors.append((c, b))
    return anchors


def warp(t: np.ndarray, anchors: list[tuple[float, float]]) -> np.ndarray:
    """Map candidate times onto the baseline's clock through ``anchors``: linear
    between anchors, shifted by the nearest anchor's offset outside them."""
    c = np.array([x for x, _ in anchors])
    b = np.array([y for _, y in anchors])
    out = np.interp(t, c, b)
    out = np.where(t < c[0], t + (b[0] - c[0]), out)
    return np.where(t > c[-1], t + (b[-1] - c[-1]), out)
