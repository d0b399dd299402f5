"""The agent's metrics side: collectors on their intervals, batches to the shipper.

System metrics (``[collectors] enabled``) are sampled all the time, so idle
nodes show up live. Each run adds job-scoped collectors chosen by its
``collect`` list:

``process``  the job's process tree (``proc``), followed at every sample;
``perf``     ``perf stat`` on the job's tree and on the whole system (``perf``);
``app``      a UDP endpoint for the program's own numbers (``PTAP_METRICS``);
``system``   always on at the agent level, accepted for clarity.

``PTAP mark ...`` lines on a job's stdout become ``mark`` points whatever the
list says: they cost nothing until a program prints one.

Every tick ships one batch with everything collected since the last, so a
batch is the unit of delivery (see :mod:`agent.shipper`). psutil reads
``/proc`` and blocks, so those collectors run in the default executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.asyncio

from agent.collectors.app import AppMetricsEndpoint
from agent.collectors.perf import PerfCollector
from agent.collectors.proctree import ProcessTreeCollector
from agent.collectors.selfcost import SelfCostCollector
from agent.collectors.system import SystemCollector
from agent.link import Link
from agent.runner import Runner
from agent.shipper import Shipper, Spool
from bus.messages import MetricAck, Welcome
from bus.metrics import Series
from bus.sockets import CurveKeys, SocketTuning, make_socket
from config.schema import AgentConfig

log = logging.getLogger(__name__)

KNOWN_COLLECTORS = frozenset({"system", "process", "perf", "app"})
MIN_INTERVAL = 0.1


@dataclass
class _RunCollectors:
    """Job-scoped collectors of one run."""

    job_id: str
    interval: float
    collect: frozenset[str]
    app: AppMetricsEndpoint
    tree: ProcessTreeCollector | None = None
    perf: list[PerfCollector] = field(default_factory=list)
    perf_started: asyncio.Future[list[None]] | None = None
    next_due: float = 0.0
    ended: bool = False


class Sampler:
    """Owns the PUSH socket, the shipper and every collector of this agent."""

    def __init__(self, cfg: AgentConfig, node: str, ctx: zmq.asyncio.Context,
                 pull_address: str, curve: CurveKeys | None = None) -> None:
        self.cfg = cfg
        self.node = node
        self.interval = cfg.collectors.interval
        self.push = make_socket(ctx, zmq.PUSH, SocketTuning(sndhwm=1000), curve)
        self.push.connect(pull_address)
        spool_dir = Path(cfg.spool.dir) if cfg.spool.dir else None
        self.spool = Spool(cfg.spool.max_batches, spool_dir)
        self.shipper = Shipper(node, self.spool, self.push,
                               resend_after=max(5.0, 3 * self.interval))
        enabled = set(cfg.collectors.enabled)
        self.system = SystemCollector(node) if "system" in enabled else None
        self.selfcost = SelfCostCollector(node, self._stats)
        self.runs: dict[str, _RunCollectors] = {}
        self._pending: list[Series] = []
        self._wake = asyncio.Event()

    def attach(self, link: Link) -> None:
        """Subscribe to the link's hooks (acks, welcomes, runs, output lines)."""
        hooks = link.hooks
        hooks.welcome.append(self._on_welcome)
        hooks.metric_ack.append(self._on_ack)
        hooks.prepare_run.append(self._prepare_run)
        hooks.run_started.append(self._on_run_started)
        hooks.run_ended.append(self._on_run_ended)
        hooks.output_line.append(self._on_output_line)

    async def run(self) -> None:
        """Collect and ship until cancelled."""
        loop = asyncio.get_running_loop()
        next_system = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_system:
                next_system = now + self.interval
                await self._sample_system(loop)
            for run_id, rc in list(self.runs.items()):
                if rc.ended or now >= rc.next_due:
                    rc.next_due = now + rc.interval
                    await self._sample_run(loop, run_id, rc)
            self._flush()
            self.shipper.resend_due()
            due = min([next_system, *(rc.next_due for rc in self.runs.values())])
            self._wake.clear()
            # A timer, not synchronisation: sleep until the next sample is due,
            # or until a run starts or ends and wants its first or last sample.
            try:
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def close(self) -> None:
        """Stop every job collector, ship what is left, close the socket."""
        for run_id in list(self.runs):
            rc = self.runs.pop(run_id)
            await self._stop_run(rc)
            self._pending += rc.app.collect(time.time_ns())
        self._flush()
        self.push.close(linger=0)

    # --- hooks ---------------------------------------------------------------------

    def _on_welcome(self, msg: Welcome) -> None:
        sent = self.shipper.resend_all()
        if len(self.spool):
            log.info("node %s: %d unacked metric batches, %d sent again after welcome",
                     self.node, len(self.spool), sent)

    def _on_ack(self, msg: MetricAck) -> None:
        self.shipper.on_ack(msg.seqs)

    async def _prepare_run(self, runner: Runner) -> None:
        d = runner.dispatch
        unknown = set(d.collect) - KNOWN_COLLECTORS
        if unknown:
            log.warning("run %s on %s: unknown collectors %s ignored (known: %s)", d.run_id,
                        self.node, ", ".join(sorted(unknown)), ", ".join(sorted(KNOWN_COLLECTORS)))
        rc = _RunCollectors(job_id=d.job_id, interval=max(MIN_INTERVAL, d.interval),
                            collect=frozenset(d.collect),
                            app=AppMetricsEndpoint(self.node, d.job_id))
        if "app" in rc.collect:
            await rc.app.start()
            runner.extra_env.update(rc.app.env())
        self.runs[d.run_id] = rc

    def _on_run_started(self, runner: Runner) -> None:
        rc = self.runs.get(runner.run_id)
        if rc is None or runner.pid is None:
            return
        if rc.collect & {"process", "perf"}:
            rc.tree = ProcessTreeCollector(self.node, rc.job_id, runner.pid)
        if "perf" in rc.collect:
            events = self.cfg.collectors.perf_events
            ms = int(rc.interval * 1000)
            rc.perf = [PerfCollector(self.node, rc.job_id, [runner.pid], events, ms),
                       PerfCollector(self.node, None, None, events, ms)]
            # This hook is synchronous; the task is awaited before perf stops.
            rc.perf_started = asyncio.gather(*(perf.start() for perf in rc.perf))
        rc.next_due = 0.0
        self._wake.set()

    def _on_run_ended(self, runner: Runner) -> None:
        rc = self.runs.get(runner.run_id)
        if rc is not None:
            rc.ended = True
            self._wake.set()

    def _on_output_line(self, runner: Runner, stream: str, line: str) -> None:
        rc = self.runs.get(runner.run_id)
        if rc is not None and stream == "stdout":
            rc.app.feed_stdout_line(line, time.time_ns())

    # --- sampling ------------------------------------------------------------------

    async def _sample_system(self, loop: asyncio.AbstractEventLoop) -> None:
        now_ns = time.time_ns()
        if self.system is not None:
            self._pending += await loop.run_in_executor(None, self.system.collect, now_ns)
        self._pending += self.selfcost.collect(now_ns)

    async def _sample_run(self, loop: asyncio.AbstractEventLoop, run_id: str,
                          rc: _RunCollectors) -> None:
        now_ns = time.time_ns()
        if rc.tree is not None and not rc.ended:
            rows = await loop.run_in_executor(None, rc.tree.collect, now_ns)
            if "process" in rc.collect:
                self._pending += rows
            if rc.perf:
                await rc.perf[0].set_pids(rc.tree.pids)
        if rc.ended:
            self.runs.pop(run_id, None)
            await self._stop_run(rc)
        for perf in rc.perf:
            self._pending += perf.collect(now_ns)
        self._pending += rc.app.collect(now_ns)

    async def _stop_run(self, rc: _RunCollectors) -> None:
        if rc.perf_started is not None:
            await rc.perf_started
        for perf in rc.perf:
            await perf.stop()
        await rc.app.stop()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.shipper.ship(pending)

    def _stats(self) -> dict[str, int]:
        return {"samples_dropped": self.spool.points_dropped, "spool_depth": len(self.spool)}
