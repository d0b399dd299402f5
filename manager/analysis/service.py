"""The manager's adapter around the analysis: job state + InfluxDB → report objects.

:class:`Analyst` is what the ROUTER handlers call. It awaits the InfluxDB
queries (:mod:`manager.analysis.query`) on the event loop and runs the
numpy/scipy work and the rendering in the default executor, so the manager
goes on serving agents while a report is computed. At most
``concurrency`` analyses run at once (each holds a job's points in memory).
A comparison's per-node tests run on up to ``node_workers`` threads of a
:class:`NodePool` it makes and ends (numpy and scipy release the GIL; the
result is the same as with one thread). When the request is cancelled (the
manager closes), a stop event is set and every thread ends before its next
metric, so closing does not wait for a whole breakdown; a node that fails
stops the others the same way.

Failures are :class:`AnalysisError` with the code the handler replies with::

    AnalysisError        code
     ├── NotFound        not-found    no such job
     ├── BadRequest      bad-request  unknown format, threshold out of range
     └── Unavailable     unavailable  InfluxDB did not answer or refused the query
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
from typing import Any, TypeVar, cast

from bus.errors import ErrorCode
from manager.analysis import compare as compare_mod
from manager.analysis import nodes, query, render, report
from manager.analysis.report import ENV_KEYS, JobAnalysis
from manager.sinks.base import SinkError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: job id → the job JSON of docs/protocol.md (with its runs), or None.
JobLookup = Callable[[str], dict[str, Any] | None]
#: (node, wall time) → (facts dict, how they were found: ``recorded``/``registry``) or None.
FactsLookup = Callable[[str, float | None], tuple[dict[str, Any], str] | None]
MAX_THRESHOLD = 10.0
#: Threads for one comparison's per-node tests (each is a bootstrap over a node's
#: points, about 70 ms for an hour at 1 s sampling).
NODE_WORKERS = min(4, os.cpu_count() or 1)


class AnalysisError(Exception):
    """A report or comparison that cannot be made; ``code`` is the wire error code."""

    code: str = ErrorCode.INTERNAL


class NotFound(AnalysisError):
    code: str = ErrorCode.NOT_FOUND


class BadRequest(AnalysisError):
    code: str = ErrorCode.BAD_REQUEST


class Unavailable(AnalysisError):
    code: str = ErrorCode.UNAVAILABLE


def check_format(fmt: str) -> None:
    if fmt not in render.FORMATS:
        raise BadRequest(f"unknown format {fmt[:20]!r}; use one of {', '.join(render.FORMATS)}")


def check_threshold(threshold: float) -> None:
    if not (math.isfinite(threshold) and 0 <= threshold <= MAX_THRESHOLD):
        raise BadRequest(f"threshold {threshold!r} is not between 0 and {MAX_THRESHOLD:g} "
                         "(0.05 = 5 %); pass --threshold 5 for 5 %")


class Analyst:
    """Reports and comparisons for the manager (see the module docstring)."""

    def __init__(self, jobs: JobLookup, facts: FactsLookup, client: query.QueryClient,
                 db: str | None = None, *, concurrency: int = 2,
                 node_workers: int = NODE_WORKERS,
                 clock: Callable[[], float] = time.time) -> None:
        self.jobs = jobs
        self.node_workers = max(1, node_workers)
        self.facts = facts
        self.client = client
        self.db = db
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        #: The job's series and whether it moved at this job, for an HTML report's
        #: headline (set by the history service, which is built on this analyst).
        self.series_line: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None

    async def report(self, job_id: str, fmt: str = "json") -> Any:
        """The report object (``json``) or ``{"format": F, "content": str}``."""
        check_format(fmt)
        async with self._slots:
            analysis = await self.analyse(job_id)
            obj = await _in_executor(lambda: render.plain(report.report_object(analysis)))
        # Outside the slots: the history may analyse jobs of the series itself.
        series = await self.series_line(obj) if fmt == "html" and self.series_line else None
        return await _output(obj, fmt, series)

    async def compare(self, base: str, cand: str, fmt: str = "json",
                      threshold: float = 0.05) -> Any:
        """The comparison of ``cand`` against ``base``, shaped as :meth:`report`'s."""
        check_format(fmt)
        check_threshold(threshold)
        for job_id in (base, cand):  # before any query: a refusal leaves nothing running
            if self.jobs(job_id) is None:
                raise NotFound(f"no job {job_id[:40]!r}")
        async with self._slots:
            both = await asyncio.gather(self.analyse(base), self.analyse(cand),
                                        return_exceptions=True)
            for outcome in both:  # both have finished: no query outlives the request
                if isinstance(outcome, BaseException):
                    raise outcome
            a, b = cast(list[JobAnalysis], both)
            obj = await self.comparison(a, b, threshold=threshold, now=self.clock())
            return await _output(obj, fmt)

    async def comparison(self, base: JobAnalysis, cand: JobAnalysis, *, threshold: float,
                         now: float) -> dict[str, Any]:
        """The comparison object of two analysed jobs, computed in the default executor
        with its per-node tests on a :class:`NodePool`. Cancelling this stops them:
        every thread ends before its next metric."""
        stop = threading.Event()

        def work() -> dict[str, Any]:
            with NodePool(self.node_workers, stop) as pool:
                compared = compare_mod.compare(base, cand, threshold=threshold, now=now,
                                               map_nodes=pool.map, stop=stop)
                plain: dict[str, Any] = render.plain(compared)
                return plain

        try:
            return cast(dict[str, Any], await _in_executor(work))
        finally:
            stop.set()  # cancelled or failed: what still runs stops at its next metric

    async def analyse(self, job_id: str) -> JobAnalysis:
        """Read the job's state and points and slice them per run (numpy in the executor)."""
        job = self.jobs(job_id)
        if job is None:
            raise NotFound(f"no job {job_id[:40]!r}")
        now = self.clock()
        window = report.query_window(job, now)
        raw: dict[str, Any] = {}
        if window is not None:
            try:
                raw = await query.fetch(self.client, window, self.db)
            except (SinkError, query.QueryError) as exc:
                raise Unavailable(f"cannot read job {job_id}'s metrics from InfluxDB: {exc}; "
                                  "check server.cfg [influxdb] and that InfluxDB runs") from exc
        env = self.environment(job)
        return await _in_executor(partial(report.analyse, job, env, raw, now))

    def environment(self, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Each node's facts as they were when its first run of the job started."""
        out: dict[str, dict[str, Any]] = {}
        for run in sorted(job["runs"], key=lambda r: r.get("started_at") or math.inf):
            node = str(run["node"])
            if node in out:
                continue
            found = self.facts(node, run.get("started_at") or run.get("dispatched_at"))
            if found is None:
                out[node] = {"source": "unknown"}
            else:
                facts, source = found
                out[node] = {**{k: facts.get(k) for k in ENV_KEYS}, "source": source}
        return out


class NodePool:
    """The threads of one comparison's per-node work; :meth:`map` is its ``map_nodes``.

    Fails fast: the first node that raises sets ``stop`` (the nodes running raise
    :class:`manager.analysis.nodes.Stopped` before their next metric), the nodes not
    started are cancelled, and its exception is raised without waiting for the
    others' bootstraps. Leaving the ``with`` block cancels what has not started and
    waits for the rest, which ``stop`` keeps short."""

    def __init__(self, workers: int, stop: threading.Event) -> None:
        self.stop = stop
        self._pool = ThreadPoolExecutor(max(1, workers), "ptap-compare-node")

    def __enter__(self) -> NodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn: Callable[[str], Any], items: Iterable[str]) -> Iterator[Any]:
        """``fn`` of every item, in order, computed on the pool's threads."""
        futures = [self._pool.submit(fn, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        failures = [exc for f in futures if f.done() and not f.cancelled()
                    and (exc := f.exception()) is not None]
        if failures:
            self.stop.set()
            for f in futures:
                f.cancel()
            # A node's own error explains more than the Stopped it caused elsewhere.
            raise next((e for e in failures if not isinstance(e, nodes.Stopped)), failures[0])
        return iter([f.result() for f in futures])


async def _in_executor(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def _output(obj: dict[str, Any], fmt: str, series: dict[str, Any] | None = None) -> Any:
    if fmt == "json":
        return obj
    content = await _in_executor(partial(render.render, obj, fmt, series))
    return {"format": fmt, "content": content}
