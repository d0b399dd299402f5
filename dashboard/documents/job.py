"""``/bk/job``: a job's live run table, its charts, and its buttons.

The charts show the whole run from InfluxDB when it is over, and live from
its start while it runs. The two buttons, *Cancel* and *Run again*, check the
viewer's login in their Bokeh callbacks themselves
(:meth:`dashboard.auth.Auth.may_change`): a websocket message is a request
like any other, and the page's HTML is no guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from bokeh.document import Document, without_document_lock
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource
from bokeh.models.widgets import Button, DataTable, Div, TableColumn

from bus.errors import ClientError
from bus.messages import Event, JobSpec
from bus.replies import JobReply
from dashboard.context import ViewContext
from dashboard.documents import Failed, argument
from dashboard.live import NAME_RE, WINDOWS, LiveState
from dashboard.pages.base import FINAL_STATES, fmt_duration, fmt_time, table_height
from dashboard.series import View

log = logging.getLogger(__name__)

RUN_COLUMNS = ("run", "node", "iteration", "state", "exit_code", "duration", "started", "error")
POLL_S = 2.0  # PUB may drop events; a slow poll while the job runs makes sure nothing is missed
MARGIN_S = 10.0  # charts show this much before the job's start and after its end


def job_window(job: Mapping[str, Any]) -> tuple[bool, int, int | None, int]:
    """(live, start_ns, end_ns, window_s) of a job's charts."""
    runs = job.get("runs", [])
    start = min([job.get("created_at") or time.time(),
                 *[r["started_at"] for r in runs if r.get("started_at")]]) - MARGIN_S
    live = job.get("state") not in FINAL_STATES
    ends = [r["ended_at"] for r in runs if r.get("ended_at")]
    end = None if live or not ends else int((max(ends) + MARGIN_S) * 1e9)
    span = time.time() - start
    window = next((w for w in sorted(WINDOWS) if w >= span), max(WINDOWS))
    return live, int(start * 1e9), end, window


async def prepare_job(ctx: ViewContext, session_context: Any) -> tuple[JobReply, LiveState]:
    job_id = argument(session_context, "job")
    if not NAME_RE.match(job_id):
        raise ValueError("no job given")
    job = await ctx.client.job(job_id)
    nodes = tuple(sorted({r["node"] for r in job.get("runs", [])}))
    if not nodes:
        raise ValueError(f"job {job_id} has no runs")
    live, start_ns, end_ns, window = job_window(job)
    state = LiveState(ctx, View(nodes, job_id, scope="job"), window, live=live,
                      start_ns=start_ns, end_ns=end_ns)
    try:
        await state.start()
    except BaseException:
        state.close()
        raise
    return job, state


def build_job(ctx: ViewContext, doc: Document, prepared: Any) -> None:
    if not isinstance(prepared, tuple):
        message = prepared.message if isinstance(prepared, Failed) else "unknown job"
        doc.add_root(Div(text=f"<p class='error'>{html.escape(message)}</p>", name="error"))
        return
    JobDoc(ctx, doc, *prepared)


