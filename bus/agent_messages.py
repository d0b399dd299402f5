"""Messages between an agent and the manager, and the numbers in them a peer
may not get wrong (docs/protocol.md "Agent session", "Runs", "Metric batches").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bus.message_types import Message, MsgType
from bus.states import RunState


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


#: Every agent ⇄ manager message class.
AGENT_MESSAGES: tuple[type[Message], ...] = (
    Register,
    Welcome,
    Heartbeat,
    RunDispatch,
    RunCancel,
    RunUpdate,
    RunAck,
    MetricBatch,
    MetricAck,
)
