"""Run one job command per run, in a process group of its own (DESIGN §4, docs/protocol.md "Runs").

A :class:`Runner` owns one run from ``run.dispatch`` to its final state::

    dispatched ──start()──► running ──exit 0──────────► succeeded
        │                     ├──exit ≠ 0 / signal──► failed     (exit_code, -signum for a signal)
        │                     ├──timeout────────────► timeout    (TERM group, KILL after kill_grace)
        │                     └──cancel()───────────► cancelled  (same)
        └──cannot start (not found, no permission)► failed      (exit_code None, one-line error)

The command starts with ``start_new_session=True``, so its pid is also its
process-group id and one ``killpg`` reaches the whole tree. When the main
process exits, whatever it left in that group is ended too (TERM, then KILL
after ``kill_grace``), so a test cannot leak processes onto the node.

It is started with ``loop.subprocess_exec`` and a small protocol rather than
``create_subprocess_exec``'s ``Process``: on Python 3.11 ``Process.wait()``
only returns once every pipe is closed, so a leftover child holding stdout
would hang it. The protocol hears the exit on its own, and the transport can
be closed publicly when a process that left the group still holds a pipe.

Output: the last ``output_tail`` bytes of stdout and stderr are kept (bytes,
decoded with ``errors="replace"`` only when reported) and complete lines are
handed to an ``on_line(stream, line)`` hook as they arrive, for ``PTAP mark``
lines and the live view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.messages import RunDispatch, RunReport, RunState

log = logging.getLogger(__name__)

#: ``on_line(stream, line)``: ``stream`` is ``"stdout"`` or ``"stderr"``, ``line`` has no newline.
LineCallback = Callable[[str, str], None]
#: ``on_change(runner)``: called on the loop after every state change.
ChangeCallback = Callable[["Runner"], None]

#: How often the end-of-run sweep looks whether the process group is empty. There is
#: no event for "group empty", so this is a bounded poll that runs only at run end.
_GROUP_POLL = 0.02


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How runs are started and ended (``[dispatcher]`` of agentclient.cfg).

    ``base_env`` is the environment the command inherits (``None``: the agent's).
    ``drain_timeout`` bounds the wait for output pipes after the group is gone; a
    process that left the group (``setsid``) may hold them open for ever.
    ``max_line`` splits an endless line so the line hook never buffers unboundedly.
    """

    workdir: str = "var/runs"
    output_tail: int = 65536
    kill_grace: float = 3.0
    drain_timeout: float = 1.0
    max_line: int = 65536
    base_env: Mapping[str, str] | None = None


