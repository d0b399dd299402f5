"""scripts/supervise.py, alone and under ``scripts/start-all``.

Alone, it supervises small real commands (``sh -c 'exit 3'``, ``sleep``) with
short delays, so its restart policy and back-off show in a few seconds. Under
start-all, a real cluster (temporary ``PTAP_VAR``, free ports) has its
manager, agent, dashboard and influxd killed with SIGKILL by pid: each must
be running again under a new pid within 5 s, the agent must be back with the
manager afterwards, every daemon must show its own name to ``ps``, and
stop-all must leave nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import ROOT, Daemon, run_cli, unused_port, wait_for
from tests.integration.test_scripts import alive, cluster_env, pids_in, script

__all__ = ["cluster_env"]  # the fixture, shared with tests/integration/test_scripts.py

SUPERVISE = ROOT / "scripts" / "supervise.py"
RESTART_WITHIN = 5.0  # seconds from a daemon's death to its successor's pid (issue 12)
DAEMONS = {"manager": "ptap-manager", "agent": "ptap-agent", "dashboard": "ptap-dashboard",
           "influxdb": "influxd"}


class Supervised:
    """``supervise.py NAME`` running ``command`` in ``tmp``, its log in ``tmp/NAME.log``."""

    def __init__(self, tmp: Path, command: list[str], *options: str) -> None:
        self.pidfile = tmp / "daemon.pid"
        self.log = tmp / "daemon.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SUPERVISE), "daemon", "--pidfile", str(self.pidfile),
                 "--supervisor-pidfile", str(tmp / "supervisor.pid"), *options, "--", *command],
                cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def lines(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in self.log.read_text().splitlines() if (m := re.search(pattern, line))]

    def daemon_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(30)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[list[Supervised]]:
    """Supervisors a test starts; any still running at the end is stopped (by its pid)."""
    started: list[Supervised] = []
    yield started
    for sup in started:
        sup.stop()


RESTART = r"restart (\d+) in ([\d.]+) s"


def test_a_daemon_that_keeps_failing_at_once_backs_off_to_the_cap_and_says_so(
        tmp_path: Path, supervised: list[Supervised]) -> None:
    sup = Supervised(tmp_path, ["sh", "-c", "exit 3"], "--delay", "0.05", "--max-delay", "0.4",
                     "--healthy-after", "30")
    supervised.append(sup)
    wait_for(lambda: len(sup.lines(RESTART)) >= 7, 20, "seven restarts")
    started = time.monotonic()
    restarts_before = len(sup.lines(RESTART))
    wait_for(lambda: len(sup.lines(RESTART)) >= restarts_before + 3, 10, "three more")
    # At the cap, three restarts take at least 3 x 0.4 s: a wait, not a busy loop.
    assert time.monotonic() - started >= 2 * 0.4
    assert sup.stop() == 0
    lines = sup.lines(RESTART)
    assert [float(m.group(2)) for m in lines[:6]] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    assert [int(m.group(1)) for m in lines] == list(range(1, len(lines) + 1))
    assert all("exited with status 3 after" in m.string for m in lines)
    assert "so it waits the most it ever does (0.4 s)" in lines[4].string
    assert not (tmp_path / "supervisor.pid").exists()


def test_a_long_enough_run_resets_the_delay(tmp_path: Path,
                                            supervised: list[Supervised]) -> None:
    # Runs 1-3 fail at once, run 4 lasts 2 s (longer than --healthy-after), then at once again.
    (tmp_path / "count").write_text("0")
    command = ('n=$(($(cat count) + 1)); echo $n > count; '
               'if [ $n -eq 4 ]; then sleep 2; fi; exit 1')
    sup = Supervised(tmp_path, ["sh", "-c", command], "--delay", "0.05", "--max-delay", "5",
                     "--healthy-after", "1.5")
    supervised.append(sup)
    wait_for(lambda: len(sup.lines(RESTART)) >= 5, 20, "five restarts")
    sup.stop()
    delays = [float(m.group(2)) for m in sup.lines(RESTART)[:5]]
    assert delays == [0.05, 0.1, 0.2, 0.05, 0.1]


def test_a_deliberate_end_is_not_restarted(tmp_path: Path,
                                           supervised: list[Supervised]) -> None:
    sup = Supervised(tmp_path, ["sleep", "60"])
    supervised.append(sup)
    pid = wait_for(sup.daemon_pid, 10, "the daemon's pid file")
    os.kill(pid, signal.SIGTERM)  # as systemctl stop or an operator's kill would
    assert sup.proc.wait(10) == 0
    assert not sup.lines(RESTART)
    assert sup.lines(rf"daemon \(pid {pid}\) was killed by SIGTERM after .*: stopped on purpose")
    assert not sup.pidfile.exists()


def test_stopping_the_supervisor_stops_its_daemon_with_sigkill_if_need_be(
        tmp_path: Path, supervised: list[Supervised]) -> None:
    sup = Supervised(tmp_path, ["sh", "-c", "trap '' TERM; exec sleep 60"],
                     "--stop-timeout", "0.5")
    supervised.append(sup)
    pid = wait_for(sup.daemon_pid, 10, "the daemon's pid file")
    assert sup.stop() == 0
    assert not alive(pid)
    assert sup.lines(rf"daemon \(pid {pid}\) ignored SIGTERM for 0.5 s; killing it")
    assert not sup.lines(RESTART) and not sup.pidfile.exists()


@pytest.mark.integration
def test_a_python_m_daemon_still_shows_its_name(tmp_path: Path) -> None:
    """``python -m agent.main`` names itself ptap-agent (bus/daemon.py), as the console
    script is named; it needs no manager to get that far, so none is started."""
    config = tmp_path / "agent.cfg"
    config.write_text(f"[dispatcher]\nworkdir = {tmp_path / 'runs'}\n"
                      f"[spool]\ndir = {tmp_path / 'spool'}\n"
                      f"[security]\nkeys_dir = {tmp_path / 'keys'}\ncurve = no\n")
    agent = Daemon("agent", [sys.executable, "-m", "agent.main", "--config", str(config),
                             "--name", "named", "--server", f"127.0.0.1:{unused_port()}"],
                   tmp_path / "agent.log", tmp_path)
    agent.spawn()
    try:
        wait_for(lambda: comm(agent.pid) == "ptap-agent", 30, "the name ptap-agent")
        assert Path(f"/proc/{agent.pid}/comm").read_text() == "ptap-agent\n"
    finally:
        agent.stop()


def comm(pid: int) -> str:
    """What ``ps -o comm=`` (and top) show for ``pid``."""
    done = subprocess.run(["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def free_ports_below_ephemeral(count: int) -> int:
    """A base port with ``count`` consecutive ports free now, below the kernel's range for
    outgoing connections.

    A client that reconnects to a port of that range while nothing listens there can be
    handed that very port as its own source port: it connects to itself, and the port
    stays in TIME_WAIT for a minute after (libzmq#4588). The dashboard's SUB did that to a
    SIGKILLed manager's PUB port here, and the restarted manager could not bind for that
    minute. This test is about the supervisor, so its ports are where that cannot
    happen; README "Running ptap as a service" says how to keep real ports out of it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(10000, low - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports below {low}")


@pytest.fixture
def restart_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """``cluster_env`` with every port below the ephemeral range (see above)."""
    cluster_env.update(PTAP_MANAGER_PORT=str(free_ports_below_ephemeral(3)),
                       PTAP_INFLUX_PORT=str(free_ports_below_ephemeral(1)),
                       PTAP_DASHBOARD_PORT=str(free_ports_below_ephemeral(1)))
    return cluster_env


@pytest.fixture
def cluster_logs(cluster_env: dict[str, str], output_dir: Path) -> Iterator[Path]:
    """The cluster's log folder; its logs are kept in ``output_dir/logs`` afterwards."""
    logs = Path(cluster_env["PTAP_VAR"]) / "log"
    yield logs
    (output_dir / "logs").mkdir(exist_ok=True)
    for log in logs.glob("*.log"):
        with contextlib.suppress(OSError):  # influxdb.log is a link that may point nowhere
            shutil.copyfile(log, output_dir / "logs" / log.name)


def new_pid(run_dir: Path, name: str, old: int) -> int | None:
    """The pid in NAME.pid once it names a live process other than ``old``."""
    pid = pids_in(run_dir).get(name)
    return pid if pid not in (None, old) and alive(pid) else None


def manager_serving(run_dir: Path, old: int) -> bool:
    """manager.ready is the new manager's: it has bound its ports."""
    try:
        pid = json.loads((run_dir / "manager.ready").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(pid != old and pid == pids_in(run_dir).get("manager"))


def node_ready(manager: str, keys: str, node: str) -> bool:
    rc, out, _ = run_cli(["--manager", manager, "--keys", keys, "--timeout", "2", "nodes",
                          "--json"])
    return rc == 0 and any(n["name"] == node and n["state"] == "ready" for n in json.loads(out))


@pytest.mark.integration
def test_start_all_restarts_each_daemon_killed_by_sigkill_within_5_s(
        restart_env: dict[str, str], cluster_logs: Path, tmp_path: Path,
        output_dir: Path) -> None:
    cluster_env = restart_env
    var = Path(cluster_env["PTAP_VAR"])
    run_dir, logs = var / "run", cluster_logs
    started = script("start-all", cluster_env, tmp_path)
    (output_dir / "start-all.out").write_text(started.stdout + started.stderr)
    assert started.returncode == 0, started.stdout + started.stderr
    pids = pids_in(run_dir)
    for name, program in DAEMONS.items():
        assert comm(pids[name]) == program, name
        assert comm(pids[f"{name}.supervisor"]) == "ptap-supervise", name
        assert program in " ".join(psutil.Process(pids[name]).cmdline())  # not python -m

    killed_at = time.monotonic()
    for name in DAEMONS:
        os.kill(pids[name], signal.SIGKILL)
    took = {}
    for name in DAEMONS:
        wait_for(lambda n=name: new_pid(run_dir, n, pids[n]), 30, f"a new {name}")
        took[name] = time.monotonic() - killed_at
    assert max(took.values()) <= RESTART_WITHIN, took
    wait_for(lambda: manager_serving(run_dir, pids["manager"]), 60, "the new manager's ports")
    took["manager serving"] = time.monotonic() - killed_at  # a figure for the README, no target
    (output_dir / "restart-seconds.json").write_text(json.dumps(took, indent=1))

    after = pids_in(run_dir)
    (output_dir / "restart-lines.log").write_text("".join(
        line + "\n" for name in DAEMONS
        for line in (logs / f"{name}.log").read_text().splitlines() if "ptap-supervise" in line))
    for name, program in DAEMONS.items():
        assert comm(after[name]) == program
        assert after[f"{name}.supervisor"] == pids[f"{name}.supervisor"]  # the same supervisor
        log = (logs / f"{name}.log").read_text()
        how = "was killed by SIGKILL" if name != "influxdb" else "ended"
        assert len(re.findall(rf"{name} \(pid {pids[name]}\) {how} after .*; restart 1 in",
                              log)) == 1, log[-2000:]
    # The restarted cluster works: the new agent registers with the new manager.
    manager = f"127.0.0.1:{cluster_env['PTAP_MANAGER_PORT']}"
    wait_for(lambda: node_ready(manager, str(var / "keys"), cluster_env["PTAP_NODE"]), 60,
             "the restarted agent to be ready")
    assert pids_in(run_dir) == after  # and nothing died again meanwhile

    stopped = script("stop-all", cluster_env, tmp_path, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    for name in DAEMONS:
        assert f"stopped {name} (pid {after[name]}, and its supervisor pid " in stopped.stdout
    wait_for(lambda: not any(alive(pid) for pid in after.values()), 10, "every pid to end")
    assert not list(run_dir.glob("*.pid"))


@pytest.mark.integration
def test_start_all_still_fails_fast_when_a_daemon_cannot_start(
        restart_env: dict[str, str], cluster_logs: Path, tmp_path: Path) -> None:
    """A busy port is not a crash to retry: start-all stops the supervisor and says why."""
    run_dir = Path(restart_env["PTAP_VAR"]) / "run"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(restart_env["PTAP_MANAGER_PORT"])))
        squatter.listen()
        started = time.monotonic()
        done = script("start-all", restart_env, tmp_path)
        took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Address already in use" in done.stderr, output
    assert done.stderr.rstrip().endswith(
        "start-all: manager did not start — fix the cause above, then run scripts/start-all "
        "again"), output
    assert took < 60, took  # not PTAP_START_TIMEOUT (60 s) of restarts
    left = pids_in(run_dir)
    assert "manager.supervisor" not in left or not alive(left["manager.supervisor"]), left
    assert "manager" not in left or not alive(left["manager"]), left
    assert alive(left["influxdb"]), left  # what did start keeps running, as before; stop-all ends it
