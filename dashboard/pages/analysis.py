"""The manager's report (``ptap.report``) and comparison (``ptap.compare``) objects as HTML.

Laid out for reading: a comparison leads with its verdict, the nodes that
regressed or improved where the pooled verdict says otherwise
(``nodes.flags`` with ``hidden``), and a table of every
metric's change, then a table per node; a report with the job, its notes and environment, a
table of every metric over all runs, then each run. Parts this module does
not know (a newer schema) are shown by the generic :func:`render.render`,
so nothing the manager says is hidden. Every string is escaped.
"""

from __future__ import annotations

import html
from typing import Any

from dashboard.pages.base import fmt_time
from dashboard.pages.render import render, scalar

STATS = ("count", "mean", "min", "p50", "p95", "p99", "max", "stddev")
REPORT_KEYS = {"kind", "schema_version", "generated_at", "job", "notes", "environment",
               "metrics", "overall", "nodes", "observer", "runs"}
COMPARE_KEYS = {"kind", "schema_version", "generated_at", "threshold", "alpha", "confidence",
                "bootstrap", "base", "cand", "environment_differences", "verdict", "counts",
                "notes", "metrics", "nodes", "overlay"}
#: Per-node flags the pooled verdict does not show (``hidden``), under a comparison's
#: verdict; every node's changes are in the per-node part.
MAX_FLAGS = 10


def analysis_html(obj: Any) -> str:
    """Any analysis object: the laid-out view for the kinds known here, else generic."""
    if isinstance(obj, dict) and obj.get("kind") == "ptap.report":
        return report_html(obj)
    if isinstance(obj, dict) and obj.get("kind") == "ptap.compare":
        return compare_html(obj)
    return render(obj)


def _h(level: int, text: str) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def _notes(notes: Any) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(str(n))}</li>" for n in notes)
    return f"<ul class='notice notes'>{items}</ul>"


def _rest(obj: dict[str, Any], known: set[str]) -> str:
    extra = {k: v for k, v in obj.items() if k not in known}
    return (_h(3, "Other fields") + render(extra)) if extra else ""


def _stats_table(summaries: dict[str, Any], catalogue: dict[str, Any], css: str) -> str:
    """One row per metric (main ones first), one column per statistic."""
    order = sorted(summaries, key=lambda m: (not (catalogue.get(m) or {}).get("main"), m))
    head = "".join(f"<th>{s}</th>" for s in STATS)
    rows = []
    for mid in order:
        info, stats = catalogue.get(mid) or {}, summaries.get(mid) or {}
        label = html.escape(str(info.get("label") or mid))
        unit = html.escape(str(info.get("unit") or ""))
        cells = "".join(f"<td>{scalar(stats.get(s))}</td>" for s in STATS)
        rows.append(f"<tr><td><code>{html.escape(mid)}</code></td><td>{label}</td>"
                    f"<td>{unit}</td>{cells}</tr>")
    return (f"<table class='grid {css}'><tr><th>metric</th><th>what</th><th>unit</th>{head}"
            f"</tr>{''.join(rows)}</table>")


def _environment(env: dict[str, Any]) -> str:
    """Nodes as columns, facts as rows."""
    nodes = list(env)
    keys: list[str] = []
    for facts in env.values():
        keys += [k for k in (facts or {}) if k not in keys]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in nodes)
    rows = "".join(f"<tr><th>{html.escape(k)}</th>"
                   + "".join(f"<td>{render((env[n] or {}).get(k))}</td>" for n in nodes)
                   + "</tr>" for k in keys)
    return f"<table class='grid env'><tr><th></th>{head}</tr>{rows}</table>"


