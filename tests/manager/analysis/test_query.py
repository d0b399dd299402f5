"""Reading a job's points back from a real InfluxDB: one query per measurement."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from manager.analysis import query
from manager.analysis.query import QueryError, Window
from manager.sinks import InfluxV1Sink
from tests.conftest_influx import InfluxFixture

T = 1_700_000_000 * 10**9
S = 10**9

LINES = [
    f"cpu,node=n1,cpu=total user=10,system=5,iowait=0,irq=0,softirq=0,steal=0,idle=85 {T}",
    f"cpu,node=n1,cpu=0 user=99,system=1,iowait=0,irq=0,softirq=0,steal=0,idle=0 {T}",
    f"cpu,node=other,cpu=total user=1,system=1,iowait=0,irq=0,softirq=0,steal=0,idle=98 {T}",
    f"mem,node=n1 used=100i,available=900i,percent=10,swap_used=0i {T}",  # first: no faults
    f"mem,node=n1 used=110i,available=890i,percent=11,swap_used=0i,pgfault_ps=5,"
    f"pgmajfault_ps=0 {T + S}",
    f"disk,node=n1,dev=sda read_bps=1,write_bps=2,read_iops=1,write_iops=1,busy_pct=3 {T}",
    f"disk,node=n1,dev=sdb read_bps=4,write_bps=5,read_iops=1,write_iops=1,busy_pct=6 {T}",
    f"proc,node=n1,job=j1,pid=tree,comm=sh cpu_pct=50,rss=1000i,threads=2i,fds=5i {T}",
    f"proc,node=n1,job=j1,pid=42,comm=sh cpu_pct=50,rss=1000i,threads=2i,fds=5i {T}",
    f"proc,node=n1,job=j2,pid=tree,comm=sh cpu_pct=7,rss=1i,threads=1i,fds=1i {T}",
    f"perf,node=n1,job=j1,scope=job,event=cycles value=100,per_sec=1000,enabled_pct=100 {T}",
    f"perf,node=n1,scope=system,event=cycles value=300,per_sec=3000,enabled_pct=100 {T}",
    f"perf,node=n1,job=j2,scope=job,event=cycles value=9,per_sec=9,enabled_pct=100 {T}",
    f"app,node=n1,job=j1,name=latency,route=/a value=1.5 {T}",
    f"app,node=n1,job=j1,name=latency,route=/b value=2.5 {T + 1}",
    f"agent,node=n1 cpu_pct=0.5,rss=100i,samples_dropped=0i,spool_depth=0i {T}",
    f'mark,node=n1,job=j1 phase="warmup",iteration=1 {T}',
    f'mark,node=n1,job=j1 phase="measure" {T + 2 * S}',
    f"cpu,node=n1,cpu=total user=1,system=1,iowait=0,irq=0,softirq=0,steal=0,idle=98 {T + 100 * S}",
]


class Counting:
    """A query client that counts the statements it passes to a real sink."""

    def __init__(self, sink: InfluxV1Sink) -> None:
        self.sink = sink
        self.statements: list[str] = []

    async def query(self, influxql: str, db: str | None = None, *,
                    epoch: str | None = "ns") -> dict[str, Any]:
        self.statements.append(influxql)
        return await self.sink.query(influxql, db, epoch=epoch)

    async def close(self) -> None:
        await self.sink.close()


def test_fetch_reads_each_measurement_once(influxdb: InfluxFixture, influx_db: str) -> None:
    influxdb.write(influx_db, "\n".join(LINES))
    window = Window("j1", ("n1",), T - S, T + 10 * S)

    async def scenario() -> tuple[query.RawData, list[str]]:
        client = Counting(InfluxV1Sink(influxdb.url, influx_db))
        try:
            return await query.fetch(client, window), client.statements
        finally:
            await client.close()

    raw, statements = asyncio.run(scenario())
    assert len(statements) == len(query.statements(window)) == 9
    by = {m: {tuple(sorted(s.tags.items())): s for s in series} for m, series in raw.items()}
    assert list(by["cpu"]) == [(("node", "n1"),)], "the total row of this node, in the window"
    assert by["cpu"][(("node", "n1"),)].columns["idle"].tolist() == [85]
    mem = by["mem"][(("node", "n1"),)]
    assert mem.ts.tolist() == [T, T + S] and math.isnan(mem.columns["pgfault_ps"][0])
    assert len(by["disk"]) == 2
    assert by["proc"][(("node", "n1"),)].columns["cpu_pct"].tolist() == [50], "tree row of j1"
    perf = {dict(k)["scope"]: s.columns["per_sec"].tolist() for k, s in by["perf"].items()}
    assert perf == {"job": [1000], "system": [3000]}
    app = by["app"][(("name", "latency"), ("node", "n1"))]
    assert app.ts.tolist() == [T, T + 1] and app.columns["value"].tolist() == [1.5, 2.5]
    mark = by["mark"][(("node", "n1"),)]
    assert mark.columns["phase"].tolist() == ["warmup", "measure"]
    assert mark.columns["iteration"][0] == 1 and mark.columns["iteration"][1] is None
    assert by["agent"][(("node", "n1"),)].ts.dtype == np.int64


def test_statements_quote_what_they_embed() -> None:
    w = Window("j'1", ("n\\1", "n2"), 1, 2)
    q = query.statements(w)
    assert "\"job\" = 'j\\'1'" in q["proc"] and "\"node\" = 'n\\\\1' OR \"node\" = 'n2'" in q["cpu"]
    assert all("time >= 1 AND time <= 2" in s for s in q.values())
    assert asyncio.run(query.fetch(None, Window("j", (), 1, 2))) == {}  # type: ignore[arg-type]


def test_truncated_answers_are_refused() -> None:
    with pytest.raises(QueryError, match="max-row-limit"):
        query.parse("cpu", {"results": [{"statement_id": 0, "partial": True, "series": []}]})
    assert query.parse("cpu", {"results": [{"statement_id": 0}]}) == []
