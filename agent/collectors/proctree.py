"""The ``proc`` measurement: one row per process of a job's tree, plus a ``pid=tree`` sum.

Tags are node, job, pid and comm; fields (docs/architecture.md#metric-path):

=============  =============================================================
``cpu_pct``    user+system CPU of the process over the interval, percent of
               one CPU (a busy 4-thread process shows ~400)
``rss``        resident set size, bytes (gauge)
``read_bps``   bytes per second that reached the storage layer
``write_bps``  (``read_bytes/write_bytes`` of ``/proc/<pid>/io``; page-cache
               hits and pipes are not counted)
``threads``    thread count (gauge)
``ctx_vol``    voluntary context switches **per second** (the documented name is
``ctx_invol``  kept; the value is a rate like every other counter here)
``fds``        open file descriptors (gauge)
=============  =============================================================

A process seen for the first time has no previous sample, so its rates are
``None`` (left out of the line) and only the gauges are written. The tree row
sums what each member reported; CPU used by a process that ended during the
interval is not in it (its last counters died with it).

How it stays cheap (the agent samples every second, beside the job):

* **Idle members cost one read.** ``/proc/<pid>/schedstat`` (run time, wait
  time, times scheduled) changes whenever the process ran. If it did not,
  nothing it owns changed either: its rates are zero, its gauges the cached
  ones, and it forked no child. Only single-threaded members qualify
  (schedstat covers the main thread only), and each member gets a full read
  at least every ``full_every`` samples, so slow gauges (RSS lost to reclaim)
  stay fresh. The schedstat file stays open (``pread`` at 0), which also pins
  the process: once it is reaped the read fails, even if its pid is reused.
* **Discovery** walks ``/proc/<pid>/task/<tid>/children`` down from the root,
  reading only the members that ran (a child belongs to the *thread* that
  forked it, so a multi-threaded member has all its tasks read). psutil's
  ``children()`` reads every ``/proc/*/stat`` on the host instead; it remains
  the fallback on kernels without ``CONFIG_PROC_CHILDREN``. One way to gain a
  child without running is to adopt an orphan as a child subreaper
  (``PR_SET_CHILD_SUBREAPER``): that is seen at the member's next full read.
* **Plain reads of /proc**, a few µs each, instead of psutil's ~70 µs of
  wrappers per process. A full read is ``stat`` (CPU, RSS, threads, state,
  start time, comm), ``status`` (context switches), ``io`` and ``fd/``.

A full read also checks the start time in ``stat`` (members past ``max_pinned``
are read by path). A member reparented away from the tree (its parent exited)
stays a member until it ends; a zombie is dropped.

Cost on the 2-vCPU dev VM (~120 host processes), the benchmark's tree (``sh``,
18 ``sleep``, a Python loop busy 10 % of the time), warm caches: ~0.15 ms per
sample, from 3.4 ms with psutil (1.7 ms of it the ppid map). At 1 Hz on a busy
host caches are cold and both cost several times that.
"""

from __future__ import annotations

import logging
import os
import resource
import time
import weakref

import psutil

from agent.collectors.proc_member import (
    CLK_TCK,
    NO_SCHED,
    PAGE,
    Counters,
    Gone,
    Member,
    close_all,
    field_value,
    long_name,
    rates,
    read_proc,
)
from bus.metrics import Series

log = logging.getLogger(__name__)

PROC_FIELDS = ("cpu_pct", "rss", "read_bps", "write_bps", "threads", "ctx_vol", "ctx_invol", "fds")
TREE_PID = "tree"
FULL_EVERY = 10

# Fields of /proc/<pid>/stat after the ")" that closes comm, counted from 0 (= field 3).
_STATE, _UTIME, _STIME, _THREADS, _START, _RSS = 0, 11, 12, 17, 19, 21

Row = list[float | int | None]


def children_files_work() -> bool:
    """True if this kernel has ``/proc/<pid>/task/<tid>/children`` (``CONFIG_PROC_CHILDREN``)."""
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def default_max_pinned() -> int:
    """Schedstat files one collector may keep open: 256, less under a low fd limit."""
    return max(0, min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 8))


