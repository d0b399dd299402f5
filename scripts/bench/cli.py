"""Benchmark: whole-process wall time of the ``ptap`` CLI beside Salt's ``salt`` CLI.

    .venv/bin/python scripts/bench/cli.py [--nodes 1,10] [--rounds 20] [--json]

What is compared, at N = 1 and N = 10 nodes in the same run:

* ``ptap run --wait -- true`` (every node, the default ``all``) against
  ``salt '*' cmd.run /bin/true``: run a command everywhere and wait for it;
* ``ptap nodes`` against ``salt '*' test.ping``: who is there.

Targets (the speed issue): ``ptap run --wait`` p50 at most a quarter of
Salt's ``cmd.run`` at every N, and ``ptap nodes`` p50 at most 80 ms.

The clusters, all on 127.0.0.1, started (and stopped, by pid) by this script:

* ptap as start-all runs it: a private ``influxd``, a manager (``python -m
  manager.main`` with ``config/server.cfg``, free ports, CURVE and
  ``auto_accept``) and N ``ptap-agent`` processes, each with its own key pair
  and workdir. The CLI is ``.venv/bin/ptap --manager ... --keys ...``.
* Salt: one ``salt-master`` and N ``salt-minion`` processes (each with its own
  id and config folder), their config, pki, socket, cache and log folders
  under a temporary directory, ``auto_accept: True``. Salt has no "bind port
  0 and tell me", so its two ports are picked free just before it starts.
  Salt is installed from PyPI (``salt==3007.*``; ``--salt 3008`` for the
  next line) into a virtualenv this bench owns
  (``$XDG_CACHE_HOME/ptap-bench/salt-3007``, reused when its Salt is of that
  line), or taken from ``--salt-venv DIR``. Its CLI is ``salt -c CONFIG_DIR
  -t SALT_TIMEOUT``; it exits as soon as every minion has returned, so the
  timeout only matters for a minion that does not.

Both clusters run at the same time, so their idle daemons load the host
alike; the clusters grow from the smaller N to the larger one, and each N is
measured only once ``ptap nodes`` shows every node ready and ``salt '*'
test.ping`` answers from every minion. After ``--warmup`` calls of each
command, ``--rounds`` rounds each call every command once, ptap and Salt
alternating (which of a pair goes first flips every round), timed with
``time.perf_counter`` around ``subprocess.run`` (output captured, as in a
pipe). A call counts only if it succeeded: exit status 0 and, where the
command prints them, every node's name (a minion that did not return fails
Salt's call). The table shows p50/p95 per command and N, the ratio ptap/Salt
of the p50s, the host's load average before and after each N, how busy its
CPUs were, and its CPU count. A last row times ``python -c pass`` with our
interpreter: the floor under any Python command line on this host. ptap's CLI
runs with Python's bytecode cache on, as where it is installed (see
:func:`with_bytecode`): Salt's modules in its venv are compiled at install.

Salt 3007.16 keeps each job's forked process for 30 s after the job has
returned (the minion's main process never answers it; its log says "failed
to return the job information"), so a few hundred idle Salt processes pile up
at N = 10 (see ``host_processes`` in the JSON); they sleep. Its minions also
take more than 10 s to obey SIGTERM, so they are killed then. 3008 does
neither; its timings are alike.

The whole run after the Salt install (which has its own limit) is bounded by
``--time-limit``: what was measured by then is printed and marked truncated.
Every process is stopped by pid (SIGTERM to all at once, SIGKILL after 10 s,
then SIGKILL for any of their children still alive), also on error, SIGTERM
or Ctrl-C, and the temporary directory is removed (``--keep`` keeps it, with
the logs).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from scripts.bench.stats import percentile  # noqa: E402
from scripts.influxdb_local import (  # noqa: E402
    InfluxdNotFound,
    InfluxServer,
    create_database,
)

SALT_RELEASE = "3007"  # the release line the speed issue names; 3008 works too
PIP_TIMEOUT = 900.0
CLI_TIMEOUT = 60.0  # one CLI call; far above any expected time
READY_TIMEOUT = 180.0  # all nodes of one N registered / answering
CLEANUP_RESERVE = 30.0  # seconds of the time limit kept for stopping ~25 processes
TARGET_RUN_RATIO = 0.25
TARGET_NODES_MS = 80.0
T = TypeVar("T")


class BenchError(RuntimeError):
    """The harness could not set something up; the message says what."""


class BenchTimeout(BenchError):
    """The hard time limit ran out, or we were told to stop."""


def say(msg: str) -> None:
    """Progress on stderr, so stdout is only the table or the JSON."""
    print(f"[cli] {msg}", file=sys.stderr, flush=True)


# --- statistics ------------------------------------------------------------------------


def summary_ms(seconds: list[float]) -> dict[str, float] | None:
    """p50/p95/min/max in milliseconds and the count, or None when nothing was measured."""
    if not seconds:
        return None
    ms = [s * 1000 for s in seconds]
    return {"p50": round(percentile(ms, 50), 1), "p95": round(percentile(ms, 95), 1),
            "min": round(min(ms), 1), "max": round(max(ms), 1), "count": len(ms)}


def verdict(entry: dict[str, Any]) -> dict[str, Any]:
    """Ratios ptap/Salt of the p50s for one N, and whether its targets are met
    (None when a side has no successful call)."""
    def p50(key: str) -> float | None:
        stats = entry.get("ms", {}).get(key)
        return stats["p50"] if stats else None

    run, cmd_run = p50("ptap_run"), p50("salt_cmd_run")
    nodes, ping = p50("ptap_nodes"), p50("salt_test_ping")
    ratio_run = round(run / cmd_run, 3) if run and cmd_run else None
    return {"ratio_run": ratio_run,
            "ratio_nodes": round(nodes / ping, 3) if nodes and ping else None,
            "target_run_met": None if ratio_run is None else ratio_run <= TARGET_RUN_RATIO,
            "target_nodes_met": None if nodes is None else nodes <= TARGET_NODES_MS}


# --- processes -------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without the developer's PTAP_* settings or a Python path."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_") and k not in drop}
    return env | extra


def with_bytecode(env: dict[str, str], pycache: Path) -> dict[str, str]:
    """``env`` with Python's bytecode cache on, as an installed ptap (and Salt's
    venv) has it: a ``PYTHONDONTWRITEBYTECODE`` of the developer's shell is dropped,
    and the checkout's modules are compiled once, by the warm-up calls, into
    ``pycache`` (``PYTHONPYCACHEPREFIX``), not into the checkout. Without it every
    call compiles every ptap module it imports again (~15-20 ms on this host)."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(pycache)}


