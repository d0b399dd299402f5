"""ProcessTreeCollector on a real process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.collectors.proctree import PROC_FIELDS, TREE_PID, ProcessTreeCollector
from bus.metrics import Series


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cond()
        if result:
            return result
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    """A shell with two sleeping children, in its own process group."""
    p = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        yield p
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _rows(series: list[Series]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in series:
        assert s.measurement == "proc" and s.fields == PROC_FIELDS
        assert set(s.tags) == {"node", "job", "pid", "comm"}
        out[s.tags["pid"]] = {"comm": s.tags["comm"], **dict(zip(("ts",) + PROC_FIELDS, s.rows[0], strict=True))}
    return out


def _sleeps(rows: dict[str, dict[str, Any]]) -> int:
    return sum(r["comm"] == "sleep" for r in rows.values())


def test_rows_per_pid_and_tree_row(tree: subprocess.Popen[bytes]) -> None:
    c = ProcessTreeCollector("n1", "j1", tree.pid)
    # The children show as "sh" until they have exec'd sleep.
    rows = wait_until(lambda: (r := _rows(c.collect(time.time_ns()))) and _sleeps(r) == 2 and r)
    sleeps = [pid for pid, r in rows.items() if r["comm"] == "sleep"]
    assert len(sleeps) == 2
    assert rows[str(tree.pid)]["comm"] == "sh"
    t = rows[TREE_PID]
    assert t["comm"] == "sh"
    members = [r for pid, r in rows.items() if pid != TREE_PID]
    assert t["rss"] == sum(r["rss"] for r in members)
    assert t["threads"] == 3 and t["fds"] == sum(r["fds"] for r in members)
    assert c.pids == {tree.pid, *map(int, sleeps)}

    rows = _rows(c.collect(time.time_ns()))  # every member now has a previous sample
    for pid in [str(tree.pid), *sleeps, TREE_PID]:
        assert rows[pid]["cpu_pct"] is not None and rows[pid]["cpu_pct"] >= 0
        assert rows[pid]["ctx_vol"] is not None


def test_vanished_child_is_dropped_quietly(tree: subprocess.Popen[bytes]) -> None:
    c = ProcessTreeCollector("n1", "j1", tree.pid)
    wait_until(lambda: _sleeps(_rows(c.collect(time.time_ns()))) == 2)
    victim = min(p for p in c.pids if p != tree.pid)
    os.kill(victim, signal.SIGKILL)
    # Gone once sh reaps it (a zombie is dropped as well).
    rows = wait_until(lambda: (r := _rows(c.collect(time.time_ns()))) and str(victim) not in r and r)
    assert str(tree.pid) in rows and TREE_PID in rows
    assert victim not in c.pids


def test_root_gone_returns_nothing() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    assert ProcessTreeCollector("n1", "j1", p.pid).collect(time.time_ns()) == []


def test_recycled_pid_is_a_new_member(tree: subprocess.Popen[bytes]) -> None:
    c = ProcessTreeCollector("n1", "j1", tree.pid)
    wait_until(lambda: _sleeps(_rows(c.collect(time.time_ns()))) == 2)
    child = min(p for p in c.pids if p != tree.pid)
    # Pretend the cached entry belongs to an older process that had this pid.
    member = c._members[child]
    member.create_time -= 100
    rows = _rows(c.collect(time.time_ns()))
    assert c._members[child] is not member
    assert rows[str(child)]["cpu_pct"] is None  # no rate across two different processes
