"""The Bokeh charts of the live view and of a job page: figures, sources, streaming.

One :class:`ChartPanel` per document; its figures have the one chart style of
ptap (:func:`bus.views.charts.styled_figure`), as the report and history files do. Each source is named after its
:attr:`dashboard.series.Update.key` (``node:node1``, ``app:node1:latency``), so
a test or a user's console can find it with
``Bokeh.documents[0].get_model_by_name("node:node1")``; the CPU, memory,
disk and network charts of a node share its ``node:`` source. Sources for perf events
and app metrics appear when their first row does.

Call :meth:`ChartPanel.apply` only where Bokeh allows document changes: while
the document is being built, or in a next-tick or periodic callback.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from bokeh.layouts import column, gridplot
from bokeh.models import ColumnDataSource, DataRange1d
from bokeh.models.annotations import LabelSet
from bokeh.models.widgets import DataTable, Div, NumberFormatter, TableColumn
from bokeh.palettes import Category10_10

from bus.views.charts import styled_figure
from dashboard.series import CHART_COLUMNS, Update, View

log = logging.getLogger(__name__)

#: figure id → (title, y label, series: (column, legend)) for per-node charts.
FIGURES: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "cpu": ("CPU", "%", (("busy", "busy"), ("user", "user"), ("system", "system"),
                         ("iowait", "iowait"))),
    "mem": ("Memory", "% used", (("percent", "used %"),)),
    "disk": ("Disk", "MB/s", (("read_mbs", "read"), ("write_mbs", "write"))),
    "net": ("Network", "MB/s", (("rx_mbs", "rx"), ("tx_mbs", "tx"))),
    "proc": ("Job process tree: CPU", "% of one CPU", (("cpu_pct", "tree cpu"),)),
    "proc_rss": ("Job process tree: memory", "RSS MB", (("rss_mb", "tree rss"),)),
    "ipc": ("IPC (instructions / cycle)", "ipc", (("ipc", "ipc"),)),
}
DYNAMIC = {"perf": ("perf counters", "per second (log)"), "app": ("App metrics", "value")}
MAX_DYNAMIC_LINES = 12  # per chart: beyond that a legend is unreadable anyway
NODE_FIGURES = ("cpu", "mem", "disk", "net")
JOB_FIGURES = ("proc", "proc_rss", "perf", "ipc", "app")


class ChartPanel:
    """Every chart of one document, with its sources and the process-tree table.

    A node's view shows its CPU, memory, disk and network; a job's view adds
    the job's process tree, perf counters and IPC, and app metrics. Fewer
    figures make a lighter page: each one is redrawn on every update.
    """

    def __init__(self, view: View, window_s: float | None) -> None:
        self.view = view
        self.sources: dict[str, ColumnDataSource] = {}
        self._last_t: dict[str, float] = {}
        self._colour = 0
        self.x_range = DataRange1d(range_padding=0.02)
        if window_s:  # live: the x axis follows the newest point over the window
            self.x_range.follow = "end"
            self.x_range.follow_interval = window_s * 1000
        self.figures: dict[str, Any] = {}
        self.order = NODE_FIGURES + (JOB_FIGURES if view.job else ())
        for fid in self.order:
            if fid in DYNAMIC:
                self._figure(fid, *DYNAMIC[fid], log_y=fid == "perf")
                continue
            title, ylabel, lines = FIGURES[fid]
            fig = self._figure(fid, title, ylabel)
            chart = "node" if fid in NODE_FIGURES else "proc" if fid == "proc_rss" else fid
            for node in view.nodes:
                src = self._source(chart, node)
                for col, legend in lines:
                    self._line(fig, src, col, f"{node} {legend}" if len(view.nodes) > 1
                               else legend)
        for node in view.nodes:
            self._marks(node)
        self.tree = ColumnDataSource({c: [] for c in (*CHART_COLUMNS["tree"], "_t")},
                                     name="tree")
        self.note = Div(text="", name="chart_note")
        parts = [self.note, self._grid()]
        if view.job:
            parts += [Div(text="<b>Job process tree</b> (latest sample)"), self._tree_table()]
        self.layout = column(*parts, sizing_mode="stretch_width")

    # --- building -------------------------------------------------------------------------

    def _figure(self, fid: str, title: str, ylabel: str, log_y: bool = False) -> Any:
        fig = styled_figure(title, ylabel, x_axis_type="datetime", x_range=self.x_range,
                            y_axis_type="log" if log_y else "linear", name=f"fig:{fid}",
                            output_backend="canvas")
        self.figures[fid] = fig
        return fig

    def _source(self, chart: str, node: str, label: str = "") -> ColumnDataSource:
        key = f"{chart}:{node}" + (f":{label}" if label else "")
        src = self.sources.get(key)
        if src is None:
            src = ColumnDataSource({c: [] for c in CHART_COLUMNS[chart]}, name=key)
            self.sources[key] = src
        return src

    def _line(self, fig: Any, src: ColumnDataSource, col: str, legend: str) -> None:
        colour = Category10_10[self._colour % len(Category10_10)]
        self._colour += 1
        fig.line("t", col, source=src, legend_label=legend, color=colour, line_width=1.6)
        if fig.name.removeprefix("fig:") in JOB_FIGURES:
            # A short job has few samples, maybe one: a line alone would not show it.
            fig.scatter("t", col, source=src, legend_label=legend, color=colour, size=4)
        fig.legend.location = "top_left"
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"

    def _marks(self, node: str) -> None:
        """Marks (``PTAP mark ...``) as dashed vertical lines on every chart, labelled on CPU."""
        src = self._source("mark", node)
        for fig in self.figures.values():
            fig.vspan(x="t", source=src, line_color="#777777", line_dash="dashed", line_width=1)
        self.figures["cpu"].add_layout(LabelSet(
            x="t", y=4, y_units="screen", text="text", source=src, angle=math.pi / 2,
            text_font_size="8pt", text_color="#555555", x_offset=-2))

    def _grid(self) -> Any:
        return gridplot([self.figures[f] for f in self.order], ncols=2,
                        sizing_mode="stretch_width", merge_tools=False)

    def _tree_table(self) -> DataTable:
        num = NumberFormatter(format="0.0")
        cols = [TableColumn(field="pid", title="pid"), TableColumn(field="comm", title="command"),
                TableColumn(field="cpu_pct", title="cpu %", formatter=num),
                TableColumn(field="rss_mb", title="RSS MB", formatter=num),
                TableColumn(field="threads", title="threads")]
        return DataTable(source=self.tree, columns=cols, height=160, index_position=None,
                         sizing_mode="stretch_width", name="tree_table")

    # --- data ----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty every source (before filling a new window from history)."""
        for src in self.sources.values():
            src.data = {c: [] for c in src.data}
        self.tree.data = {c: [] for c in self.tree.data}
        self._last_t.clear()

    def apply(self, updates: list[Update], rollover: int) -> int:
        """Stream ``updates`` into their sources; returns the rows added.

        Rows not newer than what a source already holds are dropped, so a
        batch the agent resent, or one that arrived during the backfill,
        never shows twice.
        """
        added = 0
        for u in updates:
            if not self.view.wants(u):
                continue
            if u.chart == "tree":
                self.tree.data = dict(u.columns)
                continue
            if u.chart in DYNAMIC and u.chart not in self.figures:
                continue
            src = self._dynamic(u) if u.chart in DYNAMIC else self.sources.get(u.key)
            if src is None:
                continue
            added += self._stream(src, u, rollover)
        return added

    def _stream(self, src: ColumnDataSource, u: Update, rollover: int) -> int:
        last = self._last_t.get(u.key, -math.inf)
        ts = u.columns["t"]
        start = next((i for i, t in enumerate(ts) if t > last), len(ts))
        if start == len(ts):
            return 0
        new: dict[str, Any] = {str(c): u.columns[str(c)][start:] for c in src.data}
        src.stream(new, rollover=rollover)
        self._last_t[u.key] = ts[-1]
        return len(ts) - start

    def _dynamic(self, u: Update) -> ColumnDataSource | None:
        src = self.sources.get(u.key)
        if src is None:
            fig = self.figures[u.chart]
            if sum(k.startswith(f"{u.chart}:") for k in self.sources) >= MAX_DYNAMIC_LINES:
                return None
            src = self._source(u.chart, u.node, u.label)
            legend = u.label if len(self.view.nodes) == 1 else f"{u.node} {u.label}"
            self._line(fig, src, "value", legend)
        return src
