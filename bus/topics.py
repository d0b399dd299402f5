"""PUB topics. Subscribers filter by prefix, so the shape is ``family.key``.

PUB frames are ``[topic, type, body]``: the topic first so that ZeroMQ can
filter without decoding, then an ordinary message.
"""

from __future__ import annotations

NODE_EVENTS = "evt.node."
JOB_EVENTS = "evt.job."
METRICS = "m."
CONTROL_ALL = "ctl.all"


def node_events(node: str) -> bytes:
    return f"{NODE_EVENTS}{node}".encode()


def job_events(job_id: str) -> bytes:
    return f"{JOB_EVENTS}{job_id}".encode()


def metrics(node: str) -> bytes:
    return f"{METRICS}{node}".encode()


def control(node: str | None = None) -> bytes:
    return CONTROL_ALL.encode() if node is None else f"ctl.{node}".encode()
