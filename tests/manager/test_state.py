"""The SQLite store: round trips, reopening, schema version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bus.daemon import StartupError
from bus.messages import JobSpec, RunState
from manager.scheduler import Job, JobState, Run, expand
from manager.state import MIGRATIONS, Store
from tests.manager.test_scheduler import NODES


def new_job(job_id: str, created_at: float = 1.0) -> tuple[Job, list[Run]]:
    spec = JobSpec(command=["sleep", "1"], name="nap", env={"A": "1"}, tags={"build": "2"},
                   repeat=2, targets=["all"])
    return Job(id=job_id, spec=spec, created_at=created_at), expand(job_id, spec, NODES)


def test_reopen_keeps_jobs_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.db"
    store = Store.open(path)
    job, runs = new_job("j1")
    store.add_job(job, runs)
    runs[0].state, runs[0].pid, runs[0].stdout_tail = RunState.RUNNING, 42, "hello"
    runs[0].cancel_requested = True
    job.state = JobState.RUNNING
    store.save([runs[0]], [job])
    store.close()

    store = Store.open(path)
    try:
        found = store.job("j1")
        assert found is not None
        again, again_runs = found
        assert again == job
        assert again_runs == runs
        assert store.run("j1.a.1") == runs[0]
        assert store.job("nope") is None and store.run("nope") is None
    finally:
        store.close()


def test_unfinished_and_newest_first(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db")
    try:
        for n in range(3):
            store.add_job(*new_job(f"j{n}", created_at=float(n)))
        done, done_runs = store.job("j1")
        done.state, done.ended_at = JobState.SUCCEEDED, 9.0
        store.save([], [done])
        assert [j.id for j, _ in store.unfinished()] == ["j0", "j2"]
        assert [j.id for j, _ in store.jobs(limit=2)] == ["j2", "j1"]
        assert [len(r) for _, r in store.jobs(limit=10)] == [4, 4, 4]
    finally:
        store.close()


def test_wal_and_schema_version(tmp_path: Path) -> None:
    Store.open(tmp_path / "m.db").close()
    db = sqlite3.connect(tmp_path / "m.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        db.commit()
    finally:
        db.close()
    with pytest.raises(StartupError, match="newer than this ptap-manager"):
        Store.open(tmp_path / "m.db")


def test_unusable_path_is_a_startup_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StartupError, match=r"\[state\] path"):
        Store.open(tmp_path / "file" / "m.db")
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    with pytest.raises(StartupError, match=r"\[state\] path"):
        Store.open(tmp_path / "garbage.db")


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db")
    try:
        job, runs = new_job("j1")
        store.add_job(job, runs)
        with pytest.raises(sqlite3.IntegrityError):
            store.add_job(job, runs)
        assert [j.id for j, _ in store.jobs(10)] == ["j1"]
    finally:
        store.close()


def test_schema_1_database_is_migrated_with_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:  # a database written by the manager before node facts were kept
        db.executescript(f"BEGIN; {MIGRATIONS[0]} PRAGMA user_version = 1; COMMIT;")
    finally:
        db.close()
    old = Store.open(path)
    old.close()  # (opening migrates; reopen to check the result is stable)
    store = Store.open(path)
    try:
        store.add_job(*new_job("j1"))
        assert store.facts_at("a", 5.0) is None
        assert store.record_facts("a", {"kernel": "6.1"}, 10.0)
        assert store.job("j1") is not None
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        db.close()


def test_node_facts_are_kept_over_time(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db")
    try:
        assert store.record_facts("a", {"kernel": "6.1", "cpus": 2}, 10.0)
        assert not store.record_facts("a", {"cpus": 2, "kernel": "6.1"}, 20.0), "unchanged"
        assert store.record_facts("a", {"kernel": "6.5", "cpus": 2}, 30.0)
        assert store.record_facts("b", {"kernel": "5.10"}, 15.0)
        assert store.facts_at("a", 25.0) == ({"kernel": "6.1", "cpus": 2}, 10.0)
        assert store.facts_at("a", 30.0) == ({"kernel": "6.5", "cpus": 2}, 30.0)
        assert store.facts_at("a", 5.0) == ({"kernel": "6.1", "cpus": 2}, 10.0), "first after"
        assert store.facts_at("a", None) == ({"kernel": "6.1", "cpus": 2}, 10.0)
        assert store.facts_at("c", 5.0) is None
    finally:
        store.close()
