"""The dashboard process: one Tornado application hosting the Bokeh documents, on one loop.

As in Bokeh's ``examples/server/api/tornado_embed.py``, the Tornado
application *is* Bokeh's (``BokehTornado``): the dashboard's own pages are
its ``extra_patterns``, and the Bokeh documents they embed are served under
``/bk/...`` by the same server, on the same asyncio loop as the ZeroMQ
client, the shared PUB subscriber and the InfluxDB reader.

The manager is reached with the CURVE keys of ``[security]``
(:mod:`dashboard.security`), by the client and the feed alike.
Security settings of the web side (see :mod:`dashboard.auth`) are all made here: signed
session ids and tokens, the websocket origin allow-list, XSRF on every form,
secure cookies, and Bokeh's own login check when the bind is not loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import zmq.asyncio
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from bus.daemon import StartupError
from bus.ports import ManagerAddress
from config.schema import DashboardConfig
from dashboard.auth import TOKEN_PATH, Auth
from dashboard.context import ViewContext
from dashboard.documents.registry import applications
from dashboard.feed import Feed
from dashboard.influx import InfluxReader
from dashboard.pages import overview, routes
from dashboard.pages.base import Page, PageError
from dashboard.security import DashboardClient, dashboard_keys

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
#: Largest websocket message a browser may send the Bokeh documents.
WEBSOCKET_MAX_MESSAGE = 1024 * 1024


def manager_addresses(cfg: DashboardConfig) -> tuple[str, str]:
    """The manager's ROUTER and PUB endpoints (docs/protocol.md "Ports")."""
    manager = ManagerAddress(cfg.remote_server.server_ip, cfg.remote_server.server_port)
    return manager.router, manager.pub


class TokenLoginPage(Page):
    """``GET /login/token?token=T``: the login link ``scripts/start-all`` prints.

    The right ``T`` (:func:`dashboard.auth.login_token` of the password) sets the
    same login cookie as the password form, then redirects to ``/``, so the token
    leaves the address bar and no page is ever shown at a URL holding it. A GET
    that logs in could log a victim into someone else's session (login CSRF), but
    only with that dashboard's own token, which only its owner has; the cookie
    stays SameSite=Strict.
    """

    open_page = True

    def get(self) -> None:
        remote = self.request.remote_ip or "?"
        if not self.auth.login_possible:
            raise PageError(403, "Login is off: [web] password is empty in the dashboard's "
                                 "configuration, so this dashboard is read-only.")
        if self.auth.locked_out(remote):
            raise PageError(429, "Too many failed logins; wait a minute.")
        if not self.auth.check_token(self.get_argument("token", ""), remote):
            raise PageError(403, "This login link is wrong, or from before the password "
                                 "changed: log in with the password instead.")
        self.set_login_cookie(self.auth.new_login())
        log.info("dashboard login from %s (login link)", remote)
        self.redirect("/")

    def _request_summary(self) -> str:
        # Tornado's access and error logs print the URI: never the token, a login in itself.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"


