"""The seam between the agent's link and what runs beside it: collectors and the shipper.

:class:`LinkHooks` lives apart from :mod:`agent.link` because both halves of the
link call it: :class:`agent.link.Link` for welcomes and metric acks, and
:class:`agent.held_runs.HeldRuns` for runs that start and end and their output.
:func:`call_hooks` makes a failing hook look the same from either side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.runner import Runner
from bus.messages import MetricAck, Welcome
from bus.ratelimit import RateLimitedLog

__all__ = ["LinkHooks", "call_hooks"]


@dataclass
class LinkHooks:
    """Callbacks for what runs beside the link: the seam for collectors and the shipper.

    All are plain functions called on the event loop; an exception in one is
    logged and does not disturb the link. ``prepare_run`` hooks are awaited before
    a run's command starts and may set ``runner.extra_env``. ``output_line`` gets
    ``(runner, stream, line)`` for every line a run prints.
    """

    welcome: list[Callable[[Welcome], None]] = field(default_factory=list)
    metric_ack: list[Callable[[MetricAck], None]] = field(default_factory=list)
    prepare_run: list[Callable[[Runner], Awaitable[None]]] = field(default_factory=list)
    run_started: list[Callable[[Runner], None]] = field(default_factory=list)
    run_ended: list[Callable[[Runner], None]] = field(default_factory=list)
    output_line: list[Callable[[Runner, str, str], None]] = field(default_factory=list)


def call_hooks(hooks: list[Callable[..., None]], *args: Any, node: str,
               trouble: RateLimitedLog) -> None:
    """Call each of ``hooks`` with ``args``; one that raises is logged (rate-limited) and
    the rest are still called."""
    for hook in hooks:
        try:
            hook(*args)
        except Exception:  # a bug beside the link must not disturb the link
            trouble.warn("hook-failed", f"node {node}: hook {hook!r} failed", exc_info=True)
