"""``/login`` and ``/logout``: the password from ``[web] password``, a secure cookie.

A wrong password is answered 403; after :data:`dashboard.auth.FAILED_LOGINS`
wrong ones within a minute from one address, that address gets 429 for the
rest of the minute, so the password cannot be guessed at network speed.
"""

from __future__ import annotations

import logging

from dashboard.auth import COOKIE
from dashboard.pages.base import Page, PageError

log = logging.getLogger(__name__)


def safe_next(target: str) -> str:
    """Only a path on this dashboard: ``/login?next=`` must not become an open redirect."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


class LoginPage(Page):
    open_page = True

    def get(self) -> None:
        self.page("login.html", error="", next_url=safe_next(self.get_argument("next", "/")))

    def post(self) -> None:
        remote = self.request.remote_ip or "?"
        next_url = safe_next(self.get_body_argument("next", "/"))
        if not self.auth.login_possible:
            raise PageError(403, "Login is off: [web] password is empty in the dashboard's "
                                 "configuration, so this dashboard is read-only.")
        if self.auth.locked_out(remote):
            raise PageError(429, "Too many wrong passwords; wait a minute.")
        if not self.auth.check_password(self.get_body_argument("password", ""), remote):
            self.set_status(403)
            self.page("login.html", error="Wrong password.", next_url=next_url)
            return
        self.set_login_cookie(self.auth.new_login())
        log.info("dashboard login from %s", remote)
        self.redirect(next_url)


class LogoutPage(Page):
    open_page = True

    def post(self) -> None:
        # Ending the login here also ends it inside every open Bokeh document.
        self.auth.end_login(self.current_user)
        self.clear_cookie(COOKIE)
        self.redirect("/")
