"""The HTML forms: one self-contained file each, Bokeh with inline resources.

``bokeh.resources.INLINE`` puts BokehJS inside the file, so it opens
offline (a browser with no network shows every chart). Both pages are pure
functions of the report and comparison objects. Their tables and headline
are :mod:`bus.views` (the dashboard shows the same), their charts use the
shared style of :mod:`bus.views.charts`.

* report: the headline (state, duration, per node the tree's CPU and RSS,
  IPC, app p50/p95, the observer's cost, the series), then one chart per
  main metric with a line per run over seconds since the run's start and
  the marks of the first run as dashed lines, then the full tables;
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
from bokeh.models.annotations import Span
from bokeh.models.widgets import Div
from bokeh.palettes import Category10_10
from bokeh.resources import INLINE

from bus.views.charts import (
    LINE_WIDTH,
    axis_scale,
    finish_legend,
    styled_figure,
    vertical_marks,
)
from bus.views.comparison import differences_table, flags_html, metrics_table, nodes_html
from bus.views.report import headline, report_tables
from bus.views.text import CSS, VERDICT_CLASSES
from manager.analysis.compare import mark_anchors, warp
from manager.analysis.job_text import job_line

MAX_LINES = 20


def line_chart(title: str, unit: str, x_label: str = "seconds since run start") -> Any:
    """A chart over seconds since each run's start (so that runs overlay), shared style."""
    return styled_figure(title, unit, x_label)


def _marks(p: Any, marks: list[dict[str, Any]]) -> None:
    vertical_marks(p, [(m["offset"], m["label"]) for m in marks])


def _page(blocks: list[Any], title: str) -> str:
    return file_html(column(*blocks, sizing_mode="stretch_width"), INLINE, title)


# --- report ------------------------------------------------------------------------------


def report_html(r: dict[str, Any], series: dict[str, Any] | None = None) -> str:
    """The report as one HTML file: headline (with ``series``, see
    :func:`bus.views.report.headline`), charts, then the full tables."""
    blocks: list[Any] = [Div(text=CSS + f"<h1>ptap report — job {html.escape(r['job']['id'])}</h1>"
                             + headline(r, series), sizing_mode="stretch_width")]
    runs = r["runs"][:MAX_LINES]
    first_marked = next((run for run in runs if run["marks"]), None)
    for mid, meta in r["metrics"].items():
        if not meta["main"] or not any(mid in run["timeline"] for run in runs):
            continue
        scale, unit = axis_scale(meta["unit"], [v for run in runs
                                                for v in run["timeline"].get(mid, {}).get("v", [])
                                                if v is not None])
        p = line_chart(f"{meta['label']} ({mid})", unit)
        for i, run in enumerate(runs):
            tl = run["timeline"].get(mid)
            if tl:
                p.line(tl["t"], [None if v is None else v / scale for v in tl["v"]],
                       legend_label=f"{run['node']} #{run['iteration']}",
                       line_width=LINE_WIDTH, color=Category10_10[i % 10])
        if first_marked is not None:
            _marks(p, first_marked["marks"])
        blocks.append(finish_legend(p))
    blocks.append(Div(text=CSS + f"<p>{html.escape(job_line(r['job']))}</p>" + report_tables(r),
                      sizing_mode="stretch_width"))
    return _page(blocks, f"ptap report {r['job']['id']}")


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
    cls = VERDICT_CLASSES.get(c["verdict"], "")
    parts = [f"<h1>ptap compare — baseline {html.escape(c['base']['id'])} → candidate "
             f"{html.escape(c['cand']['id'])}: <span class='verdict {cls}'>"
             f"{html.escape(c['verdict'].upper())}</span></h1>",
             f"<p>threshold {c['threshold']:.0%}, alpha {c['alpha']:g}, "
             f"{c['confidence']:.0%} percentile-bootstrap CI; "
             + html.escape(", ".join(f"{n} {v}" for v, n in c["counts"].items())) + "</p>",
             flags_html(c),
             f"<p>baseline: {html.escape(job_line(c['base']))}<br>"
             f"candidate: {html.escape(job_line(c['cand']))}</p>"]
    parts += [f"<p><b>note:</b> {html.escape(n)}</p>" for n in c["notes"]]
    parts += ["<h2>Environment and job differences</h2>",
              differences_table(c["environment_differences"]),
              "<h2>Metrics</h2>", metrics_table(c["metrics"])]
    if c.get("nodes"):
        parts.append(nodes_html(c))
    return "".join(parts)


def _overlay_charts(e: dict[str, Any], base: dict[str, Any], cand: dict[str, Any],
                    anchors: list[tuple[float, float]]) -> list[Any]:
    mid, unit = e["metric"], e["unit"]
    bs, cs = base["series"][mid], cand["series"][mid]
    bt, bv = np.asarray(bs["t"]), np.asarray(bs["v"], dtype=float)
    ct, cv = np.asarray(cs["t"]), np.asarray(cs["v"], dtype=float)
    scale, unit = axis_scale(unit, [float(v) for v in np.concatenate([bv, cv])
                                    if np.isfinite(v)])
    bv, cv = bv / scale, cv / scale  # bytes in binary units on the axis
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
    return [finish_legend(p), finish_legend(d)]
