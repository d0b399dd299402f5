"""Report and comparison objects → text, JSON, CSV or HTML (one self-contained file).

Every function here is a pure function of the objects that
:func:`manager.analysis.report.report_object` and
:func:`manager.analysis.compare.compare` return, so the CLI, the dashboard and
the tests all show the same thing. HTML is :mod:`manager.analysis.charts`, with
the tables and headline of :mod:`bus.views` that the dashboard shows too.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bus.views.text import number, percent, when
from manager.analysis.job_text import job_line
from manager.analysis.stats import ALPHA, smallest_p

FORMATS = ("text", "json", "csv", "html")
#: Flag lines shown at the top of a comparison; the rest are in the per-node part.
MAX_FLAG_LINES = 10
MAX_SUSPECT_LINES = 10
SUMMARY_COLS = ("count", "mean", "min", "p50", "p95", "p99", "max", "stddev")
__all__ = ["FORMATS", "number", "percent", "plain", "render", "table", "when"]


def plain(obj: Any) -> Any:
    """JSON- and msgpack-safe values: numpy scalars to Python, NaN and ±inf to None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def render(obj: dict[str, Any], fmt: str, series: dict[str, Any] | None = None) -> str:
    """``obj`` (a report or a comparison) in ``fmt`` (one of :data:`FORMATS`); an HTML
    report's headline says what ``series`` (``name``, ``moved_text``) says of its series."""
    is_compare = obj.get("kind") == "ptap.compare"
    if fmt == "json":
        return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)
    if fmt == "csv":
        return compare_csv(obj) if is_compare else report_csv(obj)
    if fmt == "text":
        return compare_text(obj) if is_compare else report_text(obj)
    if fmt == "html":
        from manager.analysis import charts  # Bokeh is imported only when HTML is asked for

        return charts.compare_html(obj) if is_compare else charts.report_html(obj, series)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


