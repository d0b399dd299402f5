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
batch is the unit of delivery (see :mod:`agent.shipper`).

At 1 Hz most of what a tick costs is fixed: every wake-up of a thread costs
~0.3 ms of CPU on a busy 2-vCPU VM, about what reading the system and a
20-process tree costs. So ticks are shared and hand-offs avoided:

* The system samples on the agent's grid (:mod:`agent.grid`): multiples of
  ``collectors.interval`` on the loop's clock, where the link's heartbeats fall
  too. A run whose interval is a multiple or a whole fraction of it samples
  on the same grid. What is due together is read together and shipped as one
  batch (so one ack). A run on an unrelated interval keeps its own grid.
* The ``/proc`` readers (system, process trees) do not wait on I/O; they only
  take CPU. While a tick's reads cost less than ``inline_budget`` they run on
  the loop. Above it (a tree of several hundred processes) they move to the
  default executor, in one call per tick, so the loop stays responsive.
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
from agent.collectors.app_sockets import read_udp_drops
from agent.collectors.perf import PerfCollector
from agent.collectors.proctree import ProcessTreeCollector
from agent.collectors.selfcost import SelfCostCollector
from agent.collectors.system import SystemCollector
from agent.grid import Alarm, next_beat, next_tick
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
#: Samples due this close together are taken together (timers fire a little early or late).
SLACK = 0.002
#: CPU seconds of /proc reads per tick that may run on the loop instead of in a thread:
#: a tree of several hundred processes. A 10 ms stall once a tick delays nothing the
#: loop serves (heartbeats are seconds apart; pipes and sockets buffer).
INLINE_BUDGET = 0.010


def commensurate(a: float, b: float) -> bool:
    """True if one interval is a whole multiple of the other (1 s and 0.2 s, 1 s and 2 s)."""
    ratio = max(a, b) / min(a, b)
    return abs(ratio - round(ratio)) < 1e-6 * ratio


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
    next_due: float = 0.0  # loop time; 0.0 = at once
    origin: float | None = None  # of its own grid, when not on the system's
    ended: bool = False


