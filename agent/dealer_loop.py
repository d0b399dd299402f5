"""How the agent talks to the manager: one DEALER socket after another, beats, back-off.

:class:`DealerLoop` is the transport half of :class:`agent.link.Link`; what is
said over it (registration, welcome, errors, runs) is the subclass's::

    connect ─► _on_connect() ─► each message to _handle(), each beat to _tick() …
       ▲                                   │
       └── back-off (doubling, capped) ◄───┴── manager silent for ``liveness`` intervals,
                                               or an outcome from _handle()

It is kept apart because the way messages are read here is subtle and was
paid for in CPU: the loop's callback on the socket's file descriptor reads
them, not a task, and every send or ``EVENTS`` read may take the descriptor's
one signal for input that is already waiting (see :meth:`DealerLoop._on_readable`).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import cast

import zmq
import zmq.asyncio

from agent.grid import Alarm, next_beat
from bus import codec
from bus.messages import Message, MsgType
from bus.ratelimit import RateLimitedLog
from bus.sockets import CLOSING_ERRNOS, CurveKeys, SocketTuning, make_socket

__all__ = ["DealerLoop", "Outcome"]

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


class DealerLoop(ABC):
    """Holds one DEALER session after another with ``address`` until cancelled.

    Subclasses say what is said: :meth:`_on_connect` when a socket is new,
    :meth:`_handle` for each message (an outcome other than ``None`` ends the
    session), :meth:`_tick` on every beat, :meth:`_on_disconnect` once the
    session is given up. :attr:`sessions` counts the sockets opened so far.
    Trouble that must not flood the log goes to ``trouble``.
    """

    def __init__(self, address: str, node: str, *, ctx: zmq.asyncio.Context,
                 tuning: SocketTuning, curve: CurveKeys | None, interval: float,
                 liveness: int, backoff_min: float, backoff_max: float,
                 trouble: RateLimitedLog) -> None:
        self.address = address
        self.node = node
        self.sessions = 0
        self._ctx = ctx
        self._tuning = tuning
        self._curve = curve
        self._interval = interval
        self._liveness = liveness
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._backoff = backoff_min
        self._trouble = trouble
        # While retries are expected to go on for a long time (a key waiting for
        # acceptance), they are not logged one by one.
        self._quiet_retries = False
        self._sock: zmq.Socket[bytes] | None = None  # the session's DEALER, used synchronously
        self._alarm = Alarm()  # the session task's sleep between beats
        self._ended: float | BaseException | None = None  # how a handler ended the session
        self._last_heard = 0.0  # loop time of the manager's last frame
        self._reading = False  # inside _on_readable

    # --- what the subclass says ---------------------------------------------------

    @abstractmethod
    def _on_connect(self) -> None:
        """A new socket is connected: send what opens a session."""

    @abstractmethod
    def _handle(self, frames: list[bytes]) -> Outcome:
        """One message from the manager; an outcome other than ``None`` ends the session."""

    @abstractmethod
    def _tick(self) -> None:
        """Every beat of the current interval."""

    @abstractmethod
    def _on_disconnect(self) -> None:
        """The session is given up; its socket is about to close."""

    # --- session loop -----------------------------------------------------------

    async def run(self) -> None:
        """Hold a session with the manager, reconnecting for ever; returns only if cancelled."""
        while True:
            try:
                delay = await self._session()
            except zmq.ZMQError as exc:
                if exc.errno in CLOSING_ERRNOS:
                    raise
                # One socket's failure ends its session, never the agent.
                self._trouble.warn("session-failed", f"node {self.node}: connection to "
                                   f"{self.address} failed ({exc.strerror}); reconnecting")
                delay = self._next_backoff()
            log.log(logging.DEBUG if self._quiet_retries else logging.INFO,
                    "node %s: new connection to %s in %.2f s", self.node, self.address, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> float:
        """One DEALER from connect to the moment it is given up; returns the back-off."""
        # ZeroMQ retries a refused connection on its own, backing off up to
        # reconnect_ivl_max: kept within one interval, a manager that comes back
        # gets this session's queued registration within about an interval too.
        tuning = self._tuning._replace(reconnect_ivl_max_ms=max(
            self._tuning.reconnect_ivl_ms,
            min(self._tuning.reconnect_ivl_max_ms, int(self._interval * 1000))))
        sock = make_socket(self._ctx, zmq.DEALER, tuning, self._curve)
        sock.connect(self.address)
        self._sock = zmq.Socket.shadow(sock.underlying)
        self.sessions += 1
        try:
            return await self._converse(self._sock)
        finally:
            self._sock = None
            self._on_disconnect()
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
            self._on_connect()
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
                    # At most one interval without a socket: a restarted manager waits
                    # liveness × interval + one interval for the nodes of its running
                    # runs before calling those runs lost (docs/protocol.md "Runs"), so
                    # a longer back-off here turned finished runs into lost ones.
                    return min(self._next_backoff(), self._interval)
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

    # --- beat and back-off --------------------------------------------------------

    def _set_beat(self, interval: float, liveness: int) -> None:
        """Beat every ``interval`` s from now on, and give up after ``liveness`` silent ones."""
        self._interval = interval
        self._liveness = liveness
        self._alarm.poke()  # the session task re-plans its beats on the new interval

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)
        return delay

    def _reset_backoff(self) -> None:
        self._backoff = self._backoff_min

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
            self._trouble.warn("send-failed", f"node {self.node}: could not queue {what} "
                               f"for the manager: {exc}")
        # A send from elsewhere (a run changing state) may have taken the descriptor's
        # signal for a message that arrived meanwhile: read it on the loop's next turn.
        if not self._reading and self._alarm.sleeping and _has_input(sock):
            asyncio.get_running_loop().call_soon(self._on_readable)
