"""Following a job live (``ptap run --wait``) and tailing the PUB socket (``ptap watch``).

``--wait`` subscribes to job events *before* it submits (:class:`JobEvents`),
and waits until that subscriber's handshake with the PUB socket is done: PUB
drops what is published before a subscription exists, and a job that ends
within a millisecond would otherwise be over before anyone listened, leaving
only the poll to notice. Each event is followed by a ``job.get``, so the
final state always comes from the manager's record; ``job.get`` is also
polled every :data:`POLL_INTERVAL` as a backstop (a manager restart loses
subscriptions and events).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping
from typing import Any

import zmq

from bus import codec, messages, topics
from bus.client import ManagerClient, subscribe
from bus.errors import ManagerUnreachable, ProtocolError
from bus.replies import JobReply
from bus.sockets import SocketTuning, make_socket, receive
from bus.states import JobState, RunState
from manager.cli import render
from manager.cli.session import EXIT_UNREACHABLE, CliError, Session

#: Seconds between ``job.get`` polls while no event arrives.
POLL_INTERVAL = 1.0
#: How long ``--wait`` rides out a manager that stopped answering (a restart).
UNREACHABLE_GRACE = 60.0
FINAL_JOB_STATES = frozenset(s.value for s in JobState if s.final)
_FINAL_RUN_STATES = frozenset(s.value for s in messages.RunState if s.final)
_EXIT_BY_STATE: dict[str, int] = {RunState.TIMEOUT: 124, RunState.CANCELLED: 130, RunState.LOST: 69}


def job_exit_status(job: Mapping[str, Any]) -> int:
    """Exit status of ``run --wait`` (docs/protocol.md): 0 if every run succeeded,
    else decided by the first run that did not: its exit code for ``failed``
    (1–255, else 1), 124 timeout, 130 cancelled, 69 lost."""
    for run in job.get("runs") or []:
        state = run.get("state")
        if state == RunState.SUCCEEDED:
            continue
        if state == RunState.FAILED:
            code = run.get("exit_code")
            return code if isinstance(code, int) and 1 <= code <= 255 else 1
        return _EXIT_BY_STATE.get(str(state), 1)
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class JobFollower:
    """Prints each run's state changes once, from events and polls alike."""

    def __init__(self, client: ManagerClient, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.seen: dict[str, str] = {}
        self.unreachable_since: float | None = None
        #: Waits that ended with no event (each then polled): 0 when events kept up.
        self.silent_waits = 0
        #: This job's events, in the order they came.
        self.events: list[messages.Event] = []

    def note_run(self, run: Mapping[str, Any]) -> None:
        run_id, state = str(run.get("id", "")), str(run.get("state", ""))
        before = self.seen.get(run_id)
        # A late PUB event must not undo a final state already shown.
        if not run_id or before == state or before in _FINAL_RUN_STATES:
            return
        self.seen[run_id] = state
        _say(render.run_progress(self.job_id, run))

    async def poll(self, job: JobReply) -> JobReply:
        """``job.get``; while the manager is away (restarting) keep the last view."""
        try:
            job = await self.client.job(self.job_id)
        except ManagerUnreachable as exc:
            now = time.monotonic()
            if self.unreachable_since is None:
                self.unreachable_since = now
                _say(f"ptap: manager not answering; still waiting for job {self.job_id}")
            elif now - self.unreachable_since > UNREACHABLE_GRACE:
                raise CliError(f"{exc}; job {self.job_id} may still be running — "
                               f"check later with ptap job {self.job_id}",
                               EXIT_UNREACHABLE) from None
            return job
        if self.unreachable_since is not None:
            _say(f"ptap: manager answers again; following job {self.job_id}")
            self.unreachable_since = None
        for run in job.get("runs") or []:
            self.note_run(run)
        return job


class JobEvents:
    """Every job's events, from a subscription opened before the job exists.

    :meth:`open` returns once the subscriber's handshake with the PUB socket
    succeeded (or failed, or ``timeout`` passed: polling still follows the
    job). Events of other jobs are dropped when read.
    """

    def __init__(self, session: Session) -> None:
        self.queue: asyncio.Queue[messages.Event] = asyncio.Queue()
        self._sock = make_socket(session.ctx, zmq.SUB, SocketTuning(), session.curve)
        self._sock.setsockopt(zmq.SUBSCRIBE, topics.JOB_EVENTS.encode())
        self._monitor = self._sock.get_monitor_socket(HANDSHAKE_OUTCOMES)
        self._sock.connect(session.endpoint.pub)
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, session: Session, timeout: float) -> JobEvents:
        events = cls(session)
        try:
            async with asyncio.timeout(timeout):
                await events._monitor.recv_multipart()  # the first outcome will do
        except TimeoutError:
            pass
        finally:
            events._sock.disable_monitor()
            events._monitor.close(linger=0)
        events._pump = asyncio.create_task(events._run())
        return events

    async def _run(self) -> None:
        while True:
            frames = await receive(self._sock)
            try:
                msg = codec.decode(frames[1:]) if len(frames) == 3 else None
            except ProtocolError:
                continue
            if isinstance(msg, messages.Event):
                self.queue.put_nowait(msg)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        self._sock.close(linger=0)


