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
from typing import Any, cast

import zmq
import zmq.asyncio

from agent.grid import Alarm, next_beat
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

#: A beat due this close is sent now (timers fire a little early or late).
_SLACK = 0.002
# Plain ints: zmq.POLLIN is an enum.Flag, and `int & Flag` goes through Python code.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def _has_input(sock: zmq.Socket[bytes]) -> bool:
    """A whole message waits on ``sock`` (reading EVENTS also takes the descriptor's signal)."""
    return bool(cast(int, sock.getsockopt(_EVENTS)) & _POLLIN)


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
        self._sock: zmq.Socket[bytes] | None = None  # the session's DEALER, used synchronously
        self._alarm = Alarm()  # the session task's sleep between beats
        self._ended: float | BaseException | None = None  # how a handler ended the session
        self._last_heard = 0.0  # loop time of the manager's last frame
        self._reading = False  # inside _on_readable
        self._beats: dict[int, list[bytes]] = {}  # heartbeat frames by running count
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
        self._sock = zmq.Socket.shadow(sock.underlying)
        self.sessions += 1
        try:
            return await self._converse(self._sock)
        finally:
            self._sock = None
            self.registered.clear()
            sock.close(linger=0)

    async def _converse(self, sock: zmq.Socket[bytes]) -> float:
        """Beat, and watch the manager's silence, until the session is given up.

        Messages are handled by :meth:`_on_readable`, the loop's callback for the
        socket's file descriptor, not by this task: at a few messages a second,
        waking a task (or awaiting ``zmq.asyncio`` futures) for each was most of
        what the link cost. This task wakes once per beat, and when a handler
        ends the session or a welcome changes the interval.
        """
        loop = asyncio.get_running_loop()
        self._ended = None
        self._last_heard = loop.time()
        fd = sock.FD
        loop.add_reader(fd, self._on_readable)
        try:
            self._send_register()
            self._on_readable()  # our own sends may take the descriptor's signal (also below)
            # Beats go on the agent's grid, where the sampler's ticks are: one wake-up for both.
            beat_at = next_beat(self._interval, self._last_heard)
            while True:
                ended = self._ended
                if isinstance(ended, BaseException):
                    raise ended
                if ended is not None:
                    return ended
                now = loop.time()
                # A welcome may shorten the interval: beat on the new one at once, or the
                # manager (liveness × its interval) would call this node lost meanwhile.
                beat_at = min(beat_at, now + self._interval)
                if now - self._last_heard > self._interval * self._liveness:
                    log.warning("node %s: manager %s silent for %.1f s; reconnecting",
                                self.node, self.address, now - self._last_heard)
                    return self._next_backoff()
                if now >= beat_at - _SLACK:
                    beat_at = next_beat(self._interval, now)
                    self._tick()
                    self._on_readable()
                    continue
                await self._alarm.sleep_until(loop, beat_at)
        finally:
            loop.remove_reader(fd)

    def _on_readable(self) -> None:
        """Handle every message waiting on the session's socket.

        The descriptor only says "look at ``EVENTS``", and any send or ``EVENTS``
        read may take its signal, so the socket is read until ``EVENTS`` shows no
        input. A handler's outcome ends the session; the rest stays unread.
        """
        sock = self._sock
        if sock is None or self._reading or self._ended is not None:
            return  # inside a handler the loop below looks again anyway
        self._reading = True
        try:
            while _has_input(sock):
                frames = sock.recv_multipart(zmq.NOBLOCK)
                self._last_heard = asyncio.get_running_loop().time()  # any frame will do
                outcome = self._handle(frames)
                if outcome is not None:
                    self._end(outcome)
                    return
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:  # the socket itself failed: the session task raises it
            self._end(exc)
        finally:
            self._reading = False

    def _end(self, how: float | BaseException) -> None:
        self._ended = how
        self._alarm.poke()

    def _tick(self) -> None:
        """Every heartbeat interval: heartbeat, and resend final updates not yet acked."""
        if not self.registered.is_set():
            return  # a heartbeat before the welcome would only earn not-registered
        running = sum(1 for r in self.runs.values() if r.state is RunState.RUNNING)
        beat = self._beats.get(running)
        if beat is None:  # the same few bytes every second: encoded once
            beat = self._beats[running] = codec.encode(Heartbeat(running=running))
        self._send_frames(beat, MsgType.HEARTBEAT)
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
        self._send_frames(codec.encode(msg), msg.TYPE)

    def _send_frames(self, frames: list[bytes], what: MsgType) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # a full queue (no manager): the next beat tells
            self._bad.warning("node %s: could not queue %s for the manager: %s", self.node,
                              what, exc)
        # A send from elsewhere (a run changing state) may have taken the descriptor's
        # signal for a message that arrived meanwhile: read it on the loop's next turn.
        if not self._reading and self._alarm.sleeping and _has_input(sock):
            asyncio.get_running_loop().call_soon(self._on_readable)

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
        self._alarm.poke()  # the session task re-plans its beats on the new interval
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
