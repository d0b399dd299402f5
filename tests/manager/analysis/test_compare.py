"""Comparisons on synthetic jobs: sample modes, verdicts, differences, alignment on marks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.stats

from manager.analysis import change, compare, report
from tests.manager.analysis.test_report import NS, T, job, run, tree, validate


def repeated(job_id: str, means: list[float], kernel: str = "6.1",
             command: list[str] | None = None, points: int = 10) -> report.JobAnalysis:
    """One node, one run per mean, each run ``points`` tree samples around that mean."""
    rng = np.random.default_rng(len(job_id) + int(sum(means)))
    runs, times, values = [], [], []
    for i, mean in enumerate(means):
        start = T + 20 * i
        runs.append(run("n1", i + 1, start, start + points, job=job_id))
        times += [start + s + 0.5 for s in range(points)]
        values += list(rng.normal(mean, mean * 0.01, points))
    j = job(runs, job_id=job_id)
    if command:
        j["spec"]["command"] = command
    raw = {"proc": [tree("n1", times, values)]}
    env = {"n1": {"kernel": kernel, "governor": "performance", "source": "recorded"}}
    return report.analyse(j, env, raw, now=T + 1000)


def entry(c: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(e for e in c["metrics"] if e["metric"] == metric)


def test_iterations_give_a_regression_with_scipys_p_value() -> None:
    base = repeated("base", [50, 51, 49, 50, 50.5])
    cand = repeated("cand", [60, 61, 59, 60.5, 60])
    c = compare.compare(base, cand, now=T + 2000)
    validate(c)
    e = entry(c, "proc.cpu_pct")
    assert e["samples"] == "iterations" and (e["n_base"], e["n_cand"]) == (5, 5)
    fb = [r.figures["proc.cpu_pct"] for r in base.runs]
    fc = [r.figures["proc.cpu_pct"] for r in cand.runs]
    assert e["p_value"] == pytest.approx(scipy.stats.mannwhitneyu(fb, fc).pvalue)
    assert e["p_value"] == pytest.approx(2 / 252)  # the exact minimum for 5 vs 5
    assert e["change"] == pytest.approx((np.median(fc) - np.median(fb)) / np.median(fb))
    assert e["verdict"] == "regression" and c["verdict"] == "regression"
    assert entry(c, "proc.rss")["verdict"] == "unchanged"
    assert c["counts"]["regression"] >= 1
    assert c["environment_differences"] == []


def test_one_run_each_compares_points_and_says_so() -> None:
    base, cand = repeated("base", [50], points=30), repeated("cand", [55], points=30)
    c = compare.compare(base, cand, now=T)
    e = entry(c, "proc.cpu_pct")
    assert e["samples"] == "points" and e["n_base"] == 30
    assert e["verdict"] == "regression" and e["p_value"] < 1e-6
    duration = entry(c, "run.duration")
    assert duration["samples"] == "iterations" and duration["verdict"] == "inconclusive"
    assert duration["ci"] is None


@pytest.mark.parametrize(("runs", "samples"), [(2, "points"), (3, "points"),
                                               (4, "iterations")])
def test_too_few_runs_for_a_significant_p_compare_points(runs: int, samples: str) -> None:
    """--repeat 2 or 3 on one node: the exact Mann-Whitney p of 2 or 3 per-run figures
    a side can never go below 1/3 or 0.1, so a 20 % regression would always be
    inconclusive over iterations; the points show it (labelled). From 4 runs a side
    (smallest p 0.029), the iterations can."""
    base = repeated("base", [50.0] * runs)
    cand = repeated("cand", [60.0] * runs)
    c = compare.compare(base, cand, now=T)
    validate(c)
    e = entry(c, "proc.cpu_pct")
    n = runs if samples == "iterations" else 10 * runs
    assert e["samples"] == samples and (e["n_base"], e["n_cand"]) == (n, n)
    assert e["verdict"] == "regression" and c["verdict"] == "regression"
    assert e["p_value"] < 0.05 and e["change"] == pytest.approx(0.2, abs=0.01)
    duration = entry(c, "run.duration")  # one figure per run: iterations whatever the number
    assert duration["samples"] == "iterations" and duration["n_base"] == runs


@pytest.mark.parametrize(("n_base", "n_cand", "mode"), [
    (1, 9, "points"), (2, 2, "points"), (3, 3, "points"), (3, 4, "points"),
    (4, 4, "iterations"), (3, 5, "iterations"), (2, 7, "points"), (2, 8, "iterations")])
def test_iterations_when_their_smallest_p_is_below_alpha(n_base: int, n_cand: int,
                                                         mode: str) -> None:
    """The rule for both the pooled and the per-node comparison: 2 / C(n1+n2, n1) < alpha
    (3 against 4: 0.057, points; 3 against 5: 0.036, iterations)."""
    base, cand = repeated("b", [50.0] * n_base), repeated("c", [50.0] * n_cand)
    assert change.sample_mode("proc.cpu_pct", base.runs, cand.runs) == mode
    assert change.sample_mode("proc.cpu_pct", base.runs, cand.runs, alpha=0.5) == (
        "iterations" if min(n_base, n_cand) >= 2 else "points")
    assert change.sample_mode("run.duration", base.runs, cand.runs) == "iterations"


def test_environment_and_job_differences_come_first() -> None:
    base = repeated("base", [50, 50], kernel="6.1")
    cand = repeated("cand", [50, 50], kernel="6.5", command=["y"])
    c = compare.compare(base, cand, now=T)
    assert list(c)[list(c).index("environment_differences") - 1] == "cand"
    assert {(d["scope"], d["key"], d["base"], d["cand"]) for d in c["environment_differences"]} \
        == {("job", "command", "x", "y"), ("node", "kernel", "6.1", "6.5")}


def test_zero_baseline_is_encoded_for_json() -> None:
    base, cand = repeated("base", [1e-12], points=12), repeated("cand", [50], points=12)
    for rd in base.runs:  # an idle baseline: exactly zero
        rd.points["proc.cpu_pct"] = (rd.points["proc.cpu_pct"][0],
                                     np.zeros_like(rd.points["proc.cpu_pct"][1]))
    c = compare.compare(base, cand, now=T)
    validate(c)
    e = entry(c, "proc.cpu_pct")
    assert e["change"] == "inf" and e["ci"] == ["inf", "inf"] and e["verdict"] == "regression"


def test_overall_verdict_uses_the_programs_own_metrics() -> None:
    def e(metric: str, verdict: str) -> dict[str, str]:
        return {"metric": metric, "verdict": verdict}

    assert compare.overall_verdict([e("cpu.busy", "regression"), e("proc.rss", "unchanged")]) \
        == "unchanged"
    assert compare.overall_verdict([e("perf.cycles", "improvement"),
                                    e("app.x", "inconclusive")]) == "improvement"
    assert compare.overall_verdict([e("perf.system.cycles", "regression"),
                                    e("run.duration", "inconclusive")]) == "inconclusive"
    assert compare.overall_verdict([]) == "inconclusive"


def test_marks_align_the_candidate_on_the_baseline() -> None:
    base = [{"offset": 2.0, "label": "warmup"}, {"offset": 10.0, "label": "measure"},
            {"offset": 30.0, "label": "done"}]
    cand = [{"offset": 4.0, "label": "warmup"}, {"offset": 20.0, "label": "measure"},
            {"offset": 25.0, "label": "other"}]
    anchors = compare.mark_anchors(base, cand)
    assert anchors == [(0.0, 0.0), (4.0, 2.0), (20.0, 10.0)]
    t = np.array([-1.0, 2.0, 4.0, 12.0, 20.0, 25.0])
    assert compare.warp(t, anchors).tolist() == [-1.0, 1.0, 2.0, 6.0, 10.0, 15.0]
    assert compare.mark_anchors(base, []) == [(0.0, 0.0)]


def test_overlay_is_the_first_run_with_main_metrics() -> None:
    a = repeated("base", [50, 60])
    a.runs[0].marks = [(int((T + 3) * NS), {"phase": "go"})]
    o = compare.overlay(a)
    assert o is not None and o["run"] == "base.n1.1"
    assert o["marks"] == [{"offset": 3.0, "label": "go"}]
    assert o["series"]["proc.cpu_pct"]["t"][0] == 0.5
    assert compare.overlay(report.analyse(job([run("n1", 1, None, None)]), {}, {}, T)) is None


@pytest.mark.parametrize("threshold", [0.0, 0.2])
def test_threshold_is_recorded(threshold: float) -> None:
    c = compare.compare(repeated("b", [1, 1]), repeated("c", [1, 1]), threshold=threshold, now=T)
    assert c["threshold"] == threshold
    validate(c)