@dataclass
class Daemon:
    """One subprocess we started, logging to a file; :func:`stop_all` ends exactly
    its pid and then any of its descendants (Salt's workers) that outlive it."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.log_path.parent, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def stop_all(daemons: list[Daemon], timeout: float = 10.0) -> None:
    """SIGTERM every one at once (a salt-minion can take over 10 s to go), SIGKILL what
    is left at ``timeout``; then their descendants seen before, still alive after 5 s."""
    live = [(d.name, d.proc) for d in daemons if d.alive and d.proc is not None]
    kids: list[psutil.Process] = []
    for _, proc in live:
        with contextlib.suppress(psutil.Error):
            kids += psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
    deadline = time.monotonic() + timeout
    for name, proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} pid {proc.pid} ignored SIGTERM for {timeout:g} s; killing it")
            proc.kill()
            proc.wait(10)
    _, left = psutil.wait_procs(kids, timeout=5)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()  # psutil checks that the pid was not reused


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something true; BenchError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # polling a condition with a deadline


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on now (for Salt, which cannot bind 0)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def check_alive(daemons: list[Daemon]) -> None:
    for d in daemons:
        if not d.alive:
            raise BenchError(f"{d.name} exited (see {d.log_path}):\n{d.tail()}")


# --- Salt ------------------------------------------------------------------------------


def default_salt_venv(release: str) -> Path:
    """``$XDG_CACHE_HOME/ptap-bench/salt-RELEASE`` (``~/.cache`` without it)."""
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "ptap-bench" / f"salt-{release}"


def salt_version(venv: Path) -> str:
    """``salt --version`` of ``venv`` ("salt 3007.16 (Chlorine)"), "" if it does not work."""
    try:
        out = subprocess.run([str(venv / "bin" / "salt"), "--version"], capture_output=True,
                             text=True, timeout=60, check=False, env=clean_env()).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.strip() if out.startswith("salt ") else ""


def ensure_salt(venv: Path, release: str) -> str:
    """Salt's version in ``venv``, after creating it and pip-installing Salt ``release``
    (e.g. 3007: the newest 3007.x) if it has none, or one of another release."""
    version = salt_version(venv)
    if version.startswith(f"salt {release}."):
        return version
    spec = f"salt=={release}.*"
    say(f"installing {spec} from PyPI into {venv} (once; takes a few minutes)")
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, text=True, timeout=120)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", spec],
                       check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                       env=clean_env())
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        tail = [ln for ln in lines if ln.startswith("ERROR")] or lines[-5:]
        raise BenchError(f"{' '.join(map(str, exc.cmd))} exited {exc.returncode}: "
                         f"{' | '.join(tail)}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"cannot install Salt into {venv}: {exc}") from None
    version = salt_version(venv)
    if not version.startswith(f"salt {release}."):
        raise BenchError(f"{venv}/bin/salt --version fails after the install; "
                         f"remove {venv} and run again")
    return version


def salt_paths(d: Path, log_name: str) -> str:
    """The config lines that keep a Salt daemon's files under ``d`` (JSON is YAML)."""
    q = json.dumps
    return (f"root_dir: {q(str(d))}\npki_dir: {q(str(d / 'pki'))}\n"
            f"cachedir: {q(str(d / 'cache'))}\nsock_dir: {q(str(d / 'sock'))}\n"
            f"pidfile: {q(str(d / 'salt.pid'))}\nlog_file: {q(str(d / log_name))}\n"
            f"log_level_logfile: warning\nuser: {q(getpass.getuser())}\n")


