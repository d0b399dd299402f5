"""What ``ptap doctor`` learns about the cluster: filled by
:mod:`manager.cli.doctor_gather`, read by the checks in :mod:`manager.cli.doctor`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bus.replies import NodeReply


@dataclass
class Facts:
    """What the cluster said about itself (filled by ``doctor_gather``); the checks'
    only input. ``status`` is the ``status.get`` reply; when the manager did not
    answer, ``handshake`` and ``manager_error`` say how far it got."""

    manager: str
    keys_dir: str | None = None
    keys_from: str = ""
    cli_version: str = ""
    handshake: dict[str, Any] = field(default_factory=dict)
    manager_error: str = ""
    status: dict[str, Any] | None = None
    nodes: list[NodeReply] | None = None
    dashboard_url: str | None = None
    dashboard: dict[str, Any] | None = None
    dashboard_error: str = ""
