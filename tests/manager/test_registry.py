"""Node liveness as plain function calls with an injected clock."""

from __future__ import annotations

import pytest

from bus.messages import NodeFacts, NodeState
from manager.registry import OFFSET_WINDOW, Decision, Registry, StateChange, valid_node_name

FACTS = NodeFacts(hostname="h", address="10.0.0.5", cpus=2, memory_bytes=1, kernel="6.1",
                  labels=["fast"])


def make(interval: float = 1.0, liveness: int = 3) -> Registry:
    return Registry(interval, liveness)


def test_register_new_node_is_ready() -> None:
    reg = make()
    out = reg.register("n1", b"A", FACTS, now=10.0, wall=1000.0)
    assert out.decision is Decision.ACCEPTED and out.accepted
    assert out.node is not None and out.node.state is NodeState.READY
    assert out.changes == (StateChange("n1", None, NodeState.READY),)
    assert reg.node_for(b"A") is reg.get("n1")


def test_a_stall_of_the_manager_is_not_held_against_its_nodes() -> None:
    # The manager's loop was blocked 7 s (a host that froze, a starved CPU): the nodes'
    # heartbeats of that time wait in its socket, unread. None is judged lost until it
    # had a whole timeout of the manager listening again.
    reg = make(interval=1.0, liveness=3)
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    reg.register("n2", b"B", FACTS, now=0.0, wall=0.0)
    for tick in (0.1, 0.2, 0.3):  # housekeeping every 0.1 s
        assert reg.heed_stall(tick, 0.1) == 0.0 and reg.sweep(tick) == []
    assert reg.heed_stall(7.3, 0.1) == pytest.approx(6.9)
    assert reg.sweep(7.3) == [], "silent 7.3 s, but the manager was not listening"
    assert reg.seen(b"A", now=7.35) is None  # n1's queued heartbeat is read; n2 is gone
    assert reg.heed_stall(7.4, 0.1) == 0.0 and reg.sweep(7.4) == []
    assert reg.sweep(10.29) == []
    assert reg.sweep(10.31) == [StateChange("n2", NodeState.READY, NodeState.LOST)]
    assert reg.stalled == pytest.approx(6.9)
    assert reg.get("n2").last_seen == 0.0, "what was heard is kept as heard (takeovers read it)"


def test_a_late_tick_within_an_interval_is_no_stall() -> None:
    reg = make(interval=1.0, liveness=3)
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    assert reg.heed_stall(0.1, 0.1) == 0.0
    assert reg.heed_stall(1.15, 0.1) == 0.0, "0.95 s late: less than an interval"
    assert reg.sweep(3.1) == [StateChange("n1", NodeState.READY, NodeState.LOST)]


def test_name_taken_by_live_peer_then_free_once_lost() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    assert reg.register("n1", b"B", FACTS, now=1.0, wall=1.0).decision is Decision.NAME_TAKEN
    assert reg.node_for(b"B") is None
    reg.sweep(now=3.5)
    out = reg.register("n1", b"B", FACTS, now=3.6, wall=3.6)
    assert out.accepted
    assert out.changes == (StateChange("n1", NodeState.LOST, NodeState.READY),)
    assert reg.node_for(b"A") is None, "the old peer no longer speaks for n1"
    assert reg.node_for(b"B") is reg.get("n1")


def test_same_peer_may_register_again() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    assert reg.register("n1", b"A", FACTS, now=1.0, wall=1.0).accepted


def test_peer_renaming_itself_leaves_old_node_lost() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    out = reg.register("n2", b"A", FACTS, now=1.0, wall=1.0)
    assert StateChange("n1", NodeState.READY, NodeState.LOST) in out.changes
    assert reg.get("n1").state is NodeState.LOST
    assert reg.node_for(b"A").name == "n2"


def test_lost_after_liveness_intervals_and_ready_when_it_speaks() -> None:
    reg = make(interval=1.0, liveness=3)
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    assert reg.sweep(now=2.9) == []
    assert reg.seen(b"A", now=2.9) is None
    assert reg.sweep(now=5.8) == []
    assert reg.sweep(now=5.95) == [StateChange("n1", NodeState.READY, NodeState.LOST)]
    assert reg.sweep(now=9.0) == [], "lost is reported once"
    assert [n.name for n in reg.live()] == []
    assert reg.seen(b"A", now=9.1) == StateChange("n1", NodeState.LOST, NodeState.READY)
    assert [n.name for n in reg.live()] == ["n1"]


