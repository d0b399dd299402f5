"""``scripts/start-all`` and ``scripts/stop-all`` as a user runs them.

The cluster they start lives in a temporary ``PTAP_VAR`` on free ports, so
it never meets a developer's own cluster in ``var/`` on the default ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scripts.influxdb_local import Credentials, influxql, request
from tests.integration.conftest import ROOT, run_cli, wait_for

pytestmark = pytest.mark.integration

COMPONENTS = ("influxdb", "manager", "agent")


def free_port_run(count: int) -> int:
    """A base port with ``count`` consecutive ports free a moment ago (the manager binds three)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {count} consecutive free ports found")


def script(name: str, env: dict[str, str], cwd: Path, timeout: float = 600.0
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / name)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pids_in(run_dir: Path) -> dict[str, int]:
    out = {}
    for path in run_dir.glob("*.pid"):
        text = path.read_text().strip()
        if text.isdigit():
            out[path.stem] = int(text)
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def open_to_others(var: Path) -> list[str]:
    """Everything under ``var`` (symlinks aside) that grants group or others anything."""
    found = []
    for top, dirs, files in os.walk(var):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):  # influxd and the agent keep working
                st = os.lstat(os.path.join(top, name))
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                    found.append(f"{stat.filemode(st.st_mode)} {os.path.join(top, name)}")
    if stat.S_IMODE(var.stat().st_mode) != 0o700:
        found.append(f"{stat.filemode(var.stat().st_mode)} {var}")
    return found


def cpu_points(url: str, user: Credentials, node: str) -> int:
    """How many cpu rows InfluxDB holds for ``node`` (read as ``user``)."""
    status, doc = influxql(url, f"SELECT count(idle) FROM cpu WHERE node = '{node}'",
                           db="ptap", auth=user)
    assert status == 200, doc
    series = doc["results"][0].get("series")  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


def report_cpu_samples(manager: str, keys: Path, job: str) -> int:
    """Samples of cpu.busy in the job's report, which the manager reads from InfluxDB."""
    rc, out, err = run_cli(["--manager", manager, "--keys", str(keys), "--timeout", "30",
                            "report", job, "--format", "json"])
    assert rc == 0, err
    busy = json.loads(out)["overall"]["metrics"].get("cpu.busy") or {}
    return int(busy.get("count") or 0)


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for the scripts: temp var folder, free ports; stops what is left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_")}
    env.update(PTAP_VAR=str(tmp_path / "var"), PTAP_INFLUX_PORT=str(free_port_run(1)),
               PTAP_MANAGER_PORT=str(free_port_run(3)), PTAP_DASHBOARD_PORT=str(free_port_run(1)),
               PTAP_NODE=f"it-{uuid.uuid4().hex[:6]}", PTAP_START_TIMEOUT="60")
    yield env
    # Whatever a failed test left running, stop it through the script under test,
    # then make sure by pid: never by name.
    left = pids_in(tmp_path / "var" / "run")
    script("stop-all", env, tmp_path, timeout=120)
    for pid in left.values():
        if alive(pid):
            psutil.Process(pid).kill()


def test_stop_all_with_nothing_running_is_a_no_op(cluster_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    done = script("stop-all", cluster_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    (tmp_path / "var" / "run").mkdir(parents=True)
    (tmp_path / "var" / "run" / "manager.pid").write_text("999999999\n")  # stale
    done = script("stop-all", cluster_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "var" / "run" / "manager.pid").exists()


def test_start_all_then_stop_all(cluster_env: dict[str, str], tmp_path: Path,
                                 output_dir: Path) -> None:
    run_dir = Path(cluster_env["PTAP_VAR"]) / "run"
    # From another directory: the scripts must not depend on the caller's cwd.
    started = script("start-all", cluster_env, tmp_path)
    (output_dir / "start-all.out").write_text(started.stdout + started.stderr)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "ptap nodes" in started.stdout
    pids = pids_in(run_dir)
    assert set(COMPONENTS) <= set(pids)
    assert all(alive(pid) for pid in pids.values())
    assert (Path(cluster_env["PTAP_VAR"]) / "manager.db").exists()

    manager = f"127.0.0.1:{cluster_env['PTAP_MANAGER_PORT']}"
    keys = Path(cluster_env["PTAP_VAR"]) / "keys"
    assert f"export PTAP_KEYS={keys}" in started.stdout
    rc, out, err = run_cli(["--manager", manager, "--keys", str(keys), "nodes", "--json"])
    assert rc == 0, err
    assert [(n["name"], n["state"]) for n in json.loads(out)] == [
        (cluster_env["PTAP_NODE"], "ready")]
    # Even on loopback, a client without the admin key cannot start a job.
    rc, out, err = run_cli(["--manager", manager, "--timeout", "2", "run", "--", "true"])
    assert rc != 0 and "--keys" in err, (rc, out, err)
    rc, out, _ = run_cli(["--manager", manager, "--keys", str(keys), "jobs", "--json"])
    assert rc == 0 and json.loads(out) == []

    # InfluxDB wants a user; the manager writes as ptap, with the password from var/.
    var = Path(cluster_env["PTAP_VAR"])
    secret = var / "influxdb.secret"
    assert str(secret) in started.stdout and str(var / "influxdb-admin.secret") in started.stdout
    password = secret.read_text()
    url = f"http://127.0.0.1:{cluster_env['PTAP_INFLUX_PORT']}"
    status, _ = request(url, "POST", "/write", params={"db": "ptap"}, body=b"intruder v=1i")
    assert status == 401
    status, _ = influxql(url, "SHOW DATABASES")
    assert status == 401
    ptap = Credentials("ptap", password.strip(), secret)
    node = cluster_env["PTAP_NODE"]
    wait_for(lambda: cpu_points(url, ptap, node), 30, "the agent's cpu points in InfluxDB")
    # ... and reads reports back as ptap.
    rc, out, err = run_cli(["--manager", manager, "--keys", str(keys), "run", "--wait",
                            "--", "sleep", "2"])
    assert rc == 0, err
    job = out.split()[0]
    wait_for(lambda: report_cpu_samples(manager, keys, job), 30, "cpu samples in the report")
    # The dashboard reads its run summaries from InfluxDB itself, as ptap too.
    dashboard = f"http://127.0.0.1:{cluster_env['PTAP_DASHBOARD_PORT']}"
    status, page = request(dashboard, "GET", f"/report/{job}", timeout=30)
    assert status == 200 and b"cpu busy %" in page and b"HTTP 401" not in page, page[-2000:]
    # The password is on no command line: ps shows those to every user.
    for pid in pids.values():
        assert password.strip() not in " ".join(psutil.Process(pid).cmdline())
    assert open_to_others(var) == []

    again = script("start-all", cluster_env, tmp_path)  # idempotent: nothing new starts
    assert again.returncode == 0, again.stderr
    assert pids_in(run_dir) == pids
    assert "already running" in again.stdout
    assert secret.read_text() == password  # the same users and passwords
    assert cpu_points(url, ptap, node) > 0
    assert open_to_others(var) == []

    stopped = script("stop-all", cluster_env, tmp_path, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), 10, "every pid to end")
    assert not list(run_dir.glob("*.pid"))
