"""``nodes.list`` filters and ``node.forget``, on a real Manager over real sockets
(the harness of tests/manager/test_control.py: hand-made agents speaking the codec)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest
import zmq

from bus import codec
from bus.errors import RequestFailed
from bus.messages import Heartbeat, NodesList, Reply
from bus.sockets import SocketTuning, make_socket
from tests.manager.test_control import WAIT, FakeAgent, harness, until

#: A deadline for a node to be swept lost that a busy 2-core host still meets.
LOADED_HOST = 30.0


def names(nodes: list[dict]) -> list[str]:
    return [n["name"] for n in nodes]


async def keep_alive(agent: FakeAgent) -> None:
    """Heartbeats every 50 ms, so a node meant to be live stays so on a loaded host."""
    while True:
        await agent.send(Heartbeat(running=0))
        await asyncio.sleep(0.05)  # wait-ok: a heartbeat's period, not a wait for a condition


def test_nodes_list_filters_by_state_and_labels(tmp_path: Path) -> None:
    async def scenario() -> None:
        # liveness 1 × 0.2 s: a fake agent that stops speaking is lost at once.
        async with harness(tmp_path / "m.db", **{"basic.interval": "0.2",
                                                 "basic.liveness": "1"}) as h:
            gpu_a1, gpu_b2, plain = h.agent("g1"), h.agent("g2"), h.agent("p1")
            await gpu_a1.register(labels=["gpu", "rack=a1"])
            await gpu_b2.register(labels=["gpu", "rack=b2"])
            await plain.register()
            async with h.client() as client:
                await until(lambda: _lost(client, {"g1", "g2", "p1"}), LOADED_HOST)
                await gpu_a1.register(labels=["gpu", "rack=a1"])  # back: ready
                beat = asyncio.ensure_future(keep_alive(gpu_a1))
                assert names(await client.nodes()) == ["g1", "g2", "p1"]
                assert names(await client.nodes(["lost"])) == ["g2", "p1"]
                assert names(await client.nodes(["ready", "busy"])) == ["g1"]
                assert names(await client.nodes(labels=["gpu"])) == ["g1", "g2"]
                assert names(await client.nodes(["lost"], ["gpu", "rack=b2"])) == ["g2"]
                assert await client.nodes(labels=["rack=zz"]) == []
                with pytest.raises(RequestFailed) as refused:
                    await client.nodes(["gone"])
                assert refused.value.code == "bad-request"
                assert str(refused.value.message) == \
                    "no node state 'gone'; use ready, busy, lost"
                beat.cancel()

    asyncio.run(scenario())


async def _lost(client, wanted: set[str]) -> bool:  # type: ignore[no-untyped-def]
    return {n["name"] for n in await client.nodes(["lost"])} >= wanted


def test_an_old_client_without_filters_gets_every_node(tmp_path: Path) -> None:
    """A request without the filter fields, as a client older than them sends it."""
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h:
            await h.agent("n1").register(labels=["gpu"])
            await h.agent("n2").register()
            sock = make_socket(h.ctx, zmq.DEALER, SocketTuning())
            sock.connect(h.mgr.router_address)
            await sock.send_multipart([b"nodes.list", msgpack.packb({"req_id": "old"})])
            async with asyncio.timeout(WAIT):
                reply = codec.decode(await sock.recv_multipart())
            sock.close(linger=0)
            assert isinstance(reply, Reply) and reply.req_id == "old"
            assert names(reply.result["nodes"]) == ["n1", "n2"]
            assert NodesList(req_id="x").states == []

    asyncio.run(scenario())


def test_forget_a_lost_node_and_it_registers_again_as_new(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db", **{"basic.interval": "0.2",
                                                 "basic.liveness": "1"}) as h:
            agent, live = h.agent("n1"), h.agent("n2")
            await agent.register()
            async with h.client() as client:
                await until(lambda: _lost(client, {"n1"}), LOADED_HOST)
                await live.register()
                beat = asyncio.ensure_future(keep_alive(live))
                with pytest.raises(RequestFailed) as refused:
                    await client.forget_node("n2")
                assert refused.value.code == "bad-request"
                assert "node n2 is ready, not lost; stop its agent first" in refused.value.message
                forgotten = await client.forget_node("n1")
                assert forgotten["name"] == "n1" and forgotten["state"] == "lost"
                assert "n1" not in names(await client.nodes())
                with pytest.raises(RequestFailed) as unknown:
                    await client.forget_node("n1")
                assert unknown.value.code == "not-found"
                assert unknown.value.message == "no node 'n1' is known; ptap nodes lists them"
                await agent.register()  # its agent comes back: a node again
                assert "n1" in names(await client.nodes(["ready"]))
                beat.cancel()

    asyncio.run(scenario())


def test_nodes_gone_longer_than_forget_after_are_forgotten(tmp_path: Path) -> None:
    """``[basic] forget_after`` as configured reaches the registry's sweep."""
    async def scenario() -> None:
        async with harness(tmp_path / "m.db", **{"basic.interval": "0.1", "basic.liveness": "1",
                                                 "basic.forget_after": "2"}) as h:
            gone, live = h.agent("gone"), h.agent("live")
            await gone.register()
            await live.register()
            beat = asyncio.ensure_future(keep_alive(live))
            async with h.client() as client:
                assert names(await client.nodes()) == ["gone", "live"]
                await until(lambda: _only(client, ["live"]), LOADED_HOST)
            beat.cancel()

    asyncio.run(scenario())


async def _only(client, wanted: list[str]) -> bool:  # type: ignore[no-untyped-def]
    return names(await client.nodes()) == wanted
