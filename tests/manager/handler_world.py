"""The parts a ROUTER handler is given, for calling it as a plain function: no socket.

The registry, book, bookkeeper, SQLite store (in memory) and key store are the
real ones; only the two edges that touch the world are stand-ins, because a
socket is what these tests are about not opening: :class:`Wire` records what
would have been sent on ROUTER and published on PUB, and the clock is a pair of
numbers a test moves. ``no_sockets`` makes any attempt to open a ZeroMQ socket
fail the test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

import config
from bus import codec
from bus.messages import PROTOCOL_VERSION, Message, NodeFacts, Register, RunReport
from bus.ratelimit import RateLimitedLog
from manager import authorization
from manager.agent_handlers import AgentContext
from manager.authorization import Access
from manager.book import Book
from manager.bookkeeper import Bookkeeper
from manager.client_handlers import ClientContext
from manager.context import Clock, Replier
from manager.keys import KeyStore
from manager.node_handlers import NodeContext
from manager.registry import Registry
from manager.state import Store

M = TypeVar("M", bound=Message)


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any ZeroMQ socket opened during the test fails it."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a handler unit test opened a ZeroMQ socket")

    monkeypatch.setattr(zmq.Socket, "__init__", refuse)
    yield


class Wire:
    """What would have gone out: ROUTER messages per peer, PUB events in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Message]] = []
        self.published: list[tuple[bytes, dict[str, Any]]] = []
        self.gone: set[bytes] = set()  # peers a send fails to (ROUTER dropped them)

    async def send(self, peer: bytes, msg: Message) -> bool:
        if peer in self.gone:
            return False
        self.sent.append((peer, msg))
        return True

    async def publish(self, topic: bytes, frames: list[bytes]) -> None:
        self.published.append((topic, codec.unpack(frames[1])))

    def to(self, peer: bytes, cls: type[M]) -> list[M]:
        """The messages of type ``cls`` sent to ``peer``, in order."""
        return [m for p, m in self.sent if p == peer and isinstance(m, cls)]

    def all_to(self, peer: bytes) -> list[Message]:
        """Every message sent to ``peer``, in order."""
        return self.to(peer, Message)

    def topics(self) -> list[str]:
        return [t.decode() for t, _ in self.published]


@dataclass
class FixedClock:
    """Readings a test sets; ``clock`` is what a context takes."""

    mono: float = 1000.0
    wall: float = 1_700_000_000.0

    @property
    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.mono, wall=lambda: self.wall)


def facts(name: str, labels: list[str] | None = None) -> NodeFacts:
    return NodeFacts(hostname=name, address="127.0.0.1", cpus=1, memory_bytes=1 << 30,
                     kernel="6.1", labels=labels or [])


def register_msg(name: str, runs: list[RunReport] | None = None,
                 protocol: int = PROTOCOL_VERSION, sent_at: float | None = None) -> Register:
    return Register(protocol=protocol, node=name, facts=facts(name), runs=runs or [],
                    sent_at=sent_at)


@dataclass
class World:
    """One manager's parts, without its sockets."""

    wire: Wire = field(default_factory=Wire)
    time: FixedClock = field(default_factory=FixedClock)
    registry: Registry = field(default_factory=lambda: Registry(1.0, 3))
    book: Book = field(default_factory=Book)
    store: Store = field(default_factory=lambda: Store.open(":memory:"))
    access: Access | None = None
    bad_frames: RateLimitedLog = field(
        default_factory=lambda: RateLimitedLog(logging.getLogger("tests.handlers")))
    connected: set[bytes] = field(default_factory=set)
    last_seqs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replier = Replier(self.wire.send, self.bad_frames)
        self.bookkeeper = Bookkeeper(self.book, self.registry, lambda: self.store,
                                     send=self.wire.send, publish=self.wire.publish,
                                     may_dispatch=lambda n: authorization.may_dispatch(
                                         self.access, n))

    def agents(self) -> AgentContext:
        return AgentContext(self.replier, self.registry, self.book, self.bookkeeper, self.store,
                            self.access, 1.0, 3, lambda n: self.last_seqs.get(n, -1),
                            lambda peer: peer in self.connected, self.time.clock)

    def clients(self) -> ClientContext:
        return ClientContext(self.replier, self.registry, self.book, self.bookkeeper,
                             self.store, self.access, self.time.clock)

    def nodes(self) -> NodeContext:
        return NodeContext(self.replier, self.registry, self.time.clock)

    def join(self, name: str, peer: bytes, labels: list[str] | None = None) -> None:
        """Register node ``name`` on routing id ``peer`` directly in the registry."""
        reg = self.registry.register(name, peer, facts(name, labels), self.time.mono,
                                     self.time.wall)
        assert reg.accepted


def curve_access(keys_dir: Path, **security: str) -> Access:
    """A real key store in ``keys_dir`` (files only: making keys opens no socket)."""
    values = {"security.curve": "yes", "security.keys_dir": str(keys_dir),
              **{f"security.{k}": v for k, v in security.items()}}
    cfg = config.load_server(None, values, env={})
    return Access(KeyStore(keys_dir), cfg.security)


def agent_key() -> bytes:
    """A fresh agent public key (z85)."""
    return zmq.curve_keypair()[0]
