"""The agent's side of the control-plane protocol (docs/protocol.md).

The "manager" here is a real ROUTER socket on 127.0.0.1, made by the same socket
factory and speaking the real codec, driven step by step by each test. It
stands in for ptap-manager so that every branch of the agent's session
(welcome, errors, silence, garbage) can be produced on demand; the manager's
own side is tested in tests/manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
import zmq
import zmq.asyncio

from agent.link import Link, LinkHooks, LinkTiming
from agent.runner import RunnerOptions
from bus import codec
from bus.messages import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Message,
    MetricAck,
    NodeFacts,
    Register,
    RunAck,
    RunCancel,
    RunDispatch,
    RunState,
    RunUpdate,
    Welcome,
)
from bus.sockets import make_socket

FACTS = NodeFacts(hostname="host1", address="127.0.0.1", cpus=2, memory_bytes=1 << 30,
                  kernel="6.1.0", labels=["lab"], agent_version="0.1.0")
WELCOME = Welcome(node="n1", heartbeat_interval=0.1, liveness=5, last_seq=7)
TIMING = LinkTiming(interval=0.1, liveness=3, backoff_min=0.05, backoff_max=0.2,
                    version_retry=0.3)
DEADLINE = 10.0

M = TypeVar("M", bound=Message)


class FakeManager:
    """A ROUTER driven by the test. ``expect`` answers heartbeats as a manager would."""

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self.sock = make_socket(ctx, zmq.ROUTER)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.answer_heartbeats = True
        self.skipped: list[Message] = []

    async def send(self, ident: bytes, msg: Message) -> None:
        await self.sock.send_multipart([ident, *codec.encode(msg)])

    async def send_raw(self, ident: bytes, *frames: bytes) -> None:
        await self.sock.send_multipart([ident, *frames])

    async def recv(self) -> tuple[bytes, Message]:
        frames = await asyncio.wait_for(self.sock.recv_multipart(), DEADLINE)
        ident, msg = frames[0], codec.decode(frames[1:])
        if isinstance(msg, Heartbeat) and self.answer_heartbeats:
            await self.send(ident, Heartbeat())
        return ident, msg

    async def expect(self, kind: type[M],
                     where: Callable[[M], bool] = lambda m: True) -> tuple[bytes, M]:
        """The next message of ``kind`` matching ``where``; others go to ``skipped``."""
        async with asyncio.timeout(DEADLINE):
            while True:
                ident, msg = await self.recv()
                if isinstance(msg, kind) and where(msg):
                    return ident, msg
                self.skipped.append(msg)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Keep the conversation going until ``condition()`` holds."""
        async with asyncio.timeout(DEADLINE):
            while not condition():
                self.skipped.append((await self.recv())[1])

    async def register(self, link: Link) -> tuple[bytes, Register]:
        ident, reg = await self.expect(Register)
        await self.send(ident, WELCOME)
        await self.until(link.registered.is_set)
        return ident, reg


@contextlib.asynccontextmanager
async def session(tmp_path: Path,
                  hooks: LinkHooks | None = None) -> AsyncIterator[tuple[Link, FakeManager]]:
    """A Link running against a FakeManager; on exit the link must still be alive."""
    ctx = zmq.asyncio.Context()
    manager = FakeManager(ctx)
    link = Link(f"tcp://127.0.0.1:{manager.port}", "n1", FACTS, ctx=ctx,
                runner_options=RunnerOptions(workdir=str(tmp_path / "runs"), kill_grace=0.5),
                timing=TIMING, hooks=hooks)
    task = asyncio.create_task(link.run())
    try:
        yield link, manager
        assert not task.done(), "the link's loop ended"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await link.aclose()
        manager.sock.close(linger=0)
        ctx.destroy(linger=0)


def dispatch(run_id: str, command: list[str]) -> RunDispatch:
    return RunDispatch(run_id=run_id, job_id=run_id.split(".")[0], iteration=1, command=command)


def update_of(run_id: str, state: RunState) -> Callable[[RunUpdate], bool]:
    return lambda m: m.run.run_id == run_id and m.run.state is state


