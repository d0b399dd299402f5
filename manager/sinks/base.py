"""The sink interface and the exceptions every sink raises.

A sink takes line-protocol bytes (``manager/lineproto.py``) and returns only
once the database has accepted them; anything else is an exception from this
tree, so the write policy (``policy.py``) and the ingest never see an HTTP
library's own errors (the way httpx's ``map_httpcore_exceptions`` works)::

    SinkError                      any failure to store a payload
     ├── SinkUnavailable           try the same payload again later:
     │    │                        connection refused or reset, timeout,
     │    │                        HTTP 5xx, 408, 429; ``.retry_after`` from
     │    │                        the Retry-After header (seconds) or None
     │    └── SinkMisconfigured    HTTP 401/403/404 and other 4xx: bad
     │                             credentials, no such database or bucket.
     │                             Also retried, because the data is fine and
     │                             someone can fix the server (log it loudly)
     ├── SinkRejected              HTTP 400/422: some lines are bad. ``.detail``
     │                             is the server's message; ``.bad_lines`` the
     │                             lines it named, ``matching()`` finds them
     │                             in the payload so only they are dropped
     └── SinkTooLarge              HTTP 413: split the payload and send halves

Which status means what is decided once, in :func:`error_for_status`, for
every sink.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Sink",
    "SinkError",
    "SinkUnavailable",
    "SinkMisconfigured",
    "SinkRejected",
    "SinkTooLarge",
    "error_for_status",
    "error_detail",
    "parse_retry_after",
]

# InfluxDB 1.x: "unable to parse '<line>': <reason>", one per bad line,
# joined by newlines, behind "partial write: " when other lines were stored.
_UNABLE = re.compile(r"unable to parse '(.*)': [^\n]*")
_DROPPED = re.compile(r"dropped=(\d+)")


@runtime_checkable
class Sink(Protocol):
    """Where metric lines go. ``write`` returns only once they are stored."""

    async def write(self, lines: bytes, points: int) -> None:
        """Store newline-separated line protocol holding ``points`` points, or raise SinkError."""
        ...

    async def close(self) -> None:
        """Release connections; the sink is not used afterwards."""
        ...


class SinkError(Exception):
    """A payload was not stored. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SinkUnavailable(SinkError):
    """The database cannot take data now; send the same payload again later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class SinkMisconfigured(SinkUnavailable):
    """Credentials, database or bucket are wrong: retried, but an operator must act."""


class SinkRejected(SinkError):
    """The database refused some lines of the payload (HTTP 400).

    ``detail`` is its message. ``bad_lines`` are the lines it quoted, as far
    as the message could be parsed; ``dropped`` is its ``dropped=N`` count
    when it gave one. ``partial`` is True when it says it stored the rest.
    """

    def __init__(self, detail: str, *, status: int | None = 400) -> None:
        super().__init__(f"rejected: {detail}", status=status)
        self.detail = detail
        self.partial = detail.startswith("partial write")
        self.bad_lines = tuple(m.group(1).encode() for m in _UNABLE.finditer(detail))
        dropped = _DROPPED.search(detail)
        self.dropped = int(dropped.group(1)) if dropped else None

    def matching(self, lines: Iterable[bytes]) -> list[int]:
        """Indexes of the ``lines`` the server named as unparsable.

        Each line is looked up verbatim in the message, which holds even when
        a line itself contains quotes that defeat parsing the message.
        """
        text = self.detail.encode()
        if b"unable to parse '" not in text:
            return []
        return [i for i, line in enumerate(lines) if b"unable to parse '" + line + b"': " in text]


class SinkTooLarge(SinkError):
    """The payload is larger than the server takes (HTTP 413): split it."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def error_detail(body: bytes | str | None, headers: Mapping[str, Any] | None = None) -> str:
    """The server's error text: 1.x ``{"error"}``, 2.x ``{"message"}``, a header, or the body."""
    raw = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    if headers:
        header = headers.get("X-Influxdb-Error")
        if header:
            return str(header)
    return raw.strip()[:2000] or "(no message)"


def error_for_status(
    status: int, detail: str, retry_after: str | None = None, *, where: str = ""
) -> SinkError:
    """The exception for a non-2xx answer (see the tree in this module's docstring)."""
    at = f" from {where}" if where else ""
    if status in (400, 422):
        return SinkRejected(detail, status=status)
    if status == 413:
        return SinkTooLarge(f"HTTP 413{at}: {detail}", status=status)
    if status >= 500 or status in (408, 429):
        return SinkUnavailable(
            f"HTTP {status}{at}: {detail}",
            status=status,
            retry_after=parse_retry_after(retry_after),
        )
    return SinkMisconfigured(
        f"HTTP {status}{at}: {detail}", status=status, retry_after=parse_retry_after(retry_after)
    )
