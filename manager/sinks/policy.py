"""How the manager gets a batch of lines into a sink, whatever the sink answers.

docs/architecture.md#metric-path: the manager acks a batch only once it is stored; it buffers and
retries with back-off while InfluxDB is down, honours ``Retry-After``,
splits a payload on 413 and drops only the rejected lines on 400.
:func:`write_with_policy` (a list of lines) and :func:`write_payload` (lines
already joined, as ingest sends them) do all of that for one write:

* ``SinkUnavailable`` (and ``SinkMisconfigured``): wait ``Backoff.delay``
  (exponential, jittered, at least the server's Retry-After) and send the
  same lines again, until ``deadline`` (then the last error is raised and
  the caller keeps the batch) or forever when ``deadline`` is None.
* ``SinkTooLarge``: send each half; a single line still too large is dropped.
* ``SinkRejected``: drop the lines the server named and send the rest; when
  it named none, send each half, down to single lines, and drop only the
  lines rejected on their own.

Sending good lines a second time is safe because every point carries its
own timestamp: InfluxDB overwrites a point with itself (InfluxDB 1.x stores
the good lines of a partial write, so they do arrive twice).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

from bus.ratelimit import RateLimitedLog

from .base import Sink, SinkMisconfigured, SinkRejected, SinkTooLarge, SinkUnavailable

log = logging.getLogger(__name__)
_trouble = RateLimitedLog(log)
_trouble_errors = RateLimitedLog(log, level=logging.ERROR)

__all__ = ["Backoff", "WriteCounters", "WriteResult", "write_payload", "write_with_policy"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off: ``base * 2**attempt`` capped at ``max``, ± ``jitter`` (a fraction)."""

    base: float = 0.5
    max: float = 30.0
    jitter: float = 0.2

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        Jitter spreads the retries of many ingest processes; a server's
        Retry-After is a floor, as it knows better when it will recover.
        """
        delay = min(self.max, self.base * float(2 ** min(attempt, 62)))
        delay *= 1.0 + self.jitter * (2.0 * rand() - 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return max(0.0, delay)


@dataclass(slots=True)
class WriteCounters:
    """Running totals, shared by the writes of one ingest (reported as metrics)."""

    written: int = 0  # points the sink accepted (a point re-sent is counted again)
    dropped_bad: int = 0  # lines the sink rejected on their own (400)
    dropped_too_large: int = 0  # single lines over the sink's size limit (413)
    retries: int = 0  # writes repeated after SinkUnavailable
    splits: int = 0  # payloads cut in halves (413, or 400 without named lines)
    requests: int = 0  # sink.write calls

    def add(self, other: WriteCounters) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(slots=True)
class WriteResult:
    """What one :func:`write_with_policy` call did."""

    counters: WriteCounters
    dropped_lines: list[bytes]  # the lines dropped, for the caller's log (first 10)
    detail: str | None = None  # the sink's last rejection message

    @property
    def dropped(self) -> int:
        """Lines dropped, for any reason."""
        return self.counters.dropped_bad + self.counters.dropped_too_large


class _Writer:
    """The state of one write_with_policy call (recursion over halves)."""

    def __init__(
        self,
        sink: Sink,
        backoff: Backoff,
        deadline: float | None,
        shared: WriteCounters | None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
        rand: Callable[[], float],
    ) -> None:
        self.sink, self.backoff, self.deadline = sink, backoff, deadline
        self.clock, self.sleep, self.rand = clock, sleep, rand
        self.shared = shared
        self.mine = WriteCounters()
        self.dropped_lines: list[bytes] = []
        self.detail: str | None = None

    def bump(self, name: str, n: int = 1) -> None:
        for counters in (self.mine, self.shared):
            if counters is not None:
                setattr(counters, name, getattr(counters, name) + n)

    def drop(self, line: bytes, counter: str) -> None:
        self.bump(counter)
        if len(self.dropped_lines) < 10:
            self.dropped_lines.append(line)

    async def write(self, lines: list[bytes]) -> None:
        """Store ``lines``, splitting or dropping as the sink's answers require."""
        await self.write_joined(b"\n".join(lines), len(lines))

    async def halves(self, lines: list[bytes]) -> None:
        self.bump("splits")
        mid = len(lines) // 2
        await self.write(lines[:mid])
        await self.write(lines[mid:])

    async def rejected(self, lines: list[bytes], exc: SinkRejected) -> None:
        """Drop what the server named, else bisect; a lone rejected line is dropped."""
        if len(lines) == 1:
            self.drop(lines[0], "dropped_bad")
            return
        named = set(exc.matching(lines))
        if not named:
            await self.halves(lines)
            return
        for i in sorted(named):
            self.drop(lines[i], "dropped_bad")
        await self.write([line for i, line in enumerate(lines) if i not in named])

    async def write_joined(self, payload: bytes, points: int) -> None:
        """Store ``points`` lines joined by newlines; split them only if the sink refuses.

        The common case costs no per-line work at all: ingest hands over one
        ``bytes`` for many batches, and lines are only needed to bisect a 413
        or to find the lines a 400 named.
        """
        if not points:
            return
        try:
            await self.send(payload, points)
        except SinkTooLarge:
            lines = payload.split(b"\n")
            if len(lines) == 1:
                self.drop(lines[0], "dropped_too_large")
                return
            await self.halves(lines)
        except SinkRejected as exc:
            self.detail = exc.detail
            await self.rejected(payload.split(b"\n"), exc)

    async def send(self, payload: bytes, points: int) -> None:
        """One payload, retried while the sink is unavailable and the deadline allows."""
        attempt = 0
        while True:
            self.bump("requests")
            try:
                await self.sink.write(payload, points)
            except SinkUnavailable as exc:
                delay = self.backoff.delay(attempt, exc.retry_after, self.rand)
                if self.deadline is not None:
                    left = self.deadline - self.clock()
                    if left <= 0:
                        raise
                    delay = min(delay, left)
                self._log_retry(exc, attempt, delay)
                self.bump("retries")
                attempt += 1
                await self.sleep(delay)
            else:
                self.bump("written", points)
                return

    @staticmethod
    def _log_retry(exc: SinkUnavailable, attempt: int, delay: float) -> None:
        # One line when an outage starts, then one every 20 retries; and, as
        # every write has its own count, at most one per period across writes.
        if attempt % 20:
            log.debug("sink still unavailable (retry %d in %.2f s): %s", attempt + 1, delay, exc)
            return
        if isinstance(exc, SinkMisconfigured):
            _trouble_errors.warn("sink-misconfigured", f"sink misconfigured, retry "
                                 f"{attempt + 1} in {delay:.2f} s: {exc}")
        else:
            _trouble.warn("sink-unavailable", f"sink unavailable, retry {attempt + 1} in "
                          f"{delay:.2f} s: {exc}")


