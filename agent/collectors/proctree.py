"""The ``proc`` measurement: one row per process of a job's tree, plus a ``pid=tree`` sum.

Tags are node, job, pid and comm; fields (DESIGN §5):

=============  =============================================================
``cpu_pct``    user+system CPU of the process over the interval, percent of
               one CPU (a busy 4-thread process shows ~400)
``rss``        resident set size, bytes (gauge)
``read_bps``   bytes per second that reached the storage layer
``write_bps``  (``io_counters().read_bytes/write_bytes``; page-cache hits and
               pipes are not counted)
``threads``    thread count (gauge)
``ctx_vol``    voluntary context switches **per second** (the DESIGN name is
``ctx_invol``  kept; the value is a rate like every other counter here)
``fds``        open file descriptors (gauge)
=============  =============================================================

A process seen for the first time has no previous sample, so its rates are
``None`` (left out of the line) and only the gauges are written. The tree row
sums what each member reported; CPU used by a process that ended during the
interval is not in it (its last counters died with it).

Process objects are cached between samples, keyed by pid and checked against
``create_time`` so a recycled pid is a new process. Children are discovered at
every sample with ``root.children(recursive=True)``; a cached member that was
reparented away from the tree (its parent exited) stays a member until it ends.

Cost, measured on the 2-vCPU dev VM (90 processes on the host) over 300
samples of a 20-process tree (``sh`` + 19 ``sleep``): 2.7 ms per sample
(median and mean alike), of which 1.1 ms is ``children(recursive=True)``
building psutil's ppid map from every ``/proc/*/stat``; the rest is ~80 µs per
member for its ``oneshot()`` reads. That cost grows with the host's process
count, not only the tree's, which is why the agent runs this in an executor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psutil

from bus.metrics import Series

log = logging.getLogger(__name__)

PROC_FIELDS = ("cpu_pct", "rss", "read_bps", "write_bps", "threads", "ctx_vol", "ctx_invol", "fds")
TREE_PID = "tree"

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


@dataclass(slots=True)
class _Counters:
    """Cumulative counters of one process at one moment."""

    mono: float
    cpu_s: float
    read_bytes: int | None
    write_bytes: int | None
    ctx_vol: int
    ctx_invol: int


@dataclass(slots=True)
class _Member:
    proc: psutil.Process
    create_time: float
    last: _Counters | None = None


class ProcessTreeCollector:
    """Per-process and whole-tree resource use for the job rooted at ``root_pid``.

    Synchronous (a few ms per sample): the agent runs :meth:`collect` in an
    executor. Vanished processes are dropped quietly.
    """

    def __init__(self, node: str, job_id: str, root_pid: int) -> None:
        self.node = node
        self.job_id = job_id
        self.root_pid = root_pid
        self._members: dict[int, _Member] = {}
        self._root: psutil.Process | None = None
        self._tree_comm: str | None = None
        self._root_gone = False

    @property
    def pids(self) -> set[int]:
        """Pids that were members at the last sample (for perf's job scope)."""
        return set(self._members)

    def collect(self, now_ns: int) -> list[Series]:
        """Sample every member of the tree; return per-pid series and the tree sum."""
        verified = self._discover()
        out: list[Series] = []
        tree: list[float | int | None] = [None] * len(PROC_FIELDS)
        for pid in list(self._members):
            values = self._sample(pid, pid in verified)
            if values is None:
                continue
            comm, row = values
            s = Series("proc", self._tags(str(pid), comm), PROC_FIELDS)
            s.add(now_ns, *row)
            out.append(s)
            tree = [_add(t, v) for t, v in zip(tree, row, strict=True)]
        if out:
            s = Series("proc", self._tags(TREE_PID, self._tree_comm or TREE_PID), PROC_FIELDS)
            s.add(now_ns, *tree)
            out.append(s)
        return out

    def _tags(self, pid: str, comm: str) -> dict[str, str]:
        return {"node": self.node, "job": self.job_id, "pid": pid, "comm": comm}

    def _discover(self) -> set[int]:
        """Add the root and its current descendants to the member cache.

        Returns the pids whose identity was just confirmed: ``children()``
        builds fresh Process objects, and their create_time matched the cache.
        """
        if self._root_gone:
            return set()
        try:
            if self._root is None:
                self._root = psutil.Process(self.root_pid)
                self._tree_comm = self._root.name()
                self._remember(self._root)
            procs = self._root.children(recursive=True)
        except _GONE:
            # The root ended; members already known are followed until they end.
            self._root_gone = True
            return set()
        return {p.pid for p in procs if self._remember(p)}

    def _remember(self, p: psutil.Process) -> bool:
        """Cache ``p`` (new, or replacing a recycled pid); False if it is gone."""
        try:
            ctime = p.create_time()
        except _GONE:
            return False
        known = self._members.get(p.pid)
        if known is None or known.create_time != ctime:
            self._members[p.pid] = _Member(p, ctime)
        return True

    def _sample(self, pid: int, verified: bool) -> tuple[str, list[float | int | None]] | None:
        """One row for ``pid``, or ``None`` (and the pid forgotten) if it is gone."""
        m = self._members[pid]
        try:
            # is_running() compares create_time, so a recycled pid is not mistaken
            # for the member that used to own it (plain getters do not check).
            if not verified and not m.proc.is_running():
                raise psutil.NoSuchProcess(pid)
            with m.proc.oneshot():
                if m.proc.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.ZombieProcess(pid)
                comm = m.proc.name()
                cur, (rss, threads, fds) = _read(m.proc)
        except _GONE:
            del self._members[pid]
            return None
        cpu, rbps, wbps, vol, invol = _rates(m.last, cur)
        m.last = cur
        return comm, [cpu, rss, rbps, wbps, threads, vol, invol, fds]


def _read(p: psutil.Process) -> tuple[_Counters, list[int | None]]:
    """Read counters and gauges (inside ``oneshot``); raises if the process is gone."""
    t = p.cpu_times()
    ctx = p.num_ctx_switches()
    try:
        io = p.io_counters()
        rb, wb = io.read_bytes, io.write_bytes
    except psutil.AccessDenied:  # another user's process without CAP_SYS_PTRACE
        rb = wb = None
    try:
        fds: int | None = p.num_fds()
    except psutil.AccessDenied:
        fds = None
    counters = _Counters(time.monotonic(), t.user + t.system, rb, wb, ctx.voluntary, ctx.involuntary)
    return counters, [p.memory_info().rss, p.num_threads(), fds]


def _rates(prev: _Counters | None, cur: _Counters) -> list[float | None]:
    """cpu_pct, read_bps, write_bps, ctx_vol/s, ctx_invol/s between two readings."""
    if prev is None or cur.mono <= prev.mono:
        return [None] * 5
    dt = cur.mono - prev.mono

    def per_s(a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return None
        return round(max(b - a, 0) / dt, 2)

    cpu = per_s(prev.cpu_s, cur.cpu_s)
    return [
        None if cpu is None else round(cpu * 100.0, 2),
        per_s(prev.read_bytes, cur.read_bytes),
        per_s(prev.write_bytes, cur.write_bytes),
        per_s(prev.ctx_vol, cur.ctx_vol),
        per_s(prev.ctx_invol, cur.ctx_invol),
    ]


def _add(total: float | int | None, value: float | int | None) -> float | int | None:
    if value is None:
        return total
    return value if total is None else total + value
