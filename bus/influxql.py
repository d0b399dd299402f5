"""The one InfluxQL reader: statements quoted safely, answers checked, over HTTP ``/query``.

Both sides that read InfluxDB use it: the dashboard (charts' history,
sparklines, run summaries: :class:`InfluxQLReader`) and the manager's
analysis (:mod:`manager.analysis.query` quotes with :func:`quote_str` and
checks each answer with :func:`statement_series`; its HTTP is the sink's,
which asks for msgpack). Every value put into a statement is an integer or
passes through :func:`quote_str`; every answer with an ``error`` or cut
short by ``max-row-limit`` (``partial``) raises :class:`QueryFailed`, so
no caller mistakes a failed or truncated query for an empty one.

:class:`InfluxQLReader` speaks InfluxDB's v1 ``/query`` (1.x, or 2.x/3.x
in v1 compatibility with a token): ``POST`` with ``epoch=ns``, several
statements in one request (``;``-separated), through Tornado's
``AsyncHTTPClient`` on the caller's asyncio loop.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterable
from typing import Any

#: One series of an answer: ``{"name", "tags", "columns", "values"}`` (times in ns).
Series = dict[str, Any]


class InfluxUnavailable(Exception):
    """InfluxDB did not answer, or answered with an HTTP error; the message is one line."""


class QueryFailed(InfluxUnavailable):
    """InfluxDB answered, but a statement failed or its answer was truncated."""


def quote_str(value: str) -> str:
    """An InfluxQL string literal (``'...'``) for ``value``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier (``"..."``), safe for keywords such as ``user``."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def any_of(tag: str, values: Iterable[str]) -> str:
    """``("tag" = 'a' OR "tag" = 'b')``."""
    return "(" + " OR ".join(f"{quote_ident(tag)} = {quote_str(v)}" for v in values) + ")"


def time_window(start_ns: int, end_ns: int | None = None) -> str:
    """``time >= A [AND time <= B]`` (ns integers)."""
    cond = f"time >= {int(start_ns)}"
    return cond if end_ns is None else f"{cond} AND time <= {int(end_ns)}"


def statement_series(result: dict[str, Any], what: str = "the query") -> list[Series]:
    """One statement's result → its series; :class:`QueryFailed` on an error or a
    truncated answer (``partial``: the server's ``max-row-limit``)."""
    if "error" in result:
        raise QueryFailed(f"InfluxDB query failed ({what}): {result['error']}")
    if result.get("partial"):
        raise QueryFailed(f"InfluxDB truncated {what} (max-row-limit); raise [http] "
                          "max-row-limit in influxdb.conf or set it to 0")
    return list(result.get("series") or [])


def answer_series(doc: dict[str, Any], what: str = "the query") -> list[list[Series]]:
    """A whole answer document → each statement's series, in statement order."""
    return [statement_series(r, what) for r in doc.get("results") or []]


class InfluxQLReader:
    """Reads with InfluxQL over v1 ``/query``; ``close()`` when done."""

    def __init__(self, url: str, database: str, *, username: str = "", password: str = "",
                 token: str = "", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.db = database
        self._timeout = timeout
        self._headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if username:
            # Basic auth: InfluxDB 1.x reads credentials from the URL or this header,
            # never from a form body.
            pair = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {pair}"
        elif token:
            self._headers["Authorization"] = f"Token {token}"
        self._client: Any = None

    def _http(self) -> Any:
        # Made on first use: Tornado ties a client to the loop running then.
        if self._client is None:
            from tornado.httpclient import AsyncHTTPClient

            self._client = AsyncHTTPClient(force_instance=True, max_clients=8)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def query_doc(self, influxql: str, db: str | None = None, *,
                        epoch: str | None = "ns") -> dict[str, Any]:
        """InfluxDB's answer document for ``influxql`` (HTTP errors raise
        :class:`InfluxUnavailable`; statement errors are left in the document)."""
        from tornado.httpclient import HTTPClientError, HTTPRequest

        form = {"q": influxql, "db": self.db if db is None else db}
        if epoch:
            form["epoch"] = epoch
        request = HTTPRequest(f"{self.url}/query", method="POST", headers=self._headers,
                              body=urllib.parse.urlencode(form),
                              connect_timeout=self._timeout, request_timeout=self._timeout)
        try:
            response = await self._http().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.url}: {exc}") from exc
        if response.code != 200:
            body = (response.body or b"")[:200].decode(errors="replace")
            raise InfluxUnavailable(f"InfluxDB at {self.url}: HTTP {response.code} {body}")
        try:
            doc: dict[str, Any] = json.loads(response.body or b"{}")
        except ValueError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.url}: unreadable answer: {exc}") from exc
        return doc

    async def query(self, statements: list[str]) -> list[list[Series]]:
        """Run the statements in one request; for each, its series (times as ns)."""
        return answer_series(await self.query_doc(";\n".join(statements)))
