"""``/jobs/ID``: the job, its runs per node, output tails, a link to its series.

The page itself is server-rendered (spec, runs, output tails). It embeds the
``/bk/job`` document (:mod:`dashboard.documents.job`): the live run table,
the job's charts and the *Cancel* and *Run again* buttons.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dashboard.pages.base import FINAL_STATES, Page


def series_of(job: dict[str, Any]) -> str:
    """The series a job belongs to: its spec's ``series``, else its name (may be empty)."""
    spec = job.get("spec") or {}
    return str(spec.get("series") or job.get("series") or job.get("name")
               or spec.get("name") or "")


def history_url(series: str) -> str:
    return "/history?" + urlencode({"series": series}) if series else ""


class JobPage(Page):
    """``GET /jobs/ID``."""

    async def get(self, job_id: str) -> None:
        self.valid_id(job_id)
        job = await self.manager(self.ctx.client.job(job_id))
        nodes = sorted({r["node"] for r in job.get("runs", [])})
        series = series_of(job)
        self.page("job.html", job=job, nodes=nodes, final=job.get("state") in FINAL_STATES,
                  series=series, series_url=history_url(series),
                  bokeh_script=self.bokeh("job", job=job_id))
