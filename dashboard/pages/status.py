"""``/api/status``: what the dashboard is serving, as JSON (for people and scripts).

``{"sessions": {"/bk/live": N, ...}, "connections": {...}, "watched_nodes": [...],
"feed": {"batches": N, "events": N, "bad_frames": N, "handshakes": N, ...},
"feed_problem": "..."}`` — Bokeh sessions (one per open page, freed a few seconds
after it closed) and their websocket connections per document type, the nodes
whose metrics the shared subscriber receives, its counters, and why its last
handshake with the manager failed (empty once one succeeds). The benchmark
``scripts/bench/live_latency.py`` waits on it; the same viewing rules as every page apply.
"""

from __future__ import annotations

from typing import Any

from dashboard.pages.base import Page


class StatusPage(Page):
    def get(self) -> None:
        app: Any = self.application  # Bokeh's Tornado application
        sessions = {path: len(app.get_sessions(path)) for path in sorted(app.app_paths)}
        connections = {path: sum(s.connection_count for s in app.get_sessions(path))
                       for path in sorted(app.app_paths)}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish({"sessions": sessions, "connections": connections,
                     "watched_nodes": self.ctx.feed.watched_nodes,
                     "feed": dict(self.ctx.feed.counters),
                     "feed_problem": self.ctx.feed.problem})
