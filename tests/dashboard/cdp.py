"""A small, synchronous Chrome DevTools Protocol client for headless Chromium.

No Selenium, no extra package: Chromium listens for DevTools on a websocket
(``--remote-debugging-port=0`` picks a free port and writes it to
``DevToolsActivePort`` in the profile folder), and a client websocket is a
few dozen lines of RFC 6455 (:class:`WebSocket`). :class:`Browser` starts and
stops the process; :class:`Tab` is one page: navigate, evaluate JavaScript,
wait for a condition (polled with a deadline), screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CHROMIUM = os.environ.get("PTAP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--remote-debugging-port=0",
         "--disable-dev-shm-usage", "--window-size=1280,900"]
T = TypeVar("T")


class CdpError(RuntimeError):
    """Chromium answered a command with an error, or a page script threw."""


class WebSocket:
    """A blocking client websocket (text frames, pings answered, no extensions)."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        status, _, self._buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {status[:200]!r}")

    def send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        head = bytes([0x81])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("DevTools websocket closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def recv(self) -> str:
        """The next text message (fragments joined; pings answered)."""
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                self.sock.sendall(bytes([0x8A, 0x80]) + os.urandom(4))
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools websocket closed by Chromium")
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Connection:
    """CDP commands and events over one websocket."""

    def __init__(self, ws: WebSocket, timeout: float = 30.0) -> None:
        self.ws = ws
        self.timeout = timeout  # seconds a command may take (a busy host needs more)
        self._next = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=2000)

    def call(self, method: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; CdpError if it fails or takes too long
        (a late answer is skipped when it arrives)."""
        self._next += 1
        ident = self._next
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        self.ws.sock.settimeout(timeout or self.timeout)
        while True:
            try:
                msg = json.loads(self.ws.recv())
            except TimeoutError:
                raise CdpError(f"{method}: no answer in {timeout or self.timeout:g} s") from None
            if msg.get("id") == ident:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                return dict(msg.get("result") or {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next event ``method`` (one already received counts)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in list(self.events):
                if ev["method"] == method:
                    self.events.remove(ev)
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} event within {timeout:g} s")
            self.ws.sock.settimeout(left)
            try:
                msg = json.loads(self.ws.recv())
            except TimeoutError:
                continue
            if "method" in msg:
                self.events.append(msg)


class Tab:
    """One page target."""

    def __init__(self, browser: Browser, target_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.conn = Connection(WebSocket("127.0.0.1", browser.port, f"/devtools/page/{target_id}"),
                               browser.timeout)
        self.conn.call("Page.enable")
        self.conn.call("Runtime.enable")
        self.conn.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                       deviceScaleFactor=1, mobile=False)

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Load ``url`` and wait for its load event."""
        self.conn.events.clear()
        self.conn.call("Page.navigate", url=url)
        self.conn.wait_event("Page.loadEventFired", timeout)

    def reload(self, timeout: float = 30.0) -> None:
        self.conn.events.clear()
        self.conn.call("Page.reload", ignoreCache=False)
        self.conn.wait_event("Page.loadEventFired", timeout)

    def js(self, expression: str, await_promise: bool = False) -> Any:
        """Evaluate ``expression`` in the page; its JSON value."""
        res = self.conn.call("Runtime.evaluate", expression=expression, returnByValue=True,
                             awaitPromise=await_promise)
        if "exceptionDetails" in res:
            detail = res["exceptionDetails"]
            text = detail.get("exception", {}).get("description") or detail.get("text")
            raise CdpError(f"page script failed: {text}")
        return res.get("result", {}).get("value")

    def wait(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy (script errors count as not yet)."""
        return poll(lambda: self._try(expression), timeout, what or expression)

    def _try(self, expression: str) -> Any:
        try:
            return self.js(expression)
        except CdpError:
            return None

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (not only the viewport)."""
        size = self.conn.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": max(1280, size["width"]),
                "height": min(max(900, size["height"]), 6000), "scale": 1}
        shot = self.conn.call("Page.captureScreenshot", format="png", clip=clip,
                              captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if self.browser.conn is not None:
            try:
                self.browser.conn.call("Target.closeTarget", targetId=self.target_id)
            except (CdpError, OSError):
                pass
        self.conn.ws.close()


def poll(predicate: Callable[[], T | None], timeout: float, what: str,
         interval: float = 0.05) -> T:
    """``predicate()`` until truthy, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # polling a condition with a deadline  # wait-ok: poll step under a deadline


class Browser:
    """A headless Chromium process and its browser-level DevTools connection."""

    def __init__(self, profile: Path, log_path: Path | None = None,
                 timeout: float = 30.0) -> None:
        self.profile = profile
        self.timeout = timeout  # per DevTools command
        self.log_path = log_path or profile / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.conn: Connection | None = None

    def start(self, timeout: float = 30.0) -> Browser:
        if not Path(CHROMIUM).exists():
            raise FileNotFoundError(f"{CHROMIUM} not found — apt-get install chromium")
        self.profile.mkdir(parents=True, exist_ok=True)
        active = self.profile / "DevToolsActivePort"
        active.unlink(missing_ok=True)  # a reused profile's file names a dead port
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            lines = poll(lambda: self._active(active), timeout, "Chromium's DevToolsActivePort")
            self.port = int(lines[0])
            self.conn = Connection(WebSocket("127.0.0.1", self.port, lines[1]), self.timeout)
        except BaseException:
            self.stop()  # never leave a Chromium behind
            raise
        return self

    def _active(self, path: Path) -> list[str] | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Chromium exited with {self.proc.returncode}; see {self.log_path}")
        try:
            lines = path.read_text().split()
        except OSError:
            return None
        return lines if len(lines) >= 2 else None

    def new_tab(self, url: str = "about:blank", context: str | None = None,
                background: bool = False) -> Tab:
        """A new page (in browser context ``context``: separate cookies)."""
        assert self.conn is not None
        params: dict[str, Any] = {"url": "about:blank", "background": background}
        if context:
            params["browserContextId"] = context
        tab = Tab(self, self.conn.call("Target.createTarget", **params)["targetId"])
        if url != "about:blank":
            tab.navigate(url)
        return tab

    def new_context(self) -> str:
        """A fresh, cookie-less browser context (like a private window)."""
        assert self.conn is not None
        return str(self.conn.call("Target.createBrowserContext")["browserContextId"])

    def stop(self, timeout: float = 10.0) -> None:
        """Close the browser (CDP ``Browser.close``), then make sure this pid is gone."""
        if self.conn is not None:
            try:
                self.conn.call("Browser.close", timeout=5)
            except (CdpError, OSError, ConnectionError):
                pass
            self.conn.ws.close()
            self.conn = None
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout)
