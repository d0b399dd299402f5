"""Benchmark: what the ptap agent costs while it watches a job, beside Glances.

    .venv/bin/python scripts/bench/agent_overhead.py [--seconds 60] [--warmup 10] [--json]

docs/architecture.md#tests-and-benchmarks asks for ratios measured in the same run; the target is an agent
that costs at most 0.5 % of one core and at most a quarter of what Glances
costs when both sample every second.

The run, all on 127.0.0.1 and all started (and stopped) by this script:

* a private ``influxd`` (:class:`scripts.influxdb_local.InfluxServer`), a
  manager writing to it and one agent with ``collectors.interval=1``;
* a job with ``collect = system,process,perf`` at ``interval = 1`` whose
  command is a 20-process tree: one ``sh``, 18 ``sleep`` and one small Python
  loop that keeps ~10 % of a core busy (``--load``), so the process and perf
  collectors have real numbers to read and the tree does not sit idle;
* Glances, installed from PyPI into its own virtualenv
  (``~/.cache/ptap-bench/glances-venv``, reused when it works), run as
  ``glances --quiet --time 1 --export csv``: no UI, and every plugin (cpu,
  per-CPU, mem, swap, load, network, disk I/O, file systems, the full process
  list, ...) is updated and exported each second, like the agent's work.

After ``--warmup`` seconds both are measured over the same ``--seconds``
window: CPU time is ``user + system`` from ``psutil`` (all threads) over wall
time, as a percent of one core. The agent is reported alone and with its
``perf stat`` children (live ones read directly, restarted ones through the
agent's ``children_user/system``); the job's own tree is not counted. RSS is
the mean of 1 Hz readings. A sanity check then reads InfluxDB to show the
agent really wrote ``proc`` rows for all 20 pids, ``perf`` and ``cpu`` rows
during the window, and counts Glances' CSV rows.

Reading the figures: the kernel accounts CPU time in 10 ms ticks, so a 60 s
window resolves about 0.02 % of a core. Other load on the host inflates both
programs' CPU time (cache misses, a vCPU preempted mid-tick), and more host
processes make both scan more of ``/proc``; the table shows how busy the host
was and how many processes it had, and only the ratio is comparable between
machines.

If Glances cannot be installed, the pip error is printed and the ptap
figures are still measured. The whole run has a hard time limit
(``--time-limit``); every process and temporary directory it made is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import zmq.asyncio  # noqa: E402

from bus.client import ManagerClient  # noqa: E402
from bus.messages import JobSpec  # noqa: E402
from scripts.influxdb_local import InfluxServer, create_database, request  # noqa: E402

NODE = "bench1"
DATABASE = "ptap"
TREE_SIZE = 20  # sh + 18 sleep + 1 load loop
TARGET_CPU_PCT = 0.5
TARGET_RATIO = 0.25
GLANCES_VENV = Path.home() / ".cache" / "ptap-bench" / "glances-venv"
PIP_TIMEOUT = 300.0
LOAD_LOOP = """\
import sys, time
duty, end = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    busy_until = time.monotonic() + 0.1 * duty
    while time.monotonic() < busy_until:
        pass
    time.sleep(0.1 * (1 - duty))
