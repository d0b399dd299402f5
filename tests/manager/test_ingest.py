"""Ingest against a real influxd: stored before acked, bad rows dropped alone, outages survived."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import zmq

from bus import codec
from bus.messages import MetricAck, MetricBatch
from bus.sockets import SocketTuning, make_socket
from manager.ingest import MAX_AGE_NS, check_series
from manager.sinks import InfluxV1Sink
from tests.conftest_influx import InfluxFixture
from tests.manager.test_control import WAIT, FakeAgent, Harness, harness


def batch(node: str, seq: int, rows: list[list[Any]], measurement: str = "cpu") -> list[bytes]:
    series = [[measurement, {"node": node, "cpu": "total"}, ["user", "idle"], rows]]
    return codec.encode(MetricBatch(node=node, seq=seq, series=series))


def rows(n: int, t0: int | None = None) -> list[list[Any]]:
    t0 = t0 or time.time_ns() - 10**9 * n
    return [[t0 + i * 10**6, float(i), 100.0 - i] for i in range(n)]


async def acked(agent: FakeAgent, want: set[int], timeout: float = WAIT) -> None:
    got: set[int] = set()
    async with asyncio.timeout(timeout):
        while not want <= got:
            got |= set((await agent.expect(MetricAck, timeout)).seqs)


def count(influxdb: InfluxFixture, db: str, measurement: str = "cpu") -> int:
    found = influxdb.query(db, f'SELECT count("user") FROM "{measurement}"')
    return int(found[0]["count"]) if found else 0


def pusher(h: Harness) -> zmq.asyncio.Socket:
    push = make_socket(h.ctx, zmq.PUSH, SocketTuning())
    push.connect(h.mgr.pull_address)
    return push


def test_batches_are_stored_then_acked(tmp_path: Path, influxdb: InfluxFixture,
                                       influx_db: str) -> None:
    async def scenario() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        async with harness(tmp_path / "m.db", sink=sink) as h:
            agent = h.agent()
            await agent.register()
            push = pusher(h)
            for seq in (1, 2, 3):
                await push.send_multipart(batch("n1", seq, rows(100)))
            await acked(agent, {1, 2, 3})
            assert count(influxdb, influx_db) == 300
            assert h.mgr.last_seq("n1") == 3

    asyncio.run(scenario())


def test_unknown_node_is_refused_until_registered(tmp_path: Path, influxdb: InfluxFixture,
                                                  influx_db: str) -> None:
    async def scenario() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        async with harness(tmp_path / "m.db", sink=sink) as h:
            push = pusher(h)
            await push.send_multipart(batch("ghost", 1, rows(5)))
            async with asyncio.timeout(WAIT):
                while h.mgr.ingest.counters["unknown-node"] == 0:
                    await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline
            agent = h.agent("ghost")
            await agent.register()
            await push.send_multipart(batch("ghost", 1, rows(5)))  # the agent's resend
            await acked(agent, {1})
            assert count(influxdb, influx_db) == 5

    asyncio.run(scenario())


def test_bad_rows_are_dropped_alone(tmp_path: Path, influxdb: InfluxFixture,
                                    influx_db: str) -> None:
    async def scenario() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        async with harness(tmp_path / "m.db", sink=sink) as h:
            agent = h.agent()
            await agent.register()
            good = rows(10)
            mixed = good + [[1, 2.0, 3.0],            # 1970: absurd
                            [time.time_ns(), 1.0],    # a value short
                            ["yesterday", 1.0, 2.0],  # not a timestamp
                            [time.time_ns(), [1], 2.0]]  # not a scalar
            series = [["cpu", {"node": "n1"}, ["user", "idle"], mixed],
                      ["", {}, [], [[1]]],                       # no measurement
                      ["cpu", {"node": 5}, ["user"], [[1, 2]]]]   # a tag that is no string
            push = pusher(h)
            await push.send_multipart(codec.encode(MetricBatch(node="n1", seq=9, series=series)))
            await acked(agent, {9})
            assert count(influxdb, influx_db) == 10
            assert h.mgr.ingest.counters["rows-dropped"] == 6

    asyncio.run(scenario())


def test_influxdb_outage_loses_nothing(tmp_path: Path, influxdb: InfluxFixture,
                                       influx_db: str) -> None:
    async def scenario() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db, timeout=2.0)
        async with harness(tmp_path / "m.db", sink=sink) as h:
            agent = h.agent()
            await agent.register()
            push = pusher(h)
            await push.send_multipart(batch("n1", 1, rows(50)))
            await acked(agent, {1})
            await asyncio.to_thread(influxdb.stop)
            t0 = time.time_ns() - 10**9
            for seq in range(2, 12):
                await push.send_multipart(batch("n1", seq, rows(50, t0 + seq * 10**8)))
            async with asyncio.timeout(WAIT):  # the writer has met the outage
                while h.mgr.ingest.write_counters.retries == 0:
                    await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline
            assert h.mgr.ingest.queued_points == 500
            # On this thread, not in an executor: influxd is tied to the thread
            # that starts it (PR_SET_PDEATHSIG) and would die with a worker thread.
            influxdb.start()
            await acked(agent, set(range(2, 12)), timeout=30)
            assert count(influxdb, influx_db) == 550

    asyncio.run(scenario())


def test_check_series_window() -> None:
    now = 2_000_000_000 * 10**9
    ok = [now - MAX_AGE_NS + 1, 1.0]
    old = [now - MAX_AGE_NS - 1, 1.0]
    kept, dropped = check_series([["m", {}, ["v"], [ok, old]]], now)
    assert kept == [["m", {}, ["v"], [ok]]] and dropped == 1
