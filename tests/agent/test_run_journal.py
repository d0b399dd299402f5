"""Finished runs on disk: written before they are sent, reported again after a restart,
removed on the manager's ack; bad files in the folder are logged and skipped.

The manager is the same real ROUTER stand-in as in tests/agent/test_link.py (the
real codec on 127.0.0.1); the agent side is the real Link and Runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq.asyncio

from agent.link import Link
from agent.run_journal import RunJournal
from agent.runner import RunnerOptions
from bus import codec
from bus.messages import Register, RunAck, RunReport, RunState, RunUpdate
from tests.agent.test_link import FACTS, TIMING, WELCOME, FakeManager, dispatch, update_of


@contextlib.asynccontextmanager
async def agent(tmp_path: Path, journal_dir: Path) -> AsyncIterator[tuple[Link, FakeManager]]:
    """One agent process's Link (with its journal) against a fresh manager."""
    ctx = zmq.asyncio.Context()
    manager = FakeManager(ctx)
    link = Link(f"tcp://127.0.0.1:{manager.port}", "n1", FACTS, ctx=ctx,
                runner_options=RunnerOptions(workdir=str(tmp_path / "runs"), kill_grace=0.5),
                timing=TIMING, journal=RunJournal(journal_dir))
    task = asyncio.create_task(link.run())
    try:
        yield link, manager
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await link.aclose()
        manager.sock.close(linger=0)
        ctx.destroy(linger=0)


def test_a_finished_run_outlives_the_agent_until_acked(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    path = journal / "j1.n1.1.run"

    async def scenario() -> None:
        async with agent(tmp_path, journal) as (link, manager):
            ident, _ = await manager.register(link)
            await manager.send(ident, dispatch("j1.n1.1", ["sh", "-c", "echo out; exit 3"]))
            _, final = await manager.expect(RunUpdate, update_of("j1.n1.1", RunState.FAILED))
            # On disk before it was sent: an agent stopped now still has it.
            kept = RunJournal(journal).load()
            assert kept == [final.run] and path.exists()
            assert (final.run.exit_code, final.run.stdout_tail) == (3, "out\n")
            # No ack: the agent stops with the run unacknowledged.
        async with agent(tmp_path, journal) as (link, manager):
            ident, reg = await manager.expect(Register)
            assert [r.run_id for r in reg.runs] == ["j1.n1.1"]
            again = reg.runs[0]
            assert (again.state, again.exit_code, again.stdout_tail) == (
                RunState.FAILED, 3, "out\n")
            assert again.started_at == final.run.started_at
            assert again.ended_at == final.run.ended_at
            await manager.send(ident, WELCOME)
            # Resent on heartbeats until acked, as a run of this process would be.
            await manager.expect(RunUpdate, update_of("j1.n1.1", RunState.FAILED))
            await manager.send(ident, RunAck(run_id="j1.n1.1"))
            await manager.until(lambda: not path.exists())
            assert link._held.finished == {}
        async with agent(tmp_path, journal) as (link, manager):
            _, reg = await manager.expect(Register)
            assert reg.runs == []

    asyncio.run(scenario())


def test_bad_files_are_logged_once_each_and_skipped(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    journal = RunJournal(tmp_path)
    good = RunReport(run_id="j1.n1.1", job_id="j1", state=RunState.SUCCEEDED, exit_code=0,
                     started_at=1.0, ended_at=2.0, stdout_tail="ok\n")
    assert journal.record(good)
    running = RunReport(run_id="j1.n1.2", job_id="j1", state=RunState.RUNNING)
    (tmp_path / "j1.n1.2.run").write_bytes(codec.encode(RunUpdate(run=running))[1])
    (tmp_path / "garbage.run").write_bytes(b"\x00\x01not msgpack")
    (tmp_path / "elsewhere.run").write_bytes(codec.encode(RunUpdate(run=good))[1])
    (tmp_path / "notes.txt").write_text("someone's file")
    (tmp_path / "j1.n1.3.run.tmp").write_bytes(b"half a wri")
    with caplog.at_level(logging.WARNING, logger="agent.run_journal"):
        assert journal.load() == [good]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5, lines
    for name in ("j1.n1.2.run", "garbage.run", "elsewhere.run", "notes.txt", "j1.n1.3.run.tmp"):
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert not (tmp_path / "j1.n1.3.run.tmp").exists()  # a torn write is cleaned up
    journal.forget("j1.n1.1")
    assert not (tmp_path / "j1.n1.1.run").exists()


def test_a_run_id_that_is_no_file_name_is_kept_under_a_hash(tmp_path: Path) -> None:
    journal = RunJournal(tmp_path)
    odd = RunReport(run_id="../../etc/x y", job_id="j", state=RunState.CANCELLED)
    assert journal.record(odd)
    assert [p.parent for p in tmp_path.iterdir()] == [tmp_path]
    assert journal.load() == [odd]
    journal.forget(odd.run_id)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_that_refuses_costs_durability_not_the_run(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    journal = RunJournal(tmp_path / "missing")
    report = RunReport(run_id="j1.n1.1", job_id="j1", state=RunState.SUCCEEDED)
    with caplog.at_level(logging.WARNING, logger="agent.run_journal"):
        assert not journal.record(report)
    assert "cannot keep its final state" in caplog.text
