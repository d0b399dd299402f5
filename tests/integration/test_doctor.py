"""``ptap doctor`` against real processes: a CURVE manager, agents, influxd, a dashboard.

The healthy cluster exits 0; each failure the issue names exits 1 with
exactly one ``FAIL`` line that says what to do: influxd stopped (a private
influxd, so the session's is not touched), the agent stopped,
``kernel.perf_event_paranoid`` raised to 3 (restored afterwards), and an agent
key left pending (``auto_accept = no``). A node whose clock is seconds off (a
raw DEALER that stamps its messages 5 s late) shows its offset in ``ptap
nodes``, gets a warning in the manager's log, and is a doctor problem too.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import codec
from bus.messages import PROTOCOL_VERSION, Heartbeat, NodeFacts, Register, Welcome
from scripts.influxdb_local import InfluxServer, create_database
from tests.conftest_influx import InfluxFixture
from tests.dashboard.conftest import DashboardProc
from tests.integration.conftest import CliResult, Cluster, wait_for

pytestmark = pytest.mark.integration

PARANOID = Path("/proc/sys/kernel/perf_event_paranoid")
CURVE = "curve = yes\nauto_accept = yes\n"


@pytest.fixture
def curve_cluster(tmp_path: Path, process_logs: list[Path], influxdb: InfluxFixture,
                  influx_db: str) -> Iterator[Cluster]:
    """A CURVE manager writing to the session's influxd, with one ready agent ``node1``."""
    c = Cluster(tmp_path, process_logs, influxdb.url, influx_db, security=CURVE)
    try:
        c.manager.start()
        c.add_agent("node1")
        yield c
    finally:
        c.stop()


def doctor(c: Cluster, *args: str) -> CliResult:
    return c.cli("doctor", *args)


def fails(result: CliResult) -> list[str]:
    """The FAIL lines of a text report."""
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL  ")]


def healthy(c: Cluster, *args: str) -> CliResult:
    result = doctor(c, *args)
    assert result.rc == 0 and fails(result) == [], result.stdout + result.stderr
    return result


def test_a_healthy_cluster_exits_0_and_shows_each_part(curve_cluster: Cluster, tmp_path: Path,
                                                       process_logs: list[Path],
                                                       influxdb: InfluxFixture,
                                                       influx_db: str) -> None:
    c = curve_cluster
    dash = DashboardProc(tmp_path, c.manager.router_port, influxdb.url, influx_db,
                         security=f"curve = yes\nkeys_dir = {c.manager.keys_dir}\n")
    process_logs.append(dash.log_path)
    dash.start()
    try:
        result = healthy(c, "--dashboard", dash.url)
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"ok    manager {c.manager.address}: answers over CURVE "
                                   f"(keys in {c.manager.keys_dir}); ptap ")
        # "(N points queued)" may follow on a busy host: writes in flight are no problem.
        assert any(line.startswith(f"ok    InfluxDB {influxdb.url} (database {influx_db}): "
                                   "the manager writes and reads") for line in lines), lines
        assert any(line.startswith("ok    node node1: ready, agent ") for line in lines)
        assert "ok    agent keys: none pending" in lines
        assert any(line.startswith(f"ok    dashboard {dash.url}: serving") for line in lines)
        assert lines[-1].startswith("no problems")

        report = json.loads(doctor(c, "--dashboard", dash.url, "--json").stdout)
        assert report["ok"] is True and report["problems"] == 0
        (node,) = report["facts"]["nodes"]
        # Stamped by the agent, read by the manager: on loopback well under a millisecond
        # or two, and never near the 0.2 s heartbeat interval of these tests.
        assert node["clock_offset"] is not None and abs(node["clock_offset"]) < 0.1
        assert report["facts"]["status"]["influxdb"]["write_error"] == ""
    finally:
        dash.stop()


def test_influxd_stopped(tmp_path: Path, process_logs: list[Path]) -> None:
    server = InfluxServer(tmp_path / "influxdb", die_with_parent=True)
    server.start()
    c = Cluster(tmp_path, process_logs, server.url, "ptap", security=CURVE)
    try:
        create_database(server.url, "ptap")
        c.manager.start()
        c.add_agent("node1")
        healthy(c)
        server.stop()
        result = doctor(c)
        assert result.rc == 1, result.stdout + result.stderr
        assert fails(result) == [
            f"FAIL  the manager cannot write to InfluxDB {server.url} (database ptap): "
            "Connection refused — is influxd running? (scripts/start-all starts the local "
            "one; else see server.cfg [influxdb] url)"], result.stdout
    finally:
        c.stop()
        server.stop()


def test_the_agent_stopped(curve_cluster: Cluster) -> None:
    c = curve_cluster
    healthy(c)
    c.agents["node1"].stop()
    c.wait_node_state("node1", "lost")
    result = doctor(c)
    assert result.rc == 1, result.stdout + result.stderr
    (line,) = fails(result)
    assert line.startswith("FAIL  node node1 is lost: silent for "), line
    assert line.endswith(" — is ptap-agent running on node1? see its log (var/log/agent.log "
                         "for the local one; scripts/start-all restarts it)"), line


def node(c: Cluster, name: str) -> dict[str, Any] | None:
    return next((n for n in c.cli_json("nodes") if n["name"] == name), None)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing kernel.perf_event_paranoid needs root")