#: The monitor events that end the wait for a subscriber's handshake.
HANDSHAKE_OUTCOMES = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


async def follow_job(session: Session, client: ManagerClient, job_id: str,
                     job: JobReply, events: JobEvents | None = None,
                     follower: JobFollower | None = None) -> JobReply:
    """Follow ``job_id`` until it is final; print progress on stderr; return the final job.

    ``events`` is a subscription opened before the submit; without one, one is
    opened now (its events may start after the job's first ones).
    """
    follower = follower or JobFollower(client, job_id)
    own = events is None
    if events is None:
        events = await JobEvents.open(session, session.timeout)
    try:
        for run in job.get("runs") or []:
            follower.note_run(run)
        job = await follower.poll(job)
        while job.get("state") not in FINAL_JOB_STATES:
            if not job.get("runs") and follower.unreachable_since is None:
                raise CliError(f"job {job_id} has no runs: no node matched its targets — "
                               "see ptap nodes and --nodes")
            await _wait_for_events(events.queue, follower, POLL_INTERVAL)
            job = await follower.poll(job)
        while not events.queue.empty():  # what came meanwhile, for the record
            if (event := events.queue.get_nowait()).job_id == job_id:
                follower.events.append(event)
    finally:
        if own:
            await events.close()
    _summarise(job)
    return job


async def _wait_for_events(queue: asyncio.Queue[messages.Event], follower: JobFollower,
                           timeout: float) -> None:
    """Return at the first event of the follower's job (after showing what it says
    and what else is waiting) or after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            event = await queue.get()
            while event.job_id != follower.job_id:
                event = await queue.get()
    except TimeoutError:
        follower.silent_waits += 1
        return
    while True:
        if event.job_id == follower.job_id:
            follower.events.append(event)
            for run in event.runs():
                follower.note_run(run)
        if queue.empty():
            return
        event = queue.get_nowait()


def _summarise(job: Mapping[str, Any]) -> None:
    runs = job.get("runs") or []
    _say(f"job {job.get('id')} {job.get('state')}: {render.run_counts(job)}")
    for run in runs:
        if run.get("state") == RunState.SUCCEEDED:
            continue
        for label, key in (("stdout", "stdout_tail"), ("stderr", "stderr_tail")):
            lines = render.tail_lines(run.get(key) or "", 5)
            if lines:
                _say(f"  {run.get('id')} {label}:")
                for line in lines:
                    _say(f"    {line}")
    if any(r.get("state") != RunState.SUCCEEDED for r in runs):
        _say(f"  full output: ptap job {job.get('id')}")


async def watch(session: Session, node: str | None, count: int | None) -> None:
    """Print one line per event, run change or metric batch (optionally of one node)."""
    prefixes = [topics.NODE_EVENTS, topics.JOB_EVENTS,
                f"{topics.METRICS}{node}" if node else topics.METRICS]
    shown = 0
    async for topic, msg in subscribe(session.endpoint.pub, prefixes, ctx=session.ctx,
                                      curve=session.curve):
        for line in render.event_lines(topic, msg, time.time(), node):
            print(line, flush=True)
            shown += 1
            if count is not None and shown >= count:
                return
