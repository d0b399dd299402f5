"""The catalogue of metrics a report covers: where each comes from and which way is better.

A metric id is ``<measurement>.<field>`` for the fixed measurements
(``cpu.user``, ``mem.used``, ``proc.cpu_pct``), ``perf.<event>`` and
``perf.system.<event>`` for perf counters of the job's tree and of the whole
node, ``app.<name>`` for the program's own numbers, and ``run.<figure>`` for
one-value-per-run figures (duration, IPC over the run, CPU seconds).

Rows of several tag sets of one node (disks, NICs) are combined per
timestamp (:attr:`MetricDef.combine`): byte and operation rates are summed,
``busy_pct`` takes the busiest device. ``cpu`` uses the ``total`` row only.

Directions (which way is better) default to what a *test program* costs:
CPU, memory, I/O, context switches, faults and durations are
lower-is-better; ``cpu.idle``, ``mem.available`` and ``perf.ipc`` are
higher-is-better. App metrics are lower-is-better (latencies, sizes) unless
their name hints at throughput (:data:`THROUGHPUT_HINTS`). A job declares
any metric's direction with a tag ``direction.<name>=higher|lower``, where
``<name>`` is the metric id or, for app metrics, the bare app name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from manager.analysis.stats import Direction

if TYPE_CHECKING:
    import numpy as np

L, H = Direction.LOWER, Direction.HIGHER

#: Fields read from each measurement, as the agent's collectors write them
#: (docs/architecture.md#metric-path; tests check these against ``agent/collectors``, which the
#: manager does not import).
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "cpu": ("user", "system", "iowait", "irq", "softirq", "steal", "idle"),
    "mem": ("used", "available", "percent", "swap_used", "pgfault_ps", "pgmajfault_ps"),
    "disk": ("read_bps", "write_bps", "read_iops", "write_iops", "busy_pct"),
    "net": ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "errors", "drops"),
    "proc": ("cpu_pct", "rss", "read_bps", "write_bps", "threads", "ctx_vol", "ctx_invol", "fds"),
    "agent": ("cpu_pct", "rss", "samples_dropped", "spool_depth", "app_dropped"),
}
#: The ``pid`` tag of the ``proc`` row that sums the job's whole process tree.
TREE_PID = "tree"

#: App metric names containing one of these are higher-is-better by default.
THROUGHPUT_HINTS = ("ops", "qps", "tps", "rps", "throughput", "per_sec", "persec",
                    "bandwidth", "iops", "rate", "hits")
_HINT = re.compile(r"(^|[^a-z])(" + "|".join(THROUGHPUT_HINTS) + r")([^a-z]|$)")


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: its id, source (measurement and field), unit, direction, label.

    ``combine`` says how rows of several tag sets at one timestamp make one
    value (``sum``, ``max``, or ``one`` when there is a single tag set).
    ``main`` metrics are charted and broken down per phase. ``per_run`` is how a
    run's points make the run's one figure (``mean``, or ``max`` for a peak).
    """

    id: str
    measurement: str
    field: str
    unit: str
    direction: Direction
    label: str
    combine: str = "one"
    main: bool = False
    per_run: str = "mean"


def _defs(measurement: str, rows: list[tuple[str, str, Direction, str]], combine: str = "one",
          main: tuple[str, ...] = ()) -> list[MetricDef]:
    return [MetricDef(f"{measurement}.{f}", measurement, f, unit, d, label, combine, f in main)
            for f, unit, d, label in rows]


CPU = _defs("cpu", [
    ("busy", "%", L, "CPU busy (100 - idle), node"), ("user", "%", L, "CPU user, node"),
    ("system", "%", L, "CPU system, node"), ("iowait", "%", L, "CPU iowait, node"),
    ("irq", "%", L, "CPU irq, node"), ("softirq", "%", L, "CPU softirq, node"),
    ("steal", "%", L, "CPU steal, node"), ("idle", "%", H, "CPU idle, node"),
], main=("busy",))
MEM = _defs("mem", [
    ("used", "B", L, "memory used, node"), ("available", "B", H, "memory available, node"),
    ("percent", "%", L, "memory used, node"), ("swap_used", "B", L, "swap used, node"),
    ("pgfault_ps", "/s", L, "page faults/s, node"),
    ("pgmajfault_ps", "/s", L, "major page faults/s, node"),
], main=("used",))
DISK = _defs("disk", [
    ("read_bps", "B/s", L, "disk read, all disks"),
    ("write_bps", "B/s", L, "disk write, all disks"),
    ("read_iops", "/s", L, "disk reads/s, all disks"),
    ("write_iops", "/s", L, "disk writes/s, all disks"),
], combine="sum") + _defs("disk", [("busy_pct", "%", L, "disk busy, busiest disk")],
                          combine="max")
