"""Benchmark: job dispatch latency on loopback, from ``job.submit`` until every run is running.

    .venv/bin/python scripts/bench/dispatch.py [--agents 1,10,50] [--jobs 20] [--json]

What is measured. A real manager runs as a subprocess (``python -m manager.main``
with ``bind_port=0`` and a ready file); this process holds a pool of real
:class:`agent.link.Link` agents (as many as the largest ``--agents`` value), each
with its own node name and workdir under a temporary directory. For each N, jobs
running ``true`` target the first N nodes by name, one job at a time (the next is
submitted once the previous one has ended, so every node is idle). The latency of
a job is the time from just before :meth:`ManagerClient.submit` until this process
receives, on the manager's PUB socket (``evt.job.<id>``), the event in which the
last of its N runs reaches ``running`` or any later state. ``true`` exits at
once, so a run may be seen ``succeeded`` first; that counts as having run.

Why. Dispatch fans one request out to N agents and gathers N updates back, all
through the manager's single ROUTER loop, which also commits each change to
SQLite. To judge that cost independently of the machine, the same run measures
the plain ROUTER round trip (``nodes.list`` with no node registered) and prints
dispatch p50 / round-trip p50 per N (DESIGN §10: benchmarks print ratios measured
in the same run).

Breakdown (p50 over jobs, ms after submit; wall clocks of the same host):
``submit`` = the submit reply arrived here; ``begin`` = ``dispatched_at`` of the
runs (the manager stamps every run of one dispatch pass with the time the pass
began, so this is when sending began, not when the last dispatch left);
``spawned`` = the last agent-side ``started_at`` (command spawned); ``recorded`` =
the manager's timestamp on the last run's ``running`` event. The dispatch figure
minus ``recorded`` is the time the event spends in PUB/SUB and this process.

Caveat: all agents share this process's event loop and spawn their commands from
it, so for large N the agents' side is serialised here in a way it is not on real
nodes (one agent per host). The ``spawned`` column shows how much that weighs.

The whole run has a hard time limit (``--time-limit``, default 120 s); what was
measured by then is printed and marked as truncated. The manager subprocess is
stopped by pid (SIGTERM, then wait), every link is closed and the temporary
directory removed, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import zmq.asyncio  # noqa: E402

from agent.link import Link  # noqa: E402
from agent.runner import RunnerOptions  # noqa: E402
from bus import topics  # noqa: E402
from bus.client import ManagerClient, subscribe  # noqa: E402
from bus.messages import Event, JobSpec, NodeFacts, RunState  # noqa: E402

MAX_AGENTS = 200  # a Link holds ~2 fds here and ~1 in the manager; keep well under ulimits
FDS_PER_AGENT = 4  # DEALER + its mailbox, plus the three pipes of a run being started
STARTED = frozenset(s.value for s in RunState if s not in (RunState.QUEUED,
                                                           RunState.DISPATCHED))
JOB_FINAL = frozenset({"succeeded", "failed", "cancelled"})
JOB_TIMEOUT = 15.0  # one job, submit to final; far above any expected latency
CLEANUP_RESERVE = 15.0  # seconds of the time limit kept for closing links and the manager


# --- statistics -----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float] | None:
    """p50/p95/min/max in milliseconds, or None when nothing was measured."""
    if not seconds:
        return None
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "min": min(ms),
            "max": max(ms), "count": len(ms)}


# --- the manager subprocess ----------------------------------------------------------------


class ManagerProcess:
    """``python -m manager.main`` on a random port with its state in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ready = tmp / "manager.ready"
        self.log = tmp / "manager.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "manager.main", "--set", "basic.bind_port=0",
                "--set", f"state.path={self.tmp / 'manager.db'}", "--ready-file",
                str(self.ready), "--set", "basic.interval=1"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=self.tmp, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)

    async def ports(self, timeout: float = 15.0) -> dict[str, int]:
        """Wait for the ready file (no event exists for it: a short bounded poll)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"manager exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"manager not ready after {timeout:g} s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        return json.loads(self.ready.read_text(encoding="utf-8"))

    def stop(self) -> int | None:
        """SIGTERM by pid, wait; SIGKILL only if it does not stop within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- events ----------------------------------------------------------------------------------


@dataclass
class JobWatch:
    """What the PUB stream told about one job. ``started`` maps run id to
    ``(receipt perf_counter, event ts, dispatched_at, started_at)``."""

    expected: int | None = None
    started: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    state: str = ""
    all_running: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        if self.expected is not None and len(self.started) >= self.expected:
            self.all_running.set()


