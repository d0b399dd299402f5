"""Node liveness: who is registered, under which routing id, and whether it is alive.

Pure bookkeeping: every method that needs the time takes ``now`` (from
``time.monotonic()``) from the caller, and nothing here touches a socket, so
the whole liveness policy is tested as plain function calls.

A node is known by the *routing id* of the peer that registered it (later the
CURVE ``User-Id``). Messages after registration are attributed by routing id
only; a node name a peer claims later is never trusted (docs/architecture.md#security).

States (:class:`bus.messages.NodeState`)::

    register ──► READY ⇄ BUSY         (BUSY while it holds a dispatched or running run)
                  │  ▲
      silent for  │  │ any message
      liveness ×  ▼  │
      interval    LOST ──► forgotten  (gone for ``forget_after``, or ``ptap nodes forget``)

A forgotten node is simply no longer known: its jobs and metrics stay where
they are stored, and if its agent comes back it registers as a new node.

A live node's name is refused to another peer, except when the caller has
proved that peer is the node's own agent on a new connection and the old one
is dead (``takeover``, decided in ``manager/agent_handlers.py``): after a
pause or a partition the agent gives its old connection up before the manager
notices, and waiting for the old one to be swept as lost only delays its return.

Clock offsets: each ``agent.register`` and agent ``heartbeat`` carries the
agent's wall clock when it was sent (``sent_at``), and the manager's wall time
at receipt minus that stamp is one reading of the node's offset. A reading also
holds the one-way delay (network, queues, the manager's loop), which only ever
adds, so the estimate is the smallest of the last :data:`OFFSET_WINDOW`
readings, as NTP's clock filter keeps its lowest-delay sample: on a LAN it is
within about a millisecond, and a clock that is stepped shows within a window.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from bus import codec
from bus.messages import NodeFacts, NodeState
from bus.replies import NodeFactsReply, NodeReply

log = logging.getLogger(__name__)
#: Node names end up in PUB topics and run ids, so they are kept plain.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: Clock readings the offset estimate is the smallest of (one per heartbeat).
OFFSET_WINDOW = 10
#: Readings needed before an offset counts as skewed: a registration queued on
#: the agent while the manager was away reads seconds too high, and the next
#: heartbeats bring the estimate down.
OFFSET_MIN_READINGS = 3


def valid_node_name(name: str) -> bool:
    """True for a name usable as a node name (1–64 of letters, digits, ``_.-``)."""
    return NODE_NAME.fullmatch(name) is not None


@dataclass
class Node:
    """One registered node. ``last_seen`` is monotonic; ``registered_at`` is wall time.

    ``clock_offset`` is the manager's wall clock minus the agent's, in seconds
    (positive: the agent's clock is behind), None until the agent sent a stamp.
    ``spool_depth``, ``samples_dropped`` and ``app_dropped`` (app metric datagrams
    the kernel dropped) are what its last heartbeat said (None: not reported).
    """

    name: str
    routing_id: bytes
    facts: NodeFacts
    state: NodeState
    last_seen: float
    registered_at: float
    running: list[str] = field(default_factory=list)
    spool_depth: int | None = None
    samples_dropped: int | None = None
    app_dropped: int | None = None
    offsets: deque[float] = field(default_factory=lambda: deque(maxlen=OFFSET_WINDOW),
                                  repr=False)
    #: ``facts`` as JSON, made once: a node's state event carries them, and a job
    #: to 1,000 nodes turns 1,000 of them busy at once.
    facts_json: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.facts_json = codec.to_dict(self.facts)

    @property
    def lost(self) -> bool:
        return self.state is NodeState.LOST

    @property
    def clock_offset(self) -> float | None:
        return min(self.offsets) if self.offsets else None

    def read_clock(self, sent_at: float | None, wall: float) -> None:
        """One reading: the agent stamped ``sent_at``, the manager received it at ``wall``."""
        # A stamp is the peer's word: nothing that is not a plausible time is kept.
        if sent_at is not None and math.isfinite(sent_at) and sent_at > 0:
            self.offsets.append(wall - sent_at)

    def to_dict(self, now: float, wall: float) -> NodeReply:
        """The stable JSON shape of docs/protocol.md (``ptap nodes --json``)."""
        silent = max(0.0, now - self.last_seen)
        offset = self.clock_offset
        return {
            "name": self.name,
            "state": self.state.value,
            "address": self.facts.address,
            "last_seen": round(wall - silent, 3),
            "silent_for": round(silent, 3),
            "registered_at": self.registered_at,
            "running": list(self.running),
            "clock_offset": None if offset is None else round(offset, 4),
            "spool_depth": self.spool_depth,
            "samples_dropped": self.samples_dropped,
            "app_dropped": self.app_dropped,
            "facts": cast(NodeFactsReply, dict(self.facts_json)),  # codec.to_dict(facts)
        }


class Decision(StrEnum):
    """Outcome of a registration."""

    ACCEPTED = "accepted"
    NAME_TAKEN = "name-taken"


@dataclass(frozen=True, slots=True)
class Registration:
    """What :meth:`Registry.register` decided; ``node`` is set when accepted.

    ``changes`` lists side effects on other nodes (a routing id that
    re-registers under a new name leaves its old node ``lost``).
    ``replaced`` is the routing id of a live connection this one took over.
    """

    decision: Decision
    node: Node | None = None
    changes: tuple[StateChange, ...] = ()
    replaced: bytes | None = None

    @property
    def accepted(self) -> bool:
        return self.decision is Decision.ACCEPTED


@dataclass(frozen=True, slots=True)
class StateChange:
    """Node ``name`` went from ``old`` to ``new`` (``old`` is None for a new node)."""

    name: str
    old: NodeState | None
    new: NodeState


class Registry:
    """All nodes, by name and by routing id.

    ``interval`` is the heartbeat interval and ``liveness`` the number of
    intervals of silence after which a node is lost (Paranoid Pirate's
    HEARTBEAT_LIVENESS). A node silent for ``forget_after`` seconds is
    forgotten by :meth:`sweep` (0: never).

    Silence is counted only while the manager listens: when its housekeeping
    comes late by more than an ``interval`` (:meth:`heed_stall`), its own loop
    was stalled (blocked, or starved of CPU on a saturated host), the nodes'
    messages of that time are still queued in its socket, and no node is judged
    lost until it has had a whole ``timeout`` of the manager listening again.
    """

    def __init__(self, interval: float, liveness: int, forget_after: float = 0.0) -> None:
        self.interval = interval
        self.liveness = liveness
        self.forget_after = forget_after
        self._by_name: dict[str, Node] = {}
        self._by_routing: dict[bytes, Node] = {}
        self._last_heed: float | None = None
        self._judge_from = 0.0  # no node is judged lost before this (after a stall)
        #: Seconds the manager's own loop was stalled, in all (for status and tests).
        self.stalled = 0.0

    @property
    def timeout(self) -> float:
        """Seconds of silence after which a node is lost."""
        return self.interval * self.liveness

    # --- queries ------------------------------------------------------------------

    def get(self, name: str) -> Node | None:
        return self._by_name.get(name)

    def node_for(self, routing_id: bytes) -> Node | None:
        """The node registered by this peer, or None: the only way to attribute a message."""
        return self._by_routing.get(routing_id)

    def nodes(self) -> list[Node]:
        """Every node ever registered since start-up, by name."""
        return [self._by_name[n] for n in sorted(self._by_name)]

    def live(self) -> list[Node]:
        """Nodes that are not lost."""
        return [n for n in self.nodes() if not n.lost]

    def select(self, states: frozenset[NodeState] = frozenset(),
               labels: frozenset[str] = frozenset()) -> list[Node]:
        """Nodes, by name, in one of ``states`` (any when empty) that carry every
        label in ``labels`` (``ptap nodes --state --label``)."""
        return [n for n in self.nodes()
                if (not states or n.state in states)
                and labels.issubset(n.facts.labels)]

    # --- events -------------------------------------------------------------------

    def register(self, name: str, routing_id: bytes, facts: NodeFacts,
                 now: float, wall: float, sent_at: float | None = None,
                 takeover: bool = False) -> Registration:
        """A peer asks to be node ``name``; ``sent_at`` is its clock's stamp, if any.

        Refused when another peer that is not lost owns the name, unless
        ``takeover`` (the caller proved the new peer is that node's agent on a
        new connection); otherwise the agent retries, and once the old peer is
        lost the name is free. The same peer registering again (after a manager
        restart, or to refresh its facts) is accepted, with its clock readings
        started afresh. Runs the node holds stay with it in every case.
        """
        owner = self._by_name.get(name)
        live_owner = owner is not None and owner.routing_id != routing_id and not owner.lost
        if live_owner and not takeover:
            return Registration(Decision.NAME_TAKEN)
        changes = []
        previous = self._by_routing.get(routing_id)
        if previous is not None and previous.name != name:
            # The peer was some other node until now; that node has no peer left.
            del self._by_routing[routing_id]
            if not previous.lost:
                changes.append(StateChange(previous.name, previous.state, NodeState.LOST))
                previous.state = NodeState.LOST
        if owner is not None:
            self._by_routing.pop(owner.routing_id, None)
        old_state = owner.state if owner is not None else None
        running = owner.running if owner is not None else []
        node = Node(name=name, routing_id=routing_id, facts=facts,
                    state=NodeState.BUSY if running else NodeState.READY,
                    last_seen=now, registered_at=wall, running=running)
        node.read_clock(sent_at, wall)
        self._by_name[name] = node
        self._by_routing[routing_id] = node
        changes.append(StateChange(name, old_state, node.state))
        replaced = owner.routing_id if live_owner and owner is not None else None
        return Registration(Decision.ACCEPTED, node, tuple(changes), replaced)

    def forget(self, name: str) -> Node | None:
        """Forget node ``name`` now (``ptap nodes forget``); the node, or None if unknown.
        Its peer, if it speaks again, is a stranger until it registers."""
        node = self._by_name.pop(name, None)
        if node is not None and self._by_routing.get(node.routing_id) is node:
            del self._by_routing[node.routing_id]
        return node

    def seen(self, routing_id: bytes, now: float) -> StateChange | None:
        """Any message from a registered peer proves it alive; a lost node comes back."""
        node = self._by_routing.get(routing_id)
        if node is None:
            return None
        node.last_seen = max(node.last_seen, now)
        if node.lost:
            node.state = _active_state(node)
            return StateChange(node.name, NodeState.LOST, node.state)
        return None

    def beat(self, routing_id: bytes, wall: float, sent_at: float | None,
             spool_depth: int | None = None, samples_dropped: int | None = None,
             app_dropped: int | None = None) -> Node | None:
        """What an agent's heartbeat says beyond "alive" (:meth:`seen` counts that):
        a clock reading, received at ``wall``, and its metric backlog. The node, or
        None for a peer that has not registered."""
        node = self._by_routing.get(routing_id)
        if node is None:
            return None
        node.read_clock(sent_at, wall)
        node.spool_depth = spool_depth
        node.samples_dropped = samples_dropped
        node.app_dropped = app_dropped
        return node

    def clock_skewed(self, node: Node) -> bool:
        """True when ``node``'s clock is off the manager's by more than ``interval`` (the
        sampling interval by default: its samples would land in another interval)."""
        offset = node.clock_offset
        return (offset is not None and len(node.offsets) >= OFFSET_MIN_READINGS
                and abs(offset) > self.interval)

    def set_running(self, name: str, run_ids: list[str]) -> StateChange | None:
        """Record the runs a node holds (dispatched or running); READY ⇄ BUSY follows."""
        node = self._by_name.get(name)
        if node is None:
            return None
        node.running = list(run_ids)
        if node.lost:
            return None
        new = _active_state(node)
        if new is node.state:
            return None
        old, node.state = node.state, new
        return StateChange(name, old, new)

    def sweep(self, now: float) -> list[StateChange]:
        """Mark nodes silent for more than ``liveness × interval`` as lost, and
        forget those silent for more than ``forget_after`` (logged, no change:
        nothing is left to publish about them)."""
        changes = []
        for node in self.nodes():  # a copy, by name: forgetting is safe, changes in order
            silent = now - node.last_seen
            if not node.lost and silent > self.timeout and now >= self._judge_from:
                changes.append(StateChange(node.name, node.state, NodeState.LOST))
                node.state = NodeState.LOST
            elif node.lost and self.forget_after and silent > self.forget_after:
                self.forget(node.name)
                log.info("node %s forgotten: gone for %.0f s, more than [basic] forget_after "
                         "(%g s); it registers again if its agent comes back",
                         node.name, silent, self.forget_after)
        return changes

    def heed_stall(self, now: float, period: float) -> float:
        """Called every ``period`` seconds by the manager's housekeeping: when a call
        comes more than an ``interval`` late, no node is judged lost for a ``timeout``
        from now (see the class docstring); ``last_seen`` stays as heard, so a
        takeover still sees how long the old connection was quiet. The lateness in
        seconds (0.0 mostly)."""
        last, self._last_heed = self._last_heed, now
        if last is None or now - last - period <= self.interval:
            return 0.0
        stall = now - last - period
        self.stalled += stall
        self._judge_from = now + self.timeout
        log.warning("the manager did not look at its nodes for %.1f s (its loop was blocked "
                    "or starved of CPU): none is judged lost before %.1f s from now", now - last,
                    self.timeout)
        return stall


def _active_state(node: Node) -> NodeState:
    return NodeState.BUSY if node.running else NodeState.READY
