"""manager/heartbeats.py: which live nodes a housekeeping pass sends a heartbeat to."""

from __future__ import annotations

from manager.heartbeats import due
from manager.registry import Registry
from tests.manager.handler_world import facts


def live_nodes() -> Registry:
    registry = Registry(1.0, 3)
    for i, name in enumerate(("n1", "n2", "n3")):
        registry.register(name, bytes([i + 1]), facts(name), 0.0, 0.0)
    return registry


def test_a_node_that_heard_from_the_manager_within_an_interval_is_skipped() -> None:
    nodes = live_nodes().live()
    # n1 got an ack 0.5 s ago, n2 1.5 s ago; n3 nothing; b"c" is a client.
    last_sent = {b"\x01": 9.5, b"\x02": 8.5, b"c": 9.9}
    send, kept = due(nodes, last_sent, now=10.0, interval=1.0, liveness=3)
    assert [n.name for n in send] == ["n2", "n3"]
    assert kept == {b"\x01": 9.5}


def test_below_a_liveness_of_3_every_live_node_gets_one() -> None:
    nodes = live_nodes().live()
    send, kept = due(nodes, {b"\x01": 9.9}, now=10.0, interval=1.0, liveness=2)
    assert [n.name for n in send] == ["n1", "n2", "n3"] and kept == {}
