"""Jobs and runs between the scheduler's decisions and the rest of the manager.

:class:`Bookkeeper` keeps the :class:`~manager.book.Book` of unfinished
jobs in step with everything that must agree with it: it sends the runs the
scheduler lets start, stores changed runs and re-derives their jobs, publishes
run, job and node events on PUB, and tells the registry which runs each node
holds (READY ⇄ BUSY). After a restart it takes the unfinished jobs back from
the store and, once their nodes have had time to re-register, declares lost the
runs whose node never came back.

The decisions are ``manager/scheduler.py``'s and ``manager/registry.py``'s; the
sockets and the store are the manager's, passed in, so this module holds no
socket of its own.

Run changes from agents and dispatches are *staged* (:meth:`Bookkeeper.stage`)
and stored together once per turn of the loop (:meth:`Bookkeeper.flush`): 1,000
agents answering a dispatch at once cost a few SQLite commits, not 1,000. What
the store must hold first waits for it: events are published, and final states
acked, only after their commit; a manager killed before a commit has acked
nothing of it, and each agent sends its final state again
(docs/architecture.md#nodes-jobs-and-runs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from bus import codec, topics
from bus.messages import JobSpec, Message, NodeState, RunDispatch, RunState
from bus.ratelimit import RateLimitedLog
from manager import scheduler
from manager.book import Book
from manager.registry import Registry, StateChange
from manager.scheduler import ACTIVE, Job, JobState, Run
from manager.stage import Stage
from manager.state import Store

log = logging.getLogger(__name__)

#: Send one message to a ROUTER peer; False if it could not be sent.
Send = Callable[[bytes, Message], Awaitable[bool]]
#: Publish ``[topic, *frames]`` on PUB.
Publish = Callable[[bytes, list[bytes]], Awaitable[None]]
#: Runs staged in one turn beyond which they are stored without waiting for its end.
MAX_STAGED_RUNS = 1024


class Bookkeeper:
    """The manager's runs and jobs: dispatch, storage, events, node states.

    ``store`` returns the manager's store, which opens only when the manager
    starts. ``may_dispatch(node)`` says whether a node may be sent runs now
    (with CURVE, only while its key is still accepted).
    """

    def __init__(
        self,
        book: Book,
        registry: Registry,
        store: Callable[[], Store],
        *,
        send: Send,
        publish: Publish,
        may_dispatch: Callable[[str], bool],
        max_staged: int = MAX_STAGED_RUNS,
    ) -> None:
        self.book = book
        self.registry = registry
        self._store = store
        self._send = send
        self._publish = publish
        self._may_dispatch = may_dispatch
        self._max_staged = max_staged
        #: Monotonic time by which nodes holding reloaded runs must be back.
        self._restart_deadline: float | None = None
        self._staged = Stage()
        #: Nodes freed by a final state whose flush has not dispatched on them yet.
        self._freed_unacked: set[str] = set()
        self._flush_task: asyncio.Task[None] | None = None
        #: Per running job, the index in its runs before which every run has ended.
        self._unfinished_from: dict[str, int] = {}
        self._trouble = RateLimitedLog(log)
        #: Called with a job's id and spec when it reaches a final state (the history's
        #: summaries; the spec, since loading a 1,000-run job to read it cost 5 ms).
        self.on_job_end: Callable[[str, JobSpec], None] | None = None

    @property
    def store(self) -> Store:
        return self._store()

    # --- after a restart ------------------------------------------------------------

    def reload(self) -> None:
        """Take back the unfinished jobs; their nodes get a deadline to come back."""
        for job, runs in self.store.unfinished():
            self.book.add(job, runs)
        active = [r for r in self.book.runs.values() if r.state in ACTIVE]
        if active:
            # liveness × interval, plus one interval of grace for the agent's back-off.
            self._restart_deadline = (
                time.monotonic() + self.registry.timeout + self.registry.interval
            )
        if self.book.jobs:
            log.info(
                "reloaded %d unfinished jobs (%d runs dispatched or running)",
                len(self.book.jobs),
                len(active),
            )

    async def expire_unclaimed_runs(self, now: float) -> None:
        """Once the restart deadline passes (monotonic ``now``), declare lost the
        reloaded runs whose node has not registered since."""
        if self._restart_deadline is None or now < self._restart_deadline:
            return
        self._restart_deadline = None
        wall, lost = time.time(), []
        for run in self.book.runs.values():
            if run.state in ACTIVE and self.registry.get(run.node) is None:
                scheduler.set_state(
                    run,
                    RunState.LOST,
                    wall,
                    f"node {run.node} did not come back after the manager restarted",
                )
                log.warning(
                    "run %s lost: node %s did not come back after the restart", run.id, run.node
                )
                lost.append(run)
        await self.commit(lost)

    # --- runs ---------------------------------------------------------------------

    async def dispatch_queued(self, only: Iterable[str] | None = None) -> None:
        """Send every run that may start now (see :func:`scheduler.next_dispatches`),
        on the nodes named in ``only`` (a run update frees its own node alone), or on
        every node (the housekeeping pass)."""
        if only is None:
            # A node freed by a final state gets its next run from the flush that
            # stores and acks that state, after the ack; not from here before it.
            held = self._staged.dispatch_on | self._freed_unacked
            nodes = {n.name: n for n in self.registry.nodes()
                     if self._may_dispatch(n.name) and n.name not in held}
            runs: Iterable[Run] = self.book.runs.values()
        else:  # the same, for a final state staged in this turn and not yet acked
            nodes = {name: node for name in set(only)
                     if (node := self.registry.get(name)) is not None
                     and self._may_dispatch(name) and name not in self._staged.dispatch_on}
            runs = [r for name in nodes for r in self.book.on_node(name)]
        sent, wall = [], time.time()
        for run, node in scheduler.next_dispatches(runs, nodes):
            spec = self.book.jobs[run.job_id].spec
            msg = RunDispatch(
                run_id=run.id,
                job_id=run.job_id,
                iteration=run.iteration,
                command=spec.command,
                env=spec.env,
                cwd=spec.cwd,
                timeout=spec.timeout,
                collect=spec.collect,
                interval=spec.interval,
            )
            if await self._send(node.routing_id, msg):
                scheduler.set_state(run, RunState.DISPATCHED, wall)
                log.debug("run %s dispatched to node %s", run.id, node.name)
                sent.append(run)
        # One line per job and pass, not per run: a job to 1,000 nodes is one line.
        by_job: dict[str, list[str]] = {}
        for run in sent:
            by_job.setdefault(run.job_id, []).append(run.node)
        for job_id, names in by_job.items():
            shown = ", ".join(sorted(names)[:8]) + (f" and {len(names) - 8} more"
                                                    if len(names) > 8 else "")
            log.info("job %s: %d runs dispatched to %s", job_id, len(names), shown)
        await self.stage(sent)  # stored with this turn's: a lost dispatch is requeued

    async def commit(self, runs: Iterable[Run]) -> None:
        """Store changed runs now, with whatever else is staged (see :meth:`stage`): a
        caller may ack any final state it holds once this returns, even one that an
        earlier update of this turn staged (an agent registering again resends it)."""
        runs = list(runs)
        if runs:
            await self.stage(runs)
        await self.flush()

    async def stage(self, runs: Iterable[Run],
                    after_store: Iterable[tuple[bytes, Message]] = (),
                    dispatch_on: Iterable[str] = ()) -> None:
        """Take changed runs: their jobs' states are re-derived, their nodes' states
        follow and their events are made now (as of now, so a run that changes twice
        in one turn of the loop has both events); they are stored, in one transaction
        with all else staged in this turn, by :meth:`flush`, which then publishes the
        events, sends ``after_store`` (acks of final states: never before storing) and
        dispatches what may start on the ``dispatch_on`` nodes (freed by a final state).
        """
        staged = self._staged
        staged.after_store.extend(after_store)
        staged.dispatch_on.update(dispatch_on)
        runs = list(runs)
        if runs:
            wall = time.time()
            changed = self._refresh_jobs(runs, wall)
            for run in runs:
                staged.add_run(run, wall)
            for job in changed:
                log.info("job %s %s", job.id, job.state.value)
                staged.jobs[job.id] = job
                staged.events.append(self._job_event(job))
            nodes = [runs[0].node] if len(runs) == 1 else sorted({r.node for r in runs})
            changes = [self.registry.set_running(name, self.book.active_on(name))
                       for name in nodes]
            staged.events += self._node_events(c for c in changes if c is not None)
        if len(staged.runs) >= self._max_staged:
            await self.flush()  # a burst that long is not kept waiting for its end
        else:
            self._flush_soon()

    def _refresh_jobs(self, runs: list[Run], wall: float) -> list[Job]:
        """Re-derive the states of ``runs``' jobs; the jobs whose state changed.

        A running job stays running until a run of it ends or goes back to the
        queue: its 1,000 runs going ``running`` one by one need no look at the rest.
        And while a run of it has not ended, a run that ends leaves it running: that
        run is looked for from where the last look found one (a run that has ended
        never starts again), not from the first run, which made a job's 1,000 final
        states cost 1,000 × 500 steps.
        """
        changed = []
        for job_id in {r.job_id: None for r in runs}:
            job = self.book.jobs.get(job_id)
            if job is None:
                continue
            if job.state is JobState.RUNNING:
                states = [r.state for r in runs if r.job_id == job_id]
                if RunState.QUEUED not in states and (
                        not any(s.final for s in states) or self._has_unfinished(job_id)):
                    continue
            if scheduler.refresh_job(job, self.book.runs_of(job_id), wall):
                changed.append(job)
        return changed

    def _has_unfinished(self, job_id: str) -> bool:
        """Does a run of ``job_id`` not have a final state? Looks from the run the
        last call found (runs before it have ended, and ended runs stay ended)."""
        runs = self.book.runs_of(job_id)
        i = self._unfinished_from.get(job_id, 0)
        while i < len(runs) and runs[i].state.final:
            i += 1
        self._unfinished_from[job_id] = i
        return i < len(runs)

    def _flush_soon(self) -> None:
        """Flush when the loop yields: the ROUTER loop takes a burst of messages
        before it does, and their runs go into one transaction."""
        task = self._flush_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            return  # one is coming (not this one: a flush may stage the next dispatches)
        self._flush_task = asyncio.get_running_loop().create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # kept staged; the next flush (a tick at latest) retries
            self._trouble.warn("flush", f"cannot store run states ({exc!r}); they stay "
                               "staged and unacked, and are stored again next turn",
                               time.monotonic(), exc_info=True)

    async def flush(self) -> None:
        """Store what is staged in one commit, then send what waited for the store,
        forget jobs that ended, dispatch on the nodes they freed, and publish the events
        in order. If storing fails, all of it stays staged, and nothing is acked that is
        not stored."""
        staged = self._staged
        if staged.empty:
            return
        self._staged = Stage()
        try:
            self.store.save(staged.runs.values(), staged.jobs.values())
        except Exception:
            self._staged = staged  # nothing else ran meanwhile: the save is synchronous
            raise
        self._freed_unacked |= staged.dispatch_on
        try:
            for peer, msg in staged.after_store:
                await self._send(peer, msg)
            for job in staged.jobs.values():
                if job.state.final:
                    self.book.drop(job.id)
                    self._unfinished_from.pop(job.id, None)
                    if self.on_job_end is not None:  # stored: its history summary may be made
                        self.on_job_end(job.id, job.spec)
            if staged.dispatch_on:  # what it stages is published after what is published here
                await self.dispatch_queued(staged.dispatch_on)
        finally:
            self._freed_unacked -= staged.dispatch_on
        # Last: a client acting on a job's end (the next submit) finds this turn's work done.
        for topic, frames in staged.published():
            await self._publish(topic, frames)

    async def close(self) -> None:
        """Store what is staged now (the manager is stopping)."""
        if self._flush_task is not None:
            self._flush_task.cancel()
        await self.flush()

    async def publish_job(self, job: Job) -> None:
        """Publish ``job``'s state on its event topic, after what is staged."""
        await self._emit([self._job_event(job)])

    def _job_event(self, job: Job) -> tuple[bytes, list[bytes]]:
        """``job``'s event, without output tails, nor the environment given to its
        command: it holds tokens and passwords (``job.get`` shows it to an administrator)."""
        detail = job.to_dict(self.book.runs_of(job.id), tails=False)
        detail["spec"].pop("env", None)
        return topics.job_events(job.id), codec.encode_event(
            "job", time.time(), cast(dict[str, Any], detail), job_id=job.id,
            state=job.state.value)

    async def _emit(self, events: list[tuple[bytes, list[bytes]]]) -> None:
        """Publish now, or after the staged events if there are any: in order."""
        if self._staged.empty:
            for topic, frames in events:
                await self._publish(topic, frames)
        else:
            self._staged.events += events
            self._flush_soon()

    # --- nodes --------------------------------------------------------------------

    async def sync_node(self, name: str) -> None:
        """Tell the registry which runs ``name`` holds (READY ⇄ BUSY follows)."""
        change = self.registry.set_running(name, self.book.active_on(name))
        await self.node_changed([change] if change else [])

    async def node_changed(self, changes: Iterable[StateChange]) -> None:
        """Log and publish node state changes (and re-registrations)."""
        await self._emit(self._node_events(changes))

    def _node_events(self, changes: Iterable[StateChange]) -> list[tuple[bytes, list[bytes]]]:
        now, wall, events = time.monotonic(), time.time(), []
        for change in changes:
            node = self.registry.get(change.name)
            if node is None:
                continue
            if change.new is NodeState.LOST:
                log.warning("node %s lost: silent for %.1f s", node.name, now - node.last_seen)
            elif change.old is NodeState.LOST:
                log.info("node %s is back: %s", node.name, change.new.value)
            events.append((topics.node_events(node.name), codec.encode_event(
                "node", wall, cast(dict[str, Any], node.to_dict(now, wall)), node=node.name,
                state=node.state.value)))
        return events

    # --- views for replies and reports ----------------------------------------------

    def job_dict(self, job_id: str) -> dict[str, Any] | None:
        """The job JSON (with output tails), from memory if unfinished, else the store."""
        job = self.book.jobs.get(job_id)
        if job is not None:
            return dict(job.to_dict(self.book.runs_of(job_id)))
        found = self.store.job(job_id)
        return dict(found[0].to_dict(found[1])) if found else None

    def node_facts(self, node: str, when: float | None) -> tuple[dict[str, Any], str] | None:
        """``node``'s facts at wall time ``when``: as recorded in the store, else as the
        registry holds them now; with where they came from (``recorded``/``registry``)."""
        found = self.store.facts_at(node, when)
        if found is not None:
            return found[0], "recorded"
        live = self.registry.get(node)
        return (codec.to_dict(live.facts), "registry") if live is not None else None