class SaltCluster:
    """A salt-master and its minions, each with its own config folder under ``base``."""

    def __init__(self, base: Path, venv: Path, timeout: float) -> None:
        self.base = base
        self.bin = venv / "bin"
        self.master_dir = base / "master"
        self.timeout = timeout
        self.env = clean_env()
        self.daemons: list[Daemon] = []
        self.minions: list[str] = []
        self.ports: tuple[int, int] = (0, 0)

    def start_master(self) -> None:
        """salt-master on two free ports; returns once its ret port accepts connections."""
        pub, ret = free_ports(2)
        self.ports = (pub, ret)
        d = self.master_dir
        d.mkdir(parents=True)
        q = json.dumps
        (d / "master").write_text(
            f"interface: 127.0.0.1\npublish_port: {pub}\nret_port: {ret}\n"
            + salt_paths(d, "master.log")
            + f"extension_modules: {q(str(d / 'cache' / 'extmods'))}\n"
            f"key_logfile: {q(str(d / 'key.log'))}\nauto_accept: True\n"
            f"file_roots: {{base: [{q(str(d / 'srv'))}]}}\n"
            f"pillar_roots: {{base: [{q(str(d / 'pillar'))}]}}\n")
        master = Daemon("salt-master", [str(self.bin / "salt-master"), "-c", str(d),
                                        "-l", "warning"], d / "daemon.log", self.env)
        self.daemons.append(master)
        master.start()

        def listening() -> bool:
            check_alive([master])
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", ret)) == 0

        wait_for(listening, 60, "salt-master's ret port")

    def add_minions(self, names: list[str]) -> None:
        pub, ret = self.ports
        for name in names:
            d = self.base / f"minion-{name}"
            d.mkdir(parents=True)
            # acceptance_wait_time: retry a refused first auth after 1 s, not 10.
            (d / "minion").write_text(
                f"id: {name}\nmaster: 127.0.0.1\nmaster_port: {ret}\npublish_port: {pub}\n"
                + salt_paths(d, "minion.log") + "acceptance_wait_time: 1\n")
            minion = Daemon(f"salt-minion {name}", [str(self.bin / "salt-minion"), "-c", str(d),
                                                    "-l", "warning"], d / "daemon.log", self.env)
            self.daemons.append(minion)
            minion.start()
            self.minions.append(name)

    def cli(self, *args: str) -> list[str]:
        """``salt -c MASTER_DIR -t TIMEOUT ARGS`` as argv."""
        return [str(self.bin / "salt"), "-c", str(self.master_dir), "-t", f"{self.timeout:g}",
                *args]

    def answering(self) -> set[str]:
        """The minions that answer ``test.ping`` now."""
        check_alive(self.daemons)
        try:
            done = subprocess.run(self.cli("--out", "json", "--static", "*", "test.ping"),
                                  capture_output=True, text=True, env=self.env,
                                  timeout=CLI_TIMEOUT, check=False, cwd=self.base)
            replies = json.loads(done.stdout or "{}")
        except (subprocess.TimeoutExpired, ValueError):
            return set()
        return {k for k, v in replies.items() if v is True} if isinstance(replies, dict) else set()

    def wait_ready(self, timeout: float) -> None:
        wait_for(lambda: set(self.minions) <= self.answering(), timeout,
                 f"all {len(self.minions)} minions to answer test.ping", interval=0.5)

    def stop(self) -> None:
        stop_all(self.daemons[1:])  # minions first, then the master
        stop_all(self.daemons[:1])