def test_seen_from_unknown_peer_is_nothing() -> None:
    assert make().seen(b"Z", now=1.0) is None


def test_busy_while_holding_runs() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    assert reg.set_running("n1", ["j.n1.1"]) == StateChange("n1", NodeState.READY, NodeState.BUSY)
    assert reg.set_running("n1", ["j.n1.1"]) is None
    reg.sweep(now=10.0)
    assert reg.set_running("n1", []) is None, "a lost node stays lost"
    assert reg.seen(b"A", now=10.1) == StateChange("n1", NodeState.LOST, NodeState.READY)
    assert reg.set_running("n1", ["j.n1.2"]) == StateChange("n1", NodeState.READY, NodeState.BUSY)
    assert reg.set_running("nobody", []) is None


def test_comes_back_busy_when_it_still_holds_runs() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    reg.set_running("n1", ["r"])
    reg.sweep(now=10.0)
    assert reg.seen(b"A", now=10.1) == StateChange("n1", NodeState.LOST, NodeState.BUSY)


def test_node_dict_shape() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=100.0, wall=5000.0)
    reg.set_running("n1", ["j.n1.1"])
    d = reg.get("n1").to_dict(now=100.5, wall=5000.5)
    assert d["name"] == "n1" and d["state"] == "busy" and d["address"] == "10.0.0.5"
    assert d["silent_for"] == 0.5 and d["last_seen"] == 5000.0
    assert d["registered_at"] == 5000.0 and d["running"] == ["j.n1.1"]
    assert d["facts"]["labels"] == ["fast"] and d["facts"]["cpus"] == 2


def test_node_names() -> None:
    assert valid_node_name("node-1.example_a")
    for bad in ("", "-x", "a b", "a/b", "x" * 65, "é"):
        assert not valid_node_name(bad), bad


def test_clock_offset_is_the_smallest_recent_reading() -> None:
    """A reading is the manager's receipt time minus the agent's stamp: offset plus a
    delay that only ever adds, so the smallest of the recent ones is kept."""
    reg = make(interval=1.0)
    reg.register("n1", b"A", FACTS, now=0.0, wall=1000.250, sent_at=1000.0)  # queued 0.25 s
    node = reg.get("n1")
    assert node is not None and node.clock_offset == pytest.approx(0.25)
    assert reg.beat(b"A", 1001.002, 1001.0, spool_depth=2, samples_dropped=0) is node
    assert node.clock_offset == pytest.approx(0.002)
    reg.beat(b"A", 1002.009, 1002.0)
    assert node.clock_offset == pytest.approx(0.002), "a slower reading changes nothing"
    assert node.to_dict(now=0.0, wall=1002.0)["clock_offset"] == 0.002
    assert (node.spool_depth, node.samples_dropped) == (None, None), "the last beat's word"
    for i in range(OFFSET_WINDOW):  # the clock was stepped 3 s back on the agent
        reg.beat(b"A", 1003.0 + i, 1000.0 + i - 0.001 * (i % 3))
    assert node.clock_offset == pytest.approx(3.0), "the old readings age out"


def test_clock_readings_from_a_peer_are_checked() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=10.0)  # an older agent: no stamp
    node = reg.get("n1")
    assert node is not None and node.clock_offset is None
    assert node.to_dict(now=0.0, wall=10.0)["clock_offset"] is None
    for bad in (float("nan"), float("inf"), -5.0, 0.0, None):
        reg.beat(b"A", 11.0, bad)
    assert node.clock_offset is None
    assert reg.beat(b"Z", 11.0, 10.0) is None, "a peer that never registered"


def test_skewed_only_beyond_the_interval_and_after_a_few_readings() -> None:
    reg = make(interval=1.0)
    reg.register("n1", b"A", FACTS, now=0.0, wall=100.0, sent_at=97.0)
    node = reg.get("n1")
    assert node is not None and not reg.clock_skewed(node), "one reading may be a queued one"
    reg.beat(b"A", 101.0, 98.0)
    reg.beat(b"A", 102.0, 99.0)
    assert reg.clock_skewed(node) and node.clock_offset == pytest.approx(3.0)
    ahead = reg.register("n2", b"B", FACTS, now=0.0, wall=100.0, sent_at=101.5).node
    assert ahead is not None
    for wall in (101.0, 102.0):
        reg.beat(b"B", wall, wall + 1.5)
    assert reg.clock_skewed(ahead) and ahead.clock_offset == pytest.approx(-1.5)
    near = reg.register("n3", b"C", FACTS, now=0.0, wall=100.0, sent_at=99.2).node
    assert near is not None
    for wall in (101.0, 102.0):
        reg.beat(b"C", wall, wall - 0.8)
    assert not reg.clock_skewed(near), "0.8 s is within a 1 s interval"


