"""Change points of one metric's series: where its level steps, by how much, how surely.

The search is the library's: ruptures' PELT with the least-squares cost, in
its C implementation (``ruptures.KernelCPD(kernel="linear")``: the linear
kernel's cost is the l2 cost, and it answers 500 points in under a
millisecond where ``ruptures.Pelt(model="l2")`` takes seconds). It was
chosen over Apache Otava's E-divisive means and MongoDB's
signal-processing-algorithms by ``scripts/bench/history.py`` (README
"History" has the figures). Around it, this module only scales the series
and judges what the library found:

- the series is divided by a robust estimate of its noise (the median absolute
  deviation of successive differences, which a step barely moves), floored at
  :attr:`Detector.floor` of its level: values that never move (a thread count)
  would otherwise make every blip a step. The penalty per change point is
  then :attr:`Detector.penalty` × log(n), a BIC-like price in noise units;
- each step found is tested with Welch's t-test between the two segments it
  separates, and the weakest is dropped and its neighbours re-tested until
  every remaining step has p < :attr:`Detector.alpha` (Otava's merge step
  does the same with Student's test);
- the step's size is the relative change of the segment medians, with a 95 %
  percentile-bootstrap interval over the (at most 100) points of each side next
  to the step (fixed seed: the same series gives the same answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

# ruptures and scipy.stats are imported where they are used: the manager imports
# this module at start-up, and they cost it ~0.7 s and tens of MB that only a
# history needs.

#: sd = MAD × this for normal noise.
_MAD_TO_SD = 1.4826
BOOTSTRAP_RESAMPLES = 1000
#: Points of each side next to the step that the interval resamples: a subset gives an
#: interval no narrower than the whole would, and keeps a 500-point series' cost small.
BOOTSTRAP_SIDE = 100
BOOTSTRAP_SEED = 15
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """A step starting at position ``index`` of the series (its first point after)."""

    index: int
    before: float
    after: float
    step: float
    step_abs: float
    ci: tuple[float, float]
    p_value: float


@dataclass(frozen=True, slots=True)
class Detector:
    """The settings of the search and of the test around it (defaults: the bench's choice)."""

    penalty: float = 2.5
    alpha: float = 0.005
    min_size: int = 3
    floor: float = 0.005

    def describe(self) -> dict[str, object]:
        return {"library": "ruptures", "version": version("ruptures").lstrip("v"),
                "method": "PELT (KernelCPD, linear kernel = l2 cost), penalty x log(n) "
                          "in robust noise units, Welch t-test per step",
                "penalty": self.penalty, "alpha": self.alpha, "min_size": self.min_size,
                "noise_floor": self.floor}

    def find(self, values: np.ndarray) -> list[ChangePoint]:
        """The significant steps of ``values`` (finite floats, in series order)."""
        values = np.asarray(values, dtype=float)
        n = values.size
        if n < 2 * self.min_size:
            return []
        scaled = (values - np.median(values)) / noise(values, self.floor)
        import ruptures  # noqa: PLC0415 - see the imports above

        algo = ruptures.KernelCPD(kernel="linear", min_size=self.min_size).fit(scaled)
        ends = [int(e) for e in algo.predict(pen=self.penalty * math.log(n))][:-1]
        kept = self._significant(values, ends)
        bounds = [0, *kept, n]
        return [_describe(values[bounds[i]:k], values[k:bounds[i + 2]], k)
                for i, k in enumerate(kept)]

    def _significant(self, values: np.ndarray, cuts: list[int]) -> list[int]:
        """``cuts`` less the weakest, one at a time, until each has p < alpha."""
        cuts = list(cuts)
        while cuts:
            bounds = [0, *cuts, values.size]
            p = [_welch(values[bounds[i]:k], values[k:bounds[i + 2]]) for i, k in enumerate(cuts)]
            worst = int(np.argmax(p))
            if p[worst] < self.alpha:
                break
            del cuts[worst]
        return cuts


def noise(values: np.ndarray, floor: float) -> float:
    """A robust sd of the noise: MAD of successive differences / √2, at least
    ``floor`` × the level (and never 0)."""
    diffs = np.diff(values)
    mad = float(np.median(np.abs(diffs - np.median(diffs)))) if diffs.size else 0.0
    level = float(np.median(np.abs(values)))
    return max(_MAD_TO_SD * mad / math.sqrt(2.0), floor * level, 1e-12)


def _welch(left: np.ndarray, right: np.ndarray) -> float:
    if left.size < 2 or right.size < 2:
        return 1.0
    if np.ptp(left) == 0 and np.ptp(right) == 0:
        return 0.0 if left[0] != right[0] else 1.0
    # From the moments: scipy's ttest_ind warns on near-constant segments (a
    # thread count), which are common here and harmless.
    from scipy import stats  # noqa: PLC0415 - see the imports above

    p = stats.ttest_ind_from_stats(left.mean(), left.std(ddof=1), left.size, right.mean(),
                                   right.std(ddof=1), right.size, equal_var=False).pvalue
    return float(p) if math.isfinite(p) else 1.0


def _describe(left: np.ndarray, right: np.ndarray, index: int) -> ChangePoint:
    before, after = float(np.median(left)), float(np.median(right))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    near_l, near_r = left[-BOOTSTRAP_SIDE:], right[:BOOTSTRAP_SIDE]
    boot_l = _boot_medians(near_l, rng)
    boot_r = _boot_medians(near_r, rng)
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    rel = _relative(boot_r, boot_l)
    lo, hi = np.percentile(rel, [tail, 100.0 - tail]) if rel.size else (math.nan, math.nan)
    return ChangePoint(index=index, before=before, after=after,
                       step=float(_relative(np.array([after]), np.array([before]))[0]),
                       step_abs=after - before, ci=(float(lo), float(hi)),
                       p_value=_welch(left, right))


def _boot_medians(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The medians of BOOTSTRAP_RESAMPLES resamples of ``values`` (with replacement)."""
    picks = rng.integers(0, values.size, (BOOTSTRAP_RESAMPLES, values.size))
    medians: np.ndarray = np.median(values[picks], axis=1)
    return medians


def _relative(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """after / before - 1, NaN where ``before`` is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(before != 0, after / np.where(before != 0, before, 1.0) - 1.0, np.nan)
