"""The dashboard's InfluxQL reader, against the session's real influxd."""

from __future__ import annotations

import asyncio
import time

import pytest

from config.schema import InfluxDB
from dashboard.influx import (
    HistoryUnavailable,
    InfluxReader,
    history_statements,
    quote_str,
    sparklines,
)
from dashboard.series import View
from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import unused_port


def test_values_are_quoted() -> None:
    assert quote_str("a'b\\c") == "'a\\'b\\\\c'"
    stmts = history_statements(View(("n1", "x' OR '1'='1"), job="j'1", scope="job"), 5, 9, 100)
    assert all("'x\\' OR \\'1\\'=\\'1'" in s for s in stmts)
    assert "\"job\" = 'j\\'1'" in stmts[4] and "time >= 5 AND time <= 9" in stmts[0]
    assert "\"scope\" = 'job'" in stmts[5] and "LIMIT 100" in stmts[0]


def test_history_and_sparklines_from_a_real_influxdb(influxdb: InfluxFixture,
                                                     influx_db: str) -> None:
    now = time.time_ns()
    lines = [f"cpu,node=n1,cpu=total user=10,system=5,iowait=0,idle={85 - i} {now - i * 10**9}"
             for i in range(5)]
    lines += [f"cpu,node=n1,cpu=0 user=1,idle=99 {now}", f"mem,node=n1 percent=42.5 {now}",
              f"app,node=n1,job=j1,name=lat value=3.5 {now}", f"mark,node=n1,job=j1 phase=\"go\" {now}"]
    influxdb.write(influx_db, "\n".join(lines))
    reader = InfluxReader(InfluxDB(url=influxdb.url, database=influx_db))

    async def scenario() -> None:
        try:
            updates = {u.key: u for u in await reader.history(View(("n1",), job="j1", scope="job"),
                                                              now - 60 * 10**9)}
            node = updates["node:n1"].columns
            assert node["t"] == sorted(node["t"]) and len(node["t"]) == 5
            assert node["busy"][-1] == 15.0 and node["percent"][-1] == 42.5
            assert updates["app:n1:lat"].columns["value"] == [3.5]
            assert updates["mark:n1"].columns["text"] == ["phase=go"]
            sparks = await sparklines(reader, ["n1", "n2"])
            assert list(sparks) == ["n1"], "one statement, the nodes asked for that have data"
            # Busy from the `total` series only (the per-CPU series is idle 99).
            assert sparks["n1"]["cpu"] and max(sparks["n1"]["cpu"]) >= 15.0
            assert 42.5 in sparks["n1"]["mem"]
            assert await sparklines(reader, []) == {}
        finally:
            reader.close()

    asyncio.run(scenario())


def test_unreachable_influxdb_is_one_clear_error() -> None:
    reader = InfluxReader(InfluxDB(url=f"http://127.0.0.1:{unused_port()}", timeout=2))

    async def scenario() -> None:
        try:
            with pytest.raises(HistoryUnavailable, match="InfluxDB at http://127.0.0.1"):
                await reader.history(View(("n1",)), 0)
        finally:
            reader.close()

    asyncio.run(scenario())
