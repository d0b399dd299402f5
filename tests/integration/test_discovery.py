"""The CLI finds the local cluster by itself: ``scripts/start-all``, then ``ptap`` with
neither ``--manager`` nor ``--keys`` nor their variables.

The cluster lives in a temporary ``PTAP_VAR`` on free ports (never a
developer's own ``var/``), so the CLI is given ``PTAP_VAR`` as start-all was:
it then finds the manager's port in ``PTAP_VAR/run/manager.ready`` and the
admin key in ``PTAP_VAR/keys``, as it finds ``var/`` of its checkout when
nothing is set. ``ptap doctor`` on that cluster (InfluxDB with authentication,
the dashboard) exits 0. Another user, and a key file others may read, are
refused with one line.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

PTAP = ROOT / ".venv" / "bin" / "ptap"


def free_ports(count: int) -> int:
    """A base port with ``count`` consecutive ports free a moment ago (the manager binds
    three; start-all needs fixed ports, so a race-free socket cannot be handed over)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        socks = []
        try:
            for port in range(base, min(base + count, 65536)):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            if len(socks) == count:
                return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {count} consecutive free ports found")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any PTAP_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_")}
    env.update(extra)
    return env


def script(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / name)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


def ptap(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PTAP), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """start-all in a temporary PTAP_VAR on free ports; stop-all afterwards."""
    tmp = tmp_path_factory.mktemp("local-cluster")
    env = clean_env(PTAP_VAR=str(tmp / "var"), PTAP_INFLUX_PORT=str(free_ports(1)),
                    PTAP_MANAGER_PORT=str(free_ports(3)),
                    PTAP_DASHBOARD_PORT=str(free_ports(1)),
                    PTAP_NODE=f"disc-{uuid.uuid4().hex[:6]}", PTAP_START_TIMEOUT="60")
    started = script("start-all", env, tmp)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield env
    finally:
        stopped = script("stop-all", env, tmp)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_ptap_nodes_needs_no_keys_or_manager_variable(local_cluster: dict[str, str],
                                                      tmp_path: Path) -> None:
    env = clean_env(PTAP_VAR=local_cluster["PTAP_VAR"], HOME=str(tmp_path))
    done = ptap("nodes", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "STATE"]
    assert [row.split()[:2] for row in rows] == [[local_cluster["PTAP_NODE"], "ready"]]


def test_doctor_on_the_local_cluster_exits_0(local_cluster: dict[str, str],
                                             tmp_path: Path) -> None:
    env = clean_env(PTAP_VAR=local_cluster["PTAP_VAR"], HOME=str(tmp_path),
                    PTAP_DASHBOARD_PORT=local_cluster["PTAP_DASHBOARD_PORT"])
    done = ptap("doctor", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    keys = Path(local_cluster["PTAP_VAR"]) / "keys"
    assert (f"(keys in {keys}, found as the local cluster's keys)") in done.stdout
    assert "the manager writes and reads" in done.stdout  # as user ptap, with its password
    assert (f"ok    dashboard http://127.0.0.1:{local_cluster['PTAP_DASHBOARD_PORT']}/: "
            "serving") in done.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run ptap as another user")
@pytest.mark.usefixtures("checkout_reachable_by_others")
def test_another_user_is_refused_with_one_line(local_cluster: dict[str, str],
                                               tmp_path: Path) -> None:
    var = Path(local_cluster["PTAP_VAR"])
    env = clean_env(PTAP_VAR=str(var), HOME="/nonexistent")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           str(PTAP), "nodes"], cwd="/", env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (f"ptap: cannot read the keys in {var / 'keys'} (Permission denied): "
                           "they belong to whoever started that cluster — run ptap as that "
                           "user, or get an administrator key of your own and pass --keys "
                           "DIR\n")


def test_a_key_file_others_can_read_is_refused(local_cluster: dict[str, str],
                                               tmp_path: Path) -> None:
    secret = Path(local_cluster["PTAP_VAR"]) / "keys" / "admin.key_secret"
    env = clean_env(PTAP_VAR=local_cluster["PTAP_VAR"], HOME=str(tmp_path))
    secret.chmod(0o644)
    try:
        done = ptap("nodes", env=env, cwd=tmp_path)
    finally:
        secret.chmod(0o600)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "mode 0644" in done.stderr
    assert f"chmod 600 {secret}" in done.stderr
