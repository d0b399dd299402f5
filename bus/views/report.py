"""A report (``ptap.report``, docs/report-schema.json) as HTML: its headline, then its tables.

The headline is what people look for first: the job's state and duration,
and per node the tree's CPU and RSS (with a small chart of the first run),
IPC where the PMU allows, the app metrics' p50/p95, and what the agent
itself cost; then the series the job belongs to. The full tables follow:
environment, runs, every metric over all runs (and per node), per-run
figures, the observer, and each run folded with its phases.
"""

from __future__ import annotations

from typing import Any

from bus.states import RunState
from bus.views.sparkline import sparkline
from bus.views.text import (
    Raw,
    as_dict,
    as_float,
    as_list,
    cell,
    duration,
    esc,
    html_table,
    number,
    when,
)

STATS = ("count", "mean", "min", "p50", "p95", "p99", "max", "stddev")
MAX_APP_METRICS = 6
FINAL = {s.value for s in RunState if s.final}


def series_name(job: dict[str, Any]) -> str:
    """The series a job belongs to: its ``series`` (field or tag), else its name."""
    tags = as_dict(job.get("tags")) or as_dict(as_dict(job.get("spec")).get("tags"))
    return str(job.get("series") or tags.get("series") or job.get("name") or "")


def job_span(r: dict[str, Any]) -> float | None:
    """Seconds from the first run's start to the last run's end (None while unknown)."""
    runs = [as_dict(x) for x in as_list(r.get("runs"))]
    starts = [s for s in (as_float(x.get("started_at")) for x in runs) if s is not None]
    ends = [e for e in (as_float(x.get("ended_at")) for x in runs) if e is not None]
    if starts and ends:
        return max(ends) - min(starts)
    job = as_dict(r.get("job"))
    begin, end = as_float(job.get("created_at")), as_float(job.get("ended_at"))
    return end - begin if begin is not None and end is not None else None


def _stat(agg: dict[str, Any], mid: str, key: str, group: str = "metrics") -> float | None:
    return as_float(as_dict(as_dict(agg.get(group)).get(mid)).get(key))


def _unit(r: dict[str, Any], mid: str) -> str:
    return str(as_dict(as_dict(r.get("metrics")).get(mid)).get("unit") or "")


def _first_timeline(r: dict[str, Any], node: str, mid: str) -> tuple[list[Any], list[Any]]:
    for run in as_list(r.get("runs")):
        tl = as_dict(as_dict(as_dict(run).get("timeline")).get(mid))
        if as_dict(run).get("node") == node and tl:
            return as_list(tl.get("t")), as_list(tl.get("v"))
    return [], []


def _with_spark(r: dict[str, Any], node: str, mid: str, text: str) -> Raw:
    t, v = _first_timeline(r, node, mid)
    return Raw(esc(text) + sparkline(t, v, f"{mid} on {node}, first run"))


def _cpu(r: dict[str, Any], node: str, agg: dict[str, Any]) -> Raw | None:
    mean, p95 = _stat(agg, "proc.cpu_pct", "mean"), _stat(agg, "proc.cpu_pct", "p95")
    if mean is None:
        return None
    return _with_spark(r, node, "proc.cpu_pct",
                       f"{number(mean, '%')} mean, p95 {number(p95, '%')}")


def _rss(r: dict[str, Any], node: str, agg: dict[str, Any]) -> Raw | None:
    top = _stat(agg, "proc.rss", "max")
    if top is None:
        return None
    return _with_spark(r, node, "proc.rss", f"{number(top, 'B')} max")


def ipc_text(r: dict[str, Any], node: str, agg: dict[str, Any]) -> str:
    """The tree's IPC over its runs, or why there is none (``n/a — no PMU``)."""
    ipc = _stat(agg, "run.ipc", "p50", "figures")
    if ipc is None:
        ipc = _stat(agg, "perf.ipc", "mean")
    if ipc is not None:
        return f"{ipc:.2f} instructions/cycle"
    env = as_dict(as_dict(r.get("environment")).get(node))
    if env.get("perf_available") is False:
        return "n/a — no perf on this node"
    if env.get("pmu_hardware") is False:
        return "n/a — no PMU (software events only)"
    if "perf" not in as_list(as_dict(r.get("job")).get("collect")):
        return "n/a — perf not collected"
    return "n/a — no cycles counted"


