"""``ptap doctor``: is the cluster healthy, and if not, what to do about each problem.

:mod:`manager.cli.doctor_gather` asks the cluster what it knows about itself
(:class:`Facts`): the manager's ``status.get`` (its version, CURVE, and
InfluxDB tried with the manager's own credentials), ``nodes.list`` (each
node's state and facts, and what its heartbeats report: clock offset, spool
depth, dropped samples), the keys waiting for acceptance, and the dashboard's
``/api/status``. The checks here are pure functions from those facts to
:class:`Finding` lines, so each is tested without a cluster. Every problem is
one line, ``what is wrong — what to do``; the exit status is 1 when any
finding is a failure, else 0. ``--json`` prints the findings and the facts.

Severities: ``fail`` (something is wrong: exit 1), ``warn`` (worth fixing,
nothing is broken yet), ``note`` (how things are, e.g. no PMU in a VM), ``ok``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from bus.errors import ErrorCode
from bus.states import NodeState
from manager.cli import render
from manager.cli.doctor_facts import Facts as Facts
from manager.cli.session import EXIT_FAILURE, Session

#: Metric batches an agent may hold unacked before it is worth a line: it keeps
#: one or two in flight at any time.
SPOOL_BACKLOG = 10
#: perf_event_paranoid from which perf is refused to every unprivileged process.
PARANOID_BLOCKS = 3


class Severity(StrEnum):
    OK = "ok"
    NOTE = "note"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the diagnosis: ``check`` (manager, influxdb, node, keys,
    dashboard) about ``subject``; ``text`` says what is, ``fix`` what to do."""

    check: str
    subject: str
    severity: Severity
    text: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.text} — {self.fix}" if self.fix else self.text


# --- the checks -----------------------------------------------------------------------


def check(facts: Facts) -> list[Finding]:
    """Every finding, manager first (the others depend on reaching it)."""
    found = check_manager(facts)
    if facts.status is not None:
        found += check_influxdb(facts.status)
    if facts.nodes is not None:
        found += check_nodes(facts.nodes, facts.status or {})
    if facts.status is not None:
        found += check_keys(facts.status)
    return found + check_dashboard(facts)


def check_manager(facts: Facts) -> list[Finding]:
    """Reachable, the CURVE handshake, and the same version as this CLI."""
    where = facts.manager
    if facts.status is None and facts.nodes is None:
        return [Finding("manager", where, Severity.FAIL, *_unreachable(facts))]
    if facts.status is None:  # answers requests, but not status.get
        return [Finding("manager", where, Severity.WARN,
                        f"manager {where} answers, but not status.get ({facts.manager_error}): "
                        "InfluxDB and keys are not checked",
                        "upgrade the manager to this CLI's ptap version")]
    status = facts.status
    how = f"over CURVE ({_keys(facts)})" if status.get("curve") else "without CURVE"
    out = [Finding("manager", where, Severity.OK,
                   f"manager {where}: answers {how}; ptap {status.get('version') or '?'}, "
                   f"protocol {status.get('protocol')}")]
    if not status.get("curve"):
        out.append(Finding("manager", where, Severity.WARN,
                           f"manager {where} does not use CURVE: anyone who reaches it can "
                           "run commands on every node",
                           "set [security] curve = yes in server.cfg (see README, Security)"))
    version = status.get("version") or ""
    if version and facts.cli_version and version != facts.cli_version:
        out.append(Finding("manager", where, Severity.WARN,
                           f"manager {where} runs ptap {version}, this CLI {facts.cli_version}",
                           "install the same ptap version on both"))
    return out


