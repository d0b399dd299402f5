"""The comparison per node, on synthetic fleets: which node changed, and the bounds."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from manager.analysis import compare, nodes, render, report
from manager.analysis.stats import Direction, compare_samples
from tests.browser import Browser
from tests.manager.analysis.test_report import T, job, run, tree, validate

FLEET = [f"n{i:02d}" for i in range(1, 11)]


def fleet(job_id: str, means: dict[str, list[float]], points: int = 30,
          kernels: dict[str, str] | None = None) -> report.JobAnalysis:
    """One run per mean on each node, each ``points`` tree samples around that mean
    (1 % noise); the same seed for the same job, node and means."""
    runs, raw = [], []
    for node, node_means in means.items():
        rng = np.random.default_rng([len(job_id), int(node[1:]), int(sum(node_means))])
        times, values = [], []
        for i, mean in enumerate(node_means):
            start = T + 20 * i
            runs.append(run(node, i + 1, start, start + points, job=job_id))
            times += [start + s + 0.5 for s in range(points)]
            values += list(rng.normal(mean, mean * 0.01, points))
        raw.append(tree(node, times, values))
    env = {n: {"kernel": (kernels or {}).get(n, "6.1"), "source": "recorded"} for n in means}
    return report.analyse(job(runs, job_id=job_id), env, {"proc": raw}, now=T + 1000)


def entry(d: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(e for e in d["metrics"] if e["metric"] == metric)


def detail(c: dict[str, Any], node: str) -> dict[str, Any]:
    return next(d for d in c["nodes"]["detailed"] if d["node"] == node)


@pytest.fixture(scope="module")
def one_node_regresses() -> dict[str, Any]:
    """Ten nodes in both jobs, one run each; n03 goes from 50 % to 65 % CPU, the
    other nine stay at 50 %. n11 ran only the baseline, n12 only the candidate."""
    base = fleet("base", {**{n: [50.0] for n in FLEET}, "n11": [50.0]})
    cand = fleet("cand", {**{n: [65.0 if n == "n03" else 50.0] for n in FLEET}, "n12": [50.0]},
                 kernels={"n03": "6.5"})
    return render.plain(compare.compare(base, cand, now=T + 2000))


def test_the_pooled_median_hides_the_one_node_that_regressed(
        one_node_regresses: dict[str, Any]) -> None:
    c = one_node_regresses
    validate(c)
    pooled = next(e for e in c["metrics"] if e["metric"] == "proc.cpu_pct")
    assert pooled["samples"] == "iterations" and (pooled["n_base"], pooled["n_cand"]) == (11, 11)
    assert pooled["verdict"] == "unchanged" and c["verdict"] == "unchanged"
    n = c["nodes"]
    assert n["shared"] == 10 and [d["node"] for d in n["detailed"]] == FLEET
    assert n["metrics"] == [e["metric"] for e in c["metrics"]
                            if e["metric"].startswith(("run.", "proc."))]
    n03 = detail(c, "n03")
    cpu = entry(n03, "proc.cpu_pct")
    assert n03["verdict"] == "regression" and (n03["runs_base"], n03["runs_cand"]) == (1, 1)
    assert cpu["samples"] == "points" and (cpu["n_base"], cpu["n_cand"]) == (30, 30)
    assert cpu["change"] == pytest.approx(0.3, abs=0.02) and cpu["p_value"] < 1e-6
    assert n03["environment_differences"] == [{"key": "kernel", "base": "6.1", "cand": "6.5"}]
    assert all(detail(c, x)["verdict"] != "regression" for x in FLEET if x != "n03")
    assert n["counts"]["regression"] == 1 and sum(n["counts"].values()) == 10
    assert n["flags"] == [{"node": "n03", "metric": "proc.cpu_pct", "verdict": "regression",
                           "pooled_verdict": "unchanged", "hidden": True, "samples": "points",
                           "change": cpu["change"], "ci": cpu["ci"], "p_value": cpu["p_value"]}]
    assert n["flags_count"] == n["hidden_count"] == 1


def test_a_node_is_tested_exactly_as_the_pooled_comparison_tests() -> None:
    """Same samples rule, same statistics: n03's entry is compare_samples of its points,
    and with repeated runs a node's samples are its iterations."""
    base = fleet("base", {"n01": [50.0], "n03": [50.0]})
    cand = fleet("cand", {"n01": [50.0], "n03": [65.0]})
    c = compare.compare(base, cand, now=T)
    t = compare_samples(base.runs[1].points["proc.cpu_pct"][1],
                        cand.runs[1].points["proc.cpu_pct"][1], Direction.LOWER)
    cpu = entry(detail(c, "n03"), "proc.cpu_pct")
    assert (cpu["change"], cpu["ci"], cpu["p_value"], cpu["verdict"], cpu["reason"]) == (
        t.change, list(t.ci or ()), t.p_value, t.verdict.value, t.reason)
    repeated = compare.compare(fleet("b", {"n01": [50.0] * 5, "n02": [50.0] * 5}),
                               fleet("c", {"n01": [50.0] * 5, "n02": [60.0] * 5}), now=T)
    n02 = entry(detail(repeated, "n02"), "proc.cpu_pct")
    assert n02["samples"] == "iterations" and (n02["n_base"], n02["n_cand"]) == (5, 5)
    assert n02["p_value"] == pytest.approx(2 / 252) and n02["verdict"] == "regression"


