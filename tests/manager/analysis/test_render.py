"""Text, CSV, JSON and the self-contained HTML (opened in headless Chromium, offline)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from manager.analysis import compare, render, report
from tests.browser import COUNT_CANVASES, Browser
from tests.manager.analysis.test_compare import repeated
from tests.manager.analysis.test_report import NS, T


@pytest.fixture(scope="module")
def objects() -> tuple[dict[str, Any], dict[str, Any]]:
    base = repeated("base", [50, 51, 49, 50, 50.5])  # 5 vs 5: Mann-Whitney can reach p < 0.05
    cand = repeated("cand", [60, 61, 59, 60, 60.5], kernel="6.5")
    for a in (base, cand):
        for rd in a.runs:
            assert rd.start is not None
            rd.marks = [(int((rd.start + 1) * NS), {"phase": "warmup"}),
                        (int((rd.start + 4) * NS), {"phase": "measure"})]
    r = render.plain(report.report_object(cand))
    c = render.plain(compare.compare(base, cand, now=T))
    return r, c


def test_plain_makes_json_safe_values() -> None:
    obj = {"a": np.float64(1.5), "b": [np.int64(2), math.nan, -math.inf], "c": np.bool_(True),
           "d": (1, "x")}
    assert render.plain(obj) == {"a": 1.5, "b": [2, None, None], "c": True, "d": [1, "x"]}
    assert type(render.plain(np.int64(3))) is int


def test_numbers_for_people() -> None:
    assert render.number(3 * 2**30, "B") == "3 GiB"
    assert render.number(1536, "B/s") == "1.5 KiB/s"
    assert render.number(12.3456, "%") == "12.35%"
    assert render.number(120, "/s") == "120/s" and render.number(1.5, "s") == "1.5 s"
    assert render.number(1e-17, "%") == "0%" and render.number(None) == "-"
    assert render.percent("inf") == "+∞" and render.percent(-0.051) == "-5.1%"


def test_text_report_and_comparison(objects: tuple[dict[str, Any], dict[str, Any]]) -> None:
    r, c = objects
    text = render.render(r, "text")
    assert text.startswith("Report of job cand")
    for part in ("Environment", "Runs", "proc.cpu_pct", "Phases of run cand.n1.1", "Observer"):
        assert part in text
    ctext = render.render(c, "text")
    assert ctext.startswith("Compare baseline base → candidate cand: REGRESSION")
    assert ctext.index("kernel") < ctext.index("proc.cpu_pct"), "differences come first"


def test_csv_report_and_comparison(objects: tuple[dict[str, Any], dict[str, Any]]) -> None:
    r, c = objects
    rows = list(csv.DictReader(io.StringIO(render.render(r, "csv"))))
    run_rows = [x for x in rows if x["scope"] == "run" and x["metric"] == "proc.cpu_pct"]
    assert len(run_rows) == 5 and float(run_rows[0]["figure"]) == pytest.approx(
        r["runs"][0]["figures"]["proc.cpu_pct"])
    assert {x["scope"] for x in rows} == {"run", "node", "node-runs", "overall", "overall-runs"}
    crows = list(csv.DictReader(io.StringIO(render.render(c, "csv"))))
    assert crows[0]["metric"] == "environment.node.kernel" and crows[0]["verdict"] == "different"
    cpu = next(x for x in crows if x["metric"] == "proc.cpu_pct")
    assert cpu["verdict"] == "regression" and cpu["samples"] == "iterations"


def test_json_is_strict(objects: tuple[dict[str, Any], dict[str, Any]]) -> None:
    r, c = objects
    assert json.loads(render.render(r, "json")) == r
    assert json.loads(render.render(c, "json")) == c
    with pytest.raises(ValueError, match="unknown format"):
        render.render(r, "pdf")


def test_html_opens_offline_in_chromium_with_its_charts(
        objects: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path, output_dir: Path) -> None:
    r, c = objects
    pages = {"report": render.render(r, "html"), "compare": render.render(c, "html")}
    for name, html in pages.items():
        assert "cdn.bokeh.org" not in html, "resources are inline"
        (output_dir / f"{name}.html").write_text(html, encoding="utf-8")

    async def scenario() -> dict[str, int]:
        canvases = {}
        async with Browser(tmp_path / "chromium") as browser:
            for name in pages:
                page = await browser.new_page()  # network off
                await page.goto((output_dir / f"{name}.html").resolve().as_uri())
                await page.wait_for("window.Bokeh !== undefined && Bokeh.documents.length > 0")
                canvases[name] = await page.wait_for(COUNT_CANVASES)
                png = await page.screenshot(output_dir / f"{name}.png")
                assert png.startswith(b"\x89PNG") and len(png) > 20_000
                assert page.remote_requests() == [] and page.errors == []
        return canvases

    canvases = asyncio.run(scenario())
    charts = sum(1 for m in r["metrics"].values() if m["main"])
    assert canvases["report"] >= charts > 0
    assert canvases["compare"] >= 2, "an overlay and a difference chart at least"