def _unreachable(facts: Facts) -> tuple[str, str]:
    """(what, fix) for a manager that did not answer, from how far the handshake got."""
    where, hs = facts.manager, facts.handshake
    outcome, keys = hs.get("outcome"), facts.keys_dir
    if outcome == "no-connection":
        return (f"manager {where}: nothing accepts a connection there",
                "is ptap-manager running? (scripts/start-all starts the local one; "
                "see server.cfg [basic] bind_addr and bind_port, or pass --manager)")
    if outcome == "mechanism-mismatch" and keys:
        return (f"manager {where} does not use CURVE, but this CLI does ({_keys(facts)})",
                "pass --keys '' for a manager without CURVE, or set [security] curve = yes "
                "on the manager")
    if outcome in ("mechanism-mismatch", "failed") and not keys:
        return (f"manager {where} closed the connection during the handshake: it uses "
                "CURVE, and this CLI has no admin key for it",
                "pass --keys DIR (the manager's keys_dir), or copy its server.key, "
                "admin.key and admin.key_secret to ~/.config/ptap/keys")
    if outcome == "refused":
        return (f"manager {where} refused this CLI's key ({_keys(facts)}; ZAP status "
                f"{hs.get('value')})", "use the manager's admin key (keys_dir/admin.key_secret)")
    if outcome == "not-zmtp":
        return (f"manager {where} broke the ZeroMQ handshake ({hs.get('code')})",
                "is that port a ptap manager's ROUTER (its PUB is the next one)? "
                "see --manager")
    if outcome == "no-handshake":
        return (f"manager {where}: a connection, but no ZeroMQ handshake",
                "is that port a ptap manager's ROUTER (its PUB is the next one)? "
                "see --manager")
    if outcome == "failed":
        return (f"the CURVE handshake with manager {where} failed: {keys}/server.key is not "
                "its key", "copy the manager's keys_dir/server.key (with admin.key and "
                "admin.key_secret), or pass --keys with its keys_dir")
    if facts.manager_error.startswith(ErrorCode.NOT_AUTHORIZED):
        return (f"manager {where} refused this CLI's key ({_keys(facts)}): it is not an "
                "administrator's",
                "use the manager's admin key (keys_dir/admin.key_secret), or add its "
                "public half to the manager's keys_dir/clients/")
    return (f"manager {where}: {facts.manager_error or 'no answer'}",
            "see the manager's log (var/log/manager.log for the local cluster)")


def _keys(facts: Facts) -> str:
    """Which keys this CLI used, and where it found them when nobody named them."""
    found = facts.keys_from not in ("", "--keys", "PTAP_KEYS")
    return f"keys in {facts.keys_dir}" + (f", found as {facts.keys_from}" if found else "")


def check_influxdb(status: dict[str, Any]) -> list[Finding]:
    """The manager's own write and read of InfluxDB, with its configured credentials."""
    db = status.get("influxdb") or {}
    where = f"InfluxDB {db.get('url', '?')} (database {db.get('database', '?')})"
    out = []
    for verb, key in (("write to", "write_error"), ("read from", "read_error")):
        error = db.get(key) or ""
        if error:
            out.append(Finding("influxdb", where, Severity.FAIL,
                               f"the manager cannot {verb} {where}: {error}",
                               _influx_fix(error)))
    if not out:
        queued = db.get("queued_points") or 0
        out.append(Finding("influxdb", where, Severity.OK,
                           f"{where}: the manager writes and reads"
                           + (f" ({queued} points queued)" if queued else "")))
    return out[:1] if len(out) == 2 and out[0].fix == out[1].fix else out


def _influx_fix(error: str) -> str:
    lower = error.lower()
    if "refused" in lower or "no answer" in lower or "timed out" in lower:
        return ("is influxd running? (scripts/start-all starts the local one; "
                "else see server.cfg [influxdb] url)")
    if "authoriz" in lower or "authentica" in lower or "401" in lower or "403" in lower:
        return ("check server.cfg [influxdb] username and password (or PTAP_INFLUXDB_*), "
                "and that user's READ and WRITE rights on the database")
    if "not found" in lower:
        return "create the database, or fix server.cfg [influxdb] database"
    return "see the manager's log and server.cfg [influxdb]"


def check_keys(status: dict[str, Any]) -> list[Finding]:
    """Agent keys waiting for ``ptap keys accept`` (CURVE only)."""
    pending = status.get("pending_keys")
    if pending is None:
        return []
    if not pending:
        return [Finding("keys", "", Severity.OK, "agent keys: none pending")]
    return [Finding("keys", str(node), Severity.FAIL,
                    f"the agent key of node {node} is pending: that agent cannot register",
                    f"compare it with the agent's log (ptap keys list), then "
                    f"ptap keys accept {node} (or ptap keys reject {node})")
            for node in pending]


