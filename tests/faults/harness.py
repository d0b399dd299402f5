"""One fault scenario's cluster, workload and measurements (the numbered-app-points method).

A :class:`FaultRun` is a real manager and one real agent (node ``f-<scenario>``)
writing to a real influxd, from :class:`tests.integration.conftest.Cluster`.
Its job (``tests/faults/workload.py``) sends ``count`` numbered ``app`` points
through the agent's app endpoint; InfluxDB is then asked exactly which numbers
it holds. The scenario injects its fault between :meth:`FaultRun.submit` and
:meth:`FaultRun.finish`, marking when the fault ended with :meth:`FaultRun.cleared`.

:meth:`FaultRun.finish` returns an :class:`Outcome`: K sent, N stored (and the
first numbers missing), kernel UDP drops the agent reported, the largest gap in
the node's ``cpu`` series over the job's lifetime, the drain time (from the end
of the fault, or of the run if later, until InfluxDB held every point), the
job's final state, how long the node took to be up again (``ready`` or
``busy``), and the daemons that died without the scenario killing them.

Polls (job and node state, counts) go through the manager's client and
InfluxDB's HTTP API in this process, once every :data:`POLL` s: several
scenarios run at once on a small host, and a ``ptap`` process per poll would
cost more than the clusters. The final job state is read with ``ptap job``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import zmq.asyncio

from bus.client import ManagerClient
from bus.errors import PtapError
from tests.conftest_influx import InfluxFixture
from tests.faults.host_stalls import HostStalls
from tests.faults.netns import HostManagerProc, NetNs
from tests.integration.conftest import Cluster, Daemon, wait_for

WORKLOAD = str(Path(__file__).with_name("workload.py"))
POLL = 0.25
JOB_FINAL = frozenset({"succeeded", "failed", "cancelled", "lost"})
#: How a run's ``error`` states its kernel drops (agent/runner.py, ``RunReport``).
DROPS_SAID = re.compile(r"(\d+) app metric datagram\(s\) dropped by the kernel")
NODE_UP = frozenset({"ready", "busy"})  # busy: registered, with the workload running
#: After the fault and the workload have ended, every point must be stored within this.
DRAIN_TIMEOUT = 90.0
T = TypeVar("T")


def poll(predicate: Callable[[], T | None], timeout: float, what: str,
         interval: float = POLL) -> T:
    """``predicate()`` until it returns something true, every ``interval`` s, or fail
    (the integration tests' ``wait_for``, at the faults' pace)."""
    return wait_for(predicate, timeout, what, interval)


def manager_call(address: str, method: str, *args: Any) -> Any:
    """One request through :class:`bus.client.ManagerClient`; None if it went unanswered."""
    async def call() -> Any:
        ctx = zmq.asyncio.Context()
        try:
            async with ManagerClient(f"tcp://{address}", timeout=2.0, ctx=ctx) as client:
                return await getattr(client, method)(*args)
        finally:
            ctx.destroy(linger=0)

    try:
        return asyncio.run(call())
    except PtapError:
        return None


@dataclass
class Outcome:
    """What one fault did to the numbered points, the job and the daemons."""

    name: str
    fault: str
    sent: int = 0
    stored: int = 0
    missing: list[int] = field(default_factory=list)  # the first few numbers not stored
    udp_drops: int | None = None  # datagrams the kernel dropped, as the agent counted them
    per_datagram: int = 0  # points per datagram (0: the stream endpoint, no datagrams)
    cpu_gap: float | None = None  # seconds, largest gap in the node's cpu series
    #: seconds, the largest such gap less the time the whole host was frozen within it
    #: (see tests/faults/host_stalls.py): what the agent's own loop is answerable for
    cpu_gap_own: float | None = None
    drain: float | None = None  # seconds, end of the fault or the run → every point stored
    backlog: float | None = None  # seconds, end of the fault → what was sent before stored
    job_state: str = "?"
    expected_state: str = "succeeded"
    node_return: float | None = None  # seconds, end of fault → node ready again
    fault_s: float | None = None  # seconds the fault lasted (when it was held)
    deaths: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)  # deaths a supervisor undid
    notes: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.stored

    def line(self) -> str:
        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"

        drops = ("stream, no datagrams" if not self.per_datagram else "not reported"
                 if self.udp_drops is None else f"{self.udp_drops} datagrams of "
                 f"{self.per_datagram} points")
        held = "" if self.fault_s is None else f" (held {self.fault_s:.1f} s)"
        deaths = f"{len(self.deaths)}" + "".join(f"; {d}" for d in self.deaths)
        parts = [f"K sent {self.sent}", f"N stored {self.stored} (lost {self.lost}, "
                 f"kernel UDP drops: {drops})", f"largest cpu gap {sec(self.cpu_gap)}{self._frozen()}",
                 f"backlog stored {sec(self.backlog)} after the fault",
                 f"drain {sec(self.drain)}", f"node back {sec(self.node_return)}",
                 f"job {self.job_state} (want {self.expected_state})",
                 f"daemon deaths {deaths}"]
        parts += [f"supervisor restarts: {'; '.join(self.restarts)}"] if self.restarts else []
        notes = f" [{'; '.join(self.notes)}]" if self.notes else ""
        return f"{self.name}: {self.fault}{held}: " + ", ".join(parts) + notes

    def _frozen(self) -> str:
        if self.cpu_gap is None or self.cpu_gap_own is None \
                or self.cpu_gap_own >= self.cpu_gap - 0.05:
            return ""
        return f" (the host froze for {self.cpu_gap - self.cpu_gap_own:.1f} s of the largest)"

    def problems(self, max_cpu_gap: float | None = None,
                 max_node_return: float | None = None,
                 max_backlog: float | None = None) -> list[str]:
        """What the issue says must not happen, one line each."""
        out = []
        counted = (self.udp_drops or 0) * self.per_datagram
        if self.lost > counted:
            out.append(f"{self.lost} of {self.sent} points lost, {counted} of them counted as "
                       f"dropped by the kernel (first missing: {self.missing[:10]})")
        if self.job_state != self.expected_state:
            out.append(f"job ended {self.job_state}, not {self.expected_state}")
        out += [f"daemon died: {d}" for d in self.deaths]
        if max_cpu_gap is not None and (self.cpu_gap_own is None
                                        or self.cpu_gap_own > max_cpu_gap):
            out.append(f"largest cpu gap while the host ran {self.cpu_gap_own} s "
                       f"> {max_cpu_gap} s")
        if max_node_return is not None and (self.node_return is None
                                            or self.node_return > max_node_return):
            out.append(f"node ready again after {self.node_return} s > {max_node_return} s")
        if max_backlog is not None and (self.backlog is None or self.backlog > max_backlog):
            out.append(f"what was sent before the fault stored {self.backlog} s after it, "
                       f"> {max_backlog} s")
        return out

    def save(self, folder: Path) -> None:
        doc = {k: v for k, v in asdict(self).items() if k != "logs"}
        (folder / f"{self.name}.json").write_text(json.dumps(doc, indent=1))


class FaultRun:
    """A cluster (manager + agent ``f-NAME``) on ``influx`` and its numbered-point job."""

    def __init__(self, name: str, fault: str, tmp: Path, influx: InfluxFixture, database: str,
                 *, rate: float, seconds: float, stream: bool = False,
                 host: HostStalls | None = None) -> None:
        self.influx, self.db = influx, database
        self.host = host  # the host's own freezes, taken out of the cpu gaps
        self.stream = stream  # the lossless stream endpoint instead of UDP datagrams
        self.per_datagram = max(1, round(rate * 0.01))  # 100 datagrams/s
        self.node = f"f-{name.replace('_', '-')}"
        self.rate, self.seconds = rate, seconds
        self.count = int(rate * seconds)
        self.outcome = Outcome(name, fault, sent=self.count,
                               per_datagram=0 if stream else self.per_datagram)
        self.cluster = Cluster(tmp, self.outcome.logs, influx.url, database)
        self.job = ""
        self.t_submit = self.t_cleared = self.t_fault = self.wall_cleared = 0.0
        self.ns_submit = 0
        self.pids: dict[str, int] = {}
        self.agent_prefix: list[str] = []
        self.agent_args: list[str] = []  # more agent flags, e.g. ["--set", "S.K=V"]
        self._backlog: threading.Thread | None = None
        self._finished = False

    # --- set-up ------------------------------------------------------------------

    def in_namespace(self, ns: NetNs) -> None:
        """Before :meth:`start`: the manager on the veth's host side, the agent inside ``ns``."""
        manager = self.cluster.manager
        self.cluster.manager = HostManagerProc(ns.host_ip, manager.cwd, self.influx.url, self.db)
        self.agent_prefix = ns.exec_prefix()

    def start(self) -> None:
        """Database, manager and agent, the node ready."""
        self.influx.create_database(self.db)
        self.cluster.manager.start()
        agent = self.cluster.add_agent(self.node, wait=False)
        if self.agent_prefix or self.agent_args:
            # Cluster starts it as it is; killed within milliseconds of its exec (long
            # before Python has imported ZeroMQ, let alone connected), started again
            # inside the namespace or with the scenario's settings.
            agent.kill()
            agent.argv = [*self.agent_prefix, *agent.argv, *self.agent_args]
            agent.spawn()
        self.wait_node(frozenset({"ready"}), 30.0)
        self.remember_pids()

    def remember_pids(self) -> None:
        """The daemons' pids as they are now: a change later is a death (see :meth:`deaths`)."""
        self.pids = {d.name: d.pid for d in self.daemons()}

    def daemons(self) -> list[Daemon]:
        return [self.cluster.manager, *self.cluster.agents.values()]

    def submit(self) -> str:
        """Start the workload on the node (the real CLI); returns the job id."""
        self.t_submit, self.ns_submit = time.monotonic(), time.time_ns()
        how = ["--stream"] if self.stream else ["--per-datagram", str(self.per_datagram)]
        rc, out, err = self.cluster.cli(
            "run", "--nodes", self.node, "--collect", "system,app", "--",
            sys.executable, WORKLOAD, str(self.count), str(self.rate), *how)
        assert rc == 0, f"ptap run exited {rc}: {err}"
        self.job = out.split()[0]
        return self.job

    def wait_flowing(self, timeout: float = 30.0) -> None:
        """Until InfluxDB holds the job's first points: the fault hits a flowing pipeline."""
        poll(lambda: self.stored() > 0, timeout, f"{self.node}'s first points")

    def at(self, seconds: float) -> None:
        """Wait until ``seconds`` after the submit (the scenario's timeline)."""
        pause = self.t_submit + seconds - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # wait-ok: the fault's place in the workload's timeline

    def hold(self, seconds: float) -> None:
        """Keep the fault just made for ``seconds`` (from now, whenever it began)."""
        self.t_fault = time.monotonic()
        time.sleep(seconds)  # wait-ok: the fault's length, as the issue states it

    def cleared(self) -> None:
        """The fault is over: drain and return times count from now, and a thread
        times how soon InfluxDB holds what was sent before (see :meth:`_time_backlog`)."""
        self.t_cleared, self.wall_cleared = time.monotonic(), time.time()
        if self.t_fault:
            self.outcome.fault_s = self.t_cleared - self.t_fault
        self._backlog = threading.Thread(target=self._time_backlog, daemon=True,
                                         name=f"backlog {self.node}")
        self._backlog.start()

    def _time_backlog(self) -> None:
        """Seconds from the fault's end until InfluxDB holds the points sent before it,
        but for the last two collect intervals' (the run's start as the agent stamped it)."""
        job = manager_call(self.cluster.manager.address, "job", self.job)
        starts = [float(r.get("started_at") or 0) for r in (job or {}).get("runs", [])]
        if not starts or not min(starts):
            return
        sent = min(self.count, int(self.rate * (self.wall_cleared - min(starts) - 2.0)))
        def reached() -> str | None:
            # Until finish() has counted everything: points the kernel dropped never come.
            return "stored" if self.stored() >= sent else "gave up" if self._finished else None

        try:
            why = poll(reached, DRAIN_TIMEOUT, f"{sent} points stored")
        except AssertionError as exc:
            self.outcome.notes.append(f"backlog: {exc}")
            return
        if why == "stored":
            self.outcome.backlog = time.monotonic() - self.t_cleared

    # --- state ----------------------------------------------------------------------

    def node_state(self) -> str | None:
        nodes = manager_call(self.cluster.manager.address, "nodes")
        return next((n["state"] for n in nodes or [] if n["name"] == self.node), None)

    def wait_node(self, states: frozenset[str], timeout: float) -> float:
        """Seconds until the node is in one of ``states``."""
        t0 = time.monotonic()
        poll(lambda: self.node_state() in states, timeout,
             f"node {self.node} {'/'.join(sorted(states))}")
        return time.monotonic() - t0

    def wait_back(self, timeout: float = 60.0) -> None:
        """After the fault: the seconds until the node is up again go in the outcome."""
        self.outcome.node_return = self.wait_node(NODE_UP, timeout)

    def job_state(self) -> str | None:
        job = manager_call(self.cluster.manager.address, "job", self.job)
        return None if job is None else str(job["state"])

    def stored(self) -> int:
        rows = self.influx.query(self.db, "SELECT count(\"value\") FROM app WHERE "
                                 f"job = '{self.job}' AND \"name\" = 'faultseq'")
        return int(rows[0]["count"]) if rows else 0

    def missing(self, limit: int = 20) -> list[int]:
        rows = self.influx.query(self.db, "SELECT \"value\" FROM app WHERE "
                                 f"job = '{self.job}' AND \"name\" = 'faultseq'")
        have = {int(r["value"]) for r in rows}
        return [i for i in range(self.count) if i not in have][:limit]

    def cpu_gaps(self, t_end_ns: int) -> tuple[float, float]:
        """The largest gap (s) between the node's ``cpu`` samples from the submit to
        ``t_end_ns``, and the largest once the host's own freezes are taken out of each."""
        rows = self.influx.query(
            self.db, f"SELECT \"idle\" FROM cpu WHERE node = '{self.node}' AND cpu = 'total' "
                     f"AND time >= {self.ns_submit} AND time <= {t_end_ns}")
        times = [self.ns_submit, *sorted(int(r["time"]) for r in rows), t_end_ns]
        gaps = list(zip(times, times[1:], strict=False))
        raw = max(b - a for a, b in gaps) / 1e9
        if self.host is None:
            return raw, raw
        return raw, max((b - a) / 1e9 - self.host.within(a, b) for a, b in gaps)

    def udp_drops(self, job: dict[str, Any]) -> int | None:
        """App datagrams the kernel dropped, as the run reports them: its ``app_dropped``,
        else the count its ``error`` states; None when the run reports no count (a
        clean run says nothing: then the ``agent`` measurement's ``app_dropped``)."""
        counts = [r["app_dropped"] for r in job.get("runs", [])
                  if r.get("app_dropped") is not None]
        said = [int(m) for r in job.get("runs", [])
                for m in DROPS_SAID.findall(str(r.get("error") or ""))]
        if counts or said:
            return int(sum(counts or said))
        rows = self.influx.query(
            self.db, f"SELECT max(\"app_dropped\") FROM agent WHERE node = '{self.node}' "
                     f"AND time >= {self.ns_submit}")
        return int(rows[0]["max"]) if rows and rows[0].get("max") is not None else None

    def deaths(self) -> list[str]:
        """Daemons that are not the process :meth:`remember_pids` saw."""
        out = []
        for daemon in self.daemons():
            was = self.pids.get(daemon.name)
            if not daemon.alive:
                code = daemon.proc.returncode if daemon.proc else None
                out.append(f"{daemon.name} (pid {daemon.pid}) exited with {code}")
            elif was is not None and was != daemon.pid:
                out.append(f"{daemon.name} pid {was} was replaced by {daemon.pid}")
        return out

    # --- the end ------------------------------------------------------------------

    def finish(self, job_timeout: float = 120.0) -> Outcome:
        """Wait for the job and every point, then fill in and return the outcome.

        Every point means every point the agent did not report dropped by the kernel:
        the wait ends when those are stored (the problems are judged afterwards)."""
        o = self.outcome
        if not self.t_cleared:
            self.cleared()
        poll(lambda: self.job_state() in JOB_FINAL, job_timeout, f"job {self.job} to end")
        t_end_ns = time.time_ns()
        job = self.cluster.job(self.job)  # the CLI, as a user reads it
        o.job_state = str(job["state"])
        o.udp_drops = None if self.stream else self.udp_drops(job)
        expected = self.count - (o.udp_drops or 0) * o.per_datagram
        # From the fault's end, or the run's (as the agent stamped it) if later.
        ended = max([float(r.get("ended_at") or 0) for r in job.get("runs", [])] or [0.0])
        start = max(self.wall_cleared, ended)
        try:
            poll(lambda: self.stored() >= expected, DRAIN_TIMEOUT, f"{expected} points stored")
            o.drain = max(0.0, time.time() - start)
        except AssertionError as exc:
            o.notes.append(str(exc))
        o.stored = self.stored()
        o.missing = self.missing() if o.stored < self.count else []
        o.cpu_gap, o.cpu_gap_own = self.cpu_gaps(t_end_ns)
        if o.job_state != o.expected_state:
            o.notes += [f"run {r.get('state')} exit {r.get('exit_code')} error "
                        f"{r.get('error')!r} stderr {str(r.get('stderr_tail'))[-300:]!r}"
                        for r in job.get("runs", [])]
        o.deaths = self.deaths()
        self._finished = True
        if self._backlog is not None:
            self._backlog.join(DRAIN_TIMEOUT)
        return o

    def stop(self) -> None:
        self.cluster.stop()
