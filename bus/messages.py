"""Every message ptap sends, as one frozen dataclass per type.

Frames are ``[type][msgpack map of the fields]``; a ROUTER socket adds the peer's
routing id in front and a PUB socket a topic. Fields are always named, never
positional, so an older peer that lacks a field fails validation with a clear
error instead of shifting every value by one (Locust #2975). Fields a newer peer
adds are ignored, so minor additions stay compatible; anything else bumps
:data:`PROTOCOL_VERSION`.

Who sends what:

====================  ==============  =====================================
type                  direction       socket
====================  ==============  =====================================
agent.register        agent → mgr     DEALER → ROUTER
agent.welcome         mgr → agent     ROUTER → DEALER
heartbeat             both ways       DEALER ⇄ ROUTER
run.dispatch          mgr → agent     ROUTER → DEALER (never PUB)
run.cancel            mgr → agent     ROUTER → DEALER
run.update            agent → mgr     DEALER → ROUTER
run.ack               mgr → agent     ROUTER → DEALER
metrics.batch         agent → mgr     PUSH → PULL (and PUB ``m.<node>``)
metrics.ack           mgr → agent     ROUTER → DEALER
nodes.list …          client → mgr    DEALER → ROUTER, answered by reply/error
status.get            client → mgr    DEALER → ROUTER, answered by reply/error
reply, error          mgr → peer      ROUTER → DEALER
event                 mgr → all       PUB ``evt.node.<n>`` / ``evt.job.<id>``
====================  ==============  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

#: Bumped on any change an older peer cannot ignore. Sent in registration.
PROTOCOL_VERSION = 1


class MsgType(StrEnum):
    REGISTER = "agent.register"
    WELCOME = "agent.welcome"
    HEARTBEAT = "heartbeat"
    RUN_DISPATCH = "run.dispatch"
    RUN_CANCEL = "run.cancel"
    RUN_UPDATE = "run.update"
    RUN_ACK = "run.ack"
    METRICS = "metrics.batch"
    METRICS_ACK = "metrics.ack"
    NODES_LIST = "nodes.list"
    JOB_SUBMIT = "job.submit"
    JOBS_LIST = "jobs.list"
    JOB_GET = "job.get"
    JOB_CANCEL = "job.cancel"
    KEYS = "keys"
    REPORT_GET = "report.get"
    COMPARE_GET = "compare.get"
    STATUS_GET = "status.get"
    REPLY = "reply"
    ERROR = "error"
    EVENT = "event"


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


class Message:
    """Base of all message classes; ``TYPE`` ties a class to its :class:`MsgType`."""

    TYPE: ClassVar[MsgType]


# --- agent ⇄ manager -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What an agent tells about its node when it registers."""

    hostname: str
    address: str
    cpus: int
    memory_bytes: int
    kernel: str
    cpu_model: str = ""
    governor: str = ""
    perf_available: bool = False
    perf_paranoid: int | None = None
    pmu_hardware: bool = False
    labels: list[str] = field(default_factory=list)
    agent_version: str = ""


@dataclass(frozen=True, slots=True)
class RunReport:
    """The agent's view of one run: sent on every state change and at registration."""

    run_id: str
    job_id: str
    state: RunState
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    error: str = ""
    #: App metric datagrams the kernel dropped on this run's UDP endpoint (its
    #: receive buffer was full); None: not known (no ``app`` collector, an older agent).
    app_dropped: int | None = None


