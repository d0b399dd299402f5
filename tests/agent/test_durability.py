"""Nothing lost across agent restarts and pauses: real agent and manager processes, a
real influxd, and numbered app points counted in InfluxDB (issue 12's method).

* an agent stopped (SIGTERM) while the manager is down, restarted, then the manager:
  every point arrives and the run that finished meanwhile ends ``succeeded`` with its
  exit code, not ``lost`` (the disk spool and the finished-run files, on by default);
* an agent paused (SIGSTOP) while its run sends UDP points: the default buffer holds
  the burst, and a buffer made tiny on purpose loses points that are counted and
  reported (the run's error, the ``agent`` measurement's ``app_dropped``);
* the stream endpoint: every one of K points arrives.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.agent.collectors.test_app_sockets import burst_that_fits
from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import HEARTBEAT, Cluster, Daemon, wait_for

pytestmark = pytest.mark.integration

PROGRAM = str(Path(__file__).with_name("app_points.py"))


def start_agent(c: Cluster, name: str, *sets: str) -> Daemon:
    """An agent as ``Cluster.add_agent`` starts one (its config has no ``[spool]``, so the
    defaults hold: ``var/agent-spool`` under the test's folder), with ``--set`` flags."""
    config = c.tmp / f"agent-{name}.cfg"
    config.write_text(f"[dispatcher]\nworkdir = {c.tmp / f'runs-{name}'}\nkill_grace = 1.0\n"
                      f"[heartbeat-checker]\ninterval = {HEARTBEAT}\nliveness = 3\n")
    flags = [arg for item in sets for arg in ("--set", item)]
    agent = Daemon(f"agent {name}", [sys.executable, "-m", "agent.main", "--config", str(config),
                                     "--name", name, "--server", c.manager.address, *flags],
                   c.tmp / f"agent-{name}.log", c.tmp)
    c.logs.append(agent.log_path)
    c.agents[name] = agent
    agent.spawn()
    c.wait_node_state(name, "ready")
    return agent


@pytest.fixture
def influx_cluster(tmp_path: Path, influxdb: InfluxFixture, influx_db: str) -> Any:
    """A manager writing to a fresh database of the session's influxd; no agent yet.
    The processes' logs are printed at the end (pytest shows them when a test fails)."""
    logs: list[Path] = []
    c = Cluster(tmp_path, logs, influxdb.url, influx_db)
    try:
        c.manager.start()
        yield c
    finally:
        c.stop()
        for path in logs:
            print(f"--- {path.name}\n" + path.read_text(errors="replace")[-6000:])


class Points:
    """One job of ``app_points.py``: submit it, say go, count what InfluxDB holds."""

    def __init__(self, c: Cluster, mode: str, count: int, exit_code: int = 0) -> None:
        self.c, self.count = c, count
        self.go = c.tmp / f"go-{mode}"
        self.sent = c.tmp / f"sent-{mode}"
        os.mkfifo(self.go)
        rc, out, err = c.cli("run", "--collect", "app", "--", sys.executable, PROGRAM, mode,
                             str(count), str(self.go), str(self.sent), str(exit_code))
        assert rc == 0, err
        self.job = out.splitlines()[0]
        c.wait_job_state(self.job, {"running"})
        self.run_id = c.job(self.job)["runs"][0]["id"]

    def release(self) -> None:
        """Let the program send (opening the FIFO waits for the program to open it)."""
        opener = threading.Thread(target=lambda: self.go.write_text("go\n"))
        opener.start()
        opener.join(30)
        assert not opener.is_alive(), "the program never opened its go FIFO"

    def stored(self, influxdb: InfluxFixture, db: str) -> tuple[int, int, float, float]:
        """count, count of distinct numbers, min and max of the job's stored points."""
        got = influxdb.query(db, 'SELECT count("value"), count(distinct("value")) AS n, '
                             'min("value"), max("value") FROM app '
                             f"WHERE job = '{self.job}' AND \"name\" = 'seq'")
        if not got:
            return 0, 0, 0.0, 0.0
        return got[0]["count"], got[0]["n"], got[0]["min"], got[0]["max"]

    def all_stored(self, influxdb: InfluxFixture, db: str) -> bool:
        return self.stored(influxdb, db) == (self.count, self.count, 0, self.count - 1)


def last_agent_field(influxdb: InfluxFixture, db: str, field: str) -> Any:
    got = influxdb.query(db, f'SELECT last("{field}") FROM agent WHERE node = \'node1\'')
    return got[0]["last"] if got else None


def test_agent_restart_while_the_manager_is_down_loses_no_point_and_no_run(
        influx_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c = influx_cluster
    agent = start_agent(c, "node1")
    job = Points(c, "udp", 3000, exit_code=0)
    journal = c.tmp / "var" / "agent-spool" / "node1" / "runs" / f"{job.run_id}.run"
    c.manager.kill()
    job.release()
    wait_for(journal.exists, 30, "the finished run's file in the agent's spool")
    agent.signal(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.wait(30) == 0
    agent.spawn()  # the same node, the same default spool; no manager yet
    c.manager.start()
    done = c.wait_job_state(job.job, {"succeeded", "failed", "lost", "cancelled"}, 60)
    run = done["runs"][0]
    assert (done["state"], run["state"], run["exit_code"]) == ("succeeded", "succeeded", 0)
    wait_for(lambda: job.all_stored(influxdb, influx_db), 60,
             f"all {job.count} points in InfluxDB (have {job.stored(influxdb, influx_db)})")
    wait_for(lambda: not journal.exists(), 20, "the run's file removed after the ack")


def test_a_paused_agent_keeps_a_burst_in_its_udp_buffer(
        influx_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c = influx_cluster
    agent = start_agent(c, "node1")
    job = Points(c, "udp", burst_that_fits())
    agent.signal(signal.SIGSTOP)
    try:
        job.release()
        wait_for(job.sent.exists, 30, "the program to have sent its burst")
    finally:
        agent.signal(signal.SIGCONT)
    done = c.wait_job_state(job.job, {"succeeded", "failed", "lost", "cancelled"}, 60)
    assert done["state"] == "succeeded" and done["runs"][0]["error"] == ""
    wait_for(lambda: job.all_stored(influxdb, influx_db), 60,
             f"all {job.count} points in InfluxDB (have {job.stored(influxdb, influx_db)})")
    wait_for(lambda: last_agent_field(influxdb, influx_db, "app_dropped") == 0, 20,
             "the agent measurement's app_dropped")


def test_drops_forced_by_a_tiny_buffer_are_counted_and_reported(
        influx_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c = influx_cluster
    agent = start_agent(c, "node1", "collectors.app_rcvbuf=4096")
    job = Points(c, "udp", 3000)
    agent.signal(signal.SIGSTOP)
    try:
        job.release()
        wait_for(job.sent.exists, 30, "the program to have sent its burst")
    finally:
        agent.signal(signal.SIGCONT)
    done = c.wait_job_state(job.job, {"succeeded", "failed", "lost", "cancelled"}, 60)
    run = done["runs"][0]
    said = re.search(r"(\d+) app metric datagram\(s\) dropped by the kernel", run["error"])
    assert done["state"] == "succeeded" and said, run["error"]
    dropped = int(said[1])
    assert dropped > job.count // 2  # 4 KiB holds a handful of datagrams
    # Every point either arrived or is counted: stored + dropped is exactly K.
    wait_for(lambda: job.stored(influxdb, influx_db)[0] == job.count - dropped, 60,
             f"{job.count - dropped} points in InfluxDB (have {job.stored(influxdb, influx_db)})")
    wait_for(lambda: last_agent_field(influxdb, influx_db, "app_dropped") == dropped, 20,
             f"app_dropped = {dropped} in the agent measurement")


def test_the_stream_endpoint_delivers_every_point(
        influx_cluster: Cluster, influxdb: InfluxFixture, influx_db: str) -> None:
    c = influx_cluster
    start_agent(c, "node1")
    job = Points(c, "stream", 50_000)
    job.release()
    done = c.wait_job_state(job.job, {"succeeded", "failed", "lost", "cancelled"}, 60)
    assert done["state"] == "succeeded", done["runs"][0]
    wait_for(lambda: job.all_stored(influxdb, influx_db), 60,
             f"all {job.count} points in InfluxDB (have {job.stored(influxdb, influx_db)})")
