"""The manager's record of jobs and runs: one SQLite file, so a restart forgets nothing.

WAL mode with ``synchronous=NORMAL``: a commit is a small append to the log,
cheap enough to do on the event loop for every run change, and a crash of
the process loses nothing committed (a power cut may lose the last few).
The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS`
holds one entry per version, applied in order.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bus import codec
from bus.daemon import StartupError
from bus.messages import JobSpec, RunState
from manager.scheduler import Job, JobState, Run

log = logging.getLogger(__name__)

MIGRATIONS: list[str] = [
    # 1: jobs and runs. ``seq`` keeps submission order for FIFO scheduling.
    """
    CREATE TABLE jobs (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        spec       TEXT NOT NULL,
        state      TEXT NOT NULL,
        created_at REAL NOT NULL,
        ended_at   REAL
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE runs (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        id               TEXT NOT NULL UNIQUE,
        job_id           TEXT NOT NULL REFERENCES jobs(id),
        node             TEXT NOT NULL,
        iteration        INTEGER NOT NULL,
        exclusive        INTEGER NOT NULL,
        state            TEXT NOT NULL,
        pid              INTEGER,
        exit_code        INTEGER,
        dispatched_at    REAL,
        started_at       REAL,
        ended_at         REAL,
        stdout_tail      TEXT NOT NULL DEFAULT '',
        stderr_tail      TEXT NOT NULL DEFAULT '',
        error            TEXT NOT NULL DEFAULT '',
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_job ON runs(job_id);
    """,
    # 2: the facts each node registered with, kept over time, so that the report
    # of an old job shows the kernel, governor, agent version... of its runs.
    # A row is added only when a node's facts change.
    """
    CREATE TABLE node_facts (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        node     TEXT NOT NULL,
        seen_at  REAL NOT NULL,
        facts    TEXT NOT NULL
    );
    CREATE INDEX node_facts_node ON node_facts(node, seen_at);
    """,
]

_RUN_COLS = (
    "id",
    "job_id",
    "node",
    "iteration",
    "exclusive",
    "state",
    "pid",
    "exit_code",
    "dispatched_at",
    "started_at",
    "ended_at",
    "stdout_tail",
    "stderr_tail",
    "error",
    "cancel_requested",
)
_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


class Store:
    """Jobs and runs in SQLite. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) and migrate the database at ``path``.

        Problems become :class:`StartupError` naming the file and the config key.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(
                f"cannot open state database {path}: {exc} — see server.cfg [state] path"
            ) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            _migrate(db, path)
        except (sqlite3.Error, StartupError) as exc:
            db.close()
            if isinstance(exc, StartupError):
                raise
            raise StartupError(
                f"cannot use state database {path}: {exc} — see server.cfg [state] path"
            ) from None
        return cls(db, str(path))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one commit."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- writes ---------------------------------------------------------------------

    def add_job(self, job: Job, runs: Iterable[Run]) -> None:
        """Store a new job with its runs, atomically."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO jobs (id, spec, state, created_at, ended_at) VALUES (?,?,?,?,?)",
                (job.id, _spec_json(job.spec), job.state.value, job.created_at, job.ended_at),
            )
            self._db.executemany(
                f"INSERT INTO runs ({','.join(_RUN_COLS)}) VALUES ({','.join('?' * len(_RUN_COLS))})",
                [_run_row(r) for r in runs],
            )

    def save(self, runs: Iterable[Run] = (), jobs: Iterable[Job] = ()) -> None:
        """Write the current state of changed runs and jobs in one commit."""
        run_rows = [(*_run_row(r)[5:], r.id) for r in runs]
        job_rows = [(j.state.value, j.ended_at, j.id) for j in jobs]
        if not run_rows and not job_rows:
            return
        sets = ", ".join(f"{c} = ?" for c in _RUN_COLS[5:])
        with self.transaction():
            self._db.executemany(f"UPDATE runs SET {sets} WHERE id = ?", run_rows)
            self._db.executemany("UPDATE jobs SET state = ?, ended_at = ? WHERE id = ?", job_rows)

    def record_facts(self, node: str, facts: dict[str, Any], seen_at: float) -> bool:
        """Keep ``node``'s registration facts if they differ from its last recorded ones."""
        text = json.dumps(facts, sort_keys=True)
        last = self._db.execute(
            "SELECT facts FROM node_facts WHERE node = ? ORDER BY seq DESC LIMIT 1", (node,)
        ).fetchone()
        if last is not None and last[0] == text:
            return False
        self._db.execute("INSERT INTO node_facts (node, seen_at, facts) VALUES (?,?,?)",
                         (node, seen_at, text))
        return True

    # --- reads ----------------------------------------------------------------------

    def facts_at(self, node: str, when: float | None) -> tuple[dict[str, Any], float] | None:
        """The facts ``node`` had at wall time ``when`` (its last recorded before then,
        else its first after) with their time; None if it never registered here."""
        row = None
        if when is not None:
            row = self._db.execute(
                "SELECT facts, seen_at FROM node_facts WHERE node = ? AND seen_at <= ? "
                "ORDER BY seen_at DESC, seq DESC LIMIT 1", (node, when)).fetchone()
        if row is None:
            row = self._db.execute(
                "SELECT facts, seen_at FROM node_facts WHERE node = ? ORDER BY seen_at, seq "
                "LIMIT 1", (node,)).fetchone()
        return None if row is None else (json.loads(row[0]), float(row[1]))

    def job(self, job_id: str) -> tuple[Job, list[Run]] | None:
        """One job and its runs, or None."""
        row = self._db.execute(
            "SELECT id, spec, state, created_at, ended_at FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            return None
        return _job(row), self._runs("WHERE job_id = ?", (job_id,))

    def run(self, run_id: str) -> Run | None:
        runs = self._runs("WHERE id = ?", (run_id,))
        return runs[0] if runs else None

    def jobs(self, limit: int) -> list[tuple[Job, list[Run]]]:
        """The newest ``limit`` jobs, newest first, each with its runs."""
        rows = self._db.execute(
            "SELECT id, spec, state, created_at, ended_at FROM jobs ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return self._with_runs(rows)

    def unfinished(self) -> list[tuple[Job, list[Run]]]:
        """Jobs still queued or running, oldest first: what a starting manager reloads."""
        rows = self._db.execute(
            "SELECT id, spec, state, created_at, ended_at FROM jobs "
            "WHERE state IN (?, ?) ORDER BY seq",
            _UNFINISHED,
        ).fetchall()
        return self._with_runs(rows)

    def _with_runs(self, rows: list[Any]) -> list[tuple[Job, list[Run]]]:
        if not rows:
            return []
        ids = [r[0] for r in rows]
        by_job: dict[str, list[Run]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):  # stay under SQLite's variable limit
            chunk = ids[start : start + 500]
            for run in self._runs(f"WHERE job_id IN ({','.join('?' * len(chunk))})", chunk):
                by_job[run.job_id].append(run)
        return [(_job(r), by_job[r[0]]) for r in rows]

    def _runs(self, where: str, args: Iterable[Any]) -> list[Run]:
        rows = self._db.execute(
            f"SELECT {','.join(_RUN_COLS)} FROM runs {where} ORDER BY seq", tuple(args)
        ).fetchall()
        return [_run(r) for r in rows]


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StartupError(
            f"state database {path} has schema {version}, newer than this "
            f"ptap-manager knows ({len(MIGRATIONS)}) — upgrade ptap"
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        db.executescript(f"BEGIN; {MIGRATIONS[number - 1]} PRAGMA user_version = {number}; COMMIT;")
        log.info("state database %s migrated to schema %d", path, number)


def _spec_json(spec: JobSpec) -> str:
    return json.dumps(codec.to_dict(spec), sort_keys=True)


def _job(row: Any) -> Job:
    job_id, spec, state, created_at, ended_at = row
    data = json.loads(spec)
    known = {f for f in JobSpec.__dataclass_fields__}
    return Job(
        id=job_id,
        spec=JobSpec(**{k: v for k, v in data.items() if k in known}),
        created_at=created_at,
        state=JobState(state),
        ended_at=ended_at,
    )


def _run_row(run: Run) -> tuple[Any, ...]:
    return (
        run.id,
        run.job_id,
        run.node,
        run.iteration,
        int(run.exclusive),
        run.state.value,
        run.pid,
        run.exit_code,
        run.dispatched_at,
        run.started_at,
        run.ended_at,
        run.stdout_tail,
        run.stderr_tail,
        run.error,
        int(run.cancel_requested),
    )


def _run(row: Any) -> Run:
    values = dict(zip(_RUN_COLS, row, strict=True))
    values["exclusive"] = bool(values["exclusive"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    values["state"] = RunState(values["state"])
    return Run(**values)