def test_perf_event_paranoid_raised_to_3(curve_cluster: Cluster) -> None:
    c = curve_cluster
    healthy(c)
    old = PARANOID.read_text().strip()
    agent = c.agents["node1"]
    try:
        subprocess.run(["sysctl", "-w", "kernel.perf_event_paranoid=3"], check=True,
                       capture_output=True)
        # The agent reads the level once, when it registers (agent/facts.py).
        agent.stop()
        agent.spawn()
        wait_for(lambda: (n := node(c, "node1")) and n["state"] == "ready"
                 and n["facts"]["perf_paranoid"] == 3, 30, "node1 back with paranoid 3")
        result = doctor(c)
    finally:
        subprocess.run(["sysctl", "-w", f"kernel.perf_event_paranoid={old}"], check=True,
                       capture_output=True)
    assert PARANOID.read_text().strip() == old
    assert result.rc == 1, result.stdout + result.stderr
    assert fails(result) == [
        "FAIL  node node1: kernel.perf_event_paranoid is 3, which refuses perf to every "
        "unprivileged process — on node1, as root: sysctl -w kernel.perf_event_paranoid=2 "
        "(and put it in /etc/sysctl.d/ to keep it), then restart ptap-agent"], result.stdout


def test_an_agent_key_left_pending(tmp_path: Path, process_logs: list[Path],
                                   influxdb: InfluxFixture, influx_db: str) -> None:
    c = Cluster(tmp_path, process_logs, influxdb.url, influx_db,
                security="curve = yes\nauto_accept = no\n")
    try:
        c.manager.start()
        c.add_agent("node1", wait=False)
        wait_for(lambda: any(k["node"] == "node1" for k in c.cli_json("keys", "list")["pending"]),
                 20, "node1's key to be pending")
        assert c.cli("keys", "accept", "node1").rc == 0
        c.wait_node_state("node1", "ready")
        healthy(c)
        c.add_agent("node2", wait=False)
        wait_for(lambda: any(k["node"] == "node2" for k in c.cli_json("keys", "list")["pending"]),
                 20, "node2's key to be pending")
        result = doctor(c)
        assert result.rc == 1, result.stdout + result.stderr
        assert fails(result) == [
            "FAIL  the agent key of node node2 is pending: that agent cannot register — compare "
            "it with the agent's log (ptap keys list), then ptap keys accept node2 (or ptap "
            "keys reject node2)"], result.stdout
        report = json.loads(doctor(c, "--json").stdout)
        assert report["facts"]["status"]["pending_keys"] == ["node2"]
    finally:
        c.stop()


class SkewedAgent:
    """A raw DEALER that registers as ``name`` with a clock ``skew`` seconds behind, then
    beats from a thread of its own (the socket is used there alone) until stopped."""

    def __init__(self, address: str, name: str, skew: float) -> None:
        self.skew = skew
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.connect(f"tcp://{address}")
        facts = NodeFacts(hostname=name, address="127.0.0.1", cpus=1, memory_bytes=1,
                          kernel="6.1")
        self.sock.send_multipart(codec.encode(Register(
            protocol=PROTOCOL_VERSION, node=name, facts=facts, sent_at=self.clock())))
        assert self.sock.poll(10_000), "no answer to agent.register"
        assert isinstance(codec.decode(self.sock.recv_multipart()), Welcome)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def clock(self) -> float:
        return time.time() - self.skew

    def _beat(self) -> None:
        while not self.done.wait(0.1):  # wait-ok: this fake agent's heartbeat interval
            self.sock.send_multipart(codec.encode(Heartbeat(sent_at=self.clock())))
            while self.sock.poll(0):
                self.sock.recv_multipart()  # the manager's heartbeats

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close(linger=0)
        self.ctx.term()


def test_a_clock_off_by_more_than_the_interval(tmp_path: Path, process_logs: list[Path],
                                               influxdb: InfluxFixture, influx_db: str) -> None:
    """Measured at registration and with heartbeats, shown by ptap nodes, warned about
    in the manager's log, and a doctor problem."""
    c = Cluster(tmp_path, process_logs, influxdb.url, influx_db)
    agent = None
    try:
        c.manager.start()
        agent = SkewedAgent(c.manager.address, "skewed", skew=5.0)
        shown = wait_for(lambda: (n := node(c, "skewed")) and n["clock_offset"], 20,
                         "the skewed node's clock offset")
        assert 5.0 <= shown < 5.1  # the skew plus a loopback delay
        assert "+5.00s" in c.cli("nodes").stdout
        wait_for(lambda: "node skewed: its clock is 5.0" in c.manager.log_path.read_text(), 20,
                 "the manager's clock warning")
        warning = next(line for line in c.manager.log_path.read_text().splitlines()
                       if "node skewed: its clock is" in line)
        assert " s behind the manager's, more than the 0.2 s sampling interval" in warning
        result = doctor(c)
        assert result.rc == 1, result.stdout + result.stderr
        (line,) = fails(result)
        assert line.startswith("FAIL  node skewed: its clock is 5.0"), line
        assert line.endswith("synchronise the clocks of skewed and the manager (chrony or "
                             "systemd-timesyncd)"), line
    finally:
        if agent is not None:
            agent.close()
        c.stop()
