"""A series' history (``ptap.history``, manager/history/__init__.py) as HTML and Bokeh charts.

One implementation for ``ptap history --format html`` (a self-contained
file) and the dashboard's ``/history?series=…``: a headline naming each
change point (the job where it starts, the step with its confidence
interval, the p-value, regression or improvement, and first the
environment differences across it), one chart per metric, then the tables.

Charts: x is the job's place in the series (version or time order), each
job a point at the median of its runs with a whisker over their range; a
change point is a vertical band before the job it starts at (red: a
regression, green: an improvement), and the median of each stretch between
change points a dashed level. Given ``job_url``, clicking a point opens its
job. Model names (``history:<metric>``, ``points:<metric>``,
``changes:<metric>``) let a test or a console find them.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, HoverTool, OpenURL, TapTool
from bokeh.models.annotations import LabelSet

from bus.views.charts import CHART_HEIGHT, LINE_WIDTH, axis_scale, finish_legend, styled_figure
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
)

COLOURS = {"regression": "#c62828", "improvement": "#2e7d32"}
POINT_COLOUR = "#1f77b4"
MAX_TICK_LABELS = 30


def _step_text(cp: dict[str, Any]) -> str:
    return f"{change_cell(cp.get('step'))} {esc(cp.get('direction', ''))}"


def _point_columns(entry: dict[str, Any], jobs: list[dict[str, Any]], scale: float,
                   job_url: str) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {k: [] for k in ("x", "median", "low", "high", "job", "label",
                                                  "runs", "url", "value")}
    unit = str(entry.get("unit") or "")
    for p in (as_dict(x) for x in as_list(entry.get("points"))):
        i, median = p.get("index"), as_float(p.get("median"))
        if not isinstance(i, int) or median is None:
            continue
        job = as_dict(jobs[i]) if 0 <= i < len(jobs) else {}
        low, high = as_float(p.get("low")), as_float(p.get("high"))
        cols["x"].append(i)
        cols["median"].append(median / scale)
        cols["low"].append((low if low is not None else median) / scale)
        cols["high"].append((high if high is not None else median) / scale)
        cols["job"].append(str(p.get("job", "")))
        cols["label"].append(str(job.get("label") or p.get("job", "")))
        cols["runs"].append(p.get("runs"))
        cols["url"].append(job_url.format(job=p.get("job", "")) if job_url else "")
        cols["value"].append(number(median, unit))
    return cols


def _levels(entry: dict[str, Any], n: int, scale: float) -> dict[str, list[float]]:
    """Dashed levels: the median before the first change point, after each one."""
    cps = [as_dict(c) for c in as_list(entry.get("change_points"))]
    starts = [0] + [int(c.get("index", 0)) for c in cps]
    ends = starts[1:] + [n]
    values = [as_float(cps[0].get("before")) if cps else None] + \
        [as_float(c.get("after")) for c in cps]
    out: dict[str, list[float]] = {"x0": [], "x1": [], "y": []}
    for a, b, v in zip(starts, ends, values, strict=True):
        if v is not None and b > a:
            out["x0"].append(a - 0.4)
            out["x1"].append(b - 0.6)
            out["y"].append(v / scale)
    return out


def metric_figure(h: dict[str, Any], entry: dict[str, Any], job_url: str = "") -> Any:
    """One metric's chart (see the module docstring)."""
    jobs = [as_dict(j) for j in as_list(h.get("jobs"))]
    unit = str(entry.get("unit") or "")
    medians = [m for m in (as_float(as_dict(p).get("median"))
                           for p in as_list(entry.get("points"))) if m is not None]
    scale, axis_unit = axis_scale(unit, medians)
    mid = str(entry.get("metric"))
    tools = "xpan,xwheel_zoom,box_zoom,reset,save" + (",tap" if job_url else "")
    order = "version" if h.get("order") == "version" else "time"
    p = styled_figure(f"{entry.get('label') or mid} ({mid}); better: {entry.get('direction')}",
                      axis_unit, f"job, in {order} order", name=f"history:{mid}", tools=tools,
                      height=CHART_HEIGHT + 50)  # the legend sits above the plot
    src = ColumnDataSource(_point_columns(entry, jobs, scale, job_url), name=f"points:{mid}")
    p.segment("x", "low", "x", "high", source=src, line_color=POINT_COLOUR, line_alpha=0.5)
    p.line("x", "median", source=src, line_color=POINT_COLOUR, line_width=LINE_WIDTH,
           legend_label="median of the job's runs")
    dots = p.scatter("x", "median", source=src, size=8, color=POINT_COLOUR)
    levels = _levels(entry, len(jobs), scale)
    if levels["y"]:
        p.segment("x0", "y", "x1", "y", source=ColumnDataSource(levels), line_dash="dashed",
                  line_color="#555555", legend_label="level between change points")
    _change_bands(p, entry)
    p.add_tools(HoverTool(renderers=[dots], tooltips=[
        ("job", "@job"), ("label", "@label"), ("median", "@value"), ("runs", "@runs")]))
    if job_url:
        p.select_one(TapTool).callback = OpenURL(url="@url", same_tab=True)
    if len(jobs) <= MAX_TICK_LABELS:
        p.xaxis.ticker = list(range(len(jobs)))
        p.xaxis.major_label_overrides = {i: str(j.get("label") or j.get("id", i))[:16]
                                         for i, j in enumerate(jobs)}
    finish_legend(p)
    p.legend.orientation = "horizontal"  # above the plot: the first jobs' points stay clear
    p.add_layout(p.legend[0], "above")
    return p