class ProcessTreeCollector:
    """Per-process and whole-tree resource use for the job rooted at ``root_pid``.

    Synchronous (~0.15 ms for 20 processes). Vanished processes are dropped
    quietly. ``full_every`` bounds how many samples an idle member's gauges
    may be reused; ``walk_children`` chooses the discovery (``None``: the
    children files if the kernel has them); up to ``max_pinned`` members keep
    their schedstat file open. :meth:`close` releases those files.
    """

    def __init__(self, node: str, job_id: str, root_pid: int, *, full_every: int = FULL_EVERY,
                 walk_children: bool | None = None, max_pinned: int | None = None) -> None:
        self.node = node
        self.job_id = job_id
        self.root_pid = root_pid
        self.full_every = max(1, full_every)
        self.walk_children = children_files_work() if walk_children is None else walk_children
        self.max_pinned = default_max_pinned() if max_pinned is None else max_pinned
        self.gate = os.path.exists("/proc/self/schedstat")
        self._members: dict[int, Member] = {}
        self._pinned = 0
        self._root_proc: psutil.Process | None = None  # only for the psutil fallback
        self._tree_tags: dict[str, str] | None = None
        self._root_gone = False
        self.full_reads = 0  # how many samples read everything (for tests and tuning)
        # Open files must not outlive a collector that nobody closed.
        self._finalizer = weakref.finalize(self, close_all, self._members)

    @property
    def pids(self) -> set[int]:
        """Pids that were members at the last sample (for perf's job scope)."""
        return set(self._members)

    def close(self) -> None:
        """Close the files kept open; the collector is not to be used afterwards."""
        self._finalizer()

    def collect(self, now_ns: int) -> list[Series]:
        """Sample every member of the tree; return per-pid series and the tree sum."""
        mono = time.monotonic()
        if not self._members and not self._root_gone:
            self._members[self.root_pid] = Member(self.root_pid)
        out: list[Series] = []
        rows: list[Row] = []
        # Known members first: whether each ran tells the walk whose children to read.
        for m in list(self._members.values()):
            self._emit(m, self._sample(m, mono), now_ns, out, rows)
        if not self._root_gone:
            for m in self._discover():
                self._emit(m, self._sample(m, mono), now_ns, out, rows)
        if out and self._tree_tags is not None:
            tree = [sum(vs) if (vs := [v for v in col if v is not None]) else None
                    for col in zip(*rows, strict=True)]
            out.append(Series("proc", self._tree_tags, PROC_FIELDS, [[now_ns, *tree]]))
        return out

    def _emit(self, m: Member, row: Row | None, now_ns: int, out: list[Series],
              rows: list[Row]) -> None:
        """Add ``m``'s row to ``out`` and ``rows``, or forget ``m`` if it is gone."""
        if row is None:
            del self._members[m.pid]
            if m.sched_fd is not None:
                m.close()
                self._pinned -= 1
            if m.pid == self.root_pid:
                # Members already known are followed until they end; no new ones join.
                self._root_gone = True
            return
        assert m.tags is not None
        if self._tree_tags is None and m.pid == self.root_pid:
            self._tree_tags = self._tags(TREE_PID, m.tags["comm"])
        out.append(Series("proc", m.tags, PROC_FIELDS, [[now_ns, *row]]))
        rows.append(row)

    def _tags(self, pid: str, comm: str) -> dict[str, str]:
        return {"node": self.node, "job": self.job_id, "pid": pid, "comm": comm}

    # --- discovery -------------------------------------------------------------------

    def _discover(self) -> list[Member]:
        """New members: descendants of the root that were not members yet."""
        members = self._members
        if not self.walk_children:
            new = [Member(p) for p in self._psutil_children() if p not in members]
            members.update((m.pid, m) for m in new)
            return new
        new = []
        seen = {self.root_pid}
        stack = [self.root_pid]
        while stack:
            pid = stack.pop()
            m = members.get(pid)
            if m is None:  # found under a member in this walk
                m = members[pid] = Member(pid)
                new.append(m)
            # A member that did not run forked nothing; a child that left is no member.
            kids = self._children(m) if m.ran else [k for k in m.kids if k in members]
            for k in kids:
                if k not in seen:
                    seen.add(k)
                    stack.append(k)
        return new

    def _children(self, m: Member) -> list[int]:
        """Read the children of every task of ``m`` (one task if it is single-threaded)."""
        tids: list[int] | list[str] = [m.pid]
        if m.threads != 1:
            try:
                tids = os.listdir(f"/proc/{m.pid}/task")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass  # gone: its sample drops it
        kids: list[int] = []
        for tid in tids:
            try:
                kids += map(int, read_proc(f"/proc/{m.pid}/task/{tid}/children").split())
            except (Gone, PermissionError):
                continue  # a task that ended mid-walk has no children left
        m.kids = tuple(kids)
        return kids

    def _psutil_children(self) -> list[int]:
        """Fallback discovery through psutil's ppid map (reads every /proc/*/stat)."""
        try:
            if self._root_proc is None:
                self._root_proc = psutil.Process(self.root_pid)
            return [p.pid for p in self._root_proc.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return []  # the root ended since it was sampled; the next sample drops it

    # --- sampling --------------------------------------------------------------------

    def _sample(self, m: Member, mono: float) -> Row | None:
        """One row for ``m``, or ``None`` if it is gone."""
        try:
            sched = self._schedstat(m)
            prev = m.last
            m.ran = not (prev is not None and sched == m.sched and sched != NO_SCHED
                         and m.threads == 1)
            if not m.ran and m.idle_samples + 1 < self.full_every:
                # It has not run since the last sample, so no counter moved.
                assert prev is not None
                m.idle_samples += 1
                prev.mono = mono
                zero_io = None if prev.read_bytes is None else 0.0
                return [0.0, m.rss, zero_io, zero_io, m.threads, 0.0, 0.0, m.fds]
            m.ran = True  # a full read refreshes the children too
            cur = self._full_read(m, mono)
        except (Gone, PermissionError):  # hidden from us (hidepid) counts as gone
            return None
        m.sched, m.idle_samples = sched, 0
        cpu, rbps, wbps, vol, invol = rates(m.last, cur)
        m.last = cur
        return [cpu, m.rss, rbps, wbps, m.threads, vol, invol, m.fds]

    def _schedstat(self, m: Member) -> bytes:
        """``m``'s schedstat, from the file kept open for it when there is one."""
        if not self.gate:
            return NO_SCHED
        if m.sched_fd is None and m.start is None and self._pinned < self.max_pinned:
            try:  # a new member: keep the file open from now on
                m.sched_fd = os.open(f"/proc/{m.pid}/schedstat", os.O_RDONLY)
            except (FileNotFoundError, ProcessLookupError) as exc:
                raise Gone(m.pid) from exc
            self._pinned += 1
        if m.sched_fd is None:
            return read_proc(f"/proc/{m.pid}/schedstat")
        try:
            return os.pread(m.sched_fd, 256, 0)
        except ProcessLookupError as exc:  # reaped; its pid may belong to another by now
            raise Gone(m.pid) from exc

    def _full_read(self, m: Member, mono: float) -> Counters:
        """Read everything about ``m`` and update its gauges; raises :class:`Gone`."""
        self.full_reads += 1
        base = f"/proc/{m.pid}/"
        stat = read_proc(base + "stat")
        head, _, rest = stat.rpartition(b")")
        f = rest.split()
        if m.start is None:
            m.start = int(f[_START])
        elif int(f[_START]) != m.start:
            raise Gone(m.pid)  # the member ended and its pid was given to a new process
        if f[_STATE] in (b"Z", b"X"):
            raise Gone(m.pid)  # ended, waiting for its parent to reap it
        comm = head.partition(b"(")[2].decode("utf-8", "replace")
        if comm != m.comm:  # first sample, or an exec since the last full read
            name = long_name(m.pid, comm)
            m.comm = comm if name is not None else ""  # "": look again next time
            m.tags = self._tags(str(m.pid), name or comm)
        status = read_proc(base + "status")
        try:
            io = read_proc(base + "io")
            rb: int | None = field_value(io, b"\nread_bytes:")
            wb: int | None = field_value(io, b"\nwrite_bytes:")
        except PermissionError:  # another user's process without CAP_SYS_PTRACE
            rb = wb = None
        try:
            m.fds = len(os.listdir(base + "fd"))
        except PermissionError:
            m.fds = None
        except FileNotFoundError as exc:
            raise Gone(m.pid) from exc
        m.rss = int(f[_RSS]) * PAGE
        m.threads = int(f[_THREADS])
        return Counters(mono, (int(f[_UTIME]) + int(f[_STIME])) / CLK_TCK, rb, wb,
                         field_value(status, b"\nvoluntary_ctxt_switches:"),
                         field_value(status, b"\nnonvoluntary_ctxt_switches:"))
