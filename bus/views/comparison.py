"""A comparison (``ptap.compare``) as HTML: flags under the verdict, metric table, per node.

One implementation for the HTML file (``ptap compare --format html``) and
the dashboard's ``/compare`` page. Lists the manager caps (flags, node names,
suspects: at most 200 each) are counted from its totals (``flags_count``,
``only_base_count``, ``suspects_count``, ``hidden_count``), never from the
lists' length.
"""

from __future__ import annotations

import math
from typing import Any

from bus.views.text import (
    Raw,
    as_dict,
    as_float,
    as_list,
    cell,
    change_cell,
    esc,
    html_table,
    number,
    percent,
)

#: Flags under the verdict: node metrics that regressed or improved where the pooled
#: verdict of that metric says otherwise (``hidden``); all are in the per-node part.
MAX_FLAGS = 10
ALPHA = 0.05
COLUMNS = ("metric", "label", "unit", "samples", "n", "base median", "cand median", "change",
           "95% CI", "p", "verdict", "reason")


def _ci(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2:
        return f"{change_cell(value[0])} … {change_cell(value[1])}"
    return cell(value)


def _p(value: Any) -> str:
    p = as_float(value)
    return "—" if p is None else f"{p:.2g}"


def _row(e: dict[str, Any], unit: str, with_label: bool) -> list[Any]:
    row: list[Any] = [Raw(f"<code>{esc(e.get('metric'))}</code>")]
    if with_label:
        row += [e.get("label"), unit or None]
    row += [e.get("samples"), f"{e.get('n_base', '?')}/{e.get('n_cand', '?')}",
            number(as_float(e.get("base_median")), unit),
            number(as_float(e.get("cand_median")), unit), Raw(change_cell(e.get("change"))),
            Raw(_ci(e.get("ci"))), _p(e.get("p_value")), e.get("verdict"), e.get("reason")]
    return row


def metrics_table(entries: list[Any], units: dict[str, str] | None = None) -> str:
    """One row per metric; a node's entries (``units`` given: the pooled entries'
    units) have no label or unit column."""
    rows, classes = [], []
    for e in (as_dict(x) for x in entries):
        unit = str(e.get("unit") or "") if units is None else units.get(str(e.get("metric")), "")
        rows.append(_row(e, unit, units is None))
        classes.append(str(e.get("verdict") or ""))
    headers = COLUMNS if units is None else tuple(c for c in COLUMNS if c not in ("label", "unit"))
    return html_table(headers, rows, css="grid compare", row_classes=classes)


def flag_html(f: dict[str, Any]) -> str:
    """``⚠ node n3: app.latency worse by 30.0% (p=1e-09, points) — REGRESSION on this
    node; pooled: unchanged`` (``slower``/``faster`` for ``run.duration``)."""
    slow = f.get("metric") == "run.duration"
    word = ("slower" if slow else "worse") if f.get("verdict") == "regression" else \
        ("faster" if slow else "better")
    size = percent(f.get("change") if isinstance(f.get("change"), int | float | str) else None)
    verdict = str(f.get("verdict") or "")
    line = (f"node {f.get('node')}: {f.get('metric')} {word} by {size.lstrip('+-')} "
            f"(p={_p(f.get('p_value'))}, {f.get('samples')}) — ")
    return (f"<p class='node-flag {esc(verdict)}'>⚠ {esc(line)}{cell(verdict.upper())} on "
            f"this node; pooled: {cell(f.get('pooled_verdict'))}</p>")


def total(n: dict[str, Any], key: str, listed: int) -> int:
    """A total the manager counted; what was listed when the total is missing or odd."""
    value = n.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= listed:
        return value
    return listed


def flags_html(c: dict[str, Any]) -> str:
    """The first :data:`MAX_FLAGS` hidden flags, right under the verdict."""
    n = as_dict(c.get("nodes"))
    hidden = [as_dict(f) for f in as_list(n.get("flags")) if as_dict(f).get("hidden")]
    if not hidden:
        return ""
    more = total(n, "hidden_count", len(hidden)) - min(len(hidden), MAX_FLAGS)
    tail = f"<p class='muted'>{more} more under Per node</p>" if more > 0 else ""
    return ("<div class='notice node-flags'>" + "".join(flag_html(f) for f in hidden[:MAX_FLAGS])
            + tail + "</div>")


def _changes(metrics: list[dict[str, Any]], verdict: str) -> Raw:
    return Raw(", ".join(f"<code>{esc(e.get('metric'))}</code> {change_cell(e.get('change'))}"
                         for e in metrics if e.get("verdict") == verdict) or "—")


def node_samples(metrics: list[dict[str, Any]]) -> str:
    """Points or iterations (``run.*`` figures are one per run: they count only alone)."""
    modes = {str(e.get("samples")) for e in metrics if not str(e.get("metric")).startswith("run.")}
    return ", ".join(sorted(modes)) or "iterations"


def _inconclusive(metrics: list[dict[str, Any]], shown: int = 3) -> str:
    names = [str(e.get("metric")) for e in metrics if e.get("verdict") == "inconclusive"]
    more = f" +{len(names) - shown}" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more or "—"


def _too_few_runs(d: dict[str, Any], alpha: float) -> bool:
    """Whether this node's run counts cannot reach ``p < alpha`` with one sample per run
    (exact Mann-Whitney: the smallest p is ``2 / C(a + b, a)``)."""
    a, b = d.get("runs_base"), d.get("runs_cand")
    if not isinstance(a, int) or not isinstance(b, int) or a < 1 or b < 1:
        return True
    return 2 / math.comb(a + b, a) >= alpha


def _sentences(n: dict[str, Any], detailed: list[dict[str, Any]], alpha: float,
               threshold: float) -> list[str]:
    counts = ", ".join(f"{k} {v}" for k, v in as_dict(n.get("counts")).items())
    out = [f"Per node ({n.get('shared', '?')} in both jobs, {len(detailed)} detailed)"
           + (f": {counts}" if counts else "")]
    for side, label in (("only_base", "baseline"), ("only_cand", "candidate")):
        names = [str(x) for x in as_list(n.get(side))]
        if names:
            more = total(n, f"{side}_count", len(names)) - len(names)
            tail = f" and {more} more" if more > 0 else ""
            out.append(f"only in the {label} (not compared): {', '.join(names)}{tail}")
    if any(str(m).startswith("run.") for m in as_list(n.get("metrics"))) \
            and any(_too_few_runs(d, alpha) for d in detailed):
        out.append("run.* figures are one per run: on a node with too few runs to reach "
                   f"p < {alpha:g} (3 against 3 cannot, 4 against 4 can) they cannot show a "
                   "regression or an improvement (ptap run --repeat N gives each node N samples)")
    rest = as_dict(n.get("summarised"))
    if rest.get("count"):
        suspects = as_list(rest.get("suspects"))
        found = total(rest, "suspects_count", len(suspects))
        listed = f", the first {len(suspects)} listed" if found > len(suspects) else ""
        out.append(f"{rest.get('count')} more node(s) not detailed: {rest.get('quiet')} show no "
                   "possible regression or improvement (screened without the bootstrap: no "
                   f"metric with p < {alpha:g} and a change of ±{threshold:.0%} or more); "
                   f"{found} possible change(s){listed}")
    return out


def nodes_html(c: dict[str, Any], level: int = 2) -> str:
    """The per-node part: sentences, a row per detailed node, each node's metrics folded."""
    n = as_dict(c.get("nodes"))
    detailed = [as_dict(d) for d in as_list(n.get("detailed"))]
    units = {str(as_dict(e).get("metric")): str(as_dict(e).get("unit") or "")
             for e in as_list(c.get("metrics"))}
    alpha = as_float(c.get("alpha")) or ALPHA
    parts = [f"<h{level} id='nodes'>Per node</h{level}>"]
    parts += [f"<p>{esc(line)}</p>" for line in
              _sentences(n, detailed, alpha, as_float(c.get("threshold")) or 0.05)]
    rows, classes = [], []
    for d in detailed:
        metrics = [as_dict(e) for e in as_list(d.get("metrics"))]
        env = "; ".join(f"{as_dict(x).get('key')} {as_dict(x).get('base')} → "
                        f"{as_dict(x).get('cand')}"
                        for x in as_list(d.get("environment_differences")))
        rows.append([d.get("node"), f"{d.get('runs_base', '?')}/{d.get('runs_cand', '?')}",
                     node_samples(metrics), d.get("verdict"), _changes(metrics, "regression"),
                     _changes(metrics, "improvement"), _inconclusive(metrics), env or "—"])
        classes.append(str(d.get("verdict") or ""))
    if rows:
        parts.append(html_table(["node", "runs", "samples", "verdict", "regressed", "improved",
                                 "inconclusive", "environment"], rows, css="grid nodes",
                                row_classes=classes))
    for d in detailed:
        title = esc(f"Node {d.get('node')}: {d.get('verdict')}")
        parts.append(f"<details class='node'><summary>{title}</summary>"
                     f"{metrics_table(as_list(d.get('metrics')), units)}</details>")
    suspects = [as_dict(s) for s in as_list(as_dict(n.get("summarised")).get("suspects"))]
    if suspects:
        parts.append(html_table(
            ["node", "metric", "possible", "samples", "change", "p"],
            [[s.get("node"), s.get("metric"), s.get("possible"), s.get("samples"),
              Raw(change_cell(s.get("change"))), _p(s.get("p_value"))] for s in suspects],
            css="grid suspects"))
    return "".join(parts)


def differences_table(diffs: list[Any]) -> str:
    """The environment and job differences between the two sides (shown first)."""
    rows = [[as_dict(d).get("scope"), as_dict(d).get("key"), as_dict(d).get("base"),
             as_dict(d).get("cand")] for d in diffs]
    return html_table(["scope", "key", "baseline", "candidate"], rows, css="grid differences") \
        if rows else "<p class='muted'>none</p>"
