"""The detector around ruptures: steps found where they are, none on noise or flat lines."""

from __future__ import annotations

import numpy as np
import pytest

from manager.history.changepoints import Detector, noise


def _series(seed: int, n: int, steps: dict[int, float], sd: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    level = np.full(n, 100.0)
    for at, size in steps.items():
        level[at:] *= 1 + size
    return level + rng.normal(0, 100 * sd, n)


@pytest.mark.parametrize("seed", range(5))
def test_a_step_of_five_noise_sds_is_found_where_it_starts(seed: int) -> None:
    found = Detector().find(_series(seed, 60, {25: 0.10}))
    assert len(found) == 1
    cp = found[0]
    assert abs(cp.index - 25) <= 1
    assert cp.p_value < 1e-3 and cp.step_abs > 0
    assert cp.ci[0] < 0.10 < cp.ci[1] and cp.ci[0] < cp.step < cp.ci[1]


def test_two_steps_up_then_down_are_both_found() -> None:
    found = Detector().find(_series(1, 200, {60: 0.2, 140: -0.25}))
    assert [abs(cp.index - at) <= 2 for cp, at in zip(found, (60, 140), strict=True)] == [True] * 2
    assert found[0].step > 0 > found[1].step


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_has_no_change_point(seed: int) -> None:
    assert Detector().find(_series(seed, 300, {}, sd=0.05)) == []


def test_a_constant_series_with_a_one_point_blip_has_none() -> None:
    values = np.full(30, 4.0)
    values[12] = 5.0
    assert Detector().find(values) == []


def test_a_constant_series_that_steps_has_one_with_p_zero() -> None:
    values = np.r_[np.full(10, 3.0), np.full(10, 4.0)]
    [cp] = Detector().find(values)
    assert cp.index == 10 and cp.p_value == 0.0 and cp.step == pytest.approx(1 / 3)


def test_too_short_a_series_has_none() -> None:
    assert Detector().find(np.array([1.0, 2.0, 10.0, 11.0, 12.0])) == []


def test_noise_is_estimated_past_a_step_and_floored_at_the_level() -> None:
    rng = np.random.default_rng(3)
    stepped = np.r_[rng.normal(100, 2, 100), rng.normal(150, 2, 100)]
    assert 1.6 < noise(stepped, 0.0) < 2.4
    assert noise(np.full(10, 200.0), 0.005) == pytest.approx(1.0)
