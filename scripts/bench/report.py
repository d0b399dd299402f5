"""Report benchmark: the analysis of a 1-hour, 10-node job at 1 s sampling, timed.

    .venv/bin/python scripts/bench/report.py [--nodes 10] [--seconds 3600] [--json]

1. A private ``influxd`` (``scripts/influxdb_local.py``, temporary directory,
   free port) takes what agents would have written for that job, directly as
   line protocol (fast): per node and second ``cpu`` (total + 2 CPUs),
   ``mem``, ``disk`` (2 devices), ``net`` (2 NICs), ``proc`` (the tree row
   and 2 processes), ``perf`` (8 events and IPC, job and system scope),
   ``app`` (2 names), ``agent``, and a few ``mark`` points.
2. A manager state database (``manager.state.Store``) gets the job, its runs
   and each node's facts, as a real manager records them.
3. The manager's own :class:`manager.analysis.service.Analyst` (the code
   behind ``report.get``) reads it back through ``InfluxV1Sink.query``:
   timed are the raw fetch alone (the floor: every point the report reads,
   parsed into arrays), the JSON report, the HTML report, and a comparison
   of the job with itself (two analyses and every metric's statistics).

Prints seconds and points per second for each, and the ratio report / raw
fetch measured in the same run. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bus.messages import JobSpec, RunState  # noqa: E402
from manager.analysis import query, report  # noqa: E402
from manager.analysis.service import Analyst  # noqa: E402
from manager.scheduler import Job, JobState, Run  # noqa: E402
from manager.sinks import InfluxV1Sink  # noqa: E402
from manager.state import Store  # noqa: E402
from scripts.influxdb_local import InfluxServer, create_database, request  # noqa: E402

DB = "bench"
JOB = "bench0000001"
T0_NS = 1_700_000_000 * 10**9
LINES_PER_POST = 10_000
PERF_EVENTS = ("task-clock", "context-switches", "cpu-migrations", "page-faults", "cycles",
               "instructions", "cache-misses", "branch-misses")


def node_lines(node: str, seconds: int, rng: random.Random) -> list[str]:
    """Every line one node writes during the job (1 s sampling)."""
    out: list[str] = []
    job = f"job={JOB}"
    for s in range(seconds):
        ts = T0_NS + s * 10**9 + 1000  # the agent's sample time, a little after the second
        busy = 50 + 30 * rng.random()
        for cpu in ("total", "0", "1"):
            out.append(f"cpu,cpu={cpu},node={node} user={busy * .8:.2f},system={busy * .2:.2f},"
                       f"iowait=0.1,irq=0,softirq=0.3,steal=0,idle={100 - busy:.2f} {ts}")
        out.append(f"mem,node={node} used={2e9 + rng.random() * 1e8:.0f},available=6e9,"
                   f"percent=25.5,swap_used=0,pgfault_ps={rng.random() * 1e4:.1f},"
                   f"pgmajfault_ps=0 {ts}")
        for dev in ("sda", "sdb"):
            out.append(f"disk,dev={dev},node={node} read_bps={rng.random() * 1e6:.1f},"
                       f"write_bps={rng.random() * 1e6:.1f},read_iops=12,write_iops=30,"
                       f"busy_pct={rng.random() * 10:.2f} {ts}")
        for nic in ("lo", "eth0"):
            out.append(f"net,nic={nic},node={node} rx_bps={rng.random() * 1e5:.1f},"
                       f"tx_bps={rng.random() * 1e5:.1f},rx_pps=50,tx_pps=50,errors=0,drops=0 {ts}")
        for pid, comm in (("tree", "bench"), ("100", "bench"), ("101", "worker")):
            out.append(f"proc,comm={comm},{job},node={node},pid={pid} cpu_pct={busy * 1.5:.2f},"
                       f"rss={3e8 + rng.random() * 1e6:.0f},read_bps=0,write_bps=4096,threads=8,"
                       f"ctx_vol=120,ctx_invol=8,fds=40 {ts}")
        for scope, tag in (("job", f",{job}"), ("system", "")):
            for ev in PERF_EVENTS:
                v = rng.random() * 1e9
                out.append(f"perf,event={ev}{tag},node={node},scope={scope} value={v:.0f},"
                           f"per_sec={v:.0f},enabled_pct=100 {ts}")
            out.append(f"perf,event=ipc{tag},node={node},scope={scope} value="
                       f"{1 + rng.random():.4f},enabled_pct=100 {ts}")
        out.append(f"app,{job},name=latency,node={node} value={rng.gauss(12, 2):.3f} {ts}")
        out.append(f"app,{job},name=ops,node={node} value={rng.gauss(5e4, 1e3):.1f} {ts}")
        out.append(f"agent,node={node} cpu_pct={rng.random():.2f},rss=5e7,samples_dropped=0,"
                   f"spool_depth=0 {ts}")
    for i, phase in enumerate(("warmup", "measure", "cooldown")):
        ts = T0_NS + i * (seconds // 3) * 10**9 + 500
        out.append(f'mark,{job},node={node} phase="{phase}" {ts}')
    return out


def write_data(url: str, nodes: list[str], seconds: int) -> tuple[int, float]:
    """Write every node's lines; returns (points, seconds it took)."""
    rng = random.Random(1)
    points, started = 0, time.perf_counter()
    for node in nodes:
        lines = node_lines(node, seconds, rng)
        points += len(lines)
        for i in range(0, len(lines), LINES_PER_POST):
            body = "\n".join(lines[i:i + LINES_PER_POST]).encode()
            status, text = request(url, "POST", "/write", params={"db": DB, "precision": "ns"},
                                   body=body, timeout=60)
            if status != 204:
                raise RuntimeError(f"write failed: HTTP {status} {text[:200]!r}")
    return points, time.perf_counter() - started


