"""The ``perf`` measurement: PMU and software counters from ``perf stat -x, -I <ms>``.

Tags node, job (job scope only), scope (``job``/``system``) and event; fields
``value`` (in perf's unit: msec for task-clock, a count otherwise), ``per_sec``
(value divided by the interval's length) and ``enabled_pct`` (the share of the
interval the counter really ran under multiplexing; perf already scaled
``value`` up by it). A derived ``event=ipc`` row (instructions / cycles) is added
for any interval in which both were counted.

``<not supported>`` (e.g. hardware events in a VM) and ``<not counted>`` (the
task never ran in that interval, or the counter was never scheduled) produce
no row, never a zero; they are recorded in :attr:`PerfCollector.capabilities`.
An event that was counted once stays ``supported``.

Job scope and new children: ``perf stat -p PIDS`` only counts the threads that
existed when it attached. Checked on this kernel (6.1): a shell attached with
``-p`` that later forks a busy child reports only the shell's own 1 ms. So the
agent passes the tree's pids through :meth:`PerfCollector.set_pids` at each
interval and perf is restarted on the new set when it changed, at most once per
interval. Work done by a child between its fork and the next restart is lost.

Stopping uses SIGTERM, not SIGINT: a daemon started with ``&`` from a shell
ignores SIGINT, and its children inherit that. The last partial interval is
lost on stop; when the watched processes exit perf prints it and exits itself.

perf's stderr is a pipe the event loop does not watch (a stream reader woke it
for every line, 8-16 times a second): :meth:`collect` reads what is there
without blocking, a partial line waits for the next call, and a task that
awaits perf's exit reads the rest. The pipe holds many intervals of output.

perf's interval timestamps are seconds since perf started; they are added to
``time.time_ns()`` taken just before the spawn (a few ms early at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

# Capability, PerfSample, parse_perf_line and probe_perf keep being importable from here.
from agent.collectors.perf_output import Capability as Capability
from agent.collectors.perf_output import PerfSample as PerfSample
from agent.collectors.perf_output import parse_perf_line as parse_perf_line
from agent.collectors.perf_output import perf_env
from agent.collectors.perf_output import probe_perf as probe_perf
from bus.metrics import Series

log = logging.getLogger(__name__)

PERF_FIELDS = ("value", "per_sec", "enabled_pct")
DEFAULT_EVENTS = (
    "task-clock", "context-switches", "cpu-migrations", "page-faults",
    "cycles", "instructions", "cache-misses", "branch-misses",
)
_CYCLES = frozenset({"cycles", "cpu-cycles"})
_STOP_TIMEOUT_S = 2.0
_MAX_LINE = 65536
_PIPE_READ = 65536


def _base(event: str) -> str:
    return event.split(":", 1)[0]


class PerfCollector:
    """Run ``perf stat -x, -I`` for a job's pids (scope ``job``) or the system.

    ``pids=None`` means the whole system (``-a``). The collector never raises
    because of perf: if it cannot run, :attr:`error` says why, the events are
    marked ``unavailable`` and :meth:`collect` returns ``[]``.
    """

    def __init__(self, node: str, job_id: str | None = None,
                 pids: Iterable[int] | None = None,
                 events: Iterable[str] = DEFAULT_EVENTS, interval_ms: int = 1000,
                 perf_path: str = "perf") -> None:
        self.node = node
        self.job_id = job_id
        self.events = tuple(events)
        if not self.events:
            raise ValueError("PerfCollector needs at least one event")
        if interval_ms < 10:
            raise ValueError(f"perf interval must be >= 10 ms, got {interval_ms}")
        self.interval_ms = interval_ms
        self.perf_path = perf_path
        self.scope = "system" if pids is None else "job"
        self._pids: frozenset[int] | None = None if pids is None else frozenset(pids)
        self.capabilities: dict[str, Capability] = {}
        self.error: str | None = None
        self.restarts = 0
        self._run: _PerfRun | None = None
        self._started_mono = float("-inf")
        self._ready: list[tuple[int, str, float, float | None, float]] = []
        self._diag: deque[str] = deque(maxlen=5)
        self._tags = {"node": node, "scope": self.scope,
                      **({"job": job_id} if job_id is not None else {})}
        self._event_tags: dict[str, dict[str, str]] = {}  # built once per event

    @property
    def running(self) -> bool:
        """True while a perf process is attached."""
        return self._run is not None and self._run.proc.returncode is None

    def argv(self) -> list[str] | None:
        """The perf command line for the current target; ``None`` if no pid is alive."""
        target = ["-a"]
        if self._pids is not None:
            # perf refuses the whole list if one pid is gone, so drop the dead ones.
            alive = sorted(p for p in self._pids if psutil.pid_exists(p))
            if not alive:
                return None
            target = ["-p", ",".join(map(str, alive))]
        return [self.perf_path, "stat", "-x,", "-I", str(self.interval_ms),
                "-e", ",".join(self.events), *target]

    async def start(self) -> None:
        """Spawn perf (no-op when no job pid is alive)."""
        await self._spawn()

    async def stop(self) -> None:
        """Terminate perf, reap it and keep what it had printed; safe to call more than once."""
        run, self._run = self._run, None
        if run is None:
            return
        if run.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(run.proc.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    run.proc.kill()
        if run.done is not None:
            await run.done

    async def set_pids(self, pids: Iterable[int]) -> bool:
        """Follow the job's current pid set; returns True if perf was restarted.

        A change is applied at most once per interval; a change refused now
        is applied by a later call with the same set.
        """
        if self._pids is None:
            raise ValueError("set_pids() on a system-scope PerfCollector")
        new = frozenset(pids)
        if new == self._pids:
            return False  # unchanged; a perf that failed on this set is not retried
        if time.monotonic() - self._started_mono < self.interval_ms / 1000:
            return False
        self._pids = new
        await self.stop()
        self.restarts += 1
        await self._spawn()
        return True

    def collect(self, now_ns: int) -> list[Series]:
        """Series for the intervals perf completed since the last call."""
        if self._run is not None:
            self._pump(self._run)
        ready, self._ready = self._ready, []
        by_event: dict[str, Series] = {}
        for ts_ns, event, value, per_sec, pct in ready:
            s = by_event.get(event)
            if s is None:
                tags = self._event_tags.get(event)
                if tags is None:
                    tags = self._event_tags[event] = {**self._tags, "event": event}
                s = by_event[event] = Series("perf", tags, PERF_FIELDS)
            s.rows.append([ts_ns, value, per_sec, pct])
        return list(by_event.values())

    async def _spawn(self) -> None:
        self._started_mono = time.monotonic()
        self._diag.clear()  # an error message must describe this run only
        argv = self.argv()
        if argv is None:
            return
        # perf's stderr is a pipe that nothing watches: collect() reads what is there.
        # An asyncio stream would wake the loop for every line, 8-16 times a second.
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        start_ns = time.time_ns()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=wfd, env=perf_env())
        except OSError as exc:
            os.close(rfd)
            self._unavailable(f"cannot run {self.perf_path!r}: {exc}")
            return
        finally:
            os.close(wfd)  # perf holds the only write end now: EOF when it exits
        run = _PerfRun(proc, rfd, _RunState(start_ns, len(self.events)))
        run.done = asyncio.create_task(self._reap(run))
        self._run = run

    def _unavailable(self, why: str) -> None:
        self.error = why
        for ev in self.events:
            self.capabilities.setdefault(ev, Capability.UNAVAILABLE)
        log.warning("perf %s scope on %s: %s", self.scope, self.node, why)

    async def _reap(self, run: _PerfRun) -> None:
        """Wait for perf to exit, keep its last lines, and report a failed start."""
        try:
            rc = await run.proc.wait()
            self._pump(run, final=True)
        finally:
            run.close()
        if rc > 0 and not run.produced:
            self._unavailable(f"perf exited {rc}: {' | '.join(self._diag) or 'no output'}")

    def _pump(self, run: _PerfRun, final: bool = False) -> None:
        """Parse the complete lines perf wrote since the last call (all of them if ``final``)."""
        try:
            for raw in run.read_lines(final):
                line = raw.decode("utf-8", "replace").rstrip()
                sample = parse_perf_line(line)
                if sample is None or sample.ts is None:
                    if line.strip():
                        self._diag.append(line.strip())
                    continue
                run.produced = True
                self._note(sample)
                self._ready += run.state.add(sample)
            if final:
                self._ready += run.state.flush()
        except Exception:  # a parser bug must not take the agent down
            log.exception("perf reader on %s failed", self.node)
            with contextlib.suppress(ProcessLookupError):
                run.proc.kill()
            run.close()

    def _note(self, s: PerfSample) -> None:
        if self.capabilities.get(s.event) is not Capability.SUPPORTED:
            self.capabilities[s.event] = s.status
        if s.status is Capability.SUPPORTED:
            self.error = None


@dataclass(eq=False)
class _PerfRun:
    """One perf process and the non-blocking read end of its stderr."""

    proc: asyncio.subprocess.Process
    fd: int | None
    state: _RunState
    produced: bool = False  # printed at least one sample
    done: asyncio.Task[None] | None = None  # _reap
    partial: bytes = b""

    def read_lines(self, final: bool) -> list[bytes]:
        """Complete lines written so far; ``final``: all of them, then close the pipe."""
        data = self.partial
        with contextlib.suppress(BlockingIOError):  # nothing more for now
            while self.fd is not None:
                chunk = os.read(self.fd, _PIPE_READ)
                data += chunk
                # A pipe read returns all the pipe holds, up to the size asked: after a
                # shorter one, another would only raise BlockingIOError (not cheap).
                if not chunk or (len(chunk) < _PIPE_READ and not final):
                    break
        *lines, self.partial = data.split(b"\n")
        if final:
            lines.append(self.partial)
            self.partial = b""
            self.close()
        elif len(self.partial) > _MAX_LINE:  # not a perf CSV line: drop it
            self.partial = b""
        return lines

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _RunState:
    """Groups one perf run's lines into intervals and turns them into rows.

    All lines of one interval carry the same timestamp; an interval is
    complete when every event reported or the timestamp moves on.
    """

    def __init__(self, start_ns: int, n_events: int) -> None:
        self.start_ns = start_ns
        self.n_events = n_events
        self.group: list[PerfSample] = []
        self.prev_ts = 0.0  # end of the previous interval, seconds since start
        self.last_ts = 0.0

    def add(self, s: PerfSample) -> list[tuple[int, str, float, float | None, float]]:
        out = []
        if self.group and s.ts != self.group[0].ts:
            out = self.flush()
        self.group.append(s)
        if len(self.group) >= self.n_events:
            out += self.flush()
        return out

    def flush(self) -> list[tuple[int, str, float, float | None, float]]:
        group, self.group = self.group, []
        if not group or group[0].ts is None:
            return []
        ts = group[0].ts
        if ts != self.last_ts:
            self.prev_ts, self.last_ts = self.last_ts, ts
        length = ts - self.prev_ts
        ts_ns = self.start_ns + round(ts * 1e9)
        rows = []
        counted: dict[str, PerfSample] = {}
        for s in group:
            if s.value is None:
                continue  # unsupported / not counted: a capability, never a zero
            counted[_base(s.event)] = s
            per_sec = round(s.value / length, 3) if length > 0 else None
            rows.append((ts_ns, s.event, s.value, per_sec, s.enabled_pct))
        ins = counted.get("instructions")
        cyc = next((counted[c] for c in _CYCLES if c in counted), None)
        if ins is not None and cyc is not None and cyc.value:
            assert ins.value is not None
            ipc = round(ins.value / cyc.value, 4)
            rows.append((ts_ns, "ipc", ipc, None, min(ins.enabled_pct, cyc.enabled_pct)))
        return rows
