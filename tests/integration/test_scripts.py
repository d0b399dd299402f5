"""``scripts/start-all`` and ``scripts/stop-all`` as a user runs them.

The cluster they start lives in a temporary ``PTAP_VAR`` on free ports, so
it never meets a developer's own cluster in ``var/`` on the default ports.
Those are the only ``PTAP_*`` variables set: no password and no keys folder
come from the caller. The dashboard is used as a person would, through the
login link start-all prints, in a real headless Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dashboard.auth import TOKEN_PATH
from scripts.influxdb_local import Credentials, influxql, request
from tests.dashboard.cdp import Browser
from tests.integration.conftest import ROOT, run_cli, wait_for

pytestmark = pytest.mark.integration

COMPONENTS = ("influxdb", "manager", "agent", "dashboard")
FINAL_STATES = {"succeeded", "failed", "timeout", "cancelled", "lost"}


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


def login_link(stdout: str, env: dict[str, str]) -> str:
    """The one login link start-all printed (for this cluster's dashboard)."""
    base = re.escape(f"http://127.0.0.1:{env['PTAP_DASHBOARD_PORT']}{TOKEN_PATH}")
    links = re.findall(rf"{base}\?token=[0-9a-f]{{64}}\b", stdout)
    assert len(links) == 1, stdout
    return str(links[0])


def link_status(link: str) -> int:
    """The status of opening ``link`` (no redirect followed): 302 logs in, 403 refuses."""
    base, path, query = link.partition(TOKEN_PATH)
    return request(base, "GET", path + query, timeout=10)[0]


def create_task_in_chromium(link: str, node: str, profile: Path, output_dir: Path) -> str:
    """Open ``link`` in headless Chromium, create a task with /jobs/new; the job id."""
    browser = Browser(profile / "profile", profile / "chromium.log")
    browser.start()
    tab = None
    try:
        tab = browser.new_tab(link)
        tab.wait("location.pathname === '/' && document.getElementById('logout') !== null", 15,
                 "the overview, logged in")
        assert "token" not in tab.js("location.href")  # the redirect took it out
        tab.screenshot(output_dir / "logged-in.png")
        tab.navigate(link.partition(TOKEN_PATH)[0] + "/jobs/new")
        assert "You are not logged in" not in tab.js("document.body.innerText")
        tab.js("document.getElementById('command').value = 'echo hello from the portal';"
               "document.getElementById('name').value = 'portal';"
               f"document.querySelector('input[name=nodes][value={json.dumps(node)}]')"
               ".checked = true;")
        tab.screenshot(output_dir / "new-task.png")
        tab.js("document.getElementById('create-task').click()")
        job = tab.wait("location.pathname.startsWith('/jobs/') && location.pathname != "
                       "'/jobs/new' && location.pathname.split('/')[2]", 15, "the job's page")
        tab.screenshot(output_dir / "job.png")
        return str(job)
    finally:
        if tab is not None:
            tab.close()
        browser.stop()


def finished_job(manager: str, keys: Path, job: str) -> dict[str, object] | None:
    rc, out, err = run_cli(["--manager", manager, "--keys", str(keys), "job", job, "--json"])
    assert rc == 0, err
    doc: dict[str, object] = json.loads(out)
    return doc if doc["state"] in FINAL_STATES else None


def restart_dashboard(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """End the dashboard start-all started (by its pid), then start-all again."""
    run_dir = Path(env["PTAP_VAR"]) / "run"
    dashboard = psutil.Process(pids_in(run_dir)["dashboard"])
    dashboard.terminate()
    dashboard.wait(15)
    done = script("start-all", env, cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "manager already running" in done.stdout
    assert "dashboard already running" not in done.stdout
    return done


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
    assert not {"PTAP_WEB_PASSWORD", "PTAP_KEYS", "PTAP_MANAGER"} & set(cluster_env)
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
    assert "export PTAP_KEYS" not in started.stdout  # ptap finds them (manager/cli/discovery.py)
    assert (Path(cluster_env["PTAP_VAR"]) / "run" / "dashboard.ready").exists()
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
    # The dashboard's password: made on this first start, 0600, printed this once.
    web_secret = var / "dashboard.secret"
    web_password = web_secret.read_text().strip()
    assert len(web_password) >= 32 and stat.S_IMODE(web_secret.stat().st_mode) == 0o600
    assert f"for /login in another browser: {web_password}" in started.stdout
    link = login_link(started.stdout, cluster_env)
    assert web_password not in link
    # No password is on a command line: ps shows those to every user.
    for pid in pids.values():
        cmdline = " ".join(psutil.Process(pid).cmdline())
        assert password.strip() not in cmdline and web_password not in cmdline
    assert open_to_others(var) == []

    # The printed link logs Chromium in, and a task made with /jobs/new runs on the agent.
    portal_job = create_task_in_chromium(link, node, tmp_path / "chromium", output_dir)
    done = wait_for(lambda: finished_job(manager, keys, portal_job), 60, "the portal's task")
    runs = done["runs"]
    assert isinstance(runs, list) and done["name"] == "portal"
    assert [(r["node"], r["state"], r["exit_code"]) for r in runs] == [(node, "succeeded", 0)]
    assert "hello from the portal" in runs[0]["stdout_tail"]

    again = script("start-all", cluster_env, tmp_path)  # idempotent: nothing new starts
    assert again.returncode == 0, again.stderr
    assert pids_in(run_dir) == pids
    assert "already running" in again.stdout
    assert secret.read_text() == password  # the same users and passwords
    assert cpu_points(url, ptap, node) > 0
    assert open_to_others(var) == []
    assert web_secret.read_text().strip() == web_password
    assert login_link(again.stdout, cluster_env) == link
    assert web_password not in again.stdout and f"in {web_secret}" in again.stdout

    # A restarted dashboard keeps the password, so the link printed before still logs in ...
    restarted = restart_dashboard(cluster_env, tmp_path)
    assert web_secret.read_text().strip() == web_password
    assert login_link(restarted.stdout, cluster_env) == link and link_status(link) == 302
    # ... and the caller's own PTAP_WEB_PASSWORD wins, without touching the file.
    mine = restart_dashboard({**cluster_env, "PTAP_WEB_PASSWORD": "my own password"}, tmp_path)
    assert "yours, from PTAP_WEB_PASSWORD" in mine.stdout and "my own password" not in mine.stdout
    own_link = login_link(mine.stdout, cluster_env)
    assert link_status(own_link) == 302 and link_status(link) == 403
    assert web_secret.read_text().strip() == web_password
    pids = pids_in(run_dir)

    stopped = script("stop-all", cluster_env, tmp_path, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), 10, "every pid to end")
    assert not list(run_dir.glob("*.pid"))
