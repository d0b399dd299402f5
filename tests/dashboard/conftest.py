"""A real cluster, a real dashboard process and a real headless Chromium, per test module.

* ``dash_cluster``: a manager writing to the session's real influxd (its own
  database) and one agent ``node1`` (:class:`tests.integration.conftest.Cluster`).
* ``dashboard``: ``python -m dashboard.main`` as a subprocess, serving on a
  listening socket this process bound on 127.0.0.1 port 0 and passed down
  with ``--listen-fd`` (no free-port race), with ``[web] password`` set.
* ``browser``: headless Chromium driven over the DevTools protocol
  (:mod:`tests.dashboard.cdp`).

Starting these once per module keeps the browser tests well under a minute and
a half; the tests do not depend on each other's state. Logs of every process
are attached to a failing test's report.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_influx import InfluxFixture
from tests.dashboard.cdp import Browser
from tests.integration.conftest import (  # noqa: F401  (the hook attaches logs to failures)
    ROOT,
    Cluster,
    child_env,
    pytest_runtest_makereport,
    wait_for,
)

PASSWORD = "correct horse battery staple"


class DashboardProc:
    """``python -m dashboard.main`` on an inherited listening socket; stops by its pid."""

    def __init__(self, tmp: Path, manager_port: int, influx_url: str, database: str,
                 web: str = "bind_addr = 127.0.0.1\n", security: str = "") -> None:
        """``web``: more ``[web]`` lines; ``security``: the ``[security]`` lines, if any."""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "frontendagentclient.cfg"
        self.config.write_text(
            f"[remote-server]\nserver_ip = 127.0.0.1\nserver_port = {manager_port}\n"
            f"[web]\npassword = {PASSWORD}\n{web.format(port=self.port)}"
            f"[influxdb]\nurl = {influx_url}\ndatabase = {database}\ntimeout = 5\n"
            + (f"[security]\n{security}" if security else ""))
        self.log_path = tmp / "dashboard.log"
        self.ready = tmp / "dashboard.ready"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fd = self.sock.fileno()
        argv = [sys.executable, "-m", "dashboard.main", "--config", str(self.config),
                "--set", f"web.port={self.port}", "--listen-fd", str(fd),
                "--ready-file", str(self.ready)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), pass_fds=[fd],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ready, 30, "the dashboard's ready file")

    def _ready(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("dashboard exited early:\n"
                                 + self.log_path.read_text(errors="replace")[-3000:])
        try:
            info = json.loads(self.ready.read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.proc.pid else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.sock.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(autouse=True)
def _attach_logs(attach_module_logs: None) -> None:
    """Every dashboard test gets the module cluster's logs in its failure report."""


@pytest.fixture(scope="module")
def dash_cluster(tmp_path_factory: pytest.TempPathFactory, influxdb: InfluxFixture,
                 module_logs: list[Path]) -> Iterator[Cluster]:
    """Manager + agent ``node1`` writing to a fresh database on the session's influxd."""
    db = f"test_dash_{uuid.uuid4().hex[:10]}"
    influxdb.ensure_running()
    influxdb.create_database(db)
    c = Cluster(tmp_path_factory.mktemp("dash-cluster"), module_logs, influxdb.url, db)
    c.database = db  # type: ignore[attr-defined]
    try:
        c.manager.start()
        c.add_agent("node1")
        yield c
    finally:
        c.stop()
        influxdb.ensure_running()
        influxdb.raw_query(None, f'DROP DATABASE "{db}"')


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, dash_cluster: Cluster,
              influxdb: InfluxFixture, module_logs: list[Path]) -> Iterator[DashboardProc]:
    d = DashboardProc(tmp_path_factory.mktemp("dashboard"), dash_cluster.manager.router_port,
                      influxdb.url, dash_cluster.database)  # type: ignore[attr-defined]
    module_logs.append(d.log_path)
    try:
        d.start()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, module_logs: list[Path]
            ) -> Iterator[Browser]:
    profile = tmp_path_factory.mktemp("chromium")
    b = Browser(profile / "profile", profile / "chromium.log")
    module_logs.append(b.log_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()
