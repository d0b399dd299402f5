"""The live state behind every chart panel, and the live view's arguments.

The ``/bk/live`` and ``/bk/job`` documents (:mod:`dashboard.documents`) each hold one.

A :class:`LiveState` is made per Bokeh session, in its ``prepare`` step:

1. it registers with the shared :class:`dashboard.feed.Feed` first, queueing
   what arrives, so nothing falls between the backfill and the live data;
2. it reads the window's history from InfluxDB (the backfill), so a page
   that opens or refreshes shows the last minutes at once;
3. when the document is built, :meth:`LiveState.attach` fills the charts with
   the history and the queued rows; from then on new rows are streamed with
   ``source.stream(..., rollover=...)`` in a Bokeh next-tick callback, at
   most every :data:`FLUSH_S` per document.

The window selector (1 min … 1 h) refills the charts from InfluxDB.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from functools import partial
from typing import Any

from bokeh.document import Document
from bokeh.models.widgets import Select

from dashboard.charts import ChartPanel
from dashboard.context import ChartSources
from dashboard.feed import Watch
from dashboard.influx import HistoryUnavailable
from dashboard.series import Update, View, merge, thin

log = logging.getLogger(__name__)

WINDOWS = {60: "1 min", 300: "5 min", 900: "15 min", 3600: "1 h"}
DEFAULT_WINDOW = 300
FLUSH_S = 0.2  # at most five updates a second per document: smooth, and cheap for 20 tabs
ROWS_PER_S = 10  # rollover: room for 0.1 s sampling over the whole window
MAX_ROWS_PER_FLUSH = 25  # per source and flush: 125 rows a second is more than a chart shows
MAX_PENDING = 1000  # queued updates per document before they are merged and thinned
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def rollover_for(window_s: float) -> int:
    return int(min(max(window_s * ROWS_PER_S, 600), 36_000))


class LiveState:
    """Charts of one document: backfilled from InfluxDB, then fed live (or fixed, for a
    finished job: ``live=False`` with ``start_ns``/``end_ns``)."""

    def __init__(self, sources: ChartSources, view: View, window_s: int, *, live: bool = True,
                 start_ns: int | None = None, end_ns: int | None = None) -> None:
        self.sources = sources
        self.view = view
        self.window_s = window_s
        self.live = live
        self.start_ns, self.end_ns = start_ns, end_ns
        self.history: list[Update] = []
        self.history_note = ""
        self.panel: ChartPanel | None = None
        self.doc: Document | None = None
        self._pending: list[Update] = []
        self._flush_due = False
        self._last_flush = 0.0
        self._refilling = False
        self._watch: Watch | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def rollover(self) -> int:
        return rollover_for(self.window_s)

    async def start(self) -> None:
        """Register with the feed (live only), then read the history."""
        if self.live:
            self._watch = self.sources.feed.watch_metrics(self.view.nodes, self._on_updates)
        self.history = await self._read_history()

    async def _read_history(self) -> list[Update]:
        start = self.start_ns or time.time_ns() - int(self.window_s * 1e9)
        try:
            found = await self.sources.influx.history(self.view, start, self.end_ns, self.rollover)
        except HistoryUnavailable as exc:
            log.warning("no history for %s: %s", ",".join(self.view.nodes), exc)
            self.history_note = f"History unavailable ({exc}); showing live data only."
            return []
        points = sum(len(u) for u in found if not u.replace)
        self.history_note = f"{points} points of history from InfluxDB."
        return found

    def attach(self, doc: Document) -> ChartPanel:
        """Build the charts in ``doc`` (while Bokeh builds it) and start streaming."""
        self.panel = ChartPanel(self.view, self.window_s if self.live else None)
        self.panel.apply(self.history, self.rollover)
        self.panel.apply(self._take_pending(), self.rollover)
        self.panel.note.text = self.history_note
        self.history = []
        self.doc = doc
        doc.on_session_destroyed(self._on_destroyed)
        return self.panel

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.doc = None
        for task in self._tasks:
            task.cancel()

    def _on_destroyed(self, session_context: Any) -> None:
        self.close()

    # --- live rows ------------------------------------------------------------------------------

    def _on_updates(self, updates: list[Update]) -> None:
        """Feed watcher (outside any document lock): queue, and schedule one flush."""
        wanted = [u for u in updates if self.view.wants(u)]
        if not wanted:
            return
        self._pending.extend(wanted)
        if len(self._pending) > MAX_PENDING:  # no flush for a while (a slow refill): compact
            self._pending = self._take_pending()
        if self.doc is None or self._flush_due or self._refilling:
            return
        self._flush_due = True
        wait = FLUSH_S - (time.monotonic() - self._last_flush)
        try:
            if wait <= 0:
                self.doc.add_next_tick_callback(self._flush)
            else:
                self.doc.add_timeout_callback(self._flush, int(wait * 1000))
        except Exception:  # the session is going away
            self._flush_due = False

    def _take_pending(self) -> list[Update]:
        taken, self._pending = self._pending, []
        return [thin(u, MAX_ROWS_PER_FLUSH) for u in merge(taken)]

    def _flush(self) -> None:
        """Bokeh callback: stream what is queued."""
        self._flush_due = False
        self._last_flush = time.monotonic()
        if self.panel is not None and not self._refilling:
            self.panel.apply(self._take_pending(), self.rollover)

    # --- the window selector ------------------------------------------------------------------------

    def window_select(self) -> Select:
        options: list[str | tuple[Any, str]] = [(str(s), label) for s, label in WINDOWS.items()]
        select = Select(title="Time window", value=str(self.window_s), options=options,
                        name="window", width=140)
        select.on_change("value", self._on_window)
        return select

    def _on_window(self, attr: str, old: str, new: str) -> None:
        """Bokeh callback: follow a new window and refill it from InfluxDB."""
        if not new.isdigit() or int(new) not in WINDOWS or self.panel is None:
            return
        self.window_s = int(new)
        self.panel.x_range.follow_interval = self.window_s * 1000
        self._refilling = True
        task = asyncio.get_running_loop().create_task(self._refill())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refill(self) -> None:
        history = await self._read_history()
        if self.doc is not None:
            self.doc.add_next_tick_callback(partial(self._apply_refill, history))

    def _apply_refill(self, history: list[Update]) -> None:
        self._refilling = False
        if self.panel is None:
            return
        self.panel.reset()
        self.panel.apply(history, self.rollover)
        self.panel.apply(self._take_pending(), self.rollover)
        self.panel.note.text = self.history_note


# --- the /live view's arguments --------------------------------------------------------------------


def parse_nodes(values: list[str]) -> tuple[str, ...]:
    """``node=a&node=b`` or ``node=a,b`` → valid names, in order, without repeats."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and NAME_RE.match(name) and name not in names:
                names.append(name)
    return tuple(names[:8])


def parse_window(text: str) -> int:
    return int(text) if text.isdigit() and int(text) in WINDOWS else DEFAULT_WINDOW
