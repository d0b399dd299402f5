"""App metrics: the line parsers and the UDP endpoint with real datagrams."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from agent.collectors.app import (
    AppMetricsEndpoint,
    AppPoint,
    parse_app_line,
    parse_mark_line,
)
from bus.metrics import Series

TS = 1_700_000_000_000_000_000


@pytest.mark.parametrize(("line", "expected"), [
    ("latency value=12.5", [AppPoint("latency", 12.5)]),
    (f"latency,route=/api value=12.5 {TS}", [AppPoint("latency", 12.5, tags={"route": "/api"}, ts_ns=TS)]),
    ("http,code=200 count=3i,ms=1.5,ok=t",
     [AppPoint("http.count", 3.0, tags={"code": "200"}), AppPoint("http.ms", 1.5, tags={"code": "200"}),
      AppPoint("http.ok", 1.0, tags={"code": "200"})]),
    (r"my\ metric,k=a\,b value=1", [AppPoint("my metric", 1.0, tags={"k": "a,b"})]),
    ("reqs:1|c", [AppPoint("reqs", 1.0, "counter")]),
    ("reqs:2|c|@0.5", [AppPoint("reqs", 4.0, "counter")]),
    ("queue:17|g", [AppPoint("queue", 17.0, "gauge")]),
    ("queue:-3|g", [AppPoint("queue", -3.0, "gauge_delta")]),
    ("rt:12.5|ms|#route:/api,m:GET", [AppPoint("rt", 12.5, tags={"route": "/api", "m": "GET"})]),
    ("", []),
    ("# a comment", []),
])
def test_parse_app_line(line: str, expected: list[AppPoint]) -> None:
    assert parse_app_line(line) == expected


@pytest.mark.parametrize(("line", "message"), [
    ("garbage", "neither line protocol nor StatsD"),
    ("a b c d", "line protocol needs"),
    ('m,k=v text="hello"', "is a string"),
    ("m,node=x value=1", "reserved"),
    ("m value=abc", "not a number"),
    ("m value=nan", "not finite"),
    ("m value=1 1700000000", "not in ns"),
    ("m value=1 soon", "not an integer"),
    ("m novalue", "expected key=value"),
    ("users:3|s", "not supported"),
    ("x:1|c|@2", "sample rate"),
    ("x:one|c", "not a number"),
])
def test_garbage_raises_a_clear_value_error(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_app_line(line)


@pytest.mark.parametrize(("line", "expected"), [
    ("PTAP mark phase=warmup iteration=3", {"phase": "warmup", "iteration": 3.0}),
    ('PTAP mark phase="steady state"\n', {"phase": "steady state"}),
    ("  PTAP mark start of run x=1", {"label": "start of run", "x": 1.0}),
    ("PTAP mark", {"label": ""}),
    ("PTAP mark time=5", {"label": "time=5"}),
    ("hello PTAP mark phase=x", None),
    ("PTAP marker phase=x", None),
    ("", None),
])
def test_parse_mark_line(line: str, expected: dict[str, object] | None) -> None:
    assert parse_mark_line(line) == expected


async def _drain(ep: AppMetricsEndpoint, done: Callable[[list[Series]], bool], timeout: float = 5.0) -> list[Series]:
    """Collect until ``done(series)`` holds; fails at the deadline."""
    got: list[Series] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        assert time.monotonic() < deadline, f"endpoint did not receive in time: {got}"
        await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline
        got += ep.collect(time.time_ns())
    return got


def _by_name(series: list[Series]) -> dict[str, list[list[Any]]]:
    out: dict[str, list[list[Any]]] = {}
    for s in series:
        if s.measurement == "app":
            out.setdefault(s.tags["name"], []).extend(s.rows)
    return out


def test_udp_endpoint_mixed_good_and_garbage(caplog: pytest.LogCaptureFixture) -> None:
    datagram = "\n".join([
        "latency,route=/api value=12.5",
        "this is not a metric at all",
        "reqs:1|c",
        "reqs:1|c|@0.5",
        "\xff broken",
        "rt:3|ms",
        "rt:4|ms",
        "queue:10|g",
        "queue:+5|g",
    ]).encode("utf-8", "surrogateescape") + b"\n\xff\xfe\n"

    async def main() -> tuple[AppMetricsEndpoint, list[Series], list[Series]]:
        ep = AppMetricsEndpoint("n1", "j1")
        addr = await ep.start()
        assert ep.env() == {"PTAP_METRICS": addr, "PTAP_METRICS_STREAM": ep.stream_address}
        assert ep.stream_address.startswith("tcp://127.0.0.1:")
        host, port = addr.removeprefix("udp://").split(":")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(datagram, (host, int(port)))
            got = await _drain(ep, lambda g: "queue" in _by_name(g))
            later = ep.collect(time.time_ns())
        finally:
            await ep.stop()
        return ep, got, later

    with caplog.at_level(logging.WARNING, logger="agent.collectors.app"):
        ep, got, later = asyncio.run(main())
    names = _by_name(got)
    assert [r[1] for r in names["latency"]] == [12.5]
    assert [r[1] for r in names["reqs"]] == [3.0]  # 1 + 1/0.5, summed over the interval
    assert [r[1] for r in names["rt"]] == [3.0, 4.0]
    assert names["rt"][0][0] < names["rt"][1][0]  # distinct ts: no overwrite in InfluxDB
    assert [r[1] for r in names["queue"]] == [10.0, 15.0]
    latency = next(s for s in got if s.tags.get("name") == "latency")
    assert latency.tags == {"node": "n1", "job": "j1", "name": "latency", "route": "/api"}
    assert latency.fields == ("value",)
    assert ep.bad_lines == 3
    assert len([r for r in caplog.records if "bad app metric" in r.getMessage()]) == 1
    assert _by_name(later) == {"reqs": [[later[0].rows[0][0], 0.0]]}  # idle counter reports 0


def test_bad_line_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    ep = AppMetricsEndpoint("n1", "j1")
    with caplog.at_level(logging.WARNING, logger="agent.collectors.app"):
        for _ in range(50):
            assert ep.feed(b"junk\nok value=1", time.time_ns()) == 1
    assert ep.bad_lines == 50
    assert len(caplog.records) == 1
    assert len(_by_name(ep.collect(time.time_ns()))["ok"]) == 50


def test_marks_from_stdout() -> None:
    ep = AppMetricsEndpoint("n1", "j1")
    now = time.time_ns()
    assert ep.feed_stdout_line("PTAP mark phase=warmup iteration=3", now)
    assert ep.feed_stdout_line("PTAP mark phase=steady iteration=4", now)
    assert not ep.feed_stdout_line("ordinary output", now)
    (mark,) = ep.collect(now)
    assert mark.measurement == "mark" and mark.tags == {"node": "n1", "job": "j1"}
    assert mark.fields == ("iteration", "phase")
    assert [r[1:] for r in mark.rows] == [[3.0, "warmup"], [4.0, "steady"]]
    assert mark.rows[0][0] < mark.rows[1][0]


def test_pending_points_are_bounded() -> None:
    ep = AppMetricsEndpoint("n1", "j1", max_pending=10)
    ep.feed(b"\n".join(b"x value=%d" % i for i in range(15)), time.time_ns())
    assert ep.dropped == 5
    assert len(_by_name(ep.collect(time.time_ns()))["x"]) == 10
