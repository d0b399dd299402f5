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
node.forget           client → mgr    DEALER → ROUTER, answered by reply/error
status.get            client → mgr    DEALER → ROUTER, answered by reply/error
history.get           client → mgr    DEALER → ROUTER, answered by reply/error
reply, error          mgr → peer      ROUTER → DEALER
event                 mgr → all       PUB ``evt.node.<n>`` / ``evt.job.<id>``
====================  ==============  =====================================

The classes live in :mod:`bus.agent_messages` (agent ⇄ manager) and
:mod:`bus.client_messages` (clients' requests, replies, events), the type names in
:mod:`bus.message_types` and the states in :mod:`bus.states`; this module
re-exports them all and holds the codec table.
"""

from __future__ import annotations

from bus.agent_messages import (
    AGENT_MESSAGES,
    MAX_HEARTBEAT,
    MAX_INTERVAL,
    MAX_ITERATION,
    MAX_LIVENESS,
    MAX_TIMEOUT,
    MIN_HEARTBEAT,
    MIN_INTERVAL,
    Heartbeat,
    MetricAck,
    MetricBatch,
    NodeFacts,
    Register,
    RunAck,
    RunCancel,
    RunDispatch,
    RunReport,
    RunUpdate,
    Welcome,
    dispatch_problem,
    run_settings_problem,
    welcome_problem,
)
from bus.client_messages import (
    CLIENT_MESSAGES,
    MAX_RUNS_PER_EVENT,
    RUNS_EVENT,
    CompareGet,
    Error,
    Event,
    HistoryGet,
    JobCancel,
    JobGet,
    JobsList,
    JobSpec,
    JobSubmit,
    Keys,
    NodeForget,
    NodesList,
    Reply,
    ReportGet,
    StatusGet,
)
from bus.message_types import (
    PROTOCOL_VERSION,
    Message,
    MsgType,
)
from bus.states import (
    JobState,
    NodeState,
    RunState,
)

__all__ = [
    "AGENT_MESSAGES",
    "CLIENT_MESSAGES",
    "CompareGet",
    "Error",
    "Event",
    "Heartbeat",
    "HistoryGet",
    "JobCancel",
    "JobGet",
    "JobSpec",
    "JobState",
    "JobSubmit",
    "JobsList",
    "Keys",
    "MAX_HEARTBEAT",
    "MAX_INTERVAL",
    "MAX_ITERATION",
    "MAX_RUNS_PER_EVENT",
    "MAX_LIVENESS",
    "MAX_TIMEOUT",
    "MESSAGE_CLASSES",
    "MIN_HEARTBEAT",
    "MIN_INTERVAL",
    "Message",
    "MetricAck",
    "MetricBatch",
    "MsgType",
    "NodeFacts",
    "NodeForget",
    "NodeState",
    "NodesList",
    "PROTOCOL_VERSION",
    "Register",
    "Reply",
    "ReportGet",
    "RunAck",
    "RunCancel",
    "RUNS_EVENT",
    "RunDispatch",
    "RunReport",
    "RunState",
    "RunUpdate",
    "StatusGet",
    "Welcome",
    "dispatch_problem",
    "run_settings_problem",
    "welcome_problem",
]

#: The codec table: wire type → class. One entry per :class:`MsgType`.
MESSAGE_CLASSES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls for cls in (*AGENT_MESSAGES, *CLIENT_MESSAGES)
}
assert set(MESSAGE_CLASSES) == set(MsgType), "every MsgType needs a class"
