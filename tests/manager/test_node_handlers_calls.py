"""manager/node_handlers.py as plain calls over the real registry, with a clock the
test moves (tests/manager/handler_world.py); tests/manager/test_node_handlers.py
asks the same over real sockets. No socket is opened here."""

from __future__ import annotations

import asyncio

import pytest

from bus.messages import Error, NodeForget, NodesList, Reply
from manager.node_handlers import handle_node_forget, handle_nodes_list
from tests.manager.handler_world import World, no_sockets

pytestmark = pytest.mark.usefixtures("no_sockets")
__all__ = ["no_sockets"]  # the fixture, imported for pytest to find
CLIENT = b"client"


def fleet() -> World:
    """g1 (gpu, rack a1) live; g2 (gpu, rack b2) and p1 lost."""
    world = World()
    world.join("g2", b"2", ["gpu", "rack=b2"])
    world.join("p1", b"3")
    world.time.mono += 10.0  # g2 and p1 fall silent for longer than liveness × interval
    world.join("g1", b"1", ["gpu", "rack=a1"])
    world.registry.sweep(world.time.mono)
    return world


def listed(world: World, states: list[str] | None = None,
           labels: list[str] | None = None) -> list[str]:
    world.wire.sent.clear()
    request = NodesList(req_id="r", states=states or [], labels=labels or [])
    asyncio.run(handle_nodes_list(world.nodes(), CLIENT, request))
    [reply] = world.wire.to(CLIENT, Reply)
    return [n["name"] for n in reply.result["nodes"]]


def test_nodes_list_filters_by_state_and_labels() -> None:
    world = fleet()
    assert listed(world) == ["g1", "g2", "p1"]
    assert listed(world, ["lost"]) == ["g2", "p1"]
    assert listed(world, ["ready", "busy"]) == ["g1"]
    assert listed(world, labels=["gpu"]) == ["g1", "g2"]
    assert listed(world, ["lost"], ["gpu", "rack=b2"]) == ["g2"]
    assert listed(world, labels=["rack=zz"]) == []


def test_nodes_list_refuses_an_unknown_state_in_one_line() -> None:
    world = fleet()
    asyncio.run(handle_nodes_list(world.nodes(), CLIENT, NodesList(req_id="r", states=["gone"])))
    [error] = world.wire.to(CLIENT, Error)
    assert (error.code, error.message) == ("bad-request",
                                           "no node state 'gone'; use ready, busy, lost")


def test_forget_takes_a_lost_node_only() -> None:
    world = fleet()

    async def scenario() -> None:
        for name in ("g1", "p1", "p1"):
            await handle_node_forget(world.nodes(), CLIENT, NodeForget(req_id=name, node=name))

    asyncio.run(scenario())
    live, forgotten, unknown = (m for _, m in world.wire.sent)
    assert isinstance(live, Error) and live.code == "bad-request"
    assert live.message.startswith("node g1 is ready, not lost; stop its agent first")
    assert isinstance(forgotten, Reply) and forgotten.result["name"] == "p1"
    assert forgotten.result["state"] == "lost" and forgotten.result["silent_for"] == 10.0
    assert isinstance(unknown, Error) and unknown.code == "not-found"
    assert world.registry.get("p1") is None and world.registry.get("g1") is not None
