"""``ptap watch``: a tail of the PUB socket with an event loop. It runs until
Ctrl-C, so its start-up does not count (``run --wait`` follows its job without
one: :mod:`manager.cli.oneshot`)."""

from __future__ import annotations

import time

from bus import topics
from bus.client import subscribe
from manager.cli import render
from manager.cli.session import Session


async def watch(session: Session, node: str | None, count: int | None) -> None:
    """Print one line per event, run change or metric batch (optionally of one node)."""
    prefixes = [topics.NODE_EVENTS, topics.JOB_EVENTS,
                f"{topics.METRICS}{node}" if node else topics.METRICS]
    shown = 0
    async for topic, msg in subscribe(session.endpoint.pub, prefixes, ctx=session.ctx,
                                      curve=session.curve):
        for line in render.event_lines(topic, msg, time.time(), node):
            print(line, flush=True)
            shown += 1
            if count is not None and shown >= count:
                return
