"""The shared rate-limited warning log (bus/ratelimit.py)."""

from __future__ import annotations

import logging

import pytest

from bus.ratelimit import RateLimitedLog, RateLimitFilter


def test_each_kind_is_logged_once_per_period_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), period=10.0)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert limited.warn("schema", "first", now=100.0)
        assert not limited.warn("schema", "second", now=105.0)
        assert not limited.warn("schema", "third", now=109.9)
        assert limited.warn("malformed", "other kind", now=109.9)
        assert limited.warn("schema", "fourth", now=110.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["first [schema: 1 in total]",
                     "other kind [malformed: 1 in total]",
                     "fourth [schema: 4 in total] (2 more not logged in the last 10 s)"]
    assert limited.totals == {"schema": 4, "malformed": 1}


def test_a_changed_reason_is_logged_within_the_period(caplog: pytest.LogCaptureFixture) -> None:
    # An agent told "rejected", then "revoked": the second is news, not a repeat.
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), period=60.0)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert limited.warn("refused", "rejected", now=0.0, reason="rejected")
        assert not limited.warn("refused", "rejected", now=1.0, reason="rejected")
        assert limited.warn("refused", "revoked", now=30.0, reason="revoked")
    assert [r.getMessage() for r in caplog.records] == [
        "rejected [refused: 1 in total]", "revoked [refused: 3 in total]"]


def test_now_defaults_to_the_monotonic_clock(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), period=3600.0)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert limited.warn("x", "once")
        assert not limited.warn("x", "held back")
    assert [r.getMessage() for r in caplog.records] == ["once [x: 1 in total]"]


def test_the_filter_lets_one_library_line_through_a_period_then_says_how_many_were_held(
        caplog: pytest.LogCaptureFixture) -> None:
    lib = logging.getLogger("bokeh.server.protocol_handler")
    ours = logging.getLogger("dashboard.app")
    limiter = RateLimitFilter(("bokeh", "tornado"), period=60.0)
    caplog.handler.addFilter(limiter)
    try:
        with caplog.at_level(logging.INFO):
            for i in range(1000):
                lib.error("error handling message %s", i)
            lib.info("an info line is never held")
            ours.error("our own lines are never held")
            ours.error("our own lines are never held")
            limiter._last = {k: v - 61 for k, v in limiter._last.items()}  # a period later
            lib.error("error handling message %s", "next")
    finally:
        caplog.handler.removeFilter(limiter)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["error handling message 0", "an info line is never held",
                     "our own lines are never held", "our own lines are never held",
                     "error handling message next (999 more like this in the last 60 s)"]
