"""Which live nodes a housekeeping pass sends a heartbeat to: decided here, sent by
the manager's loop (``manager/server.py``).

Any message is proof of life to an agent, and one shipping metrics gets an ack
every interval: a heartbeat beside it would only wake it once more a second (at
1 Hz the agent's cost is mostly wake-ups). Skipping keeps its silence under two
intervals, so only with a liveness of 3 or more, where that leaves a whole
interval spare (docs/architecture.md#nodes-jobs-and-runs).
"""

from __future__ import annotations

from collections.abc import Iterable

from manager.registry import Node


def due(live: Iterable[Node], last_sent: dict[bytes, float], now: float, interval: float,
        liveness: int) -> tuple[list[Node], dict[bytes, float]]:
    """The nodes to send a heartbeat to at monotonic ``now``, and the entries of
    ``last_sent`` (routing id → when a message last went to it) worth keeping:
    those of live nodes that heard from the manager within ``interval``. Clients'
    and gone peers' entries are dropped with this pass."""
    recent = interval if liveness >= 3 else 0.0
    send, kept = [], {}
    for node in live:
        sent = last_sent.get(node.routing_id)
        if sent is not None and now - sent < recent:
            kept[node.routing_id] = sent
        else:
            send.append(node)
    return send, kept
