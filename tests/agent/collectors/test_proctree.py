"""ProcessTreeCollector on a real process tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.proctree import (
    PROC_FIELDS,
    TREE_PID,
    ProcessTreeCollector,
    children_files_work,
)
from bus.metrics import Series


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cond()
        if result:
            return result
        time.sleep(step)  # wait-ok: poll step under a deadline
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
    # Pretend the cached entry belongs to an older process that had this pid: it
    # started earlier, and its scheduler statistics were not this process's. sh
    # forked the new one, so sh ran too.
    member = c._members[child]
    assert member.start is not None
    member.start -= 100
    member.sched = c._members[tree.pid].sched = b"1 2 3\n"
    rows = _rows(c.collect(time.time_ns()))
    assert c._members[child] is not member
    assert rows[str(child)]["cpu_pct"] is None  # no rate across two different processes


def _schedstat_of(pid: int) -> bytes:
    """What the kernel says ``pid`` ran (it moves only when the process is scheduled)."""
    with open(f"/proc/{pid}/schedstat", "rb") as f:
        return f.read()


@pytest.mark.parametrize("max_pinned", [None, 0], ids=["schedstat-kept-open", "by-path"])
def test_idle_members_are_not_reread_and_show_zero_rates(tree: subprocess.Popen[bytes],
                                                         max_pinned: int | None) -> None:
    c = ProcessTreeCollector("n1", "j1", tree.pid, full_every=3, max_pinned=max_pinned)
    if not c.gate:
        pytest.skip("no /proc/<pid>/schedstat on this kernel")
    wait_until(lambda: _sleeps(_rows(c.collect(time.time_ns()))) == 2)
    # sh waits and the sleeps sleep: none of them runs, so each is read in full once
    # in three samples (full_every), and only its schedstat in the other two. On a
    # busy host one of them is now and then scheduled anyway (its schedstat moves),
    # for instance a sleep that was still runnable on its way from exec to its
    # nanosleep: such a window proves nothing, and another is taken. "Nobody ran"
    # must hold since each member's last full read, not only during the three
    # samples: one that ran just before them is read in full in the first, with the
    # rates of that run. So three samples come first in which each member is read in
    # full at least once (never more than full_every - 1 idle samples in a row), and
    # the three measured ones follow, with nobody having run since before the first.

    def idle_window() -> tuple[int, dict[str, dict[str, Any]],
                               list[dict[str, dict[str, Any]]]] | None:
        sched = {pid: _schedstat_of(pid) for pid in c.pids}
        baseline = [_rows(c.collect(time.time_ns())) for _ in range(3)][-1]
        reads = c.full_reads
        samples = [_rows(c.collect(time.time_ns())) for _ in range(3)]
        if any(_schedstat_of(pid) != stat for pid, stat in sched.items()):
            return None
        return c.full_reads - reads, baseline, samples

    full_reads, before, samples = wait_until(idle_window)
    assert full_reads == 3
    for rows in samples:
        for pid, r in rows.items():
            assert (r["cpu_pct"], r["ctx_vol"], r["ctx_invol"]) == (0.0, 0.0, 0.0), pid
            gauges = (r["rss"], r["threads"], r["fds"])
            assert gauges == (before[pid]["rss"], before[pid]["threads"], before[pid]["fds"])


def test_a_member_that_ran_is_read_in_full() -> None:
    # A shell that forks a short-lived child every few ms: it runs at every sample.
    p = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"], start_new_session=True)
    try:
        c = ProcessTreeCollector("n1", "j1", p.pid)
        c.collect(time.time_ns())
        reads = c.full_reads
        rows = wait_until(lambda: (r := _rows(c.collect(time.time_ns())))
                          and r[str(p.pid)]["ctx_vol"] and r)
        assert c.full_reads > reads
        assert rows[str(p.pid)]["cpu_pct"] is not None
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


SPAWN_FROM_A_THREAD = """\
import subprocess, sys, threading
def spawn():
    child = subprocess.Popen(["sleep", "30"])
    print(child.pid, flush=True)
    child.wait()
t = threading.Thread(target=spawn)
t.start()
t.join()
"""


@pytest.mark.parametrize("walk", [True, False], ids=["children-files", "psutil"])
def test_child_of_a_second_thread_is_found(walk: bool) -> None:
    # /proc/<pid>/task/<tid>/children lists the children of that thread only.
    if walk and not children_files_work():
        pytest.skip("kernel without CONFIG_PROC_CHILDREN")
    p = subprocess.Popen([sys.executable, "-c", SPAWN_FROM_A_THREAD], stdout=subprocess.PIPE,
                         start_new_session=True)
    try:
        assert p.stdout is not None
        child = int(p.stdout.readline())
        c = ProcessTreeCollector("n1", "j1", p.pid, walk_children=walk)
        rows = _rows(c.collect(time.time_ns()))
        assert c.pids == {p.pid, child}
        assert rows[str(p.pid)]["threads"] == 2
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        if p.stdout is not None:
            p.stdout.close()


def test_cut_comm_gets_the_programs_full_name(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    long_name = tmp_path / "a_rather_long_program_name"
    long_name.symlink_to(sleep)
    p = subprocess.Popen([str(long_name), "30"])
    try:
        c = ProcessTreeCollector("n1", "j1", p.pid)
        # The name is complete once the exec is (a moment after comm changed).
        wait_until(lambda: _rows(c.collect(time.time_ns()))[str(p.pid)]["comm"]
                   == "a_rather_long_program_name")
    finally:
        p.kill()
        p.wait()


def _schedstat_fds() -> set[str]:
    """What this process's open descriptors on some /proc/<pid>/schedstat point to."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/proc/") and target.endswith("/schedstat"):
            out.add(target)
    return out


def test_schedstat_files_are_closed_with_their_member(tree: subprocess.Popen[bytes]) -> None:
    before = _schedstat_fds()
    c = ProcessTreeCollector("n1", "j1", tree.pid)
    if not c.gate:
        pytest.skip("no /proc/<pid>/schedstat on this kernel")
    wait_until(lambda: _sleeps(_rows(c.collect(time.time_ns()))) == 2)
    assert _schedstat_fds() - before == {f"/proc/{p}/schedstat" for p in c.pids}
    victim = min(p for p in c.pids if p != tree.pid)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: str(victim) not in _rows(c.collect(time.time_ns())))
    assert f"/proc/{victim}/schedstat" not in _schedstat_fds()
    c.close()
    assert _schedstat_fds() == before


def test_a_child_of_an_idle_parent_is_followed(tmp_path: Path) -> None:
    # The root waits (idle); its child waits on a FIFO, then forks a sleep. The walk
    # passes the idle root by its cached children and reads the child that ran.
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    p = subprocess.Popen(["sh", "-c", f"sh -c 'read x < {fifo}; sleep 30; true' & wait"],
                         start_new_session=True)
    try:
        c = ProcessTreeCollector("n1", "j1", p.pid)
        wait_until(lambda: c.collect(time.time_ns()) and len(c.pids) == 2)
        inner = max(c.pids - {p.pid})
        c.collect(time.time_ns())  # both have been read once since they started waiting
        with open(fifo, "w") as f:  # the reader is waiting, so this does not block
            f.write("go\n")
        rows = wait_until(lambda: (r := _rows(c.collect(time.time_ns())))
                          and _sleeps(r) == 1 and r)
        grandchild = next(int(pid) for pid, row in rows.items() if row["comm"] == "sleep")
        assert c.pids == {p.pid, inner, grandchild}
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
