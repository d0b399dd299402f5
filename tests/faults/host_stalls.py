"""When the whole host stopped running processes, as a bystander saw it.

The fault suite runs a dozen clusters at once on a small shared host, and such
a host sometimes freezes for seconds (a hypervisor's steal, memory reclaim):
a clean-clone CI run saw every agent of the suite miss the same 2.9 s, and the
two still running later the same 15.4 s. An agent that did not sample through
such a freeze is not at fault; one that stopped while the host ran is (a loop
blocked on its spool, a lock, a slow call).

So a meter process that does nothing but sleep 50 ms at a time runs beside the
suite and writes down every wake-up more than :data:`LATE` late, as
``start_ns end_ns`` lines (wall clock, as InfluxDB's timestamps are). It does
no I/O but those lines and needs a few microseconds of CPU a wake-up: what it
misses, no process here could have done. :meth:`HostStalls.within` says how
much of an interval the host was frozen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import wait_for

#: A wake-up this much later than asked counts as the host frozen for that long.
LATE = 0.5

METER = f"""
import os, sys, time
parent, late_ns = os.getppid(), int({LATE} * 1e9)
with open(sys.argv[1], "a", buffering=1) as out:
    before = time.time_ns()
    out.write(f"# watching since {{before}}\\n")
    while os.getppid() == parent:  # ends with the test process
        time.sleep(0.05)  # wait-ok: the meter measures how late this wakes
        now = time.time_ns()
        if now - before > 50_000_000 + late_ns:
            out.write(f"{{before}} {{now}}\\n")
        before = now
"""


class HostStalls:
    """The meter's process and what it wrote down."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.path.touch()
        self.proc = subprocess.Popen([sys.executable, "-c", METER, str(self.path)],
                                     stdin=subprocess.DEVNULL)
        # Watching: a freeze from here on is written down.
        try:
            wait_for(lambda: self.path.read_text(), 30, "the host-stall meter to start")
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def stalls(self) -> list[tuple[int, int]]:
        """Every freeze so far, ``(start_ns, end_ns)``."""
        out = []
        for line in self.path.read_text().splitlines():
            start, _, end = line.partition(" ")
            if start.isdigit() and end.isdigit():
                out.append((int(start), int(end)))
        return out

    def within(self, start_ns: int, end_ns: int) -> float:
        """Seconds of ``[start_ns, end_ns]`` during which the host was frozen."""
        return sum(max(0, min(end_ns, b) - max(start_ns, a))
                   for a, b in self.stalls()) / 1e9
