"""What ``scripts/bench/scale.py`` measures from outside the fleet.

:class:`Cpu` reads the CPU seconds of the manager, influxd and the agents' workers
(the kernel's per-process CPU clocks, as ``scripts/bench/dispatch.py`` does) and of
the whole host; :func:`cli_nodes` and :func:`overview_draw` time ``ptap nodes`` and
the dashboard's overview in headless Chromium with ``scripts/bench/overview.py``'s
measures; :func:`stored` counts the points InfluxDB holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.bench import dispatch as dsp
from scripts.bench.overview import overview_draw_seconds, ptap_nodes_seconds
from scripts.influxdb_local import influxql

DATABASE = "ptap"
DRAW_TIMEOUT = 180.0  # the overview took 64 s at 1,598 nodes before it was paged


class Cpu:
    """CPU seconds of the manager, influxd and the workers, and of the whole host."""

    def __init__(self, manager: int, influxd: int, workers: list[int]) -> None:
        agents = [dsp.process_cpu(pid) for pid in workers]
        self.clocks: dict[str, Callable[[], float]] = {
            "manager": dsp.process_cpu(manager), "influxd": dsp.process_cpu(influxd),
            "agents": lambda: sum(clock() for clock in agents)}

    def read(self) -> dict[str, float]:
        return {**{k: c() for k, c in self.clocks.items()}, "host": dsp.host_busy(),
                "wall": time.monotonic()}

    @staticmethod
    def cores(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        """Cores each used between readings ``a`` and ``b``; ``others``: the rest of the
        host (this bench's own process, and whatever else shares the machine)."""
        wall = b["wall"] - a["wall"]
        out = {k: (b[k] - a[k]) / wall for k in a if k != "wall"}
        out["others"] = out["host"] - out["manager"] - out["influxd"] - out["agents"]
        return out


def cli_nodes(router: int, runs: int = 3) -> list[float]:
    """Wall seconds of ``ptap nodes`` (the whole CLI process), ``runs`` times."""
    return [ptap_nodes_seconds(router) for _ in range(runs)]


def overview_draw(url: str, total: int, tmp: Path, loads: int = 2) -> list[float | None]:
    """Seconds to a drawn overview counting ``total`` nodes, a cold tab then warm ones
    (``scripts/bench/overview.py``'s measure); None: not drawn within :data:`DRAW_TIMEOUT`
    (and no warm tab tried)."""
    from tests.dashboard.cdp import Browser

    browser = Browser(tmp / "chromium").start()
    out: list[float | None] = []
    try:
        for _ in range(loads):
            try:
                out.append(overview_draw_seconds(browser, url, total, DRAW_TIMEOUT))
            except AssertionError:
                out.append(None)
                break
        return out
    finally:
        browser.stop()


def stored(url: str) -> int:
    """Points of the ``scale`` measurement InfluxDB holds."""
    status, doc = influxql(url, 'SELECT count("value") FROM "scale"', db=DATABASE, timeout=600)
    results: Any = doc.get("results") or [{}]
    series = results[0].get("series")
    if status != 200 or "error" in results[0]:
        raise RuntimeError(f"count query: HTTP {status} {str(doc)[:200]}")
    return int(series[0]["values"][0][1]) if series else 0


def sec(value: float | None) -> str:
    return f"not within {DRAW_TIMEOUT:g} s" if value is None else f"{value:.2f} s"
