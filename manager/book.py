"""The book of unfinished jobs: the manager's in-memory index of jobs and runs.

The state database (``manager/state.py``) is the record; the book is what
scheduling and run updates work on, indexed by job and by node, so they never
wait on a query and a run update looks at its own node's runs only.
"""

from __future__ import annotations

from collections.abc import Iterable

from manager.scheduler import ACTIVE, Job, Run


class Book:
    """Unfinished jobs and all their runs, in submission order (an in-memory index).

    The store is the record; the book is what scheduling and run updates
    work on, so they never wait on a query.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.runs: dict[str, Run] = {}
        self._by_job: dict[str, list[Run]] = {}
        # Per node, in submission order: a run update or a node's state change
        # looks at that node's runs only, not at every run of every job (with a
        # job on 1,000 nodes that made one submit cost 1,000 × 1,000 steps).
        self._by_node: dict[str, list[Run]] = {}

    def add(self, job: Job, runs: Iterable[Run]) -> None:
        self.jobs[job.id] = job
        self._by_job[job.id] = list(runs)
        for run in self._by_job[job.id]:
            self.runs[run.id] = run
            self._by_node.setdefault(run.node, []).append(run)

    def runs_of(self, job_id: str) -> list[Run]:
        return self._by_job.get(job_id, [])

    def on_node(self, node: str) -> list[Run]:
        """The node's unfinished jobs' runs, in submission order."""
        return list(self._by_node.get(node, ()))

    def active_on(self, node: str) -> list[str]:
        """Ids of the runs dispatched to or running on ``node``."""
        return [r.id for r in self._by_node.get(node, ()) if r.state in ACTIVE]

    def drop(self, job_id: str) -> None:
        """Forget a finished job (it stays in the store)."""
        self.jobs.pop(job_id, None)
        nodes = set()
        for run in self._by_job.pop(job_id, []):
            self.runs.pop(run.id, None)
            nodes.add(run.node)
        for node in nodes:  # one pass per node, however many iterations it ran
            kept = [r for r in self._by_node.get(node, ()) if r.job_id != job_id]
            if kept:
                self._by_node[node] = kept
            else:
                self._by_node.pop(node, None)
