"""What every dashboard page shares: login state, host check, errors, Bokeh embedding.

A page is a Tornado handler rendering a template from ``dashboard/templates``
(auto-escaped). Pages that change something call :meth:`Page.require_login`;
Tornado checks the XSRF token of every POST before the handler runs.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
import time
from typing import TYPE_CHECKING, Any, cast

from bokeh.embed import server_document
from bokeh.resources import Component, Resources
from bokeh.server.views.static_handler import StaticHandler
from tornado.web import HTTPError, RequestHandler

from bus.errors import ErrorCode, ManagerUnreachable, RequestFailed
from bus.states import RunState
from dashboard.auth import COOKIE, LOGIN_SECONDS, Auth
from dashboard.context import ViewContext

if TYPE_CHECKING:
    from bokeh.server.tornado import BokehTornado

log = logging.getLogger(__name__)

#: The BokehJS bundles the dashboard's documents need. Bokeh's autoload.js sends
#: every server document all five, and a first visit parsed 3.9 MB of JavaScript
#: for it; not bokeh-gl (every plot draws on a canvas: dashboard/charts.py) nor
#: bokeh-mathjax (no TeX in any label), which are 2 MB of them.
BUNDLES: tuple[Component, ...] = ("bokeh", "bokeh-widgets", "bokeh-tables")

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
FINAL_STATES = frozenset(s.value for s in RunState if s.final)


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "—"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(start: float | None, end: float | None) -> str:
    if not start:
        return "—"
    seconds = (end or time.time()) - start
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.1f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def table_height(rows: int) -> int:
    """Pixels for a Bokeh DataTable of ``rows`` rows (a header, 25 px a row), at most 400."""
    return min(400, 32 + 25 * max(1, rows))


class PageError(HTTPError):
    """An error page with a one-line ``message`` for the user (the HTTP reason stays standard)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


class Page(RequestHandler):
    """Base of the dashboard's pages; ``self.ctx`` holds what they reach for
    (:class:`dashboard.context.ViewContext`)."""

    ctx: ViewContext

    def initialize(self, ctx: ViewContext) -> None:
        self.ctx = ctx

    @property
    def auth(self) -> Auth:
        return self.ctx.auth

    def set_default_headers(self) -> None:
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        # Pages are live views: never from a cache. This also keeps a page that was left
        # out of the back/forward cache, where its Bokeh websocket would stay open and
        # the dashboard would keep streaming to a page nobody sees.
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        # A page answered under a foreign Host name is how DNS rebinding reads
        # a loopback dashboard: answer only to our own names.
        if not self.auth.host_allowed(self.request.host):
            raise PageError(403, "this dashboard does not answer to that host name")
        if self.auth.view_requires_login and not self.current_user and not self.open_page:
            self.redirect(f"/login?next={self.request.uri}" if self.request.method == "GET"
                          else "/login")

    #: Pages anyone may see even when viewing needs a login (the login page itself).
    open_page = False

    def get_current_user(self) -> str | None:
        return self.auth.login_from_cookie(self.get_cookie(COOKIE))

    def require_login(self, what: str) -> str:
        """The login id, or 403: creating and cancelling always need a login."""
        login = self.current_user
        if not login:
            log.warning("refused %s from %s: not logged in", what, self.request.remote_ip)
            raise PageError(403, f"Log in to {what}.")
        return str(login)

    def set_login_cookie(self, login: str) -> None:
        self.set_signed_cookie(COOKIE, login, expires_days=LOGIN_SECONDS / 86400, httponly=True,
                               samesite="Strict", secure=self.request.protocol == "https")

    def get_template_namespace(self) -> dict[str, Any]:
        """Helpers every template (and included template) may use."""
        ns = super().get_template_namespace()
        ns.update(fmt_time=fmt_time, fmt_duration=fmt_duration, fmt_age=fmt_age)
        return ns

    def page(self, template: str, **kw: Any) -> None:
        """Render ``template`` with what every page's frame needs."""
        self.render(template, user=self.current_user, login_possible=self.auth.login_possible,
                    bokeh_script=kw.pop("bokeh_script", ""), **kw)

    def bokeh(self, app: str, **arguments: str) -> str:
        """The ``<script>`` tags that embed Bokeh document ``/bk/<app>`` with these
        arguments: BokehJS's :data:`BUNDLES`, then the document's autoload.js told to
        load none (Bokeh's own would load every bundle)."""
        url = f"{self.request.protocol}://{self.request.host}/bk/{app}"
        # Where BokehTornado (our application) serves its static files.
        base = cast("BokehTornado", self.application).resources()
        bundles = Resources(mode=base.mode, root_url=base.root_url, components=list(BUNDLES),
                            path_versioner=StaticHandler.append_version)
        tags = "".join(f'<script src="{html.escape(src)}"></script>\n'
                       for src in bundles.js_files)
        return tags + server_document(url, resources=None,
                                      arguments={k: v for k, v in arguments.items() if v})

    def valid_id(self, value: str, what: str = "job id") -> str:
        if not ID_RE.match(value or ""):
            raise PageError(400, f"Not a valid {what}.")
        return value

    async def manager(self, call: Any) -> Any:
        """Await a client call; a dead or refusing manager becomes a clear error page."""
        try:
            return await call
        except ManagerUnreachable as exc:
            raise PageError(503, f"The manager is not answering: {exc}") from None
        except RequestFailed as exc:
            status = 404 if exc.code == ErrorCode.NOT_FOUND else 400
            raise PageError(status, f"The manager refused: {exc}") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason = exc.message if isinstance(exc, PageError) else self._reason
        self.render("error.html", user=self.current_user, login_possible=self.auth.login_possible,
                    status=status_code, reason=reason, bokeh_script="")
