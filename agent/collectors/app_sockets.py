"""The sockets a run's program reports its numbers to: UDP, and a stream for every point.

Two endpoints on 127.0.0.1 per run, both fed to the same parser
(:mod:`agent.collectors.app`), and given to the program in its environment:

``PTAP_METRICS=udp://127.0.0.1:PORT``
    Datagrams never block the program, but the kernel drops what does not fit
    in the socket's receive buffer while the agent is not reading (a paused or
    starved agent). So the buffer is made large (``[collectors] app_rcvbuf``,
    16 MiB by default; past ``net.core.rmem_max`` with ``SO_RCVBUFFORCE``, which
    needs root), and what the kernel still drops is read back per socket from
    the ``drops`` column of ``/proc/net/udp`` and reported
    (:func:`read_udp_drops`), never silent.

``PTAP_METRICS_STREAM=tcp://127.0.0.1:PORT``
    Newline-terminated lines over TCP, for a program that must not lose a
    point: when the agent is slow the program's writes wait instead. The agent
    stops reading a connection while it holds ``max_pending`` unshipped points
    and reads on once they are collected, so its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

__all__ = ["AppSockets", "read_udp_drops", "size_receive_buffer"]

log = logging.getLogger(__name__)

PROC_NET_UDP = "/proc/net/udp"
#: A stream line longer than this is a bad line, not a reason to buffer without end.
MAX_STREAM_LINE = 65536
#: ``SO_RCVBUFFORCE`` (Linux): ``SO_RCVBUF`` without the ``rmem_max`` cap, for root.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_short_buffer_logged = False

#: ``feed(data, now_ns, lossless)`` of the endpoint; returns how many lines were good.
Feed = Callable[[bytes, int, bool], int]


def size_receive_buffer(sock: socket.socket, target: int) -> int:
    """Ask for a ``target``-byte receive buffer; returns the bytes the kernel gave.

    As root ``SO_RCVBUFFORCE`` passes ``net.core.rmem_max``; otherwise
    ``SO_RCVBUF`` is capped there. One log line per process when the buffer
    stays short of ``target`` (the kernel reports double what it accounts for
    data, bookkeeping included; half of it is compared).
    """
    global _short_buffer_logged
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, target)
    except OSError:  # EPERM without CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, target)
    got = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2
    if got < target and not _short_buffer_logged:
        _short_buffer_logged = True
        log.warning("app metrics UDP buffers get %d bytes, not the %d of [collectors] "
                    "app_rcvbuf: net.core.rmem_max is lower and the agent is not root; "
                    "raise it (sysctl -w net.core.rmem_max=%d) or a paused agent loses "
                    "datagrams sooner (counted as app_dropped)", got, target, target)
    return got


def read_udp_drops(inodes: set[int], path: str = PROC_NET_UDP) -> dict[int, int]:
    """The kernel's ``drops`` count of each UDP socket in ``inodes`` (absent: not found)."""
    found: dict[int, int] = {}
    if not inodes:
        return found
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            next(fh, None)  # the header
            for line in fh:
                cols = line.split()
                # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                if len(cols) >= 13 and cols[9].isdigit() and int(cols[9]) in inodes:
                    found[int(cols[9])] = int(cols[12])
    except (OSError, ValueError) as exc:
        log.debug("cannot read %s: %s", path, exc)
    return found


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.feed(data, time.time_ns(), False)

    def error_received(self, exc: Exception) -> None:
        log.debug("app metrics socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _StreamConnection(asyncio.Protocol):
    """One program's TCP connection: whole lines to ``feed``, partial ones kept."""

    def __init__(self, owner: AppSockets) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._partial = b""
        self._skipping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._skipping:  # the rest of an endless line, already counted as bad
            newline = data.find(b"\n")
            self._skipping = newline < 0
            data = b"" if newline < 0 else data[newline + 1:]
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            self.owner.feed(data[:cut], time.time_ns(), True)
        if len(self._partial) > MAX_STREAM_LINE:
            self.owner.feed(b"\xff" + self._partial[:80], time.time_ns(), True)  # a bad line
            self._partial, self._skipping = b"", True
        if self.owner.full() and self.transport is not None and not self.paused:
            self.paused = True  # the program's writes wait in TCP until collect()
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._partial and not self._skipping:  # a last line without its newline is still a line
            self.owner.feed(self._partial, time.time_ns(), True)
            self._partial = b""
        return None

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)


class AppSockets:
    """The UDP and stream endpoints of one run, feeding ``feed``; ``full()`` pauses streams."""

    def __init__(self, feed: Feed, full: Callable[[], bool], host: str = "127.0.0.1",
                 rcvbuf: int = 16 * 1024 * 1024) -> None:
        self.feed = feed
        self.full = full
        self.host = host
        self.rcvbuf = rcvbuf
        self.rcvbuf_got = 0
        self.connections: set[_StreamConnection] = set()
        self.inode: int | None = None
        self._udp: socket.socket | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._udp_protocol: _Datagrams | None = None
        self._server: asyncio.Server | None = None
        self._dropped_at_close: int | None = None

    async def start(self) -> dict[str, str]:
        """Bind both endpoints; returns the environment entries for the program."""
        loop = asyncio.get_running_loop()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setblocking(False)
        self.rcvbuf_got = size_receive_buffer(udp, self.rcvbuf)
        udp.bind((self.host, 0))
        self._udp, self.inode = udp, os.fstat(udp.fileno()).st_ino
        self._udp_transport, self._udp_protocol = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self.feed), sock=udp)
        self._server = await loop.create_server(lambda: _StreamConnection(self), self.host, 0)
        stream_port = self._server.sockets[0].getsockname()[1]
        return {"PTAP_METRICS": f"udp://{self.host}:{udp.getsockname()[1]}",
                "PTAP_METRICS_STREAM": f"tcp://{self.host}:{stream_port}"}

    def resume_streams(self) -> None:
        """Points were collected: read the paused connections again."""
        for conn in list(self.connections):
            conn.resume()

    def dropped(self) -> int | None:
        """Datagrams the kernel dropped on the UDP socket so far (None: not known)."""
        if self._dropped_at_close is not None or self.inode is None:
            return self._dropped_at_close
        return read_udp_drops({self.inode}).get(self.inode)

    async def stop(self, drain_timeout: float = 1.0) -> None:
        """Take what is still queued on both endpoints, then close them."""
        self._dropped_at_close = self.dropped()
        self._drain_udp()
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.paused = True  # reading on at the end: the program has finished writing
                conn.resume()
            waits = [c.closed for c in self.connections]
            if waits:  # EOF from a program that ended; one still writing is cut off
                await asyncio.wait(waits, timeout=drain_timeout)
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None
        transport, protocol = self._udp_transport, self._udp_protocol
        self._udp_transport = self._udp_protocol = None
        if transport is not None and protocol is not None:
            transport.close()
            await protocol.closed
        self._udp = None

    def _drain_udp(self) -> None:
        """Datagrams the loop has not read yet are taken now; closing would discard them."""
        if self._udp is None:
            return
        while True:
            try:
                data = self._udp.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.feed(data, time.time_ns(), False)
