"""The shapes of the manager's replies, as the CLI, the shell and the dashboard read them.

These are the JSON objects of docs/protocol.md ("JSON shapes"), which ``--json``
prints too. They are ``TypedDict`` s, so mypy checks every key a client reads,
while on the wire they stay plain maps. States are strings on the wire; compare
them with :class:`bus.states.JobState`, :class:`bus.states.RunState` and
:class:`bus.states.NodeState` (``StrEnum`` s, equal to their strings).

Keys marked ``NotRequired`` are left out in some replies (``jobs.list`` has no
output tails) or by older managers.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class NodeFactsReply(TypedDict):
    """What the agent said about its node when it registered."""

    hostname: str
    address: str
    cpus: int
    memory_bytes: int
    kernel: str
    cpu_model: NotRequired[str]
    governor: NotRequired[str]
    perf_available: bool
    perf_paranoid: int | None
    pmu_hardware: bool
    labels: list[str]
    agent_version: str


class NodeReply(TypedDict):
    """One node (``nodes.list``, ``evt.node.*`` events' ``detail``)."""

    name: str
    state: str  # a NodeState
    address: str
    last_seen: float
    silent_for: float
    registered_at: float
    running: list[str]
    clock_offset: float | None
    spool_depth: int | None
    samples_dropped: int | None
    app_dropped: NotRequired[int | None]
    facts: NodeFactsReply


class RunReply(TypedDict):
    """One run of a job."""

    id: str
    job_id: str
    node: str
    iteration: int
    state: str  # a RunState
    pid: int | None
    exit_code: int | None
    dispatched_at: float | None
    started_at: float | None
    ended_at: float | None
    stdout_tail: NotRequired[str]
    stderr_tail: NotRequired[str]
    error: str


class JobSpecReply(TypedDict):
    """A job's spec as the manager keeps it (its ``name`` is the job's)."""

    command: list[str]
    targets: list[str]
    collect: list[str]
    interval: float
    timeout: float
    repeat: int
    env: NotRequired[dict[str, str]]  # left out of events
    cwd: str
    tags: dict[str, str]
    exclusive: bool
    series: NotRequired[str]


class JobReply(TypedDict):
    """One job with its runs (``job.get``, ``job.submit``, ``job.cancel``, ``jobs.list``)."""

    id: str
    name: str
    state: str  # a JobState
    created_at: float
    ended_at: float | None
    spec: JobSpecReply
    runs: list[RunReply]


class KeyEntry(TypedDict):
    """One agent key: ``keys list`` lists them, ``accept``/``reject``/``revoke`` answer one."""

    node: str
    key: str
    state: NotRequired[str]  # in the answer to accept, reject, revoke


class InfluxStatus(TypedDict):
    url: str
    database: str
    write_error: str
    read_error: str
    queued_points: int
    write_retries: int


class StatusReply(TypedDict):
    """The manager's own health (``status.get``, for ``ptap doctor``)."""

    version: str
    protocol: int
    curve: bool
    interval: float
    liveness: int
    influxdb: InfluxStatus
    pending_keys: list[str] | None


class RenderedReply(TypedDict):
    """A report or comparison asked for as ``text``, ``csv`` or ``html``."""

    format: str
    content: str


#: A report or comparison object (docs/report-schema.json), or its rendering.
ReportReply = dict[str, Any]
