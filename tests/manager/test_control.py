"""A real Manager on 127.0.0.1, driven by hand-made agents and clients over real sockets.

The fake agent is a DEALER that speaks the real codec; events are read from
the manager's PUB socket. Every wait is on a message or a condition with a
deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
    MetricAck,
    MetricBatch,
    MsgType,
    NodeFacts,
    Register,
    RunAck,
    RunCancel,
    RunDispatch,
    RunReport,
    RunState,
    RunUpdate,
    Welcome,
)
from bus.security import ensure_keypair
from bus.sockets import SocketTuning, make_socket
from config.schema import ServerConfig
from manager.main import main
from manager.server import ROUTER_MAX_BODY, Manager
from manager.sinks import MemorySink, Sink

WAIT = 5.0
MAX_BYTES = 512 * 1024  # [spool] max_message_bytes: the smallest allowed
M = TypeVar("M", bound=Message)
REPO = Path(__file__).resolve().parents[2]


def server_config(db: Path, **overrides: str) -> ServerConfig:
    # Fake agents send no heartbeats, so the interval is long unless a test is about liveness.
    values = {"basic.bind_port": "0", "basic.interval": "1.0", "basic.epoll_interval": "0.02",
              "state.path": str(db), "spool.max_message_bytes": str(MAX_BYTES)}
    values.update(overrides)
    return config.load_server(None, values, env={})


class FakeAgent:
    """A DEALER driven by hand: sends messages, waits for the ones it expects."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str, name: str = "n1") -> None:
        self.name = name
        self.sock = make_socket(ctx, zmq.DEALER, SocketTuning())
        self.sock.connect(address)

    async def send(self, msg: Message) -> None:
        await self.sock.send_multipart(codec.encode(msg))

    async def send_raw(self, frames: list[bytes]) -> None:
        await self.sock.send_multipart(frames)

    async def expect(self, cls: type[M], timeout: float = WAIT) -> M:
        """The next message of type ``cls``, skipping the manager's heartbeats."""
        async with asyncio.timeout(timeout):
            while True:
                msg = codec.decode(await self.sock.recv_multipart())
                if isinstance(msg, cls):
                    return msg
                assert isinstance(msg, Heartbeat), f"expected {cls.__name__}, got {msg}"

    async def register(self, runs: list[RunReport] | None = None, labels: list[str] | None = None,
                       protocol: int = PROTOCOL_VERSION) -> Welcome:
        facts = NodeFacts(hostname=self.name, address="127.0.0.1", cpus=1, memory_bytes=1 << 30,
                          kernel="6.1", labels=labels or [])
        await self.send(Register(protocol=protocol, node=self.name, facts=facts, runs=runs or []))
        return await self.expect(Welcome)

    async def update(self, run_id: str, job_id: str, state: RunState, **kw: Any) -> None:
        await self.send(RunUpdate(run=RunReport(run_id=run_id, job_id=job_id, state=state, **kw)))