# --- numbers (number, percent and when are bus.views.text's, shared with the dashboard) --


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces (``None`` shows as ``-``)."""
    text_rows = [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [list(headers), *text_rows])


# --- report --------------------------------------------------------------------------------


def report_text(r: dict[str, Any]) -> str:
    """The terminal form of a report: environment, runs, metrics, phases, observer."""
    parts = [f"Report of {job_line(r['job'])}"]
    parts += [f"note: {n}" for n in r["notes"]]
    parts += ["", "Environment", _environment_table(r["environment"])]
    parts += ["", "Runs", _runs_table(r["runs"])]
    parts += [f"  {rn['id']}: {note}" for rn in r["runs"] for note in rn["notes"]]
    parts += ["", "Metrics over all runs (points in each run's window; PER-RUN = median of "
                  "the per-run means)", _metrics_table(r["overall"], r["metrics"])]
    if len(r["nodes"]) > 1:
        for node, agg in r["nodes"].items():
            parts += ["", f"Node {node}", _metrics_table(agg, r["metrics"])]
    parts += _phases_text(r)
    parts += ["", "Observer cost (the agent itself)", _observer_table(r["observer"])]
    return "\n".join(parts) + "\n"


def _environment_table(env: dict[str, dict[str, Any]]) -> str:
    rows = [[n, e.get("kernel"), e.get("cpu_model"), e.get("governor"), e.get("cpus"),
             number(e.get("memory_bytes"), "B") if e.get("memory_bytes") else None,
             e.get("agent_version"), _perf_caps(e), e.get("source")] for n, e in env.items()]
    return table(["NODE", "KERNEL", "CPU MODEL", "GOVERNOR", "CPUS", "MEMORY", "AGENT", "PERF",
                  "FACTS"], rows)


def _perf_caps(e: dict[str, Any]) -> str:
    if e.get("perf_available") is None:
        return "-"
    if not e.get("perf_available"):
        return "no perf"
    pmu = "PMU" if e.get("pmu_hardware") else "software events only"
    return f"{pmu}, paranoid {e.get('perf_paranoid')}"


def _runs_table(runs: list[dict[str, Any]]) -> str:
    rows = [[r["id"], r["node"], r["iteration"], r["state"] + (" (LOST)" if r["lost"] else ""),
             r["exit_code"], number(r["duration"], "s") if r["duration"] is not None else None,
             when(r["started_at"])] for r in runs]
    return table(["RUN", "NODE", "ITER", "STATE", "EXIT", "DURATION", "STARTED"], rows)


def _metrics_table(agg: dict[str, Any], info: dict[str, Any]) -> str:
    rows = []
    for mid, meta in info.items():
        s, f = agg["metrics"].get(mid), agg["figures"].get(mid)
        if s is None and f is None:
            continue
        unit = meta["unit"]
        cells = [number(s[k], unit) if k != "count" else s[k] for k in SUMMARY_COLS] \
            if s else ["-"] * len(SUMMARY_COLS)
        rows.append([mid, *cells, number(f["p50"], unit) if f else "-"])
    return table(["METRIC", "N", "MEAN", "MIN", "P50", "P95", "P99", "MAX", "STDDEV", "PER-RUN"],
                 rows)


def _phases_text(r: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for run in r["runs"]:
        if not run["phases"]:
            continue
        rows = []
        for ph in run["phases"]:
            means = ", ".join(f"{m} {number(s['mean'], r['metrics'][m]['unit'])}"
                              for m, s in ph["metrics"].items())
            rows.append([ph["phase"], f"{ph['start']:.3f}", f"{ph['duration']:.3f}", means])
        out += ["", f"Phases of run {run['id']} (seconds since its start; means)",
                table(["PHASE", "START", "DURATION", "MAIN METRICS"], rows)]
    return out


def _observer_table(obs: dict[str, dict[str, Any]]) -> str:
    rows = [[n, number(o["cpu_pct"]["mean"], "%") if o["cpu_pct"] else None,
             number(o["cpu_pct"]["max"], "%") if o["cpu_pct"] else None,
             number(o["rss"]["max"], "B") if o["rss"] else None,
             o["spool_depth_max"], o["samples_dropped"], o.get("app_dropped", 0.0)]
            for n, o in obs.items()]
    return table(["NODE", "AGENT CPU MEAN", "CPU MAX", "RSS MAX", "SPOOL MAX", "DROPPED",
                  "APP DROPPED"], rows)


def report_csv(r: dict[str, Any]) -> str:
    """One row per (scope, run or node, metric): ``scope`` is ``run``, ``node`` or
    ``overall`` (summaries of points) or ``node-runs``/``overall-runs``
    (summaries of the per-run figures); ``figure`` is the run's own figure."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["scope", "run", "node", "iteration", "metric", "unit", "direction",
                *SUMMARY_COLS, "figure"])
    info = r["metrics"]

    def rows(scope: str, run: str, node: str, it: Any, stats: dict[str, Any],
             figures: dict[str, Any] | None = None) -> None:
        for mid in sorted(set(stats) | set(figures or {}), key=list(info).index):
            s = stats.get(mid) or {}
            w.writerow([scope, run, node, it, mid, info[mid]["unit"], info[mid]["direction"],
                        *(s.get(k) for k in SUMMARY_COLS), (figures or {}).get(mid)])

    for run in r["runs"]:
        rows("run", run["id"], run["node"], run["iteration"], run["metrics"], run["figures"])
    for node, agg in r["nodes"].items():
        rows("node", "", node, "", agg["metrics"])
        rows("node-runs", "", node, "", agg["figures"])
    rows("overall", "", "", "", r["overall"]["metrics"])
    rows("overall-runs", "", "", "", r["overall"]["figures"])
    return out.getvalue()


# --- comparison -----------------------------------------------------------------------


