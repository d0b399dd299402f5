"""Run one job command per run, in a process group of its own (docs/architecture.md#nodes-jobs-and-runs, docs/protocol.md "Runs").

A :class:`Runner` owns one run from ``run.dispatch`` to its final state::

    dispatched ──start()──► running ──exit 0──────────► succeeded
        │                     ├──exit ≠ 0 / signal──► failed     (exit_code, -signum for a signal)
        │                     ├──timeout────────────► timeout    (TERM group, KILL after kill_grace)
        │                     └──cancel()───────────► cancelled  (same)
        └──cannot start (not found, no permission)► failed      (exit_code None, one-line error)

The command is the leader of a process group of its own, so one ``killpg``
reaches the whole tree. When the main process exits, whatever it left in that
group is ended too (TERM, then KILL after ``kill_grace``), so a test cannot leak
processes onto the node.

This module holds the decisions and the report; the means live beside it:
:mod:`agent.process_group` starts the command in its group, hears it exit, and
looks who is left (and says why ``loop.subprocess_exec`` rather than
``create_subprocess_exec``); :mod:`agent.output_tail` keeps the bounded
stdout/stderr tails and hands complete lines to an ``on_line(stream, line)``
hook, for ``PTAP mark`` lines and the live view.
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

from agent.output_tail import LineCallback, OutputTail
from agent.process_group import (
    CannotStart,
    ProcessPipes,
    live_members,
    signal_group,
    spawn_in_new_group,
    wait_group_empty,
)
from bus.messages import RunDispatch, RunReport, RunState, dispatch_problem
from bus.ratelimit import RateLimitedLog

__all__ = ["ChangeCallback", "LineCallback", "Runner", "RunnerOptions"]

log = logging.getLogger(__name__)
_trouble = RateLimitedLog(log)

#: ``on_change(runner)``: called on the loop after every state change.
ChangeCallback = Callable[["Runner"], None]


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
        #: App metric datagrams the kernel dropped (set by the app collector at the end).
        self.app_dropped: int | None = None
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
        """The run as the manager sees it in ``run.update`` and ``agent.register``.

        Datagrams the kernel dropped are said in ``error`` as well, where people
        look, not only in ``app_dropped``: a lossy run must not pass for a clean one.
        """
        error = self.error
        if self.app_dropped:
            error = "; ".join(filter(None, [error, (
                f"{self.app_dropped} app metric datagram(s) dropped by the kernel (the "
                "agent's UDP buffer was full): raise [collectors] app_rcvbuf or send to "
                "PTAP_METRICS_STREAM")]))
        return RunReport(
            run_id=self.run_id, job_id=self.job_id, state=self.state, pid=self.pid,
            exit_code=self.exit_code, started_at=self.started_at, ended_at=self.ended_at,
            stdout_tail=self._out.text(), stderr_tail=self._err.text(), error=error,
            app_dropped=self.app_dropped,
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
            # Numbers that would break a timer (NaN, inf, 1e308) start nothing.
            if problem := dispatch_problem(self.dispatch):
                raise CannotStart(f"refused: {problem}")
            cwd = self._prepare_cwd()
            # Stamped before the fork: on a busy host the loop may only get back here
            # a good while after the command began, which made runs look shorter.
            forked_at = time.time()
            transport, pipes = await spawn_in_new_group(
                argv, cwd, self._environment(), self._out.feed, self._err.feed)
        except CannotStart as exc:
            _trouble.warn("cannot-start", f"run {self.run_id} on {self.node}: cannot start: "
                          f"{exc}")
            self._finish(RunState.FAILED, error=str(exc))
            return
        self.pid = transport.get_pid()
        self.started_at = forked_at
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
            raise CannotStart(f"cannot create workdir {workdir}: {exc.strerror}") from None
        cwd = workdir / self.dispatch.cwd if self.dispatch.cwd else workdir
        if not cwd.is_dir():
            raise CannotStart(f"working directory {cwd} does not exist")
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

    # --- supervising ------------------------------------------------------------

    async def _supervise(self, transport: asyncio.SubprocessTransport, pipes: ProcessPipes) -> None:
        ending: RunState | None = None
        failure = ""
        try:
            ending = await self._until_exit(pipes)
            await self._end_leftovers()
            await self._drain(pipes)
        except Exception as exc:  # an agent bug must still end the run, and end it visibly
            log.exception("run %s on %s: supervising failed", self.run_id, self.node)
            signal_group(self._pgid, signal.SIGKILL)
            failure = f"agent error while supervising: {exc}"
        finally:
            transport.close()
            self._out.flush()
            self._err.flush()
        if failure:
            self._finish(RunState.FAILED, error=failure)
        else:
            self._finish_exit(transport.get_returncode(), ending)

    async def _until_exit(self, pipes: ProcessPipes) -> RunState | None:
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
        signal_group(self._pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(pipes.exited), self.options.kill_grace)
        except TimeoutError:
            log.warning("run %s on %s: pid %s still running %g s after SIGTERM; SIGKILL",
                        self.run_id, self.node, self.pid, self.options.kill_grace)
            signal_group(self._pgid, signal.SIGKILL)
            await pipes.exited
        return ending

    async def _end_leftovers(self) -> None:
        """End what the main process left in its group: TERM, then KILL after kill_grace."""
        left = live_members(self._pgid)
        if not left:
            return
        log.info("run %s on %s: main process exited, ending %d leftover process(es) %s",
                 self.run_id, self.node, len(left), left[:10])
        signal_group(self._pgid, signal.SIGTERM)
        if await wait_group_empty(self._pgid, self.options.kill_grace):
            return
        left = live_members(self._pgid)
        log.warning("run %s on %s: %d leftover process(es) survived SIGTERM; SIGKILL %s",
                    self.run_id, self.node, len(left), left[:10])
        signal_group(self._pgid, signal.SIGKILL)
        await wait_group_empty(self._pgid, self.options.kill_grace)

    async def _drain(self, pipes: ProcessPipes) -> None:
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


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
