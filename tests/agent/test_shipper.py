"""Shipper and spool over real PUSH/PULL sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from agent.shipper import Shipper, Spool
from bus import codec, messages
from bus.metrics import BATCH_SPLIT_BYTES, Series, series_to_wire
from bus.sockets import make_socket


def cpu_series(n: int, t0: int = 1_700_000_000_000_000_000) -> Series:
    s = Series("cpu", {"node": "n1", "cpu": "total"}, ("user", "idle"))
    for i in range(n):
        s.add(t0 + i, 1.5, 98.5)
    return s


class TrackingContext(zmq.asyncio.Context):
    """Keeps every socket it makes so the fixture closes them (no ResourceWarning)."""

    made: list[zmq.Socket]

    def socket(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        sock = super().socket(*args, **kwargs)
        self.made.append(sock)
        return sock


@pytest.fixture
def ctx() -> Iterator[zmq.asyncio.Context]:
    ctx = TrackingContext()
    ctx.made = []
    yield ctx
    for sock in ctx.made:
        sock.close(linger=0)
    ctx.term()


async def recv_batch(pull: zmq.asyncio.Socket) -> messages.MetricBatch:
    async with asyncio.timeout(5):
        msg = codec.decode(await pull.recv_multipart())
    assert isinstance(msg, messages.MetricBatch)
    return msg


def pair(ctx: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    pull = make_socket(ctx, zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = make_socket(ctx, zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    return push, pull


def test_batches_arrive_numbered_and_stay_until_acked(ctx: zmq.asyncio.Context) -> None:
    async def scenario() -> None:
        push, pull = pair(ctx)
        shipper = Shipper("n1", Spool(100), push, resend_after=0.0)
        first = shipper.ship([cpu_series(3)])
        second = shipper.ship([cpu_series(2)])
        assert first is not None and second == first + 1
        got = [await recv_batch(pull), await recv_batch(pull)]
        assert [b.seq for b in got] == [first, second]
        assert got[0].series[0][3][0] == [1_700_000_000_000_000_000, 1.5, 98.5]
        assert len(shipper.spool) == 2
        shipper.on_ack([first])
        assert len(shipper.spool) == 1
        assert shipper.resend_due() == 1  # resend_after=0: the unacked one goes again
        assert (await recv_batch(pull)).seq == second

    asyncio.run(scenario())


def test_empty_collections_send_nothing(ctx: zmq.asyncio.Context) -> None:
    push, _ = pair(ctx)
    shipper = Shipper("n1", Spool(10), push)
    assert shipper.ship([Series("cpu", {}, ("user",))]) is None
    assert len(shipper.spool) == 0


def test_overflow_drops_the_oldest_and_counts_points(ctx: zmq.asyncio.Context) -> None:
    push, _ = pair(ctx)
    shipper = Shipper("n1", Spool(3), push)
    seqs = [shipper.ship([cpu_series(10)]) for _ in range(5)]
    assert list(shipper.spool._batches) == seqs[2:]
    assert shipper.spool.points_dropped == 20
    assert shipper.spool.batches_dropped == 2


def test_no_peer_never_blocks_and_resend_delivers_later(ctx: zmq.asyncio.Context) -> None:
    async def scenario() -> None:
        push = make_socket(ctx, zmq.PUSH)
        push.setsockopt(zmq.IMMEDIATE, 1)  # no connection yet: sends fail at once
        probe = make_socket(ctx, zmq.PULL)
        port = probe.bind_to_random_port("tcp://127.0.0.1")
        probe.close(linger=0)
        push.connect(f"tcp://127.0.0.1:{port}")
        shipper = Shipper("n1", Spool(100), push, resend_after=60.0)
        seq = shipper.ship([cpu_series(4)])
        assert shipper.deferred_sends == 1
        pull = make_socket(ctx, zmq.PULL)
        async with asyncio.timeout(5):
            while True:  # ZeroMQ releases the probe's port in its I/O thread, a bit later
                try:
                    pull.bind(f"tcp://127.0.0.1:{port}")
                    break
                except zmq.ZMQError:
                    await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline
        async with asyncio.timeout(5):
            while shipper.resend_due() == 0:  # never sent: due at once
                await asyncio.sleep(0.02)     # poll the connection coming up  # wait-ok: poll step under a deadline
        assert (await recv_batch(pull)).seq == seq

    asyncio.run(scenario())


def test_disk_spool_survives_a_restart(ctx: zmq.asyncio.Context, tmp_path: Path) -> None:
    push, _ = pair(ctx)
    shipper = Shipper("n1", Spool(100, tmp_path), push)
    a = shipper.ship([cpu_series(3)])
    b = shipper.ship([cpu_series(5)])
    shipper.on_ack([a])
    (tmp_path / "garbage.batch").write_bytes(b"\xc1torn")
    reloaded = Spool(100, tmp_path)
    assert list(reloaded._batches) == [b]
    assert reloaded.points == 5
    assert not (tmp_path / "garbage.batch").exists()
    again = Shipper("n1", reloaded, push)
    assert again.seq >= b  # sequence numbers never go back


def test_a_heavy_tick_goes_as_several_batches_each_under_the_split_size(
        ctx: zmq.asyncio.Context) -> None:
    """A program reporting many points a tick: the tick's rows arrive whole, in
    batches the manager always takes; a row too large for any batch is counted."""
    async def scenario() -> None:
        push, pull = pair(ctx)
        shipper = Shipper("n1", Spool(1000), push)
        small = [cpu_series(2) for _ in range(3)]
        big = cpu_series(40_000)  # ~1 MB: over the split size alone
        huge = Series("app", {"node": "n1"}, ("log",))
        huge.add(1, "x" * (BATCH_SPLIT_BYTES + 1))
        last = shipper.ship([*small, big, huge])
        assert shipper.rows_too_large == 1
        got = []
        while not got or got[-1].seq != last:
            got.append(await recv_batch(pull))
        assert len(got) > 3
        assert sum(len(s[3]) for b in got for s in b.series) == 3 * 2 + 40_000
        assert all(len(codec.encode(b)[1]) <= BATCH_SPLIT_BYTES for b in got)
        rows = [r for b in got for s in b.series if len(s[3]) > 2 for r in s[3]]
        assert rows == big.rows  # cut between rows, in order

    asyncio.run(scenario())


def test_the_spool_is_bounded_in_bytes_and_counts_what_it_drops(
        ctx: zmq.asyncio.Context, tmp_path: Path) -> None:
    push, _ = pair(ctx)
    one = len(codec.encode(messages.MetricBatch(node="n1", seq=1,
                                                series=series_to_wire([cpu_series(50)])))[1])
    spool = Spool(1000, tmp_path, max_bytes=3 * one + one // 2)  # room for three
    shipper = Shipper("n1", spool, push)
    seqs = [shipper.ship([cpu_series(50)]) for _ in range(5)]
    assert list(spool._batches) == seqs[2:], "the oldest go first"
    assert spool.bytes <= spool.max_bytes  # type: ignore[operator]
    assert (spool.batches_dropped, spool.points_dropped) == (2, 100)
    assert sorted(p.name for p in tmp_path.glob("*.batch")) == [f"{s:020d}.batch"
                                                                for s in seqs[2:]]
    # A restart under a smaller bound keeps the newest and counts the rest.
    smaller = Spool(1000, tmp_path, max_bytes=one + one // 2)
    assert list(smaller._batches) == seqs[4:]
    assert smaller.points_dropped == 100
    assert len(list(tmp_path.glob("*.batch"))) == 1


def test_a_spool_folder_that_cannot_be_made_keeps_batches_in_memory(
        ctx: zmq.asyncio.Context, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    push, _ = pair(ctx)
    (tmp_path / "file").write_text("not a folder")
    spool = Spool(100, tmp_path / "file" / "spool")
    assert spool.directory is None and "kept in memory only" in caplog.text
    shipper = Shipper("n1", spool, push)
    assert shipper.ship([cpu_series(3)]) is not None and spool.points == 3


def test_an_unacked_batch_is_sent_again_with_a_back_off(ctx: zmq.asyncio.Context) -> None:
    """resend_after, then twice that, and so on up to RESEND_CAP; a registration
    sends everything again at once and starts the back-off over."""
    from agent.shipper import RESEND_CAP  # noqa: PLC0415

    push, _ = pair(ctx)
    shipper = Shipper("n1", Spool(100), push, resend_after=5.0)
    seq = shipper.ship([cpu_series(1)])
    assert seq is not None
    times = [shipper.spool._batches[seq].sent_at]  # its sends, on the spool's clock
    now = times[0]
    while len(times) < 9:
        now += 0.5
        if [s for s, _ in shipper.spool.due(now, 5.0)] == [seq]:
            assert shipper._send(seq, now)
            times.append(now)
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [5, 10, 20, 40, RESEND_CAP, RESEND_CAP, RESEND_CAP, RESEND_CAP]
    shipper.spool.mark_all_unsent()
    assert [s for s, _ in shipper.spool.due(now, 5.0)] == [seq]
    assert shipper._send(seq, now)
    assert not shipper.spool.due(now + 4.9, 5.0) and shipper.spool.due(now + 5.0, 5.0)
