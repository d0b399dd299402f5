"""manager/sinks: the v1 sink and the write policy against a real influxd.

A stand-in HTTP server (a small Tornado app on 127.0.0.1) is used only for
answers influxd 1.6.7 never gives — 503 with Retry-After — and for the v2
sink, because no InfluxDB 2 can run here (1.6.7 has no ``/api/v2``). The
413 tests use a real influxd started with a small ``[http] max-body-size``.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from manager.lineproto import encode_lines, encode_series
from manager.sinks import (
    Backoff,
    InfluxV1Sink,
    MemorySink,
    SinkMisconfigured,
    SinkRejected,
    SinkTooLarge,
    SinkUnavailable,
    WriteCounters,
    policy,
    write_with_policy,
)
from manager.sinks.base import error_for_status, parse_retry_after
from manager.sinks.influx_v2 import InfluxV2Sink
from scripts.influxdb_local import InfluxServer, create_database

if TYPE_CHECKING:
    from tests.conftest_influx import InfluxFixture

TS = 1_700_000_000_000_000_000
FAST = Backoff(base=0.02, max=0.1, jitter=0.0)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline


def cpu_lines(count: int, node: str = "n1") -> list[bytes]:
    rows = [[TS + i, float(i), i * 0.5] for i in range(count)]
    return encode_lines([["cpu", {"node": node, "cpu": "total"}, ["user", "system"], rows]])


def count_points(influxdb: InfluxFixture, db: str, measurement: str = "cpu") -> int:
    rows = influxdb.query(db, f'SELECT count("user") FROM "{measurement}"')
    return int(rows[0]["count"]) if rows else 0


# -- the v1 sink against a real influxd --------------------------------------


def test_write_then_query(influxdb: InfluxFixture, influx_db: str) -> None:
    payload, points = encode_series(
        [["mem", {"node": "n1"}, ["used", "percent"], [[TS, 123, 4.5], [TS + 1, 124, 4.75]]]]
    )

    async def body() -> dict[str, Any]:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        try:
            await sink.write(payload, points)
            return await sink.query('SELECT "used", "percent" FROM "mem"')
        finally:
            await sink.close()

    doc = run(body())
    assert doc["results"][0]["series"][0]["values"] == [[TS, 123, 4.5], [TS + 1, 124, 4.75]]


def test_gzip_body_is_accepted(influxdb: InfluxFixture, influx_db: str) -> None:
    async def body() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db, gzip=True)
        try:
            await sink.write(b"\n".join(cpu_lines(50)), 50)
        finally:
            await sink.close()

    run(body())
    assert count_points(influxdb, influx_db) == 50


def test_refused_connection_is_unavailable() -> None:
    with socket.socket() as holder:  # bound, not listening: connects are refused
        holder.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{holder.getsockname()[1]}"

        async def body() -> None:
            sink = InfluxV1Sink(url, "db")
            try:
                await sink.write(b"m v=1i 1", 1)
            finally:
                await sink.close()

        with pytest.raises(SinkUnavailable) as info:
            run(body())
    assert not isinstance(info.value, SinkMisconfigured)


def test_silent_server_times_out_as_unavailable() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"

        async def body() -> None:
            sink = InfluxV1Sink(url, "db", timeout=0.3)
            try:
                await sink.write(b"m v=1i 1", 1)
            finally:
                await sink.close()

        with pytest.raises(SinkUnavailable):
            run(body())


def test_missing_database_is_misconfigured(influxdb: InfluxFixture) -> None:
    async def body() -> None:
        sink = InfluxV1Sink(influxdb.url, "no_such_db_here")
        try:
            await sink.write(b"m v=1i 1", 1)
        finally:
            await sink.close()

    with pytest.raises(SinkMisconfigured) as info:
        run(body())
    assert info.value.status == 404


def test_bad_query_raises_rejected(influxdb: InfluxFixture, influx_db: str) -> None:
    async def body() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        try:
            await sink.query("SELECT FROM WHERE")
        finally:
            await sink.close()

    with pytest.raises(SinkRejected):
        run(body())


# -- the write policy against a real influxd ---------------------------------


def test_garbage_line_alone_is_dropped(influxdb: InfluxFixture, influx_db: str) -> None:
    lines = cpu_lines(100)
    lines.insert(37, b"this is not line protocol")

    async def body() -> Any:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        try:
            return await write_with_policy(sink, lines, backoff=FAST)
        finally:
            await sink.close()

    result = run(body())
    assert result.dropped_lines == [b"this is not line protocol"]
    assert result.counters.dropped_bad == 1
    assert result.counters.requests == 2  # influxd named the line: no bisection needed
    assert count_points(influxdb, influx_db) == 100


def test_a_flood_of_rejected_lines_is_one_warning(influxdb: InfluxFixture, influx_db: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Each write with a line influxd rejects is counted; the log says so once a
    period, with the count, however many writes there were."""
    async def body() -> list[Any]:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        try:
            return [await write_with_policy(sink, [b"not line protocol", *cpu_lines(2)],
                                            backoff=FAST) for _ in range(50)]
        finally:
            await sink.close()

    before = policy._trouble.totals["sink-rejected"]
    with caplog.at_level("WARNING", logger="manager.sinks.policy"):
        results = run(body())
    assert all(r.dropped_lines == [b"not line protocol"] for r in results)
    assert policy._trouble.totals["sink-rejected"] - before == 50
    # One line at most (none if an earlier test's line opened the period).
    warnings = [r.getMessage() for r in caplog.records if r.name == "manager.sinks.policy"]
    assert len(warnings) <= 1 and all("[sink-rejected: " in w for w in warnings), warnings


