"""An in-memory sink: a stand-in used only where a test is about something else.

Tests of the ingest's bookkeeping (acks, sequence numbers, spool replay) use
it so they do not depend on InfluxDB's timing. Anything about what InfluxDB
stores, accepts or rejects is tested against a real ``influxd`` instead
(``tests/conftest_influx.py``), never against this.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .base import SinkError

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps every payload it is given; can be told to fail the next writes.

    ``payloads`` holds the bytes of each accepted write, ``lines`` every
    accepted line, ``points`` the sum of the ``points`` arguments.
    """

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.lines: list[bytes] = []
        self.points = 0
        self.writes = 0  # calls, including failed ones
        self.closed = False
        self._failures: deque[SinkError] = deque()
        self._changed = asyncio.Condition()

    def fail_next(self, *errors: SinkError) -> None:
        """Make the next ``len(errors)`` writes raise these, in order."""
        self._failures.extend(errors)

    async def write(self, lines: bytes, points: int) -> None:
        """Record the payload, or raise the next queued failure."""
        if self.closed:
            raise RuntimeError("MemorySink is closed")
        self.writes += 1
        if self._failures:
            raise self._failures.popleft()
        self.payloads.append(lines)
        self.lines.extend(line for line in lines.split(b"\n") if line)
        self.points += points
        async with self._changed:
            self._changed.notify_all()

    async def wait_points(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` points were stored (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.points >= count)

    async def close(self) -> None:
        """Mark closed; later writes raise."""
        self.closed = True
