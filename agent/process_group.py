"""Starting a command in a process group of its own, and seeing that group end.

The command starts with ``start_new_session=True``, so its pid is also its
process-group id and one ``killpg`` reaches the whole tree; :func:`live_members`
tells who is still in the group, since the kernel has no event for "group empty".

It is started with ``loop.subprocess_exec`` and a small protocol
(:class:`ProcessPipes`) rather than ``create_subprocess_exec``'s ``Process``: on
Python 3.11 ``Process.wait()`` only returns once every pipe is closed, so a
leftover child holding stdout would hang it. The protocol hears the exit on its
own, and the transport can be closed publicly when a process that left the
group still holds a pipe.

These are the operating-system mechanics under :class:`agent.runner.Runner`,
kept apart so that the run's state machine reads as decisions (when to TERM,
when to KILL, what to report) and this module as the means. Nothing here logs:
the runner says what happened, with the run and node ids.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping

from bus.daemon import INHERITED_UMASK

__all__ = ["CannotStart", "ProcessPipes", "live_members", "signal_group", "spawn_in_new_group",
           "wait_group_empty"]

#: How often the end-of-run sweep looks whether the process group is empty. There is
#: no event for "group empty", so this is a bounded poll that runs only at run end.
_GROUP_POLL = 0.02


class CannotStart(Exception):
    """The command could not be spawned; ``str()`` is the one-line reason."""


class ProcessPipes(asyncio.SubprocessProtocol):
    """Feeds the output sinks; tells when the process exited and when every pipe closed."""

    def __init__(self, on_stdout: Callable[[bytes], None],
                 on_stderr: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._sinks = {1: on_stdout, 2: on_stderr}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._sinks[fd](data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def spawn_in_new_group(argv: list[str], cwd: str, env: Mapping[str, str],
                             on_stdout: Callable[[bytes], None],
                             on_stderr: Callable[[bytes], None],
                             ) -> tuple[asyncio.SubprocessTransport, ProcessPipes]:
    """Start ``argv`` as the leader of a new session, stdin closed, output piped.

    Raises :class:`CannotStart` with a one-line reason when it cannot be spawned.
    """
    if not argv:
        raise CannotStart("empty command")
    loop = asyncio.get_running_loop()
    try:
        return await loop.subprocess_exec(
            lambda: ProcessPipes(on_stdout, on_stderr), *argv,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=True,
            umask=INHERITED_UMASK)  # the daemon's own (077) is not the job's business
    except FileNotFoundError as exc:
        # The child's chdir fails the same way as its exec: the filename tells which.
        if exc.filename == cwd:
            raise CannotStart(f"working directory {cwd} does not exist") from None
        raise CannotStart(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise CannotStart(f"permission denied: {argv[0]}") from None
    except OSError as exc:
        raise CannotStart(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in an argument
        raise CannotStart(f"cannot start {argv[0]}: {exc}") from None


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to every process in group ``pgid``; an empty group is not an error."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already empty


async def wait_group_empty(pgid: int, timeout: float) -> bool:
    """Whether group ``pgid`` emptied (zombies aside) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while live_members(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_GROUP_POLL)
    return True


def live_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (Linux ``/proc``).

    Zombies are skipped: an orphan waits for init to reap it, and a poor container
    init may never do so; it runs nothing and holds no pipe.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # the group exists; look at who is in it
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # ended while we looked
        # Fields after "(comm)": state ppid pgrp ...; comm may contain spaces and ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            members.append(int(entry.name))
    return members