# --- ptap ------------------------------------------------------------------------------


def venv_script(name: str, module: str) -> list[str]:
    """The console script ``name`` beside our Python, else ``python -m module``."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


class PtapCluster:
    """influxd, a CURVE manager with auto_accept (as start-all runs it), and agents."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.keys = base / "keys"
        self.env = clean_env(PYTHONPATH=str(ROOT))  # the daemons, as start-all runs them
        self.cli_env = with_bytecode(clean_env(), base / "pycache")  # as a user runs it
        self.influx: InfluxServer | None = None
        self.influx_note = ""
        self.daemons: list[Daemon] = []
        self.nodes: list[str] = []
        self.address = ""

    def start_influx(self) -> str:
        """A private influxd, so the manager writes the agents' metrics as it would;
        without one the URL points nowhere (the manager keeps retrying)."""
        self.influx = InfluxServer(self.base / "influxdb", die_with_parent=True)
        try:
            url = self.influx.start()
        except InfluxdNotFound as exc:
            self.influx, self.influx_note = None, f"no influxd: {exc}"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return f"http://127.0.0.1:{s.getsockname()[1]}"
        create_database(url, "ptap")
        return url

    def start_manager(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        url, ready = self.start_influx(), self.base / "manager.ready"
        sets = {"basic.bind_addr": "127.0.0.1", "basic.bind_port": "0",
                "state.path": str(self.base / "manager.db"), "security.curve": "yes",
                "security.keys_dir": str(self.keys), "security.auto_accept": "yes",
                "influxdb.url": url}
        argv = [sys.executable, "-m", "manager.main", "--config",
                str(ROOT / "config" / "server.cfg"), "--ready-file", str(ready)]
        for key, value in sets.items():
            argv += ["--set", f"{key}={value}"]
        manager = Daemon("manager", argv, self.base / "manager.log", self.env)
        self.daemons.append(manager)
        manager.start()

        def ready_info() -> dict[str, Any] | None:
            check_alive([manager])
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(ready.read_text())
                return info if manager.proc and info.get("pid") == manager.proc.pid else None
            return None

        info = wait_for(ready_info, 60, "the manager's ready file")
        self.address = f"127.0.0.1:{int(info['router'])}"

    def add_agents(self, names: list[str]) -> None:
        """One ``ptap-agent`` per name, with its own keys (a copy of server.key) and workdir."""
        for name in names:
            keys = self.base / f"agent-keys-{name}"
            keys.mkdir(mode=0o700)
            shutil.copy(self.keys / "server.key", keys / "server.key")
            argv = [*venv_script("ptap-agent", "agent.main"),
                    "--config", str(ROOT / "config" / "agentclient.cfg"), "--name", name,
                    "--server", self.address,
                    "--set", f"dispatcher.workdir={self.base / f'runs-{name}'}",
                    "--set", "security.curve=yes", "--set", f"security.keys_dir={keys}"]
            agent = Daemon(f"agent {name}", argv, self.base / f"agent-{name}.log", self.env)
            self.daemons.append(agent)
            agent.start()
            self.nodes.append(name)

    def cli(self, *args: str) -> list[str]:
        return [*venv_script("ptap", "manager.cli.main"), "--manager", self.address,
                "--keys", str(self.keys), *args]

    def ready_nodes(self) -> set[str]:
        check_alive(self.daemons)
        try:
            done = subprocess.run(self.cli("nodes", "--json"), capture_output=True, text=True,
                                  env=self.cli_env, timeout=CLI_TIMEOUT, check=False, cwd=ROOT)
            nodes = json.loads(done.stdout or "[]")
        except (subprocess.TimeoutExpired, ValueError):
            return set()
        return {n["name"] for n in nodes if n.get("state") in ("ready", "busy")}

    def wait_ready(self, timeout: float) -> None:
        wait_for(lambda: set(self.nodes) <= self.ready_nodes(), timeout,
                 f"all {len(self.nodes)} ptap nodes to be ready")

    def stop(self) -> None:
        stop_all(self.daemons[1:])  # agents first, then the manager
        stop_all(self.daemons[:1])
        if self.influx is not None:
            self.influx.stop()


# --- measuring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One CLI call to time; ``names`` must all appear in its output when it succeeds."""

    key: str
    label: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    names: tuple[str, ...] = ()


def run_once(cmd: Command) -> tuple[float, str | None]:
    """Wall seconds of one whole-process call, and why it failed (None if it did not)."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd.argv, env=cmd.env, cwd=cmd.cwd, capture_output=True,
                              text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, f"no exit within {CLI_TIMEOUT:g} s"
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return elapsed, f"exit {done.returncode}: {why[0][:200]}"
    missing = [n for n in cmd.names if n not in done.stdout]
    if missing or "did not return" in done.stdout:
        return elapsed, f"no answer from {', '.join(missing) or 'a minion'}"
    return elapsed, None


def commands(ptap: PtapCluster, salt: SaltCluster) -> list[tuple[Command, ...]]:
    """The two (ptap, Salt) pairs, for every node of both clusters, and the floor of
    any Python command line: our interpreter starting and exiting (``-c pass``)."""
    names = tuple(ptap.nodes)
    return [
        (Command("ptap_run", "ptap run --wait -- true", ptap.cli("run", "--wait", "--", "true"),
                 ptap.cli_env, ROOT),
         Command("salt_cmd_run", "salt '*' cmd.run /bin/true",
                 salt.cli("*", "cmd.run", "/bin/true"), salt.env, salt.base, names)),
        (Command("ptap_nodes", "ptap nodes", ptap.cli("nodes"), ptap.cli_env, ROOT, names),
         Command("salt_test_ping", "salt '*' test.ping", salt.cli("*", "test.ping"), salt.env,
                 salt.base, names)),
        (Command("python_floor", "python -c pass (floor)", [sys.executable, "-c", "pass"],
                 ptap.cli_env, ROOT),),
    ]


def host_idle_s() -> float:
    """Idle + iowait seconds of all CPUs together (to show how busy the host was)."""
    t = psutil.cpu_times()
    return float(t.idle + getattr(t, "iowait", 0.0))


def measure_n(pairs: list[tuple[Command, ...]], args: argparse.Namespace, deadline: float,
              entry: dict[str, Any]) -> None:
    """Warm up, then up to ``args.rounds`` rounds, filling ``entry`` after each round."""
    order = [c for pair in pairs for c in pair]
    for _ in range(args.warmup):
        for cmd in order:
            _, error = run_once(cmd)
            if error:
                entry.setdefault("warmup_errors", {})[cmd.key] = error
    samples: dict[str, list[float]] = {c.key: [] for c in order}
    failed: dict[str, int] = {c.key: 0 for c in order}
    entry.update(commands={c.key: c.label for c in order}, rounds=0, failed=failed, ms={},
                 loadavg_before=os.getloadavg()[0])
    wall0, idle0 = time.monotonic(), host_idle_s()
    for r in range(args.rounds):
        if time.monotonic() > deadline:
            entry["truncated"] = True
            break
        for pair in pairs:
            for cmd in pair if r % 2 == 0 else pair[::-1]:
                elapsed, error = run_once(cmd)
                if error:
                    failed[cmd.key] += 1
                    entry.setdefault("errors", {}).setdefault(cmd.key, error)
                else:
                    samples[cmd.key].append(elapsed)
        entry["rounds"] = r + 1
        entry["ms"] = {k: summary_ms(v) for k, v in samples.items()}
        wall = time.monotonic() - wall0
        idle = (host_idle_s() - idle0) / (psutil.cpu_count() or 1)
        entry["host_busy_pct"] = round(max(0.0, 100.0 * (1 - idle / wall)), 1)
        entry["loadavg_after"] = os.getloadavg()[0]
    entry["host_processes"] = len(psutil.pids())
    entry |= verdict(entry)


# --- the run ---------------------------------------------------------------------------


def grow(ptap: PtapCluster, salt: SaltCluster, n: int, deadline: float) -> None:
    """Both clusters up to ``n`` nodes named ``node00``…, every one of them answering."""
    names = [f"node{i:02d}" for i in range(len(ptap.nodes), n)]
    say(f"starting {len(names)} ptap-agent and {len(names)} salt-minion processes (N = {n})")
    ptap.add_agents(names)
    salt.add_minions(names)
    budget = max(10.0, min(READY_TIMEOUT, deadline - time.monotonic()))
    ptap.wait_ready(budget)
    salt.wait_ready(budget)


def run_bench(args: argparse.Namespace, tmp: Path, held: dict[str, Any],
              results: dict[str, Any]) -> None:
    """Start both clusters, then grow and measure for each N within its share of time."""
    start = time.monotonic()
    soft = start + args.time_limit - CLEANUP_RESERVE
    ptap = held["ptap"] = PtapCluster(tmp / "ptap")
    salt = held["salt"] = SaltCluster(tmp / "salt", args.salt_venv, args.salt_timeout)
    say("starting influxd, the ptap manager and salt-master")
    ptap.start_manager()
    salt.start_master()
    results["influx"] = ptap.influx_note or "private influxd"
    begun = time.monotonic()
    share = (soft - begun) / len(args.nodes)
    for i, n in enumerate(args.nodes):
        n_deadline = min(soft, begun + share * (i + 1))  # unused time carries over
        grow(ptap, salt, n, n_deadline)
        say(f"N = {n}: measuring {args.rounds} rounds after {args.warmup} warm-up calls each")
        entry: dict[str, Any] = {"nodes": n}
        results["runs"].append(entry)
        measure_n(commands(ptap, salt), args, n_deadline, entry)
        results["truncated"] |= bool(entry.get("truncated"))


def git_revision() -> str:
    """HEAD, and whether the packages measured have uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                              check=False, timeout=30).stdout.strip()

    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        dirty = git("status", "--porcelain", "--", "manager", "agent", "bus", "config")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    return "?"


