"""Ingest against a real influxd: stored before acked, bad rows dropped alone, outages survived."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from bus import codec
from bus.messages import MetricAck, MetricBatch
from bus.sockets import SocketTuning, make_socket
from manager import lineproto
from manager.ingest import MAX_AGE_NS, Ingest
from manager.lineproto import encode_batch
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


@pytest.mark.parametrize("encoder", ["compiled", "python"])
def test_batches_are_stored_then_acked(tmp_path: Path, influxdb: InfluxFixture, influx_db: str,
                                       encoder: str, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """With either encoder. A manager installed without a C compiler runs the
    Python one: it warns once, with what to do, and stores every point all the same."""
    if encoder == "python":
        monkeypatch.setattr(lineproto, "_compiled_rows", None)
        monkeypatch.setattr(lineproto, "ENCODER", "python")
    elif lineproto.ENCODER != "compiled":
        pytest.skip("manager/_lineproto_c.c is not built here (see setup.py)")

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

    with caplog.at_level("WARNING", logger="manager.ingest"):
        asyncio.run(scenario())
    warned = [r.getMessage() for r in caplog.records if "encoded in Python" in r.getMessage()]
    if encoder == "python":
        assert len(warned) == 1 and "scripts/bootstrap" in warned[0]
    else:
        assert warned == []


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


def test_rows_outside_the_window_are_dropped_alone() -> None:
    now = 2_000_000_000 * 10**9
    ok = [now - MAX_AGE_NS + 1, 1.0]
    old = [now - MAX_AGE_NS - 1, 1.0]
    for rows in ([ok, old], [ok, old] * 4):  # the row path and the column path
        encoded = encode_batch([["m", {}, ["v"], rows]], now - MAX_AGE_NS, now)
        assert (encoded.points, encoded.dropped) == (len(rows) // 2, len(rows) // 2)
        assert encoded.payload.split(b"\n") == [f"m v=1.0 {ok[0]}".encode()] * (len(rows) // 2)


class GateSink:
    """A stand-in sink whose writes finish only when the test opens them: it makes
    "two writes in flight" observable, which InfluxDB's timing never guarantees."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[tuple[int, asyncio.Event]] = asyncio.Queue()
        self.stored = 0

    async def write(self, lines: bytes, points: int) -> None:
        gate = asyncio.Event()
        await self.started.put((points, gate))
        await gate.wait()
        self.stored += points

    async def close(self) -> None:
        pass


def test_two_writes_in_flight_and_acks_only_after_each_is_stored() -> None:
    async def scenario() -> None:
        sink = GateSink()
        acks: list[tuple[str, list[int]]] = []

        async def ack(node: str, seqs: list[int]) -> None:
            acks.append((node, seqs))

        async def publish(node: str, frames: list[bytes]) -> None:
            pass

        ingest = Ingest(sink, ack=ack, publish=publish, is_known_node=lambda n: True,
                        write_points=100, writers=2)
        writer = asyncio.create_task(ingest.run())
        try:
            for seq in (1, 2, 3):
                assert await ingest.accept(batch("n1", seq, rows(100)))
            async with asyncio.timeout(WAIT):
                first_points, first = await sink.started.get()
                second_points, second = await sink.started.get()
            assert (first_points, second_points) == (100, 100)
            assert sink.started.empty() and acks == []  # the third waits for a free writer
            assert ingest.queued_points == 300
            second.set()
            async with asyncio.timeout(WAIT):
                third_points, third = await sink.started.get()
            assert acks == [("n1", [2])] and third_points == 100
            first.set()
            third.set()
            async with asyncio.timeout(WAIT):
                assert await ingest.flush(WAIT)
            assert sorted(seq for _, seqs in acks for seq in seqs) == [1, 2, 3]
            assert sink.stored == 300 and ingest.queued_points == 0
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    asyncio.run(scenario())


def test_the_buffer_is_bounded_in_bytes_as_well_as_points() -> None:
    """Long series keys make a few points weigh megabytes: past ``max_bytes``
    a batch is refused (left to resend), and taken once the queue drained."""
    async def scenario() -> None:
        sink = GateSink()
        ingest = Ingest(sink, ack=_noop_ack, publish=_noop_publish, is_known_node=lambda n: True,
                        max_bytes=150_000, writers=1)
        writer = asyncio.create_task(ingest.run())
        heavy = [["cpu", {"node": "n1", "k": "v" * 10_000}, ["user"], [[r[0], r[1]] for r in rows(10)]]]

        def frames(seq: int) -> list[bytes]:
            return codec.encode(MetricBatch(node="n1", seq=seq, series=heavy))

        try:
            assert await ingest.accept(frames(1))  # ~100 kB: the first batch always fits
            assert not await ingest.accept(frames(2))
            assert ingest.counters["buffer-full"] == 1
            async with asyncio.timeout(WAIT):
                _, gate = await sink.started.get()
            gate.set()
            async with asyncio.timeout(WAIT):
                assert await ingest.flush(WAIT)
            assert await ingest.accept(frames(2))  # the agent's resend
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    asyncio.run(scenario())


def test_a_batch_that_would_expand_past_its_bound_is_refused_whole() -> None:
    """A 1 MB tag on 60 rows is a 1 MB message asking for 60 MB of line protocol:
    refused (not acked, so never half-stored) and counted, and nothing queued.
    A 10 kB tag on 10 rows (10 times its size) is what a long tag costs: taken."""
    async def scenario() -> None:
        ingest = Ingest(GateSink(), ack=_noop_ack, publish=_noop_publish,
                        is_known_node=lambda n: True)
        t = rows(60)

        def frames(seq: int, tag: int, n: int) -> list[bytes]:
            series = [["cpu", {"node": "n1", "k": "v" * tag}, ["user"],
                       [[r[0], r[1]] for r in t[:n]]]]
            return codec.encode(MetricBatch(node="n1", seq=seq, series=series))

        assert not await ingest.accept(frames(1, 1_000_000, 60))
        assert ingest.counters["oversized"] == 1 and ingest.queued_points == 0
        assert await ingest.accept(frames(2, 10_000, 10))
        assert ingest.queued_points == 10

    asyncio.run(scenario())


