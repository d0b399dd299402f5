"""``/``: nodes (state, last heartbeat, capabilities, CPU/memory sparklines) and running jobs.

Every open overview refreshes every :data:`REFRESH_S`, but they share one
:class:`OverviewData` snapshot, fetched at most once per refresh whatever the
number of tabs: one ``nodes.list``, one ``jobs.list`` and one InfluxDB query
(the sparklines: CPU busy and memory used, averaged per 15 s over 10 min).
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from bokeh.document import Document, without_document_lock
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Range1d
from bokeh.models.widgets import DataTable, Div, HTMLTemplateFormatter, TableColumn
from bokeh.plotting import figure

from bus.errors import ClientError
from dashboard.influx import HistoryUnavailable, sparklines
from dashboard.pages.base import FINAL_STATES, Page, fmt_age, fmt_time, table_height

if TYPE_CHECKING:
    from dashboard.app import Dashboard

log = logging.getLogger(__name__)

REFRESH_S = 2.0
NODE_COLUMNS = ("name", "state", "heartbeat", "cpus", "memory", "perf", "pmu", "labels",
                "running")
JOB_COLUMNS = ("id", "name", "state", "nodes", "created", "command")


@dataclass
class Snapshot:
    """What the overview shows, as of ``at`` (``time.monotonic()``)."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    sparks: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    error: str = ""
    at: float = 0.0


class OverviewData:
    """The shared, briefly cached snapshot and the ``/bk/overview`` document."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash
        self._snap = Snapshot()
        self._inflight: asyncio.Future[Snapshot] | None = None

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
            snap.nodes = [dict(n) for n in nodes]  # the rows read them as plain maps
            snap.jobs = [dict(j) for j in jobs if j.get("state") not in FINAL_STATES]
        except ClientError as exc:
            snap.error = str(exc)
        try:
            snap.sparks = await sparklines(self.dash.influx)
        except HistoryUnavailable as exc:
            snap.error = snap.error or str(exc)
        return snap

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)

    async def prepare(self, session_context: Any) -> Snapshot:
        return await self.snapshot()

    def build(self, doc: Document, snap: Any) -> None:
        OverviewDoc(self, doc, snap if isinstance(snap, Snapshot) else Snapshot())


class OverviewDoc:
    """One tab's overview document."""

    def __init__(self, data: OverviewData, doc: Document, snap: Snapshot) -> None:
        self.data = data
        self.doc = doc
        self.nodes = ColumnDataSource({c: [] for c in NODE_COLUMNS}, name="nodes")
        self.jobs = ColumnDataSource({c: [] for c in JOB_COLUMNS}, name="running_jobs")
        self.sparks: dict[str, ColumnDataSource] = {}
        self.status = Div(text="", name="status")
        self.spark_rows = column(name="sparklines", sizing_mode="stretch_width")
        self.nodes_table, self.jobs_table = self._nodes_table(), self._jobs_table()
        layout = column(self.status, Div(text="<h2>Nodes</h2>"), self.nodes_table,
                        Div(text="<h3>CPU busy % (blue) and memory used % (orange), 10 min</h3>"),
                        self.spark_rows, Div(text="<h2>Running jobs</h2>"), self.jobs_table,
                        sizing_mode="stretch_width", name="overview")
        self.apply(snap)
        doc.add_root(layout)
        doc.title = "ptap overview"
        # Bokeh runs coroutine callbacks; its type stubs only know plain ones.
        doc.add_periodic_callback(self.refresh, int(REFRESH_S * 1000))  # type: ignore[arg-type]

    def _nodes_table(self) -> DataTable:
        live = HTMLTemplateFormatter(template='<a href="/live?node=<%- encodeURIComponent(value) %>">'
                                              '<%- value %></a>')
        titles = {"heartbeat": "last heartbeat", "running": "running"}
        cols = [TableColumn(field=c, title=titles.get(c, c), formatter=live) if c == "name"
                else TableColumn(field=c, title=titles.get(c, c)) for c in NODE_COLUMNS]
        return DataTable(source=self.nodes, columns=cols, height=120, index_position=None,
                         sizing_mode="stretch_width", name="nodes_table")

    def _jobs_table(self) -> DataTable:
        link = HTMLTemplateFormatter(template='<a href="/jobs/<%- value %>"><%- value %></a>')
        cols = [TableColumn(field=c, title=c, formatter=link) if c == "id"
                else TableColumn(field=c, title=c) for c in JOB_COLUMNS]
        return DataTable(source=self.jobs, columns=cols, height=120, index_position=None,
                         sizing_mode="stretch_width", name="jobs_table")

    @without_document_lock
    async def refresh(self) -> None:
        """Periodic: fetch (shared) outside the document lock, apply in a next tick."""
        snap = await self.data.snapshot()
        self.doc.add_next_tick_callback(partial(self.apply, snap))

    def apply(self, snap: Snapshot) -> None:
        """Put a snapshot into the document (while building it, or in a next tick)."""
        self.status.text = (f"<p class='error'>{html.escape(snap.error)}</p>" if snap.error else "")
        self.nodes.data = node_columns(snap.nodes)
        self.jobs.data = job_columns(snap.jobs)
        self.nodes_table.height = table_height(len(snap.nodes))
        self.jobs_table.height = table_height(len(snap.jobs))
        names = [n["name"] for n in snap.nodes]
        if names != list(self.sparks):
            self._rebuild_sparks(names)
        for name, src in self.sparks.items():
            src.data = snap.sparks.get(name) or {"t": [], "cpu": [], "mem": []}

    def _rebuild_sparks(self, names: list[str]) -> None:
        self.sparks = {n: ColumnDataSource({"t": [], "cpu": [], "mem": []}, name=f"spark:{n}")
                       for n in names}
        rows: list[Any] = []
        for name, src in self.sparks.items():
            fig = figure(height=50, width=320, x_axis_type="datetime", toolbar_location=None,
                         y_range=Range1d(start=0, end=100), name=f"sparkfig:{name}")
            fig.axis.visible = False
            fig.grid.visible = False
            for col, colour in (("cpu", "#1f77b4"), ("mem", "#ff7f0e")):
                fig.line("t", col, source=src, color=colour, line_width=1.5)
                fig.scatter("t", col, source=src, color=colour, size=3)  # one point shows too
            rows.append(row(Div(text=f"<b>{html.escape(name)}</b>", width=160), fig))
        self.spark_rows.children = rows


