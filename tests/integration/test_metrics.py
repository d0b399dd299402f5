"""The metrics plane end to end: a real agent's collectors → manager → a real InfluxDB."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import Cluster, wait_for

pytestmark = pytest.mark.integration

WORKLOAD = str(Path(__file__).with_name("workload.py"))




def rows(influxdb: InfluxFixture, db: str, q: str) -> list[dict[str, Any]]:
    return influxdb.query(db, q)


def count_app(influxdb: InfluxFixture, db: str, job: str) -> int:
    got = rows(influxdb, db, f"SELECT count(\"value\") FROM app WHERE job = '{job}' "
                             "AND \"name\" = 'seqpoint'")
    return int(got[0]["count"]) if got else 0


def submit(c: Cluster, points: int, seconds: float, *extra: str) -> str:
    rc, out, err = c.cli("run", "--collect", "system,process,perf,app", "--interval", "0.2",
                         *extra, "--", sys.executable, WORKLOAD, str(points), str(seconds))
    assert rc == 0 or "--wait" in extra, err
    return out.splitlines()[0]


def test_every_measurement_lands_tagged(metrics_cluster: Cluster, influxdb: InfluxFixture,
                                        influx_db: str) -> None:
    c, db = metrics_cluster, influx_db
    job = submit(c, 20, 1.5, "--wait")
    assert c.job(job)["state"] == "succeeded"
    window = "node = 'node1'"
    for measurement in ("cpu", "mem", "net", "agent"):
        wait_for(lambda m=measurement: rows(influxdb, db, f"SELECT * FROM {m} WHERE {window} "
                                            "LIMIT 1"), 20, f"{measurement} rows")
    assert rows(influxdb, db, "SELECT * FROM cpu WHERE cpu = 'total' LIMIT 1")[0]["idle"] >= 0
    wait_for(lambda: count_app(influxdb, db, job) == 20, 20, "all 20 app points")
    # The run's last sample (its done mark, perf's last counts, the StatsD timings
    # read last) is taken after the run ended and shipped in a batch of its own,
    # which may land after the app points: each is waited for, then checked.

    def job_pids() -> set[str] | None:
        got = {r["pid"] for r in rows(influxdb, db, f"SELECT last(rss) FROM proc WHERE job = "
                                                    f"'{job}' GROUP BY pid")}
        return got if "tree" in got and len(got - {"tree"}) >= 3 else None

    wait_for(job_pids, 20, "proc rows of the tree, the parent and two children")
    marks = wait_for(lambda: (m := rows(influxdb, db, f"SELECT * FROM mark WHERE job = '{job}'"))
                     and len(m) >= 2 and m, 20, "both marks")
    assert [m["phase"] for m in marks] == ["measure", "done"]
    latency = wait_for(lambda: (n := rows(influxdb, db, f"SELECT count(\"value\") FROM app WHERE "
                                                       f"job = '{job}' AND \"name\" = 'latency'"))
                       and n[0]["count"] >= 20 and n, 20, "the 20 StatsD timings")
    assert latency[0]["count"] == 20

    def perf_events() -> dict[str, dict[str, Any]] | None:
        got = {r["event"]: r for r in rows(
            influxdb, db, f"SELECT last(\"value\") FROM perf WHERE job = '{job}' GROUP BY event")}
        return got if "task-clock" in got else None

    events = wait_for(perf_events, 20, "the job's perf task-clock")
    assert events["task-clock"]["last"] > 0
    system = wait_for(lambda: rows(influxdb, db, "SELECT count(\"value\") FROM perf WHERE "
                                                 "scope = 'system' AND event = 'task-clock'"),
                      20, "system-wide perf rows")
    assert system[0]["count"] > 0
    node = next(n for n in c.cli_json("nodes") if n["name"] == "node1")
    # Hardware counters appear exactly when the node has a PMU; never as zeros.
    assert ("cycles" in events) == node["facts"]["pmu_hardware"]
    zeros = rows(influxdb, db, "SELECT count(\"value\") FROM perf WHERE event = 'cycles' "
                               "AND \"value\" = 0")
    assert not zeros


def test_influxdb_outage_during_a_run_loses_nothing(
        metrics_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c, db = metrics_cluster, influx_db
    job = submit(c, 60, 3.0)
    wait_for(lambda: count_app(influxdb, db, job) > 0, 20, "the first app points")
    influxdb.stop()
    try:
        c.wait_job_state(job, {"succeeded"})
    finally:
        influxdb.start()
    wait_for(lambda: count_app(influxdb, db, job) == 60, 40, "all 60 app points")


def test_manager_restart_during_a_run_loses_nothing(
        metrics_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c, db = metrics_cluster, influx_db
    job = submit(c, 60, 3.0)
    wait_for(lambda: count_app(influxdb, db, job) > 0, 20, "the first app points")
    c.manager.signal(signal.SIGKILL)
    c.manager.proc.wait(10)
    c.manager.start()
    c.wait_job_state(job, {"succeeded"})
    wait_for(lambda: count_app(influxdb, db, job) == 60, 40, "all 60 app points")
