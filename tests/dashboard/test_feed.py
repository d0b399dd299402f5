"""The dashboard's one shared subscriber, against a real PUB socket on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import zmq
import zmq.asyncio

from bus import codec, topics
from bus.messages import Event, MetricBatch
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
