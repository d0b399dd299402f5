"""ROUTER handlers for client requests: jobs, agent keys, reports, status (nodes:
``manager/node_handlers.py``).

Clients are the ``ptap`` CLI and shell, the dashboard and scripts. Every
request carries a ``req_id`` that its ``reply`` or ``error`` echoes. With
CURVE only an administrator's key gets this far (``manager/authorization.py``).
Reports, comparisons and the status' InfluxDB checks run in the background,
so a slow InfluxDB never stalls the ROUTER loop that agents depend on.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bus.errors import ErrorCode
from bus.messages import (
    PROTOCOL_VERSION,
    CompareGet,
    HistoryGet,
    JobCancel,
    JobGet,
    JobsList,
    JobSubmit,
    Keys,
    Reply,
    ReportGet,
    RunCancel,
    RunState,
    StatusGet,
)
from manager import authorization, scheduler
from manager.analysis.service import AnalysisError, check_format, check_threshold
from manager.history.service import check_request
from manager.influx_setup import query_database
from manager.keys import KeyState, KeyStore
from manager.scheduler import Job, SpecError

if TYPE_CHECKING:
    from manager.server import Manager

log = logging.getLogger(__name__)

MAX_JOBS_LIST = 1000
#: A node name as the key store files it: a pending duplicate gets ``~<hash>``.
KEY_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(~[0-9a-f]{8})?")


# --- jobs ---------------------------------------------------------------------------


async def handle_job_submit(mgr: Manager, peer: bytes, msg: JobSubmit) -> None:
    """``job.submit``: create a job; targets are resolved now. Reply: the job, as
    stored, before its runs are dispatched (their states then come as events).

    An unknown node, a selector matching no live node, or an unusable spec
    is refused with ``bad-request``.
    """
    job_id = uuid.uuid4().hex[:12]
    # A node whose key was revoked or rejected while connected is still listed
    # until it goes lost, but gets no run: `all` and labels pass it over, and
    # naming it is refused, rather than leave a run queued for ever.
    nodes = {n.name: n for n in mgr.registry.nodes() if authorization.may_dispatch(mgr, n.name)}
    barred = [t for t in msg.spec.targets if t not in nodes and mgr.registry.get(t) is not None]
    try:
        if barred:
            raise SpecError(f"node {barred[0]}'s key is not accepted (see ptap keys list)")
        runs = scheduler.expand(job_id, msg.spec, nodes)
    except SpecError as exc:
        await mgr.reply_error(peer, msg.req_id, ErrorCode.BAD_REQUEST, f"job refused: {exc}")
        return
    job = Job(id=job_id, spec=msg.spec, created_at=time.time())
    mgr.store.add_job(job, runs)
    mgr.book.add(job, runs)
    log.info("job %s submitted: %d runs on %s, command %r", job_id, len(runs),
             ",".join(sorted({r.node for r in runs})), " ".join(msg.spec.command)[:200])
    await mgr.bookkeeper.publish_job(job)
    # The reply first: the job is stored, so the client may go on (and --wait is
    # already listening) while its runs go out, one message per node.
    await mgr.send(peer, Reply(req_id=msg.req_id, result=mgr.bookkeeper.job_dict(job_id)))
    await mgr.bookkeeper.dispatch_queued({r.node for r in runs})


async def handle_jobs_list(mgr: Manager, peer: bytes, msg: JobsList) -> None:
    """``jobs.list``: newest first, at most ``limit`` (≤ 1000), without output tails.
    Reply ``{"jobs": [job, ...]}``."""
    limit = max(1, min(msg.limit, MAX_JOBS_LIST))
    jobs = [job.to_dict(runs, tails=False) for job, runs in mgr.store.jobs(limit)]
    await mgr.send(peer, Reply(req_id=msg.req_id, result={"jobs": jobs}))


async def handle_job_get(mgr: Manager, peer: bytes, msg: JobGet) -> None:
    """``job.get``: one job with its runs and output tails; ``not-found`` if unknown."""
    found = mgr.bookkeeper.job_dict(msg.job_id)
    if found is None:
        await mgr.reply_error(peer, msg.req_id, ErrorCode.NOT_FOUND, f"no job {msg.job_id[:40]!r}")
        return
    await mgr.send(peer, Reply(req_id=msg.req_id, result=found))


async def handle_job_cancel(mgr: Manager, peer: bytes, msg: JobCancel) -> None:
    """``job.cancel``: queued runs end ``cancelled`` at once; dispatched and running
    ones get ``run.cancel`` and end when their agent reports. Reply: the job
    (a finished job is returned unchanged); ``not-found`` if unknown."""
    if msg.job_id not in mgr.book.jobs:
        found = mgr.bookkeeper.job_dict(msg.job_id)
        if found is None:
            await mgr.reply_error(peer, msg.req_id, ErrorCode.NOT_FOUND, f"no job {msg.job_id[:40]!r}")
        else:
            await mgr.send(peer, Reply(req_id=msg.req_id, result=found))
        return
    log.info("job %s: cancel requested", msg.job_id)
    await _cancel_runs(mgr, msg.job_id)
    await mgr.send(peer, Reply(req_id=msg.req_id, result=mgr.bookkeeper.job_dict(msg.job_id)))


async def _cancel_runs(mgr: Manager, job_id: str) -> None:
    changed, wall = [], time.time()
    for run in mgr.book.runs_of(job_id):
        if run.state.final:
            continue
        run.cancel_requested = True  # kept, so a lost node gets the cancel when it is back
        if run.state is RunState.QUEUED:
            scheduler.set_state(run, RunState.CANCELLED, wall, "cancelled before it started")
        else:
            node = mgr.registry.get(run.node)
            if node is not None:
                await mgr.send(node.routing_id, RunCancel(run_id=run.id, reason="job cancelled"))
        changed.append(run)
    await mgr.bookkeeper.commit(changed)


# --- agent keys ---------------------------------------------------------------------


#: ``keys`` actions that change a key, and the state each one files it in.
_KEY_STATES = {"accept": KeyState.ACCEPTED, "reject": KeyState.REJECTED,
               "revoke": KeyState.REVOKED}


async def handle_keys(mgr: Manager, peer: bytes, msg: Keys) -> None:
    """``keys``: agent key acceptance (``action`` ``list|summary|accept|reject|revoke``,
    ``node``).

    Reply: for ``list`` ``{"pending": [{"node", "key"}], "accepted": [...],
    "rejected": [...], "revoked": [...]}``; for ``summary`` the count in each
    state with the bounds, ``{"pending": 1, "accepted": 3, "rejected": 0,
    "revoked": 0, "max_nodes": 10000, "max_pending": 1000}``; otherwise the
    changed entry ``{"node", "state", "key"}``. ``not-found`` for a node
    without a key; ``bad-request`` while CURVE is off, or for an ``accept``
    beyond ``[security] max_nodes``. An accepted key may open new PUB and PULL
    connections at once; a rejected or revoked one loses its node (its
    messages are refused) though ZeroMQ keeps its open connections, and stays
    refused, even by ``auto_accept``, until it is accepted again.
    """
    keys = mgr.keys
    if keys is None:
        await mgr.reply_error(peer, msg.req_id, ErrorCode.BAD_REQUEST,
                              "CURVE is off: keys are not used; set [security] curve = yes")
        return
    if msg.action == "list":
        await mgr.send(peer, Reply(req_id=msg.req_id, result=keys.listing()))
        return
    if msg.action == "summary":
        await mgr.send(peer, Reply(req_id=msg.req_id, result=_key_summary(mgr, keys)))
        return
    if msg.action not in _KEY_STATES:
        await mgr.reply_error(peer, msg.req_id, ErrorCode.BAD_REQUEST,
                              f"keys action {msg.action[:20]!r} is not list, summary, accept, "
                              "reject or revoke")
        return
    entry = _key_entry(keys.listing(), msg.node) if KEY_NODE_NAME.fullmatch(msg.node) else None
    if entry is None:
        await mgr.reply_error(peer, msg.req_id, ErrorCode.NOT_FOUND,
                              f"no agent key for node {msg.node[:80]!r}; see ptap keys list")
        return
    target = _KEY_STATES[msg.action]
    full = authorization.accept_refusal(mgr, msg.node) \
        if target is KeyState.ACCEPTED and entry["state"] != target else ""
    if full:
        await mgr.reply_error(peer, msg.req_id, ErrorCode.BAD_REQUEST, full)
        return
    keys.set_state(msg.node, target)
    entry = _key_entry(keys.listing(), msg.node) or entry
    log.info("key of node %s: %s", msg.node, entry["state"])
    await mgr.send(peer, Reply(req_id=msg.req_id, result=entry))


def _key_summary(mgr: Manager, keys: KeyStore) -> dict[str, int]:
    counts = {state.value: keys.count(state) for state in KeyState}
    return {**counts, "max_nodes": mgr.cfg.security.max_nodes,
            "max_pending": mgr.max_pending_keys}


def _key_entry(listing: dict[str, list[dict[str, str]]], node: str) -> dict[str, str] | None:
    for state, entries in listing.items():
        for entry in entries:
            if entry["node"] == node:
                return {"node": node, "state": state, "key": entry["key"]}
    return None


# --- reports ------------------------------------------------------------------------


async def handle_report_get(mgr: Manager, peer: bytes, msg: ReportGet) -> None:
    """``report.get``: a job's analysis report (docs/architecture.md#analysis, docs/analysis.md).

    Reply: the report object (docs/report-schema.json) for ``format`` ``json``,
    else ``{"format": F, "content": str}`` for ``text``, ``csv``, ``html``.
    Errors: ``not-found`` (no such job), ``bad-request`` (unknown format),
    ``unavailable`` (InfluxDB cannot be queried). Computed in the background:
    the queries are awaited and the numpy work runs in an executor, so the
    ROUTER loop goes on serving agents meanwhile.
    """
    if await _refused(mgr, peer, msg.req_id, lambda: check_format(msg.format)):
        return
    mgr.spawn(_analysis_reply(mgr, peer, msg.req_id, mgr.analyst.report(msg.job_id, msg.format)),
              f"report {msg.job_id[:40]}")


async def handle_compare_get(mgr: Manager, peer: bytes, msg: CompareGet) -> None:
    """``compare.get``: job ``cand`` against baseline job ``base`` with ``threshold``
    (0.05 = 5 %). Reply and errors as for ``report.get`` (the comparison object
    for ``json``); ``bad-request`` also for a threshold outside 0–10."""
    def checks() -> None:
        check_format(msg.format)
        check_threshold(msg.threshold)

    if await _refused(mgr, peer, msg.req_id, checks):
        return
    work = mgr.analyst.compare(msg.base, msg.cand, msg.format, msg.threshold)
    mgr.spawn(_analysis_reply(mgr, peer, msg.req_id, work),
              f"compare {msg.base[:40]} {msg.cand[:40]}")


async def handle_history_get(mgr: Manager, peer: bytes, msg: HistoryGet) -> None:
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

    if await _refused(mgr, peer, msg.req_id, checks):
        return
    work = mgr.history.history(msg.series, list(msg.metrics), msg.since, msg.last)
    mgr.spawn(_analysis_reply(mgr, peer, msg.req_id, work), f"history {msg.series[:40]}")


async def _refused(mgr: Manager, peer: bytes, req_id: str, check: Callable[[], object]) -> bool:
    """Run the cheap argument checks now, so a bad request is answered at once."""
    try:
        check()
    except AnalysisError as exc:
        await mgr.reply_error(peer, req_id, exc.code, str(exc))
        return True
    return False


async def _analysis_reply(mgr: Manager, peer: bytes, req_id: str, work: Awaitable[Any]) -> None:
    """Await a report or comparison and answer ``reply``, or ``error`` with its code."""
    started = time.monotonic()
    try:
        result = await work
    except AnalysisError as exc:
        await mgr.reply_error(peer, req_id, exc.code, str(exc))
        return
    except Exception as exc:  # a bug in the analysis must not go unanswered
        log.exception("analysis for request %s failed", req_id)
        await mgr.reply_error(peer, req_id, ErrorCode.INTERNAL,
                              f"the manager failed on this report ({type(exc).__name__}); "
                              "see its log")
        return
    log.info("analysis for request %s done in %.2f s", req_id, time.monotonic() - started)
    await mgr.send(peer, Reply(req_id=req_id, result=result))


# --- the manager's own health -------------------------------------------------------

#: How long ``status.get`` waits for each InfluxDB check (the CLI waits longer).
INFLUX_CHECK_TIMEOUT = 3.0


async def handle_status_get(mgr: Manager, peer: bytes, msg: StatusGet) -> None:
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
    mgr.spawn(_status_reply(mgr, peer, msg.req_id), "status")


async def _status_reply(mgr: Manager, peer: bytes, req_id: str) -> None:
    try:
        write_error, read_error = await asyncio.gather(
            _influx_error(mgr.ingest.sink.write(b"", 0)),
            _influx_error(mgr.query.query("SHOW MEASUREMENTS LIMIT 1")))
        cfg = mgr.cfg
        result = {
            "version": _version(), "protocol": PROTOCOL_VERSION, "curve": mgr.keys is not None,
            "interval": cfg.basic.interval, "liveness": cfg.basic.liveness,
            "influxdb": {"url": _without_userinfo(cfg.influxdb.url),
                         "database": query_database(cfg), "write_error": write_error,
                         "read_error": read_error, "queued_points": mgr.ingest.queued_points,
                         "write_retries": mgr.ingest.write_counters.retries},
            "pending_keys": (None if mgr.keys is None else
                             [e["node"] for e in mgr.keys.listing().get("pending", [])]),
        }
    except Exception as exc:  # a bug here must not leave the request unanswered
        log.exception("status request %s failed", req_id)
        await mgr.reply_error(peer, req_id, ErrorCode.INTERNAL,
                              f"the manager failed on status.get ({type(exc).__name__}); "
                              "see its log")
        return
    await mgr.send(peer, Reply(req_id=req_id, result=result))


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
