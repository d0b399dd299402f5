"""The HTML forms: one self-contained file each, Bokeh with inline resources.

``bokeh.resources.INLINE`` puts BokehJS inside the file, so it opens
offline (a browser with no network shows every chart). Both pages are pure
functions of the report and comparison objects; :func:`line_chart` is the
chart style they share (the dashboard's report pages can use it too).

* report: header (job, notes, environment, runs, observer), then one chart
  per main metric with a line per run over seconds since the run's start
  and the marks of the first run as dashed lines, then the metric table;
* compare: verdict (with the nodes that regressed or improved on their own
  right below it), environment differences first, the metric table, the
  per-node table (and every node's metrics, folded), then
  per main metric the two charted runs overlaid (aligned on run start, and
  the candidate also aligned on marks when both have the same marks) and
  the difference candidate − baseline over the baseline's time.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models.annotations import Label, Span
from bokeh.models.widgets import Div
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from bokeh.resources import INLINE

from manager.analysis.compare import mark_anchors, warp
from manager.analysis.render import (
    SUMMARY_COLS,
    flag_line,
    hidden_flags,
    job_line,
    node_changes,
    node_inconclusive,
    node_samples,
    nodes_summary,
    number,
    percent,
    when,
)

MAX_LINES = 20
#: The dashboard's chart style (dashboard/charts.py), so a report looks like the live
#: view; x is seconds since each run's start here, so that runs overlay.
CHART_HEIGHT = 220
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
LINE_WIDTH = 1.6
VERDICT_COLOURS = {"regression": "#c62828", "improvement": "#2e7d32", "unchanged": "#555555",
                   "inconclusive": "#b26a00"}
CSS = ("<style>table{border-collapse:collapse;font:13px sans-serif;margin:4px 0 12px}"
       "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f3f3f3}"
       "h1{font:bold 20px sans-serif}h2{font:bold 16px sans-serif;margin:14px 0 4px}"
       "p,li{font:13px sans-serif}</style>")


def line_chart(title: str, unit: str, x_label: str = "seconds since run start") -> Any:
    """The shared chart style: full width, fixed height, pan/zoom/hover, hideable legend."""
    p = figure(title=title, height=CHART_HEIGHT, sizing_mode="stretch_width", tools=TOOLS,
               x_axis_label=x_label, y_axis_label=unit or "value")
    p.toolbar.logo = None
    return p


def _finish(p: Any) -> Any:
    if p.legend:
        p.legend.click_policy = "hide"
        p.legend.location = "top_left"
        p.legend.label_text_font_size = "8pt"
    return p


def _html_table(headers: list[str], rows: list[list[Any]], colours: list[str] | None = None
                ) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        style = f' style="color:{colours[i]}"' if colours and colours[i] else ""
        cells = "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in row)
        body.append(f"<tr{style}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _marks(p: Any, marks: list[dict[str, Any]], colour: str = "#777777") -> None:
    for m in marks[:50]:
        p.add_layout(Span(location=m["offset"], dimension="height", line_dash="dashed",
                          line_color=colour, line_width=1))
        p.add_layout(Label(x=m["offset"], y=5, y_units="screen", text=str(m["label"]),
                           text_font_size="10px", text_color=colour))


def _page(blocks: list[Any], title: str) -> str:
    return file_html(column(*blocks, sizing_mode="stretch_width"), INLINE, title)


# --- report ------------------------------------------------------------------------------


def report_html(r: dict[str, Any]) -> str:
    """The report as one HTML file (see the module docstring)."""
    blocks: list[Any] = [Div(text=CSS + _report_header(r), sizing_mode="stretch_width")]
    runs = r["runs"][:MAX_LINES]
    first_marked = next((run for run in runs if run["marks"]), None)
    for mid, meta in r["metrics"].items():
        if not meta["main"] or not any(mid in run["timeline"] for run in runs):
            continue
        p = line_chart(f"{meta['label']} ({mid})", meta["unit"])
        for i, run in enumerate(runs):
            tl = run["timeline"].get(mid)
            if tl:
                p.line(tl["t"], tl["v"], legend_label=f"{run['node']} #{run['iteration']}",
                       line_width=LINE_WIDTH, color=Category10_10[i % 10])
        if first_marked is not None:
            _marks(p, first_marked["marks"])
        blocks.append(_finish(p))
    blocks.append(Div(text=CSS + "<h2>Metrics over all runs</h2>" + _metric_table(r),
                      sizing_mode="stretch_width"))
    return _page(blocks, f"ptap report {r['job']['id']}")


def _report_header(r: dict[str, Any]) -> str:
    env = r["environment"]
    parts = [f"<h1>ptap report — job {html.escape(r['job']['id'])}</h1>",
             f"<p>{html.escape(job_line(r['job']))}</p>"]
    parts += [f"<p><b>note:</b> {html.escape(n)}</p>" for n in r["notes"]]
    parts.append("<h2>Environment</h2>" + _html_table(
        ["node", "kernel", "CPU model", "governor", "CPUs", "agent", "perf", "PMU"],
        [[n, e.get("kernel"), e.get("cpu_model"), e.get("governor"), e.get("cpus"),
          e.get("agent_version"), e.get("perf_available"), e.get("pmu_hardware")]
         for n, e in env.items()]))
    parts.append("<h2>Runs</h2>" + _html_table(
        ["run", "node", "iteration", "state", "exit", "duration", "started", "notes"],
        [[run["id"], run["node"], run["iteration"], run["state"], run["exit_code"],
          number(run["duration"], "s") if run["duration"] is not None else None,
          when(run["started_at"]), "; ".join(run["notes"])] for run in r["runs"]]))
    obs = r["observer"]
    parts.append("<h2>Observer cost (agent)</h2>" + _html_table(
        ["node", "CPU mean %", "CPU max %", "RSS max", "samples dropped"],
        [[n, number(o["cpu_pct"]["mean"]) if o["cpu_pct"] else None,
          number(o["cpu_pct"]["max"]) if o["cpu_pct"] else None,
          number(o["rss"]["max"], "B") if o["rss"] else None, o["samples_dropped"]]
         for n, o in obs.items()]))
    return "".join(parts)


def _metric_table(r: dict[str, Any]) -> str:
    rows = []
    for mid, meta in r["metrics"].items():
        s = r["overall"]["metrics"].get(mid)
        f = r["overall"]["figures"].get(mid)
        cells = [s[k] if k == "count" else number(s[k], meta["unit"]) for k in SUMMARY_COLS] \
            if s else [None] * len(SUMMARY_COLS)
        rows.append([mid, meta["direction"], *cells, number(f["p50"], meta["unit"]) if f else None])
    return _html_table(["metric", "better", *SUMMARY_COLS, "per-run median"], rows)


# --- comparison ----------------------------------------------------------------------------


def compare_html(c: dict[str, Any]) -> str:
    """The comparison as one HTML file (see the module docstring)."""
    blocks: list[Any] = [Div(text=CSS + _compare_header(c), sizing_mode="stretch_width")]
    base, cand = c["overlay"]["base"], c["overlay"]["cand"]
    if base and cand:
        anchors = mark_anchors(base["marks"], cand["marks"])
        for e in c["metrics"]:
            mid = e["metric"]
            if e["main"] and mid in base["series"] and mid in cand["series"]:
                blocks += _overlay_charts(e, base, cand, anchors)
    return _page(blocks, f"ptap compare {c['base']['id']} {c['cand']['id']}")


def _compare_header(c: dict[str, Any]) -> str:
    colour = VERDICT_COLOURS.get(c["verdict"], "#000")
    parts = [f"<h1>ptap compare — baseline {html.escape(c['base']['id'])} → candidate "
             f"{html.escape(c['cand']['id'])}: <span style=\"color:{colour}\">"
             f"{html.escape(c['verdict'].upper())}</span></h1>",
             f"<p>threshold {c['threshold']:.0%}, alpha {c['alpha']:g}, "
             f"{c['confidence']:.0%} percentile-bootstrap CI; "
             + html.escape(", ".join(f"{n} {v}" for v, n in c["counts"].items())) + "</p>",
             *_flags_html(c),
             f"<p>baseline: {html.escape(job_line(c['base']))}<br>"
             f"candidate: {html.escape(job_line(c['cand']))}</p>"]
    parts += [f"<p><b>note:</b> {html.escape(n)}</p>" for n in c["notes"]]
    diffs = c["environment_differences"]
    parts.append("<h2>Environment and job differences</h2>" + (_html_table(
        ["scope", "key", "baseline", "candidate"],
        [[d["scope"], d["key"], d["base"], d["cand"]] for d in diffs]) if diffs else "<p>none</p>"))
    rows, colours = [], []
    for e in c["metrics"]:
        ci = None if e["ci"] is None else f"[{percent(e['ci'][0])}, {percent(e['ci'][1])}]"
        rows.append([e["metric"], e["direction"], e["samples"], f"{e['n_base']}/{e['n_cand']}",
                     number(e["base_median"], e["unit"]), number(e["cand_median"], e["unit"]),
                     percent(e["change"]), ci,
                     None if e["p_value"] is None else f"{e['p_value']:.2g}", e["verdict"]])
        colours.append(VERDICT_COLOURS.get(e["verdict"], ""))
    parts.append("<h2>Metrics</h2>" + _html_table(
        ["metric", "better", "samples", "n", "base median", "cand median", "change", "95% CI",
         "p", "verdict"], rows, colours))
    if c.get("nodes"):
        parts.append(_nodes_html(c))
    return "".join(parts)


def _flags_html(c: dict[str, Any]) -> list[str]:
    return [f"<p class=\"node-flag\" style=\"color:{VERDICT_COLOURS[f['verdict']]}\">"
            f"<b>⚠ {html.escape(flag_line(f))}</b></p>" for f in hidden_flags(c)]


def _nodes_html(c: dict[str, Any]) -> str:
    """The per-node part: sentences, a row per node, every node's metrics folded."""
    n, units = c["nodes"], {e["metric"]: e["unit"] for e in c["metrics"]}
    parts = ["<h2 id=\"nodes\">Per node</h2><p>Decisive metrics; each node's own runs as "
             "samples (iterations when there are enough runs to reach significance, 4 against 4 "
             "or more, else its points: p-values optimistic).</p>"]
    parts += [f"<p>{html.escape(line)}</p>"
              for line in nodes_summary(n, c["threshold"], c["alpha"])]
    detailed = n["detailed"]
    parts.append(_html_table(
        ["node", "runs", "samples", "verdict", "regressed", "improved", "inconclusive",
         "environment"],
        [[d["node"], f"{d['runs_base']}/{d['runs_cand']}", node_samples(d), d["verdict"],
          node_changes(d, "regression"), node_changes(d, "improvement"), node_inconclusive(d),
          "; ".join(f"{x['key']} {x['base']} → {x['cand']}"
                    for x in d["environment_differences"]) or "-"] for d in detailed],
        [VERDICT_COLOURS.get(d["verdict"], "") for d in detailed]))
    rows, colours = [], []
    for d in detailed:
        for e in d["metrics"]:
            ci = None if e["ci"] is None else f"[{percent(e['ci'][0])}, {percent(e['ci'][1])}]"
            rows.append([d["node"], e["metric"], e["samples"], f"{e['n_base']}/{e['n_cand']}",
                         number(e["base_median"], units.get(e["metric"], "")),
                         number(e["cand_median"], units.get(e["metric"], "")),
                         percent(e["change"]), ci,
                         None if e["p_value"] is None else f"{e['p_value']:.2g}", e["verdict"]])
            colours.append(VERDICT_COLOURS.get(e["verdict"], ""))
    if rows:
        parts.append("<details><summary>every detailed node's metrics</summary>" + _html_table(
            ["node", "metric", "samples", "n", "base median", "cand median", "change", "95% CI",
             "p", "verdict"], rows, colours) + "</details>")
    return "".join(parts)


