"""Who may change things: secrets, logins, the login link, the Bokeh session check, origins.

The login link's endpoint is tested against a real dashboard process (and its
real manager, agent and InfluxDB; :mod:`tests.dashboard.conftest`) over HTTP.
"""

from __future__ import annotations

import http.client
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.web import create_signed_value

from config.schema import DashboardWeb
from dashboard.auth import (
    COOKIE,
    FAILED_LOGINS,
    TOKEN_KEY,
    TOKEN_PATH,
    Auth,
    is_loopback,
    login_token,
    own_origins,
)
from tests.conftest_influx import InfluxFixture
from tests.dashboard.conftest import PASSWORD, DashboardProc
from tests.integration.conftest import Cluster


def auth(**web: Any) -> Auth:
    return Auth(DashboardWeb(**{"password": "pw", **web}), 5006)


def cookie(a: Auth, login: str) -> bytes:
    return create_signed_value(a.cookie_secret, COOKIE, login)


def get(uri: str, headers: HTTPHeaders | None = None) -> HTTPServerRequest:
    headers = headers or HTTPHeaders()
    headers["Host"] = "127.0.0.1:5006"
    return HTTPServerRequest(start_line=RequestStartLine("GET", uri, "HTTP/1.1"), headers=headers)


def doc_with(payload: dict[str, Any]) -> Any:
    return SimpleNamespace(session_context=SimpleNamespace(token_payload=payload))


def test_loopback_and_origins() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("x")
    assert own_origins("127.0.0.1", 5006) == ["127.0.0.1:5006", "[::1]:5006", "localhost:5006"]
    a = auth(allowed_origins=("dash.example.com:443",))
    assert a.host_allowed("127.0.0.1:5006") and a.host_allowed("dash.example.com:443")
    assert not a.host_allowed("evil.example:5006") and not a.host_allowed("127.0.0.1:5007")


def test_viewing_needs_a_login_unless_everything_is_loopback() -> None:
    assert not auth().view_requires_login
    assert auth(bind_addr="0.0.0.0").view_requires_login
    # An inherited socket that really listens elsewhere counts, whatever the config says.
    assert Auth(DashboardWeb(), 5006, ("0.0.0.0",)).view_requires_login


def test_secrets_are_random_when_empty_and_separate_per_use() -> None:
    a, b = auth(), auth()
    assert a.random_secret and a.cookie_secret != b.cookie_secret
    fixed = auth(cookie_secret="s3cret")
    assert not fixed.random_secret and fixed.cookie_secret == auth(cookie_secret="s3cret").cookie_secret
    assert fixed.bokeh_secret.hex() != fixed.cookie_secret and len(fixed.bokeh_secret) >= 32


def test_password_logins_and_lockout() -> None:
    a = auth()
    assert not a.check_password("wrong", "1.2.3.4")
    assert a.check_password("pw", "1.2.3.4")
    for _ in range(FAILED_LOGINS):
        a.check_password("wrong", "5.6.7.8")
    assert a.locked_out("5.6.7.8") and not a.check_password("pw", "5.6.7.8")
    assert not auth(password="").check_password("", "1.2.3.4")


def test_cookie_login_lives_until_logout() -> None:
    a = auth()
    login = a.new_login()
    assert a.login_from_cookie(cookie(a, login)) == login
    assert a.login_from_cookie(cookie(auth(), login)) is None  # signed with another secret
    assert a.login_from_cookie(b"garbage") is None and a.login_from_cookie(None) is None
    a.end_login(login)
    assert a.login_from_cookie(cookie(a, login)) is None


def test_bokeh_session_carries_the_login_and_callbacks_check_it() -> None:
    a = auth()
    login = a.new_login()
    request = get("/bk/live/autoload.js",
                  HTTPHeaders({"Cookie": f"{COOKIE}={cookie(a, login).decode()}"}))
    payload = a.process_request(request)
    assert payload == {TOKEN_KEY: login}
    assert a.may_change(doc_with(payload))
    assert a.process_request(get("/")) == {TOKEN_KEY: ""}
    assert not a.may_change(doc_with({TOKEN_KEY: ""}))
    assert not a.may_change(doc_with({TOKEN_KEY: "made-up"}))
    assert not a.may_change(SimpleNamespace(session_context=None))
    a.end_login(login)
    assert not a.may_change(doc_with(payload))  # logout ends it inside open documents too


