"""The one chart style of ptap's Bokeh figures: report and history files, dashboard pages.

Full width, a fixed height, pan and zoom on x, a legend that hides a line
when clicked, no Bokeh logo. Importing this module imports Bokeh; the
text-only views do not.
"""

from __future__ import annotations

from typing import Any

from bokeh.models.annotations import Label, Span
from bokeh.plotting import figure

CHART_HEIGHT = 220
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
LINE_WIDTH = 1.6
MAX_MARKS = 50
MARK_COLOUR = "#777777"
_SCALES = (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def styled_figure(title: str, y_label: str, x_label: str = "", **options: Any) -> Any:
    """A figure in the shared style; ``options`` go to :func:`bokeh.plotting.figure`
    (``x_axis_type="datetime"``, ``x_range``, ``name``, ``tools``...)."""
    options.setdefault("tools", TOOLS)
    p = figure(title=title, height=options.pop("height", CHART_HEIGHT),
               sizing_mode="stretch_width", x_axis_label=x_label or None,
               y_axis_label=y_label or "value", **options)
    p.toolbar.logo = None
    return p


def finish_legend(p: Any) -> Any:
    """Legend top left, small, click to hide a line (when the figure has one)."""
    if p.legend:
        p.legend.click_policy = "hide"
        p.legend.location = "top_left"
        p.legend.label_text_font_size = "8pt"
    return p


def vertical_marks(p: Any, marks: list[tuple[float, str]], colour: str = MARK_COLOUR,
                   dash: str = "dashed") -> None:
    """Labelled vertical lines at x positions (``(x, label)``), the first :data:`MAX_MARKS`."""
    for x, label in marks[:MAX_MARKS]:
        p.add_layout(Span(location=x, dimension="height", line_dash=dash, line_color=colour,
                          line_width=1))
        p.add_layout(Label(x=x, y=5, y_units="screen", text=str(label), text_font_size="10px",
                           text_color=colour))


def axis_scale(unit: str, values: list[float]) -> tuple[float, str]:
    """(divisor, axis unit): bytes in binary units that fit the largest value."""
    if unit not in ("B", "B/s") or not values:
        return 1.0, unit
    top = max(abs(v) for v in values)
    for prefix, size in _SCALES:
        if top >= size:
            return float(size), prefix + unit
    return 1.0, unit