# --- output ----------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(results: dict[str, Any]) -> str:
    lines = [
        "ptap CLI vs Salt CLI, whole-process wall time on 127.0.0.1 (ptap: manager + N "
        "ptap-agent processes, CURVE; Salt: salt-master + N salt-minion processes)",
        f"host: {results['cpus']} CPUs, load average {_fmt(results.get('loadavg_start'), '.2f')}"
        f" at start, {_fmt(results.get('loadavg_end'), '.2f')} at end; "
        f"{results.get('salt_version', 'salt ?')}; ptap {results['ptap_revision']}",
        "",
        f"{'N':>3}  {'command':30} {'p50 ms':>8} {'p95 ms':>8} {'ok/calls':>9} "
        f"{'ptap/Salt p50':>14}   host"]
    for e in results["runs"]:
        host = (f"load {_fmt(e.get('loadavg_before'), '.2f')} -> "
                f"{_fmt(e.get('loadavg_after'), '.2f')}, "
                f"{_fmt(e.get('host_busy_pct'), '.0f')} % busy"
                + (" (cut short)" if e.get("truncated") else ""))
        for key, label in e.get("commands", {}).items():
            stats = e["ms"].get(key)
            ratio = {"ptap_run": e.get("ratio_run"), "ptap_nodes": e.get("ratio_nodes")}
            calls = (stats["count"] if stats else 0) + e["failed"][key]
            lines.append(f"{e['nodes']:>3}  {label:30} {_fmt(stats and stats['p50'], '.1f'):>8} "
                         f"{_fmt(stats and stats['p95'], '.1f'):>8} "
                         f"{(stats['count'] if stats else 0):>4}/{calls:<4} "
                         f"{_fmt(ratio.get(key), '.3f') if key in ratio else '':>14}   {host}")
            host = ""
        for key, error in e.get("errors", {}).items():
            lines.append(f"     first failure of {key}: {error}")
    lines += ["", "targets:", *target_lines(results), "", footer(results)]
    return "\n".join(line.rstrip() for line in lines)