@pytest.mark.parametrize("repeat", [2, 3])
def test_two_or_three_runs_a_node_still_name_the_node(repeat: int) -> None:
    """--repeat 2 or 3: a node's 2 or 3 per-run means can never give p < 0.05 (1/3,
    0.1), so n03's +30 % would be inconclusive over iterations; its points show it."""
    base = fleet("base", {n: [50.0] * repeat for n in FLEET})
    cand = fleet("cand", {n: [65.0 if n == "n03" else 50.0] * repeat for n in FLEET})
    c = render.plain(compare.compare(base, cand, now=T))
    validate(c)
    assert entry(c, "proc.cpu_pct")["samples"] == "iterations"  # 10 x repeat runs a side
    assert entry(c, "proc.cpu_pct")["verdict"] == "unchanged"
    n03 = detail(c, "n03")
    cpu = entry(n03, "proc.cpu_pct")
    assert cpu["samples"] == "points" and cpu["n_base"] == cpu["n_cand"] == 30 * repeat
    assert cpu["verdict"] == "regression" and cpu["p_value"] < 1e-6
    assert n03["verdict"] == "regression"
    assert entry(n03, "run.cpu_seconds")["samples"] == "iterations"  # one per run, as ever
    assert [(f["node"], f["metric"], f["hidden"]) for f in c["nodes"]["flags"]] == [
        ("n03", "proc.cpu_pct", True)]
    assert c["nodes"]["flags_count"] == c["nodes"]["hidden_count"] == 1


def test_nodes_in_one_job_only_are_listed_not_compared(
        one_node_regresses: dict[str, Any]) -> None:
    n = one_node_regresses["nodes"]
    assert (n["only_base"], n["only_base_count"]) == (["n11"], 1)
    assert (n["only_cand"], n["only_cand_count"]) == (["n12"], 1)
    assert {d["node"] for d in n["detailed"]}.isdisjoint({"n11", "n12"})


def test_a_single_node_reuses_the_pooled_test() -> None:
    base, cand = fleet("base", {"n01": [50.0]}), fleet("cand", {"n01": [55.0]})
    c = compare.compare(base, cand, now=T)
    pooled = {e["metric"]: e for e in c["metrics"]}
    n01 = detail(c, "n01")
    assert n01["verdict"] == c["verdict"] == "regression"
    for e in n01["metrics"]:
        assert e == {k: pooled[e["metric"]][k] for k in nodes.NODE_FIELDS}
    assert c["nodes"]["flags"][0]["hidden"] is False  # the pooled verdict says it already