class Events:
    """A SUB socket on the manager's PUB, waiting for the events a test needs."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str, prefix: str = "") -> None:
        self.sock = make_socket(ctx, zmq.SUB, SocketTuning())
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self.sock.connect(address)

    async def wait_for(self, pred: Callable[[str, Any], bool], timeout: float = WAIT) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                frames = await self.sock.recv_multipart()
                topic, msg = frames[0].decode(), codec.decode(frames[1:])
                if pred(topic, msg):
                    return msg

    async def sync(self, agent: FakeAgent) -> None:
        """Make sure the subscription is live (ZeroMQ's slow joiner): register
        ``agent`` again until this socket sees its node event."""
        async with asyncio.timeout(WAIT):
            while True:
                await agent.register()
                with contextlib.suppress(TimeoutError):
                    await self.wait_for(lambda t, m: t == f"evt.node.{agent.name}", 0.2)
                    return


@dataclass
class Harness:
    ctx: zmq.asyncio.Context
    mgr: Manager

    def agent(self, name: str = "n1") -> FakeAgent:
        return FakeAgent(self.ctx, self.mgr.router_address, name)

    def client(self) -> ManagerClient:
        return ManagerClient(self.mgr.router_address, ctx=self.ctx, timeout=WAIT)

    def events(self, prefix: str = "") -> Events:
        return Events(self.ctx, self.mgr.pub_address, prefix)


@contextlib.asynccontextmanager
async def harness(db: Path, ctx: zmq.asyncio.Context | None = None, sink: Sink | None = None,
                  **overrides: str) -> AsyncIterator[Harness]:
    """A manager on random ports; its sink is memory unless a test passes a real one
    (these tests are about the control plane, tests/manager/test_ingest.py about InfluxDB)."""
    own = ctx is None
    ctx = ctx or zmq.asyncio.Context()
    mgr = Manager(server_config(db, **overrides), ready_file=db.with_name("ready.json"),
                  sink=sink or MemorySink())
    try:
        await mgr.start()
        yield Harness(ctx, mgr)
    finally:
        await mgr.close()
        if own:
            ctx.destroy(linger=0)


async def until(cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll an async condition until it returns something true (bounded)."""
    async with asyncio.timeout(timeout):
        while not (value := await cond()):
            await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline
        return value


# --- the happy path ------------------------------------------------------------------------


def test_register_submit_dispatch_run_and_ack(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h:
            ready = json.loads((tmp_path / "ready.json").read_text())
            ports = h.mgr.ports
            assert ready == {"router": ports.router, "pub": ports.router + 1,
                             "pull": ports.router + 2, "pid": os.getpid()}
            agent, events = h.agent(), h.events()
            welcome = await agent.register()
            assert (welcome.node, welcome.heartbeat_interval, welcome.liveness) == ("n1", 1.0, 3)
            await events.sync(agent)
            async with h.client() as client:
                nodes = await client.nodes()
                assert [(n["name"], n["state"]) for n in nodes] == [("n1", "ready")]
                job = await client.submit(JobSpec(command=["echo", "hi"], targets=["n1"],
                                                  env={"K": "v"}, tags={"build": "1"}))
                job_id = job["id"]
                dispatch = await agent.expect(RunDispatch)
                assert (dispatch.run_id, dispatch.job_id, dispatch.iteration) == \
                    (f"{job_id}.n1.1", job_id, 1)
                assert dispatch.command == ["echo", "hi"] and dispatch.env == {"K": "v"}
                await events.wait_for(lambda t, m: t == "evt.node.n1" and m.state == "busy")
                await agent.update(dispatch.run_id, job_id, RunState.RUNNING, pid=99,
                                   started_at=time.time())
                running = await events.wait_for(lambda t, m: any(
                    r["state"] == "running" for r in m.runs()))
                assert running.runs()[-1]["pid"] == 99
                await agent.update(dispatch.run_id, job_id, RunState.SUCCEEDED, exit_code=0,
                                   ended_at=time.time(), stdout_tail="hi\n")
                assert (await agent.expect(RunAck)).run_id == dispatch.run_id
                done = await events.wait_for(lambda t, m: t == f"evt.job.{job_id}"
                                             and m.kind == "job" and m.state == "succeeded")
                assert done.detail["runs"][0]["exit_code"] == 0
                job = await client.job(job_id)
                assert job["state"] == "succeeded" and job["ended_at"] is not None
                assert job["runs"][0]["stdout_tail"] == "hi\n" and job["runs"][0]["pid"] == 99
                await events.wait_for(lambda t, m: t == "evt.node.n1" and m.state == "ready")
                listed = await client.jobs()
                assert [j["id"] for j in listed] == [job_id]
                assert "stdout_tail" not in listed[0]["runs"][0]
                # A resent final update (its ack was lost) is acked again.
                await agent.update(dispatch.run_id, job_id, RunState.SUCCEEDED, exit_code=0)
                assert (await agent.expect(RunAck)).run_id == dispatch.run_id
        assert not (tmp_path / "ready.json").exists(), "a stopped manager leaves no ready file"

    asyncio.run(scenario())


def test_iterations_in_order_and_cancel(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h, h.client() as client:
            agent = h.agent()
            await agent.register()
            job = await client.submit(JobSpec(command=["sleep", "9"], repeat=3))
            first = await agent.expect(RunDispatch)
            assert first.iteration == 1
            await agent.update(first.run_id, job["id"], RunState.SUCCEEDED, exit_code=0)
            await agent.expect(RunAck)
            second = await agent.expect(RunDispatch)
            assert second.iteration == 2
            job = await client.cancel(job["id"])
            assert [r["state"] for r in job["runs"]] == ["succeeded", "dispatched", "cancelled"]
            assert (await agent.expect(RunCancel)).run_id == second.run_id
            # It had started meanwhile: the cancel is repeated.
            await agent.update(second.run_id, job["id"], RunState.RUNNING, pid=3)
            assert (await agent.expect(RunCancel)).run_id == second.run_id
            await agent.update(second.run_id, job["id"], RunState.CANCELLED, exit_code=-15)
            await agent.expect(RunAck)
            job = await client.job(job["id"])
            assert job["state"] == "cancelled"
            assert (await client.cancel(job["id"]))["state"] == "cancelled", "idempotent"

    asyncio.run(scenario())


def test_requests_refused_with_reasons(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h, h.client() as client:
            await h.agent().register()
            cases = [
                (client.submit(JobSpec(command=["true"], targets=["ghost"])), "bad-request"),
                (client.submit(JobSpec(command=["true"], targets=["label:none"])), "bad-request"),
                (client.submit(JobSpec(command=[])), "bad-request"),
                (client.job("nope"), "not-found"),
                (client.cancel("nope"), "not-found"),
                (client.keys("list"), "bad-request"),
            ]
            for call, code in cases:
                with pytest.raises(RequestFailed) as info:
                    await call
                assert info.value.code == code
            assert "set [security] curve = yes" in info.value.message

    asyncio.run(scenario())


# --- bad peers ---------------------------------------------------------------------------------


def test_bad_frames_get_errors_and_the_manager_keeps_serving(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h:
            peer = h.agent("x")
            good_body = msgpack.packb({"req_id": "r1", "job_id": "j"})
            cases = [
                ([b"job.get", b"\xc1"], "malformed", ""),
                ([b"job.get"], "malformed", ""),                               # truncated
                # A truncated body still names its request: the client hears why.
                ([b"job.get", good_body[:-2]], "malformed", "r1"),
                ([b"job.get", msgpack.packb([1, 2])], "malformed", ""),
                ([b"no.such.type", msgpack.packb({})], "unknown-type", ""),
                ([b"job.get", msgpack.packb({"req_id": "r2", "job_id": 5})], "schema", "r2"),
                ([b"job.get", msgpack.packb({"req_id": "r3"})], "schema", "r3"),
                ([b"x" * 40_000, b"y" * 40_000], "unknown-type", ""),        # each frame fits
                ([b"job.get", b"y" * 40_000], "too-large", ""),              # a request's cap
                (codec.encode(Heartbeat()), "not-registered", ""),
                (codec.encode(RunUpdate(run=RunReport("a", "b", RunState.RUNNING))),
                 "not-registered", ""),
                (codec.encode(Welcome(node="x", heartbeat_interval=1.0, liveness=3)),
                 "bad-request", ""),
            ]
            for frames, code, req_id in cases:
                await peer.send_raw(frames)
                error = await peer.expect(Error)
                assert (error.code, error.req_id) == (code, req_id), frames[0][:20]
            # An error from a peer is never answered: the next reply is to the next request.
            await peer.send(Error(req_id="", code="x", message="y"))
            await peer.send_raw([b"nodes.list", msgpack.packb({"req_id": 7})])
            assert (await peer.expect(Error)).code == "schema"
            totals = h.mgr.bad_frames.totals
            assert totals["malformed"] == 4 and totals["schema"] == 3
            assert totals["unknown-type"] == 2 and totals["too-large"] == 1
            assert totals["peer-error"] == 1 and totals["unexpected"] == 1

            # A frame over MAXMSGSIZE: ZeroMQ drops that connection, nothing else.
            await peer.send_raw([b"job.get", b"z" * (ROUTER_MAX_BODY + 1)])
            async with h.client() as client:
                assert await client.nodes() == []

    asyncio.run(scenario())


def test_random_frames_each_get_an_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        rng = random.Random(1234)
        types = [t.value.encode() for t in MsgType if t is not MsgType.ERROR]
        async with harness(tmp_path / "m.db") as h:
            peer = h.agent("fuzz")
            for _ in range(200):
                body = rng.randbytes(rng.randrange(0, 120))
                shape = rng.randrange(3)
                frames = ([rng.choice(types), body] if shape == 0 else
                          [rng.randbytes(rng.randrange(1, 30)), body] if shape == 1 else
                          [rng.choice(types)] + [body] * rng.randrange(2, 4))
                await peer.send_raw(frames)
                await peer.expect(Error)
            async with h.client() as client:
                assert await client.jobs() == []

    asyncio.run(scenario())


def test_registration_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h:
            first, second = h.agent("n1"), h.agent("n1")
            await first.register()
            await second.send(Register(protocol=PROTOCOL_VERSION, node="n1", runs=[],
                                       facts=NodeFacts("h", "a", 1, 1, "k")))
            assert (await second.expect(Error)).code == "name-taken"
            old = h.agent("n2")
            await old.send(Register(protocol=PROTOCOL_VERSION + 1, node="n2", runs=[],
                                    facts=NodeFacts("h", "a", 1, 1, "k")))
            error = await old.expect(Error)
            assert error.code == "version" and str(PROTOCOL_VERSION) in error.message
            bad = h.agent("bad name!")
            await bad.send(Register(protocol=PROTOCOL_VERSION, node="bad name!", runs=[],
                                    facts=NodeFacts("h", "a", 1, 1, "k")))
            assert (await bad.expect(Error)).code == "bad-request"

    asyncio.run(scenario())


def test_run_updates_are_attributed_by_routing_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h, h.client() as client:
            owner, other = h.agent("n1"), h.agent("n2")
            await owner.register()
            await other.register()
            job = await client.submit(JobSpec(command=["true"], targets=["n1"]))
            run = await owner.expect(RunDispatch)
            await other.update(run.run_id, job["id"], RunState.SUCCEEDED, exit_code=0)
            error = await other.expect(Error)
            assert error.code == "bad-request" and "belongs to node n1" in error.message
            assert (await client.job(job["id"]))["runs"][0]["state"] == "dispatched"

    asyncio.run(scenario())


# --- liveness -----------------------------------------------------------------------------------


def test_node_lost_after_missed_heartbeats_and_ready_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db", **{"basic.interval": "0.1"}) as h, \
                h.client() as client:
            agent, events = h.agent(), h.events("evt.node.")
            await events.sync(agent)
            await agent.expect(Heartbeat)  # the manager heartbeats registered nodes
            lost = await events.wait_for(lambda t, m: m.state == "lost")
            assert lost.node == "n1" and lost.detail["silent_for"] >= 0.3
            assert (await client.nodes())[0]["state"] == "lost"
            await agent.send(Heartbeat())
            back = await events.wait_for(lambda t, m: m.state == "ready")
            assert back.node == "n1"

    asyncio.run(scenario())


@pytest.mark.parametrize("liveness", [3, 2])
def test_heartbeat_skipped_for_a_node_just_sent_something(tmp_path: Path, liveness: int) -> None:
    """Any message is proof of life, so with liveness ≥ 3 the manager does not
    heartbeat a node it sent something else within the interval (an agent gets
    a metric ack every second); with liveness 2 it always does. The passes are
    driven by hand with chosen clocks; the 100 s interval keeps the manager's
    own passes out of the way."""
    async def next_message(agent: FakeAgent) -> Message:
        async with asyncio.timeout(WAIT):
            return codec.decode(await agent.sock.recv_multipart())

    async def scenario() -> None:
        async with harness(tmp_path / "m.db", **{"basic.interval": "100",
                                                 "basic.liveness": str(liveness)}) as h:
            agent = h.agent()
            await agent.register()  # the welcome is the last message sent to n1
            h.mgr._next_heartbeat = 0.0
            await h.mgr.tick(time.monotonic() + 1.0)  # 1 s after the welcome
            h.mgr._next_heartbeat = 0.0
            await h.mgr.tick(time.monotonic() + 101.0)  # more than an interval after it
            first = await next_message(agent)
            assert isinstance(first, Heartbeat)
            # Then a metric ack, to see what the two passes sent and nothing more.
            push = make_socket(h.ctx, zmq.PUSH, SocketTuning())
            push.connect(h.mgr.pull_address)
            row = [time.time_ns(), 1.0]
            series = [["cpu", {"node": "n1"}, ["v"], [row]]]
            await push.send_multipart(codec.encode(MetricBatch(node="n1", seq=1, series=series)))
            second = await next_message(agent)
            if liveness >= 3:
                assert isinstance(second, MetricAck)
            else:  # the first pass sent one as well
                assert isinstance(second, Heartbeat)
                assert isinstance(await next_message(agent), MetricAck)
            push.close(linger=0)

    asyncio.run(scenario())


# --- restart -----------------------------------------------------------------------------------


def test_restart_keeps_jobs_and_reconciles(tmp_path: Path) -> None:
    db = tmp_path / "m.db"

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        try:
            async with harness(db, ctx) as h, h.client() as client:
                agent = h.agent()
                await agent.register()
                running = await client.submit(JobSpec(command=["a"], name="first"))
                run1 = await agent.expect(RunDispatch)
                await agent.update(run1.run_id, running["id"], RunState.RUNNING, pid=5)
                waiting = await client.submit(JobSpec(command=["b"], repeat=2))
                redo = await client.submit(JobSpec(command=["c"]))
                await until(lambda: _run_state(client, running["id"], "running"))
            # Manager 2: the agent is back with run 1 still running.
            async with harness(db, ctx) as h, h.client() as client:
                assert (await client.job(running["id"]))["name"] == "first"
                assert [j["id"] for j in await client.jobs()] == \
                    [redo["id"], waiting["id"], running["id"]]
                agent = h.agent()
                report = RunReport(run1.run_id, running["id"], RunState.RUNNING, pid=5)
                await agent.register(runs=[report])
                node = (await client.nodes())[0]
                assert (node["state"], node["running"]) == ("busy", [run1.run_id])
                await agent.update(run1.run_id, running["id"], RunState.SUCCEEDED, exit_code=0)
                await agent.expect(RunAck)
                assert (await client.job(running["id"]))["state"] == "succeeded"
                nxt = await agent.expect(RunDispatch)
                assert (nxt.job_id, nxt.iteration) == (waiting["id"], 1), "FIFO survives"
                # The agent re-registers without it: a lost dispatch is queued and sent again.
                await agent.register()
                assert (await agent.expect(RunDispatch)).run_id == nxt.run_id
        finally:
            ctx.destroy(linger=0)

    asyncio.run(scenario())


def test_runs_of_a_node_that_does_not_come_back_are_lost(tmp_path: Path) -> None:
    db = tmp_path / "m.db"

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        try:
            async with harness(db, ctx) as h, h.client() as client:
                agent = h.agent()
                await agent.register()
                job = await client.submit(JobSpec(command=["a"]))
                await agent.expect(RunDispatch)
            async with harness(db, ctx, **{"basic.interval": "0.1"}) as h, h.client() as client:
                done = await until(lambda: _state(client, job["id"], "failed"))
                assert done["runs"][0]["state"] == "lost"
                assert "did not come back" in done["runs"][0]["error"]
                # It comes back late, still running it, and with two runs nobody knows.
                late = h.agent()
                await late.register(runs=[
                    RunReport(done["runs"][0]["id"], job["id"], RunState.RUNNING),
                    RunReport("zz.n1.1", "zz", RunState.SUCCEEDED),
                    RunReport("yy.n1.1", "yy", RunState.RUNNING),
                ])
                assert (await late.expect(RunCancel)).run_id == done["runs"][0]["id"]
                assert (await late.expect(RunAck)).run_id == "zz.n1.1"
                assert (await late.expect(RunCancel)).run_id == "yy.n1.1"
                assert (await client.job(job["id"]))["runs"][0]["state"] == "lost"
        finally:
            ctx.destroy(linger=0)

    asyncio.run(scenario())


async def _state(client: ManagerClient, job_id: str, state: str) -> dict[str, Any] | None:
    job = await client.job(job_id)
    return job if job["state"] == state else None


async def _run_state(client: ManagerClient, job_id: str, state: str) -> bool:
    return bool((await client.job(job_id))["runs"][0]["state"] == state)


# --- metrics and the command ----------------------------------------------------------------------


def test_metric_batches_are_republished_as_received(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path / "m.db") as h:
            agent = h.agent()
            await agent.register()
            push = make_socket(h.ctx, zmq.PUSH, SocketTuning())
            push.connect(h.mgr.pull_address)
            events = h.events("m.")
            row = [time.time_ns(), 1.0]
            frames = codec.encode(MetricBatch(node="n1", seq=1, series=[["cpu", {}, ["v"], [row]]]))
            await push.send_multipart([b"bogus", b"\x00"])
            async with asyncio.timeout(WAIT):
                while True:  # until the subscription is live (slow joiner)
                    await push.send_multipart(frames)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            got = await events.sock.recv_multipart()
                        break
            assert got == [b"m.n1", *frames]
            assert h.mgr.ingest.counters["bad-unknown-type"] == 1
            assert h.mgr.counters["metrics.batches"] >= 1

    asyncio.run(scenario())


def test_main_refuses_bad_config_in_one_line(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    assert main(["--set", "basic.bind_port=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptap-manager: ") and err.count("\n") == 1 and "bind_port" in err
    ensure_keypair(tmp_path / "keys", "server")
    os.chmod(tmp_path / "keys" / "server.key_secret", 0o640)
    assert main(["--set", "security.curve=yes", "--set", f"security.keys_dir={tmp_path / 'keys'}",
                 "--set", f"state.path={tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err
    assert "mode 0640" in err and "chmod 600" in err and err.count("\n") == 1
    assert main(["--set", "basic.bind_addr=0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "not loopback" in err and "set [security] curve = yes" in err
    assert "allow_insecure" in err and err.count("\n") == 1


def test_python_m_manager_main_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "manager.main", "--set", "basic.bind_port=0",
         "--set", f"state.path={tmp_path / 'm.db'}", "--ready-file", str(ready)],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.02)  # wait-ok: poll step under a deadline
        port = json.loads(ready.read_text())["router"]

        async def ask() -> list[dict[str, Any]]:
            ctx = zmq.asyncio.Context()
            try:
                async with ManagerClient(f"tcp://127.0.0.1:{port}", ctx=ctx) as client:
                    return await client.nodes()
            finally:
                ctx.destroy(linger=0)

        assert asyncio.run(ask()) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
