"""The agent's DEALER session with the manager (docs/protocol.md, "Agent session" and "Runs").

One session is one DEALER socket::

    connect ─► agent.register ─► agent.welcome ─► heartbeats both ways, runs, acks …
       ▲                             │
       └── back-off (0.1 s → 5 s) ◄──┴── manager silent for ``liveness`` intervals,
                                         or error ``name-taken`` / ``pending`` / ``version``

``error not-registered`` (the manager restarted and does not know this routing
id) re-registers at once on the same socket. ``error pending`` (a CURVE
manager has not accepted this agent's key yet) is retried with the back-off
until someone runs ``ptap keys accept``, so acceptance needs no restart. Runs
outlive sessions: they keep running while the agent reconnects, and
``agent.register`` reports them.

Every message from the manager is handled by one small method, registered by
type in :attr:`Link._handlers`; a bad frame is logged (rate-limited) and ignored,
and nothing a manager sends ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from agent.runner import Runner, RunnerOptions
from bus import codec
from bus.errors import ProtocolError
from bus.messages import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Message,
    MetricAck,
    MsgType,
    NodeFacts,
    Register,
    RunAck,
    RunCancel,
    RunDispatch,
    RunState,
    RunUpdate,
    Welcome,
)
from bus.sockets import CurveKeys, SocketTuning, make_socket

log = logging.getLogger(__name__)

#: What a handler returns: ``None`` to go on, or seconds to wait before a new session.
Outcome = float | None


@dataclass
class LinkHooks:
    """Callbacks for what runs beside the link: the seam for collectors and the shipper.

    All are plain functions called on the event loop; an exception in one is
    logged and does not disturb the link. ``prepare_run`` hooks are awaited before
    a run's command starts and may set ``runner.extra_env``. ``output_line`` gets
    ``(runner, stream, line)`` for every line a run prints.
    """

    welcome: list[Callable[[Welcome], None]] = field(default_factory=list)
    metric_ack: list[Callable[[MetricAck], None]] = field(default_factory=list)
    prepare_run: list[Callable[[Runner], Awaitable[None]]] = field(default_factory=list)
    run_started: list[Callable[[Runner], None]] = field(default_factory=list)
    run_ended: list[Callable[[Runner], None]] = field(default_factory=list)
    output_line: list[Callable[[Runner, str, str], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LinkTiming:
    """Heartbeat settings until the welcome, and the reconnect back-off.

    ``version_retry`` is the slow retry after a protocol-version rejection
    (or a key the manager refuses): that needs an operator, not a quick retry.
    A waiting key (``pending``) is logged at most once per ``refusal_log_period``.
    """

    interval: float = 1.0
    liveness: int = 3
    backoff_min: float = 0.1
    backoff_max: float = 5.0
    version_retry: float = 30.0
    refusal_log_period: float = 60.0


class RateLimitedLog:
    """At most one warning per ``period`` seconds; says how many it held back."""

    def __init__(self, logger: logging.Logger, period: float = 5.0) -> None:
        self._log = logger
        self._period = period
        self._last = -period
        self._held = 0

    def warning(self, fmt: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last < self._period:
            self._held += 1
            return
        if self._held:
            fmt, args = f"{fmt} (%d similar held back)", (*args, self._held)
        self._last, self._held = now, 0
        self._log.warning(fmt, *args, exc_info=exc_info)


class Link:
    """Keeps this node registered with the manager and runs what it dispatches.

    ``await run()`` until cancelled, then ``await aclose()`` to end the runs.
    :attr:`registered` is set while a welcome holds; :attr:`sessions` counts DEALER
    sockets opened so far.
    """

    def __init__(self, address: str, node: str, facts: NodeFacts, *,
                 ctx: zmq.asyncio.Context, runner_options: RunnerOptions,
                 timing: LinkTiming = LinkTiming(), hooks: LinkHooks | None = None,
                 tuning: SocketTuning = SocketTuning(), curve: CurveKeys | None = None) -> None:
        self.address = address
        self.node = node
        self.facts = facts
        self.hooks = hooks or LinkHooks()
        self.registered = asyncio.Event()
        self.sessions = 0
        self.runs: dict[str, Runner] = {}
        self._ctx = ctx
        self._runner_options = runner_options
        self._timing = timing
        self._tuning = tuning
        self._curve = curve
        self._interval = timing.interval
        self._liveness = timing.liveness
        self._backoff = timing.backoff_min
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._version_logged = False
        # While the key waits for acceptance, the retries are not logged one by one.
        self._key_pending = False
        self._bad = RateLimitedLog(log)
        self._pending_log = RateLimitedLog(log, timing.refusal_log_period)
        self._refused_log = RateLimitedLog(log, timing.refusal_log_period)
        self._handlers: dict[MsgType, Callable[[Any], Outcome]] = {
            MsgType.WELCOME: self._on_welcome,
            MsgType.HEARTBEAT: self._on_heartbeat,
            MsgType.RUN_DISPATCH: self._on_dispatch,
            MsgType.RUN_CANCEL: self._on_cancel,
            MsgType.RUN_ACK: self._on_run_ack,
            MsgType.METRICS_ACK: self._on_metric_ack,
            MsgType.ERROR: self._on_error,
        }

    # --- session loop -----------------------------------------------------------

    async def run(self) -> None:
        """Hold a session with the manager, reconnecting for ever; returns only if cancelled."""
        while True:
            delay = await self._session()
            log.log(logging.DEBUG if self._key_pending else logging.INFO,
                    "node %s: new connection to %s in %.2f s", self.node, self.address, delay)
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Cancel every unfinished run and wait for their process groups to end."""
        for runner in self.runs.values():
            runner.cancel("agent stopping")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in list(self.runs.values()):
            if runner.state is not RunState.DISPATCHED:
                await runner.wait()

    async def _session(self) -> float:
        """One DEALER from connect to the moment it is given up; returns the back-off."""
        sock = make_socket(self._ctx, zmq.DEALER, self._tuning, self._curve)
        sock.connect(self.address)
        self._sock = sock
        self.sessions += 1
        try:
            return await self._converse(sock)
        finally:
            self._sock = None
            self.registered.clear()
            sock.close(linger=0)

    async def _converse(self, sock: zmq.asyncio.Socket) -> float:
        self._send_register()
        last_heard = time.monotonic()
        next_beat = last_heard + self._interval
        while True:
            timeout_ms = max(0, int((next_beat - time.monotonic()) * 1000))
            if await sock.poll(timeout_ms):  # POLLIN
                frames = await sock.recv_multipart()
                last_heard = time.monotonic()  # any frame proves the manager is there
                outcome = self._handle(frames)
                if outcome is not None:
                    return outcome
            now = time.monotonic()
            # A welcome may shorten the interval: beat on the new one at once, or the
            # manager (liveness × its interval) would call this node lost meanwhile.
            next_beat = min(next_beat, now + self._interval)
            if now - last_heard > self._interval * self._liveness:
                log.warning("node %s: manager %s silent for %.1f s; reconnecting", self.node,
                            self.address, now - last_heard)
                return self._next_backoff()
            if now >= next_beat:
                next_beat = now + self._interval
                self._tick()

    def _tick(self) -> None:
        """Every heartbeat interval: heartbeat, and resend final updates not yet acked."""
        if not self.registered.is_set():
            return  # a heartbeat before the welcome would only earn not-registered
        running = sum(1 for r in self.runs.values() if r.state is RunState.RUNNING)
        self._send(Heartbeat(running=running))
        for runner in self.runs.values():
            if runner.is_final:
                self._send(RunUpdate(run=runner.report()))

    def _handle(self, frames: list[bytes]) -> Outcome:
        try:
            msg = codec.decode(frames)
        except ProtocolError as exc:
            self._bad.warning("node %s: ignoring bad frame from manager: %s", self.node, exc)
            return None
        handler = self._handlers.get(msg.TYPE)
        if handler is None:
            self._bad.warning("node %s: ignoring %s, which managers do not send", self.node,
                              msg.TYPE)
            return None
        try:
            return handler(msg)
        except Exception:  # a bug in one handler must not end the agent's session loop
            self._bad.warning("node %s: handling %s failed", self.node, msg.TYPE, exc_info=True)
            return None

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self._timing.backoff_max)
        return delay

    # --- sending ----------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        """Queue ``msg`` without waiting. Nothing sent here needs a blocking send: finals
        are resent until acked and registration reports every run again."""
        sock = self._sock
        if sock is None:
            return
        # With NOBLOCK the future is already done; a full queue (no manager) fails it.
        sent = asyncio.ensure_future(sock.send_multipart(codec.encode(msg), flags=zmq.NOBLOCK))
        sent.add_done_callback(lambda fut: self._sent(fut, msg))

    def _sent(self, fut: asyncio.Future[Any], msg: Message) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self._bad.warning("node %s: could not queue %s for the manager: %s", self.node,
                              msg.TYPE, fut.exception())

    def _send_register(self) -> None:
        runs = [runner.report() for runner in self.runs.values()]
        log.log(logging.DEBUG if self._key_pending else logging.INFO,
                "node %s: registering with %s (%d run(s) held)", self.node, self.address,
                len(runs))
        self._send(Register(protocol=PROTOCOL_VERSION, node=self.node, facts=self.facts,
                            runs=runs))

    # --- one handler per message type ----------------------------------------------

    def _on_welcome(self, msg: Welcome) -> Outcome:
        """agent.welcome: registered; adopt the manager's heartbeat interval and liveness.
        ``last_seq`` is for the metrics shipper (``hooks.welcome``)."""
        self._interval = msg.heartbeat_interval if msg.heartbeat_interval > 0 else self._interval
        self._liveness = max(1, msg.liveness)
        self._backoff = self._timing.backoff_min
        self._version_logged = False
        self._key_pending = False
        self.registered.set()
        log.info("node %s: registered with %s (heartbeat %g s, liveness %d, last_seq %d)",
                 self.node, self.address, self._interval, self._liveness, msg.last_seq)
        self._call_hooks(self.hooks.welcome, msg)
        return None

    def _on_heartbeat(self, msg: Heartbeat) -> Outcome:
        """heartbeat: proof of life only; the session loop has already noted the time."""
        return None

    def _on_dispatch(self, msg: RunDispatch) -> Outcome:
        """run.dispatch: start a Runner; for a run already held, resend its current update."""
        known = self.runs.get(msg.run_id)
        if known is not None:
            log.info("node %s: run %s dispatched again; resending its state %s", self.node,
                     msg.run_id, known.state)
            self._send(RunUpdate(run=known.report()))
            return None
        def on_line(stream: str, line: str) -> None:
            self._call_hooks(self.hooks.output_line, runner, stream, line)

        runner = Runner(msg, self.node, self._runner_options, on_change=self._on_run_change,
                        on_line=on_line)
        self.runs[msg.run_id] = runner
        task = asyncio.get_running_loop().create_task(self._start_run(runner),
                                                      name=f"start {msg.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._start_done)
        return None

    async def _start_run(self, runner: Runner) -> None:
        """Let the metrics side prepare (an app endpoint must exist before the
        command starts, to be in its environment), then start the command."""
        for prepare in self.hooks.prepare_run:
            try:
                await prepare(runner)
            except Exception:
                log.exception("node %s: preparing run %s failed; starting it anyway",
                              self.node, runner.run_id)
        await runner.start()

    def _start_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node %s: starting a run failed: %r", self.node, task.exception())

    def _on_cancel(self, msg: RunCancel) -> Outcome:
        """run.cancel: end the run's process group; a finished run's update is resent."""
        runner = self.runs.get(msg.run_id)
        if runner is None:
            log.info("node %s: cancel for run %s, which this agent does not hold", self.node,
                     msg.run_id)
        elif runner.is_final:
            self._send(RunUpdate(run=runner.report()))
        else:
            runner.cancel(msg.reason or "cancelled by manager")
        return None

    def _on_run_ack(self, msg: RunAck) -> Outcome:
        """run.ack: the manager stored the final state; stop resending and forget the run."""
        runner = self.runs.get(msg.run_id)
        if runner is not None and runner.is_final:
            del self.runs[msg.run_id]
            log.debug("node %s: run %s acked", self.node, msg.run_id)
        return None

    def _on_metric_ack(self, msg: MetricAck) -> Outcome:
        """metrics.ack: stored metric batches; handed to the shipper (``hooks.metric_ack``)."""
        self._call_hooks(self.hooks.metric_ack, msg)
        return None

    def _on_error(self, msg: Error) -> Outcome:
        """error: ``not-registered`` → register now; ``name-taken`` and ``pending`` →
        back off and retry; ``version``, ``key-mismatch``, ``not-authorized`` → a log
        line, slow retry; other codes are logged."""
        if msg.code == "not-registered":
            log.info("node %s: manager does not know this connection; registering again",
                     self.node)
            self.registered.clear()
            self._send_register()
            return None
        if msg.code == "name-taken":
            delay = self._next_backoff()
            log.warning("node %s: name taken by another live agent: %s; retrying in %.2f s",
                        self.node, msg.message, delay)
            return delay
        if msg.code == "pending":
            self._key_pending = True
            delay = self._next_backoff()
            self._pending_log.warning("node %s: %s; asking again every few seconds",
                                      self.node, msg.message)
            return delay
        if msg.code in ("key-mismatch", "not-authorized"):
            self._refused_log.warning("node %s: manager refused this agent's key (%s): %s; "
                                      "retrying every %g s", self.node, msg.code, msg.message,
                                      self._timing.version_retry)
            return self._timing.version_retry
        if msg.code == "version":
            level = logging.DEBUG if self._version_logged else logging.ERROR
            self._version_logged = True
            log.log(level, "node %s: manager refused protocol %d: %s; retrying every %g s",
                    self.node, PROTOCOL_VERSION, msg.message, self._timing.version_retry)
            return self._timing.version_retry
        self._bad.warning("node %s: manager error %s: %s", self.node, msg.code, msg.message)
        return None

    # --- runs -------------------------------------------------------------------------

    def _on_run_change(self, runner: Runner) -> None:
        """Every state change goes to the manager at once, and to the hooks."""
        self._send(RunUpdate(run=runner.report()))
        if runner.state is RunState.RUNNING:
            self._call_hooks(self.hooks.run_started, runner)
        elif runner.is_final:
            self._call_hooks(self.hooks.run_ended, runner)

    def _call_hooks(self, hooks: list[Callable[..., None]], *args: Any) -> None:
        for hook in hooks:
            try:
                hook(*args)
            except Exception:
                self._bad.warning("node %s: hook %r failed", self.node, hook, exc_info=True)
