"""The history object as one self-contained HTML file (``ptap history --format html``).

The headline (each change point: where it starts, its step with a 95 %
interval, its p-value, regression or improvement, the environment
differences across it), one Bokeh chart per metric with the change points
drawn, then the tables: all from :mod:`bus.views.history`, which the
dashboard's ``/history?series=…`` shows too. ``bokeh.resources.INLINE``
puts BokehJS inside the file, so it opens offline.
"""

from __future__ import annotations

import html
from typing import Any

from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models.widgets import Div
from bokeh.resources import INLINE

from bus.views.history import history_figures, history_headline, history_tables
from bus.views.text import CSS


def render_history_html(history: dict[str, Any]) -> str:
    """A complete HTML document for ``history`` (the ``ptap.history`` object)."""
    title = f"ptap history: {history.get('series', '?')}"
    top = Div(text=CSS + f"<h1>{html.escape(title)}</h1>" + history_headline(history),
              sizing_mode="stretch_width")
    tables = Div(text=CSS + history_tables(history), sizing_mode="stretch_width")
    blocks = [top, *history_figures(history), tables]
    return file_html(column(*blocks, sizing_mode="stretch_width"), INLINE, title)
