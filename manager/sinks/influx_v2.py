"""InfluxDB sink over the v2 write API, for users who configure token, org and bucket.

It sends the same encoded line-protocol bytes as the v1 sink, through
``influxdb_client``'s async write API (``InfluxDBClientAsync``, which needs
``aiohttp``: the ``influxdb-client[async]`` extra). The client's errors are
mapped to the tree in ``base.py`` by the same :func:`error_for_status`.

Not tested against a real InfluxDB 2: the InfluxDB this project runs
locally and in tests is Debian's 1.6.7, which has no ``/api/v2``. Its
tests check the request it sends and the error mapping against a small
Tornado app on 127.0.0.1 that stands in for the server's HTTP answers.
A 2.x or 3.x server can also be written through :class:`InfluxV1Sink`
with ``token=``, via its v1-compatible ``/write``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from .base import SinkUnavailable, error_detail, error_for_status

log = logging.getLogger(__name__)

__all__ = ["InfluxV2Sink"]


class InfluxV2Sink:
    """Writes line protocol to ``{url}/api/v2/write`` with ``token``, ``org`` and ``bucket``."""

    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        *,
        gzip: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self._token = token
        self._gzip = gzip
        self._timeout_ms = int(timeout * 1000)
        self._client: InfluxDBClientAsync | None = None
        self._closed = False

    def _api(self) -> Any:
        # InfluxDBClientAsync must be built inside a running loop (it makes
        # an aiohttp session), so it is made at the first write.
        if self._closed:
            raise RuntimeError("InfluxV2Sink is closed")
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url,
                token=self._token,
                org=self.org,
                timeout=self._timeout_ms,
                enable_gzip=self._gzip,
            )
        return self._client.write_api()

    async def write(self, lines: bytes, points: int) -> None:
        """Store ``lines`` (``points`` points); returns once the server answered 2xx."""
        api = self._api()
        try:
            await api.write(
                bucket=self.bucket, org=self.org, record=lines, write_precision=WritePrecision.NS
            )
        except ApiException as exc:
            headers: Mapping[str, str] = exc.headers or {}
            if not exc.status:  # the client refused to build the request
                raise SinkUnavailable(f"InfluxDB at {self.url}: {exc.reason}") from exc
            detail = error_detail(exc.body, headers)
            raise error_for_status(
                exc.status, detail, headers.get("Retry-After"), where=self.url
            ) from exc
        except (TimeoutError, aiohttp.ClientError, OSError, InfluxDBError) as exc:
            raise SinkUnavailable(f"InfluxDB at {self.url}: {exc!r}") from exc

    async def close(self) -> None:
        """Close the client's HTTP session."""
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()  # type: ignore[no-untyped-call]  # influxdb_client is untyped
