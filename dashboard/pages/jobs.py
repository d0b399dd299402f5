"""``/jobs`` (list with filters), ``/jobs/new`` (create a test task), ``POST /jobs/ID/cancel``.

Creating and cancelling go through the bus client exactly as ``ptap run`` and
``ptap cancel`` do, and need a login (:meth:`Page.require_login`, checked
before the form is even read); Tornado has already checked the XSRF token.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from typing import Any

from bus.messages import JobSpec
from bus.states import JobState
from dashboard.pages.base import FINAL_STATES, Page, PageError

log = logging.getLogger(__name__)

COLLECTORS = ("system", "process", "perf", "app")
STATES = tuple(s.value for s in JobState)


class FormError(ValueError):
    """A create-task form value that cannot be used; the message names the field."""


def split_list(text: str) -> list[str]:
    """``"a, b\\nc"`` → ``["a", "b", "c"]``."""
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``"k=v, k2=v2"`` (or one per line) → dict."""
    out: dict[str, str] = {}
    for item in split_list(text):
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise FormError(f"{what}: {item!r} is not KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def _number(text: str, what: str, lo: float, hi: float, kind: type = float) -> Any:
    try:
        value = kind(text.strip())
    except ValueError:
        raise FormError(f"{what}: {text!r} is not a number") from None
    if not lo <= value <= hi:
        raise FormError(f"{what}: must be between {lo:g} and {hi:g}")
    return value


@dataclass
class TaskForm:
    """The create-task form's values, as typed (strings), so a refused form comes back filled."""

    name: str = ""
    command: str = ""
    shell: bool = False
    nodes: list[str] = field(default_factory=list)
    targets: str = ""
    collect: list[str] = field(default_factory=lambda: ["system"])
    interval: str = "1.0"
    timeout: str = "0"
    repeat: str = "1"
    tags: str = ""
    env: str = ""
    cwd: str = ""

    def spec(self) -> JobSpec:
        """The :class:`JobSpec`, or :class:`FormError` naming the bad field."""
        if not self.command.strip():
            raise FormError("command: required")
        try:
            argv = ["/bin/sh", "-c", self.command] if self.shell else shlex.split(self.command)
        except ValueError as exc:
            raise FormError(f"command: {exc}") from None
        unknown = set(self.collect) - set(COLLECTORS)
        if unknown:
            raise FormError(f"collectors: unknown {', '.join(sorted(unknown))}")
        return JobSpec(
            command=argv, name=self.name.strip(),
            targets=[*self.nodes, *split_list(self.targets)] or ["all"],
            collect=list(self.collect) or ["system"],
            interval=_number(self.interval, "interval", 0.1, 3600),
            timeout=_number(self.timeout, "timeout", 0, 7 * 86400),
            repeat=_number(self.repeat, "repeat", 1, 1000, int),
            tags=parse_pairs(self.tags, "tags"), env=parse_pairs(self.env, "environment"),
            cwd=self.cwd.strip())


class NewJobPage(Page):
    """``/jobs/new``: the form (GET) and its submission (POST, login required)."""

    async def get(self) -> None:
        await self.show(TaskForm(nodes=self.get_arguments("node")), error="")

    async def show(self, form: TaskForm, error: str) -> None:
        try:
            nodes = [n["name"] for n in await self.ctx.client.nodes()]
        except Exception as exc:  # the form still works with typed targets
            nodes, error = [], error or f"Node list unavailable: {exc}"
        self.page("job_new.html", form=form, error=error, nodes=nodes, collectors=COLLECTORS)

    async def post(self) -> None:
        login = self.require_login("create jobs")
        arg = self.get_body_argument
        form = TaskForm(name=arg("name", ""), command=arg("command", ""),
                        shell=arg("shell", "") == "on", nodes=self.get_body_arguments("nodes"),
                        targets=arg("targets", ""), collect=self.get_body_arguments("collect"),
                        interval=arg("interval", "1.0"), timeout=arg("timeout", "0"),
                        repeat=arg("repeat", "1"), tags=arg("tags", ""), env=arg("env", ""),
                        cwd=arg("cwd", ""))
        try:
            spec = form.spec()
        except FormError as exc:
            self.set_status(400)
            await self.show(form, error=str(exc))
            return
        job = await self.manager(self.ctx.client.submit(spec))
        log.info("job %s created from the dashboard (%s, login %s…)", job["id"],
                 self.request.remote_ip, login[:6])
        self.redirect(f"/jobs/{job['id']}")


class CancelJobPage(Page):
    """``POST /jobs/ID/cancel`` (login required)."""

    async def post(self, job_id: str) -> None:
        self.valid_id(job_id)
        self.require_login("cancel jobs")
        await self.manager(self.ctx.client.cancel(job_id))
        log.info("job %s cancelled from the dashboard (%s)", job_id, self.request.remote_ip)
        self.redirect(f"/jobs/{job_id}")


def matches(job: dict[str, Any], state: str, node: str, tag: str, text: str) -> bool:
    """The list's filters: state, node (a run on it), tag ``k=v`` or ``k``, free text."""
    spec = job.get("spec") or {}
    if state and job.get("state") != state:
        return False
    if node and node not in {r.get("node") for r in job.get("runs", [])} | set(spec.get("targets", [])):
        return False
    if tag:
        k, sep, v = tag.partition("=")
        tags = spec.get("tags") or {}
        if k not in tags or (sep and tags[k] != v):
            return False
    if text:
        hay = " ".join([job.get("id", ""), job.get("name", ""), spec.get("name", ""),
                        *spec.get("command", [])]).lower()
        if text.lower() not in hay:
            return False
    return True


class JobsPage(Page):
    """``/jobs?state=&node=&tag=&q=``: newest first."""

    async def get(self) -> None:
        f = {k: self.get_argument(k, "").strip() for k in ("state", "node", "tag", "q")}
        jobs = await self.manager(self.ctx.client.jobs(limit=500))
        shown = [j for j in jobs if matches(j, f["state"], f["node"], f["tag"], f["q"])]
        if f["state"] and f["state"] not in STATES and f["state"] not in FINAL_STATES:
            raise PageError(400, f"Unknown state {f['state']!r}.")
        unfinished = any(j.get("state") not in FINAL_STATES for j in shown)
        self.page("jobs.html", jobs=shown, total=len(jobs), filters=f,
                  states=sorted({*STATES, *FINAL_STATES}), refresh=unfinished,
                  final_states=FINAL_STATES)