def report_html(r: dict[str, Any]) -> str:
    job, catalogue = r.get("job") or {}, r.get("metrics") or {}
    parts = [f"<p class='muted'>generated {fmt_time(r.get('generated_at'))}, "
             f"schema {scalar(r.get('schema_version'))}</p>", _notes(r.get("notes")),
             _h(3, "Job"), render(job), _h(3, "Environment"), _environment(r.get("environment") or {}),
             _h(3, f"All runs ({(r.get('overall') or {}).get('runs', '?')})"),
             _stats_table((r.get("overall") or {}).get("metrics") or {}, catalogue, "overall")]
    nodes = r.get("nodes") or {}
    if len(nodes) > 1:
        for node, agg in nodes.items():
            parts += [_h(3, f"Node {node}"),
                      _stats_table((agg or {}).get("metrics") or {}, catalogue, "node")]
    figures = (r.get("overall") or {}).get("figures") or {}
    if figures:
        parts += [_h(3, "Per-run figures, spread over the runs"),
                  _stats_table(figures, catalogue, "figures")]
    if r.get("observer"):
        parts += [_h(3, "What the agent cost (observer)"), render(r["observer"])]
    for run in r.get("runs") or []:
        parts.append(_run(run, catalogue))
    parts.append(_rest(r, REPORT_KEYS))
    return "".join(parts)


def _run(run: dict[str, Any], catalogue: dict[str, Any]) -> str:
    outcome = {k: run.get(k) for k in ("node", "iteration", "state", "exit_code", "duration",
                                       "error") if k in run}
    body = [render(outcome), _notes(run.get("notes"))]
    if run.get("metrics"):
        body.append(_stats_table(run["metrics"], catalogue, "run"))
    if run.get("phases"):
        body += ["<p>phases</p>", render(run["phases"])]
    if run.get("marks"):
        body += ["<p>marks</p>", render(run["marks"])]
    title = html.escape(f"Run {run.get('id', '?')}")
    return f"<details class='run'><summary><b>{title}</b></summary>{''.join(body)}</details>"


