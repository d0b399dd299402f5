"""Metric ingest: PULL frames → checked series → line protocol → sink → acks.

The contract with agents (docs/architecture.md#metric-path) is at least once with nothing lost:

* a batch is *accepted* once it decodes, comes from a registered node and
  fits in the buffer; it is checked and encoded to line protocol at once
  (:func:`manager.lineproto.encode_batch`) and queued as one ``bytes``;
* queued batches are written with :func:`manager.sinks.write_payload`, which
  retries an unavailable InfluxDB for as long as it takes. ``writers``
  writes are in flight at once (2 by default): while InfluxDB parses one
  payload the next is on its way, so InfluxDB can use more than one core;
  the manager's own work happens between them on its loop. Order across
  writes does not matter: every point carries its timestamp, and a resent
  batch holds the same values;
* a batch is *acked* to its agent only after the sink stored it;
* a batch that is not accepted (unknown node, full buffer) is simply not
  acked: the agent keeps it in its spool and sends it again, so refusing is
  back-pressure, never loss.

Rows inside an accepted batch are checked: a row with the wrong
shape or an absurd timestamp is dropped and counted, and the good rows beside
it are kept. Every problem is counted, and logged at most once per interval
per kind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bus import codec
from bus.errors import ProtocolError
from bus.messages import MetricBatch
from manager import lineproto
from manager.lineproto import encode_batch
from manager.sinks import Backoff, Sink, SinkError, WriteCounters, write_payload

log = logging.getLogger(__name__)

#: Rows stamped further from "now" than these are refused: a clock gone wrong
#: would otherwise scatter points across years of retention.
MAX_AGE_NS = 7 * 24 * 3600 * 10**9
MAX_AHEAD_NS = 24 * 3600 * 10**9
#: Sequence numbers are non-negative int64 (agents start from the wall clock in µs).
MAX_SEQ = 2**63 - 1
#: Longest the PULL loop keeps the event loop to itself while batches keep coming.
YIELD_EVERY = 0.001
#: A batch's line protocol may be at most this many times its own size (plus
#: :data:`EXPANSION_SLACK`). Every line repeats its series' tags and field names,
#: so a small message can ask for a huge payload (a 1 MB tag on 60 rows is 60 MB).
#: Agents' batches stay under about 16 times (long tags on one-integer rows); a
#: batch over the bound is refused whole and counted, never half-stored.
MAX_EXPANSION = 32
EXPANSION_SLACK = 64 * 1024
#: Bytes of line protocol per write at most (one batch alone may be larger).
WRITE_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class _Pending:
    node: str
    seq: int
    payload: bytes  # the batch's lines, newline-separated
    points: int


AckFn = Callable[[str, list[int]], Awaitable[None]]
PublishFn = Callable[[str, list[bytes]], Awaitable[None]]


class Ingest:
    """Accepts batches from the PULL loop and writes them to ``sink`` in the background."""

    def __init__(
        self,
        sink: Sink,
        *,
        ack: AckFn,
        publish: PublishFn,
        is_known_node: Callable[[str], bool],
        limits: codec.Limits = codec.DEFAULT_LIMITS,
        max_points: int = 2_000_000,
        max_bytes: int = 512 * 1024 * 1024,
        write_points: int = 20_000,
        writers: int = 2,
        backoff: Backoff = Backoff(base=0.2, max=10.0),
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.sink = sink
        self._ack = ack
        self._publish = publish
        self._is_known_node = is_known_node
        self.limits = limits
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.write_points = write_points
        self.writers = writers
        self.backoff = backoff
        self._clock_ns = clock_ns
        self._queue: deque[_Pending] = deque()
        # Queued or being written, by (node, seq): a resend meanwhile is not queued twice.
        self._queued_batches: dict[tuple[str, int], _Pending] = {}
        self._queued_points = 0  # queued or being written
        self._queued_bytes = 0
        self._inflight: set[asyncio.Task[int]] = set()
        self._wake = asyncio.Event()
        self.last_seq: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        self.write_counters = WriteCounters()
        self._last_log: dict[str, float] = {}
        self._yielded = 0.0  # monotonic time of accept's last turn of the loop

    @property
    def queued_points(self) -> int:
        return self._queued_points

    async def accept(self, frames: list[bytes]) -> bool:
        """Take one PULL message; True if accepted (and so acked once stored)."""
        await self._take_turn()
        batch = self._checked(frames)
        if batch is None:
            return False
        key = (batch.node, batch.seq)
        if key in self._queued_batches:
            self.counters["duplicate"] += 1  # a resend of a batch still being written
            return True
        encoded = self._encode(batch, len(frames[-1]))
        if encoded is None:
            return False
        payload, points = encoded.payload, encoded.points
        if self._queued_points and (self._queued_points + points > self.max_points
                                    or self._queued_bytes + len(payload) > self.max_bytes):
            return self._refuse("buffer-full", f"ingest buffer full ({self._queued_points} "
                                f"points, {self._queued_bytes >> 20} MiB): node {batch.node} "
                                f"batch {batch.seq} left to resend")
        pending = _Pending(batch.node, batch.seq, payload, points)
        self._queue.append(pending)
        self._queued_batches[key] = pending
        self._queued_points += points
        self._queued_bytes += len(payload)
        self.counters["batches"] += 1
        self._wake.set()
        await self._publish(batch.node, list(frames))
        return True

    async def _take_turn(self) -> None:
        """Let the loop run other tasks if :data:`YIELD_EVERY` passed since the last turn.

        A zmq.asyncio socket hands over a waiting message without suspending,
        so while batches keep coming the PULL loop would starve the writers'
        HTTP exchanges with InfluxDB (each step of them waits for a turn) and
        the ROUTER loop (acks, heartbeats). A turn per message costs ~40 µs (an
        epoll_wait and the loop's bookkeeping): a fifth of a 200-point batch's
        whole cost, for a latency nobody needs below a millisecond.
        """
        if time.monotonic() - self._yielded >= YIELD_EVERY:
            await asyncio.sleep(0)
            self._yielded = time.monotonic()

    def _checked(self, frames: list[bytes]) -> MetricBatch | None:
        """The batch in ``frames`` if it decodes and comes from a registered node, else
        None (refused and counted)."""
        try:
            batch = codec.decode(frames, self.limits)
        except ProtocolError as exc:
            self._refuse(f"bad-{exc.code}", f"bad metric batch: {exc}")
            return None
        if not isinstance(batch, MetricBatch):
            self._refuse("bad-type", f"{batch.TYPE.value} on the metrics socket")
            return None
        if not self._is_known_node(batch.node):
            self._refuse("unknown-node", f"batch from unknown node {batch.node!r}: "
                         "it is resent once the agent has registered")
            return None
        if batch.seq < 0 or batch.seq > MAX_SEQ:
            # ptap agents number batches from the wall clock in µs, upwards.
            self._refuse("bad-seq", f"batch from node {batch.node} with sequence "
                         f"{batch.seq}: not a ptap agent's numbering, refused")
            return None
        if batch.seq <= self.last_seq.get(batch.node, -1):
            # A resend whose ack was lost, or a batch overtaken by a later one:
            # stored again, which overwrites its points with themselves.
            self.counters["seq-behind"] += 1
        return batch

    def _encode(self, batch: MetricBatch, size: int) -> lineproto.Encoded | None:
        """The batch's line protocol, its dropped rows counted; None if it would pass
        :data:`MAX_EXPANSION` times the batch's ``size`` in bytes (refused whole)."""
        now = self._clock_ns()
        encoded = encode_batch(batch.series, now - MAX_AGE_NS, now + MAX_AHEAD_NS,
                               node=batch.node, max_chars=MAX_EXPANSION * size + EXPANSION_SLACK)
        if encoded.oversized:
            self._refuse("oversized", f"node {batch.node} batch {batch.seq}: refused, "
                         f"its line protocol would pass {MAX_EXPANSION} times its "
                         f"{size} bytes (long tags repeated on many rows)")
            return None
        if encoded.foreign:
            self.counters["foreign-node"] += encoded.foreign
            self._log("foreign-node", f"node {batch.node} batch {batch.seq}: dropped "
                      f"{encoded.foreign} rows of series not tagged node={batch.node}; "
                      "kept the rest")
        if encoded.dropped:
            self.counters["rows-dropped"] += encoded.dropped
            self._log("rows-dropped", f"node {batch.node} batch {batch.seq}: dropped "
                      f"{encoded.dropped} malformed rows or rows with absurd timestamps; "
                      "kept the rest")
        return encoded

    async def run(self) -> None:
        """The writer loop: runs until cancelled, with up to ``writers`` writes in flight."""
        if lineproto.ENCODER == "compiled":
            log.info("ingest: line protocol encoded by manager/_lineproto_c (compiled)")
        else:
            log.warning("ingest: line protocol encoded in Python — manager/_lineproto_c is not "
                        "built (no C compiler or Python headers at install), which about "
                        "doubles the CPU per point; run scripts/bootstrap as root to build it")
        await self._prepare_sink()
        while True:
            while self._queue and len(self._inflight) < self.writers:
                self._start_write()
            self._wake.clear()
            await self._wake.wait()

    def _start_write(self) -> None:
        taken = self._take()
        task = asyncio.get_running_loop().create_task(self._write(taken))
        self._inflight.add(task)
        task.add_done_callback(functools.partial(self._write_done, taken))

    def _write_done(self, taken: list[_Pending], task: asyncio.Task[int]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if task.cancelled():
            # Cancelled before its first step, _write never ran to forget them:
            # they would stay counted, and their resends refused as duplicates.
            self._forget(taken)
        if not task.cancelled() and task.exception() is not None:
            # _write only ends early on a bug; the batches stay unacked and the
            # agents resend them, so say it loudly and keep ingesting.
            log.error("ingest write failed", exc_info=task.exception())

    def _take(self) -> list[_Pending]:
        """Batches from the front of the queue, up to ``write_points`` points and
        :data:`WRITE_BYTES` (at least one batch)."""
        taken: list[_Pending] = []
        points = size = 0
        queue = self._queue
        while queue and (not taken or (points + queue[0].points <= self.write_points
                                       and size + len(queue[0].payload) <= WRITE_BYTES)):
            pending = queue.popleft()
            taken.append(pending)
            points += pending.points
            size += len(pending.payload)
        return taken

    async def write_some(self) -> int:
        """Write one write's worth of the queue now (retrying until stored); ack it."""
        return await self._write(self._take())

    async def _write(self, taken: list[_Pending]) -> int:
        """Store ``taken`` (retrying until InfluxDB has it), then ack and forget it."""
        if not taken:
            return 0
        points = sum(p.points for p in taken)
        try:
            result = await write_payload(
                self.sink, b"\n".join([p.payload for p in taken if p.points]), points,
                backoff=self.backoff, counters=self.write_counters)
        except BaseException:
            # Cancelled (shutdown) or a bug: nothing is acked, the agents resend.
            self._forget(taken)
            raise
        if result.dropped:
            self._log("rejected", f"InfluxDB rejected {result.dropped} lines "
                      f"({result.detail}); first: {result.dropped_lines[:1]!r}")
        self._forget(taken)
        await self._ack_all(taken)
        return points

    def _forget(self, taken: list[_Pending]) -> None:
        """Stop counting ``taken`` as queued, once: a batch already forgotten (or
        replaced by a resend accepted since) is skipped."""
        for done in taken:
            key = (done.node, done.seq)
            if self._queued_batches.get(key) is done:
                del self._queued_batches[key]
                self._queued_points -= done.points
                self._queued_bytes -= len(done.payload)

    async def _prepare_sink(self) -> None:
        """Let the sink create its database, retrying while InfluxDB is down."""
        prepare = getattr(self.sink, "prepare", None)
        attempt = 0
        while prepare is not None:
            try:
                await prepare()
                return
            except SinkError as exc:
                self._log("prepare", f"cannot prepare InfluxDB ({exc}); retrying — "
                          "is influxd running? see server.cfg [influxdb] url")
                self.counters["prepare"] += 1
                await asyncio.sleep(self.backoff.delay(attempt))  # back-off, not sync
                attempt += 1

    async def flush(self, timeout: float) -> bool:
        """Write what is queued and wait for writes in flight, for at most ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                while self._queue or self._inflight:
                    if self._queue:
                        await self.write_some()
                    else:
                        await asyncio.wait(set(self._inflight))
        except TimeoutError:
            log.warning("ingest: %d points not stored at shutdown; agents will resend them",
                        self._queued_points)
            return False
        return True

    async def cancel_writes(self) -> None:
        """Cancel the writes still in flight (at shutdown, after :meth:`flush`).

        Their batches stay unacked, so the agents send them again to the next
        manager; InfluxDB may already hold some of them, which is harmless.
        """
        inflight = list(self._inflight)
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)

    async def _ack_all(self, taken: list[_Pending]) -> None:
        by_node: dict[str, list[int]] = {}
        for p in taken:
            by_node.setdefault(p.node, []).append(p.seq)
            self.last_seq[p.node] = max(self.last_seq.get(p.node, -1), p.seq)
        for node, seqs in by_node.items():
            await self._ack(node, seqs)

    def _refuse(self, kind: str, message: str) -> bool:
        self.counters[kind] += 1
        self._log(kind, message)
        return False

    def _log(self, kind: str, message: str, every: float = 10.0) -> None:
        now = time.monotonic()
        if now - self._last_log.get(kind, -every) >= every:
            self._last_log[kind] = now
            log.warning("%s (%d so far)", message, self.counters[kind])
