"""The manager's adapter for histories: summaries kept when jobs end, histories on request.

:meth:`HistoryService.job_ended` is called by the bookkeeper when a job
reaches a final state; the job is summarised :data:`SETTLE_S` later (the
agent's last samples are still on their way to InfluxDB when the job ends)
and the summary kept. :meth:`HistoryService.history` first summarises the
series' ended jobs that have none (jobs from before this ptap, or whose
summary failed), then builds the history from the stored summaries alone:
no raw points are read for a job twice. A job that ended less than
:data:`SETTLE_S` ago is summarised for the answer but not kept yet.

Errors are :class:`manager.analysis.service.AnalysisError` (``not-found``,
``bad-request``, ``unavailable``), answered by ``manager/client_handlers.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bus.messages import JobSpec
from bus.views.report import series_name
from manager.analysis.report import SETTLE_S
from manager.analysis.service import Analyst, BadRequest, NotFound
from manager.history import build
from manager.history.summaries import SummaryStore, series_of, summarise

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Jobs without a summary analysed at once on first use (each is an InfluxDB read).
FIRST_USE_BATCH = 4
#: Longest series name and most metrics one request may name.
MAX_SERIES_LEN = 200
MAX_METRICS = 64


class HistoryService:
    """Histories for the manager. ``state_path`` returns the state database's path
    (known once the manager has opened its store)."""

    def __init__(self, analyst: Analyst, state_path: Callable[[], str],
                 spawn: Callable[[Any, str], None], *, settle: float = SETTLE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.analyst = analyst
        self._state_path = state_path
        self._spawn = spawn
        self.settle = settle
        self.clock = clock
        self._store: SummaryStore | None = None

    @property
    def store(self) -> SummaryStore:
        if self._store is None:
            self._store = SummaryStore(self._state_path())
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def job_ended(self, job_id: str, spec: JobSpec) -> None:
        """Summarise ``job_id`` once its last samples have settled in InfluxDB (a job
        without a name or series belongs to no history: nothing to do)."""
        if series_of({"series": spec.series, "name": spec.name}):
            self._spawn(self._summarise_later(job_id), f"summary {job_id}")

    async def _summarise_later(self, job_id: str) -> None:
        await asyncio.sleep(self.settle)  # the agent's last batches are in flight
        try:
            await self.summary(job_id, keep=True)
        except Exception as exc:  # kept for later: the next history.get retries it
            log.warning("job %s: no history summary yet (%s); it is made on first use",
                        job_id, exc)

    async def summary(self, job_id: str, *, keep: bool) -> dict[str, Any]:
        """The job's summary, computed from its analysis; kept if ``keep``."""
        analysis = await self.analyst.analyse(job_id)
        result: dict[str, Any] = await _in_executor(lambda: summarise(analysis))
        if keep:
            self.store.put(result)
        return result

    async def history(self, series: str, metric_ids: list[str], since: float = 0.0,
                      last: int = 0) -> dict[str, Any]:
        """The history object of ``series`` (see ``manager/history/__init__.py``)."""
        check_request(series, metric_ids, since, last)
        store = self.store
        now = self.clock()
        missing = store.missing(series, since)
        fresh: list[dict[str, Any]] = []
        for start in range(0, len(missing), FIRST_USE_BATCH):
            batch = missing[start:start + FIRST_USE_BATCH]
            made = await asyncio.gather(*(self._first_use(j, now) for j in batch))
            fresh += [summary for summary in made if summary is not None]
        # A job summarised here may have been kept meanwhile by its job-end task:
        # the kept one counts, once.
        summaries = store.of_series(series, since)
        kept = {s["job"]["id"] for s in summaries}
        summaries += [s for s in fresh if s["job"]["id"] not in kept]
        if not summaries:
            raise NotFound(self._unknown(series, since))
        return await _in_executor(lambda: build.history_object(
            series, summaries, metric_ids, last=last, now=now))

    async def _first_use(self, job_id: str, now: float) -> dict[str, Any] | None:
        """Summarise a job that has none: kept if it ended long enough ago, else
        returned for this answer only (None if it is gone)."""
        job = self.analyst.jobs(job_id)
        settled = job is not None and now - float(job.get("ended_at") or 0.0) >= self.settle
        try:
            summary = await self.summary(job_id, keep=settled)
        except NotFound:
            return None
        return None if settled else summary

    async def series_line(self, report: dict[str, Any]) -> dict[str, Any]:
        """The report's series and whether it moved at its job, for its headline."""
        from bus.views.history import moved_text  # Bokeh: only for an HTML report

        job = report.get("job") or {}
        name = series_name(job)
        if not name:
            return {"name": "", "moved_text": ""}
        try:
            moved = moved_text(await self.history(name, []), str(job.get("id")))
        except NotFound:
            moved = "no history yet: no job of the series has finished"
        except Exception as exc:  # the report is worth more than this one line
            log.warning("history of series %r for a report failed: %s", name[:80], exc)
            moved = f"history not available: {exc}"
        return {"name": name, "moved_text": moved}

    def _unknown(self, series: str, since: float) -> str:
        if since > 0 and self.store.has_jobs(series):
            return (f"series {series[:80]!r} has no finished job since {_when(since)}; "
                    "try an earlier --since")
        return (f"no finished job in series {series[:80]!r}; jobs join a series with "
                "ptap run --name NAME or --series NAME")


def check_request(series: str, metric_ids: list[str], since: float, last: int) -> None:
    """Refuse what no history could answer, before any work (raises BadRequest)."""
    if not series.strip() or len(series) > MAX_SERIES_LEN:
        raise BadRequest(f"series name must be 1 to {MAX_SERIES_LEN} characters")
    if len(metric_ids) > MAX_METRICS:
        raise BadRequest(f"at most {MAX_METRICS} metrics per history")
    if not (math.isfinite(since) and since >= 0):
        raise BadRequest(f"since {since!r} is not a wall time in seconds (0: all)")
    if last < 0:
        raise BadRequest(f"last {last} is negative; 0 keeps every point")


async def _in_executor(fn: Callable[[], T]) -> T:
    """numpy and JSON work off the event loop: the ROUTER loop serves agents meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def _when(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))
