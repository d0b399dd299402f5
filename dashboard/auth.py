"""Who may change things: login, secure cookies, signed Bokeh sessions, allowed origins.

The rules (docs/architecture.md#security):

* Viewing needs no login while the dashboard listens on loopback only; on
  any other address every page and every Bokeh document needs a login too.
* Creating or cancelling a job always needs a login. A login is the
  ``[web] password``; an empty password means nobody can log in, so the
  dashboard is read-only.
* The login link (``/login/token?token=T``, which ``scripts/start-all``
  prints, as Jupyter prints its token URL) logs in as the password does.
  ``T`` is :func:`login_token` of the password, not the password, so the
  password is never in a URL, a browser's history or a ``Referer``. A wrong
  ``T`` is a failed login like a wrong password, and counts toward the same
  lockout.
* A login is a random id kept here (so logging out ends it at once) and
  carried in a Tornado secure cookie signed with ``cookie_secret``.
* Bokeh sessions are signed with a key derived from the same secret. When a
  page's Bokeh document is created, :meth:`Auth.process_request` copies the
  login id from the cookie into the signed session token, and every Bokeh
  callback that changes something asks :meth:`Auth.may_change` — which checks
  the login is still live — before doing it. A forged or replayed token fails
  Bokeh's signature check; a token from before logout fails here.
* Websocket origins (and ``Host`` headers of the dashboard's pages) must be
  the dashboard's own ``host:port`` or one of ``[web] allowed_origins``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

from bokeh.server.auth_provider import AuthProvider
from bokeh.server.util import check_allowlist
from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler, decode_signed_value

from config.schema import DashboardWeb

log = logging.getLogger(__name__)

COOKIE = "ptap_login"
LOGIN_SECONDS = 12 * 3600
TOKEN_KEY = "ptap_login"  # the login id's key in the Bokeh session token payload
FAILED_LOGINS = 5  # per address and window before further attempts are refused
FAILED_WINDOW_S = 60.0
TOKEN_PATH = "/login/token"  # the login link: TOKEN_PATH?token=<login_token(password)>
# PBKDF2 rounds for the link's token: a user's own (maybe weak) [web] password must not be
# cheap to recover from a link left in a browser's history. About 50 ms, once per process.
TOKEN_ROUNDS = 100_000


def login_token(password: str) -> str:
    """The secret of the login link for ``password`` (64 hex digits); ``""`` for no password.

    Derived from the password (PBKDF2-HMAC-SHA256), so the dashboard and
    ``scripts/start-all`` agree on it without storing a second secret, it
    survives restarts with the password, and changing the password revokes
    every link handed out. It is long-lived, as Jupyter's token is: the
    printed link keeps working in any browser for as long as the password
    stands (a single-use one would need state across restarts and would fail
    on the second click, in a second browser, or after a restart).
    """
    if not password:
        return ""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), b"ptap-dashboard-login-link",
                               TOKEN_ROUNDS).hex()


def is_loopback(addr: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: reachable from this host only."""
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return False


def own_origins(bind_addr: str, port: int) -> list[str]:
    """The ``host:port`` names a browser may use for this dashboard."""
    names = {bind_addr}
    if is_loopback(bind_addr):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    elif bind_addr in ("0.0.0.0", "::", ""):
        names = {socket.gethostname(), socket.getfqdn()}
    return sorted(f"[{n}]:{port}" if ":" in n and not n.startswith("[") else f"{n}:{port}"
                  for n in names if n)


