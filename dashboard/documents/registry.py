"""Every Bokeh document the dashboard serves, by path: the one table of ``/bk/...``.

The documents themselves are the modules of this package (``live``,
``job``, ``history``) and the overview's (:mod:`dashboard.pages.overview`).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from bokeh.application import Application

from dashboard.auth import Auth
from dashboard.documents import application
from dashboard.documents import history as history_doc
from dashboard.documents import job as job_doc
from dashboard.documents import live as live_doc

if TYPE_CHECKING:
    from dashboard.app import Dashboard


def applications(dash: Dashboard, auth: Auth) -> dict[str, Application]:
    """``{"/bk/overview": ..., "/bk/live": ..., ...}`` for :class:`BokehTornado`."""
    return {
        "/bk/overview": application(auth, dash.overview.prepare, dash.overview.build),
        "/bk/live": application(auth, partial(live_doc.prepare_live, dash), live_doc.build_live),
        "/bk/job": application(auth, partial(job_doc.prepare_job, dash),
                               partial(job_doc.build_job, dash)),
        "/bk/history": application(auth, partial(history_doc.prepare_history, dash),
                                   history_doc.build_history),
    }