def test_type_conflict_found_by_bisection(influxdb: InfluxFixture, influx_db: str) -> None:
    lines = cpu_lines(64)
    conflict = f'cpu,cpu=total,node=n1 user="text" {TS + 999}'.encode()
    lines.insert(20, conflict)  # influxd does not quote the line in this error

    async def body() -> Any:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        try:
            await sink.write(lines[0], 1)  # fixes "user" as a float field
            return await write_with_policy(sink, lines, backoff=FAST)
        finally:
            await sink.close()

    result = run(body())
    assert result.dropped_lines == [conflict]
    assert result.counters.splits > 0
    assert count_points(influxdb, influx_db) == 64


def test_retries_until_influxd_is_back(influxdb: InfluxFixture, influx_db: str) -> None:
    lines = cpu_lines(10)
    counters = WriteCounters()

    async def body() -> Any:
        sink = InfluxV1Sink(influxdb.url, influx_db, timeout=2.0)
        influxdb.stop()
        try:
            task = asyncio.create_task(
                write_with_policy(sink, lines, backoff=FAST, counters=counters)
            )
            await wait_until(lambda: counters.retries >= 2)
            assert not task.done()
        finally:
            influxdb.start()
        try:
            return await asyncio.wait_for(task, 20)
        finally:
            await sink.close()

    result = run(body())
    assert result.counters.written == 10 and counters.written == 10
    assert count_points(influxdb, influx_db) == 10


def test_deadline_raises_unavailable() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        sink = InfluxV1Sink(f"http://127.0.0.1:{holder.getsockname()[1]}", "db")
        counters = WriteCounters()

        async def body() -> None:
            try:
                deadline = time.monotonic() + 0.3
                await write_with_policy(
                    sink, [b"m v=1i 1"], backoff=FAST, deadline=deadline, counters=counters
                )
            finally:
                await sink.close()

        with pytest.raises(SinkUnavailable):
            run(body())
    assert counters.retries >= 1 and counters.written == 0