def _change_bands(p: Any, entry: dict[str, Any]) -> None:
    cps = [as_dict(c) for c in as_list(entry.get("change_points"))]
    data: dict[str, list[Any]] = {"x": [], "colour": [], "text": []}
    for c in cps:
        data["x"].append(float(c.get("index", 0)) - 0.5)
        data["colour"].append(COLOURS.get(str(c.get("direction")), "#777777"))
        step = as_float(c.get("step"))
        data["text"].append(f"{step * 100:+.1f}% {c.get('direction')}" if step is not None
                            else str(c.get("direction")))
    src = ColumnDataSource(data, name=f"changes:{entry.get('metric')}")
    p.vspan(x="x", source=src, line_color="colour", line_width=3, line_alpha=0.8)
    p.add_layout(LabelSet(x="x", y=8, y_units="screen", text="text", source=src,
                          text_color="colour", text_font_size="10px", x_offset=4))


def history_figures(h: dict[str, Any], job_url: str = "") -> list[Any]:
    """A chart per metric with points (``job_url``: e.g. ``/jobs/{job}``, empty for none)."""
    return [metric_figure(h, as_dict(e), job_url) for e in as_list(h.get("metrics"))
            if as_list(as_dict(e).get("points"))]


# --- headline and tables ----------------------------------------------------------------------


def _unit_of(h: dict[str, Any], metric: str) -> str:
    for e in as_list(h.get("metrics")):
        if as_dict(e).get("metric") == metric:
            return str(as_dict(e).get("unit") or "")
    return ""


def _differences(cp: dict[str, Any]) -> str:
    return "; ".join(f"{as_dict(d).get('key')} {as_dict(d).get('base')} → "
                     f"{as_dict(d).get('cand')}"
                     for d in as_list(cp.get("environment_differences")))


def change_sentence(h: dict[str, Any], metric: str, cp: dict[str, Any]) -> str:
    """``proc.cpu_pct +30.0 % (95 % CI …, p=…) at job j7 (1.7) — regression;
    environment: tag x a → b`` as escaped HTML."""
    ci = as_list(cp.get("ci"))
    ci_text = f"{change_cell(ci[0])} … {change_cell(ci[1])}" if len(ci) == 2 else "—"
    p = as_float(cp.get("p_value"))
    unit = _unit_of(h, metric)
    env = _differences(cp)
    return (f"<code>{esc(metric)}</code> {change_cell(cp.get('step'))} "
            f"({esc(number(as_float(cp.get('before')), unit))} → "
            f"{esc(number(as_float(cp.get('after')), unit))}; 95% CI {ci_text}, "
            f"p={'—' if p is None else f'{p:.2g}'}) from job <b>{esc(cp.get('job'))}</b> "
            f"({esc(cp.get('label'))}) — {cell(cp.get('direction'))}"
            + (f"; environment: {esc(env)}" if env else ""))


