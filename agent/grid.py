"""The agent's wake-up grid: periodic work falls due on whole multiples of its period.

At 1 Hz every wake-up of the agent is paid twice: for the wake itself (on the
2-vCPU dev VM a bare ``epoll_wait`` that slept a second costs 0.1-0.3 ms of
CPU when it returns) and for the code and data it then touches, which a second
of idleness has made cold (the same work costs several times what it costs
warm). So timers of different tasks are put on one grid, counted on the event
loop's clock from 0 rather than from when each task started: the sampler's
ticks and the link's heartbeats, both every second by default, then fall due
at the same instant and the process wakes once for both. Periods that are
whole multiples of one another share points as well.
"""

from __future__ import annotations

import asyncio
import math


def next_tick(origin: float, period: float, after: float) -> float:
    """The first point ``origin + k * period`` (k an integer) later than ``after``."""
    return origin + (math.floor((after - origin) / period) + 1) * period


def next_beat(period: float, now: float) -> float:
    """The grid point at which periodic work done at ``now`` is next due: at least half
    a period away (a timer that fires a little early must not count twice), so
    one period later once the work is on the grid."""
    return next_tick(0.0, period, now + period / 2)


class Alarm:
    """Sleep until a loop time, or until :meth:`poke` — whichever comes first.

    A timer, not synchronisation: whoever pokes has only set a flag the
    sleeper reads when it wakes. A bare future and ``call_at`` are the
    cheapest timer asyncio has (no exception on expiry as with
    ``asyncio.timeout``), which counts when a process wakes every second.
    """

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    @property
    def sleeping(self) -> bool:
        return self._waiter is not None

    async def sleep_until(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Until ``when`` (``loop.time()``), or until poked."""
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(when, self.poke)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def poke(self) -> None:
        """Wake the sleeper now (nothing if none sleeps)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
