"""A report's headline and tables: the figures people look for, in human units."""

from __future__ import annotations

import re
from typing import Any

from bus.views.report import headline, report_tables
from dashboard.pages.analysis import analysis_html
from manager.analysis import render, report
from tests.manager.analysis.test_report import T, job, run, series, tree

MEMORY = 25_324_953_600  # what a node reports as memory_bytes


def analysed(env: dict[str, Any], collect: list[str]) -> dict[str, Any]:
    times = [T + s for s in range(0, 21)]
    n = len(times)
    raw = {
        "proc": [tree("n1", times, [100.0 + (i % 5) for i in range(n)])],
        "app": [series("app", {"node": "n1", "name": "latency_ms"}, times,
                       value=[2.0 + i / 10 for i in range(n)])],
        "agent": [series("agent", {"node": "n1"}, times, cpu_pct=[0.5] * n,
                         rss=[40 * 2**20] * n, samples_dropped=[0] * n, spool_depth=[0] * n)],
    }
    j = job([run("n1", 1, T, T + 10), run("n1", 2, T + 10.5, T + 20)])
    j["state"] = "succeeded"
    j["spec"]["collect"] = collect
    return render.plain(report.report_object(report.analyse(j, env, raw, now=T + 100)))


def test_the_headline_gives_the_figures_people_look_for() -> None:
    env = {"n1": {"perf_available": True, "pmu_hardware": False, "memory_bytes": MEMORY,
                  "source": "recorded"}}
    r = analysed(env, ["system", "process", "perf", "app"])
    top = headline(r, {"name": "nightly", "moved_text": "did not move"}, "/history?series=x")
    text = re.sub(r"<svg.*?</svg>", "", top)
    assert "Job j1: succeeded in 20.0 s; 2 run(s) on 1 node(s), 2 succeeded" in re.sub(
        r"<[^>]+>", "", text)
    assert "101.9% mean, p95 104%" in text, "the tree's CPU, 100% = one core"
    assert "976.6 KiB max" in text, "the tree's RSS in binary units"
    assert "n/a — no PMU (software events only)" in text
    assert "latency_ms 3 / 3.9" in text, "app metrics p50 / p95"
    assert "0.5% CPU mean, 40 MiB RSS" in text, "the observer's cost"
    assert "Series <a href='/history?series=x'>nightly</a> — did not move" in text
    assert top.count("<svg class='spark'") == 2, "small charts of the tree's CPU and RSS"
    assert not re.search(r"\d{7,}", text), "no raw byte counts or epoch times"


def test_ipc_or_why_there_is_none() -> None:
    r = analysed({"n1": {"perf_available": False}}, ["system", "process", "perf"])
    assert "n/a — no perf on this node" in headline(r)
    r = analysed({"n1": {"perf_available": True, "pmu_hardware": True}}, ["process"])
    assert "n/a — perf not collected" in headline(r)
    r["overall"]["figures"]["run.ipc"] = r["nodes"]["n1"]["figures"]["run.ipc"] = {"p50": 1.234}
    assert "1.23 instructions/cycle" in headline(r)


def test_full_tables_follow_in_human_units_and_json_csv_stay_as_they_were() -> None:
    env = {"n1": {"memory_bytes": MEMORY, "kernel": "6.1", "source": "recorded"}}
    r = analysed(env, ["process"])
    tables = report_tables(r)
    assert "23.59 GiB" in tables and str(MEMORY) not in tables
    assert not re.search(r"\b1[67]\d{8}\b", tables), "times are dates, not epoch seconds"
    page = analysis_html(r)
    assert page.index("id='headline'") < page.index("Environment") < page.index("Runs")
    csv_text = render.render(r, "csv")
    assert csv_text.splitlines()[0].startswith("scope,run,node,iteration,metric")
    assert render.render(r, "json").count('"memory_bytes": 25324953600') == 1


def test_the_kernel_s_app_drops_are_in_the_observer_figures() -> None:
    times = [T + s for s in range(0, 11)]
    n = len(times)
    raw = {"agent": [series("agent", {"node": "n1"}, times, cpu_pct=[0.5] * n,
                            rss=[40 * 2**20] * n, samples_dropped=[0] * n,
                            spool_depth=[0] * n, app_dropped=[7] * 5 + [19] * (n - 5))]}
    j = job([run("n1", 1, T, T + 10)])
    r = render.plain(report.report_object(report.analyse(j, {}, raw, now=T + 100)))
    assert r["observer"]["n1"]["app_dropped"] == 12.0, "the increase during the run"
    top = re.sub(r"<[^>]+>", "", headline(r, None, ""))
    assert "12 app datagrams dropped by the kernel" in top
    assert "APP DROPPED" in render.report_text(r)


def test_a_job_s_series_is_in_its_report_and_named_by_the_headline() -> None:
    j = job([run("n1", 1, T, T + 10)])
    j["spec"]["series"] = "nightly-build"
    r = render.plain(report.report_object(report.analyse(j, {}, {}, now=T + 100)))
    assert r["job"]["series"] == "nightly-build"
    assert ">nightly-build</a>" in headline(r, None, "/history?series=nightly-build")
    del j["spec"]["series"]
    r = render.plain(report.report_object(report.analyse(j, {}, {}, now=T + 100)))
    assert r["job"]["series"] == "" and f">{j['name']}<" in headline(r, None, "/h")
