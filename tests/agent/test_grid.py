"""The agent's wake-up grid."""

from __future__ import annotations

import pytest

from agent.grid import next_beat, next_tick


def test_next_tick_is_the_next_grid_point() -> None:
    assert next_tick(10.0, 1.0, 10.0) == 11.0
    assert next_tick(10.0, 1.0, 12.5) == 13.0
    assert next_tick(10.0, 0.25, 9.9) == 10.0


@pytest.mark.parametrize("now", [1234.0, 1234.001, 1234.4999, 1234.73, 98765.2])
def test_beats_of_one_period_meet_on_whole_multiples(now: float) -> None:
    beat = next_beat(1.0, now)
    assert beat == round(beat) and 0.5 < beat - now <= 1.5
    # Work done on the grid is next due one period later, whoever asks.
    assert next_beat(1.0, beat) == beat + 1.0
    assert next_beat(1.0, beat - 0.001) == beat + 1.0  # a timer that fired a little early


def test_a_whole_fraction_of_the_period_shares_its_points() -> None:
    points = set()
    t = 1000.3
    for _ in range(8):
        t = next_beat(0.25, t)
        points.add(t)
    assert next_beat(1.0, 1000.3) in points
