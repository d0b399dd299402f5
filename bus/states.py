"""The states of nodes, jobs and runs, as the wire and the JSON shapes spell them
(docs/architecture.md#nodes-jobs-and-runs).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["JobState", "KeyState", "NodeState", "RunState"]


class RunState(StrEnum):
    """Life of one run (one node, one iteration). See docs/architecture.md#nodes-jobs-and-runs."""

    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def final(self) -> bool:
        return self in _FINAL_RUN_STATES


_FINAL_RUN_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.TIMEOUT, RunState.CANCELLED, RunState.LOST}
)


class NodeState(StrEnum):
    """Liveness of a node as the manager's registry sees it."""

    READY = "ready"
    BUSY = "busy"
    LOST = "lost"


class JobState(StrEnum):
    """A job's state, derived from its runs (``manager.scheduler.job_state``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


class KeyState(StrEnum):
    """Where an agent's key is filed (``ptap keys``; docs/architecture.md#security)."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REVOKED = "revoked"
