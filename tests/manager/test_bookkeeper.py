"""The bookkeeper's batching: one SQLite commit per turn of the loop, events in order,
and no ack of a final state before it is stored (manager/bookkeeper.py).

The store is a real SQLite file, read back through a second connection as a
restarted manager would read it; the registry and the book are the real ones.
The manager's sockets are the two callables the bookkeeper is given: here they
record what would have been sent and published, and when.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bus import codec
from bus.messages import JobSpec, Message, NodeFacts, RunAck, RunState
from manager import scheduler
from manager.book import Book
from manager.bookkeeper import Bookkeeper
from manager.registry import Registry
from manager.scheduler import Job, Run
from manager.state import Store

NODES = [f"n{i}" for i in range(20)]
#: Runs staged in one turn before they are stored anyway (the manager's: 1,024).
MAX_STAGED = 50


class Wire:
    """What the bookkeeper sent and published, each with the run states SQLite held
    at that moment (read through a connection of its own)."""

    def __init__(self, db: Path) -> None:
        self.db = sqlite3.connect(db)
        self.sent: list[tuple[bytes, Message, dict[str, str]]] = []
        self.published: list[tuple[bytes, dict[str, Any], dict[str, str]]] = []

    def stored(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, state FROM runs").fetchall())

    async def send(self, peer: bytes, msg: Message) -> bool:
        self.sent.append((peer, msg, self.stored()))
        return True

    async def publish(self, topic: bytes, frames: list[bytes]) -> None:
        self.published.append((topic, codec.unpack(frames[1]), self.stored()))


@pytest.fixture
def world(tmp_path: Path) -> tuple[Bookkeeper, Store, Wire, list[Run]]:
    """20 registered nodes, one job with a dispatched run on each."""
    store = Store.open(tmp_path / "m.db")
    registry = Registry(1.0, 3)
    for i, name in enumerate(NODES):
        facts = NodeFacts(hostname=name, address="127.0.0.1", cpus=1, memory_bytes=1 << 30,
                          kernel="6.1")
        registry.register(name, bytes([i + 1]) * 5, facts, time.monotonic(), time.time())
    book, wire = Book(), Wire(tmp_path / "m.db")
    job = Job(id="job1", spec=JobSpec(command=["true"]), created_at=time.time())
    runs = [Run(id=f"job1.{n}.1", job_id="job1", node=n, iteration=1) for n in NODES]
    store.add_job(job, runs)
    book.add(job, runs)
    keeper = Bookkeeper(book, registry, lambda: store, send=wire.send, publish=wire.publish,
                        may_dispatch=lambda name: True, max_staged=MAX_STAGED)
    return keeper, store, wire, runs


class CountedSaves:
    """Counts the store's commits of run states (a spy around the real ``save``)."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = store.save

        def save(*args: Any) -> None:
            self.calls += 1
            real(*args)

        monkeypatch.setattr(store, "save", save)


