"""The ``agent`` measurement: what the observer itself costs (docs/architecture.md#metric-path).

Fields: ``cpu_pct`` (the agent process, all threads, percent of one CPU over
the interval; unset on the first call), ``rss`` (bytes), and
``samples_dropped``, ``spool_depth`` and ``app_dropped`` as reported by the
callable the agent passes in (the shipper's spool and the app endpoints know
them; this module does not). ``samples_dropped`` and ``app_dropped`` (app
metric datagrams the kernel dropped on full UDP buffers) are passed through as
given, running totals.

CPU time is ``time.process_time()`` (user + system of every thread, from the
kernel's per-process clock) and RSS the second number of ``/proc/self/statm``,
kept open: the same figures psutil's ``cpu_times()`` and ``memory_info()``
give, without its per-call object and file overhead (3 µs a call in a tight
loop, from 32 µs). psutil remains the RSS fallback where there is no ``/proc``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

import psutil

from agent.collectors.procfs import ProcFile
from bus.metrics import Series

log = logging.getLogger(__name__)

AGENT_FIELDS = ("cpu_pct", "rss", "samples_dropped", "spool_depth", "app_dropped")
STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE")

StatsProvider = Callable[[], Mapping[str, int]]


class SelfCostCollector:
    """Emit one ``agent`` row per call for the current process.

    ``stats_provider()`` returns a mapping with ``samples_dropped`` and
    ``spool_depth``; a missing key or a failing provider leaves the field unset.
    """

    def __init__(self, node: str, stats_provider: StatsProvider) -> None:
        self.node = node
        self.stats_provider = stats_provider
        self._statm: ProcFile | None = None
        try:
            self._statm = ProcFile(STATM)
        except OSError:
            self._proc = psutil.Process()  # no /proc: psutil knows this system's way
        self._last: tuple[float, float] | None = None  # (monotonic, cpu seconds)
        self._tags = {"node": node}

    def collect(self, now_ns: int) -> list[Series]:
        """One ``agent`` series with a single row."""
        mono, cpu_s = time.monotonic(), time.process_time()
        cpu_pct = None
        if self._last is not None and mono > self._last[0]:
            cpu_pct = round(100.0 * max(cpu_s - self._last[1], 0.0) / (mono - self._last[0]), 2)
        self._last = (mono, cpu_s)
        try:
            stats = self.stats_provider()
        except Exception:  # the row is still worth writing without the shipper's numbers
            log.exception("agent stats provider failed on %s", self.node)
            stats = {}
        s = Series("agent", self._tags, AGENT_FIELDS)
        s.add(now_ns, cpu_pct, self._rss(), stats.get("samples_dropped"),
              stats.get("spool_depth"), stats.get("app_dropped"))
        return [s]

    def close(self) -> None:
        if self._statm is not None:
            self._statm.close()

    def _rss(self) -> int | None:
        if self._statm is None:
            return int(self._proc.memory_info().rss)
        try:
            return int(self._statm.read().split(None, 2)[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return None
