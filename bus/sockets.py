"""The one place where ZeroMQ sockets are made, so every socket gets the same care.

Options are applied before ``bind``/``connect`` because ZeroMQ reads most of
them (security above all) only then. ``MAXMSGSIZE`` is set on every socket that
receives, so a peer cannot make us buffer an arbitrarily large message before
the codec even sees it.

Every receive loop of every daemon goes through :func:`receive` (or
:func:`receive_forever`), which never lets a socket's transient error end
the loop: see there.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import zmq

from bus.key_files import CurveKeys as CurveKeys
from bus.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    # Not at run time: a process that makes no socket here (the CLI's one-shot
    # commands use plain sockets) need not import asyncio, ~15 ms.
    import zmq.asyncio

log = logging.getLogger(__name__)


# NamedTuples, not dataclasses: the CLI's start-up (see bus/ports.py).
class SocketTuning(NamedTuple):
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
        # claiming a connected identity must not take it over (docs/architecture.md#security).
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 0)
    if curve is not None:
        _apply_curve(sock, curve)
    return sock


def _apply_curve(sock: zmq.Socket[Any], keys: CurveKeys) -> None:
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    if keys.is_server:
        sock.curve_server = True
        sock.zap_domain = keys.domain.encode()
    else:
        sock.curve_serverkey = keys.server_public


#: The socket or its context is being closed: the loop is over.
CLOSING_ERRNOS = frozenset({zmq.ETERM, zmq.ENOTSOCK})
#: Longest pause after repeated errors on one socket, seconds.
MAX_ERROR_PAUSE = 1.0
_trouble = RateLimitedLog(log)


async def receive(sock: zmq.asyncio.Socket, *, copy: bool = True) -> list[Any]:
    """The next message of ``sock``, whatever the socket reports meanwhile.

    ``EAGAIN`` is retried: pyzmq resolves an awaited receive with it when the
    socket said it was readable and the message then was not there (libzmq
    drops a message over ``MAXMSGSIZE``, or a CURVE connection's first message
    turns out to be bad, after ``ZMQ_EVENTS`` reported it). ``EINTR`` is
    retried too. Any other error, but for the socket closing, is logged at
    most once per period and retried after a pause that doubles up to
    :data:`MAX_ERROR_PAUSE`: one socket's trouble must never end a daemon.
    """
    failures = 0
    while True:
        try:
            return await sock.recv_multipart(copy=copy)
        except zmq.ZMQError as exc:
            if exc.errno in CLOSING_ERRNOS or sock.closed:
                raise
            import asyncio  # noqa: PLC0415 - loaded already: we are in its loop

            failures += 1
            if exc.errno in (zmq.EAGAIN, errno.EINTR) and failures < 100:
                # A turn of the loop, so that a readiness report that stays
                # stale cannot spin here without letting anything else run.
                await asyncio.sleep(0)
                continue
            kind = zmq.SocketType(int(sock.get(zmq.TYPE))).name
            _trouble.warn(f"recv-{exc.errno}", f"receive failed on a {kind} socket "
                          f"({exc.strerror}); trying again")
            await asyncio.sleep(min(MAX_ERROR_PAUSE, 0.001 * 2 ** min(failures, 10)))


async def receive_forever(
    sock: zmq.asyncio.Socket,
    handle: Callable[[list[Any]], Awaitable[None]],
    *,
    copy: bool = True,
    drain: int = 64,
) -> None:
    """Hand every message of ``sock`` to ``handle``, in order, until cancelled.

    One message is awaited (with :func:`receive`, which survives the socket's
    transient errors); what else is already waiting (up to ``drain``) is
    taken with non-blocking reads on a synchronous view of the same socket.
    An awaited receive costs ~20 µs of futures and callbacks, a plain one
    ~3 µs, and under load messages arrive faster than the loop turns. The
    handler must give the loop a turn now and then if it matters (the
    manager's ingest does, every millisecond).
    """
    now: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
    while True:
        frames = await receive(sock, copy=copy)
        for _ in range(drain):
            await handle(frames)
            try:
                frames = now.recv_multipart(zmq.NOBLOCK, copy=copy)
            except zmq.ZMQError as exc:  # EAGAIN: drained; anything else: await it
                if exc.errno in CLOSING_ERRNOS:
                    raise
                break
        else:
            await handle(frames)
