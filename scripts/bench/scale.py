"""Benchmark: a fleet of simulated agents on the real agent code, streaming into InfluxDB.

    .venv/bin/python scripts/bench/scale.py [--agents 1000] [--rate 100] [--duration 600]
        [--procs P] [--known 2000] [--jobs 5] [--ramp] [--json]

A real influxd (its own, in a temporary folder, database ``ptap``), a real
manager (``python -m manager.main``: heartbeat every 1 s, liveness 3, CURVE off
on loopback) and ``--agents`` agents in ``--procs`` worker processes
(multiprocessing), each worker holding its agents in one asyncio loop. Every
agent is the agent's own code: :class:`agent.link.Link` (register, welcome,
heartbeats at the manager's 1 s, run dispatch, which spawns the command) and
:class:`agent.shipper.Shipper` with its :class:`~agent.shipper.Spool` (numbered
batches kept until acked, resent on welcome and after 5 s). Only the
collectors are left out: each agent ships, once a second at its own phase of
the second, one batch of ``--rate`` rows of ``scale,node=N value=…`` with
distinct timestamps, so InfluxDB's count is exact.

Before the stream, ``--known`` − ``--agents`` more nodes register and leave
(``scripts/bench/overview.py``'s ``register_fleet``; they end ``lost``): the node
list and the overview then hold ``--known`` nodes, as a long-lived fleet's do.
Then, over ``--duration`` seconds of streaming (the window opens after 2 s of it),
it measures:

* false ``lost``: ``lost`` events on the manager's PUB socket for streaming agents;
* the manager's CPU (cores) and peak RSS (``VmHWM``); influxd's and the workers' CPU;
* ingest: points generated, acked within the run, and stored (InfluxDB ``count``
  after the agents' spools have drained), against ``agents × rate × seconds`` offered;
* ``ptap nodes``: the CLI's whole-process wall time (3 runs);
* the overview page in headless Chromium, a cold tab and a warm one: navigation to
  drawn (its summary counts every known node and the table shows rows), both as
  ``scripts/bench/overview.py`` measures them;
* then, still streaming, ``--jobs`` jobs (``true``) to every streaming node: submit →
  every run running, p50/p95, with ``scripts/bench/dispatch.py``'s measurement.

``--ramp`` instead raises the rate by ×1.5 every ``--step`` seconds (from
``--rate``) until ingest falls under 0.95 of offered twice at one rate, and
reports the ceiling and what limited it: the manager's core, influxd, the agents'
workers falling behind, or the host they all share (2 cores here; the cores of
everything else on it are reported too).

Bounds: ``--time-limit`` (default: duration + 900 s) ends the run; every process
is stopped by its pid (workers, manager, dashboard, Chromium, influxd), also on
error or Ctrl-C. Exit status 1 only when the bench itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402

from bus.client import ManagerClient  # noqa: E402
from scripts.bench import dispatch as dsp  # noqa: E402
from scripts.bench.hostile import vm_hwm_mb  # noqa: E402
from scripts.bench.ingest import Deadline, manager_process  # noqa: E402
from scripts.bench.overview import register_fleet  # noqa: E402
from scripts.bench.scale_fleet import Fleet, LostWatch  # noqa: E402
from scripts.bench.scale_measure import (  # noqa: E402
    DATABASE,
    Cpu,
    cli_nodes,
    overview_draw,
    sec,
    stored,
)
from scripts.bench.scale_probe import Probe, format_row  # noqa: E402
from scripts.influxdb_local import InfluxServer, create_database  # noqa: E402

DRAIN_S = 60.0  # after the stream stops, spools must be empty within this
WARM_UP = 2.0  # seconds of streaming before the window opens
TARGETS = {"false_lost": 0, "ingest_ratio": 0.95, "nodes_s": 0.5, "overview_s": 2.0}


# --- the run -------------------------------------------------------------------------------


class Run:
    """influxd, the manager, the workers, the dashboard: started in order, stopped in reverse."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.influx = InfluxServer(tmp / "influxdb", die_with_parent=True)
        self.stack = contextlib.ExitStack()
        self.manager: subprocess.Popen[bytes] | None = None
        self.fleet: Fleet | None = None
        self.dashboard: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        self.influx.start()
        create_database(self.influx.url, DATABASE)
        deadline = Deadline(time.monotonic() + 60)
        self.manager, self.ports = self.stack.enter_context(
            manager_process(self.tmp, self.influx.url, DATABASE, deadline))
        base = "tcp://127.0.0.1"
        self.fleet = Fleet(self.args, f"{base}:{self.ports['router']}",
                           f"{base}:{self.ports['pull']}", self.tmp)

    def start_dashboard(self) -> str:
        from scripts.bench.live_latency import start_dashboard

        self.dashboard, url = start_dashboard(self.tmp, self.ports["router"], self.influx.url)
        return url

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        if self.dashboard is not None:
            from scripts.bench.live_latency import stop

            stop(self.dashboard)
        self.stack.close()  # the manager
        self.influx.stop()


