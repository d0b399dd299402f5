"""Ingest benchmark: ptap end to end against raw InfluxDB, measured side by side in one run.

    .venv/bin/python scripts/bench/ingest.py [--points N] [--agents N] [--json]

docs/architecture.md#tests-and-benchmarks asks every benchmark for ratios measured in the same run on the
same machine, and §11 for the manager's cost per point. This one measures,
on the same generated points (``cpu`` rows of six 1-decimal percentages,
grouped as agents batch them, ``bus/metrics.py``):

1. **raw InfluxDB**: a private ``influxd`` (``scripts/influxdb_local.py``,
   temporary directory, free port) takes the points as pre-encoded line
   protocol over ``POST /write`` (5000 lines per request, 2 keep-alive
   connections). This is the ceiling: nothing can store faster.
2. **end to end**: ``python -m manager.main`` as a subprocess writes to the
   same influxd (a fresh database). Simulated agents in this process register
   over a DEALER (``Register`` with ``NodeFacts``), heartbeat, and PUSH
   pre-encoded ``MetricBatch`` frames as fast as acks allow, each keeping a
   bounded window of unacked batches. The rate counts *acked* points, and a
   batch is acked only once InfluxDB stored it; at the end InfluxDB's count
   must equal what was sent (nothing lost).
3. **ratio** end to end / raw (target ≥ 0.8).
4. **manager CPU per point**: the manager's user + system CPU time (psutil)
   over the end-to-end phase, divided by the points (target ≤ 3 µs).
5. **null sink**: the manager's own ceiling, without InfluxDB. An in-process
   :class:`manager.ingest.Ingest` whose sink discards the lines — a stand-in
   by design, as this phase measures the manager's decode, check, encode and
   batching alone — is fed the same frames with ``await ingest.accept()`` and
   its writer; then again through a real PULL socket (target ≥ 500k points/s).

The machine is shared by everything: on 2 cores the manager, influxd and
the agents compete for CPU, so the bench reports what each used, and what
*other* processes used meanwhile (it first waits, bounded, for them to go
quiet). The null-sink phases run first. Then raw and end-to-end phases
alternate over ``--rounds`` rounds (3 by default); the figures shown are
those of the median-ratio round among the ones other processes disturbed
least, so a ratio never mixes two rounds' background loads, and every
round's ratio is listed. Before each phase the bench waits, bounded, until influxd
has compacted what the previous one wrote, so neither pays for the other.

Everything is bounded in size and time (``--time-limit``, 180 s by default,
clean-up included); every process and directory the bench made is removed
at the end, whatever happens. A missed target is reported, not an error:
the exit status is 1 only when points were lost or a phase failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402

from bus import codec  # noqa: E402
from bus.messages import (  # noqa: E402
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    MetricAck,
    MetricBatch,
    NodeFacts,
    Register,
    Welcome,
)
from bus.sockets import SocketTuning, make_socket, receive_forever  # noqa: E402
from manager.ingest import Ingest  # noqa: E402
from manager.lineproto import encode_lines  # noqa: E402
from scripts.influxdb_local import InfluxServer, request  # noqa: E402

FIELDS = ["user", "system", "iowait", "irq", "softirq", "idle"]
CPUS = ["total", "0", "1", "2"]  # one series per tag value in every batch
STEP_NS = 10_000_000  # 10 ms between rows of a series: unique timestamps, small span
RAW_LINES = 5000
RAW_CONNS = 2
HEARTBEAT_S = 0.5  # agents' heartbeat: the manager marks a node lost after 3 s of silence
RESEND_S = 10.0  # an agent resends a batch unacked for this long (never expected here)
QUIET_CORES = 0.25  # other processes' CPU above which a phase counts as disturbed
TARGETS = {"ratio": 0.8, "manager_us_per_point": 3.0, "null_sink_points_per_s": 500_000}


class BenchError(RuntimeError):
    """A phase could not complete (a process died, a write failed, time ran out)."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """The overall time limit, shared by every phase."""

    end: float

    def left(self, cap: float = float("inf")) -> float:
        left = min(cap, self.end - time.monotonic())
        if left <= 0:
            raise BenchError("the overall --time-limit ran out")
        return left


@dataclass(slots=True)
class Workload:
    """The points of the run: per agent, its batches as wire series and as frames."""

    rows_per_batch: int
    series: dict[str, list[list[Any]]] = field(default_factory=dict)  # node → batches
    frames: dict[str, list[list[bytes]]] = field(default_factory=dict)  # node → frames
    points: int = 0

    def interleaved(self) -> list[list[bytes]]:
        """All frames, round-robin over agents, as a PULL socket fair-queues them."""
        lists = list(self.frames.values())
        longest = max(map(len, lists))
        return [f[i] for i in range(longest) for f in lists if i < len(f)]


# --- the points ----------------------------------------------------------------------


def cpu_values(rng: random.Random) -> list[float]:
    """One ``cpu`` sample: six 1-decimal percentages summing to about 100, as psutil's."""
    user, system = round(rng.uniform(0, 60), 1), round(rng.uniform(0, 20), 1)
    iowait, irq, softirq = (round(rng.uniform(0, hi), 1) for hi in (5, 1, 2))
    idle = round(max(0.0, 100.0 - user - system - iowait - irq - softirq), 1)
    return [user, system, iowait, irq, softirq, idle]