def run_columns(job: Mapping[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c: [] for c in RUN_COLUMNS}
    for r in job.get("runs", []):
        out["run"].append(r.get("id", ""))
        out["node"].append(r.get("node", ""))
        out["iteration"].append(r.get("iteration", ""))
        out["state"].append(r.get("state", ""))
        out["exit_code"].append("" if r.get("exit_code") is None else str(r["exit_code"]))
        out["duration"].append(fmt_duration(r.get("started_at"), r.get("ended_at")))
        out["started"].append(fmt_time(r.get("started_at")))
        out["error"].append(r.get("error", ""))
    return out


def spec_from(job: Mapping[str, Any]) -> JobSpec:
    """The job's spec again, for *Run again* (unknown keys from a newer manager ignored)."""
    names = {f.name for f in dataclasses.fields(JobSpec)}
    spec = {"name": job.get("name") or "", **(job.get("spec") or {})}
    return JobSpec(**{k: v for k, v in spec.items() if k in names})


class JobDoc:
    """One tab's ``/bk/job`` document."""

    def __init__(self, ctx: ViewContext, doc: Document, job: JobReply,
                 state: LiveState) -> None:
        self.ctx, self.doc, self.job, self.state = ctx, doc, job, state
        self.fresh = False  # self.job came from a refresh (not the page's first fetch)
        self.job_id = str(job["id"])
        self.runs = ColumnDataSource(run_columns(job), name="runs")
        self.job_state = Div(text=str(job.get("state", "")), name="job_state")
        self.status = Div(text="", name="action_status", width=520)
        self.cancel = cancel = Button(label="Cancel job", button_type="danger", name="cancel",
                                      width=120, disabled=job.get("state") in FINAL_STATES)
        rerun = Button(label="Run again", button_type="primary", name="rerun", width=120)
        cancel.on_event("button_click", self.on_cancel)
        rerun.on_event("button_click", self.on_rerun)
        panel = state.attach(doc)
        table = DataTable(source=self.runs, columns=[TableColumn(field=c, title=c)
                                                     for c in RUN_COLUMNS],
                          height=table_height(len(job.get("runs", []))), index_position=None,
                          sizing_mode="stretch_width")
        header = row(Div(text="<b>Job state:</b>", width=80), self.job_state, cancel, rerun,
                     self.status)
        doc.add_root(column(header, table, panel.layout, sizing_mode="stretch_width", name="job"))
        doc.title = f"ptap job {self.job_id}"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch = ctx.feed.watch_events(self._on_event)
        doc.on_session_destroyed(lambda session: self._watch.close())
        # Bokeh runs coroutine callbacks; its type stubs only know plain ones.
        doc.add_periodic_callback(self.refresh, int(POLL_S * 1000))  # type: ignore[arg-type]

    # --- run states ----------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.job_id == self.job_id:
            self.doc.add_next_tick_callback(self.refresh)  # type: ignore[arg-type]

    @without_document_lock
    async def refresh(self) -> None:
        if self.job.get("state") in FINAL_STATES and self.fresh:
            return
        try:
            job = await self.ctx.client.job(self.job_id)
        except ClientError as exc:
            self.doc.add_next_tick_callback(partial(self._say, f"Manager: {exc}"))
            return
        self.doc.add_next_tick_callback(partial(self._apply, job, fresh=True))

    def _apply(self, job: JobReply, fresh: bool = False) -> None:
        self.job, self.fresh = job, fresh
        self.runs.data = run_columns(job)
        self.job_state.text = str(job.get("state", ""))
        self.cancel.disabled = job.get("state") in FINAL_STATES

    def _say(self, text: str) -> None:
        self.status.text = html.escape(text)

    # --- buttons (Bokeh callbacks: check the login here, not only in the page) ------------------

    def on_cancel(self, event: Any = None) -> None:
        if not self._allowed("cancel jobs"):
            return
        self._say("Cancelling…")
        self._spawn(self._cancel())

    def on_rerun(self, event: Any = None) -> None:
        if not self._allowed("create jobs"):
            return
        self._say("Submitting…")
        self._spawn(self._rerun())

    def _allowed(self, what: str) -> bool:
        if self.ctx.auth.may_change(self.doc):
            return True
        log.warning("refused to %s from a Bokeh session without login (job %s)", what,
                    self.job_id)
        self._say(f"Refused: log in to {what}.")
        return False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel(self) -> None:
        try:
            job = await self.ctx.client.cancel(self.job_id)
            text = f"Cancel sent; job is {job.get('state')}."
            log.info("job %s cancelled from a dashboard document", self.job_id)
        except ClientError as exc:
            text = f"Cancel failed: {exc}"
        self.doc.add_next_tick_callback(partial(self._say, text))

    async def _rerun(self) -> None:
        try:
            job = await self.ctx.client.submit(spec_from(self.job))
            log.info("job %s created from a dashboard document (again from %s)", job["id"],
                     self.job_id)
            new_id = html.escape(str(job["id"]))
            text = f"Submitted as <a href='/jobs/{new_id}'>{new_id}</a>."
        except ClientError as exc:
            text = html.escape(f"Submit failed: {exc}")
        self.doc.add_next_tick_callback(partial(setattr, self.status, "text", text))
