"""Statistics against known answers: numpy and scipy computed independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from manager.analysis import stats
from manager.analysis.stats import Direction, Verdict, compare_samples, decide


def shifted(shift: float, n: int = 40, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Baseline ~ N(100, 4); candidate the same distribution scaled by (1 + shift)."""
    rng = np.random.default_rng(seed)
    return rng.normal(100, 4, n), rng.normal(100, 4, n) * (1 + shift)


def numpy_bootstrap(b: np.ndarray, c: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """A plain percentile bootstrap of the relative change of medians, written out."""
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    mc = np.median(c[rng.integers(0, c.size, (resamples, c.size))], axis=1)
    lo, hi = np.percentile((mc - mb) / np.abs(mb), [2.5, 97.5])
    return float(lo), float(hi)


def test_summary_matches_numpy_and_skips_nan() -> None:
    values = np.array([3.0, 1.0, np.nan, 2.0, 10.0, np.inf])
    finite = np.array([3.0, 1.0, 2.0, 10.0])
    s = stats.summarize(values)
    assert s == {"count": 4, "mean": finite.mean(), "min": 1.0, "max": 10.0,
                 "p50": np.percentile(finite, 50), "p95": np.percentile(finite, 95),
                 "p99": np.percentile(finite, 99), "stddev": finite.std()}
    assert stats.summarize(np.array([np.nan])) is None
    assert stats.summarize(np.empty(0)) is None


@pytest.mark.parametrize(("direction", "expected"), [(Direction.LOWER, Verdict.REGRESSION),
                                                     (Direction.HIGHER, Verdict.IMPROVEMENT)])
def test_known_shift_agrees_with_scipy(direction: Direction, expected: Verdict) -> None:
    b, c = shifted(0.10)
    t = compare_samples(b, c, direction)
    assert t.verdict is expected
    assert t.p_value == pytest.approx(scipy.stats.mannwhitneyu(b, c).pvalue, rel=1e-12)
    assert t.p_value < 1e-6
    assert t.change == pytest.approx((np.median(c) - np.median(b)) / np.median(b))
    # The same bootstrap through scipy directly, with the same seeded Generator.
    def change(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return (np.median(y, axis) - np.median(x, axis)) / np.abs(np.median(x, axis))

    ref = scipy.stats.bootstrap((b, c), change, n_resamples=stats.RESAMPLES, method="percentile",
                                vectorized=True, rng=np.random.default_rng(stats.SEED))
    assert t.ci == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    # And an independent numpy bootstrap agrees within Monte Carlo error.
    lo, hi = numpy_bootstrap(b, c, 4000, seed=11)
    assert t.ci[0] == pytest.approx(lo, abs=0.01) and t.ci[1] == pytest.approx(hi, abs=0.01)
    assert t.ci[0] < 0.10 < t.ci[1], "the true shift lies in the interval"


def test_ci_is_reproducible_and_seeded() -> None:
    b, c = shifted(0.02, n=15)
    assert stats.bootstrap_change_ci(b, c) == stats.bootstrap_change_ci(b, c)
    assert stats.bootstrap_change_ci(b, c) != stats.bootstrap_change_ci(b, c, seed=1)


def test_no_shift_is_never_a_regression() -> None:
    for seed in range(20):
        b, c = shifted(0.0, n=10, seed=seed)
        assert compare_samples(b, c, Direction.LOWER).verdict in (Verdict.UNCHANGED,
                                                                  Verdict.INCONCLUSIVE)


def test_significant_but_small_change_is_unchanged() -> None:
    b, c = shifted(0.01, n=4000)  # 1 % with thousands of points: significant, below 5 %
    t = compare_samples(b, c, Direction.LOWER)
    assert t.p_value < 0.05 and t.verdict is Verdict.UNCHANGED
    assert -0.05 <= t.ci[0] and t.ci[1] <= 0.05


def test_wide_interval_is_inconclusive() -> None:
    rng = np.random.default_rng(5)
    b, c = rng.normal(100, 30, 4), rng.normal(100, 30, 4)
    t = compare_samples(b, c, Direction.LOWER)
    assert t.verdict is Verdict.INCONCLUSIVE and "beyond" in t.reason


def test_zero_baseline_is_an_unbounded_change() -> None:
    b, c = np.zeros(10), np.linspace(90, 110, 10)
    t = compare_samples(b, c, Direction.LOWER)
    assert t.change == math.inf and t.ci == (math.inf, math.inf)
    assert t.verdict is Verdict.REGRESSION
    assert t.p_value == pytest.approx(scipy.stats.mannwhitneyu(b, c).pvalue)
    both_zero = compare_samples(np.zeros(5), np.zeros(5), Direction.LOWER)
    assert (both_zero.change, both_zero.p_value, both_zero.verdict) == (0.0, 1.0, Verdict.UNCHANGED)


def test_too_few_samples_are_inconclusive() -> None:
    t = compare_samples(np.array([1.0]), np.array([2.0, 3.0]), Direction.LOWER)
    assert t.verdict is Verdict.INCONCLUSIVE and t.ci is None and t.p_value is None
    assert t.change == pytest.approx(1.5)


@pytest.mark.parametrize(("change", "ci", "p", "direction", "verdict"), [
    (0.10, (0.05, 0.15), 0.001, Direction.LOWER, Verdict.REGRESSION),
    (-0.10, (-0.15, -0.05), 0.001, Direction.LOWER, Verdict.IMPROVEMENT),
    (-0.10, (-0.15, -0.05), 0.001, Direction.HIGHER, Verdict.REGRESSION),
    (0.10, (-0.01, 0.20), 0.001, Direction.LOWER, Verdict.INCONCLUSIVE),  # CI includes 0
    (0.10, (0.05, 0.15), 0.20, Direction.LOWER, Verdict.INCONCLUSIVE),  # not significant
    (0.03, (0.01, 0.049), 0.001, Direction.LOWER, Verdict.UNCHANGED),  # below threshold
    (0.00, (-0.04, 0.04), 0.60, Direction.LOWER, Verdict.UNCHANGED),
    (0.04, (0.01, 0.07), 0.001, Direction.LOWER, Verdict.INCONCLUSIVE),
])
def test_decision_rule(change: float, ci: tuple[float, float], p: float, direction: Direction,
                       verdict: Verdict) -> None:
    assert decide(change, ci, p, direction, threshold=0.05, alpha=0.05)[0] is verdict


def test_threshold_is_honoured() -> None:
    b, c = shifted(0.10)
    assert compare_samples(b, c, Direction.LOWER, threshold=0.5).verdict is not Verdict.REGRESSION
    assert compare_samples(b, c, Direction.LOWER, threshold=0.02).verdict is Verdict.REGRESSION


def test_large_point_sets_get_fewer_resamples() -> None:
    assert stats.resamples_for(40) == stats.RESAMPLES
    assert stats.resamples_for(10**6) == stats.MIN_RESAMPLES
    assert stats.MIN_RESAMPLES < stats.resamples_for(4000) < stats.RESAMPLES


def test_possible_change_is_the_rule_without_the_bootstrap() -> None:
    """The screen passes exactly what step 4 needs before the CI: p < alpha and a
    change of at least the threshold, in the metric's direction."""
    rng = np.random.default_rng(7)
    b = rng.normal(100, 1, 40)
    up = stats.possible_change(b, b * 1.2, stats.Direction.LOWER)
    assert up[0] is stats.Verdict.REGRESSION and up[1] == pytest.approx(0.2) and up[2] < 1e-6
    assert stats.possible_change(b, b * 1.2, stats.Direction.HIGHER)[0] is \
        stats.Verdict.IMPROVEMENT
    small = stats.possible_change(b, b * 1.02, stats.Direction.LOWER)
    assert small[0] is None and small[2] is not None and small[2] < 0.05  # significant, small
    assert stats.possible_change(b[:1], b, stats.Direction.LOWER) == (None, None, None)
    full = stats.compare_samples(b, b * 1.2, stats.Direction.LOWER)
    assert (full.verdict, full.change, full.p_value) == (up[0], up[1], up[2])


@pytest.mark.parametrize(("n_base", "n_cand", "smallest"), [
    (2, 2, 1 / 3), (3, 3, 0.1), (4, 4, 2 / 70), (5, 5, 2 / 252), (3, 5, 2 / 56), (2, 7, 2 / 36),
    (1, 9, 0.2), (0, 4, 1.0)])
def test_smallest_p_is_scipys_exact_p_of_two_separated_sides(n_base: int, n_cand: int,
                                                              smallest: float) -> None:
    """The floor under the p-value of n_base against n_cand samples: one side wholly
    above the other, which is as far apart as a rank test can see."""
    assert stats.smallest_p(n_base, n_cand) == pytest.approx(smallest)
    if n_base and n_cand:
        b, c = np.arange(n_base, dtype=float), np.arange(n_cand, dtype=float) + 100
        exact = scipy.stats.mannwhitneyu(b, c, alternative="two-sided", method="exact").pvalue
        assert stats.smallest_p(n_base, n_cand) == pytest.approx(min(1.0, exact))
