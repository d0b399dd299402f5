"""The metric catalogue: sources match the agent's collectors, directions, declarations."""

from __future__ import annotations

import numpy as np
import pytest

from agent.collectors import proctree, selfcost, system
from manager.analysis import metrics
from manager.analysis.stats import Direction


def test_source_fields_are_what_the_agent_writes() -> None:
    assert metrics.SOURCE_FIELDS == {
        "cpu": system.CPU_FIELDS, "mem": system.MEM_FIELDS, "disk": system.DISK_FIELDS,
        "net": system.NET_FIELDS, "proc": proctree.PROC_FIELDS, "agent": selfcost.AGENT_FIELDS}
    assert metrics.TREE_PID == proctree.TREE_PID
    for measurement, fields in metrics.SOURCE_FIELDS.items():
        assert all(f"{measurement}.{f}" in metrics.FIXED for f in fields)


@pytest.mark.parametrize(("metric_id", "direction"), [
    ("proc.cpu_pct", "lower"), ("run.duration", "lower"), ("proc.ctx_invol", "lower"),
    ("mem.pgfault_ps", "lower"), ("cpu.idle", "higher"), ("mem.available", "higher"),
    ("perf.ipc", "higher"), ("run.ipc", "higher"), ("perf.cycles", "lower"),
    ("perf.system.ipc", "higher"), ("perf.context-switches", "lower"),
    ("app.latency", "lower"), ("app.latency_ms", "lower"), ("app.stops", "lower"),
    ("app.ops", "higher"), ("app.read_ops", "higher"), ("app.qps", "higher"),
    ("app.throughput", "higher"), ("app.requests_per_sec", "higher"),
    ("app.net.bandwidth", "higher"), ("app.OPS", "higher"),
])
def test_default_directions(metric_id: str, direction: str) -> None:
    assert metrics.lookup(metric_id).direction is Direction(direction)


def test_jobs_declare_directions_with_tags() -> None:
    declared = metrics.declared_directions({"direction.latency": "higher", "build": "1",
                                            "direction.proc.rss": "Higher",
                                            "direction.app.ops": "lower",
                                            "direction.cpu.busy": "sideways"})
    assert declared == {"latency": Direction.HIGHER, "proc.rss": Direction.HIGHER,
                        "app.ops": Direction.LOWER}
    assert metrics.with_declared(metrics.lookup("app.latency"), declared).direction == "higher"
    assert metrics.with_declared(metrics.lookup("app.ops"), declared).direction == "lower"
    assert metrics.with_declared(metrics.lookup("proc.rss"), declared).direction == "higher"
    assert metrics.with_declared(metrics.lookup("cpu.busy"), declared).direction == "lower"


def test_perf_units_and_report_order() -> None:
    assert metrics.perf_def("task-clock", "job").unit == "ms/s"
    assert metrics.perf_def("ipc", "job").field == "value"
    assert metrics.perf_def("cycles", "system").id == "perf.system.cycles"
    ids = ["agent.rss", "cpu.user", "app.x", "perf.system.cycles", "perf.cycles", "proc.rss",
           "run.duration", "cpu.busy", "mem.used"]
    assert sorted(ids, key=metrics.sort_key) == [
        "run.duration", "proc.rss", "perf.cycles", "perf.system.cycles", "app.x", "cpu.busy",
        "cpu.user", "mem.used", "agent.rss"]
    with pytest.raises(KeyError):
        metrics.lookup("nope.x")


def test_a_runs_memory_figure_is_its_peak_and_the_others_their_mean() -> None:
    # Samples taken while the loader maps libraries and as the tree exits read a
    # fraction of the steady RSS; the figure must not depend on where they fell.
    rss = np.array([0.4e6, 1.8e6, 1.8e6, 0.0])
    assert metrics.run_figure("proc.rss", rss) == 1.8e6
    assert metrics.lookup("proc.rss").per_run == "max"
    for metric_id in ("proc.threads", "proc.cpu_pct", "agent.rss", "app.latency", "perf.cycles"):
        assert metrics.run_figure(metric_id, np.array([1.0, 3.0])) == 2.0, metric_id