def compare_text(c: dict[str, Any]) -> str:
    """The terminal form of a comparison: verdict, environment differences, metrics."""
    parts = [f"Compare baseline {c['base']['id']} → candidate {c['cand']['id']}: "
             f"{c['verdict'].upper()} (threshold {c['threshold']:.0%}, alpha {c['alpha']:g}, "
             f"{c['confidence']:.0%} bootstrap CI)",
             "  " + ", ".join(f"{n} {v}" for v, n in c["counts"].items())]
    parts += ["  !! " + flag_line(f) for f in hidden_flags(c)]
    parts += [f"note: {n}" for n in c["notes"]]
    parts += ["", "Environment and job differences"]
    diffs = c["environment_differences"]
    parts.append(table(["SCOPE", "KEY", "BASELINE", "CANDIDATE"],
                       [[d["scope"], d["key"], d["base"], d["cand"]] for d in diffs])
                 if diffs else "  none")
    rows = []
    for e in c["metrics"]:
        ci = "-" if e["ci"] is None else \
            f"[{percent(e['ci'][0])}, {percent(e['ci'][1])}]"
        p = "-" if e["p_value"] is None else f"{e['p_value']:.2g}"
        rows.append([e["metric"], e["direction"], e["samples"], f"{e['n_base']}/{e['n_cand']}",
                     number(e["base_median"], e["unit"]), number(e["cand_median"], e["unit"]),
                     percent(e["change"]), ci, p, e["verdict"].upper()])
    parts += ["", "Metrics (SAMPLES: iterations = one mean per run; points = raw points of "
                  "every run, when too few runs to reach significance, p-values optimistic)",
              table(["METRIC", "BETTER", "SAMPLES", "N", "BASE MEDIAN", "CAND MEDIAN", "CHANGE",
                     "95% CI", "P", "VERDICT"], rows)]
    if c.get("nodes"):
        parts += ["", *nodes_text(c["nodes"], c["threshold"], c["alpha"])]
    return "\n".join(parts) + "\n"


# --- comparison per node --------------------------------------------------------------


def hidden_flags(c: dict[str, Any]) -> list[dict[str, Any]]:
    """The node metrics that regressed or improved while the pooled verdict of that
    metric says otherwise (the first few): shown right under the verdict."""
    flags = (c.get("nodes") or {}).get("flags") or []
    return [f for f in flags if f["hidden"]][:MAX_FLAG_LINES]


def flag_line(f: dict[str, Any]) -> str:
    """``node n3: app.latency worse by 30.0% (p=1.2e-05, points) — REGRESSION on this
    node; pooled: unchanged`` (``slower``/``faster`` for ``run.duration``)."""
    worse, better = ("slower", "faster") if f["metric"] == "run.duration" else ("worse", "better")
    word = worse if f["verdict"] == "regression" else better
    size = percent(f["change"]).lstrip("+-")
    p = "-" if f["p_value"] is None else f"{f['p_value']:.2g}"
    return (f"node {f['node']}: {f['metric']} {word} by {size} (p={p}, {f['samples']}) — "
            f"{f['verdict'].upper()} on this node; pooled: {f['pooled_verdict']}")


def node_samples(d: dict[str, Any]) -> str:
    """What a node's samples were: its points or its iterations (``run.*`` figures
    are always per run, so they do not count here unless they are all there is)."""
    modes = {e["samples"] for e in d["metrics"] if not e["metric"].startswith("run.")}
    return ", ".join(sorted(modes)) or "iterations"


def node_changes(d: dict[str, Any], verdict: str) -> str:
    """``proc.cpu_pct +30.0%, app.x -8.0%`` for this node's metrics with ``verdict``."""
    return ", ".join(f"{e['metric']} {percent(e['change'])}" for e in d["metrics"]
                     if e["verdict"] == verdict) or "-"


def node_inconclusive(d: dict[str, Any], shown: int = 3) -> str:
    """``run.duration, run.cpu_seconds``: this node's inconclusive metrics (the first few)."""
    names = [e["metric"] for e in d["metrics"] if e["verdict"] == "inconclusive"]
    more = f" +{len(names) - shown}" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more or "-"