"""
TREE_SCRIPT = 'for i in $(seq 18); do sleep "$1" & done; "$2" -c "$3" "$4" "$1" & wait'


class BenchError(RuntimeError):
    """The harness could not set something up; the message says what."""


class BenchTimeout(BenchError):
    """The hard time limit (``--time-limit``) ran out."""


def say(msg: str) -> None:
    """Progress on stderr, so stdout is only the table or the JSON."""
    print(f"[agent_overhead] {msg}", file=sys.stderr, flush=True)


# --- Glances -------------------------------------------------------------------------


def ensure_glances(venv: Path) -> tuple[Path | None, str]:
    """The ``glances`` binary in ``venv`` (created and pip-installed if needed).

    Returns ``(path, version)`` or ``(None, error)``; never raises.
    """
    glances = venv / "bin" / "glances"
    version = _glances_version(glances)
    if version:
        return glances, version
    say(f"installing glances from PyPI into {venv} (pip install glances)")
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, text=True, timeout=120)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "glances"],
                       check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        tail = [ln for ln in lines if ln.startswith("ERROR")] or lines[-5:]
        return None, f"{' '.join(map(str, exc.cmd))} exited {exc.returncode}: {' | '.join(tail)}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot install glances: {exc}"
    version = _glances_version(glances)
    return (glances, version) if version else (None, f"{glances} --version failed after install")


def _glances_version(glances: Path) -> str:
    if not glances.exists():
        return ""
    try:
        out = subprocess.run([str(glances), "--version"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    first = out.strip().splitlines()[0] if out.strip() else ""
    return first.split("\t")[-1].strip() if "version" in first.lower() else ""


def glances_argv(glances: Path, csv_path: Path) -> list[str]:
    """No UI, refresh every second, export every plugin to CSV, no PyPI update check."""
    return [str(glances), "--quiet", "--time", "1", "--disable-check-update",
            "--export", "csv", "--export-csv-file", str(csv_path)]


# --- processes -----------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """Our environment without the developer's PTAP_* settings, with the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class Daemon:
    """One subprocess we started, logging to a file; :meth:`stop` ends exactly its pid."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=child_env(),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc.pid

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; reaps the process."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"{self.name} pid {self.proc.pid} ignored SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something true; BenchError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def start_manager(tmp: Path, influx_url: str) -> tuple[Daemon, str]:
    """``python -m manager.main`` on free ports; returns it and its ROUTER ``host:port``."""
    cfg, ready = tmp / "server.cfg", tmp / "manager.ready"
    cfg.write_text(f"[basic]\nbind_addr = 127.0.0.1\nbind_port = 0\n"
                   f"[influxdb]\nurl = {influx_url}\ndatabase = {DATABASE}\n"
                   f"[state]\npath = {tmp / 'manager.db'}\n"
                   f"[security]\nkeys_dir = {tmp / 'keys'}\n")
    mgr = Daemon("manager", [sys.executable, "-m", "manager.main", "--config", str(cfg),
                             "--ready-file", str(ready)], tmp / "manager.log")
    pid = mgr.start()

    def ready_info() -> dict[str, Any] | None:
        if not mgr.alive:
            raise BenchError(f"manager exited early:\n{mgr.tail()}")
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(ready.read_text())
            return info if info.get("pid") == pid else None
        return None

    info = wait_for(ready_info, 30, "the manager's ready file")
    return mgr, f"127.0.0.1:{int(info['router'])}"


def start_agent(tmp: Path, server: str) -> Daemon:
    """``python -m agent.main`` sampling every second, named :data:`NODE`."""
    cfg = tmp / "agent.cfg"
    cfg.write_text(f"[dispatcher]\nworkdir = {tmp / 'runs'}\nkill_grace = 1.0\n"
                   f"[security]\nkeys_dir = {tmp / 'agent-keys'}\n")
    agent = Daemon("agent", [sys.executable, "-m", "agent.main", "--config", str(cfg),
                             "--name", NODE, "--server", server,
                             "--set", "collectors.interval=1"], tmp / "agent.log")
    agent.start()
    return agent


# --- the manager's control API -------------------------------------------------------


def call(server: str, op: Callable[[ManagerClient], Coroutine[Any, Any, Any]]) -> Any:
    """Run one ManagerClient coroutine against ``server`` with a private ZMQ context."""

    async def go() -> Any:
        ctx = zmq.asyncio.Context()
        try:
            async with ManagerClient(f"tcp://{server}", timeout=5.0, ctx=ctx) as client:
                return await op(client)
        finally:
            ctx.destroy(linger=0)

    return asyncio.run(go())


def node_ready(server: str) -> bool:
    nodes = call(server, lambda c: c.nodes())
    return any(n["name"] == NODE and n["state"] == "ready" for n in nodes)


def submit_job(server: str, job_seconds: float, load: float) -> str:
    """Submit the 20-process job; returns its id."""
    command = ["sh", "-c", TREE_SCRIPT, "sh", f"{job_seconds:.0f}", sys.executable,
               LOAD_LOOP, f"{load:g}"]
    spec = JobSpec(command=command, name="agent-overhead", targets=[NODE],
                   collect=["system", "process", "perf"], interval=1.0,
                   timeout=job_seconds + 60)
    job = call(server, lambda c: c.submit(spec))
    return str(job["id"])


def running_pid(server: str, job_id: str) -> int | None:
    """The job's root pid once its run is running; BenchError if it already ended."""
    job = call(server, lambda c: c.job(job_id))
    run = job["runs"][0] if job["runs"] else {}
    if run.get("state") == "running" and run.get("pid"):
        return int(run["pid"])
    if job["state"] not in ("queued", "running"):
        raise BenchError(f"job {job_id} ended before the measurement: {json.dumps(job)[:600]}")
    return None


