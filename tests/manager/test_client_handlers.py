"""manager/client_handlers.py as plain calls: jobs and agent keys over the real
registry, book, bookkeeper, in-memory store and key store, with a recording wire
(tests/manager/handler_world.py). No socket is opened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bus.messages import (
    Error,
    JobCancel,
    JobGet,
    JobsList,
    JobSpec,
    JobSubmit,
    Keys,
    Reply,
    RunCancel,
    RunDispatch,
    RunState,
)
from manager import scheduler
from manager.client_handlers import (
    handle_job_cancel,
    handle_job_get,
    handle_job_submit,
    handle_jobs_list,
    handle_keys,
)
from manager.keys import KeyState
from tests.manager.handler_world import World, agent_key, curve_access, no_sockets

pytestmark = pytest.mark.usefixtures("no_sockets")
__all__ = ["no_sockets"]  # the fixture, imported for pytest to find
CLIENT = b"client"


def only_reply(world: World) -> Reply:
    [reply] = world.wire.to(CLIENT, Reply)
    return reply


def only_error(world: World) -> Error:
    [error] = world.wire.to(CLIENT, Error)
    return error


def test_submit_replies_with_the_stored_job_before_its_runs_go_out() -> None:
    world = World()
    world.join("n1", b"p1")
    world.join("n2", b"p2")
    spec = JobSpec(command=["true"], targets=["all"])

    asyncio.run(handle_job_submit(world.clients(), CLIENT, JobSubmit(req_id="r1", spec=spec)))
    reply = only_reply(world)
    job_id = reply.result["id"]
    assert reply.req_id == "r1" and [r["node"] for r in reply.result["runs"]] == ["n1", "n2"]
    assert world.store.job(job_id) is not None
    peers = [peer for peer, _ in world.wire.sent]
    assert peers[0] == CLIENT and sorted(peers[1:]) == [b"p1", b"p2"]
    assert all(isinstance(m, RunDispatch) for p, m in world.wire.sent if p != CLIENT)
    assert f"evt.job.{job_id}" in world.wire.topics()


def test_submit_to_an_unknown_node_is_refused_and_stores_nothing() -> None:
    world = World()
    spec = JobSpec(command=["true"], targets=["nowhere"])

    asyncio.run(handle_job_submit(world.clients(), CLIENT, JobSubmit(req_id="r", spec=spec)))
    error = only_error(world)
    assert error.code == "bad-request" and error.message.startswith("job refused: ")
    assert world.store.jobs(10) == [] and world.book.jobs == {}


def test_with_curve_a_node_whose_key_was_revoked_gets_no_run(tmp_path: Path) -> None:
    world = World(access=curve_access(tmp_path / "keys"))
    assert world.access is not None
    for name in ("n1", "n2"):
        key = agent_key()
        world.access.keys.request(key, name, auto_accept=True)
        world.access.node_keys[name] = key
        world.join(name, name.encode())
    world.access.keys.set_state("n1", KeyState.REVOKED)

    async def scenario() -> None:
        named = JobSpec(command=["true"], targets=["n1"])
        await handle_job_submit(world.clients(), CLIENT, JobSubmit(req_id="a", spec=named))
        every = JobSpec(command=["true"], targets=["all"])
        await handle_job_submit(world.clients(), CLIENT, JobSubmit(req_id="b", spec=every))

    asyncio.run(scenario())
    assert only_error(world).message == \
        "job refused: node n1's key is not accepted (see ptap keys list)"
    assert [r["node"] for r in only_reply(world).result["runs"]] == ["n2"]


def test_jobs_list_is_newest_first_and_job_get_says_not_found() -> None:
    world = World()
    world.join("n1", b"p1")

    async def scenario() -> list[str]:
        ids = []
        for i in range(3):
            world.time.wall += 1
            spec = JobSpec(command=["true"], targets=["n1"])
            await handle_job_submit(world.clients(), CLIENT, JobSubmit(req_id=f"s{i}",
                                                                        spec=spec))
            ids.append(world.wire.to(CLIENT, Reply)[-1].result["id"])
        world.wire.sent.clear()
        await handle_jobs_list(world.clients(), CLIENT, JobsList(req_id="l", limit=2))
        await handle_job_get(world.clients(), CLIENT, JobGet(req_id="g", job_id=ids[0]))
        await handle_job_get(world.clients(), CLIENT, JobGet(req_id="x", job_id="nope"))
        return ids

    ids = asyncio.run(scenario())
    listed, got = world.wire.to(CLIENT, Reply)
    assert [j["id"] for j in listed.result["jobs"]] == [ids[2], ids[1]]
    assert got.result["id"] == ids[0]
    assert (only_error(world).req_id, only_error(world).code) == ("x", "not-found")


def test_cancel_ends_queued_runs_and_asks_running_ones_to_stop() -> None:
    world = World()
    world.join("n1", b"p1")
    world.join("n2", b"p2")

    async def scenario() -> str:
        """The id of the run that was running."""
        spec = JobSpec(command=["sleep", "9"], targets=["n1", "n2"])
        await handle_job_submit(world.clients(), CLIENT, JobSubmit(req_id="s", spec=spec))
        job_id: str = world.wire.to(CLIENT, Reply)[0].result["id"]
        running, queued = world.book.runs_of(job_id)
        scheduler.set_state(running, RunState.RUNNING, world.time.wall)
        scheduler.set_state(queued, RunState.QUEUED, world.time.wall)
        world.wire.sent.clear()
        await handle_job_cancel(world.clients(), CLIENT, JobCancel(req_id="c", job_id=job_id))
        await handle_job_cancel(world.clients(), CLIENT, JobCancel(req_id="u", job_id="nope"))
        return running.id

    running_id = asyncio.run(scenario())
    states = {r["node"]: r["state"] for r in only_reply(world).result["runs"]}
    assert states == {"n1": "running", "n2": "cancelled"}
    assert world.wire.to(b"p1", RunCancel) == [RunCancel(run_id=running_id,
                                                         reason="job cancelled")]
    assert world.wire.all_to(b"p2") == []
    assert only_error(world).code == "not-found"


def test_keys_without_curve_is_one_clear_refusal() -> None:
    world = World()
    asyncio.run(handle_keys(world.clients(), CLIENT, Keys(req_id="k", action="list")))
    assert only_error(world).message == \
        "CURVE is off: keys are not used; set [security] curve = yes"


def test_keys_list_summary_accept_and_the_max_nodes_bound(tmp_path: Path) -> None:
    world = World(access=curve_access(tmp_path / "keys", max_nodes="1"))
    assert world.access is not None
    world.access.keys.request(agent_key(), "n1", auto_accept=True)
    world.access.keys.request(agent_key(), "n2", auto_accept=False)

    async def ask(action: str, node: str = "") -> Reply | Error:
        world.wire.sent.clear()
        await handle_keys(world.clients(), CLIENT, Keys(req_id="k", action=action, node=node))
        [(_, answer)] = world.wire.sent
        assert isinstance(answer, Reply | Error)
        return answer

    async def scenario() -> None:
        listed = await ask("list")
        assert isinstance(listed, Reply)
        assert [e["node"] for e in listed.result["pending"]] == ["n2"]
        summary = await ask("summary")
        assert isinstance(summary, Reply) and summary.result == {
            "pending": 1, "accepted": 1, "rejected": 0, "revoked": 0, "max_nodes": 1,
            "max_pending": 1000}
        full = await ask("accept", "n2")
        assert isinstance(full, Error) and full.code == "bad-request"
        assert full.message.startswith("cannot accept the key of node n2: 1 agent keys")
        revoked = await ask("revoke", "n1")
        assert isinstance(revoked, Reply) and revoked.result["state"] == "revoked"
        accepted = await ask("accept", "n2")
        assert isinstance(accepted, Reply) and accepted.result["state"] == "accepted"
        unknown = await ask("accept", "../server")
        assert isinstance(unknown, Error) and unknown.code == "not-found"
        odd = await ask("shred", "n1")
        assert isinstance(odd, Error) and odd.code == "bad-request"

    asyncio.run(scenario())