class OutputTail:
    """The last ``limit`` bytes of one stream, plus line splitting for a hook."""

    def __init__(self, stream: str, limit: int, max_line: int,
                 on_line: Callable[[str, str], None] | None) -> None:
        self.stream = stream
        self._limit = limit
        self._max_line = max_line
        self._on_line = on_line
        self._tail = bytearray()
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        """Keep ``data`` in the bounded tail and emit every line it completes."""
        self._tail += data
        if len(self._tail) > self._limit:
            del self._tail[: len(self._tail) - self._limit]
        if self._on_line is None:
            return
        self._partial += data
        *lines, rest = self._partial.split(b"\n")
        for line in lines:
            self._emit(line)
        # An endless line is handed on in max_line pieces rather than held whole.
        whole = len(rest) - len(rest) % self._max_line
        if whole:
            self._emit(rest[:whole])
        self._partial = bytearray(rest[whole:])

    def flush(self) -> None:
        """Emit a last line that had no newline."""
        if self._partial and self._on_line is not None:
            self._emit(self._partial)
        self._partial = bytearray()

    def text(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def _emit(self, line: bytes | bytearray) -> None:
        assert self._on_line is not None
        line = bytes(line).rstrip(b"\r")
        for at in range(0, max(len(line), 1), self._max_line):
            piece = line[at:at + self._max_line]
            self._on_line(self.stream, piece.decode("utf-8", errors="replace"))


class _Pipes(asyncio.SubprocessProtocol):
    """Feeds the tails; tells when the process exited and when every pipe closed."""

    def __init__(self, out: OutputTail, err: OutputTail) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._tails = {1: out, 2: err}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._tails[fd].feed(data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Runner:
    """One run of a job's command on this node. Use ``await start()``, then ``await wait()``."""

    def __init__(self, dispatch: RunDispatch, node: str, options: RunnerOptions,
                 on_change: ChangeCallback | None = None,
                 on_line: LineCallback | None = None) -> None:
        self.dispatch = dispatch
        self.node = node
        self.options = options
        self.state = RunState.DISPATCHED
        self.pid: int | None = None
        #: Entries the agent adds before start (PTAP_METRICS from the app collector).
        self.extra_env: dict[str, str] = {}
        self.exit_code: int | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error = ""
        self._on_change = on_change
        self._on_line = on_line
        self._line_hook_failed = False
        self._out = OutputTail("stdout", options.output_tail, options.max_line, self._line)
        self._err = OutputTail("stderr", options.output_tail, options.max_line, self._line)
        self._cancel_reason: str | None = None
        self._cancel = asyncio.Event()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False

    @property
    def run_id(self) -> str:
        return self.dispatch.run_id

    @property
    def job_id(self) -> str:
        return self.dispatch.job_id

    @property
    def is_final(self) -> bool:
        return self.state.final

    def report(self) -> RunReport:
        """The run as the manager sees it in ``run.update`` and ``agent.register``."""
        return RunReport(
            run_id=self.run_id, job_id=self.job_id, state=self.state, pid=self.pid,
            exit_code=self.exit_code, started_at=self.started_at, ended_at=self.ended_at,
            stdout_tail=self._out.text(), stderr_tail=self._err.text(), error=self.error,
        )

    async def start(self) -> None:
        """Spawn the command. Returns once it runs, or once it has failed to start."""
        if self._started:
            raise RuntimeError(f"run {self.run_id} was already started")
        self._started = True
        if self._cancel_reason is not None:
            self._finish(RunState.CANCELLED, error=self._cancel_reason)
            return
        argv = list(self.dispatch.command)
        try:
            cwd = self._prepare_cwd()
            transport, pipes = await self._spawn(argv, cwd)
        except _CannotStart as exc:
            log.warning("run %s on %s: cannot start: %s", self.run_id, self.node, exc)
            self._finish(RunState.FAILED, error=str(exc))
            return
        self.pid = transport.get_pid()
        self.started_at = time.time()
        self.state = RunState.RUNNING
        log.info("run %s on %s: started pid %s: %s", self.run_id, self.node, self.pid,
                 subprocess.list2cmdline(argv)[:200])
        self._notify()
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(transport, pipes), name=f"run {self.run_id}")

    def cancel(self, reason: str = "") -> None:
        """End the run (TERM the group, KILL after kill_grace); a no-op once final."""
        if self.is_final or self._cancel_reason is not None:
            return
        self._cancel_reason = reason or "cancelled"
        log.info("run %s on %s: cancel requested: %s", self.run_id, self.node,
                 self._cancel_reason)
        self._cancel.set()

    async def wait(self) -> RunReport:
        """Wait for the final state and return the final report."""
        await self._done.wait()
        return self.report()

    # --- starting ---------------------------------------------------------------

    def _prepare_cwd(self) -> str:
        """The spec's cwd (relative ones under the workdir) or the workdir, which is created."""
        workdir = Path(self.options.workdir)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _CannotStart(f"cannot create workdir {workdir}: {exc.strerror}") from None
        cwd = workdir / self.dispatch.cwd if self.dispatch.cwd else workdir
        if not cwd.is_dir():
            raise _CannotStart(f"working directory {cwd} does not exist")
        return str(cwd)

    def _environment(self) -> dict[str, str]:
        base = os.environ if self.options.base_env is None else self.options.base_env
        env = dict(base)
        env.update(self.dispatch.env)
        env.update(self.extra_env)
        # Set last: a job's env must not be able to fake which run it is.
        env.update(PTAP_JOB_ID=self.job_id, PTAP_RUN_ID=self.run_id,
                   PTAP_ITERATION=str(self.dispatch.iteration), PTAP_NODE=self.node)
        return env

    async def _spawn(self, argv: list[str], cwd: str,
                     ) -> tuple[asyncio.SubprocessTransport, _Pipes]:
        if not argv:
            raise _CannotStart("empty command")
        loop = asyncio.get_running_loop()
        try:
            return await loop.subprocess_exec(
                lambda: _Pipes(self._out, self._err), *argv,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=cwd, env=self._environment(), start_new_session=True)
        except FileNotFoundError:
            raise _CannotStart(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise _CannotStart(f"permission denied: {argv[0]}") from None
        except OSError as exc:
            raise _CannotStart(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        except ValueError as exc:  # e.g. a NUL byte in an argument
            raise _CannotStart(f"cannot start {argv[0]}: {exc}") from None

    # --- supervising ------------------------------------------------------------

    async def _supervise(self, transport: asyncio.SubprocessTransport, pipes: _Pipes) -> None:
        ending: RunState | None = None
        failure = ""
        try:
            ending = await self._until_exit(pipes)
            await self._end_leftovers()
            await self._drain(pipes)
        except Exception as exc:  # an agent bug must still end the run, and end it visibly
            log.exception("run %s on %s: supervising failed", self.run_id, self.node)
            self._signal_group(signal.SIGKILL)
            failure = f"agent error while supervising: {exc}"
        finally:
            transport.close()
            self._out.flush()
            self._err.flush()
        if failure:
            self._finish(RunState.FAILED, error=failure)
        else:
            self._finish_exit(transport.get_returncode(), ending)

    async def _until_exit(self, pipes: _Pipes) -> RunState | None:
        """Wait for the main process; on timeout or cancel end the group and say which."""
        cancel = asyncio.ensure_future(self._cancel.wait())
        waiters: set[asyncio.Future[Any]] = {pipes.exited, cancel}
        timeout = self.dispatch.timeout if self.dispatch.timeout > 0 else None
        try:
            await asyncio.wait(waiters, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel.cancel()
        if pipes.exited.done():
            return None
        ending = RunState.CANCELLED if self._cancel.is_set() else RunState.TIMEOUT
        log.info("run %s on %s: %s; sending SIGTERM to process group %s", self.run_id,
                 self.node, "cancelled" if ending is RunState.CANCELLED else
                 f"timed out after {self.dispatch.timeout:g} s", self.pid)
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(pipes.exited), self.options.kill_grace)
        except TimeoutError:
            log.warning("run %s on %s: pid %s still running %g s after SIGTERM; SIGKILL",
                        self.run_id, self.node, self.pid, self.options.kill_grace)
            self._signal_group(signal.SIGKILL)
            await pipes.exited
        return ending

    async def _end_leftovers(self) -> None:
        """End what the main process left in its group: TERM, then KILL after kill_grace."""
        left = _live_members(self._pgid)
        if not left:
            return
        log.info("run %s on %s: main process exited, ending %d leftover process(es) %s",
                 self.run_id, self.node, len(left), left[:10])
        self._signal_group(signal.SIGTERM)
        if await self._group_gone(self.options.kill_grace):
            return
        left = _live_members(self._pgid)
        log.warning("run %s on %s: %d leftover process(es) survived SIGTERM; SIGKILL %s",
                    self.run_id, self.node, len(left), left[:10])
        self._signal_group(signal.SIGKILL)
        await self._group_gone(self.options.kill_grace)

    async def _group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _live_members(self._pgid):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_GROUP_POLL)
        return True

    async def _drain(self, pipes: _Pipes) -> None:
        """Read output until EOF, but not for ever: a process outside the group may hold it."""
        try:
            await asyncio.wait_for(asyncio.shield(pipes.closed), self.options.drain_timeout)
        except TimeoutError:
            log.warning("run %s on %s: output still held open by a process outside the "
                        "run's process group; closing the pipes", self.run_id, self.node)

    @property
    def _pgid(self) -> int:
        assert self.pid is not None
        return self.pid  # start_new_session: the leader's pid is the group id

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._pgid, sig)
        except ProcessLookupError:
            pass  # the group is already empty

    # --- finishing --------------------------------------------------------------

    def _finish_exit(self, returncode: int | None, ending: RunState | None) -> None:
        self.exit_code = returncode  # Popen convention: -N when ended by signal N
        if ending is RunState.TIMEOUT:
            self._finish(ending, error=f"timed out after {self.dispatch.timeout:g} s")
        elif ending is RunState.CANCELLED:
            self._finish(ending, error=self._cancel_reason or "cancelled")
        elif returncode == 0:
            self._finish(RunState.SUCCEEDED)
        elif returncode is not None and returncode < 0:
            self._finish(RunState.FAILED, error=f"killed by {_signal_name(-returncode)}")
        else:
            self._finish(RunState.FAILED, error=f"exit code {returncode}")

    def _finish(self, state: RunState, error: str = "") -> None:
        self.state = state
        self.error = error
        self.ended_at = time.time()
        log.info("run %s on %s: %s (exit code %s)%s", self.run_id, self.node, state,
                 self.exit_code, f": {error}" if error else "")
        self._done.set()
        self._notify()

    def _notify(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self)
        except Exception:  # a hook's bug must not leave the run unfinished
            log.exception("run %s on %s: state-change hook failed", self.run_id, self.node)

    def _line(self, stream: str, line: str) -> None:
        if self._on_line is None:
            return
        try:
            self._on_line(stream, line)
        except Exception:
            if not self._line_hook_failed:  # once per run, not once per line
                self._line_hook_failed = True
                log.exception("run %s on %s: output line hook failed", self.run_id, self.node)


class _CannotStart(Exception):
    """The command could not be spawned; ``str()`` is the one-line reason."""


def _live_members(pgid: int) -> list[int]:
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


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
