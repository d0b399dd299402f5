"""The dashboard's one shared subscriber, against a real PUB socket on loopback."""

from __future__ import annotations

import asyncio
import errno
import time
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from bus import codec, topics
from bus.messages import Event, MetricBatch
from dashboard import feed as feed_module
from dashboard.feed import Feed
from dashboard.series import Update

T0 = time.time_ns()


def batch(node: str, seq: int) -> list[bytes]:
    series = [["mem", {"node": node}, ["percent"], [[T0 + seq * 10**9, float(seq)]]]]
    return [topics.metrics(node), *codec.encode(MetricBatch(node=node, seq=seq, series=series))]


async def until(predicate: Any, publish: Any, timeout: float = 10.0) -> None:
    """Publish until ``predicate()`` holds (a SUB only hears a PUB once it has joined)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await publish()
            await asyncio.sleep(0.02)  # pacing the publisher while the subscription joins  # wait-ok: poll step under a deadline


def test_watchers_get_their_nodes_batches_once_decoded() -> None:
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        pub = ctx.socket(zmq.PUB)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        feed = Feed(f"tcp://127.0.0.1:{port}", ctx)
        got: dict[str, list[list[Update]]] = {"a": [], "b": []}
        events: list[Event] = []
        feed.start()
        try:
            feed.watch_metrics(("node1",), got["a"].append)
            watch_b = feed.watch_metrics(("node1",), got["b"].append)
            feed.watch_events(events.append)
            seq = iter(range(1, 10_000))
            await until(lambda: got["a"],
                        lambda: pub.send_multipart(batch("node1", next(seq))))
            await pub.send_multipart(batch("node10", 1))  # matches "m.node1" as a prefix
            await pub.send_multipart([topics.metrics("node1"), b"metrics.batch", b"\xc1junk"])
            ev = Event(kind="job", ts=1.0, job_id="j1", state="running")
            await until(lambda: events,
                        lambda: pub.send_multipart([topics.job_events("j1"), *codec.encode(ev)]))
            assert got["a"][0] is got["b"][0]  # decoded once, shared
            assert all(u.node == "node1" for us in got["a"] for u in us)
            assert feed.counters["bad_frames"] == 1 and events[0].job_id == "j1"
            watch_b.close()
            assert feed.watched_nodes == ["node1"]
        finally:
            await feed.close()
            pub.close(linger=0)
            ctx.destroy(linger=0)

    asyncio.run(scenario())


def test_a_flooding_node_is_cut_down_before_decoding() -> None:
    ctx = zmq.asyncio.Context()
    try:
        f = Feed("tcp://127.0.0.1:1", ctx, max_batches_per_s=5.0)  # never started
        taken = sum(f._take_token("n1") for _ in range(100))
        assert taken == 5  # a one-second burst, then nothing until time passes
        assert f._take_token("n2")  # per node
    finally:
        ctx.term()


def test_a_failing_handshake_monitor_is_one_warning_and_events_still_flow(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The real parser on a cut-short real monitor message: what a libzmq with
    # another monitor format would give.
    monkeypatch.setattr(feed_module, "parse_monitor_message",
                        lambda frames: parse_monitor_message(frames[:1]))

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        pub = ctx.socket(zmq.PUB)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        feed = Feed(f"tcp://127.0.0.1:{port}", ctx)
        events: list[Event] = []
        feed.watch_events(events.append)
        feed.start()
        try:
            assert feed._monitor is not None
            await asyncio.wait_for(asyncio.shield(feed._monitor), 10.0)  # the first handshake
            ev = Event(kind="job", ts=1.0, job_id="j1", state="running")
            await until(lambda: events,
                        lambda: pub.send_multipart([topics.job_events("j1"), *codec.encode(ev)]))
            assert events[0].job_id == "j1"
        finally:
            await feed.close()
            pub.close(linger=0)
            ctx.destroy(linger=0)

    with caplog.at_level("INFO", logger="dashboard.feed"):
        asyncio.run(scenario())
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "dashboard.feed"]
    assert len(lines) == 1 and lines[0][0] == "WARNING", lines
    assert "handshake" in lines[0][1] and "Invalid event message format" in lines[0][1]
    assert "\n" not in lines[0][1]


def test_a_handshake_lost_mid_way_is_a_problem_only_when_it_repeats() -> None:
    # A CURVE manager may hang up on a NULL client before the client reads its
    # greeting (EPIPE, "no detail"); libzmq reconnects and the next attempt says
    # what is wrong. The events are libzmq's own numbers, as the monitor gives them.
    ctx = zmq.asyncio.Context()
    try:
        f = Feed("tcp://127.0.0.1:1", ctx)  # never started: the outcomes are fed in
        f._on_handshake(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, errno.EPIPE)
        assert f.problem == ""
        f._on_handshake(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                        zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        assert "uses CURVE and the dashboard does not" in f.problem

        g = Feed("tcp://127.0.0.1:1", ctx)
        for _ in range(feed_module.NO_DETAIL_FAILURES_REPORTED):
            g._on_handshake(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, errno.ECONNRESET)
        assert "(ECONNRESET, connection reset by peer): it uses CURVE" in g.problem
        g._on_handshake(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)
        assert g.problem == "" and g.counters["handshake_failures"] == 3
    finally:
        ctx.term()


class RecordingContext(zmq.asyncio.Context):
    """A context that remembers every socket made in it."""

    made: list[zmq.asyncio.Socket]

    def socket(self, *args: Any, **kwargs: Any) -> Any:
        sock = super().socket(*args, **kwargs)
        self.__dict__.setdefault("made", []).append(sock)
        return sock


def test_a_failed_connect_closes_the_feeds_sockets() -> None:
    async def scenario() -> None:
        ctx = RecordingContext()
        try:
            feed = Feed("no-such-transport", ctx)
            with pytest.raises(zmq.ZMQError):
                feed.start()
            assert len(ctx.made) == 2  # the SUB and its monitor
            assert all(sock.closed for sock in ctx.made)
            await feed.close()  # still safe
        finally:
            ctx.destroy(linger=0)

    asyncio.run(scenario())
