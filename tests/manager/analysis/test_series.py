"""Raw query answers → per-node metric series: combining tag sets, totals, derived figures."""

from __future__ import annotations

import numpy as np

from manager.analysis import series
from manager.analysis.query import SeriesData

NAN = np.nan


def sd(measurement: str, tags: dict[str, str], ts: list[int], **columns: list[object]
       ) -> SeriesData:
    cols = {k: np.array(v, dtype=object if any(isinstance(x, str) for x in v) else float)
            for k, v in columns.items()}
    return SeriesData(measurement, tags, np.array(ts, dtype=np.int64), cols)


def test_combine_sums_or_takes_the_max_per_timestamp() -> None:
    a = (np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]))
    b = (np.array([2, 3, 4]), np.array([10.0, 1.0, 5.0]))
    ts, total = series.combine([a, b], "sum")
    assert ts.tolist() == [1, 2, 3, 4] and total.tolist() == [1, 12, 4, 5]
    assert series.combine([a, b], "max")[1].tolist() == [1, 10, 3, 5]
    assert series.combine([], "sum")[0].size == 0
    assert series.combine([a], "max") is a


def test_node_series_from_every_measurement() -> None:
    raw = {
        "cpu": [sd("cpu", {"node": "n1"}, [1, 2], user=[10, 20], system=[5, 5], iowait=[0, 0],
                   irq=[0, 0], softirq=[0, 0], steal=[0, 0], idle=[85, 75])],
        "disk": [sd("disk", {"node": "n1", "dev": "sda"}, [1, 2], read_bps=[100, NAN],
                    write_bps=[1, 2], read_iops=[1, 1], write_iops=[1, 1], busy_pct=[5, 50]),
                 sd("disk", {"node": "n1", "dev": "sdb"}, [1, 2], read_bps=[200, 300],
                    write_bps=[NAN, NAN], read_iops=[1, 1], write_iops=[1, 1], busy_pct=[7, 1])],
        "perf": [sd("perf", {"node": "n1", "scope": "job", "event": "cycles"}, [1],
                    value=[1000], per_sec=[5000]),
                 sd("perf", {"node": "n1", "scope": "job", "event": "ipc"}, [1],
                    value=[1.5], per_sec=[NAN]),
                 sd("perf", {"node": "n1", "scope": "system", "event": "cycles"}, [1],
                    value=[9], per_sec=[90])],
        "app": [sd("app", {"node": "n2", "name": "latency"}, [3, 4], value=[1, 2])],
        "mark": [sd("mark", {"node": "n2"}, [5, 4], job=["j", "j"], phase=["b", "a"],
                    iteration=[2.0, None])],
    }
    nodes = series.node_series(raw)
    n1, n2 = nodes["n1"], nodes["n2"]
    assert n1.metrics["cpu.busy"][1].tolist() == [15, 25]
    assert n1.metrics["disk.read_bps"][1].tolist() == [300, 300]  # NaN left out, not 0
    assert n1.metrics["disk.busy_pct"][1].tolist() == [7, 50]
    assert n1.metrics["disk.total_bps"][1].tolist() == [301, 302]
    assert n1.metrics["perf.cycles"][1].tolist() == [5000]  # per_sec for counters
    assert n1.metrics["perf.ipc"][1].tolist() == [1.5]  # value for ipc
    assert n1.metrics["perf.system.cycles"][1].tolist() == [90]
    assert n1.counts["cycles"][1].tolist() == [1000]
    assert n2.metrics["app.latency"][0].tolist() == [3, 4]
    assert n2.marks == [(4, {"phase": "a"}), (5, {"phase": "b", "iteration": 2})]