@dataclass(frozen=True, slots=True)
class Register(Message):
    """agent → manager: "I am ``node``, here are my facts and the runs I hold".

    ``runs`` lists runs still running and finished runs the manager has not
    acknowledged yet, so a restarted manager learns their outcome. ``sent_at`` is
    the agent's wall clock (``time.time()``) when it sent this: the manager's
    first reading of the node's clock offset (None from an older agent).
    """

    TYPE: ClassVar[MsgType] = MsgType.REGISTER
    protocol: int
    node: str
    facts: NodeFacts
    runs: list[RunReport] = field(default_factory=list)
    sent_at: float | None = None


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """manager → agent: registration accepted, with the manager's liveness settings.

    ``last_seq`` is the highest metric batch sequence stored for this node, so
    the agent can drop spooled batches the manager already has.
    """

    TYPE: ClassVar[MsgType] = MsgType.WELCOME
    node: str
    heartbeat_interval: float
    liveness: int
    last_seq: int = -1


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Either way, every ``heartbeat_interval``. Any message counts as proof of life.

    An agent's heartbeat also carries its wall clock when sent (``sent_at``, for
    the manager's clock-offset estimate), the metric batches its spool holds
    unacked (``spool_depth``) and the samples it has dropped since it started
    (``samples_dropped``), and the app metric datagrams the kernel dropped on
    its runs' UDP endpoints since it started (``app_dropped``). None: not known
    (the manager's heartbeats, an older agent).
    """

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    running: int = 0
    sent_at: float | None = None
    spool_depth: int | None = None
    samples_dropped: int | None = None
    app_dropped: int | None = None


@dataclass(frozen=True, slots=True)
class RunDispatch(Message):
    """manager → agent: start run ``run_id`` of job ``job_id``.

    ``command`` is an argv; the agent starts it in a new process group so that
    cancel and timeout end the whole tree. ``timeout`` 0 means none.
    """

    TYPE: ClassVar[MsgType] = MsgType.RUN_DISPATCH
    run_id: str
    job_id: str
    iteration: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    timeout: float = 0.0
    collect: list[str] = field(default_factory=list)
    interval: float = 1.0


@dataclass(frozen=True, slots=True)
class RunCancel(Message):
    """manager → agent: end run ``run_id`` and its whole process tree."""

    TYPE: ClassVar[MsgType] = MsgType.RUN_CANCEL
    run_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunUpdate(Message):
    """agent → manager: a run changed state. Final states are resent until acked."""

    TYPE: ClassVar[MsgType] = MsgType.RUN_UPDATE
    run: RunReport


@dataclass(frozen=True, slots=True)
class RunAck(Message):
    """manager → agent: the final state of ``run_id`` is stored; forget it."""

    TYPE: ClassVar[MsgType] = MsgType.RUN_ACK
    run_id: str


@dataclass(frozen=True, slots=True)
class MetricBatch(Message):
    """agent → manager over PUSH: series (see :mod:`bus.metrics`) with a per-node sequence."""

    TYPE: ClassVar[MsgType] = MsgType.METRICS
    node: str
    seq: int
    series: list[Any]


@dataclass(frozen=True, slots=True)
class MetricAck(Message):
    """manager → agent: these batch sequences are stored in InfluxDB."""

    TYPE: ClassVar[MsgType] = MsgType.METRICS_ACK
    seqs: list[int]


# --- client → manager requests -----------------------------------------------


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A test task: what to run, where, how often, and what to collect.

    ``targets`` holds node names, ``label:NAME`` selectors, or ``all``.
    ``exclusive`` keeps the run from overlapping another test on the node.
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


@dataclass(frozen=True, slots=True)
class NodesList(Message):
    """client → manager: list nodes. Reply: ``{"nodes": [node dict, ...]}``."""

    TYPE: ClassVar[MsgType] = MsgType.NODES_LIST
    req_id: str


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
    """manager → subscribers over PUB: a node or run changed state.

    ``kind`` is ``node`` or ``run``; ``detail`` carries the changed record.
    """

    TYPE: ClassVar[MsgType] = MsgType.EVENT
    kind: str
    ts: float
    node: str = ""
    job_id: str = ""
    run_id: str = ""
    state: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


#: The codec table: wire type → class. One entry per :class:`MsgType`.
MESSAGE_CLASSES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Register, Welcome, Heartbeat, RunDispatch, RunCancel, RunUpdate, RunAck,
        MetricBatch, MetricAck, NodesList, JobSubmit, JobsList, JobGet, JobCancel,
        Keys, ReportGet, CompareGet, StatusGet, Reply, Error, Event,
    )
}
assert set(MESSAGE_CLASSES) == set(MsgType), "every MsgType needs a class"


# --- numbers a peer may not get wrong ----------------------------------------------
#
# The codec checks types; these check the values that steer timers and loops.
# NaN, infinities and absurd magnitudes type-check as floats and ints, and
# reached asyncio's timers and the agent's beat grid (OverflowError, ValueError).

#: Longest run timeout, seconds (30 days): a larger one is a mistake, not a test.
MAX_TIMEOUT = 30 * 24 * 3600.0
#: Sampling interval bounds, seconds (the collectors' own: 0.1 s to an hour).
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0
#: Heartbeat interval bounds, seconds, and the liveness count's.
MIN_HEARTBEAT, MAX_HEARTBEAT = 0.05, 3600.0
MAX_LIVENESS = 100
#: Iterations of one job on one node.
MAX_ITERATION = 10_000


def _within(value: float, lo: float, hi: float) -> bool:
    return lo <= value <= hi  # False for NaN, whichever side


def run_settings_problem(timeout: float, interval: float) -> str:
    """Why a run's ``timeout`` (0: none) or sampling ``interval`` is unusable, or ""."""
    if not (timeout == 0 or _within(timeout, 0.0, MAX_TIMEOUT)):
        return f"timeout {timeout!r} is not 0 (none) or a number of seconds up to {MAX_TIMEOUT:g}"
    if not _within(interval, MIN_INTERVAL, MAX_INTERVAL):
        return f"interval {interval!r} is outside {MIN_INTERVAL:g}..{MAX_INTERVAL:g} s"
    return ""


def dispatch_problem(msg: RunDispatch) -> str:
    """Why an agent must not start ``msg``, as far as its numbers go, or ""."""
    if not 1 <= msg.iteration <= MAX_ITERATION:
        return f"iteration {msg.iteration} is outside 1..{MAX_ITERATION}"
    return run_settings_problem(msg.timeout, msg.interval)


def welcome_problem(msg: Welcome) -> str:
    """Why an agent must not adopt ``msg``'s heartbeat settings, or ""."""
    if not _within(msg.heartbeat_interval, MIN_HEARTBEAT, MAX_HEARTBEAT):
        return (f"heartbeat interval {msg.heartbeat_interval!r} is outside "
                f"{MIN_HEARTBEAT:g}..{MAX_HEARTBEAT:g} s")
    if not 1 <= msg.liveness <= MAX_LIVENESS:
        return f"liveness {msg.liveness} is outside 1..{MAX_LIVENESS}"
    return ""
