"""Summaries in the manager's real state database: which jobs lack one, by series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bus.messages import JobSpec, RunState
from manager.analysis import metrics
from manager.analysis.report import JobAnalysis, RunData
from manager.history.summaries import SummaryStore, cpu_time, lookup, series_of, summarise
from manager.scheduler import Job, JobState, Run
from manager.state import Store


def add(store: Store, job_id: str, state: JobState, *, name: str = "", series: str = "",
        created: float = 100.0) -> None:
    spec = JobSpec(command=["true"], name=name, series=series)
    run = Run(id=f"r-{job_id}", job_id=job_id, node="n1", iteration=1, state=RunState.SUCCEEDED)
    store.add_job(Job(id=job_id, spec=spec, created_at=created, state=state), [run])


def test_missing_finds_ended_jobs_of_the_series_by_series_else_name(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db")
    add(store, "a", JobState.SUCCEEDED, name="nightly")
    add(store, "b", JobState.FAILED, name="other", series="nightly")
    add(store, "c", JobState.RUNNING, name="nightly")
    add(store, "d", JobState.SUCCEEDED, name="nightly", series="weekly")
    add(store, "e", JobState.SUCCEEDED, name="nightly", created=50.0)
    summaries = SummaryStore(store.path)
    assert summaries.missing("nightly") == ["a", "b", "e"]
    assert summaries.missing("nightly", since=60.0) == ["a", "b"]
    assert summaries.missing("weekly") == ["d"]
    assert summaries.has_jobs("nightly") and not summaries.has_jobs("monthly")

    summaries.put({"version": 1, "job": {"id": "a", "series": "nightly", "created_at": 100.0},
                   "metrics": {}})
    summaries.put({"version": 1, "job": {"id": "a", "series": "nightly", "created_at": 100.0},
                   "metrics": {"run.duration": {"median": 1.0}}})
    assert summaries.missing("nightly") == ["b", "e"]
    assert [s["metrics"] for s in summaries.of_series("nightly")] == [
        {"run.duration": {"median": 1.0}}]
    summaries.close()
    store.close()


def test_a_summary_is_the_median_and_range_of_the_runs_figures() -> None:
    job = {"id": "j1", "name": "", "state": "succeeded", "created_at": 1.0, "ended_at": 2.0,
           "spec": {"command": ["x"], "series": "s1", "tags": {"version": "2"}}, "runs": []}
    runs = [RunData({"node": "n1"}, 0.0, 1.0, figures={"run.duration": v})
            for v in (3.0, 1.0, 2.0, float("nan"))]
    catalogue = {"run.duration": metrics.lookup("run.duration")}
    got = summarise(JobAnalysis(job, runs, catalogue, {"n1": {"kernel": "6"}}, [], 3.0))
    assert got["metrics"] == {"run.duration": {"median": 2.0, "low": 1.0, "high": 3.0,
                                               "runs": 3}}
    assert got["job"]["series"] == "s1" and got["job"]["tags"] == {"version": "2"}
    assert got["environment"] == {"n1": {"kernel": "6"}}
    assert series_of({"name": "n"}) == "n" and series_of({"name": "n", "series": "s"}) == "s"
    assert np.isfinite(got["metrics"]["run.duration"]["median"])


def test_cpu_time_integrates_each_samples_share_over_the_time_it_covers() -> None:
    ns = 1_000_000_000
    # Samples at 1.0, 1.2, 1.7 s (the agent was late once) of a run from 0.9 to 1.8 s, and
    # one after its end that saw the process gone.
    ts = np.array([1 * ns, int(1.2 * ns), int(1.7 * ns), int(1.9 * ns)])
    rd = RunData({"node": "n1"}, 0.9, 1.8, points={"proc.cpu_pct": (ts, np.array([50.0, 100.0,
                                                                                   20.0, 0.0]))})
    assert cpu_time(rd) == pytest.approx(0.5 * 0.1 + 1.0 * 0.2 + 0.2 * 0.5 + 0.2 * 0.1)
    assert cpu_time(RunData({"node": "n1"}, 0.9, 1.8)) is None
    assert lookup("run.cpu_time").direction.value == "lower"
    assert lookup("proc.rss").unit == "B"
