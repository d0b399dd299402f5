"""Which node changed: a comparison's per-node breakdown (``nodes`` in the object).

A regression on one node of ten barely moves the pooled median of
:mod:`manager.analysis.compare`. Here every node that ran both jobs is
compared on its own, for the decisive metrics (the program's own, which
the overall verdict is drawn from): that node's runs only, the same sample
rule (:func:`manager.analysis.change.sample_mode`: ``iterations`` when the
node has enough runs on each side for them to reach significance, 4 against
4 or more, else its ``points``), the same test and verdict rule
(:mod:`manager.analysis.change`), and the node's verdict drawn the same way
as the job's. The runs the comparison already holds carry their node, so
this costs no query; a node that holds every run of both jobs reuses the
pooled entries as they are.

``flags`` lists each (node, metric) that regressed or improved, beside the
pooled verdict of that metric; ``hidden`` when the two differ, which is what
the pooled comparison alone would not show. The list stops at
:data:`MAX_FLAGS`; ``flags_count`` and ``hidden_count`` count them all.

Bounded: at most ``max_nodes`` nodes are detailed. With more nodes in both
jobs, each is first *screened* (:func:`manager.analysis.stats.possible_change`:
medians and Mann-Whitney p, no bootstrap), and the nodes with a possible
regression, then a possible improvement, largest change first, then the
others by their largest change (a large change that is not significant is
worth a look before a small one), are detailed. The rest are summarised:
how many, how many are quiet (no metric passes the screen, so neither a
regression nor an improvement is possible there), and the screen's suspects.

The work can be abandoned: with a ``stop`` event, every node checks it before
each metric and raises :class:`Stopped` once it is set (the manager sets it
when the request is cancelled, so its threads end within one metric's test).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from manager.analysis import change
from manager.analysis.report import ENV_KEYS, JobAnalysis, RunData
from manager.analysis.stats import Direction, Verdict, possible_change

#: Nodes detailed at most (the default of ``ptap compare`` and ``compare.get``).
MAX_NODES = 50
#: Lists of node names, flags and screen suspects stop here (their totals are counted).
MAX_NAMES = 200
MAX_FLAGS = 200
#: ``map``, or ``concurrent.futures.Executor.map``: how the per-node work is spread.
NodeMap = Callable[[Callable[[str], Any], Iterable[str]], Iterator[Any]]
NODE_FIELDS = ("metric", "samples", "n_base", "n_cand", "base_median", "cand_median", "diff",
               "change", "ci", "p_value", "verdict", "reason")
_RANK = {Verdict.REGRESSION.value: 0, Verdict.IMPROVEMENT.value: 1}


class Stopped(Exception):
    """The comparison was abandoned: its ``stop`` event was set (between two metrics)."""


def check(stop: threading.Event | None) -> None:
    """Raise :class:`Stopped` when ``stop`` is set."""
    if stop is not None and stop.is_set():
        raise Stopped("the comparison was abandoned")


def breakdown(base: JobAnalysis, cand: JobAnalysis, pooled: list[dict[str, Any]], *,
              threshold: float, alpha: float, max_nodes: int = MAX_NODES,
              map_nodes: NodeMap = map, stop: threading.Event | None = None
              ) -> dict[str, Any]:
    """The ``nodes`` object of a comparison whose pooled metric entries are ``pooled``.

    Nodes are tested independently, through ``map_nodes`` (``map``, or a thread
    pool's: numpy and scipy release the GIL, and each test seeds its own
    generator, so the result is the same either way). Each node checks ``stop``
    before each metric (:func:`check`)."""
    if max_nodes < 0:
        raise ValueError(f"max_nodes must be >= 0, not {max_nodes}")
    bn, cn = by_node(base.runs), by_node(cand.runs)
    shared = sorted(bn.keys() & cn.keys())
    tested = [e for e in pooled if change.decisive(e["metric"])]
    directions = {e["metric"]: Direction(e["direction"]) for e in tested}
    if len(shared) > max_nodes:
        chosen, rest, suspects = _screen(shared, bn, cn, directions, threshold, alpha, max_nodes,
                                         map_nodes, stop)
    else:  # every node is detailed: nothing to screen
        chosen, rest, suspects = shared, [], []
    detailed = list(map_nodes(
        lambda n: _detail(n, base, cand, bn[n], cn[n], tested, threshold, alpha, stop),
        chosen))
    flags = _flags(detailed, {e["metric"]: e["verdict"] for e in tested})
    only_base, only_cand = sorted(bn.keys() - cn.keys()), sorted(cn.keys() - bn.keys())
    return {
        "metrics": list(directions), "max_detailed": max_nodes, "shared": len(shared),
        "only_base": only_base[:MAX_NAMES], "only_base_count": len(only_base),
        "only_cand": only_cand[:MAX_NAMES], "only_cand_count": len(only_cand),
        "counts": {v.value: sum(d["verdict"] == v.value for d in detailed) for v in Verdict},
        "flags": flags[:MAX_FLAGS], "flags_count": len(flags),
        "hidden_count": sum(f["hidden"] for f in flags),
        "detailed": detailed,
        "summarised": {"count": len(rest),
                       "quiet": len(set(rest) - {s["node"] for s in suspects}),
                       "suspects": suspects[:MAX_NAMES], "suspects_count": len(suspects)},
    }


def _detail(node: str, base: JobAnalysis, cand: JobAnalysis, bruns: list[RunData],
            cruns: list[RunData], tested: list[dict[str, Any]], threshold: float, alpha: float,
            stop: threading.Event | None = None) -> dict[str, Any]:
    """One node compared on its own runs, metric by metric, and its verdict."""
    if len(bruns) == len(base.runs) and len(cruns) == len(cand.runs):
        # This node's runs are the jobs' runs: the pooled test is its test.
        entries = [{k: e[k] for k in NODE_FIELDS} for e in tested]
    else:
        entries = []
        for e in tested:
            check(stop)
            entries.append({"metric": e["metric"],
                            **change.test(e["metric"], Direction(e["direction"]), bruns, cruns,
                                          threshold=threshold, alpha=alpha)})
    return {"node": node, "verdict": change.overall_verdict(entries),
            "runs_base": len(bruns), "runs_cand": len(cruns),
            "environment_differences": _env_diff(base, cand, node), "metrics": entries}


def by_node(runs: list[RunData]) -> dict[str, list[RunData]]:
    """Runs grouped by node, in the job's order."""
    out: dict[str, list[RunData]] = {}
    for rd in runs:
        out.setdefault(rd.node, []).append(rd)
    return out


