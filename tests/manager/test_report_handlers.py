"""manager/report_handlers.py as plain calls: how reports, comparisons, histories and
``status.get`` are answered, in the background, with no socket.

The analysis itself needs InfluxDB and is tested with a real one
(tests/manager/analysis/); here :class:`Analyses` stands in for it, returning or
raising what a test sets, because these tests are about the handler: a bad
argument answered at once, a result or an error answered later, a bug answered
``internal``. The status check uses the real memory sink and ingest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

import config
from bus.messages import CompareGet, Error, HistoryGet, Reply, ReportGet, StatusGet
from manager.analysis.service import NotFound, Unavailable
from manager.ingest import Ingest
from manager.report_handlers import (
    ReportContext,
    handle_compare_get,
    handle_history_get,
    handle_report_get,
    handle_status_get,
)
from manager.sinks import MemorySink
from tests.manager.handler_world import World, no_sockets

pytestmark = pytest.mark.usefixtures("no_sockets")
__all__ = ["no_sockets"]  # the fixture, imported for pytest to find
CLIENT = b"client"


class Analyses:
    """Stands in for the Analyst and the history service (they need InfluxDB):
    each answer is what ``outcomes`` holds for its first argument, raised if it is
    an exception."""

    def __init__(self, **outcomes: Any) -> None:
        self.outcomes = outcomes
        self.asked: list[tuple[Any, ...]] = []

    async def _answer(self, *args: Any) -> Any:
        self.asked.append(args)
        outcome = self.outcomes[args[0]]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def report(self, job_id: str, fmt: str = "json") -> Any:
        return await self._answer(job_id, fmt)

    async def compare(self, base: str, cand: str, fmt: str = "json",
                      threshold: float = 0.05) -> Any:
        return await self._answer(base, cand, fmt, threshold)

    async def history(self, series: str, metric_ids: list[str], since: float = 0.0,
                      last: int = 0) -> dict[str, Any]:
        answer: dict[str, Any] = await self._answer(series, metric_ids, since, last)
        return answer


class Background:
    """The spawn a handler is given: tasks on this loop, awaited by :meth:`done`."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.names.append(name)
        self.tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def done(self) -> None:
        await asyncio.gather(*self.tasks)


class FailingQuery:
    """A query client whose InfluxDB refuses connections (what the real one raises)."""

    async def query(self, influxql: str, db: str | None = None, **kw: Any) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")

    async def close(self) -> None:
        return None


def context(world: World, analyses: Analyses, spawn: Background, **cfg: str) -> ReportContext:
    server = config.load_server(None, cfg, env={})
    ingest = Ingest(MemorySink(), ack=_nothing, publish=_nothing, is_known_node=lambda n: True)
    return ReportContext(world.replier, analyses, analyses, spawn, server, ingest,
                         FailingQuery(), world.access)


async def _nothing(*args: Any) -> None:
    return None


def test_a_report_is_answered_from_the_background() -> None:
    world, analyses = World(), Analyses(job1={"kind": "ptap.report"},
                                        gone=NotFound("no job 'gone'"))

    async def scenario() -> None:
        spawn = Background()
        ctx = context(world, analyses, spawn)
        await handle_report_get(ctx, CLIENT, ReportGet(req_id="a", job_id="job1"))
        await handle_report_get(ctx, CLIENT, ReportGet(req_id="b", job_id="gone"))
        assert world.wire.sent == []  # nothing answered on the ROUTER loop itself
        await spawn.done()
        assert spawn.names == ["report job1", "report gone"]

    asyncio.run(scenario())
    assert world.wire.to(CLIENT, Reply) == [Reply(req_id="a", result={"kind": "ptap.report"})]
    assert world.wire.to(CLIENT, Error) == [Error(req_id="b", code="not-found",
                                                  message="no job 'gone'")]


def test_bad_arguments_are_refused_at_once_and_nothing_is_computed() -> None:
    world, analyses = World(), Analyses()

    async def scenario() -> None:
        spawn = Background()
        ctx = context(world, analyses, spawn)
        await handle_report_get(ctx, CLIENT, ReportGet(req_id="f", job_id="j", format="pdf"))
        await handle_compare_get(ctx, CLIENT, CompareGet(req_id="t", base="a", cand="b",
                                                         threshold=-1.0))
        await handle_history_get(ctx, CLIENT, HistoryGet(req_id="h", series="", last=-1))
        assert spawn.tasks == []

    asyncio.run(scenario())
    assert [(e.req_id, e.code) for e in world.wire.to(CLIENT, Error)] == [
        ("f", "bad-request"), ("t", "bad-request"), ("h", "bad-request")]
    assert analyses.asked == []


def test_an_unavailable_influxdb_and_a_bug_are_both_answered() -> None:
    world = World()
    analyses = Analyses(a=Unavailable("InfluxDB does not answer"), s=RuntimeError("bug"))

    async def scenario() -> None:
        spawn = Background()
        ctx = context(world, analyses, spawn)
        await handle_compare_get(ctx, CLIENT, CompareGet(req_id="c", base="a", cand="b"))
        await handle_history_get(ctx, CLIENT, HistoryGet(req_id="h", series="s"))
        await spawn.done()

    asyncio.run(scenario())
    unavailable, internal = world.wire.to(CLIENT, Error)
    assert (unavailable.code, unavailable.message) == ("unavailable", "InfluxDB does not answer")
    assert internal.code == "internal" and internal.message == (
        "the manager failed on this report (RuntimeError); see its log")


def test_status_says_what_fails_without_the_password() -> None:
    world = World()

    async def scenario() -> None:
        spawn = Background()
        ctx = context(world, Analyses(), spawn, **{"influxdb.url": "http://u:pw@127.0.0.1:9"})
        await handle_status_get(ctx, CLIENT, StatusGet(req_id="s"))
        await spawn.done()

    asyncio.run(scenario())
    [reply] = world.wire.to(CLIENT, Reply)
    influx = reply.result["influxdb"]
    assert influx["url"] == "http://127.0.0.1:9"
    assert (influx["write_error"], influx["read_error"]) == ("", "Connection refused")
    assert reply.result["curve"] is False and reply.result["pending_keys"] is None