# --- measurement ---------------------------------------------------------------------


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def children_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.children_user + t.children_system


@dataclass
class Window:
    """CPU seconds and RSS readings of the agent, its perf children and Glances."""

    agent: psutil.Process
    job_root: int
    glances: psutil.Process | None
    start: dict[str, float] = field(default_factory=dict)
    perf_start: dict[int, float] = field(default_factory=dict)
    readings: dict[str, list[int]] = field(default_factory=lambda: {
        "agent": [], "perf": [], "glances": [], "host_processes": []})

    def helpers(self) -> list[psutil.Process]:
        """The agent's children other than the job: its ``perf stat`` processes."""
        return [c for c in self.agent.children() if c.pid != self.job_root]

    def begin(self) -> None:
        self.start = {"wall": time.monotonic(), "agent": cpu_s(self.agent),
                      "agent_children": children_s(self.agent), "host_idle": host_idle_s()}
        if self.glances is not None:
            self.start["glances"] = cpu_s(self.glances) + children_s(self.glances)
        self.perf_start = {}
        for c in self.helpers():
            with contextlib.suppress(psutil.Error):
                self.perf_start[c.pid] = cpu_s(c)

    def tick(self) -> None:
        """One 1 Hz RSS reading of everything measured."""
        self.readings["agent"].append(self.agent.memory_info().rss)
        self.readings["host_processes"].append(len(psutil.pids()))
        perf_rss = 0
        for c in self.helpers():
            with contextlib.suppress(psutil.Error):
                perf_rss += c.memory_info().rss
        self.readings["perf"].append(perf_rss)
        if self.glances is not None:
            self.readings["glances"].append(self.glances.memory_info().rss)

    def end(self) -> dict[str, Any]:
        """CPU % of one core and mean RSS (MB) over the window."""
        wall = time.monotonic() - self.start["wall"]
        agent = cpu_s(self.agent) - self.start["agent"]
        perf, live = 0.0, set()
        for c in self.helpers():
            with contextlib.suppress(psutil.Error):
                perf += cpu_s(c) - self.perf_start.get(c.pid, 0.0)
                live.add(c.pid)
        # perf processes restarted in the window were reaped by the agent: their time
        # is in its children_* counters (minus what they had used before the window).
        reaped = children_s(self.agent) - self.start["agent_children"]
        idle = (host_idle_s() - self.start["host_idle"]) / (psutil.cpu_count() or 1)
        perf += reaped - sum(v for pid, v in self.perf_start.items() if pid not in live)
        out = {"wall_s": round(wall, 2), "agent_cpu_pct": pct(agent, wall),
               "agent_perf_cpu_pct": pct(agent + perf, wall), "perf_cpu_pct": pct(perf, wall),
               "agent_rss_mb": mb(self.readings["agent"]), "perf_rss_mb": mb(self.readings["perf"]),
               "perf_processes": len(live), "glances_cpu_pct": None, "glances_rss_mb": None,
               "host_busy_pct": round(max(0.0, 100.0 * (1 - idle / wall)), 1),
               "host_processes": round(statistics.fmean(self.readings["host_processes"] or [0]))}
        if self.glances is not None:
            g = cpu_s(self.glances) + children_s(self.glances) - self.start["glances"]
            out |= {"glances_cpu_pct": pct(g, wall), "glances_rss_mb": mb(self.readings["glances"])}
        return out


