"""The dashboard's pages (the routes in docs/architecture.md#commands), each a small Tornado handler module."""

from __future__ import annotations

from typing import Any

from dashboard.context import ViewContext

JOB_ID = r"([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})"


def routes(ctx: ViewContext) -> list[Any]:
    """``(pattern, handler, kwargs)`` for Bokeh's Tornado application's ``extra_patterns``."""
    from dashboard.pages.history import HistoryPage
    from dashboard.pages.job import JobPage
    from dashboard.pages.jobs import CancelJobPage, JobsPage, NewJobPage
    from dashboard.pages.live import LivePage
    from dashboard.pages.login import LoginPage, LogoutPage
    from dashboard.pages.overview import OverviewPage
    from dashboard.pages.report import ComparePage, DownloadPage, ReportPage
    from dashboard.pages.status import StatusPage

    kw = {"ctx": ctx}
    return [
        (r"/", OverviewPage, kw),
        (r"/live", LivePage, kw),
        (r"/jobs", JobsPage, kw),
        (r"/jobs/new", NewJobPage, kw),
        (rf"/jobs/{JOB_ID}/cancel", CancelJobPage, kw),
        (rf"/jobs/{JOB_ID}", JobPage, kw),
        (rf"/report/{JOB_ID}/download", DownloadPage, kw),
        (rf"/report/{JOB_ID}", ReportPage, kw),
        (r"/compare/download", DownloadPage, kw),
        (r"/compare", ComparePage, kw),
        (r"/history", HistoryPage, kw),
        (r"/login", LoginPage, kw),
        (r"/logout", LogoutPage, kw),
        (r"/api/status", StatusPage, kw),
    ]
