"""scripts/launch-agents over real ssh: a private sshd on 127.0.0.1 stands for a test node.

The "remote" node is this machine reached through sshd on a free loopback
port, so the whole path is real: ssh, shipping the tree, bootstrap on the
node, the agent registering with a real manager, and stopping it again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Cluster, child_env, unused_port, wait_for

pytestmark = pytest.mark.integration

SSHD = Path("/usr/sbin/sshd")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[list[str]]:
    """A private sshd for root on 127.0.0.1; yields the ssh options that reach it."""
    if os.geteuid() != 0 or not SSHD.exists():
        pytest.fail("needs root and /usr/sbin/sshd (scripts/test installs openssh-server)")
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)],
                       check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    port = unused_port()
    config = keys / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
                      f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {keys / 'pid'}\n"
                      "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                      "UsePAM no\nStrictModes no\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                            stderr=subprocess.PIPE, text=True)
    opts = ["-p", str(port), "-i", str(keys / "client"), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    try:
        wait_for(lambda: subprocess.run(["ssh", *opts, "-o", "BatchMode=yes", "127.0.0.1",
                                         "true"], capture_output=True).returncode == 0,
                 20, "sshd to accept the test key")
        yield opts
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def launch(cluster: Cluster, ssh_opts: list[str], remote: Path, *extra: str
           ) -> subprocess.CompletedProcess[str]:
    args = [str(ROOT / "scripts" / "launch-agents"), "--manager", cluster.manager.address,
            "--dir", str(remote), "--timeout", "60", "--label", "lab"]
    for i in range(0, len(ssh_opts), 2):
        args += ["--ssh-opt", f"{ssh_opts[i]} {ssh_opts[i + 1]}"]
    return subprocess.run([*args, *extra, "127.0.0.1=remote1"], capture_output=True, text=True,
                          env=child_env(), timeout=300)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Path]:
    """The node's install folder; an agent a failed test left running there is ended."""
    folder = tmp_path / "node-home" / "ptap"
    yield folder
    # The supervisor first (it would restart the agent), then the agent.
    for name, marker in (("agent.supervisor", "supervise.py"), ("agent", "ptap-agent")):
        pid_file = folder / "var" / "run" / f"{name}.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if marker in Path(f"/proc/{pid}/cmdline").read_text(errors="replace") \
                    if Path(f"/proc/{pid}").exists() else False:
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder / ".venv", ignore_errors=True)


def test_launch_run_relaunch_and_stop(cluster: Cluster, sshd: list[str], remote: Path) -> None:
    done = launch(cluster, sshd, remote)
    assert done.returncode == 0, done.stderr
    assert "node remote1 is ready" in done.stdout
    node = next(n for n in cluster.cli_json("nodes") if n["name"] == "remote1")
    assert node["facts"]["labels"] == ["lab"]
    rc, out, err = cluster.cli("run", "--nodes", "label:lab", "--wait", "--", "sh", "-c",
                               "echo from-remote")
    assert rc == 0, err
    pid = int((remote / "var" / "run" / "agent.pid").read_text())
    again = launch(cluster, sshd, remote)
    assert again.returncode == 0 and "already running" in again.stdout
    assert int((remote / "var" / "run" / "agent.pid").read_text()) == pid
    stopped = launch(cluster, sshd, remote, "--stop")
    assert stopped.returncode == 0 and f"agent stopped (pid {pid})" in stopped.stdout
    assert not (remote / "var" / "run" / "agent.pid").exists()
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the remote agent to exit")


def test_unreachable_host_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    done = subprocess.run([str(ROOT / "scripts" / "launch-agents"), "--manager",
                           cluster.manager.address, "--ssh-opt", f"-p {unused_port()}",
                           "127.0.0.1=x"], capture_output=True, text=True, env=child_env(),
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "cannot reach it over ssh" in done.stderr


def test_launch_with_curve_keys_pending_then_accepted(tmp_path: Path, sshd: list[str],
                                                     process_logs: list[Path],
                                                     remote: Path) -> None:
    cluster = Cluster(tmp_path, process_logs, security="curve = yes\n")
    keys = str(cluster.manager.keys_dir)
    try:
        cluster.manager.start()
        done = launch(cluster, sshd, remote, "--keys", keys)
        assert done.returncode == 0, done.stderr
        assert f"node remote1 is pending — accept its key with: ptap --keys {keys} keys accept " \
               "remote1" in done.stdout
        assert (remote / "var" / "agent-keys" / "server.key").read_bytes() == \
            (cluster.manager.keys_dir / "server.key").read_bytes()
        again = launch(cluster, sshd, remote, "--keys", keys, "--accept")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert "accepted the key of node remote1" in again.stdout
        assert "node remote1 is ready" in again.stdout
        rc, _, err = cluster.cli("run", "--nodes", "remote1", "--wait", "--", "true")
        assert rc == 0, err
        assert launch(cluster, sshd, remote, "--stop").returncode == 0
    finally:
        cluster.stop()
