"""Ship metric batches to the manager's PULL socket, keeping each until it is acked.

Delivery is at least once (docs/architecture.md#metric-path): every batch gets the next sequence
number and goes into a bounded spool *before* it is sent; the manager acks a
sequence only after InfluxDB accepted it; unacked batches are sent again at
once after every (re)registration (a new connection may have lost what was in
flight), and otherwise ``resend_after`` seconds after their first send, then
after twice that, and so on up to :data:`RESEND_CAP` (as TCP backs off its
retransmissions). A fixed period made a slow manager (InfluxDB down, a starved
host) the target of a resend storm: with 1,000 agents, half the batches it read
were copies of ones it had stored. Resent points carry their original
timestamps, so InfluxDB overwrites them with themselves.

Sends never block: a full PUSH queue (HWM) leaves the batch in the spool for
the next resend pass, so collection never stalls behind a slow network. When
the spool overflows (``max_batches`` or ``max_bytes``), the oldest batch goes
and its points are counted in ``points_dropped``, which the ``agent``
measurement and the heartbeat's ``samples_dropped`` report.

With a folder (the default, see :mod:`agent.state_dir`) each batch is also a
file, written to a temporary name and renamed: an agent that is stopped or
killed sends them after its restart. Batch files are not fsynced: a process
crash loses nothing without it, and a power cut costs at most the last few
seconds, where an fsync a second would stall the loop on a busy disk.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bus import codec, messages
from bus.metrics import BATCH_SPLIT_BYTES, Series, count_points, series_to_wire, split_wire
from bus.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

#: The longest wait between two sends of one unacked batch (see the module docstring).
RESEND_CAP = 60.0


@dataclass(slots=True)
class _Spooled:
    frames: list[bytes]
    points: int
    sent_at: float  # monotonic; 0.0 = never sent (since the last registration)
    sends: int = 0  # since the last registration

    def due(self, now: float, resend_after: float) -> bool:
        if self.sent_at == 0.0:
            return True
        wait = min(RESEND_CAP, resend_after * 2.0 ** min(self.sends - 1, 16))
        return now - self.sent_at >= wait


class Spool:
    """Unacked batches by sequence, oldest first, bounded in count and in bytes.

    With ``directory`` set each batch is also written to a file, so batches
    survive an agent restart; files are removed when acked or dropped. A
    folder that cannot be written costs durability (logged), never a batch.
    """

    def __init__(self, max_batches: int, directory: Path | None = None,
                 max_bytes: int | None = None) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.directory = directory
        self._batches: OrderedDict[int, _Spooled] = OrderedDict()
        self.bytes = 0
        self.points_dropped = 0
        self.batches_dropped = 0
        self._trouble = RateLimitedLog(log, period=60.0)
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("spool folder %s cannot be made (%s); batches kept in memory only",
                          directory, exc.strerror or exc)
                self.directory = None
            else:
                self._load()

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def points(self) -> int:
        return sum(b.points for b in self._batches.values())

    def add(self, seq: int, frames: list[bytes], points: int) -> None:
        size = len(frames[1])
        while self._batches and (len(self._batches) >= self.max_batches or (
                self.max_bytes is not None and self.bytes + size > self.max_bytes)):
            self._drop_oldest()
        self._hold(seq, _Spooled(frames, points, 0.0))
        if self.directory is not None:
            path = self.directory / f"{seq:020d}.batch"
            tmp = path.with_suffix(".tmp")
            try:
                tmp.write_bytes(frames[1])
                tmp.replace(path)
            except OSError as exc:  # a full disk: the batch is still held and sent
                self._trouble.warn("write", f"spool: cannot write {path} "
                                   f"({exc.strerror or exc}); the batch is kept in memory "
                                   "only and lost if the agent stops before it is acked")

    def _hold(self, seq: int, batch: _Spooled) -> None:
        self._batches[seq] = batch
        self.bytes += len(batch.frames[1])

    def _drop_oldest(self) -> None:
        old_seq, old = self._batches.popitem(last=False)
        self.bytes -= len(old.frames[1])
        self.points_dropped += old.points
        self.batches_dropped += 1
        self._unlink(old_seq)
        self._trouble.warn("full", f"spool full (max {self.max_batches} batches, "
                           f"{self.max_bytes} bytes): dropped batch {old_seq} with "
                           f"{old.points} points ({self.points_dropped} points dropped so "
                           "far, reported as samples_dropped)")

    def ack(self, seqs: Iterable[int]) -> int:
        """Forget acked batches; returns how many were still held."""
        done = 0
        for seq in seqs:
            batch = self._batches.pop(seq, None)
            if batch is not None:
                self.bytes -= len(batch.frames[1])
                done += 1
                self._unlink(seq)
        return done

    def due(self, now: float, resend_after: float) -> list[tuple[int, _Spooled]]:
        """Batches never sent, or whose back-off from ``resend_after`` has passed
        since their last send, oldest first."""
        return [(seq, b) for seq, b in self._batches.items() if b.due(now, resend_after)]

    def mark_all_unsent(self) -> None:
        """A new registration: every batch goes again at once, its back-off reset."""
        for b in self._batches.values():
            b.sent_at, b.sends = 0.0, 0

    def _unlink(self, seq: int) -> None:
        if self.directory is not None:
            try:
                (self.directory / f"{seq:020d}.batch").unlink(missing_ok=True)
            except OSError as exc:
                self._trouble.warn("unlink", f"spool: cannot remove batch {seq} "
                                   f"({exc.strerror or exc}); it may be sent again")

    def _load(self) -> None:
        assert self.directory is not None
        for path in sorted(self.directory.glob("*.tmp")):
            path.unlink(missing_ok=True)  # a write cut by a crash: its batch was never sent
        for path in sorted(self.directory.glob("*.batch")):
            try:
                body = path.read_bytes()
                batch = codec.decode([messages.MsgType.METRICS.value.encode(), body])
                assert isinstance(batch, messages.MetricBatch)
                points = count_points(batch.series)
            except Exception as exc:  # a torn or foreign file: say so, keep going
                log.warning("spool file %s is unreadable (%s); removing it", path, exc)
                path.unlink(missing_ok=True)
                continue
            frames = [messages.MsgType.METRICS.value.encode(), body]
            self._hold(batch.seq, _Spooled(frames, points, 0.0))
        # Batches kept under a larger bound than today's: the oldest go, counted.
        while self._batches and (len(self._batches) > self.max_batches or (
                self.max_bytes is not None and self.bytes > self.max_bytes)):
            self._drop_oldest()
        if self._batches:
            log.info("spool: %d batches (%d bytes) from a previous run will be sent",
                     len(self._batches), self.bytes)


class Shipper:
    """Numbers, spools and sends batches over a PUSH socket owned by the caller.

    The caller may swap ``push`` for a new socket after a reconnect with
    :meth:`attach`.
    """

    def __init__(self, node: str, spool: Spool, push: zmq.asyncio.Socket,
                 resend_after: float = 5.0) -> None:
        self.node = node
        self.spool = spool
        # A synchronous view of the same socket: a non-blocking send on the
        # asyncio socket would report EAGAIN through a future nobody awaits.
        self._push: zmq.Socket[bytes] = zmq.Socket.shadow(push.underlying)
        self.resend_after = resend_after
        # Sequences start at the wall clock in µs so that they keep growing
        # across agent restarts: the manager never sees an old number again.
        self.seq = max([time.time_ns() // 1000, *self.spool._batches.keys()])
        self.points_shipped = 0
        self.deferred_sends = 0
        #: Rows too large to send in any batch (see :func:`bus.metrics.split_wire`).
        self.rows_too_large = 0

    def attach(self, push: zmq.asyncio.Socket) -> None:
        self._push = zmq.Socket.shadow(push.underlying)

    def ship(self, series: list[Series]) -> int | None:
        """Spool and send one batch of ``series``; returns its (last) sequence, None if empty.

        A batch over :data:`bus.metrics.BATCH_SPLIT_BYTES` goes as several, so
        that the manager always takes it (a sampling tick weighs a few kB; a
        program reporting many points a tick can make it weigh megabytes).
        """
        wire = series_to_wire(series)
        if not wire:
            return None
        frames = self._frames(wire)
        if len(frames[1]) <= BATCH_SPLIT_BYTES:
            return self._ship(frames, count_points(wire))
        parts, dropped = split_wire(wire)
        if dropped:
            self.rows_too_large += dropped
            log.warning("node %s: %d rows dropped, each larger than a whole batch "
                        "(%d bytes) with its series' header", self.node, dropped,
                        BATCH_SPLIT_BYTES)
        seq = None
        for part in parts:
            seq = self._ship(self._frames(part), count_points(part))
        return seq

    def _frames(self, wire: list[list[Any]]) -> list[bytes]:
        return codec.encode(messages.MetricBatch(node=self.node, seq=self.seq + 1, series=wire))

    def _ship(self, frames: list[bytes], points: int) -> int:
        self.seq += 1
        self.spool.add(self.seq, frames, points)
        self.points_shipped += points
        self._send(self.seq, time.monotonic())
        return self.seq

    def on_ack(self, seqs: list[int]) -> None:
        self.spool.ack(seqs)

    def resend_due(self) -> int:
        """Send what is unsent or unacked for too long; returns batches sent."""
        now = time.monotonic()
        sent = 0
        for seq, _ in self.spool.due(now, self.resend_after):
            if not self._send(seq, now):
                break  # the queue is full: the rest waits for the next pass
            sent += 1
        return sent

    def resend_all(self) -> int:
        """After (re)registration the manager may have lost anything in flight."""
        self.spool.mark_all_unsent()
        return self.resend_due()

    def _send(self, seq: int, now: float) -> bool:
        spooled = self.spool._batches.get(seq)
        if spooled is None:
            return True
        try:
            self._push.send_multipart(spooled.frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.deferred_sends += 1
            return False
        spooled.sent_at = now
        spooled.sends += 1
        return True