def nodes_summary(n: dict[str, Any], threshold: float, alpha: float = ALPHA) -> list[str]:
    """The per-node part's sentences: how many nodes, which were left out, and why."""
    counts = ", ".join(f"{k} {v}" for k, v in n["counts"].items())
    out = [f"{n['shared']} node(s) in both jobs, {len(n['detailed'])} detailed: {counts}"]
    for side, label in (("base", "baseline"), ("cand", "candidate")):
        names, total = n[f"only_{side}"], n[f"only_{side}_count"]
        if total:
            more = f" and {total - len(names)} more" if total > len(names) else ""
            out.append(f"only in the {label} (not compared): {', '.join(names)}{more}")
    if any(m.startswith("run.") for m in n["metrics"]) and any(
            smallest_p(d["runs_base"], d["runs_cand"]) >= alpha for d in n["detailed"]):
        out.append("run.* figures are one per run: on a node with too few runs to reach "
                   f"p < {alpha:g} (3 against 3 cannot, 4 against 4 can) they cannot show a "
                   "regression or an improvement (ptap run --repeat N gives each node N samples)")
    rest = n["summarised"]
    if rest["count"]:
        out.append(f"{rest['count']} more node(s) not detailed (at most {n['max_detailed']} "
                   f"are): {rest['quiet']} show no possible regression or improvement (no "
                   f"metric with p < {alpha:g} and a change of ±{threshold:.0%} or more; "
                   "screened by medians and Mann-Whitney p, without the bootstrap); "
                   f"{rest['suspects_count']} possible change(s):")
        out += [f"  node {s['node']}: {s['metric']} {percent(s['change'])} (p={s['p_value']:.2g}, "
                f"{s['samples']}) — possible {s['possible']}"
                for s in rest["suspects"][:MAX_SUSPECT_LINES]]
    hidden = n.get("hidden_count", sum(f["hidden"] for f in n["flags"]))  # the total
    if hidden > MAX_FLAG_LINES:
        out.append(f"{hidden} node metric(s) regressed or improved where the pooled verdict "
                   f"says otherwise; the first {MAX_FLAG_LINES} are under the verdict")
    return out


def nodes_text(n: dict[str, Any], threshold: float, alpha: float = ALPHA) -> list[str]:
    """The per-node part of a comparison's text: sentences, then one row per node."""
    rows = [[d["node"], f"{d['runs_base']}/{d['runs_cand']}", node_samples(d),
             d["verdict"].upper(), node_changes(d, "regression"), node_changes(d, "improvement"),
             node_inconclusive(d),
             "; ".join(f"{x['key']} {x['base']} → {x['cand']}"
                       for x in d["environment_differences"]) or "-"]
            for d in n["detailed"]]
    return ["Per node (decisive metrics; each node's own runs as samples: iterations when "
            "there are enough runs to reach significance, 4 against 4 or more, else its "
            "points, p-values optimistic)",
            *nodes_summary(n, threshold, alpha),
            table(["NODE", "RUNS", "SAMPLES", "VERDICT", "REGRESSED", "IMPROVED",
                   "INCONCLUSIVE", "ENVIRONMENT"], rows) if rows else "  no node detailed"]


def compare_csv(c: dict[str, Any]) -> str:
    """Environment differences first (``metric`` = ``environment.<scope>.<key>``, the
    two values in the median columns), then one row per metric."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["metric", "unit", "direction", "samples", "n_base", "n_cand", "base_median",
                "cand_median", "diff", "change", "ci_low", "ci_high", "p_value", "verdict",
                "reason"])
    for d in c["environment_differences"]:
        w.writerow([f"environment.{d['scope']}.{d['key']}", "", "", "", "", "", d["base"],
                    d["cand"], "", "", "", "", "", "different", ""])
    for e in c["metrics"]:
        lo, hi = e["ci"] if e["ci"] is not None else (None, None)
        w.writerow([e["metric"], e["unit"], e["direction"], e["samples"], e["n_base"],
                    e["n_cand"], e["base_median"], e["cand_median"], e["diff"], e["change"], lo, hi,
                    e["p_value"], e["verdict"], e["reason"]])
    return out.getvalue()
