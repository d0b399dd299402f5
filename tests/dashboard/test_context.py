"""The narrow contexts of dashboard/context.py: a view is built from the parts it reads.

A chart panel (:class:`dashboard.live.LiveState`) is given only a feed and an
InfluxDB reader, both real (a PUB socket on loopback, the session's influxd),
and no manager client, login rules or dashboard app.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import zmq
import zmq.asyncio

from config.schema import InfluxDB
from dashboard.feed import Feed
from dashboard.influx import InfluxReader
from dashboard.live import LiveState
from dashboard.series import View
from tests.conftest_influx import InfluxFixture
from tests.dashboard.test_feed import batch, until


@dataclass(frozen=True)
class FeedAndInflux:
    """The two parts :class:`dashboard.context.ChartSources` names, and nothing else."""

    feed: Feed
    influx: InfluxReader


def test_a_chart_panel_reads_history_then_live_rows_from_the_two_parts_alone(
        influxdb: InfluxFixture, influx_db: str) -> None:
    now = time.time_ns()
    influxdb.write(influx_db, "\n".join(f"mem,node=n1 percent={40 + i} {now - i * 10**9}"
                                        for i in range(5)))

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        pub = ctx.socket(zmq.PUB)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        feed = Feed(f"tcp://127.0.0.1:{port}", ctx)
        reader = InfluxReader(InfluxDB(url=influxdb.url, database=influx_db))
        feed.start()
        state = LiveState(FeedAndInflux(feed, reader), View(("n1",)), 60)
        try:
            await state.start()
            assert feed.watched_nodes == ["n1"], "registered with the feed before the backfill"
            history = {u.key: u.columns for u in state.history}
            assert history["node:n1"]["percent"] == [44.0, 43.0, 42.0, 41.0, 40.0]
            assert state.history_note == "5 points of history from InfluxDB."
            seq = iter(range(1, 10_000))

            async def publish() -> None:
                await pub.send_multipart(batch("n1", next(seq)))

            await until(lambda: bool(state._pending), publish)
            assert {u.node for u in state._pending} == {"n1"}
        finally:
            state.close()
            assert feed.watched_nodes == []
            await feed.close()
            reader.close()
            pub.close(linger=0)
            ctx.destroy(linger=0)

    asyncio.run(scenario())
