"""Benchmark: job dispatch latency on loopback, from ``job.submit`` until every run is running.

    .venv/bin/python scripts/bench/dispatch.py [--agents 1,10,50,200,1000] [--procs P]
        [--jobs 20] [--hold 0.5] [--agent-impl sim|link] [--time-limit 900]
        [--profile-manager FILE] [--json]

What is measured. A real manager runs as a subprocess (``python -m manager.main``
with its own ``server.cfg``: random ports, CURVE off on loopback, its state in a
temporary directory, an InfluxDB URL where nothing listens, as dispatch writes no
metrics). The simulated agents live in ``--procs`` worker processes (default: the
CPU count, at least 2), each holding many agents' DEALER sessions in one asyncio
loop; agent ``i`` is node ``bench0000+i`` in worker ``i % P``. For each N, in
rising order, the fleet grows to exactly N agents, every one of them ``ready`` in
``nodes.list`` before anything is timed; then, after one warm-up job, ``--jobs``
jobs target those N nodes by name, one at a time (the next is submitted once the
previous one has ended, so every node is idle). The jobs have no name, so they
belong to no history series: a named job is summarised 5 s after it ends (its runs
read back, InfluxDB queried), work of the history's (``scripts/bench/history.py``)
that here fell into later jobs' dispatches, at random. Per job:

* **submit → every run running**: from just before ``job.submit`` is sent until
  this process receives, on the manager's PUB socket (``evt.job.<id>``), the
  ``runs`` event in which the last of the N runs reaches ``running`` or a later
  state (one such event holds a turn's changes to up to 256 of a job's runs);
* **reply**: from sending ``job.submit`` until its reply's frames arrive here
  (before they are decoded): the manager's handling of the request. Since commit
  a603480 the manager answers once the job is stored, *before* its runs go out
  (earlier, after dispatching every run), so the reply grows with the job's size
  and the dispatch itself shows in the breakdown and in the CPU below;
* **the manager's share**: its CPU time per submit (user + system, all threads,
  from the kernel's per-process CPU clock: psutil's ``cpu_times()`` holds the same
  sum in 10 ms ticks, too coarse for one submit) from before the submit until
  every run is running, and until the job ended; likewise the agent workers'
  together and this process's. Each is net of what the idle fleet costs over the
  same time (heartbeats both ways, measured for ``--idle`` seconds before each
  N's jobs); the raw figures are in ``--json``. Also the cores each used while
  the jobs of one N ran, and what every other process on the host used meanwhile
  (the machine may be shared: on 2 cores that weighs heavily).

Then the per-node growth of the reply (and of the rest): least-squares slopes of
the per-N medians (CPU: means) over N, in µs per node. The targets checked are
those of the speed issue: submit → every run running p95 ≤ 20 ms at 50 agents and
≤ 250 ms at 1,000 agents, and a reply that grows by less than 50 µs per node.
``--profile-manager FILE`` runs the manager under cProfile (which slows it) and
prints where its time went.

The agents (``--agent-impl sim``, the default) are a wire-level stand-in, not
:class:`agent.link.Link`: each speaks the real wire (``bus.codec``,
``bus.messages``, sockets from ``bus.sockets.make_socket`` read as the agent's
``DealerLoop`` reads them) and follows the agent's session: ``agent.register``
with its facts and the runs it holds, ``agent.welcome``, a ``heartbeat`` every
interval (1 s) with ``running`` and ``sent_at``, ``run.dispatch`` answered at once
by ``run.update`` ``running`` (with ``started_at``), then after ``--hold`` seconds
(the command ``sleep HOLD``; 0: ``true``) the final ``succeeded`` update, resent on
every heartbeat until ``run.ack``; ``run.cancel`` ends the run ``cancelled``;
``error not-registered`` re-registers; a manager silent for ``liveness``
intervals means a new DEALER. **No process is started**: the measured path is
the manager's dispatch plus the agents' acknowledgement, not fork/exec (and the
stand-in reports no pid). Heartbeats are spread over the interval (agent ``i`` at
phase ``frac(i·0.618)``), as on real hosts whose clocks have their own origins;
agents on one host would all beat at the same instant of the loop's clock.
The stand-in opens no PUSH socket (metrics are not part of dispatch).
``--agent-impl link`` runs real :class:`agent.link.Link` agents in the workers
instead, which spawn the command as the old bench did (at most 200 agents a
worker: their spawns take file descriptors and serialise in that worker's loop).

Breakdown (p50 over jobs, ms after submit; wall clocks of the same host):
``begin`` = ``dispatched_at`` of the runs (the manager stamps every run of one
dispatch pass with the time the pass began); ``acked`` = the last agent-side
``started_at`` (the agent handled the dispatch); ``recorded`` = the manager's
timestamp on the ``runs`` event holding the last run's ``running`` (the time of its
latest change). Running minus ``recorded`` is the
time the event spends in PUB/SUB and in this process.

Bounds: at most ``MAX_AGENTS`` agents and ``MAX_JOBS`` jobs per N; each job must
end within ``15 s + 30 ms × N``, the fleet must be ready within ``READY_TIMEOUT``;
the whole run has a hard time limit (``--time-limit``, default 900 s), after which
what was measured is printed, marked truncated. The manager and the workers are
stopped by their pids (workers: end of input, then SIGTERM, then SIGKILL; the
manager: SIGTERM, then SIGKILL), also on error or Ctrl-C, and they get SIGTERM
from the kernel if this process dies first; the temporary directory is removed.
A missed target is reported, not an error: the exit status is 1 only when the
bench itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import msgpack  # noqa: E402
import psutil  # noqa: E402
import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402

from agent.grid import next_tick  # noqa: E402
from bus import codec, topics  # noqa: E402
from bus.client import REPLY_LIMITS, ManagerClient, new_request_id  # noqa: E402
from bus.errors import ProtocolError  # noqa: E402
from bus.messages import (  # noqa: E402
    MAX_RUNS_PER_EVENT,
    PROTOCOL_VERSION,
    RUNS_EVENT,
    Error,
    Heartbeat,
    JobSpec,
    JobSubmit,
    Message,
    MsgType,
    NodeFacts,
    Register,
    Reply,
    RunAck,
    RunCancel,
    RunDispatch,
    RunReport,
    RunState,
    RunUpdate,
    Welcome,
    dispatch_problem,
    welcome_problem,
)
from bus.sockets import SocketTuning, make_socket, receive, receive_forever  # noqa: E402
from scripts.bench.stats import percentile  # noqa: E402

MAX_AGENTS = 2000
MAX_JOBS = 1000
MAX_LINKS_PER_WORKER = 200  # real Links spawn commands: pipes and a loop of their own
FDS_PER_AGENT = {"sim": 2, "link": 4}  # DEALER + its mailbox (+ a run's pipes for Links)
STARTED = frozenset(s.value for s in RunState if s not in (RunState.QUEUED,
                                                           RunState.DISPATCHED))
JOB_FINAL = frozenset({"succeeded", "failed", "cancelled"})
READY_TIMEOUT = 120.0  # the fleet of one N registered and ready in nodes.list
WORKER_TIMEOUT = 30.0  # a worker answers a command (but "up", which waits for welcomes)
CLEANUP_RESERVE = 20.0  # seconds of the time limit kept for stopping what was started
INTERVAL = 1.0  # the manager's heartbeat interval, and the agents' until welcomed
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0  # the agent's reconnect back-off (agent.link.LinkTiming)
GOLDEN = 0.6180339887498949  # any first N phases frac(i·φ) spread evenly over a beat
#: The targets of the speed issue: (N, p95 ms of submit → every run running).
RUNNING_TARGETS = ((50, 20.0), (1000, 250.0))
REPLY_SLOPE_TARGET = 50.0  # µs per node, the submit reply's growth


def node_name(i: int) -> str:
    return f"bench{i:04d}"


def job_timeout(n: int) -> float:
    """One job, submit to final; far above any expected latency."""
    return 15.0 + 0.03 * n


def job_command(hold: float) -> list[str]:
    return ["sleep", f"{hold:g}"] if hold > 0 else ["true"]


# --- statistics -----------------------------------------------------------------------


def summary_ms(seconds: list[float]) -> dict[str, float] | None:
    """p50/p95/min/max/mean in milliseconds, or None when nothing was measured."""
    if not seconds:
        return None
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "min": min(ms),
            "max": max(ms), "mean": sum(ms) / len(ms), "count": len(ms)}


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x, or None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


# --- processes we start ------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGTERM it if the bench dies without stopping it (Linux only)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_env() -> dict[str, str]:
    """Our environment without PTAP_* (a user's settings must not steer the bench)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


SERVER_CFG = """\
# Written by scripts/bench/dispatch.py for one run.
[basic]
bind_addr = 127.0.0.1
bind_port = 0
interval = {interval}
liveness = 3
[influxdb]
# nothing listens here: dispatch writes no metrics
url = http://127.0.0.1:9
[security]
curve = no
keys_dir = {tmp}/keys
[state]
path = {tmp}/manager.db
"""


class ManagerProcess:
    """``python -m manager.main`` with its own config on random ports, state in ``tmp``."""

    def __init__(self, tmp: Path, profile: str | None = None) -> None:
        self.tmp = tmp
        self.profile = profile  # cProfile's output file, or None
        self.ready = tmp / "manager.ready"
        self.log = tmp / "manager.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cfg = self.tmp / "server.cfg"
        cfg.write_text(SERVER_CFG.format(interval=INTERVAL, tmp=self.tmp), encoding="utf-8")
        profiler = ["-m", "cProfile", "-o", self.profile] if self.profile else []
        argv = [sys.executable, *profiler, "-m", "manager.main", "--config", str(cfg),
                "--ready-file", str(self.ready)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=self.tmp, env=child_env(),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

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
        return cast(dict[str, int], json.loads(self.ready.read_text(encoding="utf-8")))

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

    def profile_top(self, count: int = 30) -> str:
        """The profiled manager's functions by own time (written when it stopped)."""
        if not self.profile or not Path(self.profile).exists():
            return ""
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(self.profile, stream=out).sort_stats("tottime").print_stats(count)
        return out.getvalue()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- worker side: simulated agents ---------------------------------------------------------


def node_facts() -> NodeFacts:
    return NodeFacts(hostname=platform.node() or "localhost", address="127.0.0.1",
                     cpus=os.cpu_count() or 1, memory_bytes=0, kernel=platform.release(),
                     agent_version="bench")


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker holds: agents ``index``, ``index + procs``, … below ``pool``."""

    index: int
    procs: int
    pool: int
    address: str
    impl: str
    hold: float
    tmp: str

    @property
    def agents(self) -> list[int]:
        return list(range(self.index, self.pool, self.procs))


def _has_input(sock: zmq.Socket[bytes]) -> bool:
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


class SimAgent:
    """One simulated node on the real wire: the agent's session, runs reported, never
    started (see the module docstring). Messages are read by the loop's callback on the
    socket's descriptor, as :class:`agent.dealer_loop.DealerLoop` reads them."""

    def __init__(self, fleet: SimFleet, node: str, phase: float) -> None:
        self.fleet = fleet
        self.node = node
        self.phase = phase  # fraction of the interval at which this agent beats
        self.interval, self.liveness = INTERVAL, 3
        self.runs: dict[str, RunReport] = {}  # held until the manager acks the final state
        self.registered = asyncio.Event()
        self._raw: zmq.asyncio.Socket | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._beat: asyncio.TimerHandle | None = None
        self._last_heard = 0.0
        self._reading = False
        self._backoff = BACKOFF_MIN  # as the agent's: doubling up to BACKOFF_MAX
        self._handlers: dict[MsgType, Callable[[Any], None]] = {
            MsgType.WELCOME: self._on_welcome, MsgType.HEARTBEAT: lambda msg: None,
            MsgType.RUN_DISPATCH: self._on_dispatch, MsgType.RUN_CANCEL: self._on_cancel,
            MsgType.RUN_ACK: self._on_ack, MsgType.METRICS_ACK: lambda msg: None,
            MsgType.ERROR: self._on_error,
        }

    # --- the session ---------------------------------------------------------------

    def connect(self) -> None:
        """A new DEALER, ``agent.register``, and the heartbeat timer."""
        if self.fleet.closed:
            return
        loop = asyncio.get_running_loop()
        self._raw = make_socket(self.fleet.ctx, zmq.DEALER, SocketTuning())
        self._raw.connect(self.fleet.spec.address)
        self._sock = zmq.Socket.shadow(self._raw.underlying)
        loop.add_reader(self._sock.FD, self._on_readable)
        self._last_heard = loop.time()
        self._register()
        self._plan_beat()

    def close(self) -> None:
        self.registered.clear()
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        if self._sock is not None and self._raw is not None:
            asyncio.get_running_loop().remove_reader(self._sock.FD)
            self._raw.close(linger=0)
        self._sock = self._raw = None

    def _reconnect(self) -> None:
        self.fleet.counts["reconnects"] += 1
        self.close()
        asyncio.get_running_loop().call_later(self._backoff, self.connect)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _register(self) -> None:
        self._send(Register(protocol=PROTOCOL_VERSION, node=self.node, facts=self.fleet.facts,
                            runs=list(self.runs.values()), sent_at=time.time()))

    def _plan_beat(self) -> None:
        loop = asyncio.get_running_loop()
        when = next_tick(self.phase * self.interval, self.interval,
                         loop.time() + self.interval / 2)
        self._beat = loop.call_at(when, self._on_beat)

    def _on_beat(self) -> None:
        """Every interval: give up a silent manager, else heartbeat and resend finals."""
        now = asyncio.get_running_loop().time()
        if now - self._last_heard > self.interval * self.liveness:
            self._reconnect()
            return
        self._plan_beat()
        if not self.registered.is_set():
            return
        running = sum(r.state is RunState.RUNNING for r in self.runs.values())
        self._send(Heartbeat(running=running, sent_at=time.time()))
        for report in list(self.runs.values()):
            if report.state.final:
                self._send(RunUpdate(run=report))

    def _on_readable(self) -> None:
        """Every message waiting (the descriptor only says "look at EVENTS")."""
        sock = self._sock
        if sock is None or self._reading:
            return
        self._reading = True
        try:
            while self._sock is sock and _has_input(sock):
                frames = sock.recv_multipart(zmq.NOBLOCK)
                self._last_heard = asyncio.get_running_loop().time()
                self._handle(frames)
        except zmq.ZMQError:
            self.fleet.counts["recv-failed"] += 1
        finally:
            self._reading = False

    def _handle(self, frames: list[bytes]) -> None:
        try:
            msg = codec.decode(frames)
        except ProtocolError:
            self.fleet.counts["bad-frames"] += 1
            return
        handler = self._handlers.get(msg.TYPE)
        if handler is None:
            self.fleet.counts[f"unexpected {msg.TYPE.value}"] += 1
        else:
            handler(msg)

    def _send(self, msg: Message) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.send_multipart(codec.encode(msg), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            self.fleet.counts["send-failed"] += 1
        # A send may take the descriptor's signal for input that arrived meanwhile.
        if not self._reading and _has_input(sock):
            asyncio.get_running_loop().call_soon(self._on_readable)

    # --- one handler per message type ------------------------------------------------

    def _on_welcome(self, msg: Welcome) -> None:
        self.fleet.counts["welcomes"] += 1
        self._backoff = BACKOFF_MIN
        if not welcome_problem(msg) and msg.heartbeat_interval != self.interval:
            self.interval, self.liveness = msg.heartbeat_interval, msg.liveness
            if self._beat is not None:
                self._beat.cancel()
            self._plan_beat()
        self.registered.set()

    def _on_error(self, msg: Error) -> None:
        self.fleet.counts[f"error {msg.code}"] += 1
        if msg.code == "not-registered":
            self.registered.clear()
            self._register()
        elif msg.code == "name-taken":
            self._reconnect()

    def _on_dispatch(self, msg: RunDispatch) -> None:
        """``running`` at once (a real agent sends it once the command is spawned); the
        final state after the hold, as ``sleep HOLD`` would end."""
        self.fleet.counts["dispatches"] += 1
        known = self.runs.get(msg.run_id)
        if known is not None:
            self._send(RunUpdate(run=known))
            return
        if problem := dispatch_problem(msg):
            self._set(RunReport(run_id=msg.run_id, job_id=msg.job_id, state=RunState.FAILED,
                                ended_at=time.time(), error=f"refused: {problem}"))
            return
        self._set(RunReport(run_id=msg.run_id, job_id=msg.job_id, state=RunState.RUNNING,
                            started_at=time.time()))
        hold = self.fleet.spec.hold
        if hold > 0:
            asyncio.get_running_loop().call_later(hold, self._end, msg.run_id,
                                                  RunState.SUCCEEDED, 0, "")
        else:
            self._end(msg.run_id, RunState.SUCCEEDED, 0, "")

    def _on_cancel(self, msg: RunCancel) -> None:
        report = self.runs.get(msg.run_id)
        if report is not None and report.state.final:
            self._send(RunUpdate(run=report))
        elif report is not None:
            self._end(msg.run_id, RunState.CANCELLED, -signal.SIGTERM,
                      msg.reason or "cancelled by manager")

    def _on_ack(self, msg: RunAck) -> None:
        report = self.runs.get(msg.run_id)
        if report is not None and report.state.final:
            del self.runs[msg.run_id]

    def _end(self, run_id: str, state: RunState, exit_code: int, error: str) -> None:
        report = self.runs.get(run_id)
        if report is None or report.state.final:
            return
        self._set(RunReport(run_id=run_id, job_id=report.job_id, state=state,
                            exit_code=exit_code, started_at=report.started_at,
                            ended_at=time.time(), error=error))

    def _set(self, report: RunReport) -> None:
        self.runs[report.run_id] = report
        self.fleet.counts["updates"] += 1
        self._send(RunUpdate(run=report))


class SimFleet:
    """A worker's stand-in agents, all in this process's loop."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.ctx = zmq.asyncio.Context()
        self.ctx.set(zmq.MAX_SOCKETS, len(spec.agents) + 64)
        self.facts = node_facts()
        self.counts: Counter[str] = Counter()
        self.agents = [SimAgent(self, node_name(i), (i * GOLDEN) % 1.0) for i in spec.agents]
        self.started = 0
        self.closed = False

    async def up(self, count: int) -> int:
        """Connect agents up to ``count``; how many are registered (bounded wait)."""
        for agent in self.agents[self.started:count]:
            agent.connect()
        self.started = max(self.started, count)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.gather(*(a.registered.wait() for a in self.agents[:count]))
        return sum(a.registered.is_set() for a in self.agents[:count])

    def stats(self) -> dict[str, Any]:
        return dict(self.counts, held=sum(len(a.runs) for a in self.agents))

    async def close(self) -> None:
        self.closed = True
        for agent in self.agents:
            agent.close()
        self.ctx.destroy(linger=0)


class LinkFleet:
    """A worker's real :class:`agent.link.Link` agents, which spawn the command."""

    def __init__(self, spec: WorkerSpec) -> None:
        from agent.link import Link  # only here: the stand-in needs none of the agent

        self._link = Link
        self.spec = spec
        self.ctx = zmq.asyncio.Context()
        self.ctx.set(zmq.MAX_SOCKETS, len(spec.agents) + 64)
        self.links: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def up(self, count: int) -> int:
        from agent.runner import RunnerOptions

        for i in self.spec.agents[len(self.links):count]:
            node = node_name(i)
            options = RunnerOptions(workdir=str(Path(self.spec.tmp) / "agents" / node),
                                    kill_grace=1.0)
            link = self._link(self.spec.address, node, node_facts(), ctx=self.ctx,
                              runner_options=options)
            self.links.append(link)
            self.tasks.append(asyncio.create_task(link.run(), name=f"link {node}"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.gather(*(link.registered.wait() for link in self.links[:count]))
        return sum(link.registered.is_set() for link in self.links[:count])

    def stats(self) -> dict[str, Any]:
        return {"sessions": sum(link.sessions for link in self.links),
                "held": sum(len(link.runs) for link in self.links)}

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(link.aclose() for link in self.links),
                                     return_exceptions=True)
        self.ctx.destroy(linger=0)


def _answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def worker_serve(spec: WorkerSpec) -> None:
    """Commands on stdin, one JSON line each: ``{"up": K}`` (connect this worker's
    first K agents, answer how many are registered), ``{"stats": 1}``; end of input
    stops the worker, which answers its final stats."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet: SimFleet | LinkFleet = SimFleet(spec) if spec.impl == "sim" else LinkFleet(spec)
    _answer({"ready": os.getpid()})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if "up" in cmd:
                t0 = time.monotonic()
                registered = await fleet.up(int(cmd["up"]))
                _answer({"registered": registered, "seconds": time.monotonic() - t0})
            else:
                _answer(fleet.stats())
    finally:
        await fleet.close()
        _answer(fleet.stats())


def worker_main(raw_spec: str) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = WorkerSpec(**json.loads(raw_spec))
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(worker_serve(spec))
    return 0


# --- main side: the workers ------------------------------------------------------------------


class Workers:
    """The worker processes holding the agents; agent ``i`` lives in worker ``i % P``."""

    def __init__(self, procs: int, pool: int) -> None:
        self.procs, self.pool = procs, pool
        self.children: list[asyncio.subprocess.Process] = []
        self.final_stats: list[dict[str, Any]] = []

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    async def start(self, address: str, impl: str, hold: float, tmp: Path) -> None:
        for index in range(self.procs):
            spec = WorkerSpec(index=index, procs=self.procs, pool=self.pool, address=address,
                              impl=impl, hold=hold, tmp=str(tmp))
            with _log_file(tmp / f"worker{index}.log") as log:
                child = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--worker", json.dumps(dataclasses.asdict(spec)),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=log, cwd=REPO, env=child_env(), preexec_fn=_die_with_parent)
            self.children.append(child)
        for child in self.children:
            await self._read(child, WORKER_TIMEOUT)

    async def _read(self, child: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
        assert child.stdout is not None
        async with asyncio.timeout(timeout):
            line = await child.stdout.readline()
        if not line:
            raise RuntimeError(f"agent worker {child.pid} exited with {await child.wait()}")
        return cast(dict[str, Any], json.loads(line))

    async def _ask(self, cmds: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """One command to each worker (all at once), then each one's answer."""
        for child, cmd in zip(self.children, cmds, strict=True):
            assert child.stdin is not None
            child.stdin.write(json.dumps(cmd).encode() + b"\n")
        return [await self._read(child, timeout) for child in self.children]

    async def up(self, n: int) -> int:
        """Grow the fleet to agents ``0 … n-1``; how many are registered."""
        cmds = [{"up": len(range(index, n, self.procs))} for index in range(self.procs)]
        answers = await self._ask(cmds, READY_TIMEOUT + 10)
        return sum(int(a["registered"]) for a in answers)

    async def stats(self) -> list[dict[str, Any]]:
        return await self._ask([{"stats": 1}] * self.procs, WORKER_TIMEOUT)

    async def stop(self) -> list[int | None]:
        """End of input, then SIGTERM, then SIGKILL: each by its pid, ours alone."""
        codes: list[int | None] = []
        for child in self.children:
            if child.stdin is not None and not child.stdin.is_closing():
                child.stdin.close()
        for child in self.children:
            last: dict[str, Any] | None = None
            with contextlib.suppress(TimeoutError, RuntimeError, ValueError):
                for _ in range(4):  # an answer cut off by an error may come first
                    last = await self._read(child, 15)
            if last is not None:
                self.final_stats.append(last)
            codes.append(await _stop_child(child))
        return codes


def _log_file(path: Path) -> BinaryIO:
    return open(path, "wb")  # the caller closes it once the child holds it


async def _stop_child(child: asyncio.subprocess.Process) -> int | None:
    for how in (None, signal.SIGTERM, signal.SIGKILL):
        if how is not None and child.returncode is None:
            child.send_signal(how)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                return await child.wait()
    return child.returncode


# --- main side: events, submits, CPU -------------------------------------------------------


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


def event_head(body: bytes, want_detail: Callable[[dict[str, Any]], bool] | None = None
               ) -> dict[str, Any] | None:
    """An event's fields before ``detail`` (which the encoder writes last), without
    decoding ``detail`` unless ``want_detail(head)`` says so: a ``job`` event holds
    every run of the job (1,000 at 1,000 agents), and this process shares the CPUs
    with the manager and the agents. None when the body is not such a map (then it
    is unpacked whole)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(body) or 1,
                                max_str_len=4096, max_bin_len=0,
                                max_array_len=MAX_RUNS_PER_EVENT, max_map_len=64,
                                max_ext_len=0)
    unpacker.feed(body)
    head: dict[str, Any] = {}
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "detail":
                if want_detail is not None and want_detail(head):
                    head[key] = unpacker.unpack()
                return head
            head[key] = unpacker.unpack()
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    return head


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

    async def note(self, frames: list[bytes]) -> None:
        received = time.perf_counter()
        if len(frames) != 3 or frames[1] != MsgType.EVENT.value.encode():
            return
        try:
            ev = event_head(frames[2], lambda head: head.get("kind") == RUNS_EVENT
                            ) or codec.unpack(frames[2])
        except ProtocolError:
            return
        watch = self.jobs.setdefault(str(ev.get("job_id")), JobWatch())
        kind, detail = ev.get("kind"), ev.get("detail")
        if kind == RUNS_EVENT and isinstance(detail, dict):
            for run in detail.get("runs") or []:
                run_id = run.get("id") if isinstance(run, dict) else None
                if run_id is not None and run.get("state") in STARTED \
                        and run_id not in watch.started:
                    watch.started[str(run_id)] = (received, ev["ts"],
                                                  run.get("dispatched_at") or 0.0,
                                                  run.get("started_at") or 0.0)
            watch.check()
        elif kind == "job" and ev.get("state") in JOB_FINAL:
            watch.state = str(ev.get("state"))
            watch.finished.set()


async def follow(address: str, tracker: Tracker, ctx: zmq.asyncio.Context) -> None:
    """Feed every ``evt.job.*`` event to ``tracker``."""
    sock = make_socket(ctx, zmq.SUB, SocketTuning())
    sock.setsockopt(zmq.SUBSCRIBE, topics.JOB_EVENTS.encode())
    sock.connect(address)
    try:
        await receive_forever(sock, tracker.note, drain=1024)
    finally:
        sock.close(linger=0)


class Submitter:
    """``job.submit`` on a DEALER of its own, timed until the reply's frames arrive
    (decoding a 1,000-run reply here is not the manager's time)."""

    def __init__(self, address: str, ctx: zmq.asyncio.Context) -> None:
        tuning = SocketTuning(max_message_bytes=REPLY_LIMITS.max_message_bytes)
        self.sock = make_socket(ctx, zmq.DEALER, tuning)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.connect(address)

    async def submit(self, spec: JobSpec, timeout: float) -> tuple[dict[str, Any], float]:
        msg = JobSubmit(req_id=new_request_id(), spec=spec)
        frames = codec.encode(msg)
        async with asyncio.timeout(timeout):
            t0 = time.perf_counter()
            await self.sock.send_multipart(frames)
            while True:
                got = await receive(self.sock)
                took = time.perf_counter() - t0
                reply = codec.decode(got, REPLY_LIMITS)
                if getattr(reply, "req_id", None) == msg.req_id:
                    break
        if isinstance(reply, Error):
            raise RuntimeError(f"job.submit refused: {reply.code}: {reply.message}")
        assert isinstance(reply, Reply)
        return dict(reply.result), took

    def close(self) -> None:
        self.sock.close(linger=0)


def process_cpu(pid: int) -> Callable[[], float]:
    """User + system CPU seconds of process ``pid`` (all its threads, ended ones too),
    to the nanosecond: the process's CPU-time clock (``clock_getcpuclockid``).
    psutil's ``cpu_times()`` reads the same sum rounded to 10 ms clock ticks, which
    is coarser than what a 1-node submit costs; it remains the fallback."""
    clock = ((~pid) << 3) | 2  # Linux: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    try:
        time.clock_gettime(clock)
    except OSError:
        proc = psutil.Process(pid)
        return lambda: sum(proc.cpu_times()[:2])
    return lambda: time.clock_gettime(clock)


def host_busy() -> float:
    """CPU seconds used on the whole host, all cores (interrupts left out: loopback
    traffic is handled there, charged to no process)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system


def runqueue_wait(pid: int) -> float:
    """Seconds the main thread of ``pid`` (the manager's asyncio loop) has waited for
    a CPU while it could run (``/proc/PID/schedstat``), 0.0 where not available."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuClock:
    """CPU seconds of the manager, of the agent workers together and of this process,
    and the seconds the manager's loop waited for a CPU."""

    def __init__(self, manager: int, workers: list[int]) -> None:
        self.manager = manager
        self.clocks = [process_cpu(manager), *(process_cpu(pid) for pid in workers)]
        self.own = process_cpu(os.getpid())

    def read(self) -> tuple[float, float, float, float]:
        manager, *workers = (clock() for clock in self.clocks)
        return manager, sum(workers), self.own(), runqueue_wait(self.manager)


def cpu_delta(before: tuple[float, ...], after: tuple[float, ...]) -> list[float]:
    return [b - a for a, b in zip(before, after, strict=True)]


# --- measurements ----------------------------------------------------------------------------


async def round_trips(client: ManagerClient, calls: int) -> list[float]:
    """Seconds per ``nodes.list`` request/reply, one at a time."""
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await client.nodes()
        out.append(time.perf_counter() - t0)
    return out


async def wait_ready(client: ManagerClient, names: list[str],
                     timeout: float) -> tuple[int, float]:
    """Poll ``nodes.list`` (bounded) until every one of ``names`` is ``ready``: how
    many are not, and the longest any of them has been silent (seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n["name"]: n for n in await client.nodes()}
        missing = sum(nodes.get(name, {}).get("state") != "ready" for name in names)
        if not missing or time.monotonic() > deadline:
            silent = [nodes[name].get("silent_for") or 0.0 for name in names if name in nodes]
            return missing, max(silent, default=0.0)
        await asyncio.sleep(0.25)


@dataclass
class Bench:
    """What one measurement needs: the manager's sockets, the events, the CPU clock."""

    client: ManagerClient
    submitter: Submitter
    tracker: Tracker
    cpu: CpuClock
    command: list[str]


async def one_job(b: Bench, nodes: list[str]) -> dict[str, Any]:
    """Submit to ``nodes``; the timings and CPU shares of this job. Returns once the
    job has ended, so the next job finds every node idle."""
    spec = JobSpec(command=b.command, targets=nodes, collect=[])  # no name: see the docstring
    c0 = b.cpu.read()
    wall0, t0 = time.time(), time.perf_counter()
    job, reply = await b.submitter.submit(spec, timeout=job_timeout(len(nodes)))
    watch = b.tracker.expect(job["id"], len(nodes))
    try:
        async with asyncio.timeout(job_timeout(len(nodes))):
            await watch.all_running.wait()
            c1, t1 = b.cpu.read(), time.perf_counter()
            await watch.finished.wait()
    except TimeoutError:  # not the bench's own time limit: say which job hung
        raise RuntimeError(f"job {job['id']}: {len(watch.started)} of {len(nodes)} runs "
                           f"started, job state {watch.state or '?'} after "
                           f"{job_timeout(len(nodes)):g} s") from None
    c2, t2 = b.cpu.read(), time.perf_counter()
    b.tracker.jobs.pop(job["id"], None)
    seen, recorded, sent, started = (max(col) for col in zip(*watch.started.values(),
                                                             strict=True))
    return {"running": seen - t0, "reply": reply, "begin": sent - wall0,
            "acked": started - wall0, "recorded": recorded - wall0, "state": watch.state,
            "cpu_run": cpu_delta(c0, c1), "window_run": t1 - t0,
            "cpu_job": cpu_delta(c0, c2), "window_job": t2 - t0}


async def idle_cost(cpu: CpuClock, seconds: float) -> list[float]:
    """Cores the manager, the agents and this process use with the fleet idle
    (heartbeats both ways, housekeeping): subtracted from the CPU per submit."""
    if seconds <= 0:
        return [0.0] * len(WHO)
    c0, t0 = cpu.read(), time.perf_counter()
    await asyncio.sleep(seconds)  # a sampling window, not synchronisation
    wall = time.perf_counter() - t0
    return [used / wall for used in cpu_delta(c0, cpu.read())]


SAMPLE_KEYS = ("running", "reply", "begin", "acked", "recorded")
WHO = ("mgr_cpu", "agents_cpu", "bench_cpu", "mgr_runq")


def fill_entry(entry: dict[str, Any], samples: list[dict[str, Any]], idle: list[float]) -> None:
    """Summaries of ``samples`` into ``entry`` (called after every job, so a run cut
    short still shows what it measured). CPU: means per submit, in ms, raw and net
    of the idle fleet's cost over the same window."""
    for key in SAMPLE_KEYS:
        entry[f"{key}_ms"] = summary_ms([s[key] for s in samples])
    for span in ("run", "job"):
        for i, who in enumerate(WHO):
            raw = [s[f"cpu_{span}"][i] for s in samples]
            net = [r - idle[i] * s[f"window_{span}"] for r, s in zip(raw, samples, strict=True)]
            entry[f"{who}_{span}_ms"] = sum(net) / len(net) * 1000
            entry[f"{who}_{span}_raw_ms"] = sum(raw) / len(raw) * 1000
    entry["jobs"] = len(samples)
    entry["failed_jobs"] = sum(s["state"] != "succeeded" for s in samples)


async def measure_n(b: Bench, workers: Workers, n: int, args: argparse.Namespace,
                    deadline: float, entry: dict[str, Any]) -> None:
    """Grow the fleet to ``n``, wait until it is ready, then up to ``--jobs`` jobs."""
    names = [node_name(i) for i in range(n)]
    t0 = time.monotonic()
    entry.update(agents=n, jobs=0, registered=await workers.up(n))
    entry["not_ready"], _ = await wait_ready(b.client, names, READY_TIMEOUT)
    entry["ready_s"] = time.monotonic() - t0
    if entry["not_ready"]:
        raise RuntimeError(f"{entry['not_ready']} of {n} agents not ready after "
                           f"{READY_TIMEOUT:g} s")
    entry["idle_cores"] = idle = await idle_cost(b.cpu, args.idle)
    # Read after the idle window, when only heartbeats speak for the nodes: each
    # node's silence stays under the interval while the fleet is live.
    _, entry["max_silent_s"] = await wait_ready(b.client, names, 0)
    await one_job(b, names)  # warm-up: the new nodes' first runs
    samples: list[dict[str, Any]] = []
    busy0, cpu0, t0 = host_busy(), b.cpu.read(), time.perf_counter()
    for _ in range(args.jobs):
        if time.monotonic() > deadline:
            entry["truncated"] = True
            break
        samples.append(await one_job(b, names))
        fill_entry(entry, samples, idle)
    entry["cores"] = phase_cores(busy0, cpu0, b.cpu.read(), time.perf_counter() - t0)
    entry["not_ready_after"], _ = await wait_ready(b.client, names, 0)


def phase_cores(busy0: float, cpu0: tuple[float, ...], cpu1: tuple[float, ...],
                wall: float) -> dict[str, float]:
    """Cores used while the jobs of one N ran: by the manager, the agents, this
    process, and every other process on the host (the machine may be shared)."""
    ours = cpu_delta(cpu0, cpu1)[:3]
    others = host_busy() - busy0 - sum(ours)
    return {name: max(0.0, used / wall) for name, used in
            zip(("manager", "agents", "bench", "others"), (*ours, others), strict=True)}


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Held:
    """What must be stopped at the end, filled in as it is started."""

    workers: Workers | None = None
    follower: asyncio.Task[None] | None = None
    submitter: Submitter | None = None


async def phases(manager: ManagerProcess, ctx: zmq.asyncio.Context, held: Held,
                 args: argparse.Namespace, deadline: float, results: dict[str, Any]) -> None:
    """Manager up, baseline round trips, subscriber, workers, then each N in turn."""
    manager.start()
    ports = await manager.ports()
    router, pub = f"tcp://127.0.0.1:{ports['router']}", f"tcp://127.0.0.1:{ports['pub']}"
    async with ManagerClient(router, ctx=ctx, timeout=10) as client:
        results["round_trip_ms"] = summary_ms(await round_trips(client, args.round_trips))
        tracker = Tracker()
        # Subscribed before any agent connects, so no event of a job can be missed.
        held.follower = asyncio.create_task(follow(pub, tracker, ctx), name="follow")
        held.workers = Workers(args.procs, max(args.agents))
        await held.workers.start(router, args.agent_impl, args.hold, manager.tmp)
        assert manager.proc is not None
        cpu = CpuClock(manager.proc.pid, held.workers.pids)
        held.submitter = Submitter(router, ctx)
        b = Bench(client, held.submitter, tracker, cpu, job_command(args.hold))
        for n in args.agents:
            if time.monotonic() > deadline:
                results["truncated"] = True
                break
            entry: dict[str, Any] = {}
            results["dispatch"].append(entry)
            await measure_n(b, held.workers, n, args, deadline, entry)
        results["worker_stats"] = await held.workers.stats()


async def bench(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Run :func:`phases` under the hard time limit, and always clean up."""
    start = time.monotonic()
    hard = args.time_limit - CLEANUP_RESERVE
    deadline = start + hard - 30.0  # no new job this close to the hard limit
    ctx = zmq.asyncio.Context()
    held = Held()
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels like Ctrl-C does, so the cleanup below still runs.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results["load_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ptap-bench-dispatch-") as tmpdir:
        manager = ManagerProcess(Path(tmpdir), args.profile_manager)
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
            results["load_after"] = os.getloadavg()
            await cleanup(manager, held, ctx, results)
            results["elapsed_s"] = round(time.monotonic() - start, 2)


async def cleanup(manager: ManagerProcess, held: Held, ctx: zmq.asyncio.Context,
                  results: dict[str, Any]) -> None:
    """Workers first (so no run outlives us), then the subscriber, context and manager."""
    try:
        if held.workers is not None:
            results["worker_exits"] = await held.workers.stop()
            results["worker_final_stats"] = held.workers.final_stats
    finally:
        if held.follower is not None:
            held.follower.cancel()
            await asyncio.gather(held.follower, return_exceptions=True)
        if held.submitter is not None:
            held.submitter.close()
        ctx.destroy(linger=0)
        results["manager_exit"] = manager.stop()
        results["manager_profile"] = manager.profile_top()


# --- judging and output ------------------------------------------------------------------------


def add_verdicts(results: dict[str, Any]) -> None:
    """Slopes over N (µs per node, of per-N medians or means), ratios and the targets."""
    entries = [e for e in results["dispatch"] if e.get("running_ms")]
    rtt = results.get("round_trip_ms")
    for e in entries:
        e["ratio_p50"] = e["running_ms"]["p50"] / rtt["p50"] if rtt else None
        results["truncated"] = results.get("truncated") or bool(e.get("truncated"))

    def fit(get: Callable[[dict[str, Any]], float]) -> float | None:
        s = slope([(e["agents"], get(e)) for e in entries])
        return None if s is None else s * 1000  # ms per node → µs per node

    results["slopes_us_per_node"] = {
        "reply_p50": fit(lambda e: e["reply_ms"]["p50"]),
        "running_p50": fit(lambda e: e["running_ms"]["p50"]),
        "manager_cpu_to_running": fit(lambda e: e["mgr_cpu_run_ms"]),
        "agents_cpu_to_running": fit(lambda e: e["agents_cpu_run_ms"]),
    }
    by_n = {e["agents"]: e for e in entries}
    targets = []
    for n, limit in RUNNING_TARGETS:
        got = by_n[n]["running_ms"]["p95"] if n in by_n else None
        targets.append({"what": f"submit -> every run running p95 at {n} agents",
                        "target": f"<= {limit:g} ms", "value": got,
                        "met": None if got is None else got <= limit})
    s = results["slopes_us_per_node"]["reply_p50"]
    targets.append({"what": "submit reply growth per node", "target":
                    f"< {REPLY_SLOPE_TARGET:g} us/node", "value": s,
                    "met": None if s is None else s < REPLY_SLOPE_TARGET})
    results["targets"] = targets


def _ms(stats: dict[str, float] | None, key: str = "p50") -> str:
    return "-" if not stats else f"{stats[key]:.1f}"


def _notes(e: dict[str, Any]) -> str:
    return ((f"  ({e['failed_jobs']} failed)" if e.get("failed_jobs") else "")
            + ("  (cut short)" if e.get("truncated") else "")
            + (f"  ({e['not_ready_after']} not ready after)" if e.get("not_ready_after")
               else ""))


def _latency_row(e: dict[str, Any]) -> str:
    if not e.get("running_ms"):
        return f"{e.get('agents', '?'):>6} {e.get('jobs', 0):>4}  (nothing measured){_notes(e)}"
    ratio = f"{e['ratio_p50']:.0f}x" if e.get("ratio_p50") else "-"
    return (f"{e['agents']:>6} {e['jobs']:>4} {_ms(e['running_ms']):>7} "
            f"{_ms(e['running_ms'], 'p95'):>7} {ratio:>6} {_ms(e['reply_ms']):>7} "
            f"{_ms(e['reply_ms'], 'p95'):>7} {_ms(e['begin_ms']):>7} {_ms(e['acked_ms']):>7} "
            f"{_ms(e['recorded_ms']):>7}{_notes(e)}")


def _cpu_row(e: dict[str, Any]) -> str:
    if not e.get("running_ms"):
        return f"{e.get('agents', '?'):>6}  -"
    cores = e.get("cores") or {}
    shares = " ".join(f"{cores.get(k, float('nan')):>5.2f}"
                      for k in ("manager", "agents", "bench", "others"))
    idle = e.get("idle_cores") or [0.0, 0.0]
    return (f"{e['agents']:>6} {e['mgr_cpu_run_ms']:>8.2f} {e['mgr_runq_run_ms']:>7.2f} "
            f"{e['mgr_cpu_job_ms']:>8.2f} "
            f"{e['mgr_cpu_run_ms'] / e['agents'] * 1000:>7.0f} {e['agents_cpu_run_ms']:>10.2f} "
            f"{e['bench_cpu_run_ms']:>9.2f}  {shares}  {idle[0]:>5.2f} {idle[1]:>6.2f}"
            f" {e['ready_s']:>6.1f} {e.get('max_silent_s', float('nan')):>6.2f}")


def format_table(results: dict[str, Any]) -> str:
    rtt = results.get("round_trip_ms")
    load = " ".join(f"{x:.2f}" for x in results.get("load_before", ()))
    load_after = " ".join(f"{x:.2f}" for x in results.get("load_after", ()))
    lines = [
        "ptap dispatch latency: submit -> every run running (loopback; manager subprocess; "
        f"up to {results['pool']} {results['agent_impl']} agents in {results['procs']} worker "
        f"processes; runs held {results['hold_s']:g} s)",
        f"host: {results['cpus']} CPUs, load average {load} before, {load_after} after",
        f"ROUTER round trip, nodes.list, no nodes: p50 {_ms(rtt, 'p50')} ms, "
        f"p95 {_ms(rtt, 'p95')} ms",
        "",
        "              --- submit -> all running ---  --- reply ---  -------- p50 --------",
        "agents jobs     p50     p95 p50/rtt    p50     p95   begin   acked   rec'd  (ms)",
        *(_latency_row(e) for e in results["dispatch"]),
        "",
        "       ------------- CPU per submit (ms) -------------  cores while jobs ran  "
        "idle: cores  ready silent",
        "agents  mgr>run    runq  mgr job us/node agents>run bench>run  mgr agents bench "
        "others   mgr agents    (s)    (s)",
        *(_cpu_row(e) for e in results["dispatch"]),
        "",
        "begin, acked, rec'd: when the manager began the dispatch pass, the last agent sent "
        "running, the manager stamped the last running event (ms after submit).",
        "CPU per submit, less what the idle fleet costs over the same time (idle: cores "
        "used with no job): mgr>run, agents>run, bench>run = from submit until every run "
        "was running; runq = meanwhile, the manager's loop waited for a CPU (the rest of "
        "its time it was idle or blocked); us/node = mgr>run / N; mgr job = until the job "
        "ended. ready: the "
        "fleet grown and all ready; silent: the longest any node had been silent after the "
        "idle window (heartbeats alone).",
    ]
    slopes = results.get("slopes_us_per_node") or {}
    lines.append("per-node growth (least squares over N of per-N p50 or mean): " + ", ".join(
        f"{k} {v:.1f} us" for k, v in slopes.items() if v is not None))
    for t in results.get("targets", ()):
        value = "-" if t["value"] is None else f"{t['value']:.1f}"
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"target {t['what']} {t['target']}: {value} -> {verdict}")
    lines.append(_footer(results))
    if results.get("manager_profile"):
        lines += ["", "manager profile (cProfile, which slows it):", results["manager_profile"]]
    return "\n".join(lines)


def _footer(results: dict[str, Any]) -> str:
    counts: Counter[str] = Counter()
    for stats in results.get("worker_final_stats", ()):
        counts.update({k: v for k, v in stats.items() if isinstance(v, int)})
    trouble = {k: v for k, v in counts.items() if k not in ("welcomes", "dispatches", "updates",
                                                            "held", "sessions")}
    notes = [f"elapsed {results.get('elapsed_s', 0):.1f} s",
             f"manager exit {results.get('manager_exit')}",
             f"worker exits {results.get('worker_exits')}",
             f"agents' trouble {trouble or 'none'}"]
    if results.get("truncated"):
        notes.append("TRUNCATED" if results.get("error") else "TRUNCATED by the time limit")
    if results.get("error"):
        notes.append(f"error: {results['error']}")
    return "\n" + ", ".join(notes)


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--agents", default="1,10,50,200,1000",
                        help="comma-separated agent counts (default 1,10,50,200,1000)")
    parser.add_argument("--procs", type=int, default=max(2, os.cpu_count() or 1),
                        help="worker processes holding the agents (default: CPUs, at least 2)")
    parser.add_argument("--jobs", type=int, default=20, help="timed jobs per agent count")
    parser.add_argument("--hold", type=float, default=0.5,
                        help="seconds a run stays running (command sleep HOLD; 0: true)")
    parser.add_argument("--agent-impl", choices=("sim", "link"), default="sim",
                        help="sim: wire-level stand-ins (no process started); link: real "
                             "agent.link.Link agents spawning the command")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds of idle fleet measured before each N's jobs")
    parser.add_argument("--round-trips", type=int, default=100, help="nodes.list calls")
    parser.add_argument("--time-limit", type=float, default=900.0, help="hard limit, seconds")
    parser.add_argument("--profile-manager", metavar="FILE",
                        help="run the manager under cProfile (slower), write its stats to "
                             "FILE and print the top functions")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    try:
        args.agents = sorted({int(a) for a in args.agents.split(",") if a.strip()})
    except ValueError:
        parser.error("--agents: expected numbers like 1,10,50")
    if not args.agents or args.agents[0] < 1 or args.agents[-1] > MAX_AGENTS:
        parser.error(f"--agents: each count must be 1..{MAX_AGENTS}")
    if not 1 <= args.jobs <= MAX_JOBS or not 1 <= args.procs <= 64:
        parser.error(f"--jobs must be 1..{MAX_JOBS} and --procs 1..64")
    if not 0 <= args.hold <= 60 or not 0 <= args.idle <= 60:
        parser.error("--hold and --idle must be 0..60 s")
    if args.agent_impl == "link" and args.agents[-1] > MAX_LINKS_PER_WORKER * args.procs:
        parser.error(f"--agent-impl link: at most {MAX_LINKS_PER_WORKER} agents a worker")
    if args.time_limit <= CLEANUP_RESERVE + 40:
        parser.error(f"--time-limit must be above {CLEANUP_RESERVE + 40:g} s")
    return args


def check_fd_budget(args: argparse.Namespace) -> None:
    """Raise the soft fd limit (inherited by the manager and the workers) to what the
    largest of them needs: the manager a connection per agent, a worker two or more."""
    pool = args.agents[-1]
    per_worker = FDS_PER_AGENT[args.agent_impl] * math.ceil(pool / args.procs)
    need = 256 + max(2 * pool, per_worker)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"need about {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"] and len(argv) == 2:
        return worker_main(argv[1])
    args = parse_args(argv)
    check_fd_budget(args)
    results: dict[str, Any] = {"pool": args.agents[-1], "procs": args.procs,
                               "agent_impl": args.agent_impl, "hold_s": args.hold,
                               "jobs_per_n": args.jobs, "command": job_command(args.hold),
                               "cpus": os.cpu_count(), "time_limit_s": args.time_limit,
                               "dispatch": []}
    status = 0
    try:
        asyncio.run(bench(args, results))
    except (KeyboardInterrupt, asyncio.CancelledError):  # cleaned up in bench()'s finally
        results.update(error="interrupted", truncated=True)
        status = 130
    add_verdicts(results)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    if status == 0 and results.get("error") and results["error"] != "hard time limit reached":
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