def host_idle_s() -> float:
    """Idle + iowait seconds of all CPUs together (to show how busy the host was)."""
    t = psutil.cpu_times()
    return t.idle + getattr(t, "iowait", 0.0)


def pct(cpu: float, wall: float) -> float:
    return round(100.0 * cpu / wall, 3)


def mb(values: list[int]) -> float:
    return round(statistics.fmean(values) / 2**20, 1) if values else 0.0


def measure(window: Window, seconds: float) -> dict[str, Any]:
    """Read RSS every second for ``seconds``; return :meth:`Window.end`."""
    window.begin()
    deadline = window.start["wall"] + seconds
    while (left := deadline - time.monotonic()) > 0:
        window.tick()
        time.sleep(min(1.0, left))  # the sampling period of this measurement
    return window.end()


def tree_size(root_pid: int) -> int:
    root = psutil.Process(root_pid)
    return 1 + len(root.children(recursive=True))


# --- sanity checks -------------------------------------------------------------------


def influx_rows(url: str, q: str) -> list[list[Any]]:
    status, body = request(url, "GET", "/query", params={"db": DATABASE, "q": q})
    if status != 200:
        return []
    result = json.loads(body).get("results", [{}])[0]
    return [row for s in result.get("series", []) for row in s.get("values", [])]


def sanity(url: str, job_id: str, t0: float, t1: float, csv_path: Path) -> dict[str, Any]:
    """What the agent wrote to InfluxDB during the window, and Glances' CSV rows."""
    when = f"time >= {int(t0 * 1e9)} AND time <= {int(t1 * 1e9)}"
    job = f"job = '{job_id}'"
    pids = influx_rows(url, f"SHOW TAG VALUES FROM proc WITH KEY = pid WHERE {job}")
    counts = {
        "proc_rows": f"SELECT count(rss) FROM proc WHERE {job} AND {when}",
        "perf_rows": f"SELECT count(\"value\") FROM perf WHERE {job} AND {when}",
        "cpu_rows": f"SELECT count(idle) FROM cpu WHERE cpu = 'total' AND {when}",
    }
    out: dict[str, Any] = {"proc_pids": len([p for p in pids if p[1] != "tree"])}
    for key, q in counts.items():
        rows = influx_rows(url, q)
        out[key] = int(rows[0][1]) if rows else 0
    rows = influx_rows(url, f"SELECT mean(cpu_pct) FROM agent WHERE {when}")
    out["agent_self_reported_cpu_pct"] = round(rows[0][1], 3) if rows else None
    with contextlib.suppress(OSError):
        out["glances_csv_rows"] = max(0, len(csv_path.read_text().splitlines()) - 1)
    return out


# --- the run -------------------------------------------------------------------------


@dataclass
class Bench:
    """Everything this run started, so :func:`cleanup` can end exactly that."""

    tmp: Path
    influx: InfluxServer | None = None
    daemons: list[Daemon] = field(default_factory=list)
    server: str | None = None
    job_id: str | None = None
    job_procs: list[psutil.Process] = field(default_factory=list)


def start_cluster(bench: Bench) -> Daemon:
    """influxd, the manager and the agent; returns the agent once its node is ready."""
    bench.influx = InfluxServer(bench.tmp / "influxdb", die_with_parent=True)
    url = bench.influx.start()
    create_database(url, DATABASE)
    manager, bench.server = start_manager(bench.tmp, url)
    bench.daemons.append(manager)
    agent = start_agent(bench.tmp, bench.server)
    bench.daemons.append(agent)

    def ready() -> bool:
        if not agent.alive:
            raise BenchError(f"agent exited early:\n{agent.tail()}")
        return node_ready(bench.server or "")

    wait_for(ready, 60, f"node {NODE} to be ready")
    return agent


