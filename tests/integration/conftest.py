"""Real processes on 127.0.0.1: a manager, agents, and the ``ptap`` CLI as subprocesses.

* ``cluster`` (function): a manager (``python -m manager.main``, its own
  config, state db and ports, heartbeat every :data:`HEARTBEAT` s) and one
  agent named ``node1``. ``cluster.cli(...)`` runs ``python -m
  manager.cli.main --manager 127.0.0.1:PORT ...`` and returns
  ``(rc, stdout, stderr)``; ``cluster.add_agent(name)`` starts another agent;
  ``cluster.manager.kill()`` / ``.start()`` restart the manager on the same
  ports and state.
* :func:`wait_for` polls a condition with a deadline (never a bare sleep).
* ``Cluster(..., security="curve = yes\n")`` runs a CURVE manager (its keys in
  ``cluster.manager.keys_dir``); its agents then use CURVE too, with the
  manager's ``server.key`` copied to their keys folder, and ``cluster.cli``
  passes ``--keys`` (the admin key).

Every process logs to a file in the test's tmp dir; when a test fails the
logs are attached to its report. Teardown stops exactly the pids it started
(SIGCONT first, in case a test left one stopped; SIGTERM; SIGKILL after a
deadline).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from tests.conftest import LOGS_KEY  # re-exported: tests import it from here
from tests.conftest_influx import InfluxFixture

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = 0.2
START_TIMEOUT = 30.0
T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float = 15.0,
             what: str = "condition", interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something true; return that, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # polling a condition with a deadline  # wait-ok: poll step under a deadline


def unused_port() -> int:
    """A port nothing listens on (used for an InfluxDB URL that must not be reached)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PTAP_MANAGER", None)
    # The developer's PTAP_<SECTION>_<KEY> variables must not reach the daemons.
    for name in [k for k in env if k.startswith("PTAP_")]:
        env.pop(name)
    return env


class CliResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


