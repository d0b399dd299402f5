"""Sampler: shared ticks and one batch per tick, over a real PULL socket and a real tree."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import zmq
import zmq.asyncio

from agent.sampling import Sampler, commensurate
from bus import codec, messages
from bus.sockets import make_socket
from config import load_agent


@pytest.mark.parametrize(("a", "b", "expected"), [
    (1.0, 1.0, True), (1.0, 0.2, True), (0.2, 1.0, True), (2.0, 1.0, True),
    (1.0, 0.3, False), (1.5, 1.0, False),
])
def test_commensurate(a: float, b: float, expected: bool) -> None:
    assert commensurate(a, b) is expected


@dataclass
class _Dispatch:
    run_id: str
    job_id: str
    collect: list[str]
    interval: float


@dataclass
class _Runner:
    """What the sampler's hooks read from an :class:`agent.runner.Runner`."""

    dispatch: _Dispatch
    pid: int
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.dispatch.run_id


@pytest.fixture
def job() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        yield p
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _measurements(batch: messages.MetricBatch) -> dict[str, set[int]]:
    """Measurement name → the row timestamps it has in ``batch``."""
    out: dict[str, set[int]] = {}
    for measurement, _tags, _fields, rows in batch.series:
        out.setdefault(measurement, set()).update(row[0] for row in rows)
    return out


@pytest.mark.parametrize("inline_budget", [1.0, 0.0], ids=["on-the-loop", "in-the-executor"])
def test_system_and_run_share_one_tick_and_one_batch(
        job: subprocess.Popen[bytes], inline_budget: float) -> None:
    async def main() -> list[dict[str, set[int]]]:
        ctx = zmq.asyncio.Context()
        pull = make_socket(ctx, zmq.PULL)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        cfg = load_agent(None, {"collectors.interval": "0.2"}, env={})
        sampler = Sampler(cfg, "n1", ctx, f"tcp://127.0.0.1:{port}",
                          inline_budget=inline_budget)
        runner = cast(Any, _Runner(_Dispatch("r1", "j1", ["process"], 0.2), job.pid))
        task = asyncio.create_task(sampler.run())
        batches = []
        try:
            await sampler._prepare_run(runner)
            sampler._on_run_started(runner)
            async with asyncio.timeout(20):
                while sum("proc" in b for b in batches) < 4:
                    msg = codec.decode(await pull.recv_multipart())
                    assert isinstance(msg, messages.MetricBatch)
                    batches.append(_measurements(msg))
            assert sampler.inline is (inline_budget > 0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sampler.close()
            pull.close(linger=0)
            ctx.term()
        return batches

    batches = asyncio.run(main())
    with_proc = [b for b in batches if "proc" in b]
    # The run's first sample is taken at once, off the grid; after that the run is
    # on the system's grid: its rows come in the same batch, with the same timestamp.
    for b in with_proc[1:]:
        assert "mem" in b and b["proc"] == b["mem"] and len(b["proc"]) == 1, b
