"""The agents of ``scripts/bench/scale.py``: one worker process's share of the fleet.

Each :class:`ScaleAgent` is the agent's real code minus its collectors: an
:class:`agent.link.Link` (register, welcome, heartbeats, runs dispatched and
spawned) and an :class:`agent.shipper.Shipper` over an in-memory
:class:`agent.shipper.Spool` (batches numbered, kept until acked, resent),
wired by the same hooks ``agent/sampling.py`` uses. A worker holds its agents
in one asyncio loop and ships each agent's batch once a second at that agent's
phase (``frac(i·φ)`` of the second, as hosts with their own clocks would),
``rate`` rows with distinct timestamps ``t0 + s·1e9 + k·1e9/rate``.

:class:`Fleet` is the bench's side: the worker processes and a pipe to each,
and :class:`LostWatch` counts the ``lost`` events of streaming nodes.

Commands come over a :mod:`multiprocessing` pipe, one ``(cmd, arg)`` each, one
answer each: ``up`` (register this worker's agents), ``stream`` (start shipping), ``rate`` (change the rate),
``halt`` (stop shipping), ``stats`` (counts) and ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from agent.link import Link, LinkTiming
from agent.runner import RunnerOptions
from agent.shipper import Shipper, Spool
from bus import topics
from bus.messages import MetricAck, Welcome
from bus.metrics import Series
from bus.sockets import SocketTuning, make_socket, receive_forever
from scripts.bench.dispatch import event_head, node_facts

GOLDEN = 0.6180339887498949
READY_TIMEOUT = 180.0
SPOOL_BATCHES, SPOOL_BYTES = 10_000, 64 * 1024 * 1024  # the agent's defaults


@dataclass(frozen=True)
class FleetSpec:
    """Worker ``index`` of ``procs`` holds agents ``index``, ``index + procs``, … below
    ``agents`` (node ``scale0000+i``)."""

    index: int
    procs: int
    agents: int
    address: str  # the manager's ROUTER, tcp://…
    pull: str  # its PULL
    rate: float
    tmp: str


def node_name(i: int) -> str:
    return f"scale{i:04d}"


def facts() -> Any:
    return node_facts()


class ScaleAgent:
    """One simulated node on the real agent code (see the module docstring)."""

    def __init__(self, i: int, spec: FleetSpec, ctx: zmq.asyncio.Context) -> None:
        self.node = node_name(i)
        self.phase = (i * GOLDEN) % 1.0
        workdir = Path(spec.tmp) / "runs" / self.node
        self.link = Link(spec.address, self.node, facts(), ctx=ctx,
                         runner_options=RunnerOptions(workdir=str(workdir), kill_grace=1.0),
                         timing=LinkTiming(interval=1.0))
        self.push = make_socket(ctx, zmq.PUSH, SocketTuning(sndhwm=1000))
        self.push.connect(spec.pull)
        self.spool = Spool(SPOOL_BATCHES, None, SPOOL_BYTES)
        self.shipper = Shipper(self.node, self.spool, self.push, resend_after=5.0)
        self.link.hooks.welcome.append(self._on_welcome)
        self.link.hooks.metric_ack.append(self._on_ack)
        self.task: asyncio.Task[None] | None = None
        self.generated = self.acked = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.link.run(), name=self.node)

    def _on_welcome(self, msg: Welcome) -> None:
        self.shipper.resend_all()

    def _on_ack(self, msg: MetricAck) -> None:
        before = self.spool.points
        self.shipper.on_ack(msg.seqs)
        self.acked += before - self.spool.points

    def ship_second(self, t0_ns: int, second: int, rate: float) -> None:
        """One batch: ``rate`` rows of second ``second`` since ``t0_ns``."""
        count = max(1, int(rate))
        step = 1_000_000_000 // count
        base = t0_ns + second * 1_000_000_000
        series = Series("scale", {"node": self.node}, ("value",))
        for k in range(count):
            series.add(base + k * step, float(k))
        self.shipper.ship([series])
        self.shipper.resend_due()
        self.generated += count

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.link.aclose()
        self.push.close(linger=0)


class WorkerFleet:
    """This worker's agents and the streaming loop."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.ctx = zmq.asyncio.Context()
        mine = range(spec.index, spec.agents, spec.procs)
        self.ctx.set(zmq.MAX_SOCKETS, 2 * len(mine) + 64)
        self.agents = [ScaleAgent(i, spec, self.ctx) for i in mine]
        self.rate = spec.rate
        self.streaming: asyncio.Task[None] | None = None
        self.behind = 0.0  # the most the loop fell behind an agent's phase, seconds

    async def up(self) -> dict[str, Any]:
        t0 = time.monotonic()
        for agent in self.agents:
            agent.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.gather(*(a.link.registered.wait() for a in self.agents))
        return {"registered": sum(a.link.registered.is_set() for a in self.agents),
                "seconds": time.monotonic() - t0}

    async def stream(self) -> None:
        """Each agent's batch once a second at its phase, until cancelled."""
        loop = asyncio.get_running_loop()
        order = sorted(self.agents, key=lambda a: a.phase)
        start = math.ceil(loop.time())
        t0_ns = time.time_ns() // 1_000_000_000 * 1_000_000_000
        second = 0
        while True:
            for agent in order:
                due = start + second + agent.phase
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.behind = max(self.behind, -delay)
                agent.ship_second(t0_ns, second, self.rate)
            second += 1

    def stats(self) -> dict[str, Any]:
        spooled = sum(a.spool.points for a in self.agents)
        return {"generated": sum(a.generated for a in self.agents),
                "acked": sum(a.acked for a in self.agents), "spooled": spooled,
                "dropped": sum(a.spool.points_dropped for a in self.agents),
                "registered": sum(a.link.registered.is_set() for a in self.agents),
                "behind_ms": int(self.behind * 1000)}

    async def handle(self, cmd: str, arg: Any) -> Any:
        if cmd == "up":
            return await self.up()
        if cmd == "stream":
            self.streaming = asyncio.get_running_loop().create_task(self.stream())
        elif cmd == "rate":
            self.rate = float(arg)
        elif cmd == "halt" and self.streaming is not None:
            self.streaming.cancel()
            await asyncio.gather(self.streaming, return_exceptions=True)
            self.streaming = None
        return self.stats()

    async def close(self) -> None:
        if self.streaming is not None:
            self.streaming.cancel()
        await asyncio.gather(*(a.close() for a in self.agents), return_exceptions=True)
        self.ctx.destroy(linger=0)