def test_the_cap_details_the_nodes_that_changed_and_summarises_the_rest() -> None:
    """Two nodes regress (n03 by 30 %, n07 by 12 %), n05 improves; with room for two
    nodes the two regressions are detailed and the improvement is a suspect."""
    means = {n: [50.0] for n in FLEET}
    changed = {**means, "n03": [65.0], "n07": [56.0], "n05": [40.0]}
    c = render.plain(compare.compare(fleet("base", means), fleet("cand", changed), now=T,
                                     max_nodes=2))
    validate(c)
    n = c["nodes"]
    assert n["max_detailed"] == 2 and [d["node"] for d in n["detailed"]] == ["n03", "n07"]
    assert [(f["node"], f["verdict"]) for f in n["flags"]] == [
        ("n03", "regression"), ("n07", "regression")]
    rest = n["summarised"]
    assert rest["count"] == 8 and rest["quiet"] == 7 and rest["suspects_count"] == 1
    suspect = rest["suspects"][0]
    assert (suspect["node"], suspect["metric"], suspect["possible"]) == (
        "n05", "proc.cpu_pct", "improvement")
    assert suspect["change"] == pytest.approx(-0.2, abs=0.02) and suspect["p_value"] < 1e-6
    text = render.render(c, "text")
    assert ("8 more node(s) not detailed (at most 2 are): 7 show no possible regression or "
            "improvement (no metric with p < 0.05 and a change of ±5% or more;") in text
    assert "node n05: proc.cpu_pct -20" in text and "possible improvement" in text
    none = compare.compare(fleet("base", means), fleet("cand", changed), now=T, max_nodes=0)
    assert none["nodes"]["detailed"] == [] and none["nodes"]["summarised"]["suspects_count"] == 3
    with pytest.raises(ValueError, match="max_nodes"):
        compare.compare(fleet("base", means), fleet("cand", means), now=T, max_nodes=-1)


def test_the_cap_details_the_largest_changes_when_none_can_be_flagged() -> None:
    """Four runs a node, no node with a possible regression or improvement: n06's
    median moves +29 % but its runs split (two below the baseline, two far above:
    p = 1), n01..n05 move 0.8 % to 4 % (significant, below the threshold). With room
    for two, the largest changes are detailed, not the first names."""
    nodes_ = [f"n{i:02d}" for i in range(1, 7)]
    means = {n: [50.0] * 4 for n in nodes_}
    changed = {**{n: [50.0 * (1 + 0.008 * i)] * 4 for i, n in enumerate(nodes_[:5], 1)},
               "n06": [49.0, 49.0, 80.0, 80.0]}  # runs 20 s apart: windows do not overlap
    c = render.plain(compare.compare(fleet("base", means, points=20),
                                     fleet("cand", changed, points=20), now=T, max_nodes=2))
    validate(c)
    n = c["nodes"]
    assert [d["node"] for d in n["detailed"]] == ["n05", "n06"]
    n06 = entry(detail(c, "n06"), "proc.cpu_pct")
    assert n06["samples"] == "iterations" and n06["change"] == pytest.approx(0.29, abs=0.01)
    assert n06["verdict"] == "inconclusive" and n06["p_value"] >= 0.05
    assert entry(detail(c, "n05"), "proc.cpu_pct")["change"] == pytest.approx(0.04, abs=0.005)
    rest = n["summarised"]
    assert (rest["count"], rest["quiet"], rest["suspects_count"]) == (4, 4, 0)
    assert "4 show no possible regression or improvement" in render.render(c, "text")


def test_flags_beyond_the_list_are_counted() -> None:
    """120 nodes, four runs each: half regress by 30 %, half improve by 30 %, on
    proc.cpu_pct and run.cpu_seconds. The pooled median stays put, so all 240 flags
    are hidden; 200 are listed, and the totals say 240 (as the text does)."""
    many = [f"n{i:03d}" for i in range(1, 121)]
    base = fleet("base", {n: [50.0] * 4 for n in many}, points=5)
    cand = fleet("cand", {n: [65.0 if i % 2 else 35.0] * 4 for i, n in enumerate(many)},
                 points=5)
    c = render.plain(compare.compare(base, cand, now=T, max_nodes=len(many)))
    validate(c)
    assert entry(c, "proc.cpu_pct")["verdict"] not in ("regression", "improvement")
    n = c["nodes"]
    assert (len(n["flags"]), n["flags_count"], n["hidden_count"]) == (200, 240, 240)
    assert all(f["hidden"] for f in n["flags"])
    assert ("240 node metric(s) regressed or improved where the pooled verdict says otherwise; "
            "the first 10 are under the verdict") in render.render(c, "text")


