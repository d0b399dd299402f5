"""Bokeh applications for the dashboard: an async ``prepare`` per session, then ``build``.

Bokeh builds a document synchronously (``modify_document``), but most of the
dashboard's documents need data first — the manager's answer, or the last
minutes from InfluxDB so that a chart never starts empty. Bokeh awaits
:meth:`Handler.on_session_created` before it builds the document, so
:class:`DocHandler` does the waiting there and hands the result to ``build``.

:meth:`DocHandler.process_request` puts the viewer's login into the signed
session token (see :mod:`dashboard.auth`).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bokeh.application import Application
from bokeh.application.handlers.handler import Handler
from bokeh.document import Document
from tornado.httputil import HTTPServerRequest

from dashboard.auth import Auth

log = logging.getLogger(__name__)

Prepare = Callable[[Any], Awaitable[Any]]
Build = Callable[[Document, Any], None]


@dataclass(frozen=True, slots=True)
class Failed:
    """What ``prepare`` raised, for ``build`` to show instead of a blank page."""

    message: str


class DocHandler(Handler):
    """One Bokeh application: ``prepare(session_context)`` (async), then ``build(doc, prepared)``."""

    def __init__(self, auth: Auth, prepare: Prepare, build: Build) -> None:
        super().__init__()
        self._auth = auth
        self._prepare = prepare
        self._build = build
        self._prepared: dict[str, Any] = {}

    async def on_session_created(self, session_context: Any) -> None:
        try:
            self._prepared[session_context.id] = await self._prepare(session_context)
        except Exception as exc:  # shown in the document; the server goes on
            log.exception("preparing a %s document failed", getattr(self._build, "__name__", "?"))
            self._prepared[session_context.id] = Failed(str(exc) or type(exc).__name__)

    def modify_document(self, doc: Document) -> None:
        prepared = self._prepared.pop(doc.session_context.id, None) \
            if doc.session_context is not None else None
        self._build(doc, prepared)

    async def on_session_destroyed(self, session_context: Any) -> None:
        # A session whose document was never built still holds what prepare made.
        close = getattr(self._prepared.pop(session_context.id, None), "close", None)
        if callable(close):
            close()

    def process_request(self, request: HTTPServerRequest) -> dict[str, Any]:
        return self._auth.process_request(request)

    @property
    def safe_to_fork(self) -> bool:
        return False


def application(auth: Auth, prepare: Prepare, build: Build) -> Application:
    return Application(DocHandler(auth, prepare, build))


def argument(session_context: Any, name: str, default: str = "") -> str:
    """The last value of query argument ``name`` the page passed to its document."""
    values = arguments(session_context, name)
    return values[-1] if values else default


def arguments(session_context: Any, name: str) -> list[str]:
    request = getattr(session_context, "request", None)
    raw = (request.arguments if request is not None else {}).get(name) or []
    return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in raw]


def failure_html(failed: Failed | None) -> str:
    """What a document shows when its ``prepare`` failed: one escaped line."""
    message = failed.message if failed is not None else "this document could not be prepared"
    return f"<p class='error'>Cannot show this view: {html.escape(message)}</p>"