def target_lines(results: dict[str, Any]) -> list[str]:
    ok = {True: "MET", False: "MISSED", None: "n/a"}
    out = []
    for e in results["runs"]:
        what = f"ptap run --wait p50 <= 1/4 of salt cmd.run, N = {e['nodes']}"
        out.append(f"  {what:52} {ok[e.get('target_run_met')]:7} "
                   f"(ratio {_fmt(e.get('ratio_run'), '.3f')})")
    for e in results["runs"]:
        p50 = (e.get("ms", {}).get("ptap_nodes") or {}).get("p50")
        what = f"ptap nodes p50 <= {TARGET_NODES_MS:g} ms, N = {e['nodes']}"
        out.append(f"  {what:52} {ok[e.get('target_nodes_met')]:7} ({_fmt(p50, '.1f')} ms)")
    return out


def footer(results: dict[str, Any]) -> str:
    notes = [f"elapsed {results.get('elapsed_s', 0):.0f} s", f"InfluxDB: {results.get('influx')}"]
    if results.get("truncated"):
        notes.append("TRUNCATED by the time limit")
    if results.get("error"):
        notes.append(f"error: {results['error']}")
    return ", ".join(notes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="1,10", help="comma-separated node counts (1,10)")
    parser.add_argument("--rounds", type=int, default=20, help="timed calls of each command per N")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each command per N")
    parser.add_argument("--salt", default=SALT_RELEASE, metavar="RELEASE",
                        help=f"Salt release line to install and compare with ({SALT_RELEASE})")
    parser.add_argument("--salt-venv", type=Path, default=None,
                        help="virtualenv with Salt, created and installed when it has none "
                             "(default: $XDG_CACHE_HOME/ptap-bench/salt-RELEASE)")
    parser.add_argument("--salt-timeout", type=float, default=5.0,
                        help="salt -t: seconds to wait for minions that have not returned")
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="hard limit in seconds, after the Salt install")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args(argv)
    try:
        args.nodes = sorted({int(n) for n in args.nodes.split(",") if n.strip()})
    except ValueError:
        parser.error("--nodes: expected numbers like 1,10")
    if not args.nodes or args.nodes[0] < 1 or args.nodes[-1] > 100:
        parser.error("--nodes: counts from 1 to 100")
    if not args.salt.isdigit():
        parser.error("--salt: a release line such as 3007 or 3008")
    args.salt_venv = args.salt_venv or default_salt_venv(args.salt)
    if args.rounds < 1 or args.warmup < 0 or args.salt_timeout <= 0:
        parser.error("need --rounds >= 1, --warmup >= 0 and --salt-timeout > 0")
    if args.time_limit < CLEANUP_RESERVE + 60:
        parser.error(f"--time-limit must be at least {CLEANUP_RESERVE + 60:g} s")
    return args


