"""Analysis objects (reports, comparisons) as HTML, whatever their exact shape.

The report object is the manager's (docs/architecture.md#analysis: CLI, shell and dashboard show
the same object), so the dashboard does not hard-code its fields: mappings
become key/value tables, lists of mappings become tables with a column per
key, lists of plain values become one line. Every string is escaped; the
words ``regression``, ``improvement`` and ``unchanged`` are highlighted.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

MAX_DEPTH = 6
MAX_ROWS = 500
MAX_COLUMNS = 16
VERDICTS = {"regression": "bad", "improvement": "good", "unchanged": "same"}


def scalar(value: Any) -> str:
    """One value as escaped HTML."""
    if value is None:
        return "<span class='muted'>—</span>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        text = f"{value:.4g}" if abs(value) < 1e6 else f"{value:.4e}"
        return html.escape(text)
    text = html.escape(str(value))
    cls = VERDICTS.get(str(value).lower())
    return f"<span class='verdict {cls}'>{text}</span>" if cls else text


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def render(value: Any, depth: int = 0) -> str:
    """``value`` (decoded JSON) as nested HTML tables."""
    if depth >= MAX_DEPTH:
        return f"<code>{html.escape(str(value)[:200])}</code>"
    if _is_scalar(value):
        return scalar(value)
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_field(k, v, depth)}</td></tr>"
                       for k, v in value.items())
        return f"<table class='kv'>{rows}</table>"
    if isinstance(value, list | tuple):
        if all(_is_scalar(v) for v in value):
            return ", ".join(scalar(v) for v in value[:MAX_ROWS]) or "<span class='muted'>none</span>"
        if all(isinstance(v, dict) for v in value):
            return _table(list(value), depth)
        return "<ul>" + "".join(f"<li>{render(v, depth + 1)}</li>" for v in value[:MAX_ROWS]) \
            + "</ul>"
    return html.escape(str(value))


def _field(key: Any, value: Any, depth: int) -> str:
    """A mapping's value; ``*_at`` numbers are times (seconds since the epoch)."""
    if str(key).endswith("_at") and isinstance(value, int | float) and value > 1e8:
        return html.escape(datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S"))
    return render(value, depth + 1)


def _table(items: list[dict[str, Any]], depth: int) -> str:
    columns: list[str] = []
    for item in items:
        for k in item:
            if k not in columns and len(columns) < MAX_COLUMNS:
                columns.append(k)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_field(c, item.get(c), depth)}</td>" for c in columns) + "</tr>"
        for item in items[:MAX_ROWS])
    more = f"<p class='muted'>{len(items) - MAX_ROWS} more rows</p>" if len(items) > MAX_ROWS else ""
    return f"<table class='grid'><tr>{head}</tr>{body}</table>{more}"
