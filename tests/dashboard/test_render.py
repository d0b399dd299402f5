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