def _overlay_charts(e: dict[str, Any], base: dict[str, Any], cand: dict[str, Any],
                    anchors: list[tuple[float, float]]) -> list[Any]:
    mid, unit = e["metric"], e["unit"]
    bs, cs = base["series"][mid], cand["series"][mid]
    bt, bv = np.asarray(bs["t"]), np.asarray(bs["v"])
    ct, cv = np.asarray(cs["t"]), np.asarray(cs["v"])
    p = line_chart(f"{e['label']} ({mid}): baseline vs candidate — {e['verdict']}", unit)
    p.line(bt, bv, legend_label=f"baseline {base['run']}", line_width=LINE_WIDTH,
           color=Category10_10[0])
    p.line(ct, cv, legend_label=f"candidate {cand['run']}", line_width=LINE_WIDTH,
           color=Category10_10[1])
    on_marks = len(anchors) > 1
    if on_marks:
        p.line(warp(ct, anchors), cv, legend_label="candidate aligned on marks",
               line_width=LINE_WIDTH, line_dash="dashed", color=Category10_10[1])
        _marks(p, base["marks"])
    aligned = warp(ct, anchors) if on_marks else ct
    diff = np.interp(bt, aligned, cv, left=np.nan, right=np.nan) - bv if ct.size else bv * np.nan
    d = line_chart(f"difference candidate − baseline ({mid}, aligned on "
                   f"{'marks' if on_marks else 'run start'})", unit,
                   "seconds since baseline run start")
    d.line(bt, diff, line_width=LINE_WIDTH, color=Category10_10[3],
           legend_label="candidate − baseline")
    d.add_layout(Span(location=0, dimension="width", line_color="#999999", line_width=1))
    return [_finish(p), _finish(d)]