class Sampler:
    """Owns the PUSH socket, the shipper and every collector of this agent."""

    def __init__(self, cfg: AgentConfig, node: str, ctx: zmq.asyncio.Context,
                 pull_address: str, curve: CurveKeys | None = None, *,
                 inline_budget: float = INLINE_BUDGET, spool_dir: Path | None = None) -> None:
        """``spool_dir``: where unacked batches are kept across restarts (see
        :mod:`agent.state_dir`); None keeps them in memory only."""
        self.cfg = cfg
        self.node = node
        self.interval = cfg.collectors.interval
        self.push = make_socket(ctx, zmq.PUSH, SocketTuning(sndhwm=1000), curve)
        self.push.connect(pull_address)
        self.spool = Spool(cfg.spool.max_batches, spool_dir, cfg.spool.max_bytes)
        self.shipper = Shipper(node, self.spool, self.push,
                               resend_after=max(5.0, 3 * self.interval))
        enabled = set(cfg.collectors.enabled)
        self.system = SystemCollector(node) if "system" in enabled else None
        self.selfcost = SelfCostCollector(node, self._stats)
        self.runs: dict[str, _RunCollectors] = {}
        # Datagrams the kernel dropped, and points the endpoints refused, on the app
        # endpoints of runs that are over (live ones are asked on every report).
        self._app_dropped_closed = 0
        self._app_refused_closed = 0
        self.ticks = 0  # times the loop sampled something (for tests and tuning)
        self.inline_budget = inline_budget
        self.inline = True  # where the next tick's /proc reads run
        self._pending: list[Series] = []
        self._alarm = Alarm()  # the loop's sleep; hooks poke it to sample a run at once

    def attach(self, link: Link) -> None:
        """Subscribe to the link's hooks (acks, welcomes, runs, output lines)."""
        hooks = link.hooks
        hooks.welcome.append(self._on_welcome)
        hooks.metric_ack.append(self._on_ack)
        hooks.prepare_run.append(self._prepare_run)
        hooks.run_started.append(self._on_run_started)
        hooks.run_ended.append(self._on_run_ended)
        hooks.output_line.append(self._on_output_line)
        link.beat_stats = self._stats  # spool depth and samples dropped, on every heartbeat

    async def run(self) -> None:
        """Collect and ship until cancelled."""
        loop = asyncio.get_running_loop()
        next_system = loop.time()  # the first sample at once, then on the grid
        while True:
            now = loop.time()
            system_due = now >= next_system - SLACK
            if system_due:
                next_system = next_beat(self.interval, now)
            due = [(run_id, rc) for run_id, rc in self.runs.items()
                   if rc.ended or now >= rc.next_due - SLACK]
            for _, rc in due:
                rc.next_due = self._next_run_tick(rc, now)
            if system_due or due:
                self.ticks += 1
                await self._sample(loop, system_due, due)
                self._flush()
            self.shipper.resend_due()
            wake_at = min([next_system, *(rc.next_due for rc in self.runs.values())])
            await self._alarm.sleep_until(loop, wake_at)

    def _next_run_tick(self, rc: _RunCollectors, now: float) -> float:
        """On the agent's grid when the intervals fit together, else on the run's own."""
        if commensurate(rc.interval, self.interval):
            return next_beat(rc.interval, now)
        if rc.origin is None:
            rc.origin = now
        # Half an interval ahead: a timer that fired early must not sample twice, and
        # a run's first sample (taken at once) is not followed by a tiny interval.
        return next_tick(rc.origin, rc.interval, now + rc.interval / 2)

    async def close(self) -> None:
        """Stop every job collector, ship what is left, close the socket and files."""
        for run_id in list(self.runs):
            rc = self.runs.pop(run_id)
            await self._stop_run(rc)
            self._pending += rc.app.collect(time.time_ns())
        self._flush()
        self.push.close(linger=0)
        if self.system is not None:
            self.system.close()
        self.selfcost.close()

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
                            app=AppMetricsEndpoint(self.node, d.job_id,
                                                   rcvbuf=self.cfg.collectors.app_rcvbuf))
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
        self._alarm.poke()

    def _on_run_ended(self, runner: Runner) -> None:
        """Before the final report is kept and sent: what the kernel dropped goes in it."""
        rc = self.runs.get(runner.run_id)
        if rc is not None:
            rc.ended = True
            if "app" in rc.collect:
                runner.app_dropped = rc.app.kernel_dropped()
                if runner.app_dropped:
                    log.warning("run %s on %s: the kernel dropped %d app metric datagram(s): "
                                "the agent did not read its UDP buffer in time", runner.run_id,
                                self.node, runner.app_dropped)
            self._alarm.poke()

    def _on_output_line(self, runner: Runner, stream: str, line: str) -> None:
        rc = self.runs.get(runner.run_id)
        if rc is not None and stream == "stdout":
            rc.app.feed_stdout_line(line, time.time_ns())

    # --- sampling ------------------------------------------------------------------

    async def _sample(self, loop: asyncio.AbstractEventLoop, system_due: bool,
                      due: list[tuple[str, _RunCollectors]]) -> None:
        """Sample the system (if due) and the due runs, for one batch."""
        now_ns = time.time_ns()
        system = self.system if system_due else None
        trees = [rc.tree if rc.tree is not None and not rc.ended else None for _, rc in due]
        if system is not None or any(trees):
            if self.inline:
                sys_rows, tree_rows, cost = _read_proc(system, trees, now_ns)
            else:
                sys_rows, tree_rows, cost = await loop.run_in_executor(
                    None, _read_proc, system, trees, now_ns)
            # Hysteresis, so a tree that costs about the budget does not flip every tick.
            self.inline = cost < self.inline_budget / (1 if self.inline else 2)
            self._pending += sys_rows
        else:
            tree_rows = [[] for _ in due]
        if system_due:
            self._pending += self.selfcost.collect(now_ns)
        for (run_id, rc), rows in zip(due, tree_rows, strict=True):
            await self._sample_run(run_id, rc, rows, now_ns)

    async def _sample_run(self, run_id: str, rc: _RunCollectors, rows: list[Series],
                          now_ns: int) -> None:
        """The rest of a run's sample, on the loop: perf's pids, perf, app, the end."""
        if "process" in rc.collect:
            self._pending += rows
        if rc.tree is not None and rc.perf and not rc.ended:
            await rc.perf[0].set_pids(rc.tree.pids)
        if rc.ended:
            self.runs.pop(run_id, None)
            await self._stop_run(rc)
        for perf in rc.perf:
            self._pending += perf.collect(now_ns)
        self._pending += rc.app.collect(now_ns)

    async def _stop_run(self, rc: _RunCollectors) -> None:
        if rc.tree is not None:
            rc.tree.close()  # the files it keeps open
        if rc.perf_started is not None:
            await rc.perf_started
        for perf in rc.perf:
            await perf.stop()
        await rc.app.stop()
        self._app_dropped_closed += rc.app.kernel_dropped() or 0
        self._app_refused_closed += rc.app.dropped

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.shipper.ship(pending)

    def _stats(self) -> dict[str, int]:
        # All are points collected and never sent: the spool's oldest, pushed out
        # while the manager was away, rows too large for any batch, and app points
        # refused while an endpoint held its maximum.
        live = [rc.app for rc in self.runs.values()]
        dropped = (self.spool.points_dropped + self.shipper.rows_too_large
                   + self._app_refused_closed + sum(app.dropped for app in live))
        app_dropped = self._app_dropped_closed + sum(
            n for n in read_udp_drops({app.sockets.inode for app in live
                                       if app.sockets.inode is not None}).values())
        return {"samples_dropped": dropped, "spool_depth": len(self.spool),
                "app_dropped": app_dropped}


def _read_proc(system: SystemCollector | None, trees: list[ProcessTreeCollector | None],
               now_ns: int) -> tuple[list[Series], list[list[Series]], float]:
    """The system's rows, each tree's (``[]`` for ``None``) and the CPU seconds they took."""
    t0 = time.thread_time()
    sys_rows = system.collect(now_ns) if system is not None else []
    tree_rows = [t.collect(now_ns) if t is not None else [] for t in trees]
    return sys_rows, tree_rows, time.thread_time() - t0
