"""The runs this agent holds, from ``run.dispatch`` until the manager's ``run.ack``.

Runs outlive sessions (docs/protocol.md, "Runs"): a run keeps going while the
link reconnects, ``agent.register`` reports every run held, and a final state is
resent on every heartbeat until the manager acks it. So the runs live here, apart
from the session in :mod:`agent.link`, which hands :class:`HeldRuns` the three
run messages and asks it what to report and what to resend.

Runs also outlive the agent: a final state goes to the :class:`~agent.run_journal.RunJournal`
on disk before it is sent, and the finished runs an earlier agent left there
are held (as reports, :attr:`HeldRuns.finished`) and reported like the others
until the manager acks them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from agent.link_hooks import LinkHooks, call_hooks
from agent.run_journal import RunJournal
from agent.runner import Runner, RunnerOptions
from bus.messages import Message, RunAck, RunCancel, RunDispatch, RunReport, RunState, RunUpdate
from bus.ratelimit import RateLimitedLog

__all__ = ["HeldRuns"]

log = logging.getLogger(__name__)


class HeldRuns:
    """Starts, cancels and forgets runs; every state change goes out through ``send``.

    :attr:`runs` maps run ids to their :class:`~agent.runner.Runner` until the
    manager acks the final state; :attr:`finished` holds the final reports of
    runs an earlier agent process ran, read back from ``journal``. ``send``
    queues a message for the manager without waiting; between sessions it drops
    it, which is safe because finals are resent until acked and registration
    reports every run again.
    """

    def __init__(self, node: str, options: RunnerOptions, hooks: LinkHooks,
                 send: Callable[[Message], None], trouble: RateLimitedLog,
                 journal: RunJournal | None = None) -> None:
        self.node = node
        self.runs: dict[str, Runner] = {}
        self.journal = journal or RunJournal(None)
        self.finished: dict[str, RunReport] = {r.run_id: r for r in self.journal.load()}
        self._options = options
        self._hooks = hooks
        self._send = send
        self._trouble = trouble
        self._tasks: set[asyncio.Task[None]] = set()  # runs still being started

    def reports(self) -> list[RunReport]:
        """What ``agent.register`` carries: every run held, in its current state."""
        return [runner.report() for runner in self.runs.values()] + list(self.finished.values())

    def running(self) -> int:
        """How many runs are running now (a heartbeat's ``running``)."""
        return sum(1 for r in self.runs.values() if r.state is RunState.RUNNING)

    def resend_finals(self) -> None:
        """Every heartbeat: resend the final updates the manager has not acked yet."""
        for runner in self.runs.values():
            if runner.is_final:
                self._send(RunUpdate(run=runner.report()))
        for report in self.finished.values():
            self._send(RunUpdate(run=report))

    async def aclose(self) -> None:
        """Cancel every unfinished run and wait for their process groups to end."""
        for runner in self.runs.values():
            runner.cancel("agent stopping")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in list(self.runs.values()):
            if runner.state is not RunState.DISPATCHED:
                await runner.wait()

    # --- one handler per run message ---------------------------------------------

    def on_dispatch(self, msg: RunDispatch) -> None:
        """run.dispatch: start a Runner; for a run already held, resend its current update."""
        known = self.runs[msg.run_id].report() if msg.run_id in self.runs else \
            self.finished.get(msg.run_id)
        if known is not None:
            log.info("node %s: run %s dispatched again; resending its state %s", self.node,
                     msg.run_id, known.state)
            self._send(RunUpdate(run=known))
            return
        def on_line(stream: str, line: str) -> None:
            self._call_hooks(self._hooks.output_line, runner, stream, line)

        runner = Runner(msg, self.node, self._options, on_change=self._on_change,
                        on_line=on_line)
        self.runs[msg.run_id] = runner
        task = asyncio.get_running_loop().create_task(self._start(runner),
                                                      name=f"start {msg.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._start_done)

    def on_cancel(self, msg: RunCancel) -> None:
        """run.cancel: end the run's process group; a finished run's update is resent."""
        runner = self.runs.get(msg.run_id)
        if msg.run_id in self.finished:
            self._send(RunUpdate(run=self.finished[msg.run_id]))
        elif runner is None:
            log.info("node %s: cancel for run %s, which this agent does not hold", self.node,
                     msg.run_id)
        elif runner.is_final:
            self._send(RunUpdate(run=runner.report()))
        else:
            runner.cancel(msg.reason or "cancelled by manager")

    def on_ack(self, msg: RunAck) -> None:
        """run.ack: the manager stored the final state; stop resending and forget the run."""
        runner = self.runs.get(msg.run_id)
        if runner is not None and runner.is_final:
            del self.runs[msg.run_id]
        elif self.finished.pop(msg.run_id, None) is None:
            return
        self.journal.forget(msg.run_id)
        log.debug("node %s: run %s acked", self.node, msg.run_id)

    # --- a run's life ------------------------------------------------------------------

    async def _start(self, runner: Runner) -> None:
        """Let the metrics side prepare (an app endpoint must exist before the
        command starts, to be in its environment), then start the command."""
        for prepare in self._hooks.prepare_run:
            try:
                await prepare(runner)
            except Exception:
                log.exception("node %s: preparing run %s failed; starting it anyway",
                              self.node, runner.run_id)
        await runner.start()

    def _start_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node %s: starting a run failed: %r", self.node, task.exception())

    def _on_change(self, runner: Runner) -> None:
        """Every state change goes to the manager at once, and to the hooks.

        A final state goes to the hooks first (the app collector adds what the
        kernel dropped to the report), then to disk, and only then to the manager:
        whatever the manager has seen, a restarted agent can report again.
        """
        if runner.is_final:
            self._call_hooks(self._hooks.run_ended, runner)
            report = runner.report()
            self.journal.record(report)
            self._send(RunUpdate(run=report))
            return
        self._send(RunUpdate(run=runner.report()))
        if runner.state is RunState.RUNNING:
            self._call_hooks(self._hooks.run_started, runner)

    def _call_hooks(self, hooks: list[Callable[..., None]], *args: Any) -> None:
        call_hooks(hooks, *args, node=self.node, trouble=self._trouble)
