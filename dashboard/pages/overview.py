"""``/``: a fleet at a glance: nodes summarised by state and label, one page of the
node table with CPU and memory sparklines, and the running jobs.

Sized for thousands of nodes. The page used to hold one Bokeh figure per node,
and with 1,598 nodes known the document took 64 s to build (issue 12). Now:

- the summary (nodes by state, and by label and state) covers every node, but is
  one block of HTML;
- the table holds one page of :data:`PAGE_SIZE` nodes, chosen by state, label
  and name filters; live nodes come first, lost ones after;
- a sparkline is an SVG polyline drawn inside its row (an HTML template cell),
  not a figure, and the sparklines of a page are read with ONE InfluxQL
  statement for all its nodes (:func:`dashboard.influx.sparklines`), cached per
  page for every tab showing it;
- every open overview shares one snapshot per refresh (:data:`REFRESH_S`): one
  ``nodes.list`` and one ``jobs.list``, summarised once.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bokeh.document import Document, without_document_lock
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, CustomJS
from bokeh.models.widgets import (
    Button,
    DataTable,
    Div,
    HTMLTemplateFormatter,
    Select,
    TableColumn,
    TextInput,
)

from bus.errors import ClientError
from dashboard.context import FleetSources
from dashboard.influx import HistoryUnavailable, sparklines
from dashboard.pages.base import FINAL_STATES, Page
from dashboard.pages.overview_rows import (
    ANY_LABEL,
    COLUMN_WIDTHS,
    JOB_COLUMNS,
    NODE_COLUMNS,
    PAGE_SIZE,
    ROW_HEIGHT,
    SPARK_CACHE,
    SPARK_MINUTES,
    SPARK_TEMPLATE,
    STATE_FILTERS,
    FleetSummary,
    display_order,
    job_columns,
    node_columns,
    options,
    select_nodes,
    summarise,
    summary_html,
)

log = logging.getLogger(__name__)

REFRESH_S = 2.0
#: BokehJS 3 redraws a DataTable when its view's row indices change, so a page
#: replaced by another page of the same length stayed drawn as the first one.
REDRAW_TABLE = "const view = Bokeh.index.find_one(table); if (view != null) view.updateGrid()"


@dataclass
class Snapshot:
    """What the overview shows, as of ``at`` (``time.monotonic()``); ``nodes`` in
    display order (live first, then lost, each by name)."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    summary: FleetSummary = field(default_factory=FleetSummary)
    error: str = ""
    at: float = 0.0


class OverviewData:
    """The shared snapshot, the sparklines of each page shown, and ``/bk/overview``."""

    def __init__(self, dash: FleetSources) -> None:
        self.dash = dash
        self._snap = Snapshot()
        self._inflight: asyncio.Future[Snapshot] | None = None
        self._sparks: OrderedDict[tuple[str, ...], tuple[float, asyncio.Future[Any]]] = \
            OrderedDict()

    async def snapshot(self) -> Snapshot:
        """The current snapshot; fetched when older than a refresh, once for all callers."""
        if time.monotonic() - self._snap.at < REFRESH_S * 0.75:
            return self._snap
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
        fut = self._inflight
        try:
            self._snap = await asyncio.shield(fut)
        finally:
            if self._inflight is fut and fut.done():
                self._inflight = None
        return self._snap

    async def _fetch(self) -> Snapshot:
        snap = Snapshot(at=time.monotonic())
        try:
            nodes, jobs = await asyncio.gather(self.dash.client.nodes(),
                                               self.dash.client.jobs(limit=50))
            plain: list[dict[str, Any]] = [dict(n) for n in nodes]  # the rows read them as maps
            snap.nodes, snap.summary = display_order(plain), summarise(plain)
            snap.jobs = [dict(j) for j in jobs if j.get("state") not in FINAL_STATES]
        except ClientError as exc:
            snap.error = str(exc)
        return snap

    async def sparks(self, names: tuple[str, ...]) -> tuple[dict[str, Any], str]:
        """Sparklines of the nodes ``names`` (one page) and an error line, read at most
        once per refresh for every tab showing that page."""
        now = time.monotonic()
        cached = self._sparks.get(names)
        if cached is None or now - cached[0] >= REFRESH_S * 0.75:
            cached = (now, asyncio.ensure_future(sparklines(self.dash.influx, list(names),
                                                            SPARK_MINUTES)))
            self._sparks[names] = cached
            while len(self._sparks) > SPARK_CACHE:
                self._sparks.popitem(last=False)
        self._sparks.move_to_end(names)
        try:
            return await asyncio.shield(cached[1]), ""
        except HistoryUnavailable as exc:
            return {}, str(exc)

    async def close(self) -> None:
        pending = [f for f in [self._inflight, *(f for _, f in self._sparks.values())]
                   if f is not None and not f.done()]
        for fut in pending:
            fut.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def prepare(self, session_context: Any) -> tuple[Snapshot, dict[str, Any], str]:
        snap = await self.snapshot()
        first = tuple(str(n.get("name", "")) for n in snap.nodes[:PAGE_SIZE])
        return (snap, *await self.sparks(first))

    def build(self, doc: Document, prepared: Any) -> None:
        if isinstance(prepared, tuple) and len(prepared) == 3:
            OverviewDoc(self, doc, *prepared)
        else:
            OverviewDoc(self, doc, Snapshot(), {}, "")


