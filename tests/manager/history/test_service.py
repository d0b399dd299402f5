"""HistoryService over a real state database: answers from stored summaries, refusals, hooks.

InfluxDB is not needed here: every job asked about has its summary stored, so the
analyst (built with no query client) is never asked for points. Summaries made from
InfluxDB are tested in tests/integration/test_history.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bus.messages import JobSpec, RunState
from manager.analysis.service import Analyst, NotFound
from manager.history.service import HistoryService
from manager.history.summaries import SummaryStore
from manager.scheduler import Job, JobState, Run
from manager.state import Store
from tests.manager.history.test_build import CPU, series


def make(tmp_path: Path, spawned: list[str]) -> tuple[Store, HistoryService]:
    store = Store.open(tmp_path / "state.db")

    def job_dict(job_id: str) -> dict[str, Any] | None:
        found = store.job(job_id)
        return found[0].to_dict(found[1]) if found else None

    analyst = Analyst(job_dict, lambda node, when: None, None)  # type: ignore[arg-type]
    service = HistoryService(analyst, lambda: store.path,
                             lambda coro, name: (spawned.append(name), coro.close()),
                             clock=lambda: 10_000.0)
    return store, service


def add_series(store: Store) -> None:
    summaries = SummaryStore(store.path)
    for s in series(CPU):
        job = s["job"]
        spec = JobSpec(command=["./b"], name="nightly", tags=job["tags"])
        store.add_job(Job(id=job["id"], spec=spec, created_at=job["created_at"],
                          state=JobState.SUCCEEDED, ended_at=job["ended_at"]),
                      [Run(id=f"r-{job['id']}", job_id=job["id"], node="n1", iteration=1,
                           state=RunState.SUCCEEDED)])
        summaries.put(s)
    summaries.close()


def test_a_history_from_stored_summaries(tmp_path: Path) -> None:
    store, service = make(tmp_path, [])
    add_series(store)
    h = asyncio.run(service.history("nightly", ["run.cpu_seconds"]))
    assert len(h["jobs"]) == 12 and h["metrics"][0]["change_points"][0]["job"] == "job07"
    h = asyncio.run(service.history("nightly", ["run.cpu_seconds"], since=1006.5))
    assert [j["id"] for j in h["jobs"]] == [f"job{i:02d}" for i in range(7, 13)]
    service.close()
    store.close()


def test_unknown_series_and_too_late_a_since_say_what_to_do(tmp_path: Path) -> None:
    store, service = make(tmp_path, [])
    add_series(store)
    with pytest.raises(NotFound, match="no finished job in series 'weekly'; .* --series NAME"):
        asyncio.run(service.history("weekly", []))
    with pytest.raises(NotFound, match="has no finished job since .*try an earlier --since"):
        asyncio.run(service.history("nightly", [], since=5000.0))
    service.close()
    store.close()


def test_only_jobs_of_a_series_are_summarised_when_they_end(tmp_path: Path) -> None:
    spawned: list[str] = []
    store, service = make(tmp_path, spawned)
    for job_id, spec in (("a", JobSpec(command=["x"], name="nightly")),
                         ("b", JobSpec(command=["x"])),
                         ("c", JobSpec(command=["x"], series="weekly"))):
        service.job_ended(job_id, spec)
    assert spawned == ["summary a", "summary c"]
    store.close()


def test_a_job_kept_while_it_was_summarised_for_this_answer_counts_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The job's own end task keeps its summary 5 s after the job ends; a history asked
    # just then summarises it for the answer too. It must show once (a CI run saw 13
    # points of 12 jobs).
    store, service = make(tmp_path, [])
    add_series(store)
    kept = SummaryStore(store.path)
    job07 = next(s for s in kept.of_series("nightly") if s["job"]["id"] == "job07")
    kept._db.execute("DELETE FROM job_summaries WHERE job_id = 'job07'")

    async def first_use(job_id: str, now: float) -> dict[str, Any] | None:
        kept.put(job07)  # the end task, in between the two reads
        return job07

    monkeypatch.setattr(service, "_first_use", first_use)
    h = asyncio.run(service.history("nightly", ["run.cpu_seconds"]))
    assert [j["id"] for j in h["jobs"]] == [f"job{i:02d}" for i in range(1, 13)]
    kept.close()
    service.close()
    store.close()