def test_a_burst_is_one_commit_and_each_ack_follows_it(
        world: tuple[Bookkeeper, Store, Wire, list[Run]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    keeper, store, wire, runs = world

    async def scenario() -> None:
        await keeper.dispatch_queued()  # one pass: 20 dispatches, staged
        await asyncio.sleep(0)  # and stored when the turn ends  # wait-ok: one turn of the loop
        assert set(wire.stored().values()) == {"dispatched"}
        saves = CountedSaves(store, monkeypatch)
        wall = time.time()
        for run in runs:  # 20 agents' updates in one turn of the loop: running, then final
            scheduler.set_state(run, RunState.RUNNING, wall)
            await keeper.stage([run])
            scheduler.set_state(run, RunState.SUCCEEDED, wall)
            await keeper.stage([run], [(run.node.encode(), RunAck(run_id=run.id))],
                               dispatch_on=[run.node])
        assert wire.stored()[runs[0].id] == "dispatched", "nothing stored before the turn ends"
        assert not any(isinstance(m, RunAck) for _, m, _ in wire.sent)
        await asyncio.sleep(0)  # the turn ends  # wait-ok: one turn of the loop
        await asyncio.sleep(0)  # wait-ok: one turn of the loop
        assert saves.calls == 1
        acks = [(m.run_id, seen[m.run_id]) for _, m, seen in wire.sent if isinstance(m, RunAck)]
        assert acks == [(r.id, "succeeded") for r in runs], "acked only once stored"

    asyncio.run(scenario())
    batches = [(e["detail"]["runs"], seen) for _, e, seen in wire.published
               if e["kind"] == "runs"]
    # One event for the dispatch pass, one for the turn's 40 changes (20 runs, twice).
    assert [len(changes) for changes, _ in batches] == [20, 40]
    changes = [(r["id"], r["state"]) for runs_of_event, _ in batches for r in runs_of_event]
    for run in runs:  # every state of every run, in order, each published once stored
        assert [s for r, s in changes if r == run.id] == ["dispatched", "running", "succeeded"]
    assert [e["state"] for _, e, _ in wire.published if e["kind"] == "job"] == \
        ["running", "succeeded"]
    for runs_of_event, seen in batches:
        for change in runs_of_event:  # stored states only
            assert seen[change["id"]] in {"dispatched", "succeeded"}
    assert "job1" not in keeper.book.jobs, "the ended job is dropped once stored"


def test_a_freed_node_gets_its_next_run_after_the_ack_even_from_a_housekeeping_pass(
        world: tuple[Bookkeeper, Store, Wire, list[Run]]) -> None:
    """The housekeeping pass (every ``epoll_interval``) may run while a final state is
    staged, or while its flush sends the ack: it must leave that node to the flush."""
    keeper, store, wire, runs = world
    run = runs[0]
    nxt = Run(id="job2.n0.1", job_id="job2", node="n0", iteration=1)
    job2 = Job(id="job2", spec=JobSpec(command=["true"]), created_at=time.time())
    store.add_job(job2, [nxt])
    keeper.book.add(job2, [nxt])
    real_send = wire.send

    async def send(peer: bytes, msg: Message) -> bool:
        sent = await real_send(peer, msg)
        if isinstance(msg, RunAck):
            await keeper.dispatch_queued()  # a pass while the flush is sending the ack
        return sent

    wire.send = send  # type: ignore[method-assign]

    async def scenario() -> None:
        await keeper.dispatch_queued()  # job1 on every node; job2 waits for n0
        await keeper.flush()
        del wire.sent[:]
        scheduler.set_state(run, RunState.SUCCEEDED, time.time())
        await keeper.stage([run], [(b"n0", RunAck(run_id=run.id))], dispatch_on=["n0"])
        await keeper.dispatch_queued()  # a pass before the turn's flush
        assert wire.sent == [], "nothing before the final state is stored and acked"
        await keeper.flush()

    asyncio.run(scenario())
    order = [(type(m).__name__, getattr(m, "run_id", "")) for _, m, _ in wire.sent]
    assert order == [("RunAck", run.id), ("RunDispatch", nxt.id)]


def test_a_commit_that_fails_acks_nothing_and_is_retried(
        world: tuple[Bookkeeper, Store, Wire, list[Run]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    keeper, store, wire, runs = world
    run = runs[0]

    def disk_full(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    async def scenario() -> None:
        scheduler.set_state(run, RunState.FAILED, time.time())
        monkeypatch.setattr(store, "save", disk_full)
        await keeper.stage([run], [(b"peer", RunAck(run_id=run.id))])
        with pytest.raises(sqlite3.OperationalError):
            await keeper.flush()
        assert wire.sent == [] and wire.published == []
        monkeypatch.undo()
        await keeper.flush()  # the tick's flush, say
        assert [(m, seen[run.id]) for _, m, seen in wire.sent] == [
            (RunAck(run_id=run.id), "failed")]

    asyncio.run(scenario())


def test_a_long_burst_is_stored_without_waiting_for_its_end(
        world: tuple[Bookkeeper, Store, Wire, list[Run]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    keeper, store, wire, runs = world
    many = [Run(id=f"job2.n0.{i}", job_id="job2", node="n0", iteration=i, state=RunState.LOST)
            for i in range(1, MAX_STAGED + 1)]
    store.add_job(Job(id="job2", spec=JobSpec(command=["true"]), created_at=0.0), many)

    async def scenario() -> None:
        saves = CountedSaves(store, monkeypatch)
        for run in many:
            await keeper.stage([run])
        assert saves.calls == 1, "stored once the stage held MAX_STAGED runs, not at its end"

    asyncio.run(scenario())


def test_a_commit_stores_what_the_turn_staged_before_its_caller_acks(
        world: tuple[Bookkeeper, Store, Wire, list[Run]]) -> None:
    """An agent that registers again in the turn its final update came resends that
    final state, and registration acks it after :meth:`Bookkeeper.commit`, which
    must have stored it even when the registration itself changed nothing."""
    keeper, store, wire, runs = world
    run = runs[0]
    job2 = Job(id="job2", spec=JobSpec(command=["true"]), created_at=time.time())
    queued = Run(id="job2.n0.1", job_id="job2", node="n0", iteration=1)  # next on n0
    store.add_job(job2, [queued])
    keeper.book.add(job2, [queued])

    async def scenario() -> None:
        scheduler.set_state(run, RunState.SUCCEEDED, time.time())
        await keeper.stage([run], [(b"peer", RunAck(run_id=run.id))], dispatch_on=[run.node])
        await keeper.dispatch_queued([run.node])  # an unknown run's update from that node
        assert wire.sent == [], "no dispatch on the node before its final state is acked"
        await keeper.commit([])
        assert wire.stored()[run.id] == "succeeded"
        assert [(type(m).__name__, m.run_id) for _, m, _ in wire.sent] == [  # type: ignore[attr-defined]
            ("RunAck", run.id), ("RunDispatch", queued.id)]

    asyncio.run(scenario())