def _apps(r: dict[str, Any], agg: dict[str, Any]) -> str:
    names = [m for m in as_dict(agg.get("metrics")) if m.startswith("app.")]
    parts = [f"{m.removeprefix('app.')} {number(_stat(agg, m, 'p50'), _unit(r, m))} / "
             f"{number(_stat(agg, m, 'p95'), _unit(r, m))}" for m in names[:MAX_APP_METRICS]]
    more = f"; {len(names) - MAX_APP_METRICS} more below" if len(names) > MAX_APP_METRICS else ""
    return "; ".join(parts) + more if parts else "none reported"


def observer_text(obs: dict[str, Any]) -> str:
    """``0.8% CPU mean, 45 MiB RSS`` (and samples dropped when any were)."""
    cpu = as_float(as_dict(obs.get("cpu_pct")).get("mean"))
    rss = as_float(as_dict(obs.get("rss")).get("max"))
    if cpu is None and rss is None:
        return "not measured"
    dropped = as_float(obs.get("samples_dropped")) or 0.0
    kernel = as_float(obs.get("app_dropped")) or 0.0
    tail = f", {dropped:.0f} samples dropped" if dropped else ""
    tail += f", {kernel:.0f} app datagrams dropped by the kernel" if kernel else ""
    return f"{number(cpu, '%')} CPU mean, {number(rss, 'B')} RSS{tail}"


def _series_line(r: dict[str, Any], series: dict[str, Any] | None, link: str) -> str:
    name = str(as_dict(series).get("name") or series_name(as_dict(r.get("job"))))
    if not name:
        return "<p class='series muted'>no series: give the job a name or --series</p>"
    shown = f"<a href='{esc(link)}'>{esc(name)}</a>" if link else esc(name)
    moved = as_dict(series).get("moved_text") if series else ""
    tail = f" — {esc(moved)}" if moved else ""
    return f"<p class='series'>Series {shown}{tail}</p>"


def headline(r: dict[str, Any], series: dict[str, Any] | None = None,
             series_link: str = "") -> str:
    """The report's headline (see the module docstring). ``series``: the job's series
    (``name``) and what its history says (``moved_text``: one line); ``series_link``:
    the series' page."""
    job, runs = as_dict(r.get("job")), [as_dict(x) for x in as_list(r.get("runs"))]
    state = str(job.get("state") or "?")
    ok = sum(x.get("state") == RunState.SUCCEEDED for x in runs)
    nodes = as_dict(r.get("nodes"))
    name = f" “{job['name']}”" if job.get("name") else ""
    lead = (f"<p class='big'>Job {esc(job.get('id', '?'))}{esc(name)}: {cell(state)}"
            f"{'' if state in FINAL else ' (so far)'} in {esc(duration(job_span(r)))}; "
            f"{len(runs)} run(s) on {len(nodes)} node(s), {ok} succeeded</p>")
    rows = []
    for node, agg in nodes.items():
        agg = as_dict(agg)
        rows.append([node, _cpu(r, node, agg), _rss(r, node, agg), ipc_text(r, node, agg),
                     _apps(r, agg), observer_text(as_dict(as_dict(r.get("observer")).get(node)))])
    table = html_table(["node", "tree CPU (100% = one core)", "tree RSS", "IPC",
                        "app metrics p50 / p95", "observer's cost (agent)"], rows,
                       css="grid headline") if rows else "<p class='muted'>no node ran</p>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in as_list(r.get("notes")))
    lead += f"<ul class='notice notes'>{notes}</ul>" if notes else ""
    return (f"<section class='headline' id='headline'>{lead}{table}"
            f"{_series_line(r, series, series_link)}</section>")


# --- the full tables -----------------------------------------------------------------------


def fact(key: str, value: Any) -> Any:
    """A node fact for people: bytes in binary units, times as dates."""
    if key.endswith("_bytes") and as_float(value) is not None:
        return number(as_float(value), "B")
    if key.endswith("_at"):
        return when(as_float(value))
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def environment_table(env: dict[str, Any]) -> str:
    """Nodes as columns, facts as rows."""
    nodes = list(env)
    keys: list[str] = []
    for facts in env.values():
        keys += [k for k in as_dict(facts) if k not in keys]
    rows = [[k, *(fact(k, as_dict(env[n]).get(k)) for n in nodes)] for k in keys]
    return html_table(["", *nodes], rows, css="grid env")


def runs_table(runs: list[Any]) -> str:
    rows = []
    for run in (as_dict(x) for x in runs):
        state = str(run.get("state")) + (" (lost)" if run.get("lost") else "")
        rows.append([run.get("id"), run.get("node"), run.get("iteration"), state,
                     run.get("exit_code"), duration(as_float(run.get("duration"))),
                     when(as_float(run.get("started_at"))),
                     "; ".join(str(n) for n in as_list(run.get("notes"))) or None])
    return html_table(["run", "node", "iteration", "state", "exit", "duration", "started",
                       "notes"], rows, css="grid runs")