def test_a_500_node_fleet_stays_small() -> None:
    """Lists are bounded: 50 nodes detailed, at most 200 names per list."""
    many = [f"n{i:03d}" for i in range(1, 501)]
    base = fleet("base", {n: [50.0, 50.0] for n in many[:450]}, points=3)
    cand = fleet("cand", {n: [50.0, 50.0] for n in many[200:]}, points=3)
    c = render.plain(compare.compare(base, cand, now=T))
    validate(c)
    n = c["nodes"]
    assert n["shared"] == 250 and len(n["detailed"]) == 50
    assert (len(n["only_base"]), n["only_base_count"]) == (200, 200)
    assert (len(n["only_cand"]), n["only_cand_count"]) == (50, 50)
    assert n["summarised"]["count"] == 200 and n["summarised"]["quiet"] == 200
    assert len(json.dumps(n)) < 1_000_000


def test_text_puts_the_node_under_the_verdict(one_node_regresses: dict[str, Any]) -> None:
    text = render.render(one_node_regresses, "text")
    lines = text.splitlines()
    assert lines[0].startswith("Compare baseline base → candidate cand: UNCHANGED")
    flag = re.fullmatch(r"  !! node n03: proc\.cpu_pct worse by ([0-9.]+)% \(p=(\S+), points\) "
                        r"— REGRESSION on this node; pooled: unchanged", lines[2])
    assert flag is not None, lines[2]
    assert float(flag[1]) == pytest.approx(30, abs=2) and float(flag[2]) < 1e-6
    assert "10 node(s) in both jobs, 10 detailed: regression 1" in text
    assert "only in the baseline (not compared): n11" in text
    assert "only in the candidate (not compared): n12" in text
    row = next(x for x in lines if x.startswith("n03 "))
    assert re.search(r"REGRESSION +proc\.cpu_pct \+[23]\d\.\d%", row), row
    assert row.endswith("kernel 6.1 → 6.5")


#: JS: the text of the elements matching a selector, inside Bokeh's shadow roots too.
TEXTS = """((selector) => {
  const out = [];
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.matches(selector)) out.push(el.textContent);
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return out;
})(%s)"""


def test_html_puts_the_node_under_the_verdict_in_chromium(
        one_node_regresses: dict[str, Any], tmp_path: Path, output_dir: Path) -> None:
    page_html = render.render(one_node_regresses, "html")
    (output_dir / "compare.html").write_text(page_html, encoding="utf-8")

    async def scenario() -> dict[str, list[str]]:
        async with Browser(tmp_path / "chromium") as browser:
            page = await browser.new_page()  # network off: the file is self-contained
            await page.goto((output_dir / "compare.html").resolve().as_uri())
            await page.wait_for(TEXTS % json.dumps("h2#nodes") + ".length > 0")
            found = {sel: await page.evaluate(TEXTS % json.dumps(sel))
                     for sel in ("h1", "p.node-flag", "h2", "p", "tr")}
            await page.screenshot(output_dir / "compare.png")
            assert page.remote_requests() == [] and page.errors == []
            return found

    found = asyncio.run(scenario())
    assert "UNCHANGED" in found["h1"][0]
    assert len(found["p.node-flag"]) == 1
    assert found["p.node-flag"][0].startswith("⚠ node n03: proc.cpu_pct worse by")
    assert found["p.node-flag"][0].endswith("REGRESSION on this node; pooled: unchanged")
    assert found["h2"].index("Metrics") < found["h2"].index("Per node")
    assert "only in the candidate (not compared): n12" in found["p"]
    assert any(row.startswith("n031/1pointsregressionproc.cpu_pct +") for row in found["tr"])


def test_a_thread_pool_gives_the_same_breakdown() -> None:
    """What the manager does (service.Analyst): per-node tests on a few threads."""
    means = {n: [50.0] for n in FLEET}
    base, cand = fleet("base", means), fleet("cand", {**means, "n03": [65.0], "n05": [40.0]})
    serial = compare.compare(base, cand, now=T, max_nodes=4)
    with ThreadPoolExecutor(3) as pool:
        threaded = compare.compare(base, cand, now=T, max_nodes=4, map_nodes=pool.map)
    assert json.dumps(render.plain(threaded)) == json.dumps(render.plain(serial))
    assert [d["node"] for d in serial["nodes"]["detailed"]] == ["n01", "n02", "n03", "n05"]