def test_register_welcome_heartbeats(tmp_path: Path) -> None:
    welcomed: list[Welcome] = []
    hooks = LinkHooks(welcome=[welcomed.append])

    async def scenario() -> None:
        async with session(tmp_path, hooks) as (link, manager):
            ident, reg = await manager.register(link)
            assert (reg.protocol, reg.node, reg.facts, reg.runs) == (
                PROTOCOL_VERSION, "n1", FACTS, [])
            for _ in range(3):
                beat_from, beat = await manager.expect(Heartbeat)
                assert (beat_from, beat.running) == (ident, 0)
            assert link.sessions == 1
            assert not any(isinstance(m, Register) for m in manager.skipped)

    asyncio.run(scenario())
    assert welcomed == [WELCOME]


def test_no_welcome_means_new_connection(tmp_path: Path) -> None:
    """Before a welcome the agent sends no heartbeats; silence makes it reconnect."""
    async def scenario() -> None:
        async with session(tmp_path) as (link, manager):
            first, _ = await manager.expect(Register)
            second, msg = await manager.recv()  # the very next message
            assert isinstance(msg, Register) and second != first
            assert link.sessions >= 2

    asyncio.run(scenario())


def test_dispatch_updates_and_final_resent_until_ack(tmp_path: Path) -> None:
    seen: dict[str, list[Any]] = {"started": [], "ended": [], "lines": [], "acks": []}
    hooks = LinkHooks(run_started=[lambda r: seen["started"].append(r.run_id)],
                      run_ended=[lambda r: seen["ended"].append(r.state)],
                      output_line=[lambda r, s, line: seen["lines"].append((r.run_id, s, line))],
                      metric_ack=[lambda m: seen["acks"].append(m.seqs)])

    async def scenario() -> None:
        async with session(tmp_path, hooks) as (link, manager):
            ident, _ = await manager.register(link)
            await manager.send(ident, dispatch("j1.n1.1", ["sh", "-c", "echo hello"]))
            _, running = await manager.expect(RunUpdate, update_of("j1.n1.1", RunState.RUNNING))
            assert running.run.pid and running.run.started_at
            done = update_of("j1.n1.1", RunState.SUCCEEDED)
            _, final = await manager.expect(RunUpdate, done)
            assert (final.run.exit_code, final.run.stdout_tail) == (0, "hello\n")
            await manager.expect(RunUpdate, done)  # resent: no ack yet
            await manager.send(ident, dispatch("j1.n1.1", ["false"]))  # dispatched again
            await manager.expect(RunUpdate, done)
            await manager.send(ident, MetricAck(seqs=[1, 2]))
            await manager.send(ident, RunAck(run_id="j1.n1.1"))
            await manager.until(lambda: not link.runs)
            for _ in range(2):  # let what was queued before the ack drain away
                await manager.expect(Heartbeat)
            manager.skipped.clear()
            for _ in range(3):
                await manager.expect(Heartbeat)
            assert not any(isinstance(m, RunUpdate) for m in manager.skipped)

    asyncio.run(scenario())
    assert seen == {"started": ["j1.n1.1"], "ended": [RunState.SUCCEEDED],
                    "lines": [("j1.n1.1", "stdout", "hello")], "acks": [[1, 2]]}


def test_not_registered_reregisters_with_held_runs(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path) as (link, manager):
            ident, _ = await manager.register(link)
            await manager.send(ident, dispatch("j1.n1.1", ["true"]))
            await manager.expect(RunUpdate, update_of("j1.n1.1", RunState.SUCCEEDED))
            await manager.send(ident, dispatch("j2.n1.1", ["sleep", "30"]))
            await manager.expect(RunUpdate, update_of("j2.n1.1", RunState.RUNNING))
            await manager.send(ident, Error(req_id="", code="not-registered", message="who?"))
            again, reg = await manager.expect(Register)
            assert again == ident  # same connection, at once
            assert {(r.run_id, r.state) for r in reg.runs} == {
                ("j1.n1.1", RunState.SUCCEEDED), ("j2.n1.1", RunState.RUNNING)}
            await manager.send(ident, WELCOME)
            await manager.send(ident, RunCancel(run_id="j2.n1.1", reason="test"))
            _, cancelled = await manager.expect(
                RunUpdate, update_of("j2.n1.1", RunState.CANCELLED))
            assert cancelled.run.error == "test"

    asyncio.run(scenario())


