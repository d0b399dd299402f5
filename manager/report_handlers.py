"""ROUTER handlers for what is computed from InfluxDB: reports, comparisons,
histories, and the manager's own health (``status.get``).

They answer in the background (:data:`~manager.context.Spawn`): the queries
are awaited and the numpy work runs in an executor, so a slow InfluxDB never
stalls the ROUTER loop that agents depend on. Cheap argument checks are
answered at once. With CURVE only an administrator's key gets this far
(``manager/authorization.py``). Each handler takes a :class:`ReportContext`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bus.errors import ErrorCode
from bus.messages import PROTOCOL_VERSION, CompareGet, HistoryGet, ReportGet, StatusGet
from config.schema import ServerConfig
from manager.analysis.query import QueryClient
from manager.analysis.service import AnalysisError, check_format, check_threshold
from manager.authorization import Access
from manager.context import Replier, Spawn
from manager.history.service import check_request
from manager.influx_setup import query_database
from manager.ingest import Ingest

log = logging.getLogger(__name__)


class Reports(Protocol):
    """Reports and comparisons (:class:`manager.analysis.service.Analyst`)."""

    async def report(self, job_id: str, fmt: str = "json") -> Any: ...

    async def compare(self, base: str, cand: str, fmt: str = "json",
                      threshold: float = 0.05) -> Any: ...


class Histories(Protocol):
    """Series histories (:class:`manager.history.service.HistoryService`)."""

    async def history(self, series: str, metric_ids: list[str], since: float = 0.0,
                      last: int = 0) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ReportContext:
    """What the report, history and status requests use. ``ingest`` and ``query``
    are the InfluxDB write and read paths ``status.get`` tries; ``access`` is
    None with CURVE off."""

    replier: Replier
    analyst: Reports
    history: Histories
    spawn: Spawn
    cfg: ServerConfig
    ingest: Ingest
    query: QueryClient
    access: Access | None


# --- reports ------------------------------------------------------------------------


async def handle_report_get(ctx: ReportContext, peer: bytes, msg: ReportGet) -> None:
    """``report.get``: a job's analysis report (docs/architecture.md#analysis, docs/analysis.md).

    Reply: the report object (docs/report-schema.json) for ``format`` ``json``,
    else ``{"format": F, "content": str}`` for ``text``, ``csv``, ``html``.
    Errors: ``not-found`` (no such job), ``bad-request`` (unknown format),
    ``unavailable`` (InfluxDB cannot be queried). Computed in the background:
    the queries are awaited and the numpy work runs in an executor, so the
    ROUTER loop goes on serving agents meanwhile.
    """
    if await _refused(ctx, peer, msg.req_id, lambda: check_format(msg.format)):
        return
    work = ctx.analyst.report(msg.job_id, msg.format)
    ctx.spawn(_analysis_reply(ctx, peer, msg.req_id, work), f"report {msg.job_id[:40]}")


async def handle_compare_get(ctx: ReportContext, peer: bytes, msg: CompareGet) -> None:
    """``compare.get``: job ``cand`` against baseline job ``base`` with ``threshold``
    (0.05 = 5 %). Reply and errors as for ``report.get`` (the comparison object
    for ``json``); ``bad-request`` also for a threshold outside 0–10."""
    def checks() -> None:
        check_format(msg.format)
        check_threshold(msg.threshold)

    if await _refused(ctx, peer, msg.req_id, checks):
        return
    work = ctx.analyst.compare(msg.base, msg.cand, msg.format, msg.threshold)
    ctx.spawn(_analysis_reply(ctx, peer, msg.req_id, work),
              f"compare {msg.base[:40]} {msg.cand[:40]}")


async def handle_history_get(ctx: ReportContext, peer: bytes, msg: HistoryGet) -> None:
    """``history.get``: the performance history of series ``series`` (README "History").

    Reply: the history object, ``kind`` ``ptap.history`` (its shape is in
    ``manager/history/__init__.py``): the series' jobs in order, and per
    metric its points (median of the job's runs, with their range) and its
    change points (job, step with a 95 % interval, p-value, regression or
    improvement, environment differences first). Errors: ``not-found`` (no
    finished job in the series), ``bad-request`` (empty series, negative
    ``last``, bad ``since``), ``unavailable`` (an unsummarised job's points
    cannot be read from InfluxDB). Computed in the background like reports.
    """
    def checks() -> None:
        check_request(msg.series, msg.metrics, msg.since, msg.last)

    if await _refused(ctx, peer, msg.req_id, checks):
        return
    work = ctx.history.history(msg.series, list(msg.metrics), msg.since, msg.last)
    ctx.spawn(_analysis_reply(ctx, peer, msg.req_id, work), f"history {msg.series[:40]}")


async def _refused(ctx: ReportContext, peer: bytes, req_id: str,
                   check: Callable[[], object]) -> bool:
    """Run the cheap argument checks now, so a bad request is answered at once."""
    try:
        check()
    except AnalysisError as exc:
        await ctx.replier.error(peer, req_id, exc.code, str(exc))
        return True
    return False


async def _analysis_reply(ctx: ReportContext, peer: bytes, req_id: str,
                          work: Awaitable[Any]) -> None:
    """Await a report or comparison and answer ``reply``, or ``error`` with its code."""
    started = time.monotonic()
    try:
        result = await work
    except AnalysisError as exc:
        await ctx.replier.error(peer, req_id, exc.code, str(exc))
        return
    except Exception as exc:  # a bug in the analysis must not go unanswered
        log.exception("analysis for request %s failed", req_id)
        await ctx.replier.error(peer, req_id, ErrorCode.INTERNAL,
                                f"the manager failed on this report ({type(exc).__name__}); "
                                "see its log")
        return
    log.info("analysis for request %s done in %.2f s", req_id, time.monotonic() - started)
    await ctx.replier.reply(peer, req_id, result)


# --- the manager's own health -------------------------------------------------------

#: How long ``status.get`` waits for each InfluxDB check (the CLI waits longer).
INFLUX_CHECK_TIMEOUT = 3.0


async def handle_status_get(ctx: ReportContext, peer: bytes, msg: StatusGet) -> None:
    """``status.get``: the manager's own health, for ``ptap doctor``.

    Reply ``{"version", "protocol", "curve", "interval", "liveness", "influxdb":
    {"url", "database", "write_error", "read_error", "queued_points",
    "write_retries"}, "pending_keys"}``. InfluxDB is tried with the manager's
    own URL and credentials: an empty write (InfluxDB checks the user's right to
    write and that the database exists, and stores nothing) and ``SHOW
    MEASUREMENTS LIMIT 1``; each error is one line, "" when the check passed.
    ``pending_keys`` names the nodes whose keys wait for ``ptap keys accept``
    (null without CURVE). Answered in the background: InfluxDB may take seconds.
    """
    ctx.spawn(_status_reply(ctx, peer, msg.req_id), "status")


async def _status_reply(ctx: ReportContext, peer: bytes, req_id: str) -> None:
    try:
        write_error, read_error = await asyncio.gather(
            _influx_error(ctx.ingest.sink.write(b"", 0)),
            _influx_error(ctx.query.query("SHOW MEASUREMENTS LIMIT 1")))
        cfg = ctx.cfg
        result = {
            "version": _version(), "protocol": PROTOCOL_VERSION, "curve": ctx.access is not None,
            "interval": cfg.basic.interval, "liveness": cfg.basic.liveness,
            "influxdb": {"url": _without_userinfo(cfg.influxdb.url),
                         "database": query_database(cfg), "write_error": write_error,
                         "read_error": read_error, "queued_points": ctx.ingest.queued_points,
                         "write_retries": ctx.ingest.write_counters.retries},
            "pending_keys": (None if ctx.access is None else
                             [e["node"] for e in ctx.access.keys.listing().get("pending", [])]),
        }
    except Exception as exc:  # a bug here must not leave the request unanswered
        log.exception("status request %s failed", req_id)
        await ctx.replier.error(peer, req_id, ErrorCode.INTERNAL,
                                f"the manager failed on status.get ({type(exc).__name__}); "
                                "see its log")
        return
    await ctx.replier.reply(peer, req_id, result)


async def _influx_error(check: Awaitable[object]) -> str:
    """"" if ``check`` succeeds in time, else why not, in one line."""
    try:
        async with asyncio.timeout(INFLUX_CHECK_TIMEOUT):
            await check
    except TimeoutError:
        return f"no answer in {INFLUX_CHECK_TIMEOUT:g} s"
    except Exception as exc:  # the sink's errors, and whatever its HTTP client raises
        return _reason(exc)
    return ""


def _reason(exc: BaseException) -> str:
    """The root cause's words ("Connection refused") rather than an HTTP pool's repr."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``: the reply is shown to people."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _version() -> str:
    """The installed ptap package's version ("" when running from an uninstalled tree)."""
    try:
        return importlib.metadata.version("ptap")
    except importlib.metadata.PackageNotFoundError:
        return ""