def make_state(path: Path, nodes: list[str], seconds: int) -> Store:
    """The job and its runs (one per node, succeeded), and each node's facts."""
    store = Store.open(path)
    start = T0_NS / 1e9
    spec = JobSpec(command=["bench"], targets=nodes, collect=["system", "process", "perf", "app"],
                   interval=1.0, tags={"build": "1"})
    job = Job(id=JOB, spec=spec, created_at=start - 1, state=JobState.SUCCEEDED,
              ended_at=start + seconds)
    runs = [Run(id=f"{JOB}.{n}.1", job_id=JOB, node=n, iteration=1, state=RunState.SUCCEEDED,
                pid=100, exit_code=0, dispatched_at=start - 0.5, started_at=start,
                ended_at=start + seconds) for n in nodes]
    store.add_job(job, runs)
    for n in nodes:
        store.record_facts(n, {"hostname": n, "kernel": "6.1.0", "cpu_model": "bench CPU",
                               "governor": "performance", "cpus": 2, "memory_bytes": 8 << 30,
                               "agent_version": "0.1.0", "perf_available": True,
                               "perf_paranoid": 2, "pmu_hardware": True}, start - 10)
    return store


async def timed(coro: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - started


async def measure(url: str, store: Store) -> dict[str, Any]:
    """Time the raw fetch, the JSON and HTML reports and a comparison, in this order."""
    client = InfluxV1Sink(url, DB, timeout=600)

    def job_dict(job_id: str) -> dict[str, Any] | None:
        found = store.job(job_id)
        return found[0].to_dict(found[1]) if found else None

    def facts(node: str, when: float | None) -> tuple[dict[str, Any], str] | None:
        found = store.facts_at(node, when)
        return (found[0], "recorded") if found else None

    analyst = Analyst(job_dict, facts, client, DB)
    try:
        job = job_dict(JOB)
        assert job is not None
        window = report.query_window(job, time.time())
        assert window is not None
        raw, fetch_s = await timed(query.fetch(client, window, DB))
        values = sum(c.size for series in raw.values() for s in series for c in s.columns.values())
        obj, json_s = await timed(analyst.report(JOB, "json"))
        html, html_s = await timed(analyst.report(JOB, "html"))
        cmp, cmp_s = await timed(analyst.compare(JOB, JOB, "json"))
    finally:
        await client.close()
    return {"fetch_s": fetch_s, "values": values, "report_json_s": json_s,
            "report_html_s": html_s, "compare_s": cmp_s, "html_bytes": len(html["content"]),
            "json_bytes": len(json.dumps(obj)), "metrics": len(obj["metrics"]),
            "compared_metrics": len(cmp["metrics"])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    nodes = [f"node{i:02d}" for i in range(args.nodes)]
    with tempfile.TemporaryDirectory(prefix="ptap-bench-report-") as tmp:
        server = InfluxServer(Path(tmp) / "influxdb", die_with_parent=True)
        with server:
            create_database(server.url, DB)
            points, write_s = write_data(server.url, nodes, args.seconds)
            store = make_state(Path(tmp) / "manager.db", nodes, args.seconds)
            try:
                result = asyncio.run(measure(server.url, store))
            finally:
                store.close()
    return {"nodes": args.nodes, "seconds": args.seconds, "points": points,
            "write_s": write_s, **result}


def summary(r: dict[str, Any]) -> str:
    pts = r["points"]

    def row(label: str, seconds: float) -> str:
        return f"  {label:<34} {seconds:7.2f} s  {pts / seconds:>12,.0f} points/s"

    return "\n".join([
        f"report benchmark: {r['nodes']} nodes x {r['seconds']} s at 1 s sampling = "
        f"{pts:,} points ({r['values']:,} values read), written in {r['write_s']:.1f} s",
        row("raw fetch (queries + arrays)", r["fetch_s"]),
        row("report, JSON", r["report_json_s"]),
        row("report, HTML (Bokeh, inline)", r["report_html_s"]),
        row("compare job vs itself, JSON", r["compare_s"]),
        f"  report JSON / raw fetch            {r['report_json_s'] / r['fetch_s']:7.2f} x",
        f"  sizes: JSON {r['json_bytes'] / 1e6:.1f} MB, HTML {r['html_bytes'] / 1e6:.1f} MB; "
        f"{r['metrics']} metrics reported, {r['compared_metrics']} compared",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
