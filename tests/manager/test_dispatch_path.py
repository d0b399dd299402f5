"""The dispatch path's shortcuts change nothing a consumer sees (manager/bookkeeper.py,
manager/scheduler.py): a job ends with its last run whatever order its runs end in,
with one job event per change; a run's events carry its whole record; and a report
counts as a change only when it changes something.

Handlers are called as plain functions over the real registry, book, bookkeeper
and store (tests/manager/handler_world.py); no socket is opened.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bus.messages import JobSpec, JobSubmit, RunAck, RunDispatch, RunReport, RunState, RunUpdate
from manager import scheduler
from manager.agent_handlers import handle_run_update
from manager.client_handlers import handle_job_submit
from manager.scheduler import Run
from tests.manager.handler_world import World, no_sockets  # noqa: F401 - a fixture

NODES = [f"n{i}" for i in range(6)]


def peer(name: str) -> bytes:
    return b"peer-" + name.encode()


async def submit(world: World) -> list[RunDispatch]:
    """A job on every node; its dispatches, once stored."""
    for name in NODES:
        world.join(name, peer(name))
    await handle_job_submit(world.clients(), b"client",
                            JobSubmit(req_id="r1", spec=JobSpec(command=["true"],
                                                                targets=NODES)))
    await world.bookkeeper.flush()
    return [m for _, m in world.wire.sent if isinstance(m, RunDispatch)]


async def report(world: World, run: RunDispatch, state: RunState, **fields: Any) -> None:
    node = run.run_id.split(".")[1]
    await handle_run_update(world.agents(), peer(node), RunUpdate(run=RunReport(
        run_id=run.run_id, job_id=run.job_id, state=state, **fields)))


def job_events(world: World) -> list[str]:
    return [e["state"] for _, e in world.wire.published if e["kind"] == "job"]


@pytest.mark.parametrize("order", [
    [0, 1, 2, 3, 4, 5],   # in the job's order
    [5, 4, 3, 2, 1, 0],   # the other way round
    [1, 2, 3, 4, 5, 0],   # the first run last
    [0, 1, 2, 4, 5, 3],   # one in the middle last
])
@pytest.mark.usefixtures("no_sockets")
def test_a_job_ends_with_its_last_run_in_any_order(order: list[int]) -> None:
    async def scenario() -> None:
        world = World()
        runs = await submit(world)
        assert len(runs) == len(NODES)
        for run in runs:
            await report(world, run, RunState.RUNNING, started_at=1.0)
        await world.bookkeeper.flush()
        for i, k in enumerate(order):
            await report(world, runs[k], RunState.SUCCEEDED, exit_code=0, ended_at=2.0)
            await world.bookkeeper.flush()
            job = world.store.job(runs[0].job_id)
            assert job is not None
            assert job[0].state.value == ("succeeded" if i == len(order) - 1 else "running")
        assert job_events(world) == ["queued", "running", "succeeded"]
        acked = {m.run_id for _, m in world.wire.sent if isinstance(m, RunAck)}
        assert acked == {r.run_id for r in runs}

    asyncio.run(scenario())


@pytest.mark.usefixtures("no_sockets")
def test_a_job_whose_run_fails_and_is_requeued_is_derived_in_full() -> None:
    async def scenario() -> None:
        world = World()
        runs = await submit(world)
        for run in runs[:-1]:
            await report(world, run, RunState.SUCCEEDED, exit_code=0, ended_at=2.0)
        await world.bookkeeper.flush()
        assert job_events(world)[-1] == "running"
        last = world.book.runs[runs[-1].run_id]
        scheduler.set_state(last, RunState.QUEUED, 3.0)  # as a node coming back without it
        await world.bookkeeper.commit([last])
        assert world.book.jobs[runs[0].job_id].state.value == "running"
        await world.bookkeeper.dispatch_queued()
        await world.bookkeeper.flush()
        await report(world, runs[-1], RunState.FAILED, exit_code=1, ended_at=4.0)
        await world.bookkeeper.flush()
        assert job_events(world)[-1] == "failed"

    asyncio.run(scenario())


@pytest.mark.usefixtures("no_sockets")
def test_each_run_event_carries_the_run_as_stored() -> None:
    async def scenario() -> None:
        world = World()
        runs = await submit(world)
        await report(world, runs[0], RunState.RUNNING, pid=42, started_at=1.5)
        await world.bookkeeper.flush()
        batches = [e for _, e in world.wire.published if e["kind"] == "runs"]
        assert all(e["job_id"] == runs[0].job_id for e in batches)
        changes = [r for e in batches for r in e["detail"]["runs"]
                   if r["id"] == runs[0].run_id]
        assert [r["state"] for r in changes] == ["dispatched", "running"]
        stored = world.store.run(runs[0].run_id)
        assert stored is not None
        assert changes[-1] == stored.to_dict()
        name = runs[0].run_id.split(".")[1]
        node = [e for _, e in world.wire.published if e["kind"] == "node" and e["node"] == name]
        assert node[0]["state"] == "busy" and node[0]["detail"]["running"] == [runs[0].run_id]
        assert node[0]["detail"]["facts"]["hostname"] == node[0]["node"]

    asyncio.run(scenario())


def test_a_report_is_a_change_only_when_it_changes_something() -> None:
    run = Run(id="j.n.1", job_id="j", node="n", iteration=1, state=RunState.DISPATCHED)

    def take(state: RunState, **fields: Any) -> bool:
        return scheduler.apply_report(run, RunReport(run_id=run.id, job_id="j", state=state,
                                                     **fields))

    assert take(RunState.RUNNING, pid=7, started_at=1.0)
    assert not take(RunState.RUNNING, pid=7, started_at=1.0)   # a repeat
    assert not take(RunState.RUNNING)                          # nothing reported
    assert take(RunState.RUNNING, stdout_tail="hello")         # output came
    assert not take(RunState.RUNNING, stdout_tail="")          # "" leaves it as it was
    assert run.stdout_tail == "hello" and run.pid == 7
    assert take(RunState.SUCCEEDED, exit_code=0, ended_at=2.0)  # 0 is an exit code
    assert run.exit_code == 0 and run.state is RunState.SUCCEEDED
    assert not take(RunState.SUCCEEDED, exit_code=0, ended_at=2.0)  # a resend
