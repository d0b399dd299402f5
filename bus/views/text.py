"""Numbers, times and tables for people: human units, escaped HTML.

``number(25324953600, "B")`` is ``23.59 GiB``, never the raw count;
``when(1.7e9)`` is a local date and time, never an epoch number.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

_BINARY = (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
#: CSS classes of the verdict words (the dashboard's stylesheet and :data:`CSS` colour them).
VERDICT_CLASSES = {"regression": "bad", "improvement": "good", "unchanged": "same",
                   "inconclusive": "unsure"}
#: The style of a stand-alone file; the dashboard has its own stylesheet for the same classes.
CSS = ("<style>table{border-collapse:collapse;font:13px sans-serif;margin:4px 0 12px}"
       "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
       "th{background:#f3f3f3}h1{font:bold 20px sans-serif}"
       "h2{font:bold 16px sans-serif;margin:14px 0 4px}h3{font:bold 14px sans-serif}"
       "p,li,summary,dl{font:13px sans-serif}.muted{color:#777}"
       ".verdict.bad,tr.regression{color:#c62828}.verdict.good,tr.improvement{color:#2e7d32}"
       ".verdict.unsure,tr.inconclusive{color:#b26a00}.verdict.bad,.verdict.good{font-weight:bold}"
       ".headline td{min-width:7em}.headline .big{font:bold 15px sans-serif}"
       ".spark{vertical-align:middle;margin-left:6px}</style>")


def esc(value: Any) -> str:
    return html.escape(str(value))


def number(x: float | None, unit: str = "") -> str:
    """A value for people: 4 significant digits, binary prefixes for bytes."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) < 1e-9:
        x = 0.0  # float noise such as the stddev of identical values
    if unit in ("B", "B/s"):
        for prefix, size in _BINARY:
            if abs(x) >= size:
                return f"{x / size:.4g} {prefix}{unit}"
        return f"{x:.4g} {unit}"
    text = f"{x:.4g}"
    return text + unit if unit in ("", "%") or unit.startswith("/") else f"{text} {unit}"


def percent(x: float | str | None) -> str:
    """A relative change as a signed percentage; ``"inf"``/``"-inf"`` as ±∞."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return "+∞" if x == "inf" else "-∞"
    return f"{x * 100:+.1f}%"


def change_cell(x: Any) -> str:
    """A change in a table cell, two decimals (``+20.00 %``); anything else escaped."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return esc(f"{x * 100:+.2f} %")
    return cell(x)


def when(ts: float | None) -> str:
    """Seconds since the epoch as a local date and time (``-`` when missing)."""
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def duration(seconds: float | None) -> str:
    """``0.85 s``, ``42.1 s``, ``3 min 05 s``, ``2 h 04 min``."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def cell(value: Any) -> str:
    """One value as escaped HTML; verdict words carry their class."""
    if value is None:
        return "<span class='muted'>—</span>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return esc(f"{value:.4g}") if math.isfinite(value) else esc(value)
    cls = VERDICT_CLASSES.get(str(value).lower()) if isinstance(value, str) else None
    return f"<span class='verdict {cls}'>{esc(value)}</span>" if cls else esc(value)


class Raw(str):
    """A table cell that is HTML already (built from escaped parts)."""


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], css: str = "grid",
               row_classes: Sequence[str] | None = None, caption: str = "") -> str:
    """A table; cells are escaped unless they are :class:`Raw`; ``None`` shows as ``—``."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes and i < len(row_classes) else ""
        attr = f" class='{esc(cls)}'" if cls else ""
        cells = "".join(f"<td>{c if isinstance(c, Raw) else cell(c)}</td>" for c in row)
        body.append(f"<tr{attr}>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table class='{esc(css)}'>{cap}<tr>{head}</tr>{''.join(body)}</table>"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