class OverviewDoc:
    """One tab's overview: its filters and page, over the shared snapshot."""

    def __init__(self, data: OverviewData, doc: Document, snap: Snapshot,
                 sparks: dict[str, Any], spark_error: str) -> None:
        self.data, self.doc = data, doc
        self.snap, self.spark_data, self.spark_error = snap, sparks, spark_error
        self.page = 0
        self.nodes = ColumnDataSource({c: [] for c in NODE_COLUMNS}, name="nodes")
        self.jobs = ColumnDataSource({c: [] for c in JOB_COLUMNS}, name="running_jobs")
        self.status = Div(text="", name="status")
        self.summary = Div(text="", name="summary", sizing_mode="stretch_width")
        self.state = Select(title="state", value="all", options=options(STATE_FILTERS),
                            name="state_filter", width=120)
        self.label = Select(title="label", value=ANY_LABEL, options=options([ANY_LABEL]),
                            name="label_filter", width=200)
        self.search = TextInput(title="name contains", value="", name="name_filter", width=200)
        self.prev = Button(label="◀ previous", name="prev_page", width=110)
        self.next = Button(label="next ▶", name="next_page", width=110)
        self.page_info = Div(text="", name="page_info")
        for widget in (self.state, self.label, self.search):
            widget.on_change("value", self._filters_changed)
        self.prev.on_click(partial(self._turn, -1))
        self.next.on_click(partial(self._turn, 1))
        self.nodes_table, self.jobs_table = self._nodes_table(), self._jobs_table()
        for source, table in ((self.nodes, self.nodes_table), (self.jobs, self.jobs_table)):
            source.js_on_change("data", CustomJS(args={"table": table}, code=REDRAW_TABLE))
        layout = column(
            self.status, Div(text="<h2>Nodes</h2>"), self.summary,
            row(self.state, self.label, self.search, self.prev, self.next, self.page_info),
            self.nodes_table,
            Div(text="<p class='muted'>Sparklines: CPU busy % (blue) and memory used % "
                     "(orange), last 10 min.</p>"),
            Div(text="<h2>Running jobs</h2>"), self.jobs_table,
            sizing_mode="stretch_width", name="overview")
        self.show()
        doc.add_root(layout)
        doc.title = "ptap overview"
        # Bokeh runs coroutine callbacks; its type stubs only know plain ones.
        doc.add_periodic_callback(self.refresh, int(REFRESH_S * 1000))  # type: ignore[arg-type]

    def _nodes_table(self) -> DataTable:
        live = HTMLTemplateFormatter(template='<a href="/live?node=<%- encodeURIComponent(value) %>">'
                                              '<%- value %></a>')
        titles = {"heartbeat": "last heartbeat", "cpu_now": "cpu", "spark": "cpu / mem, 10 min"}
        special: dict[str, dict[str, Any]] = {
            "name": {"formatter": live},
            "spark": {"formatter": HTMLTemplateFormatter(template=SPARK_TEMPLATE)}}
        # The sparkline's points are fields of its template, not columns of their own.
        # Widths are proportions (the table fits its width); the sparkline's is its own.
        cols = [TableColumn(field=c, title=titles.get(c, c), sortable=False,
                            width=COLUMN_WIDTHS.get(c, 80), **special.get(c, {}))
                for c in NODE_COLUMNS[:-2]]
        return DataTable(source=self.nodes, columns=cols, height=self._height(1),
                         row_height=ROW_HEIGHT, index_position=None, sortable=False,
                         sizing_mode="stretch_width", name="nodes_table")

    def _jobs_table(self) -> DataTable:
        link = HTMLTemplateFormatter(template='<a href="/jobs/<%- value %>"><%- value %></a>')
        cols = [TableColumn(field=c, title=c, formatter=link) if c == "id"
                else TableColumn(field=c, title=c) for c in JOB_COLUMNS]
        return DataTable(source=self.jobs, columns=cols, height=120, index_position=None,
                         sizing_mode="stretch_width", name="jobs_table")

    @staticmethod
    def _height(rows: int) -> int:
        return 32 + ROW_HEIGHT * min(max(rows, 1), 20)

    # --- what this tab shows -------------------------------------------------------

    def _page_names(self, snap: Snapshot) -> tuple[str, ...]:
        """The names on this tab's page of ``snap`` (outside the document lock: reads only)."""
        selected = select_nodes(snap.nodes, self.state.value, self.label.value,
                                self.search.value)
        page = min(self.page, max(0, (len(selected) - 1) // PAGE_SIZE))
        return tuple(str(n.get("name", ""))
                     for n in selected[page * PAGE_SIZE:(page + 1) * PAGE_SIZE])

    def show(self) -> None:
        """Put the snapshot, this tab's filters and page, into the document."""
        snap = self.snap
        error = snap.error or self.spark_error
        self.status.text = f"<p class='error'>{html.escape(error)}</p>" if error else ""
        self.summary.text = summary_html(snap.summary)
        labels = [ANY_LABEL, *(name for name, _ in snap.summary.labels)]
        if self.label.value not in labels:
            labels.append(self.label.value)  # a label all of whose nodes went is kept
        if labels != self.label.options:
            self.label.options = options(labels)
        selected = select_nodes(snap.nodes, self.state.value, self.label.value,
                                self.search.value)
        pages = max(1, math.ceil(len(selected) / PAGE_SIZE))
        self.page = min(self.page, pages - 1)
        shown = selected[self.page * PAGE_SIZE:(self.page + 1) * PAGE_SIZE]
        first = self.page * PAGE_SIZE + 1
        self.page_info.text = (f"nodes {first:,}–{first + len(shown) - 1:,} of "
                               f"{len(selected):,} (page {self.page + 1} of {pages})"
                               if shown else "no node matches these filters")
        self.prev.disabled, self.next.disabled = self.page == 0, self.page >= pages - 1
        self.nodes.data = node_columns(shown, self.spark_data)
        self.nodes_table.height = self._height(len(shown))
        self.jobs.data = job_columns(snap.jobs)
        self.jobs_table.height = min(400, 32 + 25 * max(1, len(snap.jobs)))

    def apply(self, snap: Snapshot, sparks: dict[str, Any], spark_error: str) -> None:
        """A refresh's result, in a next tick (under the document lock)."""
        self.snap, self.spark_data, self.spark_error = snap, sparks, spark_error
        self.show()

    @without_document_lock
    async def refresh(self) -> None:
        """Periodic, and after a filter or page change: fetch (shared) outside the
        document lock, apply in a next tick."""
        snap = await self.data.snapshot()
        sparks, error = await self.data.sparks(self._page_names(snap))
        self.doc.add_next_tick_callback(partial(self.apply, snap, sparks, error))

    def _filters_changed(self, attr: str, old: Any, new: Any) -> None:
        self.page = 0
        self._changed()

    def _turn(self, step: int) -> None:
        self.page = max(0, self.page + step)
        self._changed()

    def _changed(self) -> None:
        """Show the new selection at once (sparklines as known), then its sparklines."""
        self.show()
        self.doc.add_next_tick_callback(self.refresh)  # type: ignore[arg-type]


class OverviewPage(Page):
    """``GET /``: the frame; the content is the ``/bk/overview`` document."""

    def get(self) -> None:
        self.page("overview.html", bokeh_script=self.bokeh("overview"))