class Tracker:
    """Job events by job id. Events may arrive before the submit reply, so a
    watch is created by whichever comes first."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobWatch] = {}

    def expect(self, job_id: str, runs: int) -> JobWatch:
        watch = self.jobs.setdefault(job_id, JobWatch())
        watch.expected = runs
        watch.check()
        return watch

    def note(self, msg: Event, received: float) -> None:
        watch = self.jobs.setdefault(msg.job_id, JobWatch())
        if msg.kind == "run" and msg.state in STARTED and msg.run_id not in watch.started:
            detail = msg.detail
            watch.started[msg.run_id] = (received, msg.ts, detail.get("dispatched_at") or 0.0,
                                         detail.get("started_at") or 0.0)
            watch.check()
        elif msg.kind == "job" and msg.state in JOB_FINAL:
            watch.state = msg.state
            watch.finished.set()


async def follow(address: str, tracker: Tracker, ctx: zmq.asyncio.Context) -> None:
    """Feed every ``evt.job.*`` event to ``tracker`` with its receipt time."""
    async for _topic, msg in subscribe(address, [topics.JOB_EVENTS], ctx=ctx):
        if isinstance(msg, Event):
            tracker.note(msg, time.perf_counter())


# --- agents ----------------------------------------------------------------------------------


def node_facts() -> NodeFacts:
    return NodeFacts(hostname=platform.node() or "localhost", address="127.0.0.1",
                     cpus=os.cpu_count() or 1, memory_bytes=0, kernel=platform.release(),
                     agent_version="bench")


async def start_links(address: str, count: int, tmp: Path, ctx: zmq.asyncio.Context,
                      links: list[tuple[Link, asyncio.Task[None]]]) -> None:
    """Append ``count`` links named ``bench000``…, each with its own workdir, to
    ``links`` (so a failure half-way still cleans up); wait until all are registered."""
    facts = node_facts()
    for i in range(count):
        node = f"bench{i:03d}"
        options = RunnerOptions(workdir=str(tmp / "agents" / node), kill_grace=1.0)
        link = Link(address, node, facts, ctx=ctx, runner_options=options)
        links.append((link, asyncio.create_task(link.run(), name=f"link {node}")))
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(*(link.registered.wait() for link, _ in links))
    except TimeoutError:
        done = sum(link.registered.is_set() for link, _ in links)
        raise RuntimeError(f"only {done} of {count} agents registered within 20 s") from None


async def stop_links(links: list[tuple[Link, asyncio.Task[None]]]) -> None:
    """Cancel every session loop, then end any run still going."""
    for _, task in links:
        task.cancel()
    await asyncio.gather(*(task for _, task in links), return_exceptions=True)
    async with asyncio.timeout(10):
        await asyncio.gather(*(link.aclose() for link, _ in links), return_exceptions=True)


def check_fd_budget(agents: int) -> int:
    """Refuse more agents than the fd limit can hold (with room for zmq and Python)."""
    if agents > MAX_AGENTS:
        raise SystemExit(f"--agents: at most {MAX_AGENTS} agents in one process")
    need = 128 + FDS_PER_AGENT * agents
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"need about {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


# --- measurements ----------------------------------------------------------------------------


async def round_trips(client: ManagerClient, calls: int, deadline: float) -> list[float]:
    """Seconds per ``nodes.list`` request/reply, one at a time."""
    out = []
    for _ in range(calls):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        await client.nodes()
        out.append(time.perf_counter() - t0)
    return out


async def one_job(client: ManagerClient, tracker: Tracker, nodes: list[str]) -> dict[str, Any]:
    """Submit ``true`` to ``nodes``; seconds until all runs started, plus the breakdown.
    Returns once the job has ended, so the next job finds every node idle."""
    spec = JobSpec(command=["true"], name="bench-dispatch", targets=nodes, collect=[])
    wall0, t0 = time.time(), time.perf_counter()
    job = await client.submit(spec)
    submitted = time.perf_counter() - t0
    watch = tracker.expect(job["id"], len(nodes))
    try:
        async with asyncio.timeout(JOB_TIMEOUT):
            await watch.all_running.wait()
            await watch.finished.wait()
    except TimeoutError:  # not the bench's own time limit: say which job hung
        raise RuntimeError(f"job {job['id']}: {len(watch.started)} of {len(nodes)} runs "
                           f"started, job state {watch.state or '?'} after {JOB_TIMEOUT:g} s"
                           ) from None
    tracker.jobs.pop(job["id"], None)
    seen, recorded, sent, started = (max(col) for col in zip(*watch.started.values(),
                                                             strict=True))
    return {"dispatch": seen - t0, "submit": submitted, "begin": sent - wall0,
            "spawned": started - wall0, "recorded": recorded - wall0, "state": watch.state}


async def measure_n(client: ManagerClient, tracker: Tracker, nodes: list[str], jobs: int,
                    deadline: float, result: dict[str, Any]) -> None:
    """Up to ``jobs`` jobs on ``nodes`` (filled into ``result`` as they complete)."""
    keys = ("dispatch", "submit", "begin", "spawned", "recorded")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    result.update(agents=len(nodes), jobs=0, failed_jobs=0)
    for _ in range(jobs):
        if time.monotonic() > deadline:
            result["truncated"] = True
            break
        one = await one_job(client, tracker, nodes)
        result["jobs"] += 1
        result["failed_jobs"] += one["state"] != "succeeded"
        for k in keys:
            samples[k].append(one[k])
            result[f"{k}_ms"] = summary_ms(samples[k])


async def measure_all(address: str, tracker: Tracker, nodes: list[str],
                      ctx: zmq.asyncio.Context, args: argparse.Namespace, deadline: float,
                      results: dict[str, Any]) -> None:
    """Warm up on every node, then measure each N in turn, each within its share of time."""
    async with ManagerClient(address, ctx=ctx, timeout=10) as client:
        await one_job(client, tracker, nodes)  # warm-up: workdirs, first spawns, SUB path
        loaded = await round_trips(client, args.round_trips, deadline)
        results["round_trip_loaded_ms"] = summary_ms(loaded)
        begun = time.monotonic()
        share = (deadline - begun) / len(args.agents)
        for i, n in enumerate(args.agents):
            entry: dict[str, Any] = {}
            results["dispatch"].append(entry)
            n_deadline = min(deadline, begun + share * (1 + i))  # unused time carries over
            await measure_n(client, tracker, nodes[:n], args.jobs, n_deadline, entry)


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Held:
    """What must be closed at the end, filled in as it is opened."""

    links: list[tuple[Link, asyncio.Task[None]]] = field(default_factory=list)
    follower: asyncio.Task[None] | None = None


async def phases(manager: ManagerProcess, ctx: zmq.asyncio.Context, held: Held,
                 args: argparse.Namespace, deadline: float, results: dict[str, Any]) -> None:
    """Manager up, baseline round trips, subscriber, agents, then the dispatch runs."""
    manager.start()
    ports = await manager.ports()
    router, pub = f"tcp://127.0.0.1:{ports['router']}", f"tcp://127.0.0.1:{ports['pub']}"
    async with ManagerClient(router, ctx=ctx, timeout=10) as client:
        results["round_trip_ms"] = summary_ms(
            await round_trips(client, args.round_trips, deadline))
    tracker = Tracker()
    # Subscribed before any agent connects, so no event of a job can be missed.
    held.follower = asyncio.create_task(follow(pub, tracker, ctx), name="follow")
    await start_links(router, max(args.agents), manager.tmp, ctx, held.links)
    results["fds_open"] = len(os.listdir("/proc/self/fd"))
    nodes = [link.node for link, _ in held.links]
    await measure_all(router, tracker, nodes, ctx, args, deadline, results)


async def bench(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Run :func:`phases` under the hard time limit, and always clean up."""
    start = time.monotonic()
    hard = args.time_limit - CLEANUP_RESERVE
    deadline = start + hard - 3.0  # stop submitting a little before the hard limit
    ctx = zmq.asyncio.Context()
    held = Held()
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels like Ctrl-C does, so the cleanup below still runs.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="ptap-bench-dispatch-") as tmpdir:
        manager = ManagerProcess(Path(tmpdir))
        try:
            async with asyncio.timeout(hard):
                await phases(manager, ctx, held, args, deadline, results)
        except TimeoutError:
            results["truncated"] = True
            results["error"] = "hard time limit reached"
        except Exception as exc:
            results["error"] = f"{type(exc).__name__}: {exc}"
            results["manager_log_tail"] = manager.tail()
        finally:
            await cleanup(manager, held, ctx, results)
            results["elapsed_s"] = round(time.monotonic() - start, 2)


