"""Reports and comparisons of real jobs: a real agent's collectors, manager, InfluxDB and CLI."""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import Cluster, wait_for

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report-schema.json").read_text())
BURN = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"
#: Burns CPU on node ``{node}`` only (the agent tells a run its node), sleeps elsewhere.
BURN_ON = ("import os, time\nend = time.time() + {s}\n"
           "if os.environ['PTAP_NODE'] == '{node}':\n    while time.time() < end: pass\n"
           "else:\n    time.sleep({s})\n")  # wait-ok: the job's own behaviour




def run_job(c: Cluster, *command: str, repeat: int = 1) -> str:
    rc, out, err = c.cli("run", "--wait", "--collect", "system,process", "--interval", "0.2",
                         "--repeat", str(repeat), "--", *command)
    assert rc == 0, err
    return out.splitlines()[0]


def settled(c: Cluster, influxdb: InfluxFixture, db: str, job_id: str,
            nodes: tuple[str, ...] = ("node1",)) -> None:
    """Wait until InfluxDB holds a sample of each node taken after the job ended:
    batches are shipped and stored in order, so the job's last samples are stored too."""
    ended_ns = int(c.job(job_id)["ended_at"] * 1e9)
    for node in nodes:
        query = f"SELECT last(rss) FROM agent WHERE node = '{node}' AND time > {ended_ns}"
        wait_for(lambda q=query: influxdb.query(db, q), 20, f"samples of {node} after the job")


