"""The app endpoints' sockets, real ones on 127.0.0.1: the UDP buffer, the kernel's
drops as the agent reports them, and the stream that loses nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from pathlib import Path

import pytest

from agent.collectors import app_sockets
from agent.collectors.app import AppMetricsEndpoint
from agent.collectors.app_sockets import read_udp_drops, size_receive_buffer
from bus.metrics import Series

RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())
DEFAULT_RCVBUF = 16 * 1024 * 1024


def burst_that_fits(rcvbuf: int = DEFAULT_RCVBUF) -> int:
    """Datagrams of one short line that a buffer surely holds: the kernel charges
    ~830 bytes each against twice the buffer it gives (measured 40,329 in 16 MiB),
    and without root the buffer stops at rmem_max."""
    given = rcvbuf if os.geteuid() == 0 else min(rcvbuf, RMEM_MAX)
    return min(20_000, given // 800)


def numbers(series: list[Series]) -> list[int]:
    """The ``value`` of every ``seq`` row: the numbered points that arrived."""
    return [int(row[1]) for s in series if s.tags.get("name") == "seq" for row in s.rows]


def udp_target(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("udp://").rsplit(":", 1)
    return host, int(port)


def test_the_buffer_reaches_the_target_as_far_as_allowed() -> None:
    target = 16 * 1024 * 1024
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        got = size_receive_buffer(sock, target)
    assert got == (target if os.geteuid() == 0 else min(target, RMEM_MAX))


def test_a_buffer_short_of_the_target_is_said_once(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Without SO_RCVBUFFORCE (an unknown option number stands in for a non-root
    agent's EPERM, the same OSError), SO_RCVBUF stops at rmem_max."""
    monkeypatch.setattr(app_sockets, "SO_RCVBUFFORCE", 0x7FFF)
    monkeypatch.setattr(app_sockets, "_short_buffer_logged", False)
    target = 2 * RMEM_MAX
    with caplog.at_level(logging.WARNING, logger="agent.collectors.app_sockets"):
        for _ in range(3):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                assert size_receive_buffer(sock, target) == RMEM_MAX
    assert len(caplog.records) == 1
    assert f"get {RMEM_MAX} bytes, not the {target}" in caplog.records[0].getMessage()


def test_drops_are_read_per_socket_from_proc() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tiny, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for sock in (quiet, tiny):
            sock.bind(("127.0.0.1", 0))
        size_receive_buffer(tiny, 1024)
        for i in range(200):
            sender.sendto(b"x value=%d" % i, tiny.getsockname())
        inodes = {os.fstat(s.fileno()).st_ino for s in (quiet, tiny)}
        drops = read_udp_drops(inodes)
        assert drops[os.fstat(quiet.fileno()).st_ino] == 0
        assert drops[os.fstat(tiny.fileno()).st_ino] > 100
    assert read_udp_drops(inodes) == {}  # closed sockets are gone, not zero


async def _burst_while_not_reading(ep: AppMetricsEndpoint, count: int) -> list[int]:
    """Send ``count`` numbered datagrams without letting the loop read (as if the agent
    were paused), then stop the endpoint, which takes what is queued."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        target = udp_target(ep.address)
        for i in range(count):  # no await: the loop cannot read meanwhile
            sender.sendto(b"seq value=%d" % i, target)
    await ep.stop()
    return numbers(ep.collect(0))


def test_a_large_buffer_holds_a_burst_and_a_small_one_counts_what_it_loses() -> None:
    async def scenario() -> None:
        big = AppMetricsEndpoint("n1", "j1")
        await big.start()
        burst = burst_that_fits()
        got = await _burst_while_not_reading(big, burst)
        assert sorted(got) == list(range(burst)) and big.kernel_dropped() == 0

        small = AppMetricsEndpoint("n1", "j1", rcvbuf=4096)
        await small.start()
        got = await _burst_while_not_reading(small, 2_000)
        dropped = small.kernel_dropped()
        assert dropped is not None and dropped > 1_000
        assert len(got) + dropped == 2_000  # each one either arrived or is counted

    asyncio.run(scenario())


def test_the_stream_delivers_every_line_and_waits_instead_of_dropping() -> None:
    """K numbered lines over TCP, written in odd-sized pieces, while the endpoint
    holds at most 500 points at a time: all K arrive, in order, none refused."""
    k = 20_000

    def writer(address: str, done: threading.Event) -> None:
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        payload = b"".join(b"seq value=%d\n" % i for i in range(k))
        with socket.create_connection((host, int(port))) as conn:
            for start in range(0, len(payload), 777):  # lines cut across writes
                conn.sendall(payload[start:start + 777])
        done.set()

    async def scenario() -> list[int]:
        ep = AppMetricsEndpoint("n1", "j1", max_pending=500)
        await ep.start()
        done = threading.Event()
        thread = threading.Thread(target=writer, args=(ep.stream_address, done))
        thread.start()
        got: list[int] = []
        paused = False
        async with asyncio.timeout(30):
            while len(got) < k:
                await asyncio.sleep(0.01)  # wait-ok: the loop's turn to read, under a deadline
                paused = paused or any(c.paused for c in ep.sockets.connections)
                got += numbers(ep.collect(0))
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        await ep.stop()
        got += numbers(ep.collect(0))
        assert done.is_set() and ep.dropped == 0 and ep.bad_lines == 0
        assert paused, "the endpoint never had to hold the writer back"
        return got

    assert asyncio.run(scenario()) == list(range(k))


def test_a_last_line_without_newline_and_an_endless_line(tmp_path: Path) -> None:
    async def scenario() -> AppMetricsEndpoint:
        ep = AppMetricsEndpoint("n1", "j1")
        await ep.start()
        host, port = ep.stream_address.removeprefix("tcp://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(10):  # an endless line, over several reads
            writer.write(b"x" * 10_000)
            await writer.drain()
        writer.write(b"\nseq value=1\nseq value=2")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(10):
            while ep.bad_lines == 0 or not ep.sockets.connections == set():
                await asyncio.sleep(0.01)  # wait-ok: poll under a deadline
        await ep.stop()
        return ep

    ep = asyncio.run(scenario())
    assert numbers(ep.collect(0)) == [1, 2]
    assert ep.bad_lines == 1