@pytest.fixture(scope="module")
def small_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real influxd that answers 413 above 2000 bytes; yields a database URL pair."""
    server = InfluxServer(
        Path(tmp_path_factory.mktemp("influx413")), max_body_size=2000, die_with_parent=True
    )
    server.start()
    create_database(server.url, "small")
    try:
        yield server.url
    finally:
        server.stop()


def test_413_splits_until_it_fits(small_influx: str) -> None:
    lines = cpu_lines(200, node="split")  # ~11 KB
    huge = f'cpu,cpu=total,node=split note="{"x" * 3000}" {TS}'.encode()

    async def body() -> Any:
        sink = InfluxV1Sink(small_influx, "small")
        try:
            with pytest.raises(SinkTooLarge):
                await sink.write(b"\n".join(lines), len(lines))
            return await write_with_policy(sink, [*lines, huge], backoff=FAST)
        finally:
            await sink.close()

    result = run(body())
    assert result.counters.splits > 0
    assert result.counters.written == 200
    assert result.counters.dropped_too_large == 1 and result.dropped_lines == [huge]


def test_large_body_over_the_limit_is_too_large_not_an_outage(small_influx: str) -> None:
    """influxd closes on a 2 MB body at once; Expect: 100-continue still gets its 413."""
    lines = cpu_lines(40_000, node="big")

    async def body() -> None:
        sink = InfluxV1Sink(small_influx, "small")
        try:
            await sink.write(b"\n".join(lines), len(lines))
        finally:
            await sink.close()

    with pytest.raises(SinkTooLarge):
        run(body())


def test_large_body_is_stored(influxdb: InfluxFixture, influx_db: str) -> None:
    lines = cpu_lines(40_000)

    async def body() -> None:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        try:
            await sink.write(b"\n".join(lines), len(lines))
        finally:
            await sink.close()

    run(body())
    assert count_points(influxdb, influx_db) == 40_000


def test_max_bytes_presplits_without_413(small_influx: str) -> None:
    lines = cpu_lines(200, node="presplit")

    async def body() -> Any:
        sink = InfluxV1Sink(small_influx, "small")
        try:
            return await write_with_policy(sink, lines, backoff=FAST, max_bytes=2000)
        finally:
            await sink.close()

    result = run(body())
    assert result.counters.splits == 0 and result.counters.written == 200
    total = sum(len(line) + 1 for line in lines)
    # No 413 means every request fit; greedy packing needs at most one spare request.
    assert total / 2000 <= result.counters.requests <= total // 2000 + 2


# -- a stand-in HTTP server, for answers influxd 1.6.7 never gives -----------


class StandIn:
    """Answers each request with the next scripted (status, headers, body); records requests."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.script = list(script)
        self.requests: list[Any] = []
        self.server: HTTPServer | None = None
        self.url = ""

    async def __aenter__(self) -> StandIn:
        stand_in = self

        class Handler(tornado.web.RequestHandler):
            def post(self) -> None:
                stand_in.requests.append(self.request)
                status, headers, body = (
                    stand_in.script.pop(0) if stand_in.script else (204, {}, b"")
                )
                self.set_status(status)
                for key, value in headers.items():
                    self.set_header(key, value)
                if body:
                    self.write(body)

        sock, port = bind_unused_port()
        self.server = HTTPServer(tornado.web.Application([(r"/.*", Handler)]))
        self.server.add_sockets([sock])
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.stop()
        await self.server.close_all_connections()


def test_retry_after_is_honoured() -> None:
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:  # wait-ok: records the delay, waits on nothing
        slept.append(seconds)

    async def body() -> Any:
        script = [(503, {"Retry-After": "7"}, b'{"error":"busy"}'), (204, {}, b"")]
        async with StandIn(script) as server:
            sink = InfluxV1Sink(server.url, "db")
            try:
                return await write_with_policy(
                    sink, [b"m v=1i 1"], backoff=FAST, sleep=record_sleep
                )
            finally:
                await sink.close()

    result = run(body())
    assert slept == [7.0] and result.counters.retries == 1 and result.counters.written == 1


V2_CASES = [
    (413, {}, b'{"code":"request too large","message":"too big"}', SinkTooLarge),
    (503, {"Retry-After": "3"}, b'{"code":"unavailable","message":"later"}', SinkUnavailable),
    (401, {}, b'{"code":"unauthorized","message":"bad token"}', SinkMisconfigured),
    (404, {}, b'{"code":"not found","message":"bucket \\"b\\" not found"}', SinkMisconfigured),
    (400, {}, b'{"code":"invalid","message":"unable to parse \'x y\': bad"}', SinkRejected),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), V2_CASES)
def test_v2_error_mapping(
    status: int, headers: dict[str, str], body: bytes, expected: type
) -> None:
    async def go() -> None:
        async with StandIn([(status, headers, body)]) as server:
            sink = InfluxV2Sink(server.url, "tok", "org", "b")
            try:
                await sink.write(b"x y", 1)
            finally:
                await sink.close()

    with pytest.raises(expected) as info:
        run(go())
    assert type(info.value) is expected and info.value.status == status  # type: ignore[attr-defined]
    if status == 503:
        assert info.value.retry_after == 3.0  # type: ignore[attr-defined]
    if status == 400:
        assert info.value.bad_lines == (b"x y",)  # type: ignore[attr-defined]