def check_nodes(nodes: Sequence[Mapping[str, Any]], status: dict[str, Any]) -> list[Finding]:
    """Each node; a cluster with none is worth a line too."""
    if not nodes:
        return [Finding("node", "", Severity.WARN, "no node has registered",
                        "start ptap-agent --server HOST:PORT on each test node")]
    interval = float(status.get("interval") or 1.0)
    version = status.get("version") or ""
    out: list[Finding] = []
    for node in sorted(nodes, key=lambda n: str(n.get("name", ""))):
        out += check_node(node, interval, version)
    return out


def check_node(node: Mapping[str, Any], interval: float, manager_version: str = ""
               ) -> list[Finding]:
    """State, agent version, perf and PMU, clock offset, spool and dropped samples."""
    name = str(node.get("name", "?"))
    facts = node.get("facts") or {}
    if node.get("state") == NodeState.LOST:
        return [Finding("node", name, Severity.FAIL,
                        f"node {name} is lost: silent for {render.span(node.get('silent_for'))}",
                        f"is ptap-agent running on {name}? see its log "
                        "(var/log/agent.log for the local one; scripts/start-all restarts it)")]
    out = [_node_summary(node)]
    agent = facts.get("agent_version") or ""
    if agent and manager_version and agent != manager_version:
        out.append(Finding("node", name, Severity.WARN,
                           f"node {name} runs agent {agent}, the manager {manager_version}",
                           "install the same ptap version on both"))
    out += _perf(name, facts)
    out += _clock(name, node.get("clock_offset"), interval)
    out += _backlog(name, node.get("spool_depth"), node.get("samples_dropped"))
    out += _app_drops(name, node.get("app_dropped"))
    return out


def _node_summary(node: Mapping[str, Any]) -> Finding:
    facts = node.get("facts") or {}
    parts = [str(node.get("state")), f"agent {facts.get('agent_version') or '?'}",
             f"perf {render.perf_capability(facts)}",
             f"clock {render.clock_offset(node.get('clock_offset'))}"]
    if node.get("spool_depth") is not None:
        parts.append(f"spool {node['spool_depth']}")
    if node.get("samples_dropped") is not None:
        parts.append(f"dropped {node['samples_dropped']}")
    if node.get("app_dropped"):
        parts.append(f"app datagrams dropped {node['app_dropped']}")
    return Finding("node", str(node.get("name")), Severity.OK,
                   f"node {node.get('name')}: {', '.join(parts)}")


def _perf(name: str, facts: dict[str, Any]) -> list[Finding]:
    paranoid = facts.get("perf_paranoid")
    if isinstance(paranoid, int) and paranoid >= PARANOID_BLOCKS:
        return [Finding("node", name, Severity.FAIL,
                        f"node {name}: kernel.perf_event_paranoid is {paranoid}, which refuses "
                        "perf to every unprivileged process",
                        f"on {name}, as root: sysctl -w kernel.perf_event_paranoid=2 (and put "
                        "it in /etc/sysctl.d/ to keep it), then restart ptap-agent")]
    if not facts.get("perf_available"):
        return [Finding("node", name, Severity.WARN,
                        f"node {name}: perf is not available, so the perf collector "
                        "gathers nothing",
                        f"install perf on {name} (Debian: apt-get install linux-perf), "
                        "then restart ptap-agent")]
    if not facts.get("pmu_hardware"):
        return [Finding("node", name, Severity.NOTE,
                        f"node {name}: no hardware PMU counters (usual in a VM): cycles, "
                        "instructions and IPC are not collected")]
    return []


def _clock(name: str, offset: Any, interval: float) -> list[Finding]:
    if not isinstance(offset, (int, float)) or abs(offset) <= interval:
        return []
    how = "behind" if offset > 0 else "ahead of"
    return [Finding("node", name, Severity.FAIL,
                    f"node {name}: its clock is {abs(offset):.3f} s {how} the manager's, more "
                    f"than the {interval:g} s sampling interval: its samples are misplaced on "
                    "a multi-node timeline",
                    f"synchronise the clocks of {name} and the manager (chrony or "
                    "systemd-timesyncd)")]


