"""Where the manager stores metric lines: InfluxDB (v1 and v2 APIs), or memory in tests.

See ``base.py`` for the interface and the exception tree, ``policy.py`` for
retry, split and drop rules. ``InfluxV2Sink`` is imported on first use, as it
pulls in ``influxdb_client`` and ``aiohttp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    Sink,
    SinkError,
    SinkMisconfigured,
    SinkRejected,
    SinkTooLarge,
    SinkUnavailable,
)
from .influx_v1 import InfluxV1Sink
from .memory import MemorySink
from .policy import Backoff, WriteCounters, WriteResult, write_payload, write_with_policy

if TYPE_CHECKING:
    from .influx_v2 import InfluxV2Sink

__all__ = [
    "Backoff",
    "InfluxV1Sink",
    "InfluxV2Sink",
    "MemorySink",
    "Sink",
    "SinkError",
    "SinkMisconfigured",
    "SinkRejected",
    "SinkTooLarge",
    "SinkUnavailable",
    "WriteCounters",
    "WriteResult",
    "write_payload",
    "write_with_policy",
]


def __getattr__(name: str) -> Any:
    if name == "InfluxV2Sink":
        from .influx_v2 import InfluxV2Sink

        return InfluxV2Sink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