def test_runs_still_going_are_ended_when_the_link_closes(tmp_path: Path) -> None:
    async def scenario() -> Link:
        async with session(tmp_path) as (link, manager):
            ident, _ = await manager.register(link)
            await manager.send(ident, dispatch("j1.n1.1", ["sleep", "30"]))
            await manager.expect(RunUpdate, update_of("j1.n1.1", RunState.RUNNING))
        return link

    link = asyncio.run(scenario())
    assert link.runs["j1.n1.1"].state is RunState.CANCELLED


def test_manager_silence_reregisters_on_new_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path) as (link, manager):
            ident, _ = await manager.register(link)
            manager.answer_heartbeats = False
            again, _ = await manager.expect(Register)
            assert again != ident and link.sessions == 2
            assert not link.registered.is_set()
            manager.answer_heartbeats = True
            await manager.send(again, WELCOME)
            await manager.until(link.registered.is_set)
            beat_from, _ = await manager.expect(Heartbeat)
            assert beat_from == again

    asyncio.run(scenario())


def test_a_silent_manager_is_tried_again_within_one_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """However long the manager stays away, the agent is never more than one interval
    without a socket: a restarted manager gives a node liveness × interval plus one
    interval to come back before its running runs are called lost."""
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        manager = FakeManager(ctx)
        link = Link(f"tcp://127.0.0.1:{manager.port}", "n1", FACTS, ctx=ctx,
                    runner_options=RunnerOptions(workdir=str(tmp_path / "runs")),
                    timing=LinkTiming(interval=0.1, liveness=2, backoff_min=0.4,
                                      backoff_max=5.0))
        task = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(DEADLINE):
                for _ in range(4):  # never answered: each one a silent session
                    await manager.expect(Register)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            manager.sock.close(linger=0)
            ctx.destroy(linger=0)

    with caplog.at_level(logging.INFO, logger="agent.dealer_loop"):
        asyncio.run(scenario())
    delays = [float(r.getMessage().rsplit(" in ", 1)[1].removesuffix(" s"))
              for r in caplog.records if "new connection to" in r.getMessage()]
    assert len(delays) >= 3 and max(delays) <= 0.1, delays


def test_name_taken_and_version_make_it_retry_on_new_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path) as (link, manager):
            ident, _ = await manager.expect(Register)
            await manager.send(ident, Error(req_id="", code="name-taken", message="n1 is live"))
            second, _ = await manager.expect(Register)
            assert second != ident
            await manager.send(second, Error(req_id="", code="version", message="want 2"))
            third, _ = await manager.expect(Register)
            assert third not in (ident, second)
            assert not any(isinstance(m, Heartbeat) for m in manager.skipped)
            await manager.send(third, WELCOME)
            await manager.until(link.registered.is_set)

    asyncio.run(scenario())


def test_garbage_from_the_manager_is_survived(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    garbage = [
        [b"junk"],
        [b"heartbeat", b"\xc1"],
        [b"no.such.type", msgpack.packb({})],
        [b"run.dispatch", msgpack.packb({"run_id": 5})],
        [b"run.dispatch", msgpack.packb([1, 2, 3])],
        [b"a", b"b", b"c"],
        [b"\xff" * 100, b"\x00" * 1000],
        codec.encode(Register(protocol=1, node="x", facts=FACTS)),  # not for agents
        codec.encode(RunAck(run_id="never-seen")),
        codec.encode(RunCancel(run_id="never-seen")),
        codec.encode(Error(req_id="", code="schema", message="what")),
    ]

    async def scenario() -> None:
        async with session(tmp_path) as (link, manager):
            ident, _ = await manager.register(link)
            for frames in garbage:
                await manager.send_raw(ident, *frames)
            await manager.send(ident, dispatch("j1.n1.1", ["true"]))
            await manager.expect(RunUpdate, update_of("j1.n1.1", RunState.SUCCEEDED))
            assert link.sessions == 1 and link.registered.is_set()
            # Every bad frame is counted, but a burst of them is one log line.
            assert link._trouble.totals == {"bad-frame": 7, "unexpected-message": 1,
                                            "manager-error": 1}

    caplog.set_level(logging.WARNING, logger="agent.link")
    asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if r.name == "agent.link"]
    assert sum("bad frame" in line for line in said) == 1, said


