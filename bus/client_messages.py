"""Requests of clients (the CLI, the shell, the dashboard), the manager's replies,
and the events it publishes (docs/protocol.md "Client requests", "PUB events").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bus.message_types import Message, MsgType


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A test task: what to run, where, how often, and what to collect.

    ``targets`` holds node names, ``label:NAME`` selectors, or ``all``.
    ``exclusive`` keeps the run from overlapping another test on the node.
    ``series`` names the performance history the job belongs to (empty: its
    ``name``); tags such as ``version`` or ``commit`` order and label its point.
    """

    command: list[str]
    name: str = ""
    targets: list[str] = field(default_factory=lambda: ["all"])
    collect: list[str] = field(default_factory=lambda: ["system"])
    interval: float = 1.0
    timeout: float = 0.0
    repeat: int = 1
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    exclusive: bool = True
    series: str = ""


@dataclass(frozen=True, slots=True)
class NodesList(Message):
    """client → manager: list nodes. Reply: ``{"nodes": [node dict, ...]}``.

    Only nodes in one of ``states`` (``ready``, ``busy``, ``lost``; empty: any)
    that carry every label in ``labels`` are listed, so a filtered list of a
    large fleet stays small. A manager older than these fields ignores them and
    lists every node (``ptap nodes`` filters again).
    """

    TYPE: ClassVar[MsgType] = MsgType.NODES_LIST
    req_id: str
    states: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NodeForget(Message):
    """client → manager: forget lost node ``node`` now (its jobs and metrics stay).
    Reply: the node dict it had. ``not-found`` for a node the manager does not
    know; ``bad-request`` for one that is not lost (its agent would register
    again at once)."""

    TYPE: ClassVar[MsgType] = MsgType.NODE_FORGET
    req_id: str
    node: str


@dataclass(frozen=True, slots=True)
class JobSubmit(Message):
    """client → manager: create a job. Reply: the job dict (with ``id`` and its runs)."""

    TYPE: ClassVar[MsgType] = MsgType.JOB_SUBMIT
    req_id: str
    spec: JobSpec


@dataclass(frozen=True, slots=True)
class JobsList(Message):
    """client → manager: newest jobs first. Reply: ``{"jobs": [job dict, ...]}``."""

    TYPE: ClassVar[MsgType] = MsgType.JOBS_LIST
    req_id: str
    limit: int = 100


@dataclass(frozen=True, slots=True)
class JobGet(Message):
    """client → manager: one job with its runs. Reply: the job dict."""

    TYPE: ClassVar[MsgType] = MsgType.JOB_GET
    req_id: str
    job_id: str


@dataclass(frozen=True, slots=True)
class JobCancel(Message):
    """client → manager: cancel every unfinished run of a job. Reply: the job dict."""

    TYPE: ClassVar[MsgType] = MsgType.JOB_CANCEL
    req_id: str
    job_id: str


@dataclass(frozen=True, slots=True)
class Keys(Message):
    """client → manager: agent key acceptance (``list|accept|reject|revoke``)."""

    TYPE: ClassVar[MsgType] = MsgType.KEYS
    req_id: str
    action: str
    node: str = ""


@dataclass(frozen=True, slots=True)
class ReportGet(Message):
    """client → manager: the analysis report of a job (docs/architecture.md#analysis).

    ``format`` is ``json`` (reply: the report object), or ``text``, ``csv``,
    ``html`` (reply: ``{"format": F, "content": str}``).
    """

    TYPE: ClassVar[MsgType] = MsgType.REPORT_GET
    req_id: str
    job_id: str
    format: str = "json"


@dataclass(frozen=True, slots=True)
class CompareGet(Message):
    """client → manager: compare job ``cand`` against baseline job ``base``.

    ``threshold`` is the relative change of the median (0.05 = 5 %) beyond
    which a significant change is a regression or an improvement. ``format``
    as for :class:`ReportGet`.
    """

    TYPE: ClassVar[MsgType] = MsgType.COMPARE_GET
    req_id: str
    base: str
    cand: str
    format: str = "json"
    threshold: float = 0.05


@dataclass(frozen=True, slots=True)
class HistoryGet(Message):
    """client → manager: the performance history of a series (README "History").

    ``series`` is a job name or a spec's ``series``. ``metrics`` are metric ids
    (empty: the test's own, ``run.*``, ``proc.*``, ``perf.*`` of the tree and
    ``app.*``); ``since`` keeps the jobs created at or after that wall time
    (0: all); ``last`` keeps the last N points (0: all). Reply: the history
    object (``kind`` ``ptap.history``, see ``manager/history/__init__.py``);
    ``not-found`` for a series no finished job belongs to.
    """

    TYPE: ClassVar[MsgType] = MsgType.HISTORY_GET
    req_id: str
    series: str
    metrics: list[str] = field(default_factory=list)
    since: float = 0.0
    last: int = 0


@dataclass(frozen=True, slots=True)
class StatusGet(Message):
    """client → manager: the manager's own health, for ``ptap doctor``.

    Reply: ``{"version", "protocol", "curve", "interval", "liveness",
    "influxdb": {"url", "database", "write_error", "read_error", "queued_points",
    "write_retries"}, "pending_keys"}`` (docs/protocol.md).
    """

    TYPE: ClassVar[MsgType] = MsgType.STATUS_GET
    req_id: str


@dataclass(frozen=True, slots=True)
class Reply(Message):
    """manager → client: the result of request ``req_id``."""

    TYPE: ClassVar[MsgType] = MsgType.REPLY
    req_id: str
    result: Any


@dataclass(frozen=True, slots=True)
class Error(Message):
    """manager → peer: request ``req_id`` (empty for a bad frame) failed.

    ``code`` is machine-readable (``ProtocolError.code``, ``not-found``,
    ``not-registered``, ``bad-request``...); ``message`` is one line for people.
    """

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    req_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Event(Message):
    """manager → subscribers over PUB: a node, a job or runs changed state.

    ``kind`` is ``node`` (``detail``: the node JSON), ``job`` (the job JSON) or
    ``runs``: the run JSON of every change to the job's runs that the manager stored
    in one turn of its loop, in order, in ``detail["runs"]`` (see :meth:`runs`).
    """

    TYPE: ClassVar[MsgType] = MsgType.EVENT
    kind: str
    ts: float
    node: str = ""
    job_id: str = ""
    run_id: str = ""
    state: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def runs(self) -> list[dict[str, Any]]:
        """The run JSON objects of a ``runs`` event, in the order the runs changed (a
        run that changed twice is there twice); none for other kinds."""
        runs = self.detail.get("runs") if self.kind == RUNS_EVENT else None
        return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


#: The kind of event that carries run changes. One event holds a turn's changes to a
#: job's runs (at most MAX_RUNS_PER_EVENT of them): a job to 1,000 nodes made 1,000
#: events per state, each a send for the manager and a receive and a decode for every
#: subscriber (the CLI, the dashboard, ``ptap watch``).
RUNS_EVENT = "runs"
MAX_RUNS_PER_EVENT = 256


#: Every client request, reply and event class.
CLIENT_MESSAGES: tuple[type[Message], ...] = (
    NodesList,
    NodeForget,
    JobSubmit,
    JobsList,
    JobGet,
    JobCancel,
    Keys,
    ReportGet,
    CompareGet,
    HistoryGet,
    StatusGet,
    Reply,
    Error,
    Event,
)