def _backlog(name: str, spool: Any, dropped: Any) -> list[Finding]:
    out = []
    if isinstance(spool, int) and spool > SPOOL_BACKLOG:
        out.append(Finding("node", name, Severity.WARN,
                           f"node {name} holds {spool} metric batches the manager has not "
                           "acked yet", "see the InfluxDB line above and the manager's log"))
    if isinstance(dropped, int) and dropped > 0:
        out.append(Finding("node", name, Severity.WARN,
                           f"node {name} dropped {dropped} samples since its agent started "
                           "(its spool overflowed while the manager or InfluxDB was away)",
                           "raise [spool] max_batches in its agentclient.cfg if such "
                           "outages are expected"))
    return out


def _app_drops(name: str, dropped: Any) -> list[Finding]:
    if not (isinstance(dropped, int) and dropped > 0):
        return []
    return [Finding("node", name, Severity.WARN,
                    f"node {name}: the kernel dropped {dropped} app metric datagrams since its "
                    "agent started (its UDP buffer filled while the agent was not reading)",
                    "raise [collectors] app_rcvbuf in its agentclient.cfg, or have the "
                    "program send to the lossless stream endpoint (PTAP_METRICS_STREAM)")]


def check_dashboard(facts: Facts) -> list[Finding]:
    """Reachable, and the problem of its feed from the manager, if any."""
    url = facts.dashboard_url
    if not url:
        return [Finding("dashboard", "", Severity.NOTE,
                        "dashboard: not checked (no local one found)",
                        "pass --dashboard URL to check one")]
    if facts.dashboard is None:
        return [Finding("dashboard", url, Severity.FAIL,
                        f"dashboard {url}: {facts.dashboard_error or 'no answer'}",
                        "is ptap-dashboard running? (scripts/start-all starts the local one; "
                        "see its log)")]
    problem = str(facts.dashboard.get("feed_problem") or "")
    if problem:
        return [Finding("dashboard", url, Severity.FAIL, f"dashboard {url}: {problem}")]
    sessions = sum(v for v in (facts.dashboard.get("sessions") or {}).values()
                   if isinstance(v, int))
    return [Finding("dashboard", url, Severity.OK,
                    f"dashboard {url}: serving ({sessions} open sessions), its feed from the "
                    "manager has no problem")]


# --- the command ----------------------------------------------------------------------


async def cmd_doctor(session: Session, args: argparse.Namespace) -> int:
    """``ptap doctor [--dashboard URL] [--json]``: every check, one line each; exit 1
    when something is wrong."""
    from manager.cli.doctor_gather import gather  # the I/O half; the checks need none

    local = session.target.local
    url = args.dashboard or (local.dashboard_url(os.environ) if local is not None else None)
    facts = await gather(session, url)
    findings = check(facts)
    failed = sum(f.severity is Severity.FAIL for f in findings)
    print(render.to_json(report(facts, findings)) if args.json else text(findings), flush=True)
    return EXIT_FAILURE if failed else 0


def report(facts: Facts, findings: list[Finding]) -> dict[str, Any]:
    """The ``--json`` form: ``{"ok", "problems", "warnings", "findings", "facts"}``."""
    return {"ok": not any(f.severity is Severity.FAIL for f in findings),
            "problems": sum(f.severity is Severity.FAIL for f in findings),
            "warnings": sum(f.severity is Severity.WARN for f in findings),
            "findings": [{**asdict(f), "line": f.line()} for f in findings],
            "facts": asdict(facts)}


def text(findings: list[Finding]) -> str:
    """One line per finding, its severity first, then a count of problems."""
    lines = [f"{f.severity.value.upper() if f.severity is Severity.FAIL else f.severity.value:5} "
             f"{f.line()}" for f in findings]
    failed = sum(f.severity is Severity.FAIL for f in findings)
    warned = sum(f.severity is Severity.WARN for f in findings)
    if failed:
        lines.append(f"{failed} problem{'s' * (failed != 1)}, {warned} warning"
                     f"{'s' * (warned != 1)}")
    else:
        lines.append("no problems" + (f", {warned} warning{'s' * (warned != 1)}"
                                      if warned else ""))
    return "\n".join(lines)
