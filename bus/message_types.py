"""The wire's type names and the base of every message class.

Every message is a frozen dataclass (:mod:`bus.agent_messages`,
:mod:`bus.client_messages`) whose ``TYPE`` is one :class:`MsgType`; the codec
table is :data:`bus.messages.MESSAGE_CLASSES`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

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
    NODE_FORGET = "node.forget"
    JOB_SUBMIT = "job.submit"
    JOBS_LIST = "jobs.list"
    JOB_GET = "job.get"
    JOB_CANCEL = "job.cancel"
    KEYS = "keys"
    REPORT_GET = "report.get"
    COMPARE_GET = "compare.get"
    HISTORY_GET = "history.get"
    STATUS_GET = "status.get"
    REPLY = "reply"
    ERROR = "error"
    EVENT = "event"


class Message:
    """Base of all message classes; ``TYPE`` ties a class to its :class:`MsgType`."""

    TYPE: ClassVar[MsgType]
