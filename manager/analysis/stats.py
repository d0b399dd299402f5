"""Statistics for reports and comparisons: summaries, a bootstrap CI, a rank test, a verdict.

Everything here is a pure function of numpy arrays; the heavy lifting is
numpy's and scipy's (``np.percentile``, ``scipy.stats.bootstrap``,
``scipy.stats.mannwhitneyu``), not hand-written statistics.

The verdict rule (also in docs/analysis.md), for baseline samples ``b``,
candidate samples ``c``, threshold ``t`` (0.05 = 5 %), significance level
``alpha`` (0.05) and the metric's direction:

1. fewer than :data:`MIN_SAMPLES` samples on either side → ``inconclusive``;
2. ``change = (median(c) - median(b)) / |median(b)|``; 0 when both medians
   are 0, ±inf (reported as unbounded) when only the baseline's is 0;
3. ``ci`` = the 95 % percentile-bootstrap interval of ``change``
   (:func:`bootstrap_change_ci`), ``p`` = the two-sided Mann-Whitney U
   p-value (:func:`mann_whitney_p`);
4. ``p < alpha`` **and** ``|change| >= t`` **and** ``ci`` excludes 0 →
   ``regression`` when the change is in the worse direction (up for
   lower-is-better, down for higher-is-better), else ``improvement``;
5. otherwise, ``ci`` inside ``[-t, +t]`` → ``unchanged``: the change is
   smaller than the threshold at 95 % confidence, significant or not (with
   thousands of samples, differences far below any threshold are
   significant, and they are not what a threshold is for);
6. otherwise → ``inconclusive``: the data allow a change beyond the
   threshold but do not show one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

# scipy.stats is imported where it is used: the manager imports this module at
# start-up, and scipy.stats costs ~0.7 s and ~60 MB there that only an analysis
# needs (a restarted manager is back the sooner).

#: Fixed seed of the bootstrap's ``numpy.random.Generator``: the same data
#: always give the same interval, whatever else was compared before.
SEED = 20_240_905
RESAMPLES = 2000
MIN_RESAMPLES = 500
CONFIDENCE = 0.95
ALPHA = 0.05
THRESHOLD = 0.05
MIN_SAMPLES = 2
#: Bootstrap work per metric is bounded to about this many resampled values
#: (resamples x samples); large point sets get fewer resamples, never fewer
#: than MIN_RESAMPLES.
WORK = 4_000_000
#: A relative change beyond this (10^8 %) means a baseline median of about 0:
#: reported as unbounded.
UNBOUNDED = 1e6


class Verdict(StrEnum):
    """Outcome of comparing one metric (see the module docstring for the rule)."""

    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    UNCHANGED = "unchanged"
    INCONCLUSIVE = "inconclusive"


class Direction(StrEnum):
    """Which way is better for a metric."""

    LOWER = "lower"
    HIGHER = "higher"


SUMMARY_KEYS = ("count", "mean", "min", "p50", "p95", "p99", "max", "stddev")


def summarize(values: np.ndarray) -> dict[str, float] | None:
    """count, mean, min, p50, p95, p99, max and stddev (population) of the finite
    values; ``None`` when there are none. Percentiles interpolate linearly."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(v.max()),
        "stddev": float(v.std()),
    }


def relative_change(base_median: float, cand_median: float) -> float:
    """``(cand - base) / |base|``: 0 when both are 0, ±inf when only ``base`` is 0."""
    diff = cand_median - base_median
    if base_median == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / abs(base_median)


