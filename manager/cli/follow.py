"""Following a job live (``ptap run --wait``).

``--wait`` subscribes to job events *before* it submits, and waits until that
subscriber's handshake with the PUB socket is done: PUB drops what is
published before a subscription exists, and a job that ends within a
millisecond would otherwise be over before anyone listened, leaving only the
poll to notice. Each event is followed by a ``job.get``, so the final state
always comes from the manager's record; ``job.get`` is also polled every
:data:`POLL_INTERVAL` as a backstop (a manager restart loses subscriptions and
events).

``run`` is a one-shot command (:mod:`manager.cli.oneshot`): its client and its
events block, so following a job needs no event loop; asyncio and what it
imports were a quarter of ``run --wait``'s time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bus.errors import ManagerUnreachable
from bus.replies import JobReply
from bus.states import JobState, RunState
from manager.cli import render
from manager.cli.session import EXIT_UNREACHABLE, CliError

if TYPE_CHECKING:
    from bus.client import ManagerClient
    from bus.messages import Event
    from manager.cli.oneshot import BlockingJobEvents

#: Seconds between ``job.get`` polls while no event arrives.
POLL_INTERVAL = 1.0
#: How long ``--wait`` rides out a manager that stopped answering (a restart).
UNREACHABLE_GRACE = 60.0
FINAL_JOB_STATES = frozenset(s.value for s in JobState if s.final)
_FINAL_RUN_STATES = frozenset(s.value for s in RunState if s.final)
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
        self.events: list[Event] = []

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


async def follow_job(client: ManagerClient, job_id: str, job: JobReply,
                     events: BlockingJobEvents,
                     follower: JobFollower | None = None) -> JobReply:
    """Follow ``job_id`` until it is final; print progress on stderr; return the final job.

    ``events`` is the subscription opened before the submit.
    """
    follower = follower or JobFollower(client, job_id)
    for run in job.get("runs") or []:
        follower.note_run(run)
    job = await follower.poll(job)
    while job.get("state") not in FINAL_JOB_STATES:
        if not job.get("runs") and follower.unreachable_since is None:
            raise CliError(f"job {job_id} has no runs: no node matched its targets — "
                           "see ptap nodes and --nodes")
        came = await events.wait(job_id, POLL_INTERVAL)
        if not came:
            follower.silent_waits += 1
        for event in came:
            follower.events.append(event)
            for change in event.runs():
                follower.note_run(change)
        job = await follower.poll(job)
    follower.events += await events.wait(job_id, 0.0)  # what came meanwhile, for the record
    _summarise(job)
    return job


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
