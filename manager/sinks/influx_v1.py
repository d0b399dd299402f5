"""InfluxDB sink over the v1 HTTP API: ``POST /write`` and ``/query``.

InfluxDB 1.x serves these natively; 2.x and 3.x serve them as
v1-compatible endpoints, for which pass ``token`` (sent as
``Authorization: Token ...``) and use the bucket's mapped database name.

HTTP goes through a ``urllib3`` connection pool (the HTTP library
``influxdb-client`` itself uses) kept alive across requests, in a small
thread pool of its own: ``max_clients`` threads and as many connections, so
that ingest's writes in flight each have a connection and a request never
waits for a connect. A request runs off the event loop (urllib3 is
blocking), which costs a thread hand-off per request — nothing next to a
write of thousands of points — and lets sending a megabyte body and waiting
for InfluxDB's answer happen without the GIL.

A body over influxd's ``max-body-size`` is answered 413 as soon as the
headers arrive, and influxd closes the connection while the body is still
being sent. urllib3 swallows that broken pipe and reads the answer, so the
write policy sees "too large" (split it) and not an outage (retry it
forever). ``tests/manager/test_sinks.py`` checks that against a real influxd.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip as gzip_module
import json
import logging
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from .base import (
    SinkMisconfigured,
    SinkRejected,
    SinkUnavailable,
    error_detail,
    error_for_status,
)

log = logging.getLogger(__name__)

__all__ = ["InfluxV1Sink"]

MSGPACK = "application/x-msgpack"


def _is_msgpack(response: urllib3.BaseHTTPResponse) -> bool:
    return str(response.headers.get("Content-Type", "")).startswith(MSGPACK)


class InfluxV1Sink:
    """Writes line protocol to ``{url}/write?db=...&precision=ns`` and reads with InfluxQL.

    ``username``/``password`` go as HTTP basic auth (1.x auth; 1.x reads
    credentials from the URL or this header, never from a form body), else
    ``token`` as an ``Authorization: Token`` header (2.x/3.x v1-compat).
    ``gzip=True`` compresses bodies and asks for compressed query answers
    (worth it across a network, not on loopback: influxd gzips a 26 MB
    answer at about 10 MB/s, three times slower than sending it plain).
    ``timeout`` bounds connecting and each wait for data; ``max_clients``
    bounds concurrent requests (and so kept-alive connections).
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
    ) -> None:
        self.url = url.rstrip("/")
        self.db = db
        self._gzip = gzip
        self._timeout = timeout
        self._max_clients = max_clients
        params = {"db": db, "precision": "ns"}
        if rp:
            params["rp"] = rp
        base = urllib.parse.urlsplit(self.url).path.rstrip("/")
        self._write_path = f"{base}/write?{urllib.parse.urlencode(params)}"
        self._query_path = f"{base}/query"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username is not None:
            pair = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {pair}"
        elif token:
            self._headers["Authorization"] = f"Token {token}"
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    def _connections(self) -> tuple[urllib3.HTTPConnectionPool, ThreadPoolExecutor]:
        # Made on first use, so that building a sink (at manager start-up,
        # before InfluxDB may be up) opens nothing.
        if self._closed:
            raise RuntimeError("InfluxV1Sink is closed")
        if self._pool is None or self._threads is None:
            self._pool = urllib3.connection_from_url(
                self.url,
                maxsize=self._max_clients,
                block=True,  # never more connections than threads; no waiting in practice
                retries=False,  # the write policy decides what is retried, and when
                timeout=urllib3.Timeout(connect=self._timeout, read=self._timeout),
            )
            self._threads = ThreadPoolExecutor(self._max_clients, thread_name_prefix="influx-http")
        return self._pool, self._threads

    async def _request(self, path: str, body: bytes, headers: dict[str, str],
                       decode: bool = False) -> urllib3.BaseHTTPResponse:
        """POST one request off the loop (the answer's body read in full there);
        transport failures become SinkUnavailable."""
        pool, threads = self._connections()

        def post() -> urllib3.BaseHTTPResponse:
            return pool.urlopen("POST", path, body=body, headers=headers, redirect=False,
                                preload_content=True, decode_content=decode)

        try:
            return await asyncio.get_running_loop().run_in_executor(threads, post)
        except (Urllib3Error, OSError) as exc:  # refused, reset, timed out, unreachable
            raise SinkUnavailable(f"InfluxDB at {self.url}: {exc}") from exc

    async def write(self, lines: bytes, points: int) -> None:
        """Store ``lines`` (``points`` points); returns once InfluxDB answered 2xx."""
        body = gzip_module.compress(lines, compresslevel=1) if self._gzip else lines
        answer = await self._request(self._write_path, body, self._headers)
        if 200 <= answer.status < 300:
            return
        detail = error_detail(answer.data, answer.headers)
        raise error_for_status(
            answer.status, detail, answer.headers.get("Retry-After"), where=self.url
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
        form = {"q": influxql}
        if db is not None or self.db:
            form["db"] = db if db is not None else self.db
        if epoch:
            form["epoch"] = epoch
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Accept"] = MSGPACK
        if self._gzip:
            headers["Accept-Encoding"] = "gzip"
        # POST: CREATE/DROP need it, and it keeps queries out of URLs and logs.
        answer = await self._request(self._query_path, urllib.parse.urlencode(form).encode(),
                                     headers, decode=self._gzip)
        if answer.status != 200:
            body: bytes | str = answer.data
            if _is_msgpack(answer):  # error_detail reads JSON
                with contextlib.suppress(ValueError, msgpack.UnpackException):
                    body = json.dumps(msgpack.unpackb(body, raw=False, strict_map_key=False))
            detail = error_detail(body, answer.headers)
            raise error_for_status(
                answer.status, detail, answer.headers.get("Retry-After"), where=self.url
            )
        try:
            doc: dict[str, Any] = (
                msgpack.unpackb(answer.data, raw=False, strict_map_key=False)
                if _is_msgpack(answer) else json.loads(answer.data or b"{}"))
        except (ValueError, msgpack.UnpackException) as exc:
            raise SinkUnavailable(f"InfluxDB at {self.url}: unreadable query answer: {exc}"
                                  ) from exc
        errors = [r["error"] for r in doc.get("results", []) if "error" in r]
        if errors:
            raise SinkRejected("; ".join(str(e) for e in errors), status=answer.status)
        return doc

    async def prepare(self) -> None:
        """Create the database if it is missing (``CREATE DATABASE`` is idempotent).

        A user without admin rights may not run it (HTTP 403), and needs not
        to when the database exists and it may see it (READ or WRITE on it).
        """
        name = self.db.replace("\\", "\\\\").replace('"', '\\"')
        try:
            await self.query(f'CREATE DATABASE "{name}"', db="")
        except SinkMisconfigured as exc:
            if exc.status != 403:
                raise
            shown = await self.query("SHOW DATABASES", db="")
            series = shown["results"][0].get("series") or [{}]
            if [self.db] not in series[0].get("values", []):
                raise

    async def close(self) -> None:
        """Close the connections; the sink cannot be used afterwards.

        A request still running in a thread finishes on its own (bounded by
        ``timeout``); its caller was cancelled, and a write sent twice is
        harmless.
        """
        self._closed = True
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
