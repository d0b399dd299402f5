"""``/bk/history?series=NAME``: a series' charts, one per metric, change points drawn.

The figures are :func:`bus.views.history.history_figures`, the same as in
``ptap history --format html``; here each point opens its job's page when
clicked. The page around it (:mod:`dashboard.pages.history`) shows the
headline and the tables.
"""

from __future__ import annotations

from typing import Any

from bokeh.document import Document
from bokeh.layouts import column
from bokeh.models.widgets import Div

from bus.views.history import history_figures
from dashboard.documents import argument, failure_html
from dashboard.security import DashboardClient

JOB_URL = "/jobs/{job}"
MAX_SERIES_LEN = 200


async def prepare_history(client: DashboardClient, session_context: Any) -> dict[str, Any]:
    series = argument(session_context, "series").strip()
    if not series or len(series) > MAX_SERIES_LEN:
        raise ValueError("no series given: open /history?series=NAME")
    return await client.history(series)


def build_history(doc: Document, prepared: Any) -> None:
    if not isinstance(prepared, dict):
        doc.add_root(Div(text=failure_html(prepared), name="error"))
        return
    figures = history_figures(prepared, JOB_URL)
    if not figures:
        figures = [Div(text="<p class='muted'>no metric has points yet</p>", name="empty")]
    doc.title = f"ptap history {prepared.get('series', '')}"
    doc.add_root(column(*figures, sizing_mode="stretch_width", name="history"))
