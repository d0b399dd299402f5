"""The ``agent`` measurement: what the observer itself costs (DESIGN §5).

Fields: ``cpu_pct`` (the agent process, all threads, percent of one CPU over
the interval; unset on the first call), ``rss`` (bytes), and
``samples_dropped`` and ``spool_depth`` as reported by the callable the agent
passes in (the shipper's spool knows them; this module does not).
``samples_dropped`` is passed through as given, a running total.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import psutil

from bus.metrics import Series

log = logging.getLogger(__name__)

AGENT_FIELDS = ("cpu_pct", "rss", "samples_dropped", "spool_depth")

StatsProvider = Callable[[], Mapping[str, int]]


class SelfCostCollector:
    """Emit one ``agent`` row per call for the current process.

    ``stats_provider()`` returns a mapping with ``samples_dropped`` and
    ``spool_depth``; a missing key or a failing provider leaves the field unset.
    """

    def __init__(self, node: str, stats_provider: StatsProvider) -> None:
        self.node = node
        self.stats_provider = stats_provider
        self._proc = psutil.Process()
        self._last: tuple[float, float] | None = None  # (monotonic, cpu seconds)

    def collect(self, now_ns: int) -> list[Series]:
        """One ``agent`` series with a single row."""
        with self._proc.oneshot():
            t = self._proc.cpu_times()
            rss = self._proc.memory_info().rss
        mono, cpu_s = time.monotonic(), t.user + t.system
        cpu_pct = None
        if self._last is not None and mono > self._last[0]:
            cpu_pct = round(100.0 * max(cpu_s - self._last[1], 0.0) / (mono - self._last[0]), 2)
        self._last = (mono, cpu_s)
        try:
            stats = self.stats_provider()
        except Exception:  # the row is still worth writing without the shipper's numbers
            log.exception("agent stats provider failed on %s", self.node)
            stats = {}
        s = Series("agent", {"node": self.node}, AGENT_FIELDS)
        s.add(now_ns, cpu_pct, rss, stats.get("samples_dropped"), stats.get("spool_depth"))
        return [s]