async def cleanup(manager: ManagerProcess, held: Held, ctx: zmq.asyncio.Context,
                  results: dict[str, Any]) -> None:
    """Links first (so no run outlives us), then the subscriber, context and manager."""
    try:
        await stop_links(held.links)
    finally:
        if held.follower is not None:
            held.follower.cancel()
            await asyncio.gather(held.follower, return_exceptions=True)
        ctx.destroy(linger=0)
        results["manager_exit"] = manager.stop()


# --- output ------------------------------------------------------------------------------------


def _ms(stats: dict[str, float] | None, key: str = "p50") -> str:
    return "-" if not stats else f"{stats[key]:.2f}"


def format_table(results: dict[str, Any]) -> str:
    rtt, loaded = results.get("round_trip_ms"), results.get("round_trip_loaded_ms")
    lines = ["ptap dispatch latency: submit -> every run running (loopback; manager in a "
             "subprocess, agents as Links in this process)",
             f"ROUTER round trip, nodes.list, no nodes:  p50 {_ms(rtt)} ms  "
             f"p95 {_ms(rtt, 'p95')} ms  ({rtt['count'] if rtt else 0} calls)",
             f"same, {results['pool']} idle agents registered: p50 {_ms(loaded)} ms  "
             f"p95 {_ms(loaded, 'p95')} ms",
             "",
             f"{'agents':>6} {'jobs':>5} {'disp p50':>9} {'disp p95':>9} {'p50/rtt':>8}"
             f" {'submit':>8} {'begin':>7} {'spawned':>8} {'recorded':>9}   (ms; last 4: p50)"]
    for entry in results["dispatch"]:
        disp = entry.get("dispatch_ms")
        ratio = f"{disp['p50'] / rtt['p50']:.1f}x" if disp and rtt else "-"
        lines.append(f"{entry['agents']:>6} {entry['jobs']:>5} {_ms(disp):>9} "
                     f"{_ms(disp, 'p95'):>9} {ratio:>8} {_ms(entry.get('submit_ms')):>8} "
                     f"{_ms(entry.get('begin_ms')):>7} {_ms(entry.get('spawned_ms')):>8} "
                     f"{_ms(entry.get('recorded_ms')):>9}"
                     + (f"   ({entry['failed_jobs']} failed)" if entry["failed_jobs"] else "")
                     + ("   (cut short)" if entry.get("truncated") else ""))
    lines.append(_footer(results))
    return "\n".join(lines)