def start_job(bench: Bench, args: argparse.Namespace) -> int:
    """Submit the job and wait until its whole 20-process tree exists; returns the root pid."""
    assert bench.server is not None
    job_seconds = args.warmup + args.seconds + 60
    bench.job_id = submit_job(bench.server, job_seconds, args.load)
    root = wait_for(lambda: running_pid(bench.server or "", bench.job_id or ""), 30,
                    f"job {bench.job_id} to run")
    wait_for(lambda: tree_size(root) >= TREE_SIZE, 15, f"a {TREE_SIZE}-process tree")
    top = psutil.Process(root)
    bench.job_procs = [top, *top.children(recursive=True)]
    return root


def start_glances(bench: Bench, glances_bin: Path | None, csv_path: Path) -> Daemon | None:
    if glances_bin is None:
        return None
    glances = Daemon("glances", glances_argv(glances_bin, csv_path), bench.tmp / "glances.log")
    bench.daemons.append(glances)
    glances.start()
    return glances


def run_bench(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Set everything up, warm up, measure; returns the result dict."""
    glances_bin, glances_info = ensure_glances(args.glances_venv)
    if glances_bin is None:
        say(f"GLANCES UNAVAILABLE: {glances_info}")
    agent = start_cluster(bench)
    root = start_job(bench, args)
    csv_path = bench.tmp / "glances.csv"
    glances = start_glances(bench, glances_bin, csv_path)
    say(f"agent pid {agent.pid}, job {bench.job_id} root pid {root}, glances pid "
        f"{glances.pid if glances else '-'}; warming up {args.warmup:g} s, "
        f"then measuring {args.seconds:g} s")
    time.sleep(args.warmup)  # let both settle: first samples, perf start-up, imports
    window = Window(psutil.Process(agent.pid), root,
                    psutil.Process(glances.pid) if glances else None)
    t0 = time.time()
    result = measure(window, args.seconds)
    t1 = time.time()
    result["job_tree_processes"] = tree_size(root)
    if glances is not None and not glances.alive:
        raise BenchError(f"glances exited during the window:\n{glances.tail()}")
    time.sleep(2)  # let the window's last batch reach InfluxDB before counting rows
    result["sanity"] = sanity(bench.influx.url if bench.influx else "", bench.job_id or "",
                              t0, t1, csv_path)
    result["glances"] = ({"version": glances_info, "argv": glances_argv(glances_bin, csv_path)}
                         if glances_bin else {"error": glances_info})
    return result | verdict(result)


def verdict(r: dict[str, Any]) -> dict[str, Any]:
    """Ratios against Glances and whether the targets are met."""
    g = r.get("glances_cpu_pct")
    out: dict[str, Any] = {"ratio_agent_glances": None, "ratio_agent_perf_glances": None,
                           "ratio_rss_agent_glances": None}
    if g:
        out["ratio_agent_glances"] = round(r["agent_cpu_pct"] / g, 3)
        out["ratio_agent_perf_glances"] = round(r["agent_perf_cpu_pct"] / g, 3)
    if r.get("glances_rss_mb"):
        out["ratio_rss_agent_glances"] = round(r["agent_rss_mb"] / r["glances_rss_mb"], 3)
    out["target_cpu_met"] = r["agent_cpu_pct"] <= TARGET_CPU_PCT
    ratio = out["ratio_agent_glances"]
    out["target_ratio_met"] = None if ratio is None else ratio <= TARGET_RATIO
    return out


def cleanup(bench: Bench) -> None:
    """Cancel the job, stop every process we started (newest first), remove temp files."""
    if bench.job_id and bench.server and bench.daemons and bench.daemons[0].alive:
        with contextlib.suppress(Exception):
            call(bench.server, lambda c: c.cancel(bench.job_id or ""))
    for daemon in reversed(bench.daemons):
        daemon.stop()
    end_leftovers(bench.job_procs)
    if bench.influx is not None:
        bench.influx.stop()


def alive(p: psutil.Process) -> bool:
    """Running and not a zombie (an orphan waits for pid 1 to reap it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_leftovers(procs: list[psutil.Process], grace: float = 3.0) -> None:
    """Backstop: the agent's shutdown ends the job; kill what of it still lives after ``grace``."""
    deadline = time.monotonic() + grace
    while any(map(alive, procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in filter(alive, procs):
        say(f"job process {p.pid} outlived the agent; killing it")
        with contextlib.suppress(psutil.Error):
            p.kill()  # psutil checks the pid was not reused


# --- output --------------------------------------------------------------------------


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(r: dict[str, Any]) -> None:
    """The human-readable report."""
    ok = {True: "MET", False: "MISSED", None: "n/a"}
    rows = [
        ("agent cpu, % of one core", fmt(r["agent_cpu_pct"], ".3f")),
        (f"agent + perf children cpu % ({r['perf_processes']} perf)",
         fmt(r["agent_perf_cpu_pct"], ".3f")),
        ("agent RSS, MB (perf children)", f"{r['agent_rss_mb']:.1f} ({r['perf_rss_mb']:.1f})"),
        ("glances cpu, % of one core", fmt(r["glances_cpu_pct"], ".3f")),
        ("glances RSS, MB", fmt(r["glances_rss_mb"], ".1f")),
        ("ratio agent / glances cpu", fmt(r["ratio_agent_glances"], ".3f")),
        ("ratio agent+perf / glances cpu", fmt(r["ratio_agent_perf_glances"], ".3f")),
        ("ratio agent / glances RSS", fmt(r["ratio_rss_agent_glances"], ".3f")),
        (f"target agent <= {TARGET_CPU_PCT} % of a core", ok[r["target_cpu_met"]]),
        (f"target agent <= {TARGET_RATIO:g} x glances", ok[r["target_ratio_met"]]),
    ]
    print(f"window {r['wall_s']:.1f} s at 1 Hz; job tree {r['job_tree_processes']} processes; "
          f"host: {psutil.cpu_count()} CPUs, {r['host_processes']} processes, "
          f"{r['host_busy_pct']:.1f} % busy during the window")
    for name, value in rows:
        print(f"  {name:44} {value:>12}")
    print("sanity: " + ", ".join(f"{k}={v}" for k, v in r["sanity"].items()))
    g = r["glances"]
    print(f"glances: {g.get('version') or ''} {' '.join(g.get('argv', [])[1:])}".rstrip()
          if "error" not in g else f"glances: NOT MEASURED: {g['error']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--load", type=float, default=0.1,
                        help="busy share of one core for the job's load loop (0..1)")
    parser.add_argument("--glances-venv", type=Path, default=GLANCES_VENV)
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="hard limit for the whole run, seconds (pip install included)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args(argv)
    if not 0 <= args.load < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("need --seconds > 0, --warmup >= 0 and 0 <= --load < 1")
    if args.time_limit < args.warmup + args.seconds + 60:
        parser.error("--time-limit must leave a minute beyond --warmup + --seconds")
    return args


def _on_signal(signum: int, frame: Any) -> None:
    if signum == signal.SIGALRM:
        raise BenchTimeout("hard time limit reached (--time-limit)")
    raise BenchTimeout(f"stopped by {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 with the figures, 1 if the harness failed."""
    args = parse_args(argv)
    bench = Bench(Path(tempfile.mkdtemp(prefix="ptap-bench-")))
    signal.signal(signal.SIGALRM, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.alarm(max(1, int(args.time_limit)))
    try:
        result = run_bench(bench, args)
    except (BenchError, OSError, RuntimeError, psutil.Error) as exc:
        say(f"FAILED: {exc}")
        for d in bench.daemons:
            say(f"--- {d.name} log tail ({d.log_path}):\n{d.tail()}")
        return 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cleanup(bench)
        if args.keep:
            say(f"kept {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    result["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
