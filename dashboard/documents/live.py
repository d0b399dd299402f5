"""``/bk/live``: the live view's document (the page is :mod:`dashboard.pages.live`).

Its charts and their feeding are :class:`dashboard.live.LiveState`: the
history of the window from InfluxDB first, then streamed rows.
"""

from __future__ import annotations

import html
from typing import Any

from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models.widgets import Div

from dashboard.context import ViewContext
from dashboard.documents import Failed, argument, arguments, failure_html
from dashboard.live import NAME_RE, LiveState, parse_nodes, parse_window
from dashboard.series import View


async def prepare_live(ctx: ViewContext, session_context: Any) -> LiveState:
    """``prepare`` of ``/bk/live``: the view from the page's arguments, then the backfill."""
    job = argument(session_context, "job")
    job = job if NAME_RE.match(job) else ""
    nodes = parse_nodes(arguments(session_context, "node"))
    if job and not nodes:
        found = await ctx.client.job(job)
        nodes = parse_nodes([r["node"] for r in found.get("runs", [])])
    if not nodes:
        raise ValueError("no node given: open /live?node=NAME")
    view = View(nodes, job, scope="job" if job else "system")
    state = LiveState(ctx, view, parse_window(argument(session_context, "window")))
    try:
        await state.start()
    except BaseException:
        state.close()
        raise
    return state


def build_live(doc: Document, state: LiveState | Failed | None) -> None:
    """``build`` of ``/bk/live``: title, window selector, charts."""
    if not isinstance(state, LiveState):
        doc.add_root(Div(text=failure_html(state), name="error"))
        return
    panel = state.attach(doc)
    what = ", ".join(state.view.nodes) + (f" — job {state.view.job}" if state.view.job else "")
    doc.title = f"ptap live: {what}"
    header = row(Div(text=f"<h2 style='margin:0'>Live: {html.escape(what)}</h2>", width=600),
                 state.window_select())
    doc.add_root(column(header, panel.layout, sizing_mode="stretch_width", name="live"))
