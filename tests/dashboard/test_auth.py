"""Who may change things: secrets, logins, the Bokeh session check, origins."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.web import create_signed_value

from config.schema import DashboardWeb
from dashboard.auth import COOKIE, FAILED_LOGINS, TOKEN_KEY, Auth, is_loopback, own_origins


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