async def serve(spec: FleetSpec, conn: Connection) -> None:
    fleet = WorkerFleet(spec)
    loop = asyncio.get_running_loop()
    try:
        while True:
            cmd, arg = await loop.run_in_executor(None, conn.recv)
            if cmd == "stop":
                break
            conn.send(await fleet.handle(cmd, arg))
    finally:
        await fleet.close()


def worker_main(spec: FleetSpec, conn: Connection) -> None:
    """The worker process: its agents until ``stop`` (or the pipe closes)."""
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        asyncio.run(serve(spec, conn))


# --- the bench's side ---------------------------------------------------------------------


class Fleet:
    """The worker processes and a pipe to each."""

    def __init__(self, args: argparse.Namespace, address: str, pull: str, tmp: Path) -> None:
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for index in range(args.procs):
            spec = FleetSpec(index=index, procs=args.procs, agents=args.agents,
                             address=address,
                             pull=pull, rate=args.rate, tmp=str(tmp))
            here, there = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(spec, there), daemon=True,
                               name=f"scale-worker-{index}")
            proc.start()
            self.pipes.append(here)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    async def ask(self, cmd: str, arg: Any = None, timeout: float = 300.0) -> list[Any]:
        """Send ``(cmd, arg)`` to every worker, then gather their answers."""
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            pipe.send((cmd, arg))
        answers = []
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            ready = await loop.run_in_executor(None, pipe.poll, timeout)
            if not ready:
                raise RuntimeError(f"worker {proc.pid} did not answer {cmd!r} in {timeout:g} s")
            answers.append(pipe.recv())
        return answers

    async def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for stats in await self.ask("stats"):
            for key, value in stats.items():
                out[key] = out.get(key, 0) + value
        return out

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop", None))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(20)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


class LostWatch:
    """``lost`` node events on the manager's PUB socket for armed nodes: per node, and
    when (``time.monotonic()``)."""

    def __init__(self) -> None:
        self.armed: set[str] = set()
        self.lost: dict[str, int] = {}
        self.times: list[float] = []

    async def note(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            return
        head = event_head(frames[2]) or {}
        node = str(head.get("node", ""))
        if head.get("kind") == "node" and head.get("state") == "lost" and node in self.armed:
            self.lost[node] = self.lost.get(node, 0) + 1
            self.times.append(time.monotonic())

    async def follow(self, address: str) -> None:
        ctx = zmq.asyncio.Context()
        sock = make_socket(ctx, zmq.SUB, SocketTuning())
        sock.setsockopt(zmq.SUBSCRIBE, topics.NODE_EVENTS.encode())
        sock.connect(address)
        try:
            await receive_forever(sock, self.note, drain=1024)
        finally:
            sock.close(linger=0)
            ctx.destroy(linger=0)
