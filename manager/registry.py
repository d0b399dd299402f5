"""Node liveness: who is registered, under which routing id, and whether it is alive.

Pure bookkeeping: every method that needs the time takes ``now`` (from
``time.monotonic()``) from the caller, and nothing here touches a socket, so
the whole liveness policy is tested as plain function calls.

A node is known by the *routing id* of the peer that registered it (later the
CURVE ``User-Id``). Messages after registration are attributed by routing id
only; a node name a peer claims later is never trusted (DESIGN §6).

States (:class:`bus.messages.NodeState`)::

    register ──► READY ⇄ BUSY         (BUSY while it holds a dispatched or running run)
                  │  ▲
      silent for  │  │ any message
      liveness ×  ▼  │
      interval    LOST
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bus import codec
from bus.messages import NodeFacts, NodeState

#: Node names end up in PUB topics and run ids, so they are kept plain.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def valid_node_name(name: str) -> bool:
    """True for a name usable as a node name (1–64 of letters, digits, ``_.-``)."""
    return NODE_NAME.fullmatch(name) is not None


@dataclass
class Node:
    """One registered node. ``last_seen`` is monotonic; ``registered_at`` is wall time."""

    name: str
    routing_id: bytes
    facts: NodeFacts
    state: NodeState
    last_seen: float
    registered_at: float
    running: list[str] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return self.state is NodeState.LOST

    def to_dict(self, now: float, wall: float) -> dict[str, Any]:
        """The stable JSON shape of docs/protocol.md (``ptap nodes --json``)."""
        silent = max(0.0, now - self.last_seen)
        return {
            "name": self.name,
            "state": self.state.value,
            "address": self.facts.address,
            "last_seen": round(wall - silent, 3),
            "silent_for": round(silent, 3),
            "registered_at": self.registered_at,
            "running": list(self.running),
            "facts": codec.to_dict(self.facts),
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
    """

    decision: Decision
    node: Node | None = None
    changes: tuple[StateChange, ...] = ()

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
    HEARTBEAT_LIVENESS).
    """

    def __init__(self, interval: float, liveness: int) -> None:
        self.interval = interval
        self.liveness = liveness
        self._by_name: dict[str, Node] = {}
        self._by_routing: dict[bytes, Node] = {}

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

    # --- events -------------------------------------------------------------------

    def register(self, name: str, routing_id: bytes, facts: NodeFacts,
                 now: float, wall: float) -> Registration:
        """A peer asks to be node ``name``.

        Refused when another peer that is not lost owns the name; the agent
        retries, and once the old peer is lost the name is free. The same
        peer registering again (after a manager restart, or to refresh its
        facts) is accepted.
        """
        owner = self._by_name.get(name)
        if owner is not None and owner.routing_id != routing_id and not owner.lost:
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
        self._by_name[name] = node
        self._by_routing[routing_id] = node
        changes.append(StateChange(name, old_state, node.state))
        return Registration(Decision.ACCEPTED, node, tuple(changes))

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
        """Mark nodes silent for more than ``liveness × interval`` as lost."""
        changes = []
        for node in self.nodes():
            if not node.lost and now - node.last_seen > self.timeout:
                changes.append(StateChange(node.name, node.state, NodeState.LOST))
                node.state = NodeState.LOST
        return changes


def _active_state(node: Node) -> NodeState:
    return NodeState.BUSY if node.running else NodeState.READY
