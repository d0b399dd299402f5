"""What ``scripts/bench/scale.py --probe S`` reads every S seconds of its window.

A 10-minute run once ended with the manager at 379 MB peak and ``ptap nodes`` at
1.2 s, against 215 MB and 0.2 s in 60 s runs. Whether anything grows with the
run's length is read here as a time series instead of guessed from two totals:

* the manager's resident set now (``VmRSS``; ``VmHWM`` is only the peak);
* a ``nodes.list`` round trip and a ``jobs.list`` of one job (a request that
  costs the manager nothing) on one blocking DEALER: when both are slow the
  manager's loop or its host is, not the node list;
* ``ptap nodes`` as a user runs it (a whole process);
* the manager's CPU and its wait for a CPU (``/proc/PID/schedstat``) since the
  last sample, the host's load, and the ingest backlog (``status.get``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from manager.cli.oneshot import BlockingClient
from scripts.bench import dispatch as dsp
from scripts.bench.hostile import proc_status_mb
from scripts.bench.overview import ptap_nodes_seconds


def vm_rss_mb(pid: int) -> float | None:
    """Resident set of ``pid`` now, in MB, or None if it is gone."""
    return proc_status_mb(pid, "VmRSS")


class Probe:
    """Samples the manager ``pid`` on ROUTER port ``router`` every ``every`` seconds,
    from :meth:`begin` to :meth:`end`, into ``res["probe"]``."""

    def __init__(self, pid: int, router: int, every: float, res: dict[str, Any]) -> None:
        self.pid, self.router, self.every = pid, router, every
        self.rows: list[dict[str, Any]] = res.setdefault("probe", [])
        self._task: asyncio.Task[None] | None = None
        self._cpu = dsp.process_cpu(pid)
        self._client = BlockingClient(f"tcp://127.0.0.1:{router}", timeout=30.0)

    def _timed(self, msg_type: str, fields: dict[str, Any]) -> tuple[float, Any]:
        started = time.monotonic()
        result = self._client.ask(msg_type, fields)
        return time.monotonic() - started, result

    def sample(self, t: float, last: dict[str, float]) -> dict[str, Any]:
        """One row, ``t`` seconds into the window; ``last``: the CPU clocks of the last."""
        cpu, wait, wall = self._cpu(), dsp.runqueue_wait(self.pid), time.monotonic()
        span = max(1e-9, wall - last["wall"])
        row: dict[str, Any] = {"t": round(t, 1), "rss_mb": vm_rss_mb(self.pid),
                               "cores": (cpu - last["cpu"]) / span,
                               "cpu_wait": (wait - last["wait"]) / span,
                               "load": os.getloadavg()[0]}
        last.update(cpu=cpu, wait=wait, wall=wall)
        row["ping_ms"] = self._timed("jobs.list", {"limit": 1})[0] * 1000
        seconds, nodes = self._timed("nodes.list", {})
        row["list_ms"], row["nodes"] = seconds * 1000, len(nodes["nodes"])
        row["ptap_nodes_s"] = ptap_nodes_seconds(self.router)
        status = self._client.ask("status.get", {})
        row["queued_points"] = status["influxdb"]["queued_points"]
        return row

    def begin(self, t_start: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(t_start), name="probe")

    async def end(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self, t_start: float) -> None:
        """Sample until cancelled, printing each row as it comes."""
        self._client.open()
        last = {"cpu": self._cpu(), "wait": dsp.runqueue_wait(self.pid),
                "wall": time.monotonic()}
        try:
            while True:
                await asyncio.sleep(self.every)  # the sampling period itself
                row = await asyncio.to_thread(self.sample, time.monotonic() - t_start, last)
                self.rows.append(row)
                print("probe: " + format_row(row), file=sys.stderr, flush=True)
        finally:
            await self._client.close()


def format_row(r: dict[str, Any]) -> str:
    return (f"{r['t']:6.0f} s  rss {r['rss_mb'] or 0:6.1f} MB  nodes.list {r['list_ms']:7.1f} ms"
            f" ({r['nodes']})  ping {r['ping_ms']:6.1f} ms  ptap nodes {r['ptap_nodes_s']:5.2f} s"
            f"  manager {r['cores']:.2f} cores, waited {r['cpu_wait']:.2f}  load "
            f"{r['load']:.1f}  queued {r['queued_points']:,}")