def test_node_json_carries_clock_spool_and_dropped() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=5.0, sent_at=4.9)
    reg.beat(b"A", 6.0, 5.95, spool_depth=3, samples_dropped=12)
    shape = reg.get("n1").to_dict(now=0.5, wall=6.0)  # type: ignore[union-attr]
    assert (shape["clock_offset"], shape["spool_depth"], shape["samples_dropped"]) == (
        0.05, 3, 12)
    assert list(shape)[:8] == ["name", "state", "address", "last_seen", "silent_for",
                               "registered_at", "running", "clock_offset"]


def test_takeover_hands_a_live_node_to_its_agents_new_connection() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    reg.set_running("n1", ["j.n1.1"])
    assert not reg.register("n1", b"B", FACTS, now=1.0, wall=1.0).accepted
    out = reg.register("n1", b"B", FACTS, now=1.0, wall=1.0, takeover=True)
    assert out.accepted and out.replaced == b"A"
    assert out.changes == (StateChange("n1", NodeState.BUSY, NodeState.BUSY),)
    assert reg.node_for(b"A") is None and reg.node_for(b"B") is reg.get("n1")
    assert reg.get("n1").running == ["j.n1.1"], "its runs stay with the node"


def test_takeover_of_a_lost_or_own_node_replaces_nothing() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    assert reg.register("n1", b"A", FACTS, now=1.0, wall=1.0, takeover=True).replaced is None
    reg.sweep(now=10.0)
    assert reg.register("n1", b"B", FACTS, now=10.0, wall=10.0, takeover=True).replaced is None


def test_select_by_states_and_every_label() -> None:
    reg = make()
    gpu = NodeFacts(hostname="g", address="10.0.0.6", cpus=2, memory_bytes=1, kernel="6.1",
                    labels=["fast", "gpu", "rack=a1"])
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    reg.register("n2", b"B", gpu, now=0.0, wall=0.0)
    reg.register("n3", b"C", gpu, now=5.0, wall=5.0)
    reg.sweep(now=5.0)  # n1 and n2 lost
    names = lambda nodes: [n.name for n in nodes]  # noqa: E731
    assert names(reg.select()) == ["n1", "n2", "n3"]
    assert names(reg.select(frozenset({NodeState.LOST}))) == ["n1", "n2"]
    assert names(reg.select(labels=frozenset({"gpu", "rack=a1"}))) == ["n2", "n3"]
    assert names(reg.select(frozenset({NodeState.READY, NodeState.BUSY}),
                            frozenset({"fast"}))) == ["n3"]
    assert names(reg.select(labels=frozenset({"rack=b9"}))) == []


def test_forget_removes_the_node_and_its_peer_becomes_a_stranger() -> None:
    reg = make()
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    assert reg.forget("n1") is not None
    assert reg.get("n1") is None and reg.node_for(b"A") is None and reg.nodes() == []
    assert reg.seen(b"A", now=1.0) is None
    assert reg.forget("n1") is None, "unknown"
    assert reg.register("n1", b"A", FACTS, now=2.0, wall=2.0).changes == (
        StateChange("n1", None, NodeState.READY),), "it comes back as a new node"


def test_sweep_forgets_nodes_gone_longer_than_forget_after() -> None:
    reg = Registry(1.0, 3, forget_after=100.0)
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    reg.register("n2", b"B", FACTS, now=50.0, wall=50.0)
    assert [c.name for c in reg.sweep(now=60.0)] == ["n1", "n2"]
    assert reg.sweep(now=100.0) == [] and reg.get("n1") is not None, "not yet: 100 s"
    reg.sweep(now=100.5)
    assert reg.get("n1") is None and reg.get("n2") is not None
    reg.sweep(now=150.5)
    assert reg.nodes() == []


def test_forget_after_zero_never_forgets() -> None:
    reg = Registry(1.0, 3, forget_after=0.0)
    reg.register("n1", b"A", FACTS, now=0.0, wall=0.0)
    reg.sweep(now=10.0)
    reg.sweep(now=1e9)
    assert reg.get("n1") is not None
