"""A small line chart as inline SVG: no script, so it shows in a file, a page, an e-mail.

The headline of a report draws one per node and metric (the tree's CPU over
its first run, say). Values that are missing or not finite are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bus.views.text import esc

WIDTH, HEIGHT = 120, 28
MAX_POINTS = 120


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def sparkline(t: Sequence[Any], v: Sequence[Any], title: str = "", colour: str = "#1f77b4",
              width: int = WIDTH, height: int = HEIGHT) -> str:
    """``<svg class='spark'>``: one polyline through the finite points (others are left
    out); ``""`` when fewer than two can be drawn."""
    pairs = [(float(a), float(b)) for a, b in zip(t, v, strict=False)
             if _finite(a) and _finite(b)]
    if len(pairs) < 2:
        return ""
    step = max(1, len(pairs) // MAX_POINTS)
    pairs = pairs[::step]
    t0, t1 = pairs[0][0], pairs[-1][0]
    lo, hi = min(p[1] for p in pairs), max(p[1] for p in pairs)
    if hi - lo < 1e-9 * max(1.0, abs(hi)):  # constant: a flat line in the middle
        lo, hi = lo - 1.0, hi + 1.0
    span_t, span_v = (t1 - t0) or 1.0, hi - lo
    points = " ".join(f"{(a - t0) / span_t * (width - 2) + 1:.1f},"
                      f"{height - 1 - (b - lo) / span_v * (height - 2):.1f}" for a, b in pairs)
    tip = f"<title>{esc(title)}</title>" if title else ""
    return (f"<svg class='spark' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{esc(title)}'>{tip}"
            f"<polyline fill='none' stroke='{esc(colour)}' stroke-width='1.5' "
            f"points='{points}'/></svg>")
