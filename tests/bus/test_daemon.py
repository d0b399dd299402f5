"""A daemon's start-up heap is taken out of the cyclic collector's full passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """\
import gc
from bus.daemon import settle_heap

class StartUp:  # what a daemon makes at start-up and keeps for its whole life
    pass

kept = [StartUp() for _ in range(1000)]
settle_heap()
seen = sum(type(o) is StartUp for o in gc.get_objects())

class Later:
    pass

cycle = Later()
cycle.me = cycle  # garbage only the cyclic collector can free
del cycle
print(gc.get_freeze_count() >= 1000, seen, gc.collect() >= 1)
"""


def test_what_lives_at_start_up_is_frozen_and_later_garbage_still_collected() -> None:
    # In a process of its own: freezing this test session's heap would hide its
    # cyclic garbage from the collector for the rest of the run.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.split() == ["True", "0", "True"], done.stdout + done.stderr