def test_v2_sends_the_same_bytes() -> None:
    payload, points = encode_series([["m", {"h": "a"}, ["v"], [[TS, 1.5]]]])

    async def go() -> Any:
        async with StandIn([(204, {}, b"")]) as server:
            sink = InfluxV2Sink(server.url, "tok", "org", "bkt", gzip=True)
            try:
                await sink.write(payload, points)
            finally:
                await sink.close()
            return server.requests[0]

    request = run(go())
    assert request.path == "/api/v2/write"
    assert request.query_arguments == {
        "org": [b"org"],
        "bucket": [b"bkt"],
        "precision": [b"ns"],
    }
    assert request.headers["Authorization"] == "Token tok"
    assert gzip.decompress(request.body) == payload


def test_v2_refused_connection_is_unavailable() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))

        async def go() -> None:
            sink = InfluxV2Sink(f"http://127.0.0.1:{holder.getsockname()[1]}", "t", "o", "b")
            try:
                await sink.write(b"m v=1i 1", 1)
            finally:
                await sink.close()

        with pytest.raises(SinkUnavailable):
            run(go())


# -- pure parts --------------------------------------------------------------


def test_status_mapping_and_retry_after() -> None:
    assert isinstance(error_for_status(500, "x"), SinkUnavailable)
    assert isinstance(error_for_status(429, "x", "2"), SinkUnavailable)
    assert error_for_status(429, "x", "2").retry_after == 2.0  # type: ignore[attr-defined]
    assert isinstance(error_for_status(403, "x"), SinkMisconfigured)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_rejected_names_lines_even_with_quotes() -> None:
    line = b'm s="it\'s" 1'
    exc = SinkRejected(
        "partial write: unable to parse 'm s=\"it's\" 1': bad\n"
        "unable to parse 'zz': invalid field format dropped=0"
    )
    assert exc.partial and exc.dropped == 0
    assert exc.matching([b"ok 1", line, b"zz"]) == [1, 2]


def test_backoff_grows_caps_jitters_and_honours_retry_after() -> None:
    backoff = Backoff(base=1.0, max=8.0, jitter=0.5)
    assert [backoff.delay(n, rand=lambda: 0.5) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.delay(0, rand=lambda: 0.0) == 0.5 and backoff.delay(0, rand=lambda: 1.0) == 1.5
    assert backoff.delay(0, retry_after=20.0, rand=lambda: 0.5) == 20.0


def test_memory_sink_records_and_fails_on_request() -> None:
    async def body() -> MemorySink:
        sink = MemorySink()
        sink.fail_next(SinkUnavailable("down"))
        counters = WriteCounters()
        waiter = asyncio.create_task(sink.wait_points(3))
        await write_with_policy(sink, cpu_lines(3), backoff=FAST, counters=counters)
        await waiter
        assert counters.retries == 1
        await sink.close()
        return sink

    sink = run(body())
    assert sink.points == 3 and len(sink.lines) == 3 and sink.writes == 2


def test_queries_are_answered_in_msgpack_and_errors_stay_readable(
        influxdb: InfluxFixture, influx_db: str) -> None:
    influxdb.write(influx_db, f'm,node=a v=1.5,i=3i,s="x",b=true {TS}\nm,node=b v=2 {TS + 1}')

    async def body() -> tuple[dict[str, Any], str]:
        sink = InfluxV1Sink(influxdb.url, influx_db)
        try:
            doc = await sink.query('SELECT * FROM "m" GROUP BY "node"')
            with pytest.raises(SinkRejected) as bad:
                await sink.query("SELECT FROM WHERE")
            return doc, str(bad.value)
        finally:
            await sink.close()

    doc, error = run(body())
    assert doc == influxdb.raw_query(influx_db, 'SELECT * FROM "m" GROUP BY "node"'), \
        "the same document as InfluxDB's JSON"
    assert "found WHERE" in error or "expected" in error, error
