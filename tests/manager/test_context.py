"""manager/context.py: the replier answers through the send it is given, and logs a
refusal's note, rate-limited by its kind or as a plain warning. No socket."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bus.messages import Error, Reply
from manager.context import ADMIT, Admit, Clock, Refuse
from tests.manager.handler_world import World, no_sockets

pytestmark = pytest.mark.usefixtures("no_sockets")
__all__ = ["no_sockets"]  # the fixture, imported for pytest to find


def test_reply_and_error_go_to_the_peer() -> None:
    world = World()

    async def scenario() -> None:
        await world.replier.reply(b"c", "r1", {"ok": 1})
        await world.replier.error(b"c", "r2", "not-found", "no job 'x'")

    asyncio.run(scenario())
    assert world.wire.sent == [(b"c", Reply(req_id="r1", result={"ok": 1})),
                               (b"c", Error(req_id="r2", code="not-found",
                                            message="no job 'x'"))]


def test_a_refusal_is_answered_and_its_note_logged_once_per_period(
        caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    noisy = Refuse("not-authorized", "use the admin key", note="refused x", kind="no")
    plain = Refuse("key-mismatch", "wrong node", note="refused y")

    async def scenario() -> None:
        for _ in range(3):
            await world.replier.refuse(b"c", "r", noisy)
        await world.replier.refuse(b"a", "", plain)
        await world.replier.refuse(b"a", "", Refuse("pending", "wait"))

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    codes = [m.code for m in world.wire.all_to(b"c") + world.wire.all_to(b"a")
             if isinstance(m, Error)]
    assert codes == ["not-authorized"] * 3 + ["key-mismatch", "pending"]
    assert world.bad_frames.totals["no"] == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused x [no: 1 in total]", "refused y"]


def test_decisions_compare_by_value_and_the_clock_defaults_to_the_real_ones() -> None:
    assert ADMIT == Admit()
    assert Refuse("a", "b") == Refuse("a", "b") != Refuse("a", "c")
    clock = Clock()
    assert clock.wall() > 1.6e9 and clock.monotonic() <= clock.monotonic()
