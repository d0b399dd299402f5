"""A series' points in order: which jobs count, how they are ordered and labelled.

Pure functions over the summaries of :mod:`manager.history.summaries`. The
order is the ``version`` tag's when every job has one (compared piece by
piece, numbers as numbers, so ``1.10`` comes after ``1.9``), else the jobs'
creation time: a ``commit`` cannot be ordered without the repository, so it
only labels its point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from manager.analysis import metrics

#: Tags that order or label points; they differ from job to job by design, so the
#: environment differences leave them out.
ORDER_TAGS = ("version", "commit")
#: Metric prefixes a history shows when none are asked for: the test's own numbers.
DEFAULT_PREFIXES = ("run.", "proc.", "app.")
_PIECE = re.compile(r"(\d+)|(\D+)")


@dataclass(slots=True)
class SeriesPoints:
    """One metric's points: positions in the job list, medians, ranges, run counts."""

    metric: str
    index: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: np.ndarray


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key for version strings: ``1.9 < 1.10``, ``v2 < v10``."""
    return tuple((0, int(num)) if num else (1, text)
                 for num, text in _PIECE.findall(version.strip()))


def ordered(summaries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The succeeded jobs' summaries in series order, and that order's name."""
    done = [s for s in summaries if s["job"].get("state") == "succeeded"]
    if done and all((s["job"].get("tags") or {}).get("version") for s in done):
        return sorted(done, key=lambda s: (version_key(s["job"]["tags"]["version"]),
                                           s["job"].get("created_at") or 0.0)), "version"
    return sorted(done, key=lambda s: s["job"].get("created_at") or 0.0), "time"


def label(job: dict[str, Any]) -> str:
    """How a point is named: its version, else its commit (12 characters), else its job id."""
    tags = job.get("tags") or {}
    if tags.get("version"):
        return str(tags["version"])
    if tags.get("commit"):
        return str(tags["commit"])[:12]
    return str(job["id"])


def wanted_metrics(summaries: list[dict[str, Any]], asked: list[str]) -> list[str]:
    """The metrics to show: those asked for, else every test-own metric any job has,
    in report order. Node-wide metrics (``cpu.*``, ``mem.*``...) describe the host
    more than the test, so they are shown only when asked for."""
    if asked:
        return list(dict.fromkeys(asked))
    present = {m for s in summaries for m in s["metrics"]}
    own = [m for m in present
           if m.startswith(DEFAULT_PREFIXES) or (m.startswith("perf.")
                                                 and not m.startswith("perf.system."))]
    return sorted(own, key=metrics.sort_key)


def points(summaries: list[dict[str, Any]], metric: str) -> SeriesPoints:
    """The points of ``metric`` over the ordered ``summaries`` (jobs without it skipped)."""
    rows = [(i, s["metrics"][metric]) for i, s in enumerate(summaries) if metric in s["metrics"]]
    return SeriesPoints(
        metric=metric,
        index=np.array([i for i, _ in rows], dtype=int),
        median=np.array([r["median"] for _, r in rows], dtype=float),
        low=np.array([r["low"] for _, r in rows], dtype=float),
        high=np.array([r["high"] for _, r in rows], dtype=float),
        runs=np.array([r["runs"] for _, r in rows], dtype=int),
    )