class Auth:
    """The dashboard's secrets, live logins and origin allow-list (one per process)."""

    def __init__(self, web: DashboardWeb, port: int, listening_on: tuple[str, ...] = ()) -> None:
        self.random_secret = not web.cookie_secret
        root = web.cookie_secret or secrets.token_urlsafe(32)
        # Separate keys per use, so a cookie can never pass for a session token.
        self.cookie_secret = _derive(root, "tornado-secure-cookies").hex()
        self.bokeh_secret = _derive(root, "bokeh-session-tokens")
        self._password = web.password
        # Open viewing only when both the configuration and the socket really
        # listening (an inherited one may differ) say loopback.
        self.view_requires_login = not all(map(is_loopback, (web.bind_addr, *listening_on)))
        self.origins = sorted(set(own_origins(web.bind_addr, port)) | set(web.allowed_origins))
        self._logins: dict[str, float] = {}  # login id → expiry (time.time())
        self._failures: dict[str, list[float]] = {}

    @property
    def login_possible(self) -> bool:
        return bool(self._password)

    @cached_property
    def _token(self) -> str:
        return login_token(self._password)

    # --- logins ------------------------------------------------------------------------

    def check_password(self, password: str, remote: str) -> bool:
        """True for the right password; a burst of wrong ones locks ``remote`` out a while."""
        return self._attempt(password, self._password, remote, "password")

    def check_token(self, token: str, remote: str) -> bool:
        """True for the login link's token; a wrong one is a failed login (same lockout)."""
        return self._attempt(token, self._token, remote, "login link")

    def _attempt(self, given: str, expected: str, remote: str, what: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._failures.get(remote, []) if now - t < FAILED_WINDOW_S]
        if not self._password or len(recent) >= FAILED_LOGINS:
            self._failures[remote] = recent
            return False
        ok = hmac.compare_digest(given.encode(), expected.encode())
        if not ok:
            recent.append(now)
            log.warning("failed dashboard login from %s (wrong %s)", remote, what)
        self._failures[remote] = [] if ok else recent
        return ok

    def locked_out(self, remote: str) -> bool:
        now = time.monotonic()
        return len([t for t in self._failures.get(remote, []) if now - t < FAILED_WINDOW_S]) \
            >= FAILED_LOGINS

    def new_login(self) -> str:
        login = secrets.token_urlsafe(24)
        self._logins[login] = time.time() + LOGIN_SECONDS
        return login

    def end_login(self, login: str | None) -> None:
        if login:
            self._logins.pop(login, None)

    def active(self, login: str | None) -> bool:
        if not login:
            return False
        expiry = self._logins.get(login)
        if expiry is None or expiry < time.time():
            self._logins.pop(login, None)
            return False
        return True

    def login_from_cookie(self, value: str | bytes | None) -> str | None:
        """The live login id in a secure cookie value, or None."""
        if not value:
            return None
        raw = decode_signed_value(self.cookie_secret, COOKIE, value,
                                  max_age_days=LOGIN_SECONDS / 86400)
        login = raw.decode(errors="replace") if raw else None
        return login if self.active(login) else None

    # --- Bokeh ---------------------------------------------------------------------------

    def process_request(self, request: HTTPServerRequest) -> dict[str, Any]:
        """Bokeh hook: what goes into the (signed) session token of a new document."""
        morsel = request.cookies.get(COOKIE)
        return {TOKEN_KEY: self.login_from_cookie(morsel.value if morsel else None) or ""}

    def may_change(self, doc: Any) -> bool:
        """Inside a Bokeh callback: may this document's viewer create or cancel jobs?"""
        try:
            payload = doc.session_context.token_payload
        except (AttributeError, AssertionError):
            return False  # no session (e.g. a standalone document): never
        return self.active(payload.get(TOKEN_KEY))

    def bokeh_auth_provider(self) -> AuthProvider:
        """Bokeh's own login check for its pages and websockets on a non-loopback bind."""
        return _CookieAuth(self) if self.view_requires_login else _NoAuth()

    def host_allowed(self, host: str) -> bool:
        """Is a ``Host``/``Origin`` ``host:port`` one of ours (DNS rebinding guard)?"""
        return check_allowlist(host.lower(), self.origins)


def _derive(root: str, purpose: str) -> bytes:
    return hmac.new(root.encode(), purpose.encode(), hashlib.sha256).digest()


class _NoAuth(AuthProvider):
    """Loopback: Bokeh documents are readable without login (changes still need one)."""


class _CookieAuth(AuthProvider):
    def __init__(self, auth: Auth) -> None:
        self._auth = auth
        super().__init__()

    @property  # Bokeh calls it with the request *handler* (its docstring), not the request
    def get_user(self) -> Callable[[RequestHandler], str | None]:  # type: ignore[override]
        def user(handler: RequestHandler) -> str | None:
            return self._auth.login_from_cookie(handler.get_cookie(COOKIE))
        return user

    @property
    def login_url(self) -> str:
        return "/login"