def change_points(h: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every (metric, change point) of the history, in series order."""
    found = [(str(as_dict(e).get("metric")), as_dict(c)) for e in as_list(h.get("metrics"))
             for c in as_list(as_dict(e).get("change_points"))]
    return sorted(found, key=lambda mc: (int(mc[1].get("index") or 0), mc[0]))


def history_headline(h: dict[str, Any], series_link: str = "") -> str:
    """What moved, and where: one line per change point, environment first in each."""
    jobs, found = as_list(h.get("jobs")), change_points(h)
    name = esc(h.get("series", "?"))
    shown = f"<a href='{esc(series_link)}'>{name}</a>" if series_link else name
    lead = (f"<p class='big'>Series {shown}: {len(jobs)} job(s) in "
            f"{esc(h.get('order', 'time'))} order, {len(found)} change point(s)</p>")
    items = "".join(f"<li class='change {esc(c.get('direction'))}'>{change_sentence(h, m, c)}</li>"
                    for m, c in found)
    body = f"<ul class='changes'>{items}</ul>" if items else \
        "<p>No change point: no metric moved by more than its noise.</p>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in as_list(h.get("notes")))
    return (f"<section class='headline' id='headline'>{lead}{body}"
            + (f"<ul class='notice notes'>{notes}</ul>" if notes else "") + "</section>")


def history_tables(h: dict[str, Any], level: int = 2, job_link: str = "") -> str:
    """The change points, the jobs in order, each metric's points (folded), the detector."""
    def h_(text: str) -> str:
        return f"<h{level}>{esc(text)}</h{level}>"

    def job_cell(job_id: Any) -> Raw:
        text = esc(job_id)
        return Raw(f"<a href='{esc(job_link.format(job=job_id))}'>{text}</a>" if job_link
                   else text)

    cps = change_points(h)
    rows = [[Raw(f"<code>{esc(m)}</code>"), _differences(c) or "—", job_cell(c.get("job")),
             c.get("label"), Raw(change_cell(c.get("step"))),
             Raw(" … ".join(change_cell(x) for x in as_list(c.get("ci"))) or "—"),
             as_float(c.get("p_value")), c.get("direction")] for m, c in cps]
    parts = [h_("Change points"), html_table(
        ["metric", "environment differences", "from job", "label", "step", "95% CI", "p",
         "direction"], rows, css="grid changes", row_classes=[c.get("direction") or ""
                                                               for _, c in cps])
        if rows else "<p class='muted'>none</p>"]
    jobs = [as_dict(j) for j in as_list(h.get("jobs"))]
    parts += [h_("Jobs in order"), html_table(
        ["#", "job", "label", "state", "nodes"],
        [[i, job_cell(j.get("id")), j.get("label"), j.get("state"),
          ", ".join(str(n) for n in as_list(j.get("nodes")))] for i, j in enumerate(jobs)],
        css="grid jobs")]
    for e in (as_dict(x) for x in as_list(h.get("metrics"))):
        unit = str(e.get("unit") or "")
        pts = [as_dict(p) for p in as_list(e.get("points"))]
        table = html_table(["#", "job", "median", "low", "high", "runs"], [
            [p.get("index"), job_cell(p.get("job")), number(as_float(p.get("median")), unit),
             number(as_float(p.get("low")), unit), number(as_float(p.get("high")), unit),
             p.get("runs")] for p in pts], css="grid points")
        parts.append(f"<details class='metric'><summary>{esc(e.get('metric'))} — "
                     f"{esc(e.get('label'))}: {len(pts)} point(s)</summary>{table}</details>")
    det = as_dict(h.get("detector"))
    parts.append("<p class='muted'>detector: " + esc(", ".join(
        f"{k} {v}" for k, v in det.items())) + "</p>")
    return "".join(parts)


def moved_text(h: dict[str, Any], job_id: str) -> str:
    """Whether the series moved at this job, for the job's report headline."""
    ids = [str(as_dict(j).get("id")) for j in as_list(h.get("jobs"))]
    if job_id not in ids:
        return (f"{len(ids)} job(s) in the history; this one is not among them yet (a job "
                "makes a point once it succeeded and its last samples settled)")
    at = ids.index(job_id)
    found = change_points(h)
    here = [f"{m} {_plain_step(c)}" for m, c in found if c.get("index") == at]
    if here:
        return f"moved at this job: {', '.join(here)}"
    before = [(m, c) for m, c in found if int(c.get("index") or 0) < at]
    if before:
        m, c = before[-1]
        return (f"did not move at this job; last change point at job {c.get('job')}: "
                f"{m} {_plain_step(c)}")
    return f"did not move: no change point in its {len(ids)} job(s)"


def _plain_step(c: dict[str, Any]) -> str:
    step = as_float(c.get("step"))
    size = f"{step * 100:+.1f}%" if step is not None else "?"
    return f"{size} ({c.get('direction')})"