class Daemon:
    """One subprocess with its log file; :meth:`stop` ends exactly this pid."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, extra: list[str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.argv + (extra or [])}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv + (extra or []), cwd=self.cwd, env=child_env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap: the crash a restart test needs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class ManagerProc(Daemon):
    """``python -m manager.main`` on a random base port; restarts on the same ports."""

    def __init__(self, tmp: Path, influx_url: str | None = None, database: str = "ptap",
                 security: str = "") -> None:
        """``security``: more ``[security]`` lines, e.g. ``"curve = yes\n"``."""
        self.config = tmp / "server.cfg"
        self.ready_file = tmp / "manager.ready"
        self.db = tmp / "manager.db"
        self.keys_dir = tmp / "keys"
        self.config.write_text(
            "[basic]\nbind_addr = 127.0.0.1\nbind_port = 0\nepoll_interval = 0.1\n"
            f"interval = {HEARTBEAT}\nliveness = 3\n"
            # Without a real InfluxDB the URL points nowhere: control-plane
            # tests do not need one, and the ingest just keeps retrying.
            f"[influxdb]\nurl = {influx_url or f'http://127.0.0.1:{unused_port()}'}\n"
            f"database = {database}\ntimeout = 2.0\n"
            f"[state]\npath = {self.db}\n"
            f"[security]\nkeys_dir = {self.keys_dir}\n{security}")
        super().__init__("manager", [sys.executable, "-m", "manager.main",
                                     "--config", str(self.config),
                                     "--ready-file", str(self.ready_file)],
                         tmp / "manager.log", tmp)
        self.router_port = 0

    def start(self, *settings: str) -> None:
        """Start (or restart after :meth:`kill`) and wait for the ready file;
        ``settings`` are more ``SECTION.KEY=VALUE`` for ``--set``."""
        self.ready_file.unlink(missing_ok=True)
        self.spawn(["--set", f"basic.bind_port={self.router_port}",
                    "--set", f"basic.interval={HEARTBEAT}",
                    *(arg for setting in settings for arg in ("--set", setting))])
        info = wait_for(self._ready, START_TIMEOUT, "the manager's ready file")
        self.router_port = int(info["router"])

    def _ready(self) -> dict[str, Any] | None:
        if not self.alive:
            raise AssertionError(f"manager exited early; see {self.log_path}:\n"
                                 + self.log_path.read_text(errors="replace")[-3000:])
        try:
            info = json.loads(self.ready_file.read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.pid else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.router_port}"


class Cluster:
    """A manager and its agents for one test, plus the CLI pointed at it."""

    def __init__(self, tmp: Path, logs: list[Path], influx_url: str | None = None,
                 database: str = "ptap", security: str = "") -> None:
        self.tmp = tmp
        self.logs = logs
        self.manager = ManagerProc(tmp, influx_url, database, security)
        self.curve = "curve = yes" in security
        self.agents: dict[str, Daemon] = {}
        logs.append(self.manager.log_path)

    def add_agent(self, name: str, *, wait: bool = True, keys_dir: Path | None = None) -> Daemon:
        """Start agent ``name``; with CURVE its keys live in ``keys_dir`` (default
        ``agent-keys-NAME``), where the manager's ``server.key`` is copied."""
        workdir = self.tmp / f"runs-{name}"
        config = self.tmp / f"agent-{name}.cfg"
        keys_dir = keys_dir or self.tmp / f"agent-keys-{name}"
        if self.curve:
            keys_dir.mkdir(mode=0o700, exist_ok=True)
            shutil.copy(self.manager.keys_dir / "server.key", keys_dir / "server.key")
        config.write_text(
            f"[dispatcher]\nworkdir = {workdir}\nkill_grace = 1.0\n"
            f"[heartbeat-checker]\ninterval = {HEARTBEAT}\nliveness = 3\n"
            f"[security]\nkeys_dir = {keys_dir}\ncurve = {'yes' if self.curve else 'no'}\n")
        agent = Daemon(f"agent {name}", [
            sys.executable, "-m", "agent.main", "--config", str(config), "--name", name,
            "--server", self.manager.address], self.tmp / f"agent-{name}.log", self.tmp)
        self.logs.append(agent.log_path)
        self.agents[name] = agent
        agent.spawn()
        if wait:
            self.wait_node_state(name, "ready")
        return agent

    def cli(self, *args: str, timeout: float = 60.0) -> CliResult:
        keys = ["--keys", str(self.manager.keys_dir)] if self.curve else []
        return run_cli(["--manager", self.manager.address, *keys, *args], timeout=timeout)

    def cli_json(self, *args: str) -> Any:
        rc, out, err = self.cli(*args, "--json")
        assert rc == 0, f"ptap {' '.join(args)} --json exited {rc}: {err}"
        return json.loads(out)

    def node_state(self, name: str) -> str | None:
        rc, out, _ = self.cli("nodes", "--json")
        if rc != 0:
            return None
        return next((n["state"] for n in json.loads(out) if n["name"] == name), None)

    def wait_node_state(self, name: str, state: str, timeout: float = 20.0) -> None:
        wait_for(lambda: self.node_state(name) == state, timeout, f"node {name} to be {state}")

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.cli_json("job", job_id))

    def wait_job_state(self, job_id: str, states: set[str], timeout: float = 30.0
                       ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        return wait_for(reached, timeout, f"job {job_id} to reach {sorted(states)}")

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.manager.stop()


def run_cli(args: list[str], timeout: float = 60.0) -> CliResult:
    """``python -m manager.cli.main ARGS`` → ``(rc, stdout, stderr)``."""
    done = subprocess.run([sys.executable, "-m", "manager.cli.main", *args], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def process_logs(request: pytest.FixtureRequest) -> list[Path]:
    """Log files of the processes a test starts; attached to its report if it fails."""
    logs: list[Path] = []
    request.node.stash[LOGS_KEY] = logs
    return logs


@pytest.fixture
def cluster(tmp_path: Path, process_logs: list[Path]) -> Iterator[Cluster]:
    """A running manager with one ready agent, ``node1``."""
    c = Cluster(tmp_path, process_logs)
    try:
        c.manager.start()
        c.add_agent("node1")
        yield c
    finally:
        c.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for path in item.stash.get(LOGS_KEY, []):
            if path.exists():
                text = path.read_text(errors="replace")
                report.sections.append((f"log {path.name} ({report.when})", text[-8000:]))
    return report


@pytest.fixture
def metrics_cluster(tmp_path: Path, process_logs: list[Path], influxdb: InfluxFixture,
                    influx_db: str) -> Iterator[Cluster]:
    """A manager writing to (and reading reports from) the session's real influxd,
    with one agent ``node1``."""
    c = Cluster(tmp_path, process_logs, influxdb.url, influx_db)
    try:
        c.manager.start()
        c.add_agent("node1")
        yield c
    finally:
        c.stop()