def _footer(results: dict[str, Any]) -> str:
    notes = [f"elapsed {results.get('elapsed_s', 0):.1f} s", f"fds {results.get('fds_open')}",
             f"manager exit {results.get('manager_exit')}"]
    if results.get("truncated"):
        notes.append("TRUNCATED" if results.get("error") else "TRUNCATED by the time limit")
    if results.get("error"):
        notes.append(f"error: {results['error']}")
    return "\n" + ", ".join(notes)


def add_ratios(results: dict[str, Any]) -> None:
    """Dispatch p50 / round-trip p50 per N; an N cut short marks the whole run truncated."""
    rtt = results.get("round_trip_ms")
    for entry in results["dispatch"]:
        disp = entry.get("dispatch_ms")
        entry["ratio_p50"] = disp["p50"] / rtt["p50"] if disp and rtt else None
        if entry.get("truncated"):
            results["truncated"] = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="1,10,50",
                        help="comma-separated agent counts per job (default 1,10,50)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs per agent count")
    parser.add_argument("--round-trips", type=int, default=200, help="nodes.list calls")
    parser.add_argument("--time-limit", type=float, default=120.0, help="hard limit, seconds")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    try:
        args.agents = sorted({int(a) for a in args.agents.split(",") if a.strip()})
    except ValueError:
        parser.error("--agents: expected numbers like 1,10,50")
    if not args.agents or args.agents[0] < 1 or args.jobs < 1:
        parser.error("--agents and --jobs must be at least 1")
    if args.time_limit <= CLEANUP_RESERVE + 5:
        parser.error(f"--time-limit must be above {CLEANUP_RESERVE + 5:g} s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_fd_budget(max(args.agents))
    results: dict[str, Any] = {"pool": max(args.agents), "jobs_per_n": args.jobs,
                               "command": ["true"], "time_limit_s": args.time_limit,
                               "dispatch": []}
    status = 0
    try:
        asyncio.run(bench(args, results))
    except (KeyboardInterrupt, asyncio.CancelledError):  # cleaned up in bench()'s finally
        results.update(error="interrupted", truncated=True)
        status = 130
    add_ratios(results)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    if status == 0 and results.get("error") and results["error"] != "hard time limit reached":
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