def _pct(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return html.escape(f"{value * 100:+.2f} %")
    return scalar(value)


def compare_html(c: dict[str, Any]) -> str:
    verdict, counts = c.get("verdict"), c.get("counts") or {}
    counted = ", ".join(f"{html.escape(str(k))}: {scalar(v)}" for k, v in counts.items())
    parts = [f"<p class='verdict-line'>Verdict: {scalar(verdict)} <span class='muted'>"
             f"({counted}; threshold {_pct(c.get('threshold'))}, alpha {scalar(c.get('alpha'))}, "
             f"confidence {scalar(c.get('confidence'))})</span></p>", _notes(c.get("notes"))]
    nodes = c["nodes"] if isinstance(c.get("nodes"), dict) else {}
    parts.append(_flags(nodes))
    parts += [_h(3, "Metrics"), _compare_table(c.get("metrics") or [])]
    if nodes:
        parts.append(_nodes(nodes))
    diffs = c.get("environment_differences")
    parts += [_h(3, "Environment differences"),
              render(diffs) if diffs else "<p class='muted'>none</p>"]
    parts += [_h(3, "Baseline"), render(c.get("base") or {}), _h(3, "Candidate"),
              render(c.get("cand") or {})]
    parts.append(_rest(c, COMPARE_KEYS))
    return "".join(parts)


COMPARE_COLS = ("metric", "label", "unit", "samples", "n_base", "n_cand", "base_median",
                "cand_median", "change", "ci", "p_value", "verdict", "reason")
#: A node's entries carry no label or unit: those are the pooled entry's.
NODE_COLS = tuple(c for c in COMPARE_COLS if c not in ("label", "unit"))


def _compare_table(entries: list[dict[str, Any]], cols: tuple[str, ...] = COMPARE_COLS) -> str:
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for e in entries:
        cells = []
        for col in cols:
            v = e.get(col)
            if col == "change":
                cells.append(_pct(v))
            elif col == "ci" and isinstance(v, list) and len(v) == 2:
                cells.append(f"{_pct(v[0])} … {_pct(v[1])}")
            else:
                cells.append(scalar(v))
        css = html.escape(str(e.get("verdict", "")))
        rows.append(f"<tr class='{css}'>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    return f"<table class='grid compare'><tr>{head}</tr>{''.join(rows)}</table>"


def _flag(f: dict[str, Any]) -> str:
    """``node n3: app.latency +30.00 % — regression on this node; pooled: unchanged``."""
    p = f.get("p_value")
    p_text = f"{p:.2g}" if isinstance(p, int | float) else "—"
    return (f"<li class='node-flag'>&#9888; node <b>{html.escape(str(f.get('node')))}</b>: "
            f"<code>{html.escape(str(f.get('metric')))}</code> {_pct(f.get('change'))} "
            f"(p={html.escape(p_text)}, {html.escape(str(f.get('samples')))}) — "
            f"{scalar(f.get('verdict'))} on this node; pooled: {scalar(f.get('pooled_verdict'))}"
            "</li>")


def _count(n: dict[str, Any], key: str, listed: int) -> int:
    """A total the manager counted (``flags_count``, ...): the list it goes with stops at
    200. What was listed, when the total is missing or makes no sense."""
    total = n.get(key)
    return total if isinstance(total, int) and not isinstance(total, bool) \
        and total >= listed else listed


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _flags(n: dict[str, Any]) -> str:
    flags = _list(n.get("flags"))
    hidden = [f for f in flags if isinstance(f, dict) and f.get("hidden")]
    shown = hidden[:MAX_FLAGS]
    if not shown:
        return ""
    more = _count(n, "hidden_count", len(hidden)) - len(shown)
    tail = f"<li class='muted'>{more} more under Per node</li>" if more > 0 else ""
    return f"<ul class='notice node-flags'>{''.join(_flag(f) for f in shown)}{tail}</ul>"


def _node_changes(metrics: list[dict[str, Any]], verdict: str) -> str:
    return ", ".join(f"<code>{html.escape(str(e.get('metric')))}</code> {_pct(e.get('change'))}"
                     for e in metrics if e.get("verdict") == verdict) or "—"


def _nodes(n: dict[str, Any]) -> str:
    """The per-node part: who is in one job only, a row per node, every node's metrics."""
    detailed = [d for d in n.get("detailed") or [] if isinstance(d, dict)]
    parts = [_h(3, f"Per node ({scalar(n.get('shared'))} in both jobs, "
                   f"{len(detailed)} detailed)")]
    for side, label in (("only_base", "only in the baseline"), ("only_cand", "only in the candidate")):
        names = _list(n.get(side))
        if names:
            more = _count(n, f"{side}_count", len(names)) - len(names)
            tail = f" and {more} more" if more > 0 else ""
            parts.append(f"<p>{label} (not compared): {render(names)}{tail}</p>")
    rows = []
    for d in detailed:
        metrics = [e for e in d.get("metrics") or [] if isinstance(e, dict)]
        rows.append(f"<tr class='{html.escape(str(d.get('verdict', '')))}'>"
                    f"<td>{html.escape(str(d.get('node')))}</td>"
                    f"<td>{scalar(d.get('runs_base'))}/{scalar(d.get('runs_cand'))}</td>"
                    f"<td>{scalar(d.get('verdict'))}</td>"
                    f"<td>{_node_changes(metrics, 'regression')}</td>"
                    f"<td>{_node_changes(metrics, 'improvement')}</td>"
                    f"<td>{render(d.get('environment_differences') or None)}</td></tr>")
    parts.append("<table class='grid nodes'><tr><th>node</th><th>runs</th><th>verdict</th>"
                 "<th>regressed</th><th>improved</th><th>environment</th></tr>"
                 + "".join(rows) + "</table>")
    for d in detailed:
        title = html.escape(f"Node {d.get('node')}: {d.get('verdict')}")
        parts.append(f"<details class='node'><summary>{title}</summary>"
                     f"{_compare_table(d.get('metrics') or [], NODE_COLS)}</details>")
    rest = _dict(n.get("summarised"))
    if rest.get("count"):
        suspects = _list(rest.get("suspects"))
        found = _count(rest, "suspects_count", len(suspects))
        listed = f", the first {len(suspects)} listed" if found > len(suspects) else ""
        parts += [f"<p>{scalar(rest.get('count'))} more node(s) not detailed: "
                  f"{scalar(rest.get('quiet'))} show no possible regression or improvement "
                  "(screened without the bootstrap: no metric with p &lt; alpha and a change "
                  f"of at least the threshold); {found} possible change(s){listed}:</p>",
                  render(suspects)]
    return "".join(parts)