# --- the login link ---------------------------------------------------------------------------


def test_login_token_is_derived_from_the_password_and_is_not_it() -> None:
    token = login_token("pw")
    assert token == login_token("pw") and len(token) == 64 and int(token, 16) >= 0
    assert token != login_token("pw2") and "pw" not in token
    assert login_token("") == ""


def test_token_logins_share_the_password_lockout() -> None:
    a = auth()
    assert a.check_token(login_token("pw"), "1.2.3.4")
    assert not a.check_token(login_token("other"), "1.2.3.4")
    assert not a.check_token("", "1.2.3.4") and not a.check_token("é", "1.2.3.4")
    for _ in range(FAILED_LOGINS - 1):
        a.check_password("wrong", "5.6.7.8")
    assert not a.locked_out("5.6.7.8")
    assert not a.check_token("0" * 64, "5.6.7.8")  # a wrong token is a failed login too
    assert a.locked_out("5.6.7.8")
    assert not a.check_token(login_token("pw"), "5.6.7.8")
    assert not a.check_password("pw", "5.6.7.8")
    # With no password there is no token either: the empty one logs nobody in.
    assert not auth(password="").check_token(login_token(""), "1.2.3.4")


def http_get(d: DashboardProc, path: str, cookie: str = "") -> tuple[int, HTTPHeaders, str]:
    """One GET, redirects not followed: status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        headers = HTTPHeaders()
        for name, value in response.getheaders():
            headers.add(name, value)
        return response.status, headers, response.read().decode(errors="replace")
    finally:
        conn.close()


def link(token: str) -> str:
    return f"{TOKEN_PATH}?{urllib.parse.urlencode({'token': token})}"


@pytest.mark.integration
def test_the_login_link_logs_in_and_leaves_the_address_bar(dashboard: DashboardProc) -> None:
    token = login_token(PASSWORD)
    status, _, page = http_get(dashboard, "/jobs/new")
    assert status == 200 and 'id="login-needed"' in page
    status, headers, _ = http_get(dashboard, link(token))
    assert status == 302
    assert headers["Location"] == "/"  # the token leaves the address bar and every Referer
    login = next(c for c in headers.get_list("Set-Cookie") if c.startswith(f"{COOKIE}="))
    assert "httponly" in login.lower() and "samesite=strict" in login.lower()
    assert token not in login
    status, _, page = http_get(dashboard, "/jobs/new", login.split(";")[0])
    assert status == 200 and 'id="login-needed"' not in page and 'id="logout"' in page
    # Neither the token nor the password reaches the dashboard's log (the access log
    # prints the path alone).
    assert TOKEN_PATH in dashboard.log()
    assert token not in dashboard.log() and PASSWORD not in dashboard.log()


@pytest.mark.integration
def test_a_wrong_login_link_is_a_failed_login(dash_cluster: Cluster, influxdb: InfluxFixture,
                                              tmp_path: Path, module_logs: list[Path]) -> None:
    # A dashboard of its own: this test locks 127.0.0.1 out of it for a minute.
    d = DashboardProc(tmp_path, dash_cluster.manager.router_port, influxdb.url,
                      dash_cluster.database)  # type: ignore[attr-defined]
    module_logs.append(d.log_path)
    # The password itself is no token, nor is another password's token.
    wrong = ["0" * 64, PASSWORD, login_token(PASSWORD + "x"), "é"]
    assert len(wrong) == FAILED_LOGINS - 1
    try:
        d.start()
        for token in wrong:
            status, headers, page = http_get(d, link(token))
            assert status == 403 and "Location" not in headers
            assert "This login link is wrong" in page and COOKIE not in headers.get("Set-Cookie", "")
        status, _, _ = http_get(d, TOKEN_PATH)  # no token at all: the last try
        assert status == 403
        status, headers, page = http_get(d, link(login_token(PASSWORD)))
        assert status == 429 and "Too many failed logins" in page  # even the right one, now
        assert COOKIE not in headers.get("Set-Cookie", "")
        assert d.log().count("wrong login link") == FAILED_LOGINS
    finally:
        d.stop()