def test_the_byte_bound_comes_from_spool_max_bytes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db", **{"spool.max_bytes": "3145728"}) as h:
            assert h.mgr.ingest.max_bytes == 3 * 1024 * 1024

    asyncio.run(scenario())


def test_a_resend_while_its_batch_is_being_written_is_not_queued_twice() -> None:
    async def scenario() -> None:
        sink = GateSink()
        ingest = Ingest(sink, ack=_noop_ack, publish=_noop_publish, is_known_node=lambda n: True)
        writer = asyncio.create_task(ingest.run())
        try:
            frames = batch("n1", 7, rows(10))
            assert await ingest.accept(frames)
            async with asyncio.timeout(WAIT):
                _, gate = await sink.started.get()
            assert await ingest.accept(frames)  # resent: accepted, not written again
            assert ingest.counters["duplicate"] == 1 and ingest.queued_points == 10
            gate.set()
            assert await ingest.flush(WAIT)
            assert sink.stored == 10 and sink.started.empty()
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    asyncio.run(scenario())


async def _noop_ack(node: str, seqs: list[int]) -> None:
    pass


async def _noop_publish(node: str, frames: list[bytes]) -> None:
    pass


def test_wrong_sequence_numbers(tmp_path: Path, influxdb: InfluxFixture, influx_db: str) -> None:
    """A sequence that is no number or is negative is refused and counted; one
    already stored (a resend) or behind the highest is stored again and acked;
    the loop goes on and the good batches beside them are all stored."""
    async def scenario() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        async with harness(tmp_path / "m.db", sink=sink) as h:
            agent = h.agent()
            await agent.register()
            push = pusher(h)
            t0 = time.time_ns() - 10**10
            not_a_number = msgpack.packb({"node": "n1", "seq": "7", "series": []})
            await push.send_multipart([b"metrics.batch", not_a_number])
            await push.send_multipart(batch("n1", -3, rows(5, t0)))
            for seq in (5, 6):
                await push.send_multipart(batch("n1", seq, rows(10, t0 + seq * 10**8)))
            await acked(agent, {5, 6})
            await push.send_multipart(batch("n1", 6, rows(10, t0 + 6 * 10**8)))  # a resend
            await push.send_multipart(batch("n1", 4, rows(10, t0 + 4 * 10**8)))  # behind
            await acked(agent, {6, 4})
            counters = h.mgr.ingest.counters
            assert counters["bad-schema"] == 1 and counters["bad-seq"] == 1
            assert counters["seq-behind"] == 2
            assert count(influxdb, influx_db) == 30

    asyncio.run(scenario())


def test_a_node_writes_only_its_own_series(tmp_path: Path, influxdb: InfluxFixture,
                                           influx_db: str) -> None:
    """Series tagged with another node, or with none, are dropped and counted; the
    node's own series in the same batch are stored."""
    async def scenario() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        async with harness(tmp_path / "m.db", sink=sink) as h:
            agent = h.agent()
            await agent.register()
            fields = ["user", "idle"]
            series = [["cpu", {"node": "n1", "cpu": "total"}, fields, rows(4)],
                      ["cpu", {"node": "victim", "cpu": "total"}, fields, rows(3)],
                      ["cpu", {"cpu": "total"}, fields, rows(2)]]
            push = pusher(h)
            await push.send_multipart(codec.encode(MetricBatch(node="n1", seq=1, series=series)))
            await acked(agent, {1})
            assert h.mgr.ingest.counters["foreign-node"] == 5
            assert count(influxdb, influx_db) == 4
            nodes = influxdb.query(influx_db, 'SHOW TAG VALUES FROM "cpu" WITH KEY = "node"')
            assert [r["value"] for r in nodes] == ["n1"]

    asyncio.run(scenario())


def test_shutdown_cancels_writes_still_in_flight_and_acks_nothing() -> None:
    async def scenario() -> None:
        sink = GateSink()
        acks: list[list[int]] = []

        async def ack(node: str, seqs: list[int]) -> None:
            acks.append(seqs)

        ingest = Ingest(sink, ack=ack, publish=_noop_publish, is_known_node=lambda n: True)
        writer = asyncio.create_task(ingest.run())
        try:
            assert await ingest.accept(batch("n1", 1, rows(10)))
            async with asyncio.timeout(WAIT):
                await sink.started.get()  # in flight, and never let through
            assert not await ingest.flush(0.05)  # gives up: InfluxDB never answers
            await ingest.cancel_writes()
            assert acks == [] and ingest.queued_points == 0 and sink.stored == 0
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    asyncio.run(scenario())


def test_a_write_cancelled_before_it_started_leaves_its_batch_to_resend() -> None:
    """Cancelled before its first step, the write never ran its own clean-up:
    the batch must not stay counted, or its resend would be refused as a duplicate."""
    async def scenario() -> None:
        sink = GateSink()
        ingest = Ingest(sink, ack=_noop_ack, publish=_noop_publish, is_known_node=lambda n: True)
        frames = batch("n1", 1, rows(10))
        assert await ingest.accept(frames)
        ingest._start_write()  # the task exists but has not run a step
        await ingest.cancel_writes()
        assert ingest.queued_points == 0 and ingest._queued_bytes == 0
        assert await ingest.accept(frames) and ingest.counters["duplicate"] == 0
        assert ingest.queued_points == 10

    asyncio.run(scenario())
