"""manager/control.py as plain calls: the ROUTER entry point decodes, attributes,
authorizes and routes frames to the handler table, over the parts of
tests/manager/handler_world.py. No socket is opened; tests/manager/test_control.py
sends the same frames to a real manager."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest

from bus import codec
from bus.codec import DEFAULT_LIMITS
from bus.messages import Error, Heartbeat, MsgType, NodesList, Reply, Welcome
from manager import control
from manager.control import RouterContext, handle_frames, handle_message, handler_table
from tests.manager.handler_world import World, agent_key, curve_access, no_sockets, register_msg
from tests.manager.test_report_handlers import Analyses, Background, context

pytestmark = pytest.mark.usefixtures("no_sockets")
__all__ = ["no_sockets"]  # the fixture, imported for pytest to find
CLIENT, AGENT = b"client", b"agent"


def router(world: World) -> RouterContext:
    """The entry point's context with the real handler table (reports stood in)."""
    reports = context(world, Analyses(), Background())
    handlers = handler_table(world.agents(), world.nodes(), world.clients(), reports)
    return RouterContext(world.replier, world.registry, world.bookkeeper.node_changed,
                         DEFAULT_LIMITS, world.access, world.agents(), handlers,
                         world.time.clock)


def frames(peer: bytes, msg: Any) -> list[bytes]:
    return [peer, *codec.encode(msg)]


def test_register_and_a_client_request_reach_their_handlers() -> None:
    world = World()

    async def scenario() -> None:
        ctx = router(world)
        await handle_frames(ctx, frames(AGENT, register_msg("n1")))
        await handle_frames(ctx, frames(CLIENT, NodesList(req_id="r")))

    asyncio.run(scenario())
    assert [type(m) for m in world.wire.all_to(AGENT)] == [Welcome]
    [reply] = world.wire.to(CLIENT, Reply)
    assert [n["name"] for n in reply.result["nodes"]] == ["n1"]


def test_a_frame_that_does_not_decode_is_answered_with_its_req_id() -> None:
    world = World()
    body = [b"job.get", msgpack.packb({"req_id": "r7", "job_id": 5})]
    asyncio.run(handle_frames(router(world), [CLIENT, *body]))
    [error] = world.wire.to(CLIENT, Error)
    assert error.req_id == "r7" and world.bad_frames.totals[error.code] == 1
    assert control.req_id_of(DEFAULT_LIMITS, [b"job.get", b"x" * 70_000]) == ""


def test_agent_messages_need_a_registration_and_errors_are_never_answered() -> None:
    world = World()

    async def scenario() -> None:
        ctx = router(world)
        await handle_frames(ctx, frames(AGENT, Heartbeat()))
        await handle_frames(ctx, frames(CLIENT, Error(req_id="", code="x", message="from a peer")))
        await handle_frames(ctx, frames(CLIENT, Welcome(node="n", heartbeat_interval=1.0,
                                                        liveness=3)))

    asyncio.run(scenario())
    [unregistered] = world.wire.to(AGENT, Error)
    assert unregistered.code == "not-registered"
    assert unregistered.message.startswith("heartbeat from a peer that has not registered")
    [unexpected] = world.wire.to(CLIENT, Error)  # the welcome, not the error
    assert unexpected.message == "agent.welcome is not accepted by the manager"
    assert world.bad_frames.totals["peer-error"] == 1


def test_any_frame_brings_a_lost_node_back() -> None:
    world = World()
    world.join("n1", AGENT)
    world.time.mono += 10.0
    world.registry.sweep(world.time.mono)

    asyncio.run(handle_frames(router(world), frames(AGENT, Heartbeat())))
    node = world.registry.get("n1")
    assert node is not None and not node.lost
    assert world.wire.topics() == ["evt.node.n1"] and world.wire.sent == []


def test_with_curve_policy_refuses_and_the_loop_answers(tmp_path: Path) -> None:
    world = World(access=curve_access(tmp_path / "keys"))
    assert world.access is not None
    admin, n1_key, n2_key = world.access.keys.admin_public, agent_key(), agent_key()
    world.access.keys.request(n1_key, "n1", auto_accept=True)
    world.access.keys.request(n2_key, "n2", auto_accept=True)
    world.join("n1", AGENT)

    async def scenario() -> None:
        ctx = router(world)
        # An agent's key asking what only an administrator may: the frame gate
        # refuses it undecoded; an administrator is answered.
        await handle_frames(ctx, frames(AGENT, NodesList(req_id="a")), n1_key)
        await handle_frames(ctx, frames(CLIENT, NodesList(req_id="b")), admin)
        # n2's key speaking on n1's connection: authorize refuses, the loop answers.
        await handle_frames(ctx, frames(AGENT, Heartbeat()), n2_key)

    asyncio.run(scenario())
    gated, refused = world.wire.to(AGENT, Error)
    assert (gated.req_id, gated.code) == ("a", "not-authorized")
    assert (refused.code, refused.message) == (
        "not-authorized",
        "this key is no longer accepted for node n1; see ptap keys list on the manager")
    assert world.bad_frames.totals["not-authorized"] == 2
    assert isinstance(world.wire.all_to(CLIENT)[0], Reply)


def test_a_handler_that_fails_is_answered_internal_and_the_next_message_is_served() -> None:
    world = World()

    async def broken(peer: bytes, msg: Any) -> None:
        raise RuntimeError("a bug")

    async def scenario() -> None:
        ctx = router(world)
        failing = dataclasses.replace(ctx, handlers={**ctx.handlers,
                                                     MsgType.NODES_LIST: broken})
        await handle_message(failing, frames(CLIENT, NodesList(req_id="r1")))
        await handle_message(ctx, frames(CLIENT, NodesList(req_id="r2")))

    asyncio.run(scenario())
    error, reply = world.wire.all_to(CLIENT)
    assert isinstance(error, Error) and (error.req_id, error.code) == ("r1", "internal")
    assert isinstance(reply, Reply) and reply.req_id == "r2"
    assert world.bad_frames.totals["internal"] == 1
