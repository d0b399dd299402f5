"""Baseline job against candidate job: per metric, the change of the median and a verdict.

Each metric is tested over every run of each job (all nodes, all
iterations), with the samples, statistics and verdict rule of
:mod:`manager.analysis.change` and :mod:`manager.analysis.stats`. The same
test per node, for the decisive metrics, is :mod:`manager.analysis.nodes`
(``nodes`` in the object): a change on one node of ten barely moves the
pooled median. Environment and job differences come first in the object,
because a kernel, governor or command that differs explains a change better
than any statistic.
"""

from __future__ import annotations

import shlex
import threading
from typing import Any

import numpy as np

from manager.analysis import metrics, nodes
from manager.analysis.change import OWN_PREFIXES, decisive, overall_verdict, test
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
    RESAMPLES,
    SEED,
    THRESHOLD,
    Verdict,
)

__all__ = ["OWN_PREFIXES", "compare", "decisive", "environment_differences", "mark_anchors",
           "overall_verdict", "overlay", "warp"]
JOB_KEYS = ("command", "interval", "collect", "repeat", "nodes", "tags")


def compare(base: JobAnalysis, cand: JobAnalysis, *, threshold: float = THRESHOLD,
            alpha: float = ALPHA, now: float, max_nodes: int = nodes.MAX_NODES,
            map_nodes: nodes.NodeMap = map, stop: threading.Event | None = None
            ) -> dict[str, Any]:
    """The comparison object of docs/report-schema.json (``kind`` ``ptap.compare``);
    ``max_nodes`` bounds the nodes detailed in its per-node breakdown, which runs
    its nodes through ``map_nodes`` (:func:`manager.analysis.nodes.breakdown`).
    Once ``stop`` is set, the next metric raises :class:`manager.analysis.nodes.Stopped`."""
    catalogue = {**base.catalogue, **cand.catalogue}
    shared = [m for m in catalogue if m in base.catalogue and m in cand.catalogue]
    shared.sort(key=metrics.sort_key)
    entries = []
    for m in shared:
        nodes.check(stop)
        entries.append(_entry(m, catalogue[m], base, cand, threshold, alpha))
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
        "nodes": nodes.breakdown(base, cand, entries, threshold=threshold, alpha=alpha,
                                 max_nodes=max_nodes, map_nodes=map_nodes, stop=stop),
        "overlay": {"base": overlay(base), "cand": overlay(cand)},
    }


def _entry(mid: str, mdef: metrics.MetricDef, base: JobAnalysis, cand: JobAnalysis,
           threshold: float, alpha: float) -> dict[str, Any]:
    return {"metric": mid, **metric_info(mdef),
            **test(mid, mdef.direction, base.runs, cand.runs, threshold=threshold, alpha=alpha)}


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
    mapped: np.ndarray = np.where(t > c[-1], t + (b[-1] - c[-1]), out)
    return mapped
