"""History benchmark: change-point detectors on synthetic series with known steps, side by side.

    .venv/bin/python scripts/bench/history.py [--reps 2] [--no-spa] [--json]

1. Synthetic series, fixed seed: level 100, Gaussian noise of sd 1-10 % of the
   level, lengths 20-500, with 1-4 steps each of 2-30 % (up or down, at
   least 7 points from each other and from the ends), plus step-free series
   of the same lengths and noise.
2. Each series goes through ptap's detector (``manager.history.changepoints``,
   ruptures' PELT plus its t-test) and through Apache Otava's
   ``compute_change_points`` with its default settings (window 50, p < 0.001)
   and, unless ``--no-spa``, MongoDB's signal-processing-algorithms
   ``e_divisive`` with its defaults (p < 0.05, 100 permutations). Otava and
   MongoDB's package pin numpy versions ptap cannot share (numpy 2.2 and < 2),
   so each runs in its own venv under ``~/.cache/ptap-bench`` (made on first
   use with ``pip install``), fed the same series as JSON; their time is taken
   inside that process, per series, as ptap's is here.
3. A detection within ±2 points of a true step's first point finds it (each
   step found once). Reported per detector: recall of the steps ≥ 3× the
   noise's sd and of the smaller ones, precision, false positives per 100
   points on the step-free series, and the mean time per series.
4. A 500-job (and 1,000-job) history: a real state database with that many
   finished jobs of one series and their stored summaries (40 metrics each),
   answered by the manager's own ``HistoryService.history`` (the code behind
   ``history.get``), timed.

Checks printed at the end: recall ≥ 0.9 for steps ≥ 3 sd, false positives ≤
0.1 per 100 points, both at least as good as Otava's in the same run, and
the 500-job history under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bus.messages import JobSpec, RunState  # noqa: E402
from manager.analysis.report import ENV_KEYS  # noqa: E402
from manager.analysis.service import Analyst  # noqa: E402
from manager.history.changepoints import Detector  # noqa: E402
from manager.history.service import HistoryService  # noqa: E402
from manager.history.summaries import SummaryStore  # noqa: E402
from manager.scheduler import Job, JobState, Run  # noqa: E402
from manager.state import Store  # noqa: E402

LENGTHS = (20, 50, 100, 200, 500)
NOISE = (0.01, 0.02, 0.05, 0.10)
STEPS = (0.02, 0.05, 0.10, 0.20, 0.30)
TOLERANCE = 2
MIN_GAP = 7
VENVS = Path.home() / ".cache" / "ptap-bench"
#: Each foreign detector: venv name, pip package, and the loop it runs over stdin's series.
FOREIGN = {
    "otava": ("otava", "apache-otava", (
        "from otava.analysis import compute_change_points as f\n"
        "def find(s):\n    return [int(cp.index) for cp in f(s)[0]]\n")),
    "spa": ("spa", "signal-processing-algorithms", (
        "from signal_processing_algorithms.energy_statistics.energy_statistics "
        "import e_divisive\n"
        "def find(s):\n    return sorted(int(i) for i in e_divisive(s))\n")),
}
_LOOP = ("import json, sys, time\nout = []\nfor s in json.load(sys.stdin):\n"
         "    t = time.perf_counter(); cps = find(s)\n"
         "    out.append({'cps': cps, 's': time.perf_counter() - t})\n"
         "json.dump(out, sys.stdout)\n")


def synthetic(reps: int, seed: int = 15) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(series with steps, step-free series), each ``{"values", "steps", "sd", "size"}``."""
    rng = np.random.default_rng(seed)
    stepped, flat = [], []
    for n in LENGTHS:
        count = 1 if n <= 50 else min(4, n // 100 + 1)
        for sd in NOISE:
            for size in STEPS:
                for _ in range(reps):
                    steps = _positions(n, count, rng)
                    level = np.full(n, 100.0)
                    for at in steps:
                        level[at:] *= 1 + size * rng.choice([-1.0, 1.0])
                    stepped.append({"values": level + rng.normal(0, 100 * sd, n),
                                    "steps": steps, "sd": sd, "size": size, "n": n})
            for _ in range(5 * reps):
                flat.append({"values": 100 + rng.normal(0, 100 * sd, n), "steps": [], "sd": sd,
                             "size": 0.0, "n": n})
    return stepped, flat


def _positions(n: int, count: int, rng: np.random.Generator) -> list[int]:
    """Evenly spread step positions with some jitter, ≥ MIN_GAP apart and from the ends."""
    base = [round(n * (i + 1) / (count + 1)) for i in range(count)]
    room = max(0, n // (count + 1) - MIN_GAP) // 2
    return sorted(int(b + rng.integers(-room, room + 1)) for b in base)


def run_ptap(series: list[np.ndarray]) -> list[dict[str, Any]]:
    detector, out = Detector(), []
    for values in series:
        t = time.perf_counter()
        cps = [cp.index for cp in detector.find(values)]
        out.append({"cps": cps, "s": time.perf_counter() - t})
    return out


def foreign_python(name: str) -> Path:
    """The venv interpreter of a foreign detector, made with pip on first use."""
    folder, package, _ = FOREIGN[name]
    python = VENVS / folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", package], check=True)
    return python


def run_foreign(name: str, series: list[np.ndarray]) -> list[dict[str, Any]]:
    python = foreign_python(name)
    code = FOREIGN[name][2] + _LOOP
    payload = json.dumps([v.tolist() for v in series])
    done = subprocess.run([str(python), "-c", code], input=payload, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return list(json.loads(done.stdout))


def score(cases: list[dict[str, Any]], found: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall (big and small steps), precision, FP per 100 points, time per series."""
    hits = {"big": [0, 0], "small": [0, 0]}
    detections = matched = fp_flat = flat_points = 0
    for case, result in zip(cases, found, strict=True):
        cps = sorted(int(i) for i in result["cps"])
        if not case["steps"]:
            fp_flat += len(cps)
            flat_points += case["n"]
            continue
        detections += len(cps)
        free = list(cps)
        kind = "big" if case["size"] >= 3 * case["sd"] else "small"
        for step in case["steps"]:
            near = [c for c in free if abs(c - step) <= TOLERANCE]
            hits[kind][1] += 1
            if near:
                hits[kind][0] += 1
                matched += 1
                free.remove(min(near, key=lambda c: abs(c - step)))
    times = [r["s"] for r in found]
    long = [r["s"] for c, r in zip(cases, found, strict=True) if c["n"] == max(LENGTHS)]
    return {
        "recall_big": hits["big"][0] / max(1, hits["big"][1]),
        "recall_small": hits["small"][0] / max(1, hits["small"][1]),
        "precision": matched / max(1, detections),
        "fp_per_100": 100.0 * fp_flat / max(1, flat_points),
        "fp_count": fp_flat, "flat_points": flat_points,
        "ms_per_series": 1000 * float(np.mean(times)),
        "ms_per_series_500": 1000 * float(np.mean(long)) if long else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    stepped, flat = synthetic(args.reps)
    cases = stepped + flat
    series = [c["values"] for c in cases]
    with tempfile.TemporaryDirectory(prefix="ptap-bench-history-") as tmp:
        jobs = {n: asyncio.run(time_history(Path(tmp) / f"state-{n}.db", n))
                for n in (500, 1000)}
    detectors = {"ptap": run_ptap} | {n: (lambda s, n=n: run_foreign(n, s))
                                      for n in FOREIGN if n != "spa" or not args.no_spa}
    results = {}
    for name, fn in detectors.items():
        results[name] = score(cases, fn(series))
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    return {"series": {"stepped": len(stepped), "step_free": len(flat),
                       "big_steps": sum(len(c["steps"]) for c in stepped
                                        if c["size"] >= 3 * c["sd"])},
            "detectors": results, "history_seconds": jobs}


def make_history_state(path: Path, jobs: int, metrics: int = 40) -> None:
    """A state database with ``jobs`` finished jobs of series ``nightly`` and their
    summaries, as the manager stores them."""
    rng = np.random.default_rng(7)
    store, summaries = Store.open(path), SummaryStore(path)
    t0 = 1_760_000_000.0
    names = [f"app.metric{i}" for i in range(metrics)]
    try:
        for i in range(jobs):
            spec = JobSpec(command=["./bench"], name="nightly", tags={"version": f"1.{i}"})
            job = Job(id=f"job{i:06d}", spec=spec, created_at=t0 + 60 * i,
                      state=JobState.SUCCEEDED, ended_at=t0 + 60 * i + 30)
            run = Run(id=f"run{i:06d}", job_id=job.id, node="node1", iteration=1,
                      state=RunState.SUCCEEDED, started_at=t0 + 60 * i,
                      ended_at=t0 + 60 * i + 30)
            store.add_job(job, [run])
            summaries.put(_bench_summary(job, names, rng))
    finally:
        store.close()
        summaries.close()


def _bench_summary(job: Job, names: list[str], rng: np.random.Generator) -> dict[str, Any]:
    values = {m: float(v) for m, v in zip(names, rng.normal(100, 3, len(names)), strict=True)}
    return {"version": 1,
            "job": {"id": job.id, "name": job.spec.name, "series": job.spec.name,
                    "state": "succeeded", "created_at": job.created_at, "ended_at": job.ended_at,
                    "command": job.spec.command, "targets": ["all"], "collect": ["system"],
                    "interval": 1.0, "repeat": 1, "tags": dict(job.spec.tags),
                    "nodes": ["node1"]},
            "environment": {"node1": {**{k: "x" for k in ENV_KEYS}, "source": "recorded"}},
            "metrics": {m: {"median": v, "low": v - 1, "high": v + 1, "runs": 3}
                        for m, v in values.items()}}


async def time_history(path: Path, jobs: int) -> float:
    """Seconds the manager's HistoryService takes to answer a ``jobs``-job series
    whose summaries are stored (median of 3; the first opens the database)."""
    make_history_state(path, jobs)
    analyst = Analyst(lambda job_id: None, lambda node, when: None, None)  # type: ignore[arg-type]
    service = HistoryService(analyst, lambda: str(path), lambda coro, name: None)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        history = await service.history("nightly", [], 0.0, 0)
        times.append(time.perf_counter() - t)
        assert len(history["jobs"]) == jobs, len(history["jobs"])
    service.close()
    return float(np.median(times))


def summary(r: dict[str, Any]) -> str:
    s = r["series"]
    lines = [f"{s['stepped']} series with steps ({s['big_steps']} steps >= 3 sd), "
             f"{s['step_free']} step-free", "",
             f"{'detector':<8} {'recall>=3sd':>11} {'recall<3sd':>10} {'precision':>9} "
             f"{'FP/100pts':>9} {'ms/series':>9} {'ms@500':>8}"]
    for name, d in r["detectors"].items():
        lines.append(f"{name:<8} {d['recall_big']:>11.3f} {d['recall_small']:>10.3f} "
                     f"{d['precision']:>9.3f} {d['fp_per_100']:>9.3f} "
                     f"{d['ms_per_series']:>9.2f} {d['ms_per_series_500'] or 0:>8.2f}")
    for n, seconds in r["history_seconds"].items():
        lines.append(f"history of {n} jobs (stored summaries, 40 metrics each): {seconds:.3f} s")
    lines += ["", *checks(r)]
    return "\n".join(lines)


def checks(r: dict[str, Any]) -> list[str]:
    p, o = r["detectors"]["ptap"], r["detectors"].get("otava")
    out = [f"recall >= 0.9 for steps >= 3 sd: {p['recall_big']:.3f} "
           f"{'PASS' if p['recall_big'] >= 0.9 else 'FAIL'}",
           f"FP <= 0.1 per 100 points: {p['fp_per_100']:.3f} "
           f"{'PASS' if p['fp_per_100'] <= 0.1 else 'FAIL'}",
           f"500-job history < 1 s: {r['history_seconds'][500]:.3f} s "
           f"{'PASS' if r['history_seconds'][500] < 1 else 'FAIL'}"]
    if o is not None:
        ok = p["recall_big"] >= o["recall_big"] and p["fp_per_100"] <= o["fp_per_100"]
        out.append(f"at least as good as Otava's defaults (recall {o['recall_big']:.3f}, "
                   f"FP/100 {o['fp_per_100']:.3f}): {'PASS' if ok else 'FAIL'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="series per setting (default 2)")
    parser.add_argument("--no-spa", action="store_true",
                        help="leave out MongoDB's signal-processing-algorithms")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else summary(result))
    return 0 if all(line.endswith("PASS") for line in checks(result)) else 1


if __name__ == "__main__":
    sys.exit(main())
