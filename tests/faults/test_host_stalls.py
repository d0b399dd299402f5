"""The host-stall meter sees a freeze, and takes only the frozen part out of a gap."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.faults.host_stalls import HostStalls
from tests.integration.conftest import wait_for


def test_a_frozen_meter_writes_down_how_long(tmp_path: Path) -> None:
    """SIGSTOP on the meter is the host freezing as far as it can tell."""
    host = HostStalls(tmp_path / "stalls.txt")
    host.start()
    try:
        assert host.proc is not None
        before = time.time_ns()
        os.kill(host.proc.pid, signal.SIGSTOP)
        time.sleep(1.5)  # wait-ok: the freeze's length
        os.kill(host.proc.pid, signal.SIGCONT)
        stalls = wait_for(host.stalls, 10, "the meter to write the freeze down")
        after = time.time_ns()
    finally:
        host.stop()
    assert len(stalls) == 1, stalls
    start, end = stalls[0]
    assert before - 100_000_000 <= start and end <= after
    assert 1.4 <= (end - start) / 1e9 <= 2.5, stalls
    assert 1.4 <= host.within(before, after) <= 2.5


def test_within_counts_only_the_overlap(tmp_path: Path) -> None:
    host = HostStalls(tmp_path / "stalls.txt")
    s = 1_000_000_000
    host.path.write_text(f"{10 * s} {13 * s}\n{20 * s} {21 * s}\n")
    assert host.within(0, 9 * s) == 0
    assert host.within(11 * s, 30 * s) == 3.0  # 2 s of the first, all of the second
    assert host.within(12 * s, 20 * s) == 1.0
