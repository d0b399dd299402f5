"""``/live?node=NAME[&node=NAME2][&job=ID][&window=S]``: the frame of the live view.

The charts are the ``/bk/live`` document (:mod:`dashboard.live`). Without a
node or a job, the page lists the nodes to choose from.
"""

from __future__ import annotations

from dashboard.live import NAME_RE, parse_nodes, parse_window
from dashboard.pages.base import Page


class LivePage(Page):
    """``GET /live``."""

    async def get(self) -> None:
        nodes = parse_nodes(self.get_arguments("node"))
        job = self.get_argument("job", "").strip()
        if job:
            self.valid_id(job)
        if not nodes and not job:
            known = [n["name"] for n in await self.manager(self.ctx.client.nodes())]
            self.page("live.html", nodes=(), job="", known=known)
            return
        window = str(parse_window(self.get_argument("window", "")))
        script = self.bokeh("live", node=",".join(nodes), job=job, window=window)
        self.page("live.html", nodes=nodes, job=job, known=[], bokeh_script=script)


__all__ = ["LivePage", "NAME_RE"]
