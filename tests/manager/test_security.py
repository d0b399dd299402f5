"""A CURVE manager (DESIGN §6) in-process, with real CURVE sockets on 127.0.0.1.

Who may do what is decided by the key ZAP authenticated for each connection:
these tests drive peers holding an accepted agent key, the admin key and
strangers' keys, and check that a claimed name never counts and that the
manager stops when its authenticator does. tests/integration/test_curve.py runs
the same with real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from bus import codec
from bus.client import ManagerClient
from bus.errors import RequestFailed
from bus.messages import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    JobSpec,
    Message,
    MetricBatch,
    NodeFacts,
    Register,
    Welcome,
)
from bus.security import AuthenticatorStopped, load_keypair
from bus.sockets import CurveKeys, SocketTuning, make_socket
from manager.server import Manager
from manager.sinks import MemorySink
from tests.manager.test_control import WAIT, server_config, until

FACTS = NodeFacts(hostname="h", address="127.0.0.1", cpus=1, memory_bytes=1 << 30, kernel="6.1")


@dataclass
class Curve:
    mgr: Manager
    ctx: zmq.asyncio.Context
    sink: MemorySink

    def keys(self, public: bytes, secret: bytes) -> CurveKeys:
        assert self.mgr.keys is not None
        return CurveKeys(public, secret, self.mgr.keys.server_public)

    def dealer(self, keys: CurveKeys) -> zmq.asyncio.Socket:
        sock = make_socket(self.ctx, zmq.DEALER, SocketTuning(), keys)
        sock.connect(self.mgr.router_address)
        return sock

    def admin_keys(self) -> CurveKeys:
        assert self.mgr.keys is not None
        return self.keys(*load_keypair(self.mgr.keys.dir, "admin"))

    def admin(self) -> ManagerClient:
        return ManagerClient(self.mgr.router_address, ctx=self.ctx, timeout=WAIT,
                             curve=self.admin_keys())

    def agent_key(self, node: str) -> CurveKeys:
        """A fresh key pair, accepted for ``node``."""
        assert self.mgr.keys is not None
        public, secret = zmq.curve_keypair()
        self.mgr.keys.request(public, node, auto_accept=True)
        return self.keys(public, secret)


@contextlib.asynccontextmanager
async def curve_manager(tmp_path: Path, **overrides: str) -> AsyncIterator[Curve]:
    ctx = zmq.asyncio.Context()  # the peers' own: only the manager's runs ZAP
    sink = MemorySink()
    cfg = server_config(tmp_path / "m.db", **{"security.curve": "yes",
                                              "security.keys_dir": str(tmp_path / "keys"),
                                              **overrides})
    mgr = Manager(cfg, sink=sink)
    try:
        await mgr.start()
        yield Curve(mgr, ctx, sink)
    finally:
        await mgr.close()
        ctx.destroy(linger=0)


async def send(sock: zmq.asyncio.Socket, msg: Message) -> None:
    await sock.send_multipart(codec.encode(msg))


async def expect(sock: zmq.asyncio.Socket, cls: type, timeout: float = WAIT) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            msg = codec.decode(await sock.recv_multipart())
            if isinstance(msg, cls):
                return msg
            assert isinstance(msg, Heartbeat | Error), msg


async def register(sock: zmq.asyncio.Socket, node: str) -> Message:
    await send(sock, Register(protocol=PROTOCOL_VERSION, node=node, facts=FACTS))
    return await expect(sock, Welcome | Error)  # type: ignore[arg-type]


def test_batches_count_only_for_the_node_of_the_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with curve_manager(tmp_path) as c:
            n1, n2 = c.agent_key("n1"), c.agent_key("n2")
            for keys, node in ((n1, "n1"), (n2, "n2")):
                assert isinstance(await register(c.dealer(keys), node), Welcome)
            push = make_socket(c.ctx, zmq.PUSH, SocketTuning(), n1)
            push.connect(c.mgr.pull_address)
            row = [["cpu", {"node": "n1", "cpu": "total"}, ["user"], [[time.time_ns(), 1.0]]]]
            await push.send_multipart(codec.encode(MetricBatch(node="n1", seq=1, series=row)))
            await c.sink.wait_points(1, WAIT)
            # n1's key claiming n2, outright or as a second "node" key (msgpack keeps the last).
            await push.send_multipart(codec.encode(MetricBatch(node="n2", seq=2, series=row)))
            body = msgpack.packb({"node": "n1", "seq": 3, "series": row})
            twice = bytes([body[0] + 1]) + body[1:] + msgpack.packb("node") + msgpack.packb("n2")
            await push.send_multipart([b"metrics.batch", twice])

            async def refused_two() -> bool:
                return c.mgr.counters["metrics.unauthorized"] == 2

            await until(refused_two)
            await push.send_multipart(codec.encode(MetricBatch(node="n1", seq=4, series=row)))
            await c.sink.wait_points(2, WAIT)
            assert all(b"node=n2" not in line for line in c.sink.lines), c.sink.lines
            assert c.mgr.counters["metrics.batches"] == 2
            push.close(linger=0)

    asyncio.run(scenario())


def test_register_and_requests_are_decided_by_the_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with curve_manager(tmp_path) as c, c.admin() as admin:
            stranger = c.keys(*zmq.curve_keypair())
            reply = await register(c.dealer(stranger), "n1")
            assert isinstance(reply, Error) and reply.code == "pending"
            assert reply.message == ("key for node n1 is pending; run ptap keys accept n1 "
                                     "on the manager")
            listing = await admin.keys("list")
            assert [e["node"] for e in listing["pending"]] == ["n1"]
            # Neither a pending nor an accepted agent key may act as a client.
            async with ManagerClient(c.mgr.router_address, ctx=c.ctx, timeout=WAIT,
                                     curve=stranger) as client:
                with pytest.raises(RequestFailed) as info:
                    await client.submit(JobSpec(command=["true"]))
                assert info.value.code == "not-authorized"
            assert (await admin.keys("accept", "n1"))["state"] == "accepted"
            async with ManagerClient(c.mgr.router_address, ctx=c.ctx, timeout=WAIT,
                                     curve=stranger) as client:
                with pytest.raises(RequestFailed) as info:
                    await client.nodes()
                assert info.value.code == "not-authorized"
            assert isinstance(await register(c.dealer(stranger), "n1"), Welcome)
            reply = await register(c.dealer(stranger), "n2")
            assert isinstance(reply, Error) and reply.code == "key-mismatch"
            reply = await register(c.dealer(c.admin_keys()), "n3")
            assert isinstance(reply, Error) and reply.code == "not-authorized"
            with pytest.raises(RequestFailed) as info:
                await admin.keys("accept", "../server")
            assert info.value.code == "not-found"
            assert await admin.jobs() == []
            # Anyone may ask, but asking cannot fill the disk.
            c.mgr.max_pending_keys = 1
            reply = await register(c.dealer(c.keys(*zmq.curve_keypair())), "n4")
            assert isinstance(reply, Error) and reply.code == "pending"
            reply = await register(c.dealer(c.keys(*zmq.curve_keypair())), "n5")
            assert isinstance(reply, Error) and reply.code == "not-authorized"
            assert "1 agent keys are pending already" in reply.message
            assert [e["node"] for e in (await admin.keys("list"))["pending"]] == ["n4"]

    asyncio.run(scenario())


def test_a_revoked_key_loses_its_node_on_an_open_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with curve_manager(tmp_path, **{"basic.interval": "0.2"}) as c, \
                c.admin() as admin:
            agent = c.dealer(c.agent_key("n1"))
            assert isinstance(await register(agent, "n1"), Welcome)
            await admin.keys("revoke", "n1")
            job = await admin.submit(JobSpec(command=["true"], targets=["n1"]))

            async def beat() -> None:  # a live agent: heartbeats all along
                while True:
                    await send(agent, Heartbeat())
                    await asyncio.sleep(0.05)  # the heartbeat interval of this fake agent  # wait-ok: poll step under a deadline

            beating = asyncio.create_task(beat())
            try:
                refused = await expect(agent, Error)
                assert refused.code == "not-authorized"

                async def lost() -> bool:
                    return any(n["name"] == "n1" and n["state"] == "lost"
                               for n in await admin.nodes())

                await until(lost, timeout=WAIT)  # its heartbeats no longer count
            finally:
                beating.cancel()
            assert (await admin.job(job["id"]))["runs"][0]["state"] == "queued"

    asyncio.run(scenario())


def test_the_manager_stops_when_its_authenticator_does(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with curve_manager(tmp_path) as c:
            serving = asyncio.create_task(c.mgr.serve_forever())
            assert c.mgr.gate is not None and c.mgr.gate.task is not None
            c.mgr.gate.task.cancel()
            with pytest.raises(AuthenticatorStopped, match="stopping the manager"):
                await asyncio.wait_for(serving, WAIT)

    asyncio.run(scenario())
