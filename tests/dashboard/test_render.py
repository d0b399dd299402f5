"""Analysis objects as HTML: escaped, laid out for the known kinds, nothing hidden."""

from __future__ import annotations

from dashboard.pages.analysis import analysis_html
from dashboard.pages.render import render

EVIL = "<script>alert(1)</script>"


def test_generic_render_escapes_and_nests() -> None:
    out = render({"a": [1, 2.5, None, True], EVIL: {"rows": [{"k": EVIL, "n": 1e9}]},
                  "created_at": 1.7e9, "verdict": "regression"})
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "1, 2.5" in out and "yes" in out and "1.0000e+09" in out
    assert "verdict bad" in out and "2023-" in out  # *_at as a time


def test_report_object_is_laid_out() -> None:
    report = {
        "kind": "ptap.report", "schema_version": 1, "generated_at": 1.7e9,
        "job": {"id": "j1", "name": EVIL}, "notes": ["late points may be missing"],
        "environment": {"n1": {"kernel": "6.1", "cpus": 2}},
        "metrics": {"cpu.busy": {"label": "CPU busy", "unit": "%", "main": True}},
        "overall": {"runs": 1, "metrics": {"cpu.busy": {"count": 3, "mean": 12.5, "p95": 20}},
                    "figures": {}},
        "runs": [{"id": "j1.n1.1", "node": "n1", "state": "succeeded", "exit_code": 0,
                  "metrics": {"cpu.busy": {"count": 3, "mean": 12.5}}, "timeline": [1] * 1000}],
        "something_new": {"x": 1},
    }
    out = analysis_html(report)
    assert "<script>" not in out
    assert "CPU busy" in out and "12.5" in out and "late points may be missing" in out
    assert "Run j1.n1.1" in out and "something_new" in out
    assert out.count("<td>1</td>") < 100  # the timeline is not dumped


def test_compare_object_leads_with_the_verdict() -> None:
    comparison = {
        "kind": "ptap.compare", "verdict": "regression", "threshold": 0.05, "alpha": 0.05,
        "counts": {"regression": 1, "unchanged": 0},
        "metrics": [{"metric": "cpu.busy", "label": "CPU busy", "base_median": 10.0,
                     "cand_median": 12.0, "change": 0.2, "ci": [0.1, "inf"],
                     "verdict": "regression", "reason": EVIL}],
        "environment_differences": [], "overlay": {"base": {"huge": list(range(1000))}},
    }
    out = analysis_html(comparison)
    assert out.index("Verdict") < out.index("Metrics")
    assert "+20.00 %" in out and "+10.00 % … inf" in out and "verdict bad" in out
    assert "<script>" not in out and "999" not in out  # overlay data stays out


def test_compare_object_shows_the_node_the_pooled_verdict_hides() -> None:
    node_entry = {"metric": "app.latency", "samples": "points", "n_base": 30, "n_cand": 30,
                  "base_median": 10.0, "cand_median": 13.0, "diff": 3.0, "change": 0.3,
                  "ci": [0.25, 0.35], "p_value": 1e-9, "verdict": "regression", "reason": "x"}
    flag = {"node": "n3", "metric": "app.latency", "verdict": "regression",
            "pooled_verdict": "unchanged", "hidden": True, "samples": "points", "change": 0.3,
            "ci": [0.25, 0.35], "p_value": 1e-9}
    comparison = {
        "kind": "ptap.compare", "verdict": "unchanged", "counts": {"unchanged": 1},
        "metrics": [{"metric": "app.latency", "label": "latency", "change": 0.0,
                     "verdict": "unchanged"}],
        "nodes": {"metrics": ["app.latency"], "max_detailed": 50, "shared": 2,
                  "only_base": [EVIL], "only_base_count": 1, "only_cand": [],
                  "only_cand_count": 0, "counts": {"regression": 1, "unchanged": 1},
                  "flags": [flag, {**flag, "node": "n1", "hidden": False}], "flags_count": 2,
                  "detailed": [
                      {"node": "n1", "verdict": "unchanged", "runs_base": 1, "runs_cand": 1,
                       "environment_differences": [],
                       "metrics": [{**node_entry, "verdict": "unchanged", "change": 0.01}]},
                      {"node": "n3", "verdict": "regression", "runs_base": 1, "runs_cand": 1,
                       "environment_differences": [{"key": "kernel", "base": "6.1",
                                                    "cand": "6.5"}],
                       "metrics": [node_entry]}],
                  "summarised": {"count": 0, "quiet": 0, "suspects": [], "suspects_count": 0}},
    }
    out = analysis_html(comparison)
    assert out.index("Verdict") < out.index("node-flags") < out.index("Metrics") \
        < out.index("Per node (2 in both jobs, 2 detailed)")
    # The flags are the HTML file's (bus.views.comparison): one renderer for both.
    flags = out[out.index("node-flags"):out.index("</div>", out.index("node-flags"))]
    assert flags.count("<p class='node-flag") == 1, "only the flag the pooled verdict hides"
    assert "⚠ node n3: app.latency worse by 30.0% (p=1e-09, points) — " in flags
    assert "pooled: <span class='verdict same'>unchanged</span>" in flags
    assert "only in the baseline (not compared): &lt;script&gt;" in out and "<script>" not in out
    assert "Node n3: regression" in out and "6.5" in out
    assert "Other fields" not in out, "the per-node part is laid out, not dumped"


def test_compare_object_counts_from_the_totals_not_the_capped_lists() -> None:
    """The manager lists at most 200 flags, names and suspects and counts them all:
    what is "more" comes from its counts."""
    flag = {"node": "n3", "metric": "app.latency", "verdict": "regression",
            "pooled_verdict": "unchanged", "hidden": True, "samples": "points", "change": 0.3,
            "ci": [0.25, 0.35], "p_value": 1e-9}
    suspect = {"node": "n9", "metric": "app.latency", "possible": "regression",
               "samples": "points", "change": 0.2, "p_value": 1e-5}
    comparison = {
        "kind": "ptap.compare", "verdict": "unchanged", "counts": {"unchanged": 1},
        "metrics": [],
        "nodes": {"metrics": ["app.latency"], "max_detailed": 50, "shared": 400,
                  "only_base": ["x1", "x2"], "only_base_count": 7, "only_cand": [],
                  "only_cand_count": 0, "counts": {"regression": 12},
                  "flags": [{**flag, "node": f"n{i}"} for i in range(12)], "flags_count": 300,
                  "hidden_count": 250, "detailed": [],
                  "summarised": {"count": 350, "quiet": 340, "suspects": [suspect] * 3,
                                 "suspects_count": 10}},
    }
    out = analysis_html(comparison)
    flags = out[out.index("node-flags"):out.index("</div>", out.index("node-flags"))]
    assert flags.count("<p class='node-flag") == 10 and "240 more under Per node" in flags
    assert "only in the baseline (not compared): x1, x2 and 5 more" in out
    assert ("350 more node(s) not detailed: 340 show no possible regression or improvement"
            in out)
    assert "10 possible change(s), the first 3 listed" in out
