"""The history as HTML: headline, change points drawn, and the file open offline in Chromium."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from bus.views.history import history_headline, history_tables, moved_text
from manager.history.html import render_history_html
from tests.browser import COUNT_CANVASES, Browser

EVIL = "<script>alert(1)</script>"

#: JS: whether a canvas of the page (inside Bokeh's shadow roots too) has pixels that
#: differ from its first one: the chart was drawn, not just laid out.
DRAWN = """(() => {
  const canvases = [];
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.tagName === 'CANVAS') canvases.push(el);
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return canvases.filter((c) => {
    if (!c.width || !c.height) return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 4; i < d.length; i += 4) {
      if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3]) return true;
    }
    return false;
  }).length;
})()"""


def history(jobs: int = 12, step_at: int = 6) -> dict[str, Any]:
    """A ``ptap.history`` of ``jobs`` jobs where run.cpu_seconds steps up 30 % at ``step_at``."""
    ids = [f"job{i:02d}" for i in range(jobs)]
    cpu = [10.0 + 0.1 * (i % 3) if i < step_at else 13.0 + 0.1 * (i % 3) for i in range(jobs)]
    rss = [2.0 * 2**30 + 1e6 * (i % 2) for i in range(jobs)]

    def points(values: list[float]) -> list[dict[str, Any]]:
        return [{"index": i, "job": ids[i], "median": v, "low": v * 0.98, "high": v * 1.02,
                 "runs": 3} for i, v in enumerate(values)]

    change = {"environment_differences": [{"scope": "job", "key": "tag build",
                                           "base": "old", "cand": EVIL}],
              "index": step_at, "job": ids[step_at], "label": f"1.{step_at}",
              "before": 10.1, "after": 13.1, "step": 0.297, "step_abs": 3.0,
              "ci": [0.25, 0.34], "p_value": 1e-5, "direction": "regression"}
    return {
        "kind": "ptap.history", "schema_version": 1, "generated_at": 1.765e9,
        "series": "nightly", "order": "version",
        "detector": {"library": "ruptures", "method": "pelt", "alpha": 0.001},
        "jobs": [{"id": j, "name": "nightly", "series": "nightly", "label": f"1.{i}",
                  "state": "succeeded", "created_at": 1.76e9 + i, "ended_at": 1.76e9 + i + 5,
                  "tags": {"version": f"1.{i}"}, "nodes": ["n1"]} for i, j in enumerate(ids)],
        "metrics": [
            {"metric": "run.cpu_seconds", "label": "CPU seconds of the tree", "unit": "s",
             "direction": "lower", "points": points(cpu), "change_points": [change]},
            {"metric": "proc.rss", "label": "resident memory of the tree", "unit": "B",
             "direction": "lower", "points": points(rss), "change_points": []}],
        "notes": ["2 job(s) of the series did not succeed and make no point"],
    }


def test_headline_names_the_change_point_environment_and_all() -> None:
    h = history()
    top = history_headline(h)
    assert "Series nightly: 12 job(s) in version order, 1 change point(s)" in top
    assert "<code>run.cpu_seconds</code> +29.70 %" in top and "from job <b>job06</b>" in top
    assert "95% CI +25.00 % … +34.00 %" in top and "p=1e-05" in top
    assert "verdict bad'>regression" in top and "tag build old →" in top
    assert "<script>" not in top and "&lt;script&gt;" in top
    assert "did not succeed" in top
    tables = history_tables(h, job_link="/jobs/{job}")
    assert "<a href='/jobs/job06'>job06</a>" in tables and "2 GiB" in tables
    assert "<script>" not in tables


def test_whether_the_series_moved_at_a_job() -> None:
    h = history()
    assert moved_text(h, "job06") == "moved at this job: run.cpu_seconds +29.7% (regression)"
    assert moved_text(h, "job09").startswith("did not move at this job; last change point at "
                                             "job job06")
    assert moved_text(h, "job03") == "did not move: no change point in its 12 job(s)"
    assert "not among them yet" in moved_text(h, "elsewhere")


def test_history_html_opens_offline_in_chromium_with_its_charts(tmp_path: Path,
                                                                 output_dir: Path) -> None:
    page_html = render_history_html(history())
    assert "cdn.bokeh.org" not in page_html, "resources are inline"
    path = tmp_path / "history.html"
    path.write_text(page_html, encoding="utf-8")

    async def scenario() -> dict[str, Any]:
        async with Browser(tmp_path / "chromium") as browser:
            page = await browser.new_page()  # network off: the file is self-contained
            await page.goto(path.resolve().as_uri())
            await page.wait_for("window.Bokeh !== undefined && Bokeh.documents.length > 0")
            found = {"canvases": await page.wait_for(COUNT_CANVASES),
                     "drawn": await page.wait_for(DRAWN)}
            doc = "Bokeh.documents[0]"
            found["changes"] = await page.evaluate(
                f"{doc}.get_model_by_name('changes:run.cpu_seconds').data.x")
            found["flat"] = await page.evaluate(
                f"{doc}.get_model_by_name('changes:proc.rss').data.x.length")
            found["jobs"] = await page.evaluate(
                f"{doc}.get_model_by_name('points:run.cpu_seconds').data.job")
            png = await page.screenshot(tmp_path / "history.png")
            (output_dir / "history.png").write_bytes(png)
            assert png.startswith(b"\x89PNG") and len(png) > 20_000
            assert page.remote_requests() == [] and page.errors == [], page.errors
            return found

    found = asyncio.run(scenario())
    assert found["canvases"] >= 2 and found["drawn"] >= 2, found
    assert found["changes"] == [5.5], "the band sits just before the job the step starts at"
    assert found["flat"] == 0
    assert json.dumps(found["jobs"]) == json.dumps([f"job{i:02d}" for i in range(12)])


def test_the_managers_own_history_object_renders() -> None:
    """The object as manager/history/build.py makes it (12 jobs, a step at job 7)."""
    from manager.history.build import history_object
    from tests.manager.history.test_build import CPU, series

    h = history_object("nightly", series(CPU, kernel="6.2"), [], now=5.0)
    top = history_headline(h)
    assert "12 job(s) in version order, 1 change point(s)" in top
    assert "from job <b>job07</b> (1.7) — <span class='verdict bad'>regression</span>" in top
    assert "environment: kernel 6.1 → 6.2" in top
    assert moved_text(h, "job07").startswith("moved at this job: run.cpu_seconds +3")
    page = render_history_html(h)
    assert "history:run.cpu_seconds" in page and "changes:run.cpu_seconds" in page
