"""The manager's three sockets: made with their limits, bound, and sent on without waiting.

ROUTER (agents and clients), PUB (events, live metrics) and PULL (metric
batches) on consecutive ports (``manager/ports.py``,
docs/architecture.md#processes-and-sockets). With CURVE each is a CURVE server
(``manager/authenticator.py``), set up before it binds.
"""

from __future__ import annotations

import time

import zmq
import zmq.asyncio

from bus import codec
from bus.codec import DEFAULT_LIMITS, MAX_BODY_BYTES, Limits
from bus.messages import Heartbeat, Message
from bus.ports import PortLayout, tcp_endpoint
from bus.ratelimit import RateLimitedLog
from bus.sockets import CurveKeys, SocketTuning, make_socket
from config.schema import ServerConfig
from manager import authenticator
from manager.keys import KeyStore
from manager.ports import bind_consecutive, connect_host

#: The largest body any ROUTER message may have (``agent.register``'s cap).
ROUTER_MAX_BODY = max(MAX_BODY_BYTES.values())
#: Metric batches the PULL socket holds per agent connection before it stops reading
#: that connection (ZMQ_RCVHWM counts messages). libzmq's default here, 10,000 a
#: connection, is outside every bound the manager keeps: 1,000 agents' batches and
#: their 5 s resends can pile up in it while the manager's loop is stalled or starved.
#: A manager slower than its agents for minutes grew to 2.2 GB outside Python's heap
#: (flat at 68 MB) and outside the ingest buffer ([spool] max_points); which libzmq
#: queue held it was inferred, not measured per socket. An agent ships
#: about one batch a second, so this is some 16 s of one agent's stream; beyond it
#: TCP pushes back, the agent's send fails at once and the batch waits in its spool,
#: which is what the spool is for.
PULL_RCVHWM = 16
#: Flags as plain ints: pyzmq's send_multipart ORs its IntFlag per frame, which costs
#: more than the send itself (2.5 µs a message; 1,000 nodes get several each per job).
_MORE_NOW, _NOW = int(zmq.SNDMORE | zmq.NOBLOCK), int(zmq.NOBLOCK)


def _send_now(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """``sock.send_multipart(frames, flags=zmq.NOBLOCK)``, the same sends without the ORs."""
    for frame in frames[:-1]:
        sock.send(frame, _MORE_NOW)
    sock.send(frames[-1], _NOW)


class ManagerSockets:
    """ROUTER, PUB and PULL of one manager, and the non-blocking sends on them."""

    def __init__(self, cfg: ServerConfig, ctx: zmq.asyncio.Context,
                 bad_frames: RateLimitedLog) -> None:
        self.cfg = cfg
        self._ctx = ctx
        self._bad_frames = bad_frames
        # The ROUTER takes requests and agents' messages, each capped by type
        # (bus.codec.MAX_BODY_BYTES); the PULL takes metric batches, as large as
        # [spool] max_message_bytes. libzmq drops a connection whose frame is
        # larger than its socket's MAXMSGSIZE before we see any of it.
        self.limits = Limits(max_message_bytes=ROUTER_MAX_BODY)
        size = cfg.spool.max_message_bytes
        self.batch_limits = Limits(max_message_bytes=size,
                                   max_str_len=min(DEFAULT_LIMITS.max_str_len, size))
        self.tuning = SocketTuning(max_message_bytes=ROUTER_MAX_BODY,
                                   backlog=cfg.basic.listen_max)
        self.pull_tuning = SocketTuning(max_message_bytes=size, backlog=cfg.basic.listen_max,
                                        rcvhwm=PULL_RCVHWM)
        self.ports: PortLayout | None = None
        self.all: list[zmq.asyncio.Socket] = []
        #: Monotonic time of the last message sent to each ROUTER peer (heartbeats skip
        #: nodes that just got something else); reset at every heartbeat pass.
        self.last_sent: dict[bytes, float] = {}

    def bind(self, keys: KeyStore | None) -> PortLayout:
        """Make the three sockets (CURVE servers when ``keys``) and bind them."""
        def curve(which: str) -> CurveKeys | None:
            return authenticator.server_keys(keys, which)

        self.router = make_socket(self._ctx, zmq.ROUTER, self.tuning, curve("router"))
        self.pub = make_socket(self._ctx, zmq.PUB, self.tuning, curve("pub"))
        self.pull = make_socket(self._ctx, zmq.PULL, self.pull_tuning, curve("pull"))
        self._pub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.pub.underlying)
        self._router_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.router.underlying)
        self.all = [self.router, self.pub, self.pull]
        self.ports = bind_consecutive(self.router, self.pub, self.pull,
                                      self.cfg.basic.bind_addr, self.cfg.basic.bind_port)
        return self.ports

    def address(self, which: str) -> str:
        """Where a local peer connects to socket ``which`` (``router``, ``pub``, ``pull``)."""
        assert self.ports is not None, "manager is not started"
        return tcp_endpoint(connect_host(self.cfg.basic.bind_addr), getattr(self.ports, which))

    async def send(self, peer: bytes, msg: Message) -> bool:
        """Send to one ROUTER peer without blocking; False (counted) if it is gone or full."""
        try:
            # A non-blocking send either queues at once or fails: a plain send on a
            # synchronous view costs no future (a dispatch to 1,000 nodes is 1,000).
            _send_now(self._router_now, [peer, *codec.encode(msg)])
        except zmq.ZMQError as exc:
            self._bad_frames.warn(
                "send-failed",
                f"cannot send {msg.TYPE.value} to peer {peer.hex()}: {exc.strerror}",
                time.monotonic(),
            )
            return False
        self.last_sent[peer] = time.monotonic()
        return True

    def peer_connected(self, peer: bytes) -> bool:
        """Does ROUTER still hold a connection for ``peer``? Asked with a heartbeat
        (harmless to a live agent): ROUTER_MANDATORY refuses a routing id whose
        connection it has dropped (EHOSTUNREACH), and that is the only answer."""
        try:
            self._router_now.send_multipart([peer, *codec.encode(Heartbeat(running=0))],
                                            flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            return exc.errno != zmq.EHOSTUNREACH
        return True

    async def publish(self, topic: bytes, frames: list[bytes]) -> None:
        """Publish ``[topic, *frames]``; PUB drops rather than blocks for slow subscribers."""
        try:
            # A PUB socket never waits (it drops at its high-water mark), so a
            # plain send on a synchronous view is enough: no future per batch.
            _send_now(self._pub_now, [topic, *frames])
        except zmq.ZMQError as exc:
            self._bad_frames.warn(
                "publish-failed",
                f"cannot publish on {topic[:60]!r}: {exc.strerror}",
                time.monotonic(),
            )

    def close(self) -> None:
        for sock in self.all:
            sock.close(linger=0)
