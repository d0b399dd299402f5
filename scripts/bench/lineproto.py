"""Micro benchmark: manager.lineproto vs influxdb_client.Point on the same points.

    .venv/bin/python scripts/bench/lineproto.py [--points N] [--repeat R]

Prints µs per point for each encoder and their ratio, measured in the same
run on the same data (docs/architecture.md#tests-and-benchmarks). Three shapes of batch:

* ``cpu 1-decimal``: 6 float fields rounded as psutil's percentages are,
  100 rows per series (a batch covering a few seconds of many samples);
* ``agent mix 1 row``: one row per series, 6 fields of ints and floats, as
  an agent's one-second batch looks (per-series cost dominates);
* ``cpu full-precision``: 6 random 17-digit floats, the worst case for
  ``repr`` (rates computed by division look like this unless rounded).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from influxdb_client import Point, WritePrecision  # noqa: E402

from manager.lineproto import encode_series  # noqa: E402

FIELDS = ["user", "system", "iowait", "irq", "softirq", "idle"]
TS = 1_700_000_000_000_000_000


def cpu_batch(
    name: str, points: int, rows_per_series: int, value: Callable[[random.Random], Any]
) -> list:
    """Wire series: ``points`` rows spread over series of ``rows_per_series`` rows."""
    rng = random.Random(42)
    series = []
    for s in range(max(1, points // rows_per_series)):
        rows = [[TS + i * 10**9, *(value(rng) for _ in FIELDS)] for i in range(rows_per_series)]
        series.append([name, {"node": f"node-{s % 50:02d}", "cpu": str(s)}, FIELDS, rows])
    return series


def agent_mix(points: int) -> list:
    """One row per series; fields alternate int (bytes, counts) and float (rates)."""
    rng = random.Random(7)
    series = []
    for s in range(points):
        row = [TS, rng.randint(0, 10**9), round(rng.uniform(0, 100), 1), rng.randint(0, 10**6),
               round(rng.uniform(0, 1e6), 2), rng.randint(0, 500), round(rng.uniform(0, 100), 1)]  # fmt: skip
        tags = {"node": f"node-{s % 50:02d}", "dev": f"sd{s % 26}", "job": "j1"}
        series.append(["disk", tags, FIELDS, [row]])
    return series


def with_point(series_list: list) -> bytes:
    """What the same batch costs through influxdb_client.Point, one object per point."""
    lines = []
    for measurement, tags, fields, rows in series_list:
        for row in rows:
            point = Point(measurement)
            for key, value in tags.items():
                point.tag(key, value)
            for key, value in zip(fields, row[1:], strict=True):
                if value is not None:
                    point.field(key, value)
            point.time(row[0], WritePrecision.NS)
            lines.append(point.to_line_protocol())
    return "\n".join(lines).encode()


def best_of(repeat: int, func: Callable[[], Any]) -> float:
    """Fastest of ``repeat`` runs, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table row per batch shape."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    cases = {
        "cpu 1-decimal, 100 rows/series": cpu_batch(
            "cpu", args.points, 100, lambda r: round(r.uniform(0, 100), 1)
        ),
        "agent mix, 1 row/series": agent_mix(args.points),
        "cpu full-precision, 100 rows/series": cpu_batch(
            "cpu_fp", args.points, 100, lambda r: r.uniform(0, 100)
        ),
    }
    print(f"{'batch (6 fields/point)':38} {'lineproto':>12} {'Point':>12} {'Point/lineproto':>16}")
    for name, batch in cases.items():
        payload, points = encode_series(batch)  # also warms the series cache, as in steady state
        assert len(with_point(batch).split(b"\n")) == points == len(payload.split(b"\n"))
        ours = best_of(args.repeat, partial(encode_series, batch)) / points * 1e6
        theirs = best_of(max(1, args.repeat // 2), partial(with_point, batch)) / points * 1e6
        print(f"{name:38} {ours:9.2f} µs {theirs:9.2f} µs {theirs / ours:15.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