def _on_signal(signum: int, frame: Any) -> None:
    if signum == signal.SIGALRM:
        raise BenchTimeout("hard time limit reached (--time-limit)")
    raise BenchTimeout(f"stopped by {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 with the figures, 1 if the harness failed."""
    args = parse_args(argv)
    results: dict[str, Any] = {"cpus": os.cpu_count(), "ptap_revision": git_revision(),
                               "rounds": args.rounds, "runs": [], "truncated": False}
    try:
        results["salt_version"] = ensure_salt(args.salt_venv, args.salt)
    except BenchError as exc:
        say(f"FAILED: {exc}")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="ptap-bench-cli-"))
    held: dict[str, Any] = {}
    signal.signal(signal.SIGALRM, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.alarm(max(1, int(args.time_limit)))
    start, status = time.monotonic(), 0
    results["loadavg_start"] = os.getloadavg()[0]
    try:
        run_bench(args, tmp, held, results)
    except BenchTimeout as exc:
        results.update(truncated=True, error=str(exc))
    except KeyboardInterrupt:
        results.update(truncated=True, error="interrupted")
        status = 130
    except (BenchError, OSError, RuntimeError, psutil.Error) as exc:
        results["error"], status = f"{type(exc).__name__}: {exc}", 1
        for cluster in held.values():
            for d in cluster.daemons:
                say(f"--- {d.name} log tail ({d.log_path}):\n{d.tail()}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        results["loadavg_end"] = os.getloadavg()[0]
        for cluster in held.values():
            cluster.stop()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        results["elapsed_s"] = round(time.monotonic() - start, 1)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
