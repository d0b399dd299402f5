"""A CURVE manager (docs/architecture.md#security) in-process, with real CURVE sockets on 127.0.0.1.

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

import config
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
    RunDispatch,
    Welcome,
)
from bus.security import AuthenticatorStopped, load_keypair
from bus.sockets import CurveKeys, SocketTuning, make_socket
from config.schema import ServerSecurity
from manager import authorization
from manager.authorization import auto_accept_hold
from manager.context import Admit
from manager.keys import KeyState
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
            # Still listed until it goes lost, but a job naming it is refused at once
            # rather than left queued for ever.
            with pytest.raises(RequestFailed, match="node n1's key is not accepted"):
                await admin.submit(JobSpec(command=["true"], targets=["n1"]))

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
            assert await admin.jobs() == []

    asyncio.run(scenario())


# --- acceptance with bounds: auto_accept_from, max_nodes, revoked keys ------------------


def test_auto_accept_holds_keys_from_elsewhere_then_at_the_bound() -> None:
    """The policy as a plain function: address first (an unknown one never
    qualifies), then the number of keys accepted already."""
    sec = ServerSecurity(auto_accept=True)
    for address in ("127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"):
        assert auto_accept_hold(sec, address, 0) is None, address
    for address in ("10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "", "not-an-ip"):
        hold = auto_accept_hold(sec, address, 0)
        assert hold is not None and hold.kind == "auto-accept-address", address
    hold = auto_accept_hold(sec, "10.1.2.3", 0)
    assert hold is not None and hold.reason == ("10.1.2.3 is outside [security] "
                                                "auto_accept_from = 127.0.0.0/8, ::1/128")
    assert hold.remedy == "widen auto_accept_from"
    hold = auto_accept_hold(sec, "", 0)
    assert hold is not None and hold.reason.startswith("its address is unknown, so it is outside")

    lab = ServerSecurity(auto_accept=True, auto_accept_from=("10.0.0.0/8", "192.168.1.7"),
                         max_nodes=2)
    assert auto_accept_hold(lab, "10.200.0.1", 1) is None
    assert auto_accept_hold(lab, "192.168.1.7", 1) is None
    assert auto_accept_hold(lab, "192.168.1.8", 1) is not None
    assert auto_accept_hold(lab, "127.0.0.1", 1) is not None  # loopback only if listed
    hold = auto_accept_hold(lab, "10.200.0.1", 2)
    assert hold is not None and hold.kind == "auto-accept-max-nodes"
    assert hold.reason == "2 agent keys are accepted already, the [security] max_nodes bound"
    nowhere = ServerSecurity(auto_accept=True, auto_accept_from=())
    assert auto_accept_hold(nowhere, "127.0.0.1", 0) is not None


def test_auto_accept_from_must_name_networks() -> None:
    cfg = config.load_server(None, env={"PTAP_SECURITY_AUTO_ACCEPT_FROM": "10.1.2.0/24, ::1"})
    assert cfg.security.auto_accept_from == ("10.1.2.0/24", "::1")
    with pytest.raises(config.ConfigError, match=r"^\[security\] auto_accept_from: "
                       r"'10.0.0.0/33' is not a network — write e.g. 10.0.0.0/24"):
        config.load_server(None, env={"PTAP_SECURITY_AUTO_ACCEPT_FROM": "10.0.0.0/8,10.0.0.0/33"})
    with pytest.raises(config.ConfigError, match="is below the minimum 1"):
        config.load_server(None, env={"PTAP_SECURITY_MAX_NODES": "0"})


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING" and text in r.getMessage()]


def test_auto_accept_only_from_allowed_networks(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """From loopback, over real CURVE sockets: outside auto_accept_from the key
    waits as pending (one log line saying what to do). Inside it, it is welcomed:
    loopback by default, as the tests below show."""
    async def scenario() -> None:
        async with curve_manager(tmp_path, **{
                "security.auto_accept": "yes",
                "security.auto_accept_from": "10.255.255.0/24"}) as c, c.admin() as admin:
            reply = await register(c.dealer(c.keys(*zmq.curve_keypair())), "n1")
            assert isinstance(reply, Error) and reply.code == "pending"
            assert [e["node"] for e in (await admin.keys("list"))["pending"]] == ["n1"]
            [line] = warnings_about(caplog, "not auto-accepted")
            assert line.startswith(
                "key of node n1 is pending, not auto-accepted: 127.0.0.1 is outside [security] "
                "auto_accept_from = 10.255.255.0/24 — run ptap keys accept n1 on the manager, "
                "or widen auto_accept_from [auto-accept-address: 1 in total]")
            # Addresses a single host cannot connect from, through the same decision:
            # an unknown address never qualifies; a listed one does.
            for node, address, state in (("n2", "", KeyState.PENDING),
                                         ("n3", "10.255.255.9", KeyState.ACCEPTED)):
                key = zmq.curve_keypair()[0]
                assert c.mgr.access is not None  # policy decides; nothing is sent
                decision = authorization.admit_agent(c.mgr.access, b"gone", node, key, address)
                admitted = isinstance(decision, Admit)
                assert admitted is (state is KeyState.ACCEPTED)
                assert c.mgr.keys is not None and c.mgr.keys.who(key).node == node
                listing = await admin.keys("list")
                assert node in [e["node"] for e in listing[state.value]]

    asyncio.run(scenario())


def test_max_nodes_bounds_auto_accept_and_ptap_keys_accept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with curve_manager(tmp_path, **{"security.auto_accept": "yes",
                                              "security.max_nodes": "1"}) as c, \
                c.admin() as admin:
            assert isinstance(await register(c.dealer(c.keys(*zmq.curve_keypair())), "n1"),
                              Welcome)
            second = c.dealer(c.keys(*zmq.curve_keypair()))
            reply = await register(second, "n2")
            assert isinstance(reply, Error) and reply.code == "pending"
            [line] = warnings_about(caplog, "not auto-accepted")
            assert ("key of node n2 is pending, not auto-accepted: 1 agent keys are accepted "
                    "already, the [security] max_nodes bound — run ptap keys accept n2 on the "
                    "manager, or revoke keys no longer used, or raise max_nodes") in line
            assert await admin.keys("summary") == {
                "pending": 1, "accepted": 1, "rejected": 0, "revoked": 0,
                "max_nodes": 1, "max_pending": 1000}
            with pytest.raises(RequestFailed) as info:
                await admin.keys("accept", "n2")
            assert info.value.code == "bad-request"
            assert info.value.message == (
                "cannot accept the key of node n2: 1 agent keys are accepted already, the "
                "[security] max_nodes bound; revoke keys no longer used (ptap keys revoke "
                "NODE), or raise max_nodes in server.cfg and restart the manager")
            assert (await admin.keys("accept", "n1"))["state"] == "accepted"  # no change: fine
            assert (await admin.keys("revoke", "n1"))["state"] == "revoked"
            assert (await admin.keys("accept", "n2"))["state"] == "accepted"
            assert isinstance(await register(second, "n2"), Welcome)

    asyncio.run(scenario())


def test_a_revoked_key_is_refused_and_gets_no_run_even_under_auto_accept(
        tmp_path: Path) -> None:
    """The review's finding: a revoked key registered again at once under
    auto_accept. Now it is told it is revoked, and no job takes its node, though
    its connection (and, until its heartbeats lapse, its node) is still there;
    ptap keys accept is the way back."""
    async def scenario() -> None:
        async with curve_manager(tmp_path, **{"security.auto_accept": "yes"}) as c, \
                c.admin() as admin:
            n1, n2 = c.dealer(c.keys(*zmq.curve_keypair())), c.dealer(c.keys(*zmq.curve_keypair()))
            for sock, node in ((n1, "n1"), (n2, "n2")):
                assert isinstance(await register(sock, node), Welcome)
            assert authorization.may_dispatch(c.mgr.access, "n1")
            assert (await admin.keys("revoke", "n1"))["state"] == "revoked"
            reply = await register(n1, "n1")
            assert isinstance(reply, Error) and reply.code == "not-authorized"
            assert reply.message == ("the key of node n1 was revoked; ptap keys accept n1 on "
                                     "the manager admits it again")
            assert c.mgr.keys is not None
            assert c.mgr.keys.filed(c.mgr.node_keys["n1"]) == (KeyState.REVOKED, "n1")
            assert not authorization.may_dispatch(c.mgr.access, "n1")
            assert authorization.may_dispatch(c.mgr.access, "n2")
            # n1 is not lost yet, but `all` passes it over: no run waits for it.
            job = await admin.submit(JobSpec(command=["true"], targets=["all"]))
            assert [r["node"] for r in job["runs"]] == ["n2"]
            dispatched = await expect(n2, RunDispatch)
            assert dispatched.job_id == job["id"]
            assert (await admin.keys("list"))["revoked"][0]["node"] == "n1"

            assert (await admin.keys("accept", "n1"))["state"] == "accepted"
            assert isinstance(await register(n1, "n1"), Welcome)
            again = await admin.submit(JobSpec(command=["true"], targets=["n1"]))
            assert (await expect(n1, RunDispatch)).job_id == again["id"]

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
