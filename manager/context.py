"""What a ROUTER handler is given instead of the whole manager: a clock, a replier,
and the decisions policy returns.

A handler is a plain function over a small context holding the few collaborators
it uses (``manager/agent_handlers.py``, ``node_handlers.py``, ``client_handlers.py``,
``report_handlers.py``); ``manager/server.py`` builds those contexts once. The
collaborators without I/O (registry, book, bookkeeper, store, key store) are the
real ones, as in ``manager/registry.py`` and ``manager/scheduler.py``; the two
that touch the world are narrow here, so a test gives a handler a fake clock and
a replier that records what would have gone out, and calls it without a socket.

Policy decides and the loop acts: ``manager/authorization.py`` returns
:class:`Admit` or :class:`Refuse`, and ``manager/control.py`` turns a refusal
into its ``error`` reply and its log line (docs/architecture.md#security).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bus.errors import ErrorCode
from bus.messages import Error, Message, Reply
from bus.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

#: Send one message to a ROUTER peer without blocking; False if it could not go.
Send = Callable[[bytes, Message], Awaitable[bool]]
#: Run a coroutine beside the loops (a report must not stall the ROUTER loop).
Spawn = Callable[[Coroutine[Any, Any, None], str], None]


@dataclass(frozen=True, slots=True)
class Clock:
    """The two clocks a handler reads: ``monotonic`` for liveness and durations,
    ``wall`` for what is stored and shown. A test passes fixed ones."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class Admit:
    """Policy lets the message through."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Policy refuses: the peer is answered ``error`` ``code`` with ``message``.

    ``note`` is the line the manager logs about it ("" for none): rate-limited
    under ``kind`` (:class:`~bus.ratelimit.RateLimitedLog`), or a plain warning
    when ``kind`` is "".
    """

    code: ErrorCode
    message: str
    note: str = ""
    kind: str = ""


#: What an authorization check returns.
Decision = Admit | Refuse
ADMIT = Admit()


class Replier:
    """Answers ROUTER peers through ``send``, and logs what policy refused.

    The only way a handler talks back, so a test hands it a recording ``send``.
    """

    def __init__(self, send: Send, bad_frames: RateLimitedLog) -> None:
        self.send = send
        self.bad_frames = bad_frames

    async def reply(self, peer: bytes, req_id: str, result: Any) -> None:
        """Answer request ``req_id`` with ``reply``."""
        await self.send(peer, Reply(req_id=req_id, result=result))

    async def error(self, peer: bytes, req_id: str, code: str, message: str) -> None:
        """Answer ``peer`` with ``error`` (``req_id`` is "" for agent messages)."""
        await self.send(peer, Error(req_id=req_id, code=code, message=message))

    async def refuse(self, peer: bytes, req_id: str, refusal: Refuse) -> None:
        """Log a policy refusal's note, then answer it."""
        self.note(refusal)
        await self.error(peer, req_id, refusal.code, refusal.message)

    def note(self, refusal: Refuse) -> None:
        """Log ``refusal``'s note, if it has one (without answering anyone)."""
        if refusal.note and refusal.kind:
            self.bad_frames.warn(refusal.kind, refusal.note, time.monotonic())
        elif refusal.note:
            log.warning("%s", refusal.note)
