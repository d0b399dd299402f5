"""Views shared by the files ptap writes and the dashboard: pure functions, no I/O.

The manager renders a report, a comparison or a history to a self-contained
HTML file; the dashboard shows the same objects in its pages and Bokeh
documents. Both call these functions, so each table and chart has one
implementation (docs/analysis.md#one-renderer-per-view). They live in
``bus`` because the dashboard may import ``bus`` and nothing of the manager
(docs/architecture.md#layout-and-layering); they import nothing of ours
outside ``bus.views`` and read the objects with ``.get``, so a newer
manager's object never breaks an older dashboard.

    text        numbers in human units, times, durations, escaped HTML tables
    sparkline   a small inline SVG line (no script: shows anywhere)
    report      a report's headline and its full tables
    comparison  a comparison's metric table, per-node part and hidden-node flags
    history     a series' charts (Bokeh) with change points, and its tables

Bokeh is imported only by the modules that build figures (``history``).
"""