def _screen(shared: list[str], bn: dict[str, list[RunData]], cn: dict[str, list[RunData]],
            directions: dict[str, Direction], threshold: float, alpha: float, max_nodes: int,
            map_nodes: NodeMap, stop: threading.Event | None
            ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(nodes to detail, the others, the others' suspects): every node's possible
    changes, nodes ranked by their most telling one; nodes without any, by their
    largest change (significant or not)."""
    def possible(node: str) -> tuple[list[dict[str, Any]], float]:
        out, largest = [], 0.0
        for mid, direction in directions.items():
            check(stop)
            mode = change.sample_mode(mid, bn[node], cn[node], alpha)
            verdict, rel, p = possible_change(
                change.samples(mid, bn[node], mode), change.samples(mid, cn[node], mode),
                direction, threshold=threshold, alpha=alpha)
            largest = max(largest, _magnitude(rel))
            if verdict is not None:
                out.append({"node": node, "metric": mid, "possible": verdict.value,
                            "samples": mode, "change": change.json_number(rel), "p_value": p})
        return sorted(out, key=_telling), largest

    screened = dict(zip(shared, map_nodes(possible, shared), strict=True))
    found = {n: s for n, (s, _) in screened.items() if s}

    def rank(n: str) -> tuple[int, float, str]:
        return _telling(found[n][0]) if n in found else (len(_RANK), -screened[n][1], n)

    chosen = set(sorted(shared, key=rank)[:max_nodes])
    rest = [n for n in shared if n not in chosen]
    suspects = sorted((s for n in rest for s in found.get(n, [])), key=_telling)
    return sorted(chosen), rest, suspects


def _telling(s: dict[str, Any]) -> tuple[int, float, str]:
    """Sort key: regressions, then improvements, then the rest; larger changes first."""
    verdict = s.get("possible", s.get("verdict"))
    return _RANK.get(str(verdict), len(_RANK)), -_magnitude(s.get("change")), str(s["node"])


def _magnitude(x: float | str | None) -> float:
    if isinstance(x, str):
        return math.inf
    return 0.0 if x is None else abs(x)


def _flags(detailed: list[dict[str, Any]], pooled: dict[str, str]) -> list[dict[str, Any]]:
    """Every (node, metric) that regressed or improved; hidden ones first."""
    out = []
    for d in detailed:
        for e in d["metrics"]:
            if e["verdict"] in _RANK:
                out.append({"node": d["node"], "metric": e["metric"], "verdict": e["verdict"],
                            "pooled_verdict": pooled[e["metric"]],
                            "hidden": pooled[e["metric"]] != e["verdict"],
                            "samples": e["samples"], "change": e["change"], "ci": e["ci"],
                            "p_value": e["p_value"]})
    out.sort(key=lambda f: (not f["hidden"], *_telling(f)))
    return out


def _env_diff(base: JobAnalysis, cand: JobAnalysis, node: str) -> list[dict[str, str]]:
    """The node's facts that differ between the two jobs (when both are known)."""
    eb, ec = base.environment.get(node) or {}, cand.environment.get(node) or {}
    if "unknown" in (eb.get("source", "unknown"), ec.get("source", "unknown")):
        return []
    return [{"key": k, "base": _text(eb.get(k)), "cand": _text(ec.get(k))}
            for k in ENV_KEYS if eb.get(k) != ec.get(k)]


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