async def bring_up(run: Run, res: dict[str, Any]) -> None:
    assert run.fleet is not None
    answers = await run.fleet.ask("up", timeout=dsp.READY_TIMEOUT + 120)
    res["registered"] = sum(a["registered"] for a in answers)
    res["register_s"] = max(a["seconds"] for a in answers)
    if res["registered"] < run.args.agents:
        raise RuntimeError(f"only {res['registered']} of {run.args.agents} agents registered")
    gone = max(0, run.args.known - run.args.agents)
    # Nodes that register and leave (scripts/bench/overview.py's), labelled by rack.
    res["ghosts"] = len(await asyncio.to_thread(
        register_fleet, f"tcp://127.0.0.1:{run.ports['router']}", gone))


async def drain(run: Run) -> dict[str, int]:
    """Stop shipping, then wait (bounded) until every agent's spool is empty."""
    assert run.fleet is not None
    await run.fleet.ask("halt")
    deadline = time.monotonic() + DRAIN_S
    while True:
        totals = await run.fleet.totals()
        if totals["spooled"] == 0 or time.monotonic() > deadline:
            return totals
        await asyncio.sleep(0.5)  # a bounded poll of the workers' spools


async def steady(run: Run, res: dict[str, Any], watch: LostWatch) -> None:
    """Stream for --duration; CPU, RSS, ptap nodes and the overview measured meanwhile."""
    args, fleet = run.args, run.fleet
    assert fleet is not None and run.manager is not None and run.influx.pid is not None
    cpu = Cpu(run.manager.pid, run.influx.pid, fleet.pids)
    await fleet.ask("stream")
    await asyncio.sleep(WARM_UP)  # every agent's first batch out: the window starts steady
    base, c0, t_start = await fleet.totals(), cpu.read(), time.monotonic()
    phases = res["phases"] = {}  # seconds into the window each began
    probe = Probe(run.manager.pid, run.ports["router"], args.probe, res) if args.probe else None
    if probe is not None:
        probe.begin(t_start)
    await asyncio.sleep(min(10.0, args.duration / 3))  # the stream settles first
    phases["ptap nodes"] = time.monotonic() - t_start
    res["nodes_s"] = await asyncio.to_thread(cli_nodes, run.ports["router"])
    phases["dashboard start"] = time.monotonic() - t_start
    url = await asyncio.to_thread(run.start_dashboard)
    phases["overview"] = time.monotonic() - t_start
    known = res["registered"] + res["ghosts"]
    res["overview_s"] = await asyncio.to_thread(overview_draw, url, known, run.tmp)
    phases["overview done"] = time.monotonic() - t_start
    left = args.duration - (time.monotonic() - t_start)
    if left > 0:
        await asyncio.sleep(left)  # the measured window itself
    if probe is not None:
        await probe.end()
    c1 = cpu.read()
    res["window_s"] = c1["wall"] - c0["wall"]
    res["cores"] = Cpu.cores(c0, c1)
    res["manager_rss_mb"] = vm_hwm_mb(run.manager.pid)
    now = await fleet.totals()
    res["in_window"] = {**now, **{k: now[k] - base[k] for k in ("generated", "acked", "dropped")}}
    # Counted apart: in the job burst the simulated agents' own host forks a run per
    # node at once, and a worker loop that forks hundreds cannot beat in time.
    res["false_lost_streaming"] = {"events": len(watch.times), "nodes": len(watch.lost)}
    res["jobs"] = await jobs_to_all(run, cpu)
    phases["jobs done"] = time.monotonic() - t_start
    res["false_lost"] = {"events": len(watch.times), "nodes": len(watch.lost),
                         "at_s": sorted({round(t - t_start) for t in watch.times})}