def node_columns(nodes: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The nodes table: one row per node, capabilities in words."""
    out: dict[str, list[Any]] = {c: [] for c in NODE_COLUMNS}
    for n in nodes:
        facts = n.get("facts") or {}
        paranoid = facts.get("perf_paranoid")
        perf = "yes" if facts.get("perf_available") else "no"
        if facts.get("perf_available") and paranoid is not None:
            perf += f" (paranoid {paranoid})"
        out["name"].append(n.get("name", ""))
        out["state"].append(n.get("state", ""))
        out["heartbeat"].append(fmt_age(n.get("silent_for")))
        out["cpus"].append(facts.get("cpus", ""))
        out["memory"].append(f"{(facts.get('memory_bytes') or 0) / 2**30:.1f} GiB")
        out["perf"].append(perf)
        out["pmu"].append("yes" if facts.get("pmu_hardware") else "no")
        out["labels"].append(", ".join(facts.get("labels") or []))
        out["running"].append(", ".join(n.get("running") or []) or "—")
    return out


def job_columns(jobs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c: [] for c in JOB_COLUMNS}
    for j in jobs:
        spec = j.get("spec") or {}
        out["id"].append(j.get("id", ""))
        out["name"].append(j.get("name") or spec.get("name") or "")
        out["state"].append(j.get("state", ""))
        out["nodes"].append(", ".join(sorted({r.get("node", "") for r in j.get("runs", [])})))
        out["created"].append(fmt_time(j.get("created_at")))
        out["command"].append(" ".join(spec.get("command") or [])[:120])
    return out



class OverviewPage(Page):
    """``GET /``: the frame; the content is the ``/bk/overview`` document."""

    def get(self) -> None:
        self.page("overview.html", bokeh_script=self.bokeh("overview"))
