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

The link is split so that each part reads on its own: :class:`Link`, here, is
what is said (registration, the welcome, errors, the handler table);
:mod:`agent.dealer_loop` is how (the socket, its descriptor, beats, silence,
back-off); :mod:`agent.held_runs` holds the runs, which outlive sessions; and
:mod:`agent.link_hooks` is the seam for collectors and the shipper.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from agent.dealer_loop import DealerLoop, Outcome
from agent.held_runs import HeldRuns
from agent.link_hooks import LinkHooks, call_hooks
from agent.run_journal import RunJournal
from agent.runner import Runner, RunnerOptions
from bus import codec
from bus.errors import ErrorCode, ProtocolError
from bus.messages import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    MetricAck,
    MsgType,
    NodeFacts,
    Register,
    Welcome,
    welcome_problem,
)
from bus.ratelimit import RateLimitedLog
from bus.sockets import CurveKeys, SocketTuning

__all__ = ["Link", "LinkHooks", "LinkTiming", "Outcome"]

log = logging.getLogger(__name__)


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


class Link(DealerLoop):
    """Keeps this node registered with the manager and runs what it dispatches.

    ``await run()`` until cancelled, then ``await aclose()`` to end the runs.
    :attr:`registered` is set while a welcome holds; :attr:`sessions` counts DEALER
    sockets opened so far; :attr:`runs` are the runs held until the manager acks them.
    :attr:`beat_stats`, when set, gives each heartbeat its ``spool_depth``,
    ``samples_dropped`` and ``app_dropped`` (the metrics side's counts).
    ``journal`` keeps finished runs on disk until acked (:mod:`agent.run_journal`).
    """

    def __init__(self, address: str, node: str, facts: NodeFacts, *,
                 ctx: zmq.asyncio.Context, runner_options: RunnerOptions,
                 timing: LinkTiming = LinkTiming(), hooks: LinkHooks | None = None,
                 tuning: SocketTuning = SocketTuning(), curve: CurveKeys | None = None,
                 journal: RunJournal | None = None) -> None:
        # Bad frames, failed sends and hooks: at most one line per kind every 5 s.
        trouble = RateLimitedLog(log, period=5.0)
        super().__init__(address, node, ctx=ctx, tuning=tuning, curve=curve,
                         interval=timing.interval, liveness=timing.liveness,
                         backoff_min=timing.backoff_min, backoff_max=timing.backoff_max,
                         trouble=trouble)
        self.facts = facts
        self.hooks = hooks or LinkHooks()
        self.registered = asyncio.Event()
        self._timing = timing
        self._held = HeldRuns(node, runner_options, self.hooks, self._send, trouble, journal)
        self.beat_stats: Callable[[], Mapping[str, int]] | None = None
        self._version_logged = False
        self._refusals = RateLimitedLog(log, timing.refusal_log_period)
        self._handlers: dict[MsgType, Callable[[Any], Outcome]] = {
            MsgType.WELCOME: self._on_welcome,
            MsgType.HEARTBEAT: self._on_heartbeat,
            MsgType.RUN_DISPATCH: self._held.on_dispatch,
            MsgType.RUN_CANCEL: self._held.on_cancel,
            MsgType.RUN_ACK: self._held.on_ack,
            MsgType.METRICS_ACK: self._on_metric_ack,
            MsgType.ERROR: self._on_error,
        }

    @property
    def runs(self) -> dict[str, Runner]:
        """The runs this agent holds, by run id, until the manager acks their final state."""
        return self._held.runs

    async def aclose(self) -> None:
        """Cancel every unfinished run and wait for their process groups to end."""
        await self._held.aclose()

    # --- the session, as DealerLoop asks ----------------------------------------------

    def _on_connect(self) -> None:
        self._send_register()

    def _on_disconnect(self) -> None:
        self.registered.clear()

    def _tick(self) -> None:
        """Every heartbeat interval: heartbeat, and resend final updates not yet acked."""
        if not self.registered.is_set():
            return  # a heartbeat before the welcome would only earn not-registered
        self._send(self._heartbeat())
        self._held.resend_finals()

    def _heartbeat(self) -> Heartbeat:
        """This beat: runs held, the clock stamp (the manager's offset reading) and,
        when the metrics side says, its spool depth and dropped samples."""
        stats: Mapping[str, int] = {}
        if self.beat_stats is not None:
            try:
                stats = self.beat_stats()
            except Exception:  # the metrics side's bug must not stop the heartbeats
                self._trouble.warn("beat-stats", f"node {self.node}: beat stats failed",
                                   exc_info=True)
        return Heartbeat(running=self._held.running(), sent_at=time.time(),
                         spool_depth=_count(stats.get("spool_depth")),
                         samples_dropped=_count(stats.get("samples_dropped")),
                         app_dropped=_count(stats.get("app_dropped")))

    def _handle(self, frames: list[bytes]) -> Outcome:
        try:
            msg = codec.decode(frames)
        except ProtocolError as exc:
            self._trouble.warn("bad-frame",
                               f"node {self.node}: ignoring bad frame from manager: {exc}")
            return None
        handler = self._handlers.get(msg.TYPE)
        if handler is None:
            self._trouble.warn("unexpected-message", f"node {self.node}: ignoring {msg.TYPE}, "
                               "which managers do not send")
            return None
        try:
            return handler(msg)
        except Exception:  # a bug in one handler must not end the agent's session loop
            self._trouble.warn("handler-failed", f"node {self.node}: handling {msg.TYPE} failed",
                               exc_info=True)
            return None

    def _send_register(self) -> None:
        runs = self._held.reports()
        log.log(logging.DEBUG if self._quiet_retries else logging.INFO,
                "node %s: registering with %s (%d run(s) held)", self.node, self.address,
                len(runs))
        self._send(Register(protocol=PROTOCOL_VERSION, node=self.node, facts=self.facts,
                            runs=runs, sent_at=time.time()))

    # --- one handler per message type (the run messages are HeldRuns') ----------------

    def _on_welcome(self, msg: Welcome) -> Outcome:
        """agent.welcome: registered; adopt the manager's heartbeat interval and liveness.
        ``last_seq`` is for the metrics shipper (``hooks.welcome``)."""
        if problem := welcome_problem(msg):
            # Adopting it would break the beat grid (NaN, inf) or the silence check
            # (1e-9 s): keep the interval we have, and say so once a period.
            self._trouble.warn("bad-welcome", f"node {self.node}: ignoring the heartbeat "
                               f"settings of a welcome from {self.address}: {problem}")
            interval, liveness = self._interval, self._liveness
        else:
            interval, liveness = msg.heartbeat_interval, msg.liveness
        self._reset_backoff()
        self._version_logged = False
        self._quiet_retries = False
        self.registered.set()
        self._set_beat(interval, liveness)
        log.info("node %s: registered with %s (heartbeat %g s, liveness %d, last_seq %d)",
                 self.node, self.address, self._interval, self._liveness, msg.last_seq)
        call_hooks(self.hooks.welcome, msg, node=self.node, trouble=self._trouble)
        return None

    def _on_heartbeat(self, msg: Heartbeat) -> Outcome:
        """heartbeat: proof of life only; the session loop has already noted the time."""
        return None

    def _on_metric_ack(self, msg: MetricAck) -> Outcome:
        """metrics.ack: stored metric batches; handed to the shipper (``hooks.metric_ack``)."""
        call_hooks(self.hooks.metric_ack, msg, node=self.node, trouble=self._trouble)
        return None

    def _on_error(self, msg: Error) -> Outcome:
        """error: ``not-registered`` → register now; ``name-taken`` and ``pending`` →
        back off and retry; ``version``, ``key-mismatch``, ``not-authorized`` → a log
        line, slow retry; other codes are logged."""
        if msg.code == ErrorCode.NOT_REGISTERED:
            log.info("node %s: manager does not know this connection; registering again",
                     self.node)
            self.registered.clear()
            self._send_register()
            return None
        if msg.code == ErrorCode.NAME_TAKEN:
            delay = self._next_backoff()
            self._trouble.warn("name-taken", f"node {self.node}: name taken by another live "
                               f"agent: {msg.message}; retrying in {delay:.2f} s")
            return delay
        if msg.code == ErrorCode.PENDING:
            self._quiet_retries = True  # the key waits for acceptance: retries are not news
            delay = self._next_backoff()
            self._refusals.warn("pending", f"node {self.node}: {msg.message}; "
                                "asking again every few seconds")
            return delay
        if msg.code in (ErrorCode.KEY_MISMATCH, ErrorCode.NOT_AUTHORIZED):
            # Rate-limited per reason: "rejected" turned "revoked" is news to log.
            self._refusals.warn("refused", f"node {self.node}: manager refused this agent's key "
                                f"({msg.code}): {msg.message}; retrying every "
                                f"{self._timing.version_retry:g} s", reason=msg.message)
            return self._timing.version_retry
        if msg.code == ErrorCode.VERSION:
            level = logging.DEBUG if self._version_logged else logging.ERROR
            self._version_logged = True
            log.log(level, "node %s: manager refused protocol %d: %s; retrying every %g s",
                    self.node, PROTOCOL_VERSION, msg.message, self._timing.version_retry)
            return self._timing.version_retry
        self._trouble.warn("manager-error",
                           f"node {self.node}: manager error {msg.code}: {msg.message}")
        return None


def _count(value: object) -> int | None:
    """A count for the wire, or None: the manager's schema refuses a whole heartbeat
    whose field is not an integer."""
    return value if type(value) is int else None
