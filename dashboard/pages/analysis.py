"""The manager's report (``ptap.report``) and comparison (``ptap.compare``) objects as HTML.

The tables, the report's headline and the comparison's per-node part are
:mod:`bus.views`, the same code that writes ``ptap report/compare --format
html``: one renderer per view. This module frames them for a page: a
comparison leads with its verdict, the nodes that regressed or improved
where the pooled verdict says otherwise, and the table of every metric's
change, then the per-node part; a report with its headline, then the full
tables. Parts of the object the views do not know (a newer schema) are
shown by the generic :func:`render.render`, so nothing the manager says is
hidden. Every string is escaped.
"""

from __future__ import annotations

import html
from typing import Any

from bus.views.comparison import differences_table, flags_html, metrics_table, nodes_html
from bus.views.report import headline, report_tables
from dashboard.pages.base import fmt_time
from dashboard.pages.render import render, scalar

REPORT_KEYS = {"kind", "schema_version", "generated_at", "job", "notes", "environment",
               "metrics", "overall", "nodes", "observer", "runs"}
COMPARE_KEYS = {"kind", "schema_version", "generated_at", "threshold", "alpha", "confidence",
                "bootstrap", "base", "cand", "environment_differences", "verdict", "counts",
                "notes", "metrics", "nodes", "overlay"}


def analysis_html(obj: Any, series: dict[str, Any] | None = None, series_link: str = "") -> str:
    """Any analysis object: the laid-out view for the kinds known here, else generic.
    ``series``/``series_link``: what the history says of a report's series, its page."""
    if isinstance(obj, dict) and obj.get("kind") == "ptap.report":
        return report_html(obj, series, series_link)
    if isinstance(obj, dict) and obj.get("kind") == "ptap.compare":
        return compare_html(obj)
    return render(obj)


def _h(level: int, text: str) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def _rest(obj: dict[str, Any], known: set[str]) -> str:
    extra = {k: v for k, v in obj.items() if k not in known}
    return (_h(3, "Other fields") + render(extra)) if extra else ""


def report_html(r: dict[str, Any], series: dict[str, Any] | None = None,
                series_link: str = "") -> str:
    return "".join([
        headline(r, series, series_link),
        f"<p class='muted'>generated {fmt_time(r.get('generated_at'))}, "
        f"schema {scalar(r.get('schema_version'))}</p>",
        report_tables(r, level=3), _rest(r, REPORT_KEYS)])


def _pct(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return html.escape(f"{value * 100:+.2f} %")
    return scalar(value)


def compare_html(c: dict[str, Any]) -> str:
    verdict, counts = c.get("verdict"), c.get("counts") or {}
    counted = ", ".join(f"{html.escape(str(k))}: {scalar(v)}" for k, v in counts.items())
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in c.get("notes") or [])
    parts = [f"<p class='verdict-line'>Verdict: {scalar(verdict)} <span class='muted'>"
             f"({counted}; threshold {_pct(c.get('threshold'))}, alpha {scalar(c.get('alpha'))}, "
             f"confidence {scalar(c.get('confidence'))})</span></p>",
             f"<ul class='notice notes'>{notes}</ul>" if notes else "", flags_html(c),
             _h(3, "Metrics"), metrics_table(c.get("metrics") or [])]
    if isinstance(c.get("nodes"), dict) and c["nodes"]:
        parts.append(nodes_html(c, level=3))
    parts += [_h(3, "Environment differences"),
              differences_table(c.get("environment_differences") or [])]
    parts += [_h(3, "Baseline"), render(c.get("base") or {}), _h(3, "Candidate"),
              render(c.get("cand") or {})]
    parts.append(_rest(c, COMPARE_KEYS))
    return "".join(parts)
