"""One SUB socket on the manager's PUB, shared by every open page of the dashboard.

A browser tab never gets a ZeroMQ socket of its own: twenty tabs on the live
view cost the manager one subscriber, not twenty. The feed subscribes to
``m.<node>`` only while some document watches that node (ZeroMQ filters on
the publisher's side, so nodes nobody watches cost nothing to decode), and to
``evt.`` (node and job events, a few per second at most) all the time.

A batch is decoded and turned into chart updates once (:func:`dashboard.series.extract`,
thinned to :data:`MAX_ROWS_PER_BATCH` rows per source), then handed by
reference to every watcher of its node; a node sending more than
:data:`MAX_BATCHES_PER_S` batches a second has the excess skipped undecoded. Watchers are plain callables that
must not block; the live documents queue what they get and apply it in a
Bokeh next-tick callback (:mod:`dashboard.live`). An exception in a watcher
is logged and never stops the loop; nor does a bad frame.

With CURVE (``curve``, the dashboard's ``[security]`` keys) the socket is a
CURVE client of the manager's PUB. A socket monitor watches its handshakes: a
refused one (the manager uses CURVE and the dashboard does not, or refuses its
key) would otherwise look like a quiet cluster forever (libzmq does not retry
it), so it is logged once per change as one line saying what to fix
(:func:`dashboard.security.handshake_problem`), kept in :attr:`Feed.problem`
and counted. Should the monitor itself fail, that is one warning line and the
feed goes on without handshake diagnostics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from bus import codec, topics
from bus.errors import ProtocolError
from bus.messages import Event, MetricBatch
from bus.sockets import CurveKeys, SocketTuning, make_socket, receive
from dashboard.security import handshake_problem
from dashboard.series import Update, extract, thin

log = logging.getLogger(__name__)

#: Rows per source kept from one batch: more than a chart can draw in one
#: step; a node sampled faster than this is thinned evenly (InfluxDB keeps all).
MAX_ROWS_PER_BATCH = 25
#: Batches per second decoded per watched node. An agent sends one per sampling
#: tick (at most 10 a second), so only a node flooding the manager — a replay, a
#: benchmark — is cut down, before decoding; its charts then show part of its
#: batches (a refresh reads them all from InfluxDB).
MAX_BATCHES_PER_S = 20.0
#: Handshakes in a row that failed with no detail before that becomes the feed's
#: problem. Such a failure is a connection lost mid-handshake: when the manager
#: refuses the mechanism it may hang up before its own greeting is read (EPIPE),
#: and libzmq reconnects, where the next attempt usually says what is wrong.
NO_DETAIL_FAILURES_REPORTED = 3

#: Handshake outcomes the feed's socket monitor reports.
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

MetricWatcher = Callable[[list[Update]], None]
EventWatcher = Callable[[Event], None]


class Watch:
    """A registration with the feed; :meth:`close` ends it (idempotent)."""

    def __init__(self, close: Callable[[], None]) -> None:
        self._close: Callable[[], None] | None = close

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


class Feed:
    """The dashboard's single subscriber. ``await start()``, then ``watch_*``."""

    def __init__(self, address: str, ctx: zmq.asyncio.Context,
                 max_batches_per_s: float = MAX_BATCHES_PER_S,
                 curve: CurveKeys | None = None) -> None:
        self.address = address
        self.max_batches_per_s = max_batches_per_s
        self.curve = curve
        #: The last handshake's failure as one line; empty once a handshake succeeds.
        self.problem = ""
        self._ctx = ctx
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._monitor_sock: zmq.asyncio.Socket | None = None
        self._metrics: dict[str, list[MetricWatcher]] = {}
        self._events: list[EventWatcher] = []
        self.counters: Counter[str] = Counter()
        self._no_detail_in_a_row = 0
        self._last_warning = 0.0
        self._allowance: dict[str, tuple[float, float]] = {}  # node → (tokens, when)

    def start(self) -> None:
        self._sock = sock = make_socket(self._ctx, zmq.SUB, SocketTuning(), self.curve)
        try:
            sock.setsockopt(zmq.SUBSCRIBE, b"evt.")
            # Monitored before connect, so the first handshake is seen too.
            self._monitor_sock = monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
            sock.connect(self.address)
        except BaseException:  # e.g. a malformed address: leave no socket behind
            self._close_sockets()
            raise
        for node in self._metrics:
            sock.setsockopt(zmq.SUBSCRIBE, topics.metrics(node))
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="feed")
        self._monitor = loop.create_task(self._watch_handshakes(monitor), name="feed-monitor")

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._monitor) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._monitor = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(zmq.ZMQError):  # its monitor may never have started
                self._sock.disable_monitor()
            self._sock.close(linger=0)
            self._sock = None
        if self._monitor_sock is not None:
            self._monitor_sock.close(linger=0)
            self._monitor_sock = None

    # --- registrations ---------------------------------------------------------------

    def watch_metrics(self, nodes: tuple[str, ...] | list[str], fn: MetricWatcher) -> Watch:
        """Call ``fn(updates)`` for every batch from one of ``nodes``."""
        for node in nodes:
            watchers = self._metrics.setdefault(node, [])
            if not watchers and self._sock is not None:
                self._sock.setsockopt(zmq.SUBSCRIBE, topics.metrics(node))
            watchers.append(fn)

        def close() -> None:
            for node in nodes:
                watchers = self._metrics.get(node, [])
                if fn in watchers:
                    watchers.remove(fn)
                if not watchers:
                    self._metrics.pop(node, None)
                    if self._sock is not None:
                        self._sock.setsockopt(zmq.UNSUBSCRIBE, topics.metrics(node))

        return Watch(close)

    def watch_events(self, fn: EventWatcher) -> Watch:
        """Call ``fn(event)`` for every node and job event."""
        self._events.append(fn)
        return Watch(lambda: self._events.remove(fn) if fn in self._events else None)

    @property
    def watched_nodes(self) -> list[str]:
        return sorted(self._metrics)

    # --- handshakes ----------------------------------------------------------------------

    async def _watch_handshakes(self, monitor: zmq.asyncio.Socket) -> None:
        """Hand each handshake outcome to :meth:`_on_handshake`. If the monitor fails,
        say so once and stop watching: the feed itself does not depend on it."""
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                self._on_handshake(int(event["event"]), int(event["value"]))
        except Exception as exc:  # CancelledError (close()) is not an Exception
            text = (str(exc).splitlines() or [""])[0]
            reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            log.warning("feed: no more handshake diagnostics for the manager at %s: "
                        "the socket monitor failed (%s); events still flow",
                        self.address, reason)

    def _on_handshake(self, event: int, value: int) -> None:
        """Count each handshake; log a line only when the outcome changes. (libzmq
        4.3 gives up on a refused handshake, but one that timed out or lost its
        connection is retried, so those count only once they repeat.)"""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.counters["handshakes"] += 1
            self._no_detail_in_a_row = 0
            if self.problem:
                log.info("feed: handshake with the manager at %s succeeded", self.address)
            self.problem = ""
            return
        self.counters["handshake_failures"] += 1
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._no_detail_in_a_row += 1
            if self._no_detail_in_a_row < NO_DETAIL_FAILURES_REPORTED:
                log.debug("feed: handshake with the manager at %s lost (code %#x); "
                          "libzmq retries it", self.address, value)
                return
        else:
            self._no_detail_in_a_row = 0
        problem = handshake_problem(event, value, self.address, self.curve is not None)
        if problem != self.problem:
            log.warning("feed: %s", problem)
        self.problem = problem

    # --- the receive loop ---------------------------------------------------------------

    async def _run(self) -> None:
        assert self._sock is not None
        while True:
            frames = await receive(self._sock)
            try:
                self._dispatch(frames)
            except ProtocolError as exc:
                self._warn(f"ignoring bad PUB frame on {frames[0][:60]!r}: {exc}")
            except Exception:  # a watcher's bug must not end the feed for every page
                log.exception("feed: error while handing out a message")

    def _dispatch(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            raise ProtocolError(f"expected [topic, type, body], got {len(frames)} frames")
        topic = bytes(frames[0])
        if topic.startswith(topics.METRICS.encode()):
            self._on_batch(frames)
        elif topic.startswith(b"evt."):
            msg = codec.decode(frames[1:])
            if isinstance(msg, Event):
                self.counters["events"] += 1
                for fn in list(self._events):
                    _call(fn, msg)

    def _on_batch(self, frames: list[bytes]) -> None:
        node = bytes(frames[0])[len(topics.METRICS):].decode(errors="replace")
        watchers = self._metrics.get(node)
        if not watchers:  # "m.node1" also matches "m.node10": filter exactly here
            return
        if not self._take_token(node):
            self.counters["batches_skipped"] += 1
            return
        msg = codec.decode(frames[1:])
        if not isinstance(msg, MetricBatch) or msg.node != node:
            raise ProtocolError(f"topic m.{node} carries {type(msg).__name__} "
                                f"for node {getattr(msg, 'node', '?')!r}")
        self.counters["batches"] += 1
        updates = [thin(u, MAX_ROWS_PER_BATCH) for u in extract(msg.series, node)]
        for fn in list(watchers):
            _call(fn, updates)

    def _take_token(self, node: str) -> bool:
        """A token bucket per node: ``max_batches_per_s``, bursts of one second's worth."""
        now, rate = time.monotonic(), self.max_batches_per_s
        tokens, when = self._allowance.get(node, (rate, now))
        tokens = min(rate, tokens + (now - when) * rate)
        if tokens < 1.0:
            self._allowance[node] = (tokens, now)
            return False
        self._allowance[node] = (tokens - 1.0, now)
        return True

    def _warn(self, text: str) -> None:
        self.counters["bad_frames"] += 1
        now = time.monotonic()
        if now - self._last_warning >= 10.0:  # rate-limited: a noisy peer must not flood logs
            self._last_warning = now
            log.warning("%s (%d bad frames so far)", text, self.counters["bad_frames"])


def _call(fn: Callable[[Any], None], arg: Any) -> None:
    try:
        fn(arg)
    except Exception:
        log.exception("feed watcher %r failed", fn)
