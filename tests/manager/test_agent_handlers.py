"""manager/agent_handlers.py as plain calls: ``agent.register``, ``heartbeat`` and
``run.update`` over the real registry, book, bookkeeper and an in-memory store,
with a fixed clock and a recording wire (tests/manager/handler_world.py). No
socket is opened; tests/manager/test_control.py drives the same handlers over
real ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bus.messages import (
    Error,
    Heartbeat,
    JobSpec,
    RunAck,
    RunCancel,
    RunDispatch,
    RunReport,
    RunState,
    RunUpdate,
    Welcome,
)
from manager import scheduler
from manager.agent_handlers import handle_heartbeat, handle_register, handle_run_update
from manager.keys import KeyState, Role
from manager.registry import OFFSET_MIN_READINGS
from manager.scheduler import Job, Run
from tests.manager.handler_world import (
    World,
    agent_key,
    curve_access,
    no_sockets,
    register_msg,
)

pytestmark = pytest.mark.usefixtures("no_sockets")
__all__ = ["no_sockets"]  # the fixture, imported for pytest to find


def job_on(world: World, node: str, state: RunState = RunState.QUEUED) -> Run:
    """A one-run job on ``node``, stored and in the book, its run in ``state``."""
    job = Job(id="job1", spec=JobSpec(command=["true"], targets=[node]),
              created_at=world.time.wall)
    run = Run(id="job1.run", job_id="job1", node=node, iteration=1)
    if state is not RunState.QUEUED:
        scheduler.set_state(run, RunState.DISPATCHED, world.time.wall)
    if state is RunState.RUNNING:
        scheduler.set_state(run, RunState.RUNNING, world.time.wall)
    world.store.add_job(job, [run])
    world.book.add(job, [run])
    return run


def test_register_welcomes_a_node_records_its_facts_and_publishes_it() -> None:
    world = World(last_seqs={"n1": 41})

    async def scenario() -> None:
        await handle_register(world.agents(), b"p1", register_msg("n1"))

    asyncio.run(scenario())
    assert world.wire.all_to(b"p1") == [Welcome(node="n1", heartbeat_interval=1.0, liveness=3,
                                            last_seq=41)]
    node = world.registry.get("n1")
    assert node is not None and node.routing_id == b"p1" and node.state.value == "ready"
    assert world.store.facts_at("n1", None) is not None
    assert "evt.node.n1" in world.wire.topics()


def test_register_refuses_another_protocol_and_a_bad_name() -> None:
    world = World()

    async def scenario() -> None:
        await handle_register(world.agents(), b"p1", register_msg("n1", protocol=999))
        await handle_register(world.agents(), b"p2", register_msg("../etc"))

    asyncio.run(scenario())
    [version] = world.wire.to(b"p1", Error)
    assert version.code == "version" and "install the same ptap version" in version.message
    [bad] = world.wire.to(b"p2", Error)
    assert bad.code == "bad-request" and "'../etc' is not 1-64 letters" in bad.message
    assert world.registry.nodes() == []
    assert world.bad_frames.totals["version"] == 1


def test_a_live_name_is_refused_until_its_connection_is_gone() -> None:
    world = World(connected={b"p1"})

    async def scenario() -> None:
        await handle_register(world.agents(), b"p1", register_msg("n1"))
        await handle_register(world.agents(), b"p2", register_msg("n1"))
        [taken] = world.wire.to(b"p2", Error)
        assert taken.code == "name-taken"
        world.connected.discard(b"p1")  # ROUTER dropped the old connection
        await handle_register(world.agents(), b"p2", register_msg("n1"))

    asyncio.run(scenario())
    assert len(world.wire.to(b"p2", Welcome)) == 1
    node = world.registry.get("n1")
    assert node is not None and node.routing_id == b"p2"


def test_register_queues_again_a_dispatched_run_the_node_does_not_hold_and_resends_it() -> None:
    world = World()
    world.join("n1", b"p1")
    run = job_on(world, "n1", RunState.DISPATCHED)

    async def scenario() -> None:
        await handle_register(world.agents(), b"p1", register_msg("n1"))
        await world.bookkeeper.flush()

    asyncio.run(scenario())
    [dispatch] = world.wire.to(b"p1", RunDispatch)
    assert dispatch.run_id == run.id
    stored = world.store.run(run.id)
    assert stored is not None and stored.state is RunState.DISPATCHED


def test_register_declares_lost_a_running_run_the_node_came_back_without() -> None:
    world = World()
    world.join("n1", b"p1")
    run = job_on(world, "n1", RunState.RUNNING)

    async def scenario() -> None:
        await handle_register(world.agents(), b"p1", register_msg("n1"))

    asyncio.run(scenario())
    stored = world.store.run(run.id)
    assert stored is not None and stored.state is RunState.LOST
    assert stored.error == "node n1 came back without this run"


def test_a_final_run_update_is_acked_only_once_stored() -> None:
    world = World()
    world.join("n1", b"p1")
    run = job_on(world, "n1", RunState.RUNNING)
    update = RunUpdate(run=RunReport(run_id=run.id, job_id="job1", state=RunState.SUCCEEDED,
                                     exit_code=0))

    async def scenario() -> None:
        await handle_run_update(world.agents(), b"p1", update)
        assert world.wire.to(b"p1", RunAck) == []  # staged, not stored yet
        stored = world.store.run(run.id)
        assert stored is not None and stored.state is RunState.RUNNING
        await world.bookkeeper.flush()

    asyncio.run(scenario())
    assert world.wire.to(b"p1", RunAck) == [RunAck(run_id=run.id)]
    stored = world.store.run(run.id)
    assert stored is not None and stored.state is RunState.SUCCEEDED and stored.exit_code == 0


def test_a_run_update_for_another_nodes_run_is_refused() -> None:
    world = World()
    world.join("n1", b"p1")
    world.join("n2", b"p2")
    run = job_on(world, "n1", RunState.RUNNING)
    update = RunUpdate(run=RunReport(run_id=run.id, job_id="job1", state=RunState.FAILED))

    asyncio.run(handle_run_update(world.agents(), b"p2", update))
    [refused] = world.wire.to(b"p2", Error)
    assert (refused.code, refused.message) == ("bad-request",
                                               "run job1.run belongs to node n1, not n2")
    assert run.state is RunState.RUNNING


def test_an_unknown_run_is_cancelled_if_it_runs_and_acked_if_it_ended() -> None:
    world = World()
    world.join("n1", b"p1")

    async def scenario() -> None:
        for state in (RunState.RUNNING, RunState.FAILED):
            report = RunReport(run_id="ghost", job_id="j", state=state)
            await handle_run_update(world.agents(), b"p1", RunUpdate(run=report))

    asyncio.run(scenario())
    assert world.wire.all_to(b"p1") == [
        RunCancel(run_id="ghost", reason="the manager holds no such active run"),
        RunAck(run_id="ghost")]
    assert world.bad_frames.totals["unknown-run"] == 2


def test_heartbeats_keep_the_clock_offset_and_warn_when_it_exceeds_the_interval() -> None:
    world = World()
    world.join("n1", b"p1")

    async def scenario() -> None:
        for _ in range(OFFSET_MIN_READINGS):  # the agent's clock is 5 s behind
            await handle_heartbeat(world.agents(), b"p1",
                                   Heartbeat(sent_at=world.time.wall - 5.0, spool_depth=7,
                                             app_dropped=3))

    asyncio.run(scenario())
    node = world.registry.get("n1")
    assert node is not None and node.spool_depth == 7
    assert node.app_dropped == 3 and node.to_dict(0.0, 0.0)["app_dropped"] == 3
    assert node.clock_offset == pytest.approx(5.0)
    assert world.bad_frames.totals["clock-offset"] == 1
    assert world.wire.sent == []  # a heartbeat is never answered


def test_with_curve_a_new_key_waits_pending_and_once_accepted_is_welcomed(
        tmp_path: Path) -> None:
    world = World(access=curve_access(tmp_path / "keys"))
    assert world.access is not None
    key = agent_key()

    async def scenario() -> None:
        await handle_register(world.agents(), b"p1", register_msg("n1"), key, "127.0.0.1")
        assert world.access is not None
        world.access.keys.set_state("n1", KeyState.ACCEPTED)
        await handle_register(world.agents(), b"p1", register_msg("n1"), key, "127.0.0.1")

    asyncio.run(scenario())
    pending, welcome = world.wire.all_to(b"p1")
    assert isinstance(pending, Error) and pending.code == "pending"
    assert pending.message == "key for node n1 is pending; run ptap keys accept n1 on the manager"
    assert isinstance(welcome, Welcome)
    assert world.access.keys.who(key).role is Role.AGENT
    assert world.access.node_keys == {"n1": key}


def test_with_curve_the_same_key_takes_over_a_connection_silent_for_two_heartbeats(
        tmp_path: Path) -> None:
    world = World(access=curve_access(tmp_path / "keys"), connected={b"p1", b"p2"})
    assert world.access is not None
    key = agent_key()
    world.access.keys.request(key, "n1", auto_accept=True)

    async def scenario() -> None:
        await handle_register(world.agents(), b"p1", register_msg("n1"), key, "127.0.0.1")
        # A clone with the same key while the first still speaks: refused.
        await handle_register(world.agents(), b"p2", register_msg("n1"), key, "127.0.0.1")
        [taken] = world.wire.to(b"p2", Error)
        assert taken.code == "name-taken"
        world.time.mono += 2.0  # two heartbeat intervals of silence on p1 (a partition)
        await handle_register(world.agents(), b"p2", register_msg("n1"), key, "127.0.0.1")

    asyncio.run(scenario())
    assert len(world.wire.to(b"p2", Welcome)) == 1
    node = world.registry.get("n1")
    assert node is not None and node.routing_id == b"p2"