def report_json(c: Cluster, *args: str) -> dict[str, Any]:
    rc, out, err = c.cli(*args, "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return dict(doc)


def metric(cmp: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in cmp["metrics"] if e["metric"] == name)


def test_burning_cpu_against_sleeping_is_a_cpu_regression(
        metrics_cluster: Cluster, influxdb: InfluxFixture, influx_db: str, tmp_path: Path,
        output_dir: Path) -> None:
    c = metrics_cluster
    sleeper = run_job(c, "sleep", "2.5")
    burner = run_job(c, sys.executable, "-c", BURN.format(s=2.5))
    settled(c, influxdb, influx_db, burner)

    cmp = report_json(c, "compare", sleeper, burner)
    cpu = metric(cmp, "proc.cpu_pct")
    assert cpu["samples"] == "points" and min(cpu["n_base"], cpu["n_cand"]) >= 8
    assert cpu["verdict"] == "regression" and cpu["p_value"] < 1e-3, cpu
    # The burner gets what a busy machine leaves it; the sleeper next to nothing.
    assert cpu["base_median"] < 2 and cpu["cand_median"] > 10
    assert cmp["verdict"] == "regression"
    assert {d["key"] for d in cmp["environment_differences"]} == {"command"}

    report = report_json(c, "report", burner)
    run = report["runs"][0]
    assert run["state"] == "succeeded" and run["exit_code"] == 0
    assert 2.4 < run["duration"] < 5
    assert run["metrics"]["proc.cpu_pct"]["p50"] > 10
    assert report["environment"]["node1"]["source"] == "recorded"
    assert report["environment"]["node1"]["kernel"]
    assert report["observer"]["node1"]["cpu_pct"]["count"] >= 2
    for fmt in ("text", "csv", "html"):
        path = output_dir / f"report.{fmt}"
        rc, out, err = c.cli("report", burner, "--format", fmt, "-o", str(path))
        assert rc == 0 and out.strip() == str(path), err
    assert "proc.cpu_pct" in (output_dir / "report.text").read_text()
    rows = list(csv.DictReader(io.StringIO((output_dir / "report.csv").read_text())))
    assert any(r["metric"] == "proc.cpu_pct" and r["scope"] == "run" for r in rows)
    assert (output_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    rc, out, err = c.cli("compare", sleeper, burner, "--threshold", "10")
    assert rc == 0 and "REGRESSION" in out.splitlines()[0] and "threshold 10%" in out, err


def test_the_one_node_that_regressed_is_named(
        metrics_cluster: Cluster, influxdb: InfluxFixture, influx_db: str,
        output_dir: Path) -> None:
    """Two nodes, one run each: the candidate burns CPU on node2 only. Two runs a side
    are too few for iterations to reach significance (the smallest p is 1/3), so the
    pooled comparison tests points too: half the candidate's are node1's idle ones,
    the interval of its median reaches down to the baseline's, and the pooled
    verdict is no regression. node2's own points show it."""
    c = metrics_cluster
    c.add_agent("node2")
    base = run_job(c, sys.executable, "-c", BURN_ON.format(node="nowhere", s=2.5))
    cand = run_job(c, sys.executable, "-c", BURN_ON.format(node="node2", s=2.5))
    settled(c, influxdb, influx_db, cand, ("node1", "node2"))

    cmp = report_json(c, "compare", base, cand)
    pooled = metric(cmp, "proc.cpu_pct")
    assert pooled["samples"] == "points" and min(pooled["n_base"], pooled["n_cand"]) >= 16, pooled
    assert pooled["verdict"] != "regression" and cmp["verdict"] != "regression", pooled
    nodes = cmp["nodes"]
    assert nodes["shared"] == 2 and nodes["only_base"] == nodes["only_cand"] == []
    node2 = next(d for d in nodes["detailed"] if d["node"] == "node2")
    cpu = next(e for e in node2["metrics"] if e["metric"] == "proc.cpu_pct")
    assert cpu["samples"] == "points" and min(cpu["n_base"], cpu["n_cand"]) >= 8, cpu
    assert cpu["verdict"] == "regression" and cpu["p_value"] < 1e-3, cpu
    assert node2["verdict"] == "regression"
    flagged = {(f["node"], f["metric"]): f for f in nodes["flags"]}
    assert flagged[("node2", "proc.cpu_pct")]["hidden"] is True
    assert ("node1", "proc.cpu_pct") not in flagged

    rc, out, err = c.cli("compare", base, cand)
    assert rc == 0, err
    top = out.split("\n\n")[0]
    assert "!! node node2: proc.cpu_pct worse by" in top and "pooled:" in top, out
    assert "Per node" in out
    path = output_dir / "compare.html"
    rc, out, err = c.cli("compare", base, cand, "--format", "html", "-o", str(path))
    assert rc == 0, err
    assert "node node2: proc.cpu_pct worse by" in path.read_text()


def test_the_same_command_twice_is_not_a_regression(
        metrics_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c = metrics_cluster
    # Address-space randomisation alone moves the RSS of `sleep` by ±5 % from one
    # run to the next (1.74-1.89 MB here), as much as the threshold: `setarch -R`
    # turns it off, as a careful benchmark would, so the data hold no change to find.
    command = ("setarch", platform.machine(), "-R", "sleep", "0.5")  # wait-ok: the workload
    first = run_job(c, *command, repeat=5)
    second = run_job(c, *command, repeat=5)
    settled(c, influxdb, influx_db, second)
    cmp = report_json(c, "compare", first, second)
    for name in ("run.duration", "proc.rss", "proc.threads", "proc.fds"):
        e = metric(cmp, name)
        assert e["samples"] == "iterations" and (e["n_base"], e["n_cand"]) == (5, 5), e
        assert e["verdict"] in ("unchanged", "inconclusive"), e
    # A run's RSS figure is its peak, so a sample taken while the loader maps
    # libraries, or as `sleep` exits, does not move it.
    assert metric(cmp, "proc.rss")["change"] == 0, metric(cmp, "proc.rss")
    assert abs(metric(cmp, "run.duration")["change"]) < 0.2  # the medians of 5 runs of 0.5 s
    report = report_json(c, "report", second)
    assert report["overall"]["figures"]["run.duration"]["count"] == 5
    assert [r["iteration"] for r in report["runs"]] == [1, 2, 3, 4, 5]


def test_a_run_whose_node_was_lost_reports_what_exists(
        metrics_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c = metrics_cluster
    rc, out, err = c.cli("run", "--collect", "system,process", "--interval", "0.2", "--",
                         "sleep", "3")
    assert rc == 0, err
    job_id = out.splitlines()[0]
    wait_for(lambda: influxdb.query(influx_db, f"SELECT count(rss) FROM proc WHERE "
                                               f"job = '{job_id}' AND pid = 'tree'"),
             20, "the first samples of the run")
    c.agents["node1"].kill()  # the node goes away mid-run ...
    c.add_agent("node1")  # ... and comes back without the run: it is lost
    c.wait_job_state(job_id, {"failed"})
    report = report_json(c, "report", job_id)
    run = report["runs"][0]
    assert run["state"] == "lost" and run["lost"] is True
    assert any("lost" in note for note in run["notes"])
    assert run["metrics"]["proc.rss"]["count"] >= 1, "the points that reached InfluxDB"
    rc, out, err = c.cli("report", job_id)
    assert rc == 0 and "(LOST)" in out, err


def test_unknown_jobs_and_formats_are_one_line_errors(metrics_cluster: Cluster) -> None:
    rc, out, err = metrics_cluster.cli("report", "nosuchjob")
    assert rc == 1 and err.count("\n") == 1 and "no job" in err and "ptap jobs" in err
    rc, out, err = metrics_cluster.cli("compare", "a", "b", "--format", "xml")
    assert rc == 2 and err.count("\n") == 1
