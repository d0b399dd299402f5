"""A warning log that says each kind of trouble at most once per period.

Every loop that survives bad input (docs/architecture.md#the-wire) logs what it refused, and a
noisy peer must not flood the log: the first event of a kind is logged, the
next ones within ``period`` seconds are only counted, and the next line
logged for that kind says how many were held back and how many there were
in total.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

__all__ = ["RateLimitFilter", "RateLimitedLog"]


class RateLimitedLog:
    """At most one line (a warning unless ``level`` says otherwise) per ``period``
    seconds per kind, carrying the counts."""

    def __init__(self, logger: logging.Logger, period: float = 10.0,
                 level: int = logging.WARNING) -> None:
        self._log = logger
        self.period = period
        self.level = level
        self.totals: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()

    def warn(self, kind: str, text: str, now: float | None = None,
             exc_info: bool = False, reason: str = "") -> bool:
        """Count one ``kind`` event and log ``text`` unless logged recently; True if logged.

        ``now`` is a ``time.monotonic()`` reading (taken here when omitted). Events of
        one ``kind`` with another ``reason`` are limited apart: a changed reason is news.
        """
        if now is None:
            now = time.monotonic()
        self.totals[kind] += 1
        slot = f"{kind}\0{reason}" if reason else kind
        last = self._last.get(slot)
        if last is not None and now - last < self.period:
            self._quiet[slot] += 1
            return False
        quiet = self._quiet.pop(slot, 0)
        self._last[slot] = now
        extra = f" ({quiet} more not logged in the last {self.period:g} s)" if quiet else ""
        self._log.log(self.level, "%s [%s: %d in total]%s", text, kind, self.totals[kind],
                      extra, exc_info=exc_info)
        return True


class RateLimitFilter(logging.Filter):
    """For a handler: warnings and errors from libraries' loggers (``prefixes``), at
    most one per ``period`` seconds per logger and message, the next saying how many
    were held back. A library that logs every bad websocket frame with its traceback
    (Bokeh does) must not turn a flood of them into a flood of log."""

    def __init__(self, prefixes: tuple[str, ...], period: float = 10.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.period = period
        self._last: dict[tuple[str, str], float] = {}
        self._quiet: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._quiet[key] += 1
            return False
        self._last[key] = now
        if quiet := self._quiet.pop(key, 0):  # the suffix holds no %: safe with args
            record.msg = f"{record.msg} ({quiet} more like this in the last {self.period:g} s)"
        return True
