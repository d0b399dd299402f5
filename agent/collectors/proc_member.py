"""One process of a job's tree as ``/proc/<pid>`` shows it: plain reads, the
cumulative counters of one reading, and the rates between two readings.

:class:`agent.collectors.proctree.ProcessTreeCollector` keeps a :class:`Member`
per process and decides when to read what; this module only reads and counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# A kernel without schedstats accounting prints this for every task: useless as a gate.
NO_SCHED = b"0 0 0\n"
_READ_SIZE = 16384
_READ_SLACK = 256  # longer than any record, so a page minus this means "more to come"


class Gone(Exception):
    """The process ended, is a zombie, or its pid now belongs to another process."""


def read_proc(path: str) -> bytes:
    """The whole file; :class:`Gone` if the process it belongs to does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise Gone(path) from exc
    try:
        data = os.read(fd, _READ_SIZE)
        # A file of many records (children, a long cmdline) comes a page at a time; a
        # read well short of a page was the end, which saves the read that returns b"".
        while len(data) >= PAGE - _READ_SLACK and (more := os.read(fd, _READ_SIZE)):
            data += more
    except ProcessLookupError as exc:  # it ended between open and read
        raise Gone(path) from exc
    finally:
        os.close(fd)
    return data


def field_value(data: bytes, key: bytes) -> int:
    """The number after ``key`` (with its leading newline) in a ``name: value`` file."""
    i = data.index(key) + len(key)
    return int(data[i:data.index(b"\n", i)])


@dataclass(slots=True)
class Counters:
    """Cumulative counters of one process at one moment."""

    mono: float
    cpu_s: float
    read_bytes: int | None
    write_bytes: int | None
    ctx_vol: int
    ctx_invol: int


@dataclass(slots=True)
class Member:
    """A process of the tree and what its last samples left behind."""

    pid: int
    start: int | None = None  # stat's start time (clock ticks since boot): the identity
    comm: str = ""
    tags: dict[str, str] | None = None
    sched_fd: int | None = None  # /proc/<pid>/schedstat, kept open
    sched: bytes = b""  # its content when last sampled
    ran: bool = True  # since the previous sample (new members count as having run)
    kids: tuple[int, ...] = ()  # children when last read
    last: Counters | None = None
    rss: int = 0
    threads: int = 0
    fds: int | None = None
    idle_samples: int = 0  # since the last full read

    def close(self) -> None:
        if self.sched_fd is not None:
            os.close(self.sched_fd)
            self.sched_fd = None


def close_all(members: dict[int, Member]) -> None:
    for m in members.values():
        m.close()


def long_name(pid: int, comm: str) -> str | None:
    """``comm``, or the program's full name when the kernel cut it to 15 bytes.

    psutil's ``name()`` does the same, and the ``comm`` tag used to come from it.
    ``None`` when it cannot tell yet: in the middle of an exec the new comm is
    set before the new command line.
    """
    if len(comm) < 15:
        return comm
    try:
        argv0 = read_proc(f"/proc/{pid}/cmdline").split(b"\0", 1)[0]
    except (Gone, PermissionError):
        return None
    if not argv0:
        return None
    full = os.path.basename(argv0.decode("utf-8", "replace"))
    return full if full.startswith(comm) else comm


def rates(prev: Counters | None, cur: Counters) -> list[float | None]:
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