def test_pending_key_retries_quietly_until_accepted(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    pending = Error(req_id="", code="pending",
                    message="key for node n1 is pending; run ptap keys accept n1 on the manager")

    async def scenario() -> None:
        async with session(tmp_path) as (link, manager):
            idents = []
            for _ in range(4):
                ident, _ = await manager.expect(Register)
                idents.append(ident)
                await manager.send(ident, pending)
            ident, _ = await manager.expect(Register)
            await manager.send(ident, Error(req_id="", code="key-mismatch", message="not n1"))
            ident, _ = await manager.expect(Register)  # slowly (version_retry), but again
            idents.append(ident)
            assert len(set(idents)) == len(idents), "each attempt is a new connection"
            await manager.send(ident, WELCOME)
            await manager.until(link.registered.is_set)

    caplog.set_level(logging.INFO, logger="agent.link")
    asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if r.name == "agent.link"]
    assert sum("is pending" in line for line in said) == 1, said  # once a minute at most
    assert sum("registering with" in line for line in said) == 1, said  # retries are quiet
    assert any("key-mismatch" in line for line in said)
    assert sum("registered with" in line for line in said) == 1


def test_a_shorter_heartbeat_from_the_welcome_applies_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        manager = FakeManager(ctx)
        slow = LinkTiming(interval=30.0, liveness=3)  # the agent's own config, until welcomed
        link = Link(f"tcp://127.0.0.1:{manager.port}", "n1", FACTS, ctx=ctx,
                    runner_options=RunnerOptions(workdir=str(tmp_path / "runs")), timing=slow)
        task = asyncio.create_task(link.run())
        try:
            await manager.register(link)  # WELCOME says 0.1 s
            async with asyncio.timeout(2.0):  # not 30 s: a manager would call it lost by then
                await manager.expect(Heartbeat)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await link.aclose()
            manager.sock.close(linger=0)
            ctx.destroy(linger=0)

    asyncio.run(scenario())


def test_input_behind_a_send_from_elsewhere_is_read_at_once(tmp_path: Path) -> None:
    """The socket's descriptor signals once for input that an EVENTS read or a send (here:
    a run's update, sent while the session sleeps) may consume; the message must not
    wait for the next beat."""
    acked = asyncio.Event()
    seqs: list[list[int]] = []
    hooks = LinkHooks(metric_ack=[lambda m: (seqs.append(m.seqs), acked.set())])
    slow = Welcome(node="n1", heartbeat_interval=30.0, liveness=5, last_seq=0)

    async def scenario() -> None:
        async with session(tmp_path, hooks) as (link, manager):
            ident, _ = await manager.expect(Register)
            await manager.send(ident, slow)
            await manager.until(link.registered.is_set)
            async with asyncio.timeout(DEADLINE):
                while not link._alarm.sleeping:  # until the session task sleeps (for 30 s)
                    await asyncio.sleep(0)  # wait-ok: one turn of the loop, no time
            await manager.send(ident, MetricAck(seqs=[42]))
            sock = link._sock
            assert sock is not None
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            # Blocks the loop until the ack is queued, and takes the descriptor's signal.
            assert poller.poll(int(DEADLINE * 1000)), "the ack never arrived"
            link._send(Heartbeat(running=0))
            async with asyncio.timeout(5):  # the next beat is 15 s or more away
                await acked.wait()
            assert seqs == [[42]]

    asyncio.run(scenario())
