"""InfluxDB sink over the v1 HTTP API: ``POST /write`` and ``/query``.

InfluxDB 1.x serves these natively; 2.x and 3.x serve them as
v1-compatible endpoints, for which pass ``token`` (sent as
``Authorization: Token ...``) and use the bucket's mapped database name.

HTTP goes through Tornado's ``SimpleAsyncHTTPClient`` on the one asyncio
loop. It opens a connection per request (no keep-alive without pycurl); on
loopback that costs ~0.1 ms per request, small next to a batch of points.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import json
import logging
import urllib.parse
from typing import Any

import msgpack
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from .base import SinkRejected, SinkUnavailable, error_detail, error_for_status

log = logging.getLogger(__name__)

__all__ = ["InfluxV1Sink"]

MSGPACK = "application/x-msgpack"


def _is_msgpack(response: HTTPResponse) -> bool:
    return str(response.headers.get("Content-Type", "")).startswith(MSGPACK)


class InfluxV1Sink:
    """Writes line protocol to ``{url}/write?db=...&precision=ns`` and reads with InfluxQL.

    ``username``/``password`` go as the ``u``/``p`` parameters (1.x auth),
    ``token`` as an ``Authorization: Token`` header (2.x/3.x v1-compat).
    ``gzip=True`` compresses bodies and asks for compressed query answers
    (worth it across a network, not on loopback: influxd gzips a 26 MB answer
    at about 10 MB/s, three times slower than sending it plain). ``timeout`` bounds each request; ``max_clients`` bounds
    concurrent requests.

    Bodies above ``expect_continue_above`` bytes are sent with ``Expect:
    100-continue``: influxd answers 413 as soon as it sees a Content-Length
    over its ``max-body-size`` and closes, and a client still pushing a large
    body then gets a broken pipe instead of the 413 (seen with 2 MB bodies
    against 1.6.7), which would look like an outage and be retried forever.
    Waiting for "100 Continue" costs one round trip, only on large bodies.
    """

    def __init__(
        self,
        url: str,
        db: str,
        *,
        rp: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        gzip: bool = False,
        timeout: float = 10.0,
        max_clients: int = 4,
        expect_continue_above: int | None = 64 * 1024,
    ) -> None:
        self.url = url.rstrip("/")
        self.db = db
        self._gzip = gzip
        self._timeout = timeout
        self._max_clients = max_clients
        self._expect_above = expect_continue_above
        self._auth: dict[str, str] = {}
        if username is not None:
            self._auth = {"u": username, "p": password or ""}
        params = {"db": db, "precision": "ns", **self._auth}
        if rp:
            params["rp"] = rp
        self._write_url = f"{self.url}/write?{urllib.parse.urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._client: SimpleAsyncHTTPClient | None = None
        self._closed = False

    def _http(self) -> SimpleAsyncHTTPClient:
        # Created on first use: Tornado binds a client to the running loop,
        # and a sink may be built before the loop starts.
        if self._closed:
            raise RuntimeError("InfluxV1Sink is closed")
        if self._client is None:
            self._client = SimpleAsyncHTTPClient(force_instance=True, max_clients=self._max_clients)
        return self._client

    async def _fetch(self, request: HTTPRequest) -> HTTPResponse:
        """Send one request; transport failures become SinkUnavailable."""
        try:
            return await self._http().fetch(request, raise_error=False)
        except HTTPClientError as exc:  # 599: timeout or connection closed early
            raise SinkUnavailable(f"InfluxDB at {self.url}: {exc}") from exc
        except OSError as exc:  # refused, reset, unreachable (StreamClosedError too)
            raise SinkUnavailable(f"InfluxDB at {self.url}: {exc}") from exc

    async def write(self, lines: bytes, points: int) -> None:
        """Store ``lines`` (``points`` points); returns once InfluxDB answered 2xx."""
        body = gzip_module.compress(lines, compresslevel=1) if self._gzip else lines
        request = HTTPRequest(
            self._write_url,
            method="POST",
            body=body,
            headers=self._headers,
            connect_timeout=self._timeout,
            request_timeout=self._timeout,
            expect_100_continue=self._expect_above is not None and len(body) > self._expect_above,
        )
        response = await self._fetch(request)
        if 200 <= response.code < 300:
            return
        detail = error_detail(response.body, response.headers)
        raise error_for_status(
            response.code, detail, response.headers.get("Retry-After"), where=self.url
        )

    async def query(
        self, influxql: str, db: str | None = None, *, epoch: str | None = "ns"
    ) -> dict[str, Any]:
        """Run InfluxQL and return InfluxDB's answer document (``{"results": [...]}``).

        Timestamps come as integers in ``epoch`` units (``None``: RFC 3339
        strings). A statement that fails raises SinkRejected with its error,
        so a caller never mistakes a failed query for an empty one.

        The answer is asked for as msgpack, which InfluxDB 1.4+ produces twice
        as fast as JSON for a large result and which decodes ten times faster
        (a report reads hundreds of thousands of rows); the document is the
        same. A server that ignores the header answers JSON, decoded as such.
        """
        form = {"q": influxql, **self._auth}
        if db is not None or self.db:
            form["db"] = db if db is not None else self.db
        if epoch:
            form["epoch"] = epoch
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Accept"] = MSGPACK
        request = HTTPRequest(
            f"{self.url}/query",
            method="POST",  # POST: CREATE/DROP need it, and it keeps queries out of URLs
            body=urllib.parse.urlencode(form),
            headers=headers,
            connect_timeout=self._timeout,
            request_timeout=self._timeout,
            decompress_response=self._gzip,  # Tornado asks for gzip unless told not to
        )
        response = await self._fetch(request)
        if response.code != 200:
            body: bytes | str = response.body
            if _is_msgpack(response):  # error_detail reads JSON
                with contextlib.suppress(ValueError, msgpack.UnpackException):
                    body = json.dumps(msgpack.unpackb(body, raw=False, strict_map_key=False))
            detail = error_detail(body, response.headers)
            raise error_for_status(
                response.code, detail, response.headers.get("Retry-After"), where=self.url
            )
        try:
            doc: dict[str, Any] = (
                msgpack.unpackb(response.body, raw=False, strict_map_key=False)
                if _is_msgpack(response) else json.loads(response.body or b"{}"))
        except (ValueError, msgpack.UnpackException) as exc:
            raise SinkUnavailable(f"InfluxDB at {self.url}: unreadable query answer: {exc}"
                                  ) from exc
        errors = [r["error"] for r in doc.get("results", []) if "error" in r]
        if errors:
            raise SinkRejected("; ".join(str(e) for e in errors), status=response.code)
        return doc

    async def prepare(self) -> None:
        """Create the database if it is missing (``CREATE DATABASE`` is idempotent)."""
        name = self.db.replace("\\", "\\\\").replace('"', '\\"')
        await self.query(f'CREATE DATABASE "{name}"', db="")

    async def close(self) -> None:
        """Close the HTTP client; the sink cannot be used afterwards."""
        self._closed = True
        if self._client is not None:
            self._client.close()
            self._client = None
