"""``/history?series=NAME``: a series over its jobs, change points named and drawn.

The headline and the tables are :mod:`bus.views.history`, as in ``ptap
history --format html``; the charts are the ``/bk/history`` document
(:mod:`dashboard.documents.history`), where each point opens its job. When
the manager answers with an error (no such series, InfluxDB away), the page
says so in one line.
"""

from __future__ import annotations

from bus.errors import ClientError
from bus.views.history import history_headline, history_tables
from dashboard.documents.history import JOB_URL, MAX_SERIES_LEN
from dashboard.pages.base import Page, PageError
from dashboard.pages.report import manager_error


class HistoryPage(Page):
    """``GET /history?series=NAME``; without a series, the form."""

    async def get(self) -> None:
        series = self.get_argument("series", "").strip()
        if len(series) > MAX_SERIES_LEN:
            raise PageError(400, f"a series name has at most {MAX_SERIES_LEN} characters")
        headline = tables = error = script = ""
        if series:
            try:
                history = await self.ctx.client.history(series)
                headline = history_headline(history)
                tables = history_tables(history, level=3, job_link=JOB_URL)
                script = self.bokeh("history", series=series)
            except ClientError as exc:
                error = manager_error(exc)
        self.page("history.html", series=series, headline=headline, tables=tables, error=error,
                  bokeh_script=script)