def stats_table(summaries: dict[str, Any], catalogue: dict[str, Any], css: str,
                figures: dict[str, Any] | None = None) -> str:
    """One row per metric (main ones first), the statistics in the metric's unit;
    ``figures``: the per-run figures' median as a last column."""
    order = sorted(summaries, key=lambda m: (not as_dict(catalogue.get(m)).get("main"), m))
    rows = []
    for mid in order:
        info, stats = as_dict(catalogue.get(mid)), as_dict(summaries.get(mid))
        unit = str(info.get("unit") or "")
        cells = [stats.get(s) if s == "count" else number(as_float(stats.get(s)), unit)
                 for s in STATS]
        extra = [] if figures is None else \
            [number(as_float(as_dict(figures.get(mid)).get("p50")), unit)]
        rows.append([Raw(f"<code>{esc(mid)}</code>"), info.get("label") or mid,
                     info.get("direction"), *cells, *extra])
    headers = ["metric", "what", "better", *STATS] + ([] if figures is None else ["per-run p50"])
    return html_table(headers, rows, css=f"grid {css}")


def observer_table(obs: dict[str, Any]) -> str:
    rows = []
    for node, o in obs.items():
        o = as_dict(o)
        cpu, rss = as_dict(o.get("cpu_pct")), as_dict(o.get("rss"))
        rows.append([node, number(as_float(cpu.get("mean")), "%"),
                     number(as_float(cpu.get("max")), "%"), number(as_float(rss.get("max")), "B"),
                     o.get("spool_depth_max"), o.get("samples_dropped"), o.get("app_dropped")])
    return html_table(["node", "agent CPU mean", "CPU max", "RSS max", "spool max",
                       "samples dropped", "app datagrams dropped"], rows, css="grid observer")


def _phases(run: dict[str, Any], catalogue: dict[str, Any]) -> str:
    rows = []
    for ph in (as_dict(x) for x in as_list(run.get("phases"))):
        means = ", ".join(
            f"{m} {number(as_float(as_dict(s).get('mean')), str(as_dict(catalogue.get(m)).get('unit') or ''))}"
            for m, s in as_dict(ph.get("metrics")).items())
        rows.append([ph.get("phase"), number(as_float(ph.get("start")), "s"),
                     number(as_float(ph.get("duration")), "s"), means])
    return html_table(["phase", "start", "duration", "mean of the main metrics"], rows,
                      css="grid phases") if rows else ""


def run_details(run: dict[str, Any], catalogue: dict[str, Any]) -> str:
    """One run folded: its notes, its metrics, its phases."""
    notes = "".join(f"<li>{esc(n)}</li>" for n in as_list(run.get("notes")))
    body = [f"<ul class='notes'>{notes}</ul>" if notes else "",
            stats_table(as_dict(run.get("metrics")), catalogue, "run"), _phases(run, catalogue)]
    title = esc(f"Run {run.get('id', '?')} — {run.get('node', '?')}, "
                f"{run.get('state', '?')}, {duration(as_float(run.get('duration')))}")
    return f"<details class='run'><summary><b>{title}</b></summary>{''.join(body)}</details>"


def report_tables(r: dict[str, Any], level: int = 2) -> str:
    """Every table of a report, after its headline; ``level``: the headings' level."""
    catalogue, overall = as_dict(r.get("metrics")), as_dict(r.get("overall"))

    def h(text: str) -> str:
        return f"<h{level}>{esc(text)}</h{level}>"

    parts = [h("Environment"), environment_table(as_dict(r.get("environment"))),
             h("Runs"), runs_table(as_list(r.get("runs"))),
             h(f"Metrics over all runs ({overall.get('runs', '?')} runs)"),
             stats_table(as_dict(overall.get("metrics")), catalogue, "overall",
                         as_dict(overall.get("figures")))]
    nodes = as_dict(r.get("nodes"))
    if len(nodes) > 1:
        for node, agg in nodes.items():
            parts += [h(f"Node {node}"),
                      stats_table(as_dict(as_dict(agg).get("metrics")), catalogue, "node")]
    figures = as_dict(overall.get("figures"))
    if figures:
        parts += [h("Per-run figures, spread over the runs"),
                  stats_table(figures, catalogue, "figures")]
    if r.get("observer"):
        parts += [h("What the agent cost (observer)"), observer_table(as_dict(r["observer"]))]
    parts += [run_details(as_dict(run), catalogue) for run in as_list(r.get("runs"))]
    return "".join(parts)