async def jobs_to_all(run: Run, cpu: Cpu) -> dict[str, Any] | None:
    """``--jobs`` jobs (``true``) to every streaming node; dispatch.py's measurement."""
    if run.args.jobs <= 0:
        return None
    ctx = zmq.asyncio.Context()
    address = f"tcp://127.0.0.1:{run.ports['router']}"
    tracker, submitter = dsp.Tracker(), dsp.Submitter(address, ctx)
    follower = asyncio.create_task(dsp.follow(f"tcp://127.0.0.1:{run.ports['pub']}", tracker,
                                              ctx))
    assert run.fleet is not None and run.manager is not None
    nodes = [f"scale{i:04d}" for i in range(run.args.agents)]
    try:
        async with ManagerClient(address, ctx=ctx, timeout=30) as client:
            bench = dsp.Bench(client, submitter, tracker,
                              dsp.CpuClock(run.manager.pid, run.fleet.pids), ["true"])
            await asyncio.sleep(0.5)  # the SUB's subscription reaches the PUB first
            samples = [await dsp.one_job(bench, nodes) for _ in range(run.args.jobs)]
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        submitter.close()
        ctx.destroy(linger=0)
    return dsp.summary_ms([s["running"] for s in samples])


async def ramp(run: Run, res: dict[str, Any]) -> None:
    """Rate ×1.5 every --step s until ingest stays under 0.95 of offered: a step that
    falls short is run once more at the same rate (a stall of the host's, or a backlog
    from the step before, is not the ceiling), and the second shortfall ends the ramp."""
    args, fleet = run.args, run.fleet
    assert fleet is not None and run.manager is not None and run.influx.pid is not None
    cpu = Cpu(run.manager.pid, run.influx.pid, fleet.pids)
    rate, steps, retried = args.rate, [], False
    await fleet.ask("stream")
    await asyncio.sleep(WARM_UP)  # every agent's first batch out before the first step
    before, c0 = await fleet.totals(), cpu.read()
    while rate <= args.max_rate:
        await fleet.ask("rate", rate)
        await asyncio.sleep(args.step)  # one step of the ramp
        after, c1 = await fleet.totals(), cpu.read()
        step = ramp_step(args, rate, before, after, Cpu.cores(c0, c1))
        steps.append(step)
        before, c0 = after, c1
        if step["held"]:
            rate, retried = rate * 1.5, False
        elif retried:
            break
        else:
            retried = True
    res["ramp"] = steps
    res["ceiling"] = ceiling(steps, os.cpu_count() or 1)


def ramp_step(args: argparse.Namespace, rate: float, before: dict[str, int],
              after: dict[str, int], cores: dict[str, float]) -> dict[str, Any]:
    """One step's figures, printed as it ends."""
    offered = args.agents * rate
    step = {"rate": rate, "offered": offered, "cores": cores,
            "generated_ps": (after["generated"] - before["generated"]) / args.step,
            "acked_ps": (after["acked"] - before["acked"]) / args.step,
            "spooled": after["spooled"]}
    step["held"] = step["acked_ps"] >= TARGETS["ingest_ratio"] * offered
    print(f"ramp: {rate:g}/s per agent: offered {offered:,.0f}/s, acked "
          f"{step['acked_ps']:,.0f}/s, spooled {after['spooled']:,}, cores "
          + " ".join(f"{k} {v:.2f}" for k, v in cores.items()), file=sys.stderr, flush=True)
    return step


def ceiling(steps: list[dict[str, Any]], cpus: int) -> dict[str, Any]:
    """The last rate held, and what gave at the next: the busiest part at the failing step."""
    held = [s for s in steps if s["held"]]
    failing = steps[-1] if steps and steps[-1] not in held else None
    out: dict[str, Any] = {"held_ps": held[-1]["acked_ps"] if held else 0.0}
    if failing is None:
        out["limit"] = "not reached (raise --max-rate)"
        return out
    cores = failing["cores"]
    if cores["manager"] >= 0.9:
        out["limit"] = f"the manager's core ({cores['manager']:.2f} cores)"
    elif cores["host"] >= 0.9 * cpus:
        parts = sorted(((v, k) for k, v in cores.items() if k != "host"), reverse=True)
        # "others" high means the host was shared: this ceiling is not ptap's.
        out["limit"] = (f"the host's {cpus} CPUs, all busy ({cores['host']:.2f}): "
                        + ", ".join(f"{k} {v:.2f}" for v, k in parts))
    elif failing["generated_ps"] < 0.95 * failing["offered"]:
        out["limit"] = "the agents' host: the workers fell behind their rate"
    else:
        out["limit"] = f"influxd ({cores['influxd']:.2f} cores) or its disk"
    return out


async def bench(args: argparse.Namespace, res: dict[str, Any], tmp: Path) -> None:
    run = Run(args, tmp)
    watch = LostWatch()
    follower: asyncio.Task[None] | None = None
    try:
        await run.start()
        follower = asyncio.create_task(watch.follow(f"tcp://127.0.0.1:{run.ports['pub']}"))
        await bring_up(run, res)
        watch.armed = {f"scale{i:04d}" for i in range(args.agents)}
        if args.ramp:
            await ramp(run, res)
            res["false_lost"] = {"events": len(watch.times), "nodes": len(watch.lost)}
        else:
            await steady(run, res, watch)
        res["totals"] = await drain(run)
        res["stored"] = await asyncio.to_thread(stored, run.influx.url)
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        run.stop()


