"""Per-run windows, figures, phases and the report object, on synthetic series."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from manager.analysis import report
from manager.analysis.query import SeriesData

SCHEMA = json.loads((Path(__file__).parents[3] / "docs" / "report-schema.json").read_text())
NS = 1_000_000_000
T = 1_700_000_000.0


def validate(obj: dict[str, Any]) -> None:
    """Against docs/report-schema.json, after a JSON round trip (as a client sees it)."""
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(json.dumps(obj, allow_nan=False)))


def run(node: str, it: int, start: float | None, end: float | None, state: str = "succeeded",
        job: str = "j1") -> dict[str, Any]:
    return {"id": f"{job}.{node}.{it}", "job_id": job, "node": node, "iteration": it,
            "state": state, "pid": 1, "exit_code": 0 if state == "succeeded" else None,
            "dispatched_at": start, "started_at": start, "ended_at": end, "error": ""}


def job(runs: list[dict[str, Any]], job_id: str = "j1", tags: dict[str, str] | None = None,
        ended: float | None = T + 30) -> dict[str, Any]:
    return {"id": job_id, "name": "", "state": "failed", "created_at": T - 1, "ended_at": ended,
            "spec": {"command": ["x"], "targets": ["all"], "collect": ["system", "process"],
                     "interval": 1.0, "timeout": 0.0, "repeat": 2, "env": {}, "cwd": "",
                     "tags": tags or {}, "exclusive": True}, "runs": runs}


def series(measurement: str, tags: dict[str, str], times: list[float], **cols: Any) -> SeriesData:
    ts = np.array([int(t * NS) for t in times], dtype=np.int64)
    return SeriesData(measurement, tags, ts, {k: np.asarray(v, dtype=object if any(
        isinstance(x, str) for x in v) else float) for k, v in cols.items()})


def cpu(node: str, times: list[float], busy: list[float]) -> SeriesData:
    z = [0.0] * len(times)
    return series("cpu", {"node": node}, times, user=busy, system=z, iowait=z, irq=z, softirq=z,
                  steal=z, idle=[100 - b for b in busy])


def tree(node: str, times: list[float], cpu_pct: list[float]) -> SeriesData:
    n = len(times)
    return series("proc", {"node": node}, times, cpu_pct=cpu_pct, rss=[1e6] * n,
                  read_bps=[0] * n, write_bps=[0] * n, threads=[1] * n, ctx_vol=[1] * n,
                  ctx_invol=[0] * n, fds=[3] * n)


@pytest.fixture
def two_iterations_and_a_lost_node() -> report.JobAnalysis:
    runs = [run("n1", 1, T + 0, T + 10), run("n1", 2, T + 12, T + 20),
            run("n2", 1, T + 0, T + 5, state="lost"), run("n3", 1, None, None, "cancelled")]
    times = [T + s for s in range(-3, 25)]
    raw = {
        "cpu": [cpu("n1", times, [float(s) for s in range(len(times))]),
                cpu("n2", times, [50.0] * len(times))],
        # Samples at 10.5 and 11.5 are late samples of iteration 1 (before 2 starts).
        "proc": [tree("n1", [T + 0, T + 5, T + 10.5, T + 11.5, T + 12, T + 19, T + 21.9, T + 23],
                      [10, 20, 30, 40, 100, 200, 300, 999]),
                 tree("n2", [T + 1, T + 2], [5, 5])],
        "perf": [series("perf", {"node": "n1", "scope": "job", "event": e}, [T + 5, T + 15],
                        value=v, per_sec=v) for e, v in (("cycles", [100, 200]),
                                                         ("instructions", [150, 200]))],
        "mark": [series("mark", {"node": "n1"}, [T + 0, T + 4, T + 13], job=["j1"] * 3,
                        phase=["warmup", "measure", "warmup"])],
    }
    env = {"n1": {"kernel": "6.1", "source": "recorded"}}
    return report.analyse(job(runs), env, raw, now=T + 100)


def test_windows_figures_and_notes(two_iterations_and_a_lost_node: report.JobAnalysis) -> None:
    a = two_iterations_and_a_lost_node
    r1, r2, lost, never = a.runs
    assert r1.points["proc.cpu_pct"][1].tolist() == [10, 20, 30, 40]  # late samples included
    assert r2.points["proc.cpu_pct"][1].tolist() == [100, 200, 300]  # not the one past grace
    assert r1.points["cpu.busy"][1].tolist() == [float(s) for s in range(3, 14)]  # T..T+10
    assert r1.figures["run.duration"] == 10 and r2.figures["run.duration"] == 8
    assert r1.figures["proc.cpu_pct"] == 25
    assert r1.figures["run.cpu_seconds"] == pytest.approx(2.5)
    assert r1.figures["run.ipc"] == pytest.approx(1.5) and r2.figures["run.ipc"] == 1.0
    assert "lost" in lost.notes[0] and lost.points["proc.cpu_pct"][1].tolist() == [5, 5]
    assert never.points == {} and "did not start" in never.notes[0]
    assert [m[1]["phase"] for m in r1.marks] == ["warmup", "measure"]
    assert [m[1]["phase"] for m in r2.marks] == ["warmup"]


def test_report_object(two_iterations_and_a_lost_node: report.JobAnalysis) -> None:
    obj = report.report_object(two_iterations_and_a_lost_node)
    validate(obj)
    assert obj["job"]["nodes"] == ["n1", "n2", "n3"]
    assert obj["environment"]["n3"] == {"source": "unknown"}
    assert obj["nodes"]["n1"]["runs"] == 2
    assert obj["nodes"]["n1"]["figures"]["proc.cpu_pct"]["count"] == 2  # per-run samples
    assert obj["nodes"]["n1"]["metrics"]["proc.cpu_pct"]["count"] == 7  # pooled points
    assert obj["overall"]["figures"]["run.duration"]["count"] == 3
    first = obj["runs"][0]
    assert [(p["phase"], p["start"], p["end"]) for p in first["phases"]] == [
        ("warmup", 0.0, 4.0), ("measure", 4.0, 10.0)]
    assert first["phases"][0]["metrics"]["proc.cpu_pct"]["mean"] == 10  # the point at 0 s
    assert first["phases"][1]["metrics"]["proc.cpu_pct"]["mean"] == 20  # at 5 s; 10.5 is after
    assert first["marks"][1] == {"offset": 4.0, "label": "measure", "fields": {"phase": "measure"}}
    assert first["timeline"]["proc.cpu_pct"]["t"] == [0.0, 5.0, 10.5, 11.5]
    assert obj["runs"][2]["lost"] is True
    assert list(obj["metrics"])[:3] == ["run.duration", "run.cpu_seconds", "run.ipc"]


def test_unfinished_job_and_fresh_job_notes() -> None:
    runs = [run("n1", 1, T, None, state="running")]
    a = report.analyse(job(runs, ended=None), {}, {}, now=T + 3)
    assert "covers it so far" in a.notes[0] and "not ended" in a.runs[0].notes[0]
    assert a.runs[0].end == T + 3
    fresh = report.analyse(job([run("n1", 1, T, T + 1)], ended=T + 1), {}, {}, now=T + 2)
    assert "moments ago" in fresh.notes[0]
    validate(report.report_object(fresh))


def test_query_window_covers_every_started_run() -> None:
    j = job([run("b", 1, T + 5, T + 9), run("a", 1, T, None, "running"), run("c", 1, None, None)])
    w = report.query_window(j, now=T + 50)
    assert w is not None and w.nodes == ("a", "b") and w.job_id == "j1"
    assert w.start_ns == int((T - 2) * NS) and w.end_ns == int((T + 52) * NS)
    assert report.query_window(job([run("c", 1, None, None)]), now=T) is None


def test_declared_direction_reaches_the_report() -> None:
    raw = {"app": [series("app", {"node": "n1", "name": "latency"}, [T + 1], value=[3.0])]}
    a = report.analyse(job([run("n1", 1, T, T + 2)], tags={"direction.latency": "higher"}),
                       {}, raw, now=T + 100)
    assert report.report_object(a)["metrics"]["app.latency"]["direction"] == "higher"


def test_downsample_keeps_at_most_the_limit() -> None:
    t = np.arange(1000.0)
    dt, dv = report.downsample(t, t * 2, 300)
    assert dt.size <= 300 and dv.tolist() == (dt * 2).tolist()
    assert dt[0] == pytest.approx(1.0) and report.downsample(t[:5], t[:5], 300)[0].size == 5
