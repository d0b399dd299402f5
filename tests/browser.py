"""A small Chrome DevTools Protocol client for tests: Debian's headless Chromium, offline.

    async with Browser(tmp_path / "chromium") as browser:
        page = await browser.new_page()            # network off unless offline=False
        await page.goto(f"file://{path}")
        await page.wait_for("window.Bokeh && Bokeh.documents.length > 0")
        assert await page.evaluate(COUNT_CANVASES) > 0
        await page.screenshot(output_dir / "page.png")
        assert page.remote_requests() == []        # nothing left the machine

Chromium starts with the flags docs/architecture.md#tests-and-benchmarks lists and ``--remote-debugging-port=0``;
the port it picked is read from ``DevToolsActivePort`` in the user-data-dir.
One websocket (Tornado's client) carries everything: pages are attached in
flat mode, so each command names its session. Waits are on events (a
reply, ``Page.loadEventFired``) or on a polled condition with a deadline.
:meth:`Browser.close` ends exactly the Chromium it started.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--remote-debugging-port=0")
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0

#: JS: how many <canvas> elements the page holds, inside shadow roots too
#: (Bokeh 3 draws each plot in its own shadow DOM).
COUNT_CANVASES = """(() => {
  let n = 0;
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.tagName === 'CANVAS') n++;
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return n;
})()"""


class CDPError(RuntimeError):
    """Chromium answered a command with an error, or a script threw."""


class Browser:
    """One headless Chromium process and its DevTools websocket."""

    def __init__(self, user_data_dir: Path, *, executable: str = CHROMIUM,
                 window: tuple[int, int] = (1280, 900)) -> None:
        self.user_data_dir = Path(user_data_dir)
        self.executable = executable
        self.window = window
        self.log_path = self.user_data_dir.with_name(self.user_data_dir.name + ".log")
        self._proc: asyncio.subprocess.Process | None = None
        self._ws: WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[Callable[[str, dict[str, Any]], None]]] = {}

    async def __aenter__(self) -> Browser:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start Chromium and connect to its browser-level DevTools endpoint."""
        self.user_data_dir.mkdir(parents=True, exist_ok=True)
        (self.user_data_dir / "DevToolsActivePort").unlink(missing_ok=True)
        log = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.executable, *FLAGS, f"--user-data-dir={self.user_data_dir}",
                f"--window-size={self.window[0]},{self.window[1]}", "about:blank",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()  # Chromium holds its own copy of the descriptor
        try:
            port, path = await self._devtools_port()
            self._ws = await websocket_connect(f"ws://127.0.0.1:{port}{path}",
                                               max_message_size=512 * 1024 * 1024)
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _devtools_port(self) -> tuple[int, str]:
        port_file = self.user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode}; "
                                   f"see {self.log_path}")
            lines = port_file.read_text().splitlines() if port_file.exists() else []
            if len(lines) >= 2:
                return int(lines[0]), lines[1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium wrote no {port_file} in {START_TIMEOUT:g} s")
            await asyncio.sleep(0.05)  # polling for the file, with a deadline  # wait-ok: poll step under a deadline

    async def close(self) -> None:
        """Ask Chromium to quit, then end it if it does not; close the websocket."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self.send("Browser.close", timeout=5.0)
            self._ws.close()
            self._ws = None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 10.0)
                except TimeoutError:
                    proc.kill()
            await proc.wait()
        for fut in self._pending.values():
            fut.cancel()

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None, timeout: float = COMMAND_TIMEOUT
                   ) -> dict[str, Any]:
        """One DevTools command; returns its ``result`` or raises CDPError."""
        assert self._ws is not None, "browser is not started"
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        try:
            await self._ws.write_message(json.dumps(msg))
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg["id"], None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        return dict(reply.get("result") or {})

    def listen(self, method: str, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``callback(session, params)`` for every event ``method``."""
        self._listeners.setdefault(method, []).append(callback)

    async def _read(self) -> None:
        assert self._ws is not None
        while True:
            raw = await self._ws.read_message()
            if raw is None:
                break
            data = json.loads(raw)
            if "id" in data:
                fut = self._pending.get(data["id"])
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            for callback in self._listeners.get(data.get("method", ""), []):
                callback(data.get("sessionId", ""), data.get("params") or {})

    async def new_page(self, *, offline: bool = True) -> Page:
        """A new tab, attached, with page/runtime/network events on; offline by default."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        for domain in ("Page", "Runtime", "Network"):
            await page.send(f"{domain}.enable")
        if offline:
            await page.send("Network.emulateNetworkConditions", {
                "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        await page.send("Emulation.setDeviceMetricsOverride", {
            "width": self.window[0], "height": self.window[1], "deviceScaleFactor": 1,
            "mobile": False})
        return page


class Page:
    """One attached tab: navigate, evaluate, wait, screenshot; records requests and errors."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.requests: list[str] = []
        self.errors: list[str] = []
        self._loaded = asyncio.Event()
        browser.listen("Network.requestWillBeSent", self._on(lambda p: self.requests.append(
            p.get("request", {}).get("url", ""))))
        browser.listen("Runtime.exceptionThrown", self._on(lambda p: self.errors.append(
            json.dumps(p.get("exceptionDetails", {}))[:500])))
        browser.listen("Page.loadEventFired", self._on(lambda p: self._loaded.set()))

    def _on(self, fn: Callable[[dict[str, Any]], None]) -> Callable[[str, dict[str, Any]], None]:
        def handler(session: str, params: dict[str, Any]) -> None:
            if session == self.session:
                fn(params)
        return handler

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str, timeout: float = COMMAND_TIMEOUT) -> None:
        """Navigate and wait for the load event."""
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (promises awaited); a throw raises CDPError."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]!r} threw: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy; its value, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression[:80]!r} still falsy after {timeout:g} s")
            await asyncio.sleep(0.1)  # polling a condition, with a deadline  # wait-ok: poll step under a deadline

    async def screenshot(self, path: Path, full_page: bool = True) -> bytes:
        """Save a PNG of the page (the whole page by default) and return its bytes."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = base64.b64decode((await self.send("Page.captureScreenshot", params))["data"])
        await asyncio.to_thread(Path(path).write_bytes, data)
        return data

    def remote_requests(self) -> list[str]:
        """Requested URLs that are not local (``file:``, ``data:``, ``blob:``, ``about:``)."""
        local = ("file:", "data:", "blob:", "about:")
        return [u for u in self.requests if not u.startswith(local)]