class Dashboard:
    """Everything one ``ptap-dashboard`` runs. ``async with Dashboard(cfg) as d: ...``."""

    def __init__(self, cfg: DashboardConfig, *, listen_fd: int | None = None) -> None:
        self.cfg = cfg
        self._listen_fd = listen_fd
        self.router_address, self.pub_address = manager_addresses(cfg)
        # First: a key problem must stop start-up before anything is opened.
        self.curve = dashboard_keys(cfg.security)
        self._ctx = zmq.asyncio.Context()
        self.client = DashboardClient(
            self.router_address, timeout=cfg.remote_server.timeout, ctx=self._ctx,
            curve=self.curve)
        self.feed = Feed(self.pub_address, self._ctx, curve=self.curve)
        self.influx = InfluxReader(cfg.influxdb)
        self.overview: overview.OverviewData | None = None
        self.port = 0
        self.auth: Auth | None = None
        self._server: BaseServer | None = None
        self._http: HTTPServer | None = None

    @property
    def url(self) -> str:
        host = self.cfg.web.bind_addr
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    async def __aenter__(self) -> Dashboard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen, then start the client, the feed and the Bokeh server."""
        if os.environ.get("BOKEH_ALLOW_WS_ORIGIN"):
            # Bokeh would let it replace our origin allow-list: fail closed.
            raise StartupError("BOKEH_ALLOW_WS_ORIGIN is set; unset it and list extra "
                               "origins in [web] allowed_origins instead")
        sockets = self._listen()
        self.port = int(sockets[0].getsockname()[1])
        self.auth = auth = Auth(self.cfg.web, self.port,
                                tuple(str(s.getsockname()[0]) for s in sockets))
        self.client.open()
        self.feed.start()
        # The pages and documents get these parts, never this object (dashboard/context.py).
        ctx = ViewContext(client=self.client, feed=self.feed, influx=self.influx, auth=auth)
        self.overview = overview.OverviewData(ctx)
        tornado_app = self._tornado_app(ctx, self.overview)
        self._http = HTTPServer(tornado_app, max_body_size=1024 * 1024, xheaders=False)
        self._http.add_sockets(sockets)
        self._server = BaseServer(IOLoop.current(), tornado_app, self._http)
        self._server.start()
        self._log_started(auth)

    def _listen(self) -> list[socket.socket]:
        if self._listen_fd is not None:
            sock = socket.socket(fileno=self._listen_fd)
            sock.setblocking(False)
            return [sock]
        web = self.cfg.web
        try:
            return bind_sockets(web.port, address=web.bind_addr)
        except OSError as exc:
            raise StartupError(f"cannot listen on {web.bind_addr}:{web.port}: {exc.strerror} — "
                               "is another dashboard running? see [web] port") from None

    @staticmethod
    def _tornado_app(ctx: ViewContext, overview_data: overview.OverviewData) -> BokehTornado:
        auth = ctx.auth
        return BokehTornado(
            applications(ctx, overview_data),
            extra_patterns=[(TOKEN_PATH, TokenLoginPage, {"ctx": ctx}), *routes(ctx)],
            use_index=False, redirect_root=False,
            secret_key=auth.bokeh_secret, sign_sessions=True, generate_session_ids=True,
            extra_websocket_origins=auth.origins, auth_provider=auth.bokeh_auth_provider(),
            # Nothing from the browser's headers or cookies goes into session tokens
            # (they are readable by page scripts); only the login id, via process_request.
            include_headers=[], include_cookies=[],
            # A closed tab's document is freed within ~15 s (Bokeh: 32 s).
            check_unused_sessions_milliseconds=5_000,
            unused_session_lifetime_milliseconds=10_000,
            xsrf_cookies=True, cookie_secret=auth.cookie_secret, login_url="/login",
            xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"},
            template_path=str(TEMPLATES), compress_response=True,
            # A browser sends events and small patches; Bokeh's 20 MiB default let a
            # flood of large junk frames take the dashboard past 2 GB.
            websocket_max_message_size_bytes=WEBSOCKET_MAX_MESSAGE)

    def _log_started(self, auth: Auth) -> None:
        log.info("ptap-dashboard at %s (manager %s, %s, InfluxDB %s, database %s)", self.url,
                 self.router_address,
                 f"CURVE with the admin key in {self.cfg.security.keys_dir}" if self.curve
                 else "no CURVE", self.influx.url, self.influx.db)
        log.info("viewing: %s; changes: %s; websocket origins: %s",
                 "login required (not loopback)" if auth.view_requires_login else "open (loopback)",
                 f"login with [web] password or the link {TOKEN_PATH}?token=…"
                 if auth.login_possible
                 else "nobody ([web] password is empty: read-only)", ", ".join(auth.origins))
        if auth.random_secret:
            log.info("[web] cookie_secret is empty: using a random secret; logins and open "
                     "pages end when the dashboard restarts")

    async def serve_forever(self) -> None:
        """Serve until cancelled (by the stop signal handler of :mod:`bus.daemon`)."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Stop serving and close every socket and client (idempotent)."""
        if self._server is not None:
            self._server.stop(wait=False)
            self._server = None
        if self._http is not None:
            await self._http.close_all_connections()
            self._http = None
        if self.overview is not None:
            await self.overview.close()
            self.overview = None
        await self.feed.close()
        await self.client.close()
        self.influx.close()
        self._ctx.destroy(linger=0)
