"""``/report/ID`` and ``/compare?base=A&cand=B``: the manager's analysis objects, and downloads.

Both pages show what ``client.report(id, "json")`` and ``client.compare(...)``
return (rendered by :mod:`dashboard.pages.render`), the per-run summary of
the collected metrics from InfluxDB (:mod:`dashboard.summary`), and download
links for text, JSON, CSV and HTML, fetched through the same client calls.
When the manager answers with an error (for instance before it can analyse),
the page says so in one line and still shows the per-run summaries.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

from bus.errors import ClientError, ErrorCode, RequestFailed
from bus.views.history import moved_text
from dashboard.pages.analysis import analysis_html
from dashboard.pages.base import Page, PageError
from dashboard.pages.job import history_url, series_of
from dashboard.summary import run_summaries

log = logging.getLogger(__name__)

FORMATS = {"text": ("text/plain", "txt"), "json": ("application/json", "json"),
           "csv": ("text/csv", "csv"), "html": ("text/html", "html")}


def manager_error(exc: ClientError) -> str:
    if isinstance(exc, RequestFailed):
        return f"The manager could not produce this ({exc.code}): {exc.message}"
    return str(exc)


def parse_threshold(text: str) -> float:
    """``"5"`` (percent) → 0.05; empty → the default 5 %."""
    try:
        value = float(text) if text.strip() else 5.0
    except ValueError:
        raise PageError(400, f"threshold {text!r} is not a number (percent)") from None
    if not 0 < value < 1000:
        raise PageError(400, "threshold must be a percentage above 0")
    return value / 100.0


class ReportPage(Page):
    """``GET /report/ID``."""

    async def get(self, job_id: str) -> None:
        self.valid_id(job_id)
        job = await self.manager(self.ctx.client.job(job_id))
        report_html, error = "", ""
        try:
            report = await self.ctx.client.report(job_id, "json")
            series = await self._series(job)
            report_html = analysis_html(report, series, history_url(series["name"]))
        except ClientError as exc:
            error = manager_error(exc)
        summaries = await run_summaries(self.ctx.influx, job)
        links = [(f, f"/report/{job_id}/download?format={f}") for f in FORMATS]
        self.page("report.html", job=job, report_html=report_html, error=error,
                  summaries=summaries, links=links)


    async def _series(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job's series, and whether its history moved at this job (one line)."""
        name = series_of(job)
        if not name:
            return {"name": ""}
        try:
            moved = moved_text(await self.ctx.client.history(name), str(job["id"]))
        except RequestFailed as exc:
            moved = ("no history yet: no job of the series has finished" if exc.code ==
                     ErrorCode.NOT_FOUND else f"history not available: {manager_error(exc)}")
        except ClientError as exc:
            moved = f"history not available: {exc}"
        return {"name": name, "moved_text": moved}


class ComparePage(Page):
    """``GET /compare?base=A&cand=B[&threshold=PERCENT]``; without both, just the form."""

    async def get(self) -> None:
        base, cand = self.get_argument("base", "").strip(), self.get_argument("cand", "").strip()
        threshold_text = self.get_argument("threshold", "5")
        threshold = parse_threshold(threshold_text)
        jobs = await self.manager(self.ctx.client.jobs(limit=200))
        result: dict[str, Any] = {"comparison": "", "error": "", "summaries": {}, "links": []}
        if base and cand:
            self.valid_id(base)
            self.valid_id(cand)
            await self._compare(base, cand, threshold, result)
        self.page("compare.html", jobs=jobs, base=base, cand=cand, threshold=threshold_text,
                  **result)

    async def _compare(self, base: str, cand: str, threshold: float,
                       result: dict[str, Any]) -> None:
        try:
            result["comparison"] = analysis_html(
                await self.ctx.client.compare(base, cand, "json", threshold))
        except ClientError as exc:
            result["error"] = manager_error(exc)
        for label, job_id in (("baseline", base), ("candidate", cand)):
            job = await self.manager(self.ctx.client.job(job_id))
            result["summaries"][f"{label} {job_id}"] = await run_summaries(self.ctx.influx, job)
        query = {"base": base, "cand": cand, "threshold": f"{threshold * 100:g}"}
        result["links"] = [(f, "/compare/download?" + urlencode({**query, "format": f}))
                           for f in FORMATS]


class DownloadPage(Page):
    """``/report/ID/download?format=F`` and ``/compare/download?base=&cand=&format=F``."""

    async def get(self, job_id: str | None = None) -> None:
        fmt = self.get_argument("format", "json")
        if fmt not in FORMATS:
            raise PageError(400, f"format must be one of {', '.join(FORMATS)}")
        if job_id is not None:
            self.valid_id(job_id)
            result = await self.manager(self.ctx.client.report(job_id, fmt))
            name = f"ptap-report-{job_id}"
        else:
            base = self.valid_id(self.get_argument("base", ""))
            cand = self.valid_id(self.get_argument("cand", ""))
            threshold = parse_threshold(self.get_argument("threshold", "5"))
            result = await self.manager(self.ctx.client.compare(base, cand, fmt, threshold))
            name = f"ptap-compare-{base}-{cand}"
        body = json.dumps(result, indent=2) if fmt == "json" else str(result.get("content", ""))
        ctype, ext = FORMATS[fmt]
        self.set_header("Content-Type", f"{ctype}; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{name}.{ext}"')
        # The HTML report runs its own scripts: never in the dashboard's origin.
        self.set_header("Content-Security-Policy", "sandbox")
        self.finish(body)
