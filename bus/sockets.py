"""The one place where ZeroMQ sockets are made, so every socket gets the same care.

Options are applied before ``bind``/``connect`` because ZeroMQ reads most of
them (security above all) only then. ``MAXMSGSIZE`` is set on every socket that
receives, so a peer cannot make us buffer an arbitrarily large message before
the codec even sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio


@dataclass(frozen=True, slots=True)
class SocketTuning:
    """Socket options shared by manager, agent and clients.

    ``heartbeat_ms`` turns on ZMTP-level pings so a connection to a peer that
    vanished without a FIN is noticed and re-established by ZeroMQ itself.
    """

    linger_ms: int = 0
    sndhwm: int = 10_000
    rcvhwm: int = 10_000
    max_message_bytes: int = 16 * 1024 * 1024
    heartbeat_ms: int = 2_000
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 5_000
    backlog: int = 1024


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """CURVE keys of one endpoint (z85 bytes). A server leaves ``server_public`` empty
    and names its ZAP ``domain``, which the authenticator's policy decides on."""

    public: bytes
    secret: bytes
    server_public: bytes = b""
    domain: str = ""

    @property
    def is_server(self) -> bool:
        return not self.server_public


def make_socket(
    ctx: zmq.asyncio.Context,
    kind: int,
    tuning: SocketTuning = SocketTuning(),
    curve: CurveKeys | None = None,
) -> zmq.asyncio.Socket:
    """A configured, not yet bound or connected, asyncio socket."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, tuning.linger_ms)
    sock.setsockopt(zmq.SNDHWM, tuning.sndhwm)
    sock.setsockopt(zmq.RCVHWM, tuning.rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, tuning.max_message_bytes)
    sock.setsockopt(zmq.RECONNECT_IVL, tuning.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, tuning.reconnect_ivl_max_ms)
    sock.setsockopt(zmq.BACKLOG, tuning.backlog)
    if tuning.heartbeat_ms and kind in (zmq.DEALER, zmq.ROUTER, zmq.PUSH, zmq.PULL,
                                        zmq.SUB, zmq.PUB):
        sock.setsockopt(zmq.HEARTBEAT_IVL, tuning.heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, tuning.heartbeat_ms * 3)
        sock.setsockopt(zmq.HEARTBEAT_TTL, tuning.heartbeat_ms * 3)
    if kind == zmq.ROUTER:
        # An unroutable reply must fail loudly, not vanish; and a second peer
        # claiming a connected identity must not take it over (DESIGN §6).
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 0)
    if curve is not None:
        _apply_curve(sock, curve)
    return sock


def _apply_curve(sock: zmq.Socket, keys: CurveKeys) -> None:
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    if keys.is_server:
        sock.curve_server = True
        sock.zap_domain = keys.domain.encode()
    else:
        sock.curve_serverkey = keys.server_public


async def receive_forever(
    sock: zmq.asyncio.Socket,
    handle: Callable[[list[Any]], Awaitable[None]],
    *,
    copy: bool = True,
    drain: int = 64,
) -> None:
    """Hand every message of ``sock`` to ``handle``, in order, until cancelled.

    One message is awaited; what else is already waiting (up to ``drain``) is
    taken with non-blocking reads on a synchronous view of the same socket.
    An awaited receive costs ~20 µs of futures and callbacks, a plain one
    ~3 µs, and under load messages arrive faster than the loop turns. The
    handler must give the loop a turn now and then if it matters (the
    manager's ingest does, every millisecond).
    """
    now: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
    while True:
        frames = await sock.recv_multipart(copy=copy)
        for _ in range(drain):
            await handle(frames)
            try:
                frames = now.recv_multipart(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                break
        else:
            await handle(frames)
