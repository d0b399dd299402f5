"""``ptap shell`` against a real manager: on a terminal (completion, history) and piped."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Cluster, child_env

pytestmark = pytest.mark.integration


def read_until(fd: int, needle: bytes, timeout: float = 15.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 65536)
    return seen


def test_interactive_shell_completes_and_keeps_history(cluster: Cluster,
                                                       tmp_path: Path) -> None:
    history = tmp_path / "history"
    env = {**child_env(), "PTAP_HISTORY": str(history), "TERM": "dumb"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real CLI on a terminal
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "manager.cli.main", "--manager",
                                   cluster.manager.address, "shell"], env)
    try:
        read_until(fd, b"ptap> ")
        os.write(fd, b"nod\t--json\r")  # tab completes "nod" to "nodes "
        out = read_until(fd, b"ptap> ")
        assert b'"name": "node1"' in out
        os.write(fd, b"exit\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert "nodes --json" in history.read_text()


def test_piped_script_exits_with_the_last_status(cluster: Cluster) -> None:
    script = "nodes --json\njob nosuchjob\n"
    done = subprocess.run([sys.executable, "-m", "manager.cli.main", "--manager",
                           cluster.manager.address, "shell"], input=script, text=True,
                          capture_output=True, cwd=ROOT, env=child_env(), timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout)[0]["name"] == "node1"
    assert "ptap: " in done.stderr and "nosuchjob" in done.stderr