NET = _defs("net", [
    ("rx_bps", "B/s", L, "network received, all NICs"),
    ("tx_bps", "B/s", L, "network sent, all NICs"),
    ("rx_pps", "/s", L, "packets received/s"), ("tx_pps", "/s", L, "packets sent/s"),
    ("errors", "/s", L, "network errors/s"), ("drops", "/s", L, "network drops/s"),
], combine="sum")
#: Totals derived per timestamp: read + write, rx + tx (docs/architecture.md#analysis "bytes/s totals").
TOTALS = [
    MetricDef("disk.total_bps", "disk", "total_bps", "B/s", L, "disk read+write, all disks",
              main=True),
    MetricDef("net.total_bps", "net", "total_bps", "B/s", L, "network rx+tx, all NICs",
              main=True),
]
PROC = _defs("proc", [
    ("cpu_pct", "%", L, "CPU of the job's process tree (100 = one CPU)"),
    ("read_bps", "B/s", L, "tree storage reads"),
    ("write_bps", "B/s", L, "tree storage writes"), ("threads", "", L, "threads in the tree"),
    ("ctx_vol", "/s", L, "voluntary context switches/s, tree"),
    ("ctx_invol", "/s", L, "involuntary context switches/s, tree"),
    ("fds", "", L, "open file descriptors, tree"),
], main=("cpu_pct",))
# A run's memory figure is its peak, not the mean of its points: the mean moves
# with where the samples fall (one taken while the loader maps libraries, or as
# the tree exits, reads a fraction of the steady RSS), enough for two runs of one
# command to differ by more than the 5 % threshold; the peak does not move.
PROC.insert(1, MetricDef("proc.rss", "proc", "rss", "B", L, "resident memory of the tree",
                         main=True, per_run="max"))
AGENT = _defs("agent", [
    ("cpu_pct", "%", L, "agent CPU (the observer's cost)"), ("rss", "B", L, "agent memory"),
    ("samples_dropped", "", L, "samples dropped by the agent (running total)"),
    ("spool_depth", "", L, "agent spool depth (unacked batches)"),
    ("app_dropped", "", L, "app metric datagrams the kernel dropped (running total)"),
])
RUN = [
    MetricDef("run.duration", "run", "duration", "s", L, "run duration (started → ended)"),
    MetricDef("run.cpu_seconds", "run", "cpu_seconds", "s", L,
              "CPU seconds of the tree (mean proc.cpu_pct x duration)"),
    MetricDef("run.ipc", "run", "ipc", "", H,
              "instructions per cycle over the run (sum instructions / sum cycles)"),
]

FIXED: dict[str, MetricDef] = {
    m.id: m for m in CPU + MEM + DISK + NET + TOTALS + PROC + AGENT + RUN}

#: Units of perf's ``per_sec`` by event; counts per second otherwise.
_PERF_UNITS = {"task-clock": "ms/s", "cpu-clock": "ms/s", "ipc": "instr/cycle"}


def perf_def(event: str, scope: str) -> MetricDef:
    """``perf.<event>`` (job scope) or ``perf.system.<event>``: ``per_sec`` for counters,
    ``value`` for the derived ``ipc`` (which has no rate)."""
    mid = f"perf.{event}" if scope == "job" else f"perf.system.{event}"
    where = "job's tree" if scope == "job" else "whole node"
    if event == "ipc":
        return MetricDef(mid, "perf", "value", _PERF_UNITS["ipc"], H,
                         f"instructions per cycle, {where}", main=scope == "job")
    return MetricDef(mid, "perf", "per_sec", _PERF_UNITS.get(event, "/s"), L,
                     f"perf {event} per second, {where}")


def app_def(name: str) -> MetricDef:
    """``app.<name>``: lower-is-better unless the name hints at throughput."""
    direction = H if _HINT.search(name.lower()) else L
    return MetricDef(f"app.{name}", "app", "value", "", direction, f"app metric {name}",
                     main=True)


def declared_directions(tags: Mapping[str, str]) -> dict[str, Direction]:
    """``direction.<name>=higher|lower`` job tags → {name: Direction}; other values ignored."""
    out: dict[str, Direction] = {}
    for key, value in tags.items():
        if key.startswith("direction.") and value.strip().lower() in ("higher", "lower"):
            out[key.removeprefix("direction.")] = Direction(value.strip().lower())
    return out


def with_declared(metric: MetricDef, declared: Mapping[str, Direction]) -> MetricDef:
    """``metric`` with the direction a job declared for it (by id, or bare app name)."""
    found = declared.get(metric.id)
    if found is None and metric.measurement == "app":
        found = declared.get(metric.id.removeprefix("app."))
    if found is None or found is metric.direction:
        return metric
    return replace(metric, direction=found)


def run_figure(metric_id: str, values: np.ndarray) -> float:
    """A run's one figure of a metric from its points (``MetricDef.per_run``)."""
    per_run = FIXED[metric_id].per_run if metric_id in FIXED else "mean"
    return float(values.max() if per_run == "max" else values.mean())


def lookup(metric_id: str) -> MetricDef:
    """The definition of any metric id, fixed or dynamic (perf, app)."""
    if metric_id in FIXED:
        return FIXED[metric_id]
    if metric_id.startswith("perf.system."):
        return perf_def(metric_id.removeprefix("perf.system."), "system")
    if metric_id.startswith("perf."):
        return perf_def(metric_id.removeprefix("perf."), "job")
    if metric_id.startswith("app."):
        return app_def(metric_id.removeprefix("app."))
    raise KeyError(metric_id)


#: Report order by prefix (first match wins): run figures, the tree, perf, app,
#: node-wide, then the observer.
_ORDER = (("run.", 0), ("proc.", 1), ("perf.system.", 3), ("perf.", 2), ("app.", 4),
          ("cpu.", 5), ("mem.", 6), ("disk.", 7), ("net.", 8), ("agent.", 9))
_FIXED_POS = {mid: i for i, mid in enumerate(FIXED)}


def sort_key(metric_id: str) -> tuple[int, int, str]:
    """A key that puts metric ids in report order (catalogue order within a group)."""
    rank = next((r for prefix, r in _ORDER if metric_id.startswith(prefix)), len(_ORDER))
    return rank, _FIXED_POS.get(metric_id, len(_FIXED_POS)), metric_id