def _change_statistic(b: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorised relative change of medians for ``scipy.stats.bootstrap``; values
    clipped to ±2·UNBOUNDED so that percentiles never meet inf - inf."""
    mb = np.median(b, axis=axis)
    mc = np.median(c, axis=axis)
    diff = mc - mb
    scale = np.abs(mb)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0),
                       np.sign(diff) * 2 * UNBOUNDED)
    clipped: np.ndarray = np.clip(rel, -2 * UNBOUNDED, 2 * UNBOUNDED)
    return clipped


def resamples_for(n_total: int, resamples: int = RESAMPLES) -> int:
    """Resamples used for ``n_total`` samples: ``resamples``, fewer for big sets."""
    return max(MIN_RESAMPLES, min(resamples, WORK // max(1, n_total)))


def bootstrap_change_ci(base: np.ndarray, cand: np.ndarray, *, confidence: float = CONFIDENCE,
                        resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of :func:`relative_change` of the medians.

    Each side is resampled independently (unpaired), ``resamples`` times
    (fewer for large sets, :func:`resamples_for`), with
    ``numpy.random.default_rng(seed)``. A bound beyond :data:`UNBOUNDED` is ±inf.
    """
    b, c = np.asarray(base, dtype=float), np.asarray(cand, dtype=float)
    if np.all(b == b[0]) and np.all(c == c[0]):
        # Every resample is the data itself; scipy would warn about a degenerate set.
        point = relative_change(float(b[0]), float(c[0]))
        return point, point
    import scipy.stats  # noqa: PLC0415 - see the imports above

    n_res = resamples_for(b.size + c.size, resamples)
    result = scipy.stats.bootstrap(
        (b, c), _change_statistic, n_resamples=n_res, vectorized=True, paired=False,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
        batch=max(1, WORK // 4 // max(1, b.size + c.size)))
    lo, hi = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return _unbounded(lo), _unbounded(hi)


def _unbounded(x: float) -> float:
    return math.copysign(math.inf, x) if abs(x) >= UNBOUNDED else x


def mann_whitney_p(base: np.ndarray, cand: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (scipy picks exact or asymptotic);
    1.0 when every value on both sides is the same (no ranking exists)."""
    b, c = np.asarray(base, dtype=float), np.asarray(cand, dtype=float)
    both = np.concatenate([b, c])
    if np.all(both == both[0]):
        return 1.0
    import scipy.stats  # noqa: PLC0415 - see the imports above

    return float(scipy.stats.mannwhitneyu(b, c, alternative="two-sided").pvalue)


def smallest_p(n_base: int, n_cand: int) -> float:
    """The smallest two-sided p-value an exact Mann-Whitney U test can give with these
    sample sizes: ``2 / C(n_base + n_cand, n_base)``, when one side lies wholly above
    the other (1.0 with an empty side). 2 against 2 can never go below 1/3, 3 against
    3 below 0.1; 4 against 4 can reach 0.029."""
    if n_base < 1 or n_cand < 1:
        return 1.0
    return min(1.0, 2 / math.comb(n_base + n_cand, n_base))


def decide(change: float, ci: tuple[float, float], p: float, direction: Direction,
           threshold: float = THRESHOLD, alpha: float = ALPHA) -> tuple[Verdict, str]:
    """The verdict of steps 4–6 of the module docstring, and a one-line reason."""
    lo, hi = ci
    excludes_zero = lo > 0 or hi < 0
    if p < alpha and abs(change) >= threshold and excludes_zero:
        worse = change > 0 if direction is Direction.LOWER else change < 0
        verdict = Verdict.REGRESSION if worse else Verdict.IMPROVEMENT
        return verdict, f"significant (p={p:.2g}) change beyond ±{threshold:.0%}, CI excludes 0"
    if -threshold <= lo and hi <= threshold:
        sig = "significant" if p < alpha else "not significant"
        return Verdict.UNCHANGED, f"{sig} (p={p:.2g}); CI within ±{threshold:.0%}"
    beyond = f"CI reaches beyond ±{threshold:.0%}"
    if p >= alpha:
        return Verdict.INCONCLUSIVE, f"not significant (p={p:.2g}) but {beyond}"
    if abs(change) < threshold:
        return Verdict.INCONCLUSIVE, f"significant (p={p:.2g}) but {beyond}"
    return Verdict.INCONCLUSIVE, f"significant (p={p:.2g}) but the CI includes 0"


@dataclass(frozen=True, slots=True)
class ChangeTest:
    """One metric compared: medians, relative change, its CI, p-value, verdict."""

    n_base: int
    n_cand: int
    base_median: float | None
    cand_median: float | None
    change: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    verdict: Verdict
    reason: str


def compare_samples(base: np.ndarray, cand: np.ndarray, direction: Direction, *,
                    threshold: float = THRESHOLD, alpha: float = ALPHA,
                    confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                    seed: int = SEED) -> ChangeTest:
    """Apply the whole rule of the module docstring to two sets of samples
    (non-finite values are dropped first)."""
    b = np.asarray(base, dtype=float)
    c = np.asarray(cand, dtype=float)
    b, c = b[np.isfinite(b)], c[np.isfinite(c)]
    mb = float(np.median(b)) if b.size else None
    mc = float(np.median(c)) if c.size else None
    if b.size < MIN_SAMPLES or c.size < MIN_SAMPLES:
        change = relative_change(mb, mc) if mb is not None and mc is not None else None
        return ChangeTest(int(b.size), int(c.size), mb, mc, change, None, None,
                          Verdict.INCONCLUSIVE,
                          f"fewer than {MIN_SAMPLES} samples on a side "
                          f"({b.size} baseline, {c.size} candidate)")
    assert mb is not None and mc is not None
    change = relative_change(mb, mc)
    ci = bootstrap_change_ci(b, c, confidence=confidence, resamples=resamples, seed=seed)
    p = mann_whitney_p(b, c)
    verdict, reason = decide(change, ci, p, direction, threshold, alpha)
    return ChangeTest(int(b.size), int(c.size), mb, mc, change, ci, p, verdict, reason)


def possible_change(base: np.ndarray, cand: np.ndarray, direction: Direction, *,
                    threshold: float = THRESHOLD, alpha: float = ALPHA
                    ) -> tuple[Verdict | None, float | None, float | None]:
    """A screen without the bootstrap: ``(verdict, change, p)``, where ``verdict`` is
    the regression or improvement that step 4 *could* give (``p < alpha`` and
    ``|change| >= t``; the CI may still include 0), else ``None``: then the full
    rule can only say unchanged or inconclusive. Costs a sort, not 2000 resamples."""
    b = np.asarray(base, dtype=float)
    c = np.asarray(cand, dtype=float)
    b, c = b[np.isfinite(b)], c[np.isfinite(c)]
    if b.size < MIN_SAMPLES or c.size < MIN_SAMPLES:
        return None, None, None
    change = relative_change(float(np.median(b)), float(np.median(c)))
    p = mann_whitney_p(b, c)
    if p >= alpha or abs(change) < threshold:
        return None, change, p
    worse = change > 0 if direction is Direction.LOWER else change < 0
    return (Verdict.REGRESSION if worse else Verdict.IMPROVEMENT), change, p
