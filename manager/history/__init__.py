"""A test's performance over many jobs: per-job summaries, series, change points.

A *series* is every finished job with the same ``spec.series`` (or, without
one, the same job name). Each job contributes one point per metric: the
median of its runs' figures (:mod:`manager.analysis.report`), with their
range. Points are ordered by the ``version`` tag when every job has one,
else by time; ``version`` or ``commit`` labels them.

Modules: :mod:`.summaries` (the per-job summaries kept in the manager's
SQLite), :mod:`.series` (points in order), :mod:`.changepoints` (the
detector, a wrapper over a library chosen by ``scripts/bench/history.py``),
:mod:`.build` (the history object), :mod:`.service` (the manager's adapter),
:mod:`.render` (text and CSV) and :mod:`.html` (the HTML page).

The history object (reply to ``history.get``; ``ptap history --format json``)::

    {"kind": "ptap.history", "schema_version": 1, "generated_at": 1765000000.0,
     "series": "nightly-build", "order": "version" | "time",
     "detector": {"library": "ruptures", "version": "1.1.10", "method": "...",
                  "alpha": 0.005, "min_size": 3, ...},
     "jobs": [{"id", "name", "series", "label", "state", "created_at", "ended_at",
               "tags": {...}, "nodes": [...]}, ...],       # in order: point i is jobs[i]
     "metrics": [{"metric": "run.cpu_seconds", "label", "unit",
                  "direction": "lower" | "higher",
                  "points": [{"index": i, "job": id, "median", "low", "high", "runs"}],
                  "change_points": [{
                      "environment_differences": [{"scope": "job"|"node", "key",
                                                   "base", "cand"}],
                      "index": i, "job": id, "label",      # the first job after the step
                      "before": median before, "after": median after,
                      "step": relative change (0.3 = +30 %), "step_abs": after - before,
                      "ci": [low, high] of "step" (95 %), "p_value",
                      "direction": "regression" | "improvement"}]}, ...],
     "notes": ["..."]}

Only ``succeeded`` jobs make points; the others are counted in ``notes``.
"""

SCHEMA_VERSION = 1