def build_workload(points: int, agents: int, rows_per_batch: int, seed: int = 1) -> Workload:
    """``points`` rows (rounded up to whole batches), every (series, ts) unique."""
    rng = random.Random(seed)
    pool = [cpu_values(rng) for _ in range(4096)]
    per_series = max(1, rows_per_batch // len(CPUS))
    work = Workload(rows_per_batch=per_series * len(CPUS))
    batches = -(-points // (agents * work.rows_per_batch))
    t0 = time.time_ns() - 3600 * 10**9  # an hour ago: well inside the ingest's window
    for a in range(agents):
        node = f"bench-{a:02d}"
        work.series[node], work.frames[node] = [], []
        for b in range(batches):
            series = []
            for c, cpu in enumerate(CPUS):
                ts = t0 + b * per_series * STEP_NS
                rows = [[ts + r * STEP_NS, *pool[(a * 7 + b * 13 + c * 5 + r) % len(pool)]]
                        for r in range(per_series)]
                series.append(["cpu", {"node": node, "cpu": cpu}, FIELDS, rows])
            work.series[node].append(series)
            msg = MetricBatch(node=node, seq=b + 1, series=series)
            work.frames[node].append(codec.encode(msg))
    work.points = agents * batches * work.rows_per_batch
    return work


def raw_bodies(work: Workload, lines_per_body: int) -> list[bytes]:
    """The same points as line-protocol request bodies, encoded before any timing."""
    lines = [line for batches in work.series.values() for series in batches
             for line in encode_lines(series)]
    assert len(lines) == work.points
    return [b"\n".join(lines[i:i + lines_per_body]) for i in range(0, len(lines), lines_per_body)]


# --- InfluxDB over plain HTTP ---------------------------------------------------------------


def influx_count(url: str, db: str) -> int:
    """Points stored in ``db`` (``count("user")`` over the ``cpu`` measurement)."""
    form = urllib.parse.urlencode({"q": 'SELECT count("user") FROM "cpu"', "db": db})
    status, body = request(url, "POST", "/query", body=form.encode(), timeout=60,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    result = json.loads(body or b"{}").get("results", [{}])[0]
    if status != 200 or "error" in result:
        raise BenchError(f"count query on {db}: HTTP {status} {body[:200]!r}")
    series = result.get("series")
    return int(series[0]["values"][0][1]) if series else 0


def influx_create(url: str, db: str) -> None:
    form = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'})
    status, body = request(url, "POST", "/query", body=form.encode(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        raise BenchError(f"cannot create database {db}: HTTP {status} {body[:200]!r}")


def _post_bodies(url: str, db: str, bodies: Iterator[bytes], lock: threading.Lock,
                 errors: list[str], deadline: Deadline) -> None:
    """One keep-alive connection POSTing bodies from the shared iterator until it is empty."""
    parts = urllib.parse.urlsplit(url)
    target = "/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        while not errors:
            with lock:
                body = next(bodies, None)
            if body is None:
                return
            if time.monotonic() > deadline.end:
                raise BenchError("time limit")
            conn.request("POST", target, body=body, headers={"Content-Type": "text/plain"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 204:
                errors.append(f"HTTP {response.status}: {answer[:200]!r}")
    except (OSError, http.client.HTTPException, BenchError) as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


def raw_write(url: str, db: str, bodies: list[bytes], conns: int, deadline: Deadline) -> float:
    """POST ``bodies`` over ``conns`` concurrent connections; the wall time taken."""
    shared, lock, errors = iter(bodies), threading.Lock(), []
    threads = [threading.Thread(target=_post_bodies, args=(url, db, shared, lock, errors, deadline),
                                daemon=True) for _ in range(conns)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise BenchError(f"raw write to {db} failed: {errors[0]}")
    return elapsed


def settle(pid: int, deadline: Deadline, idle: float = 0.15, cap: float = 20.0) -> float:
    """Wait (bounded) until influxd's CPU over 0.5 s is under ``idle`` of a core."""
    proc, start = psutil.Process(pid), time.monotonic()
    proc.cpu_percent(None)
    while time.monotonic() - start < deadline.left(cap):
        if proc.cpu_percent(interval=0.5) < idle * 100:
            break
    return time.monotonic() - start


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of ``proc`` (its threads included)."""
    times = proc.cpu_times()
    return times.user + times.system


def reaped_children_seconds() -> float:
    """CPU time of this process's children that have ended and been waited for
    (the null phase's sender processes, from their start-up imports on)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _busy_seconds() -> float:
    """CPU seconds processes have used on the whole machine, all cores together.

    Interrupt time is left out: loopback traffic is handled there, and it is
    the bench's own traffic, charged to no process.
    """
    t = psutil.cpu_times()
    return t.user + t.nice + t.system


class CpuWatch:
    """CPU time of this process and of ``procs`` over a phase, and of everything else.

    The machine is shared: what other processes burn meanwhile is reported
    next to the figures, as it lowers them (on 2 cores, by a lot).
    """

    def __init__(self, *procs: psutil.Process) -> None:
        self.procs = [psutil.Process(), *procs]
        self.own = [cpu_seconds(p) for p in self.procs]
        self.children = reaped_children_seconds()
        self.busy = _busy_seconds()
        self.wall = time.perf_counter()

    def stop(self) -> tuple[list[float], float]:
        """(CPU seconds of this process (with its children that ended meanwhile) then
        each of ``procs``, cores used by the rest)."""
        own = [cpu_seconds(p) - o for p, o in zip(self.procs, self.own, strict=True)]
        own[0] += reaped_children_seconds() - self.children
        wall = time.perf_counter() - self.wall
        others = (_busy_seconds() - self.busy - sum(own)) / wall
        return own, max(0.0, others)


def wait_quiet(deadline: Deadline, cap: float, limit: float = QUIET_CORES) -> tuple[float, float]:
    """Wait (at most ``cap`` s) until other processes use under ``limit`` of a core.

    Returns (seconds waited, the cores they used in the last second).
    """
    start = time.monotonic()
    while True:
        watch = CpuWatch()
        time.sleep(1.0)  # a sampling interval, not synchronisation
        others = watch.stop()[1]
        if others < limit or time.monotonic() - start >= deadline.left(cap):
            return time.monotonic() - start, others


def phase_raw(server: InfluxServer, work: Workload, bodies: list[bytes], db: str,
              deadline: Deadline) -> dict[str, Any]:
    """1. The same points straight into InfluxDB (a fresh database): the ceiling for 2."""
    influx_create(server.url, db)
    watch = CpuWatch(psutil.Process(server.pid))
    elapsed = raw_write(server.url, db, bodies, RAW_CONNS, deadline)
    (_, influxd_cpu), others = watch.stop()
    stored = influx_count(server.url, db)
    return {"raw_points_per_s": work.points / elapsed, "raw_seconds": elapsed,
            "raw_points": work.points, "raw_stored": stored,
            "raw_influxd_us_per_point": influxd_cpu / work.points * 1e6,
            "raw_others_cores": others}


# --- the manager as a subprocess -------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGTERM it if the bench dies without stopping it (Linux only)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def manager_process(tmp: Path, influx_url: str, db: str,
                    deadline: Deadline) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int]]]:
    """``python -m manager.main`` on free ports; yields it and its ready file's ports."""
    ready, log_path = tmp / "manager.ready", tmp / "manager.log"
    sets = {"basic.bind_port": "0", "state.path": str(tmp / "manager.db"),
            "influxdb.url": influx_url, "influxdb.database": db}
    argv = [sys.executable, "-m", "manager.main", "--log-level", "WARNING",
            "--ready-file", str(ready)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=log_file, preexec_fn=_die_with_parent)
    try:
        yield proc, wait_ready(proc, ready, log_path, deadline)
    finally:
        stop_process(proc)


def wait_ready(proc: subprocess.Popen[bytes], ready: Path, log_path: Path,
               deadline: Deadline) -> dict[str, int]:
    """The manager's ports once its ready file appears (it is written atomically)."""
    end = time.monotonic() + deadline.left(30.0)
    while time.monotonic() < end:
        if ready.exists():
            return json.loads(ready.read_text())
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.05)  # returns at once if the manager exits
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"manager exited with {proc.returncode}: {' | '.join(tail)}")
    raise BenchError(f"manager wrote no ready file in time (see {log_path})")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process we started, SIGKILL it after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- simulated agents ---------------------------------------------------------------------


class BenchAgent:
    """One node: registers on a DEALER, PUSHes its batches, counts MetricAck seqs.

    At most ``window`` batches are unacked at a time, like an agent's bounded
    spool; a batch unacked for ``RESEND_S`` is sent again, as after a reconnect.
    """

    def __init__(self, ctx: zmq.asyncio.Context, ports: dict[str, int], node: str,
                 frames: list[list[bytes]]) -> None:
        self.node, self.frames = node, frames
        self.dealer = make_socket(ctx, zmq.DEALER, SocketTuning())
        self.dealer.connect(f"tcp://127.0.0.1:{ports['router']}")
        self.push = make_socket(ctx, zmq.PUSH, SocketTuning())
        self.push.connect(f"tcp://127.0.0.1:{ports['pull']}")
        self.unacked: dict[int, float] = {}  # seq → when sent
        self.acked = 0
        self.resent = 0
        self._next_heartbeat = 0.0

    async def register(self) -> None:
        facts = NodeFacts(hostname=self.node, address="127.0.0.1", cpus=os.cpu_count() or 1,
                          memory_bytes=psutil.virtual_memory().total, kernel=platform.release(),
                          agent_version="bench")
        await self.dealer.send_multipart(codec.encode(
            Register(protocol=PROTOCOL_VERSION, node=self.node, facts=facts)))
        while not isinstance(await self._receive(None), Welcome):
            pass

    async def _receive(self, timeout_ms: int | None) -> Any:
        """One message from the manager (None on timeout); MetricAck seqs are counted."""
        if timeout_ms is not None and not await self.dealer.poll(timeout_ms):
            return None
        msg = codec.decode(await self.dealer.recv_multipart())
        if isinstance(msg, Error):
            raise BenchError(f"{self.node}: manager answered {msg.code}: {msg.message}")
        if isinstance(msg, MetricAck):
            for seq in msg.seqs:
                if self.unacked.pop(seq, None) is not None:
                    self.acked += 1
        return msg

    async def ship(self, window: int, deadline: Deadline) -> None:
        """Send every batch, never more than ``window`` unacked; return when all are acked."""
        sent = 0
        while sent < len(self.frames) or self.unacked:
            while sent < len(self.frames) and len(self.unacked) < window:
                await self.push.send_multipart(self.frames[sent])
                sent += 1
                self.unacked[sent] = time.monotonic()  # seq = index + 1
            msg = await self._receive(200)
            while msg is not None:  # drain what else arrived
                msg = await self._receive(0)
            await self._housekeeping(deadline)

    async def _housekeeping(self, deadline: Deadline) -> None:
        now = time.monotonic()
        deadline.left()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_S
            await self.dealer.send_multipart(codec.encode(Heartbeat()))
        for seq, when in list(self.unacked.items()):
            if now - when > RESEND_S:
                self.unacked[seq] = now
                self.resent += 1
                await self.push.send_multipart(self.frames[seq - 1])

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.push.close(linger=0)


# --- 2. end to end ------------------------------------------------------------------------


async def drive_agents(ports: dict[str, int], work: Workload, window: int, deadline: Deadline,
                       manager: psutil.Process, influxd: psutil.Process) -> dict[str, Any]:
    """Register every agent, then ship all batches; time and CPU from first send to last ack."""
    ctx = zmq.asyncio.Context()
    agents = [BenchAgent(ctx, ports, node, frames) for node, frames in work.frames.items()]
    try:
        async with asyncio.timeout(deadline.left(30.0)):
            await asyncio.gather(*(a.register() for a in agents))
        watch, start = CpuWatch(manager, influxd), time.perf_counter()
        async with asyncio.timeout(deadline.left()):
            await asyncio.gather(*(a.ship(window, deadline) for a in agents))
        elapsed = time.perf_counter() - start
        (cpu_agents, cpu_manager, cpu_influxd), others = watch.stop()
    finally:
        for agent in agents:
            agent.close()
        ctx.destroy(linger=0)
    acked = sum(a.acked for a in agents) * work.rows_per_batch
    return {"e2e_points_per_s": acked / elapsed, "e2e_seconds": elapsed, "e2e_acked": acked,
            "e2e_resent_batches": sum(a.resent for a in agents),
            "manager_us_per_point": cpu_manager / acked * 1e6,
            "manager_cores": cpu_manager / elapsed, "influxd_cores": cpu_influxd / elapsed,
            "agents_cores": cpu_agents / elapsed,
            "e2e_influxd_us_per_point": cpu_influxd / acked * 1e6, "e2e_others_cores": others}


def phase_e2e(server: InfluxServer, work: Workload, db: str, tmp: Path, window: int,
              deadline: Deadline) -> dict[str, Any]:
    """2 and 4. Agents → a new manager subprocess → the same influxd (a fresh database)."""
    tmp.mkdir()
    with manager_process(tmp, server.url, db, deadline) as (proc, ports):
        result = asyncio.run(drive_agents(ports, work, window, deadline,
                                          psutil.Process(proc.pid), psutil.Process(server.pid)))
        if proc.poll() is not None:
            raise BenchError(f"manager exited with {proc.returncode} during the run")
    result["e2e_stored"] = influx_count(server.url, db)
    return result


# --- 5. the manager alone, into a null sink -----------------------------------------------------


class NullSink:
    """Discards every write. A stand-in for InfluxDB *by design*: the null-sink phase
    measures the manager's own decode, check, encode and batching, nothing else."""

    def __init__(self, expect: int) -> None:
        self.points = 0
        self.expect = expect
        self.done = asyncio.Event()

    async def write(self, lines: bytes, points: int) -> None:
        self.points += points
        if self.points >= self.expect:
            self.done.set()

    async def close(self) -> None:
        pass


async def _no_ack(node: str, seqs: list[int]) -> None:
    pass


async def _no_publish(node: str, frames: list[bytes]) -> None:
    pass


def null_ingest(points: int) -> tuple[Ingest, NullSink]:
    """An Ingest as the manager builds it (default write size), on a NullSink."""
    sink = NullSink(points)
    ingest = Ingest(sink, ack=_no_ack, publish=_no_publish, is_known_node=lambda node: True,
                    max_points=max(2_000_000, points + 1))
    return ingest, sink


async def feed_direct(frames_list: list[list[bytes]], points: int) -> float:
    """``accept`` every frame, writing whenever a write's worth is queued; seconds taken."""
    ingest, sink = null_ingest(points)
    start = time.perf_counter()
    for frames in frames_list:
        if not await ingest.accept(frames):
            raise BenchError(f"null sink: a batch was refused ({dict(ingest.counters)})")
        if ingest.queued_points >= ingest.write_points:
            await ingest.write_some()
    await ingest.flush(60.0)
    elapsed = time.perf_counter() - start
    if sink.points != points:
        raise BenchError(f"null sink: {sink.points} points written of {points}")
    return elapsed


def _push_all(port: int, frames_list: list[list[bytes]]) -> None:
    """Sender process: a plain PUSH socket sending every frame (blocking at the HWM)."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.connect(f"tcp://127.0.0.1:{port}")
        for frames in frames_list:
            push.send_multipart(frames)
    finally:
        push.close(linger=30_000)  # the receiver drains everything; this never waits long
        ctx.term()


async def feed_pull(frames_list: list[list[bytes]], points: int, deadline: Deadline) -> float:
    """The manager's shape: its PULL loop (bus.sockets.receive_forever) calling
    ``accept``, the writer as its own task, and the frames pushed by another
    process, as agents are."""
    ctx = zmq.asyncio.Context()
    pull = make_socket(ctx, zmq.PULL, SocketTuning())
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    ingest, sink = null_ingest(points)

    started: list[float] = []  # the clock starts at the first batch, not at process start

    async def take(frames: list[bytes]) -> None:
        if not started:
            started.append(time.perf_counter())
        if not await ingest.accept(frames):
            raise BenchError(f"null sink: refused a batch ({dict(ingest.counters)})")

    # Spawned, not forked: this process has ZeroMQ's threads running.
    sender = multiprocessing.get_context("spawn").Process(
        target=_push_all, args=(port, frames_list), daemon=True)
    writer = asyncio.create_task(ingest.run())
    receiver = asyncio.create_task(receive_forever(pull, take))
    try:
        sender.start()
        done = asyncio.create_task(sink.done.wait())
        async with asyncio.timeout(deadline.left(60.0)):
            await asyncio.wait({done, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            done.cancel()
            receiver.result()  # raises what stopped it (or the timeout's cancellation)
        elapsed = time.perf_counter() - started[0]
    finally:
        for task in (writer, receiver):
            task.cancel()
        await asyncio.gather(writer, receiver, return_exceptions=True)
        sender.join(deadline.left(30.0))
        if sender.is_alive():
            sender.kill()
        pull.close(linger=0)
        ctx.destroy(linger=0)
    return elapsed


def phase_null(work: Workload, repeat: int, deadline: Deadline) -> dict[str, Any]:
    """5. Best of ``repeat`` passes each way (the first pass also warms the encoder's caches)."""
    frames_list = work.interleaved()
    watch = CpuWatch()
    direct = min(asyncio.run(feed_direct(frames_list, work.points)) for _ in range(repeat))
    deadline.left()
    pull = min(asyncio.run(feed_pull(frames_list, work.points, deadline)) for _ in range(repeat))
    return {"null_sink_points_per_s": work.points / direct,
            "null_sink_us_per_point": direct / work.points * 1e6,
            "null_pull_points_per_s": work.points / pull,
            "null_pull_us_per_point": pull / work.points * 1e6,
            "null_others_cores": watch.stop()[1]}


def profile_null(work: Workload, top: int = 25) -> str:
    """cProfile of one direct null-sink pass (after a warm one): where the manager's time goes."""
    import cProfile
    import io
    import pstats

    frames_list = work.interleaved()
    asyncio.run(feed_direct(frames_list, work.points))
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(feed_direct(frames_list, work.points))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --- the run and its report ---------------------------------------------------------------------


def influxd_version() -> str:
    try:
        out = subprocess.run(["influxd", "version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.split("(")[0].replace("InfluxDB", "").strip() or "?"


def run_all(args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """Every phase in order; the figures, ratios and target checks as one dict."""
    work = build_workload(args.points, args.agents, args.rows)
    res: dict[str, Any] = {
        "points": work.points, "agents": args.agents, "rows_per_batch": work.rows_per_batch,
        "batches_per_agent": len(next(iter(work.frames.values()))), "fields": len(FIELDS),
        "window": args.window, "cpus": os.cpu_count(), "influxd": influxd_version(),
        "raw_lines_per_request": RAW_LINES, "raw_connections": RAW_CONNS,
    }
    res["quiet_wait_seconds"], res["others_before_cores"] = wait_quiet(deadline, args.quiet_wait)
    print(f"null sink ({work.points:,} points)...", file=sys.stderr)
    res.update(phase_null(work, args.repeat, deadline))
    if args.profile:
        print(profile_null(work), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ptap-bench-ingest-") as tmp:
        server = InfluxServer(Path(tmp) / "influxdb", die_with_parent=True)
        try:
            server.start(timeout=deadline.left(30.0))
            bodies = raw_bodies(work, RAW_LINES)
            rounds = [one_round(server, work, bodies, Path(tmp) / f"round{i}", args.window,
                                deadline) for i in range(args.rounds)]
        finally:
            server.stop()
    res.update(quietest(rounds))
    return judge(res)


def one_round(server: InfluxServer, work: Workload, bodies: list[bytes], tmp: Path,
              window: int, deadline: Deadline) -> dict[str, Any]:
    """Raw, then end to end, each into its own database, each after influxd went idle."""
    assert server.pid is not None
    print(f"{tmp.name}: raw InfluxDB...", file=sys.stderr)
    settle(server.pid, deadline)
    res = phase_raw(server, work, bodies, f"raw_{tmp.name}", deadline)
    print(f"{tmp.name}: end to end...", file=sys.stderr)
    settle(server.pid, deadline)  # what the raw phase wrote is compacted on influxd's time
    res.update(phase_e2e(server, work, f"e2e_{tmp.name}", tmp, window, deadline))
    return res


def quietest(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of a round other processes disturbed least, and every round's rates.

    A round's raw and end-to-end phases run back to back, so their ratio is
    taken within one round, never across rounds whose background load
    differed. Among the rounds as quiet as the quietest (within 0.05 cores)
    the one with the median ratio is shown (the lower one of an even count):
    influxd's own rate moves by ±7 % from round to round, and the best round
    would flatter. Points lost add up over all rounds.
    """
    def disturbed(r: dict[str, Any]) -> float:
        return max(r["raw_others_cores"], r["e2e_others_cores"])

    calm = min(map(disturbed, rounds)) + 0.05
    quiet = sorted((r for r in rounds if disturbed(r) <= calm),
                   key=lambda r: r["e2e_points_per_s"] / r["raw_points_per_s"])
    best = dict(quiet[(len(quiet) - 1) // 2])
    points = best["raw_points"]
    best["raw_lost"] = sum(points - r["raw_stored"] for r in rounds)
    best["e2e_lost"] = sum(points - r["e2e_stored"] for r in rounds)
    best["rounds"] = [{"raw_points_per_s": r["raw_points_per_s"],
                       "e2e_points_per_s": r["e2e_points_per_s"],
                       "ratio": r["e2e_points_per_s"] / r["raw_points_per_s"],
                       "manager_us_per_point": r["manager_us_per_point"],
                       "others_cores": max(r["raw_others_cores"], r["e2e_others_cores"])}
                      for r in rounds]
    return best


def judge(res: dict[str, Any]) -> dict[str, Any]:
    """Add the ratio, the points lost (sent − stored) and which targets were met."""
    res["ratio"] = res["e2e_points_per_s"] / res["raw_points_per_s"]
    null_target = TARGETS["null_sink_points_per_s"]
    res["targets"] = TARGETS
    res["met"] = {  # judged at the precision printed: 3.004 µs shows as 3.00 and meets 3
        "ratio": round(res["ratio"], 2) >= TARGETS["ratio"],
        "manager_us_per_point":
            round(res["manager_us_per_point"], 2) <= TARGETS["manager_us_per_point"],
        "null_sink_points_per_s": res["null_sink_points_per_s"] >= null_target,
        "null_pull_points_per_s": res["null_pull_points_per_s"] >= null_target,
        "nothing_lost": res["raw_lost"] == 0 and res["e2e_lost"] == 0,
    }
    # Other processes' CPU skews a verdict, a ratio above all when its two
    # phases saw different loads: such verdicts are marked, not trusted.
    res["disturbed"] = {
        "null_sink": res["null_others_cores"] > QUIET_CORES,
        "end_to_end": max(res["raw_others_cores"], res["e2e_others_cores"]) > QUIET_CORES,
    }
    return res


def _row(label: str, value: str, target: str = "", met: bool | None = None,
         missed: str = "MISSED", disturbed: bool = False) -> str:
    verdict = "" if met is None else ("met" if met else missed)
    verdict += " (disturbed)" if verdict and disturbed else ""
    return f"{label:<50} {value:>18} {target:>13}  {verdict}".rstrip()


def report(r: dict[str, Any]) -> str:
    """The human table: figure, measured value, target and whether it was met."""
    rate, row = "{:,.0f} points/s".format, _row
    t, m, noisy = r["targets"], r["met"], r["disturbed"]
    return "\n".join([
        f"ptap ingest: {r['points']:,} points = {r['agents']} agents × {r['batches_per_agent']} "
        f"batches × {r['rows_per_batch']} rows of {r['fields']} fields; {r['cpus']} CPUs; "
        f"influxd {r['influxd']}",
        row("figure", "measured", "target"),
        row(f"1 raw InfluxDB /write ({r['raw_lines_per_request']} lines, "
            f"{r['raw_connections']} conns)", rate(r["raw_points_per_s"])),
        row(f"2 ptap end to end, stored + acked (window {r['window']})",
            rate(r["e2e_points_per_s"])),
        row("3 ratio end to end / raw", f"{r['ratio']:.2f}", f">= {t['ratio']:.2f}", m["ratio"],
            disturbed=noisy["end_to_end"]),
        row("4 manager CPU per point", f"{r['manager_us_per_point']:.2f} µs",
            f"<= {t['manager_us_per_point']:.2f} µs", m["manager_us_per_point"],
            disturbed=noisy["end_to_end"]),
        row("5 null sink: Ingest.accept + writer", rate(r["null_sink_points_per_s"]),
            f">= {t['null_sink_points_per_s']:,}", m["null_sink_points_per_s"],
            disturbed=noisy["null_sink"]),
        row("5 null sink: through a PULL socket", rate(r["null_pull_points_per_s"]),
            f">= {t['null_sink_points_per_s']:,}", m["null_pull_points_per_s"],
            disturbed=noisy["null_sink"]),
        *context_rows(r),
    ])


def context_rows(r: dict[str, Any]) -> list[str]:
    """What explains the figures: CPU use, verification, the machine's other load."""
    row, ok = _row, bool(r["met"]["nothing_lost"])
    others = max(r["null_others_cores"], r["raw_others_cores"], r["e2e_others_cores"])
    rows = [
        row("  null sink µs per point: direct / PULL",
            f"{r['null_sink_us_per_point']:.2f} / {r['null_pull_us_per_point']:.2f}"),
        row("  end to end CPU: manager / influxd / agents",
            f"{r['manager_cores']:.2f} / {r['influxd_cores']:.2f} / {r['agents_cores']:.2f} cores"),
        row("  influxd CPU per point: raw / end to end",
            f"{r['raw_influxd_us_per_point']:.2f} / {r['e2e_influxd_us_per_point']:.2f} µs"),
        row("  points lost (sent − InfluxDB count): raw / e2e",
            f"{r['raw_lost']:,} / {r['e2e_lost']:,}", "0", ok, "LOST"),
        row("  each round: raw / e2e k points/s = ratio (others' cores)", ", ".join(
            f"{x['raw_points_per_s'] / 1e3:.0f}/{x['e2e_points_per_s'] / 1e3:.0f}"
            f"={x['ratio']:.2f} ({x['others_cores']:.1f})" for x in r["rounds"])),
        row("  batches resent by agents", str(r["e2e_resent_batches"])),
        row("  other processes' CPU: null / raw / end to end",
            f"{r['null_others_cores']:.2f} / {r['raw_others_cores']:.2f} / "
            f"{r['e2e_others_cores']:.2f} cores"),
    ]
    if others > QUIET_CORES:
        rows.append(f"NOTE: other processes used up to {others:.2f} cores of {r['cpus']} during "
                    "the run: verdicts marked (disturbed) are not to be trusted")
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=600_000, help="points per phase")
    parser.add_argument("--agents", type=int, default=10, help="simulated agents (nodes)")
    parser.add_argument("--rows", type=int, default=200, help="rows per batch (4 series)")
    parser.add_argument("--window", type=int, default=32, help="unacked batches per agent")
    parser.add_argument("--repeat", type=int, default=3, help="null-sink passes (best kept)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="raw + end-to-end rounds (the median one of the least "
                        "disturbed is shown)")
    parser.add_argument("--quiet-wait", type=float, default=15.0,
                        help="wait up to this long for other processes to go idle first")
    parser.add_argument("--time-limit", type=float, default=180.0,
                        help="hard limit in seconds, clean-up included")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of the null-sink phase to stderr")
    args = parser.parse_args(argv)
    if not (1000 <= args.points <= 5_000_000 and 1 <= args.agents <= 100
            and len(CPUS) <= args.rows <= 5000 and 1 <= args.window <= 1000
            and 40 <= args.time_limit <= 3600 and 1 <= args.repeat <= 10
            and 1 <= args.rounds <= 10):
        parser.error("bounds: --points 1000..5e6, --agents 1..100, --rows 4..5000, "
                     "--window 1..1000, --time-limit 40..3600, --repeat and --rounds 1..10")
    return args


def _out_of_time(signum: int, frame: Any) -> None:
    raise BenchError("hard time limit reached")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it completed with nothing lost (targets are reported)."""
    args = parse_args(argv)
    # Phases stop at the soft deadline; the alarm is the backstop for anything
    # stuck in C, and leaves time for the clean-up to finish within the limit.
    deadline = Deadline(time.monotonic() + args.time_limit - 20)
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(max(1, int(args.time_limit) - 10))
    try:
        res = run_all(args, deadline)
    except (RuntimeError, TimeoutError, OSError, zmq.ZMQError) as exc:  # BenchError too
        print(f"bench/ingest: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
    print(json.dumps(res, indent=2) if args.json else report(res))
    return 0 if res["met"]["nothing_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
