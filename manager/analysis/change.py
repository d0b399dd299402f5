"""One metric between two sets of runs: the samples, the test, and its JSON fields.

Shared by the pooled comparison (:mod:`manager.analysis.compare`: every run of
each job) and the per-node one (:mod:`manager.analysis.nodes`: one node's
runs), so both pick samples by the same rule, test them with
:func:`manager.analysis.stats.compare_samples` and draw a verdict over a set
of metrics with :func:`overall_verdict`.

Samples (``samples`` in each entry):

* ``iterations`` — one figure per run (the mean of the run's points, their peak
  for ``proc.rss``, or a ``run.*`` figure). Used when there are enough runs
  with the metric for the test to be able to say anything: at least two a
  side, and few enough possible orderings that the smallest p-value the
  exact Mann-Whitney test can give, ``2 / C(n_base + n_cand, n_base)``
  (:func:`manager.analysis.stats.smallest_p`), is below alpha. That is 4
  against 4 runs or more (3 against 3 can never go below p = 0.1, 2 against 2
  below 1/3): what ``ptap run --repeat N`` is for. ``run.*`` figures exist
  only per run, so they are always iterations;
* ``points`` — every raw point of every run, otherwise (a side with a single
  run, or 2 and 3 runs). Consecutive points of a time series are correlated,
  so p-values over points are optimistic; the label says so in every output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from manager.analysis.report import RunData
from manager.analysis.stats import (
    ALPHA,
    MIN_SAMPLES,
    THRESHOLD,
    ChangeTest,
    Direction,
    Verdict,
    compare_samples,
    smallest_p,
)

#: Metrics of the test program itself; the overall verdict is drawn from these only
#: (with perf of the tree, :func:`decisive`). Node-wide figures and the observer's
#: cost are context: listed, not decisive.
OWN_PREFIXES = ("run.", "proc.", "app.")


def decisive(metric_id: str) -> bool:
    """Whether a metric is the program's own (``run.*``, ``proc.*``, ``app.*``,
    ``perf.*`` of the tree): the ones a verdict is drawn from."""
    return metric_id.startswith(OWN_PREFIXES) or (
        metric_id.startswith("perf.") and not metric_id.startswith("perf.system."))


def samples(metric_id: str, runs: Sequence[RunData], mode: str) -> np.ndarray:
    """The samples of one side: per-run figures (``iterations``) or pooled points."""
    if mode == "iterations":
        return np.asarray([rd.figures[metric_id] for rd in runs if metric_id in rd.figures])
    parts = [rd.points[metric_id][1] for rd in runs if metric_id in rd.points]
    return np.concatenate(parts) if parts else np.empty(0)


def sample_mode(metric_id: str, base: Sequence[RunData], cand: Sequence[RunData],
                alpha: float = ALPHA) -> str:
    """``iterations`` when the runs with the metric could make it significant: at
    least :data:`MIN_SAMPLES` a side and :func:`smallest_p` of their numbers below
    ``alpha`` (or it is a one-value-per-run ``run.*`` figure); else ``points``."""
    if metric_id.startswith("run."):
        return "iterations"
    nb, nc = (len(samples(metric_id, runs, "iterations")) for runs in (base, cand))
    enough = min(nb, nc) >= MIN_SAMPLES and smallest_p(nb, nc) < alpha
    return "iterations" if enough else "points"


def test(metric_id: str, direction: Direction, base: Sequence[RunData],
         cand: Sequence[RunData], *, threshold: float = THRESHOLD,
         alpha: float = ALPHA) -> dict[str, Any]:
    """The whole rule for one metric over these runs: ``samples`` and the test's fields."""
    mode = sample_mode(metric_id, base, cand, alpha)
    t = compare_samples(samples(metric_id, base, mode), samples(metric_id, cand, mode),
                        direction, threshold=threshold, alpha=alpha)
    return {"samples": mode, **test_fields(t)}


def test_fields(t: ChangeTest) -> dict[str, Any]:
    return {
        "n_base": t.n_base, "n_cand": t.n_cand,
        "base_median": t.base_median, "cand_median": t.cand_median,
        "diff": None if t.base_median is None or t.cand_median is None
        else t.cand_median - t.base_median,
        "change": json_number(t.change),
        "ci": None if t.ci is None else [json_number(t.ci[0]), json_number(t.ci[1])],
        "p_value": t.p_value, "verdict": t.verdict.value, "reason": t.reason,
    }


def json_number(x: float | None) -> float | str | None:
    """JSON has no infinity: an unbounded change or CI end is the string ``"inf"``
    or ``"-inf"`` (a baseline median of 0); ``None`` stays ``null`` (not computed)."""
    if x is None or np.isfinite(x):
        return x
    return "inf" if x > 0 else "-inf"


def overall_verdict(entries: list[dict[str, Any]]) -> str:
    """From the decisive metrics (:func:`decisive`): any regression → regression;
    else any improvement → improvement; else unchanged when all are unchanged;
    else inconclusive."""
    own = [e["verdict"] for e in entries if decisive(e["metric"])]
    for verdict in (Verdict.REGRESSION, Verdict.IMPROVEMENT):
        if verdict.value in own:
            return verdict.value
    return Verdict.UNCHANGED.value if own and set(own) == {"unchanged"} else \
        Verdict.INCONCLUSIVE.value
