"""The test manager under ``scripts/supervise.py``, the supervisor ``scripts/start-all`` uses.

:class:`SupervisedManagerProc` is :class:`tests.integration.conftest.ManagerProc`
started as ``supervise.py manager --pidfile F -- python -m manager.main …``: the
process the test holds is the supervisor, and the manager's own pid is in the
pid file. Its ports are chosen before the first start (a restart by the
supervisor reuses the same command line, so ``bind_port = 0`` would move it).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bus.ports import RANDOM_BIND_LOW, outgoing_port_range
from tests.faults.harness import poll
from tests.integration.conftest import ROOT, ManagerProc

SUPERVISE = ROOT / "scripts" / "supervise.py"


def free_base_port(attempts: int = 50) -> int:
    """A port P with P, P+1 and P+2 free now (ROUTER, PUB, PULL), below the kernel's
    range for outgoing connections, as a manager's must be to restart on the same
    ports (bus.ports.outgoing_port_range)."""
    low = outgoing_port_range()[0]
    for _ in range(attempts):
        base = random.randrange(RANDOM_BIND_LOW, low - 3)
        try:
            held = []
            for port in (base, base + 1, base + 2):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no three consecutive free ports on 127.0.0.1")


class SupervisedManagerProc(ManagerProc):
    """A manager that its supervisor restarts when it dies (see the module docstring)."""

    def __init__(self, tmp: Path, influx_url: str, database: str) -> None:
        super().__init__(tmp, influx_url, database)
        self.pidfile = tmp / "manager.pid"
        self.router_port = free_base_port()
        self.argv = [sys.executable, str(SUPERVISE), "manager", "--pidfile", str(self.pidfile),
                     "--", *self.argv]

    def daemon_pid(self) -> int | None:
        """The manager's pid as the supervisor wrote it, if that process is alive."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def _ready(self) -> dict[str, Any] | None:
        if not self.alive:
            raise AssertionError(f"the manager's supervisor exited; see {self.log_path}")
        try:
            info = json.loads(self.ready_file.read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.daemon_pid() else None

    def wait_ready(self, timeout: float) -> float:
        """Seconds until the ready file names the running manager (the new one)."""
        t0 = time.monotonic()
        poll(self._ready, timeout, "the restarted manager's ready file", interval=0.05)
        return time.monotonic() - t0

    def restarts_logged(self) -> list[str]:
        """The supervisor's restart lines so far."""
        text = self.log_path.read_text(errors="replace")
        return re.findall(r"manager \(pid \d+\) [^\n]*; restart \d+ in [^\n]*", text)

    def wait_restart(self, old: int, timeout: float) -> tuple[int, float]:
        """The new manager's pid and the seconds until it was there (pid file)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            pid = self.daemon_pid()
            if pid is not None and pid != old:
                return pid, time.monotonic() - t0
            time.sleep(0.02)  # wait-ok: poll step under a deadline
        raise AssertionError(f"no new manager {timeout:g} s after pid {old} died")