def report(r: dict[str, Any]) -> str:
    a = r["args"]
    lines = [f"scale: {a['agents']} agents × {a['rate']:g} points/s, {a['procs']} worker "
             f"processes, {r.get('registered', 0) + r.get('ghosts', 0)} known nodes "
             f"({r.get('ghosts', 0)} gone), registered in {r.get('register_s', 0):.1f} s"]
    if "ramp" in r:
        lines.append(f"ceiling: {r['ceiling']['held_ps']:,.0f} points/s held; "
                     f"limit: {r['ceiling']['limit']}; false lost: "
                     f"{r['false_lost']['events']} events on {r['false_lost']['nodes']} nodes")
        return "\n".join(lines)
    t, window, lost = r["totals"], r["window_s"], r["false_lost"]
    offered = a["agents"] * a["rate"] * window
    ratio = r["in_window"]["acked"] / offered if offered else 0.0
    c = r["cores"]
    streaming = r.get("false_lost_streaming", lost)
    lines += [
        f"false lost while streaming: {streaming['events']} events, {streaming['nodes']} nodes "
        "(target 0)",
        f"false lost in all, the job burst included: {lost['events']} events, "
        f"{lost['nodes']} nodes"
        + (f", at {lost['at_s'][:10]} s into the window; phases began at "
           + ", ".join(f"{k} {v:.0f} s" for k, v in r["phases"].items()) if lost["events"]
           else ""),
        f"ingest in the {window:.0f} s window: acked {r['in_window']['acked']:,} of "
        f"{offered:,.0f} offered = {ratio:.3f} (target ≥ {TARGETS['ingest_ratio']}); "
        f"generated {t['generated']:,}, stored after drain {r['stored']:,} "
        f"({r['stored'] / max(1, t['generated']):.4f}), spool drops {t['dropped']:,}",
        f"manager: {c['manager']:.2f} cores, peak RSS {r['manager_rss_mb']:.0f} MB; influxd "
        f"{c['influxd']:.2f} cores; agents' workers {c['agents']:.2f} cores; host "
        f"{c['host']:.2f} of {os.cpu_count()} cores ({c['others']:.2f} for everything else)",
        f"ptap nodes: median {statistics.median(r['nodes_s']):.2f} s, max "
        f"{max(r['nodes_s']):.2f} s (target < {TARGETS['nodes_s']} s)",
        "overview drawn: " + ", ".join(f"{how} {sec(o)}" for how, o in zip(
            ("cold", "warm"), r["overview_s"], strict=False))
        + f" (target < {TARGETS['overview_s']} s)"]
    lines += ["probe: " + format_row(row) for row in r.get("probe", [])]
    if r.get("jobs"):
        j = r["jobs"]
        lines.append(f"job to all {a['agents']} nodes, submit → all running: p50 "
                     f"{j['p50']:.0f} ms, p95 {j['p95']:.0f} ms ({j['count']} jobs)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="points/s per agent")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of streaming")
    p.add_argument("--procs", type=int, default=max(2, os.cpu_count() or 1))
    p.add_argument("--known", type=int, default=2000, help="nodes known (the rest gone)")
    p.add_argument("--jobs", type=int, default=5, help="jobs to every node after the window")
    p.add_argument("--ramp", action="store_true", help="raise the rate until ingest gives")
    p.add_argument("--step", type=float, default=30.0, help="seconds per ramp step")
    p.add_argument("--max-rate", type=float, default=5000.0, help="ramp: highest rate per agent")
    p.add_argument("--time-limit", type=float, default=0.0, help="default: duration + 900 s")
    p.add_argument("--probe", type=float, default=0.0,
                   help="sample the manager's RSS and nodes.list every PROBE s (0: off)")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= 5000 or args.rate <= 0 or args.duration < 10:
        p.error("--agents 1..5000, --rate > 0 and --duration ≥ 10 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res: dict[str, Any] = {"args": vars(args)}
    limit = args.time_limit or args.duration + 900
    with tempfile.TemporaryDirectory(prefix="ptap-scale-") as tmp:
        try:
            asyncio.run(asyncio.wait_for(bench(args, res, Path(tmp)), limit))
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"scale: failed: {exc or type(exc).__name__}", file=sys.stderr)
            return 1
    print(json.dumps(res, indent=1, default=str) if args.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
