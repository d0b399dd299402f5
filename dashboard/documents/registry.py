"""Every Bokeh document the dashboard serves, by path: the one table of ``/bk/...``.

The documents themselves are the modules of this package (``live``,
``job``, ``history``) and the overview's (:mod:`dashboard.pages.overview`).
Each is given only what it reads (:mod:`dashboard.context`).
"""

from __future__ import annotations

from functools import partial

from bokeh.application import Application

from dashboard.context import ViewContext
from dashboard.documents import application
from dashboard.documents import history as history_doc
from dashboard.documents import job as job_doc
from dashboard.documents import live as live_doc
from dashboard.pages.overview import OverviewData


def applications(ctx: ViewContext, overview: OverviewData) -> dict[str, Application]:
    """``{"/bk/overview": ..., "/bk/live": ..., ...}`` for :class:`BokehTornado`."""
    auth = ctx.auth
    return {
        "/bk/overview": application(auth, overview.prepare, overview.build),
        "/bk/live": application(auth, partial(live_doc.prepare_live, ctx), live_doc.build_live),
        "/bk/job": application(auth, partial(job_doc.prepare_job, ctx),
                               partial(job_doc.build_job, ctx)),
        "/bk/history": application(auth, partial(history_doc.prepare_history, ctx.client),
                                   history_doc.build_history),
    }
