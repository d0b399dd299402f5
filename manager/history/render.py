"""The history object as text (for people at a terminal) or CSV (one row per point).

HTML is :func:`manager.history.html.render_history_html`. Text opens with
the change points, each with the environment differences first, then the
points in order; CSV has every point of every metric, with the change
point that starts at it, if any.
"""

from __future__ import annotations

import csv
import io
from typing import Any

FORMATS = ("text", "csv", "html")
_ARROW = {"regression": "▲ regression", "improvement": "▼ improvement"}


def render(history: dict[str, Any], fmt: str) -> str:
    """``history`` as ``text``, ``csv`` or ``html``."""
    if fmt == "csv":
        return csv_text(history)
    if fmt == "html":
        # Bokeh (about 0.5 s to import) only for the format that needs it.
        from manager.history.html import render_history_html  # noqa: PLC0415

        return render_history_html(history)
    return text(history)


def number(value: float | None, unit: str = "") -> str:
    """Four significant digits and the unit; ``-`` for none."""
    if value is None:
        return "-"
    shown = f"{value:.4g}"
    return f"{shown} {unit}".rstrip() if unit and unit != "%" else f"{shown}{unit}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f} %"


def text(history: dict[str, Any]) -> str:
    jobs = history["jobs"]
    det = history.get("detector", {})
    lines = [f"history of {history['series']}: {len(jobs)} job(s), ordered by "
             f"{history['order']}; change points by {det.get('library', '?')} "
             f"{det.get('version', '')} (p < {det.get('alpha', '?')})"]
    lines += [f"note: {n}" for n in history.get("notes", [])]
    for entry in history["metrics"]:
        lines.append("")
        lines += _metric_text(entry, jobs)
    return "\n".join(lines) + "\n"


def _metric_text(entry: dict[str, Any], jobs: list[dict[str, Any]]) -> list[str]:
    unit = entry.get("unit", "")
    cps = entry["change_points"]
    out = [f"{entry['metric']} — {entry['label']} ({entry['direction']} is better): "
           f"{len(cps)} change point(s)"]
    for cp in cps:
        out.append(f"  {_ARROW[cp['direction']]} at {cp['label']} (job {cp['job']}): "
                   f"{percent(cp['step'])} [{percent(cp['ci'][0])}, {percent(cp['ci'][1])}], "
                   f"p = {cp['p_value']:.2g}, {number(cp['before'], unit)} → "
                   f"{number(cp['after'], unit)}")
        for diff in cp["environment_differences"]:
            out.append(f"      differs: {diff['key']} ({diff['scope']}): {diff['base']} → "
                       f"{diff['cand']}")
    starts = {cp["index"]: cp for cp in cps}
    for p in entry["points"]:
        mark = f"  ◀ {cp_word(starts[p['index']])}" if p["index"] in starts else ""
        out.append(f"  {p['index'] + 1:>4}  {jobs[p['index']]['label'][:20]:<20}  "
                   f"{number(p['median'], unit):>12}  [{number(p['low'])} – {number(p['high'])}]"
                   f"  {p['runs']} run(s){mark}")
    return out


def cp_word(cp: dict[str, Any]) -> str:
    return f"{cp['direction']} {percent(cp['step'])}"


CSV_COLUMNS = ("metric", "unit", "direction", "index", "label", "job", "created_at", "median",
               "low", "high", "runs", "change", "step", "ci_low", "ci_high", "p_value")


def csv_text(history: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    jobs = history["jobs"]
    for entry in history["metrics"]:
        starts = {cp["index"]: cp for cp in entry["change_points"]}
        for p in entry["points"]:
            job = jobs[p["index"]]
            cp = starts.get(p["index"])
            writer.writerow([
                entry["metric"], entry["unit"], entry["direction"], p["index"], job["label"],
                job["id"], job.get("created_at"), p["median"], p["low"], p["high"], p["runs"],
                cp["direction"] if cp else "", cp["step"] if cp else "",
                cp["ci"][0] if cp else "", cp["ci"][1] if cp else "",
                cp["p_value"] if cp else ""])
    return buf.getvalue()