def _chunks(lines: list[bytes], max_bytes: int | None) -> list[list[bytes]]:
    """Cut ``lines`` into payloads of at most ``max_bytes`` (a longer line goes alone)."""
    if max_bytes is None or sum(map(len, lines)) + len(lines) <= max_bytes:
        return [lines]
    chunks: list[list[bytes]] = [[]]
    size = 0
    for line in lines:
        if chunks[-1] and size + len(line) + 1 > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line) + 1
    return chunks


async def write_with_policy(
    sink: Sink,
    lines: list[bytes],
    *,
    backoff: Backoff | None = None,
    deadline: float | None = None,
    counters: WriteCounters | None = None,
    max_bytes: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> WriteResult:
    """Store ``lines`` (one point each, no newlines) in ``sink`` by the module's policy.

    ``deadline`` is a ``clock()`` time after which SinkUnavailable is raised
    instead of retried (None: retry forever). Lines stored before that may
    be sent again by the caller: that is harmless. ``max_bytes`` cuts the
    batch up front when the server's body limit is known, saving a 413
    round trip. ``counters`` (shared totals) are updated as the write goes.
    """
    return await write_payload(sink, b"\n".join(lines), len(lines), backoff=backoff,
                               deadline=deadline, counters=counters, max_bytes=max_bytes,
                               clock=clock, sleep=sleep, rand=rand)


async def write_payload(
    sink: Sink,
    payload: bytes,
    points: int,
    *,
    backoff: Backoff | None = None,
    deadline: float | None = None,
    counters: WriteCounters | None = None,
    max_bytes: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> WriteResult:
    """:func:`write_with_policy` for ``points`` lines already joined by newlines.

    This is what ingest calls: the payload goes out as it is, and is split
    into lines only when it is over ``max_bytes`` or the sink answers 413 or
    400.
    """
    writer = _Writer(sink, backoff or Backoff(), deadline, counters, clock, sleep, rand)
    if max_bytes is None or len(payload) <= max_bytes:
        await writer.write_joined(payload, points)
    else:
        for chunk in _chunks(payload.split(b"\n"), max_bytes):
            await writer.write(chunk)
    result = WriteResult(writer.mine, writer.dropped_lines, writer.detail)
    if result.dropped:
        _trouble.warn("sink-rejected", f"dropped {result.dropped} of {points} lines the sink "
                      f"rejected (first: {result.dropped_lines[0]!r:.200}; "
                      f"{(result.detail or 'too large'):.300})")
    return result
