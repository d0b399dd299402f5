"""Text rendering of the protocol's JSON shapes (no manager needed)."""

from __future__ import annotations

from bus import messages
from manager.cli import render

NODE = {"name": "node1", "state": "ready", "address": "10.0.0.5", "last_seen": 1.0,
        "silent_for": 0.4, "registered_at": 0.0, "running": [], "clock_offset": -0.0123,
        "spool_depth": 0, "samples_dropped": 0,
        "facts": {"cpus": 2, "perf_available": True, "perf_paranoid": 2,
                  "pmu_hardware": False}}
RUN = {"id": "j1.node1.1", "job_id": "j1", "node": "node1", "iteration": 1,
       "state": "failed", "pid": 12, "exit_code": 3, "dispatched_at": 99.0,
       "started_at": 100.0, "ended_at": 102.5, "stdout_tail": "a\nb\nhi\n",
       "stderr_tail": "", "error": "exit code 3"}
JOB = {"id": "j1", "name": "", "state": "failed", "created_at": 99.0, "ended_at": 102.5,
       "spec": {"command": ["sh", "-c", "echo hi; exit 3"], "targets": ["all"],
                "collect": ["system"], "interval": 1.0, "timeout": 0.0, "repeat": 1,
                "env": {}, "cwd": "", "tags": {"build": "1.2"}, "exclusive": True},
       "runs": [RUN]}


def test_span_is_short_and_human() -> None:
    assert [render.span(s) for s in (0.42, 12.4, 184, 7500, 200000)] == [
        "0.4s", "12s", "3m04s", "2h05m", "2d07h"]
    assert render.span(None) == "-"


def test_nodes_table_shows_state_heartbeat_clock_offset_and_perf() -> None:
    header, row = render.nodes_table([NODE]).splitlines()
    assert header.split() == ["NAME", "STATE", "ADDRESS", "HEARTBEAT", "OFFSET", "CPUS", "PERF",
                              "RUNNING"]
    assert row.split()[:7] == ["node1", "ready", "10.0.0.5", "0.4s", "ago", "-12.3ms", "2"]
    assert "sw (paranoid 2)" in row
    older = {k: v for k, v in NODE.items() if k != "clock_offset"}  # an agent without stamps
    assert render.nodes_table([older]).splitlines()[1].split()[5] == "-"
    assert "no nodes" in render.nodes_table([])


def test_clock_offset_in_ms_below_a_second() -> None:
    assert [render.clock_offset(x) for x in (0.0004, -0.0123, 2.5, -61.0, None)] == [
        "+0.4ms", "-12.3ms", "+2.50s", "-61.00s", "-"]


def test_job_view_has_runs_exit_codes_and_tails() -> None:
    text = render.job_view(JOB, now=200.0)
    assert "job j1  failed" in text
    assert "sh -c 'echo hi; exit 3'" in text
    assert "build=1.2" in text
    assert "j1.node1.1  node1  failed  3" in text
    assert "  hi" in text
    assert "error: exit code 3" not in text  # says nothing the EXIT column does not


def test_jobs_table_counts_runs() -> None:
    row = render.jobs_table([JOB], now=200.0).splitlines()[1]
    assert row.split()[:4] == ["j1", "-", "failed", "0/1"]


def test_run_progress_lines() -> None:
    assert render.run_progress("j1", RUN) == "job j1: node1 #1 failed (exit 3, 2.5s)"
    running = dict(RUN, state="running", exit_code=None, ended_at=None, error="")
    assert render.run_progress("j1", running) == "job j1: node1 #1 running (pid 12)"


def test_event_lines_for_events_and_metric_batches() -> None:
    runs = messages.Event(kind="runs", ts=0.0, job_id="j1", detail={"runs": [
        {"id": "j1.node1.1", "node": "node1", "state": "running", "exit_code": None},
        {"id": "j1.node2.1", "node": "node2", "state": "failed", "exit_code": 3}]})
    assert [line.split()[1:] for line in render.event_lines("evt.job.j1", runs, 0.0)] == [
        ["run", "j1.node1.1", "running", "on", "node1"],
        ["run", "j1.node2.1", "failed", "on", "node2", "exit", "3"]]
    assert [line.split()[2] for line in render.event_lines("evt.job.j1", runs, 0.0,
                                                           "node2")] == ["j1.node2.1"]
    job = messages.Event(kind="job", ts=0.0, job_id="j1", state="running",
                         detail={"runs": [{"node": "node1"}]})
    assert render.event_lines("evt.job.j1", job, 0.0)[0].split()[1:] == ["job", "j1", "running"]
    node = messages.Event(kind="node", ts=0.0, node="node1", state="ready",
                          detail={"name": "node1"})
    assert render.event_lines("evt.node.node1", node, 0.0, "node1")[0].split()[1:] == [
        "node", "node1", "ready"]
    assert render.event_lines("evt.node.node1", node, 0.0, "node10") == []
    batch = messages.MetricBatch(node="node1", seq=7, series=[
        ["cpu", {"node": "node1"}, ["user"], [[1, 2.0], [2, 3.0]]],
        ["mem", {"node": "node1"}, ["used"], [[1, 5]]]])
    [line] = render.event_lines("m.node1", batch, 0.0)
    assert line.split()[1:] == ["metrics", "node1", "seq=7", "series=2", "points=3",
                                "[cpu", "mem]"]
    assert render.event_lines("m.node1", batch, 0.0, "node10") == []
