"""``ptap doctor``'s checks as plain functions: facts in, findings out (no cluster).

The facts are shaped as the manager answers them (docs/protocol.md: the node
JSON and the ``status.get`` reply); tests/integration/test_doctor.py gathers
them from real processes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from manager.cli import doctor
from manager.cli.doctor import Facts, Finding, Severity

STATUS: dict[str, Any] = {
    "version": "0.1.0", "protocol": 1, "curve": True, "interval": 1.0, "liveness": 3,
    "influxdb": {"url": "http://127.0.0.1:8086", "database": "ptap", "write_error": "",
                 "read_error": "", "queued_points": 0, "write_retries": 0},
    "pending_keys": [],
}
NODE: dict[str, Any] = {
    "name": "node1", "state": "ready", "address": "10.0.0.5", "last_seen": 1.0,
    "silent_for": 0.3, "registered_at": 0.0, "running": [], "clock_offset": 0.0004,
    "spool_depth": 1, "samples_dropped": 0,
    "facts": {"hostname": "h", "cpus": 2, "perf_available": True, "perf_paranoid": 2,
              "pmu_hardware": True, "agent_version": "0.1.0", "address": "10.0.0.5"},
}


def healthy(**changes: Any) -> Facts:
    facts = Facts(manager="127.0.0.1:14321", keys_dir="/c/var/keys",
                  keys_from="the local cluster's keys", cli_version="0.1.0",
                  handshake={"outcome": "ok"}, status=copy.deepcopy(STATUS),
                  nodes=[copy.deepcopy(NODE)], dashboard_url="http://127.0.0.1:5006/",
                  dashboard={"sessions": {"/bk/live": 1}, "feed_problem": ""})
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def problems(findings: list[Finding]) -> list[str]:
    return [f.line() for f in findings if f.severity is Severity.FAIL]


def node(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(NODE)
    facts = changes.pop("facts", {})
    out.update(changes)
    out["facts"].update(facts)
    return out


def test_a_healthy_cluster_has_no_problems() -> None:
    findings = doctor.check(healthy())
    assert problems(findings) == []
    assert [f.check for f in findings] == ["manager", "influxdb", "node", "keys", "dashboard"]
    assert all(f.severity is Severity.OK for f in findings)
    lines = doctor.text(findings).splitlines()
    assert lines[0] == ("ok    manager 127.0.0.1:14321: answers over CURVE (keys in /c/var/keys, "
                        "found as the local cluster's keys); ptap 0.1.0, protocol 1")
    assert lines[2] == ("ok    node node1: ready, agent 0.1.0, perf hw+sw (paranoid 2), "
                        "clock +0.4ms, spool 1, dropped 0")
    assert lines[-1] == "no problems"


def test_unreachable_manager_says_how_far_it_got() -> None:
    cases = {
        "no-connection": "nothing accepts a connection there — is ptap-manager running?",
        "failed": "/c/var/keys/server.key is not its key — copy the manager's keys_dir/server.key",
        "mechanism-mismatch": "does not use CURVE, but this CLI does (keys in /c/var/keys, "
                              "found as the local cluster's keys) — pass --keys ''",
        "refused": "refused this CLI's key",
        "no-handshake": "a connection, but no ZeroMQ handshake",
        "not-zmtp": "broke the ZeroMQ handshake (ZMTP_UNEXPECTED_COMMAND) — is that port",
    }
    for outcome, expected in cases.items():
        facts = healthy(handshake={"outcome": outcome, "value": 400,
                                   "code": "ZMTP_UNEXPECTED_COMMAND"}, status=None, nodes=None)
        found = doctor.check(facts)
        assert len(problems(found)) == 1 and expected in problems(found)[0], outcome
        assert [f.check for f in found] == ["manager", "dashboard"]
    plain = healthy(handshake={"outcome": "failed"}, status=None, nodes=None, keys_dir=None,
                    keys_from="")
    assert "it uses CURVE, and this CLI has no admin key for it — pass --keys DIR" in \
        problems(doctor.check(plain))[0]
    stranger = healthy(status=None, nodes=None, manager_error="not-authorized: may not")
    assert "it is not an administrator's" in problems(doctor.check(stranger))[0]


def test_a_manager_without_status_get_still_gets_its_nodes_checked() -> None:
    facts = healthy(status=None, manager_error="unknown-type: unknown message type")
    found = doctor.check(facts)
    assert [(f.check, f.severity) for f in found][:2] == [("manager", Severity.WARN),
                                                          ("node", Severity.OK)]
    assert problems(found) == []


def test_versions_and_plain_managers_are_warnings() -> None:
    status = {**STATUS, "version": "0.2.0", "curve": False, "pending_keys": None}
    found = doctor.check(healthy(status=status, keys_dir=None, keys_from=""))
    warned = [f.line() for f in found if f.severity is Severity.WARN]
    assert any("does not use CURVE" in w for w in warned)
    assert any("runs ptap 0.2.0, this CLI 0.1.0" in w for w in warned)
    assert any("node node1 runs agent 0.1.0, the manager 0.2.0" in w for w in warned)
    assert problems(found) == [] and "keys" not in [f.check for f in found]


def test_influxdb_that_the_manager_cannot_reach_is_one_line() -> None:
    status = copy.deepcopy(STATUS)
    status["influxdb"].update(write_error="Connection refused", read_error="Connection refused")
    assert problems(doctor.check_influxdb(status)) == [
        "the manager cannot write to InfluxDB http://127.0.0.1:8086 (database ptap): "
        "Connection refused — is influxd running? (scripts/start-all starts the local one; "
        "else see server.cfg [influxdb] url)"]
    status["influxdb"].update(write_error='"ro" user is not authorized to write to database',
                              read_error="")
    (line,) = problems(doctor.check_influxdb(status))
    assert "cannot write" in line and "username and password" in line
    status["influxdb"].update(write_error="", read_error="database not found: ptap")
    assert "create the database" in problems(doctor.check_influxdb(status))[0]


def test_node_problems_each_say_what_to_do() -> None:
    lost = doctor.check_node(node(state="lost", silent_for=12.0), 1.0)
    assert problems(lost) == ["node node1 is lost: silent for 12s — is ptap-agent running on "
                              "node1? see its log (var/log/agent.log for the local one; "
                              "scripts/start-all restarts it)"]
    paranoid = problems(doctor.check_node(node(facts={"perf_paranoid": 3}), 1.0))
    assert paranoid == ["node node1: kernel.perf_event_paranoid is 3, which refuses perf to "
                        "every unprivileged process — on node1, as root: sysctl -w "
                        "kernel.perf_event_paranoid=2 (and put it in /etc/sysctl.d/ to keep "
                        "it), then restart ptap-agent"]
    behind = problems(doctor.check_node(node(clock_offset=2.5), 1.0))
    assert behind == ["node node1: its clock is 2.500 s behind the manager's, more than the "
                      "1 s sampling interval: its samples are misplaced on a multi-node "
                      "timeline — synchronise the clocks of node1 and the manager (chrony or "
                      "systemd-timesyncd)"]
    assert "ahead of" in problems(doctor.check_node(node(clock_offset=-0.3), 0.2))[0]
    assert problems(doctor.check_node(node(clock_offset=0.9), 1.0)) == []
    assert problems(doctor.check_node(node(clock_offset=None), 1.0)) == []


def test_node_warnings_and_notes() -> None:
    def kinds(n: dict[str, Any]) -> list[tuple[Severity, str]]:
        return [(f.severity, f.text) for f in doctor.check_node(n, 1.0)[1:]]

    assert kinds(node()) == []
    no_perf = kinds(node(facts={"perf_available": False, "pmu_hardware": False}))
    assert no_perf == [(Severity.WARN, "node node1: perf is not available, so the perf "
                        "collector gathers nothing")]
    no_pmu = kinds(node(facts={"pmu_hardware": False}))
    assert [k for k, _ in no_pmu] == [Severity.NOTE] and "usual in a VM" in no_pmu[0][1]
    backlog = kinds(node(spool_depth=40, samples_dropped=7))
    assert backlog == [
        (Severity.WARN, "node node1 holds 40 metric batches the manager has not acked yet"),
        (Severity.WARN, "node node1 dropped 7 samples since its agent started (its spool "
                        "overflowed while the manager or InfluxDB was away)")]
    drops = kinds(node(app_dropped=1109))
    assert drops == [(Severity.WARN, "node node1: the kernel dropped 1109 app metric datagrams "
                                     "since its agent started (its UDP buffer filled while the "
                                     "agent was not reading)")]
    assert "app datagrams dropped 1109" in doctor.check_node(node(app_dropped=1109), 1.0)[0].text
    older = node(spool_depth=None, samples_dropped=None, clock_offset=None)
    assert doctor.check_node(older, 1.0)[0].text == (
        "node node1: ready, agent 0.1.0, perf hw+sw (paranoid 2), clock -")
    assert doctor.check_nodes([], STATUS)[0].severity is Severity.WARN


def test_pending_keys_are_problems() -> None:
    assert problems(doctor.check_keys({**STATUS, "pending_keys": ["node2"]})) == [
        "the agent key of node node2 is pending: that agent cannot register — compare it with "
        "the agent's log (ptap keys list), then ptap keys accept node2 (or ptap keys reject "
        "node2)"]
    assert doctor.check_keys({**STATUS, "pending_keys": None}) == []


def test_dashboard_checks() -> None:
    gone = healthy(dashboard=None, dashboard_error="no answer (Connection refused)")
    assert problems(doctor.check_dashboard(gone)) == [
        "dashboard http://127.0.0.1:5006/: no answer (Connection refused) — is ptap-dashboard "
        "running? (scripts/start-all starts the local one; see its log)"]
    feed = healthy(dashboard={"feed_problem": "the manager at tcp://h:2 uses CURVE and the "
                                              "dashboard does not — set it"})
    assert problems(doctor.check_dashboard(feed)) == [
        "dashboard http://127.0.0.1:5006/: the manager at tcp://h:2 uses CURVE and the "
        "dashboard does not — set it"]
    unchecked = doctor.check_dashboard(healthy(dashboard_url=None, dashboard=None))
    assert [f.severity for f in unchecked] == [Severity.NOTE]


def test_json_report_counts_and_keeps_the_facts() -> None:
    facts = healthy(nodes=[node(state="lost")])
    findings = doctor.check(facts)
    doc = json.loads(json.dumps(doctor.report(facts, findings)))
    assert (doc["ok"], doc["problems"], doc["warnings"]) == (False, 1, 0)
    assert doc["findings"][2]["severity"] == "fail" and " — " in doc["findings"][2]["line"]
    assert doc["facts"]["nodes"][0]["state"] == "lost"
    assert doctor.text(findings).splitlines()[-1] == "1 problem, 0 warnings"
    assert doctor.text(findings).splitlines()[2].startswith("FAIL  node node1 is lost")
