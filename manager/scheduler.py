"""Jobs → runs, and which run goes to which node next.

Pure: these functions take jobs, runs and nodes and return decisions; the
caller (``manager/control.py``) sends messages and stores the results. Time
is passed in. The rules are those of docs/protocol.md "Runs":

* a job becomes one run per target node per iteration, id
  ``<job_id>.<node>.<iteration>``;
* a node holds one exclusive run at a time, iterations of a job on a node run
  in order, and jobs are served first come, first served;
* a run moves ``queued → dispatched → running → final``; a final state is final.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from bus import codec
from bus.messages import (
    MAX_ITERATION,
    JobSpec,
    NodeState,
    RunReport,
    RunState,
    run_settings_problem,
)
from bus.replies import JobReply, JobSpecReply, RunReply
from bus.states import JobState as JobState  # its home; re-exported here
from manager.registry import Node

MAX_REPEAT = MAX_ITERATION  # iterations are numbered 1..repeat on each node
MAX_RUNS_PER_JOB = 100_000
ACTIVE = frozenset({RunState.DISPATCHED, RunState.RUNNING})
_FINALS = frozenset(s for s in RunState if s.final)

#: Which state may follow which. Agents are the truth about their runs, so a
#: run the manager still holds as queued (requeued after a restart) may be
#: reported running or finished directly.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.DISPATCHED, RunState.RUNNING} | _FINALS),
    RunState.DISPATCHED: frozenset({RunState.QUEUED, RunState.RUNNING} | _FINALS),
    RunState.RUNNING: _FINALS,
    **{s: frozenset() for s in _FINALS},
}


class SpecError(ValueError):
    """A job spec or its targets cannot be used; the text is shown to the user."""


class InvalidTransition(ValueError):
    """A run state change the rules do not allow."""


@dataclass
class Run:
    """One node, one iteration of a job. Wall timestamps; ``None`` until known."""

    id: str
    job_id: str
    node: str
    iteration: int
    exclusive: bool = True
    state: RunState = RunState.QUEUED
    pid: int | None = None
    exit_code: int | None = None
    dispatched_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    error: str = ""
    cancel_requested: bool = False

    def to_dict(self, tails: bool = True) -> RunReply:
        """The run JSON of docs/protocol.md; ``tails=False`` leaves out the output."""
        out: RunReply = {
            "id": self.id, "job_id": self.job_id, "node": self.node,
            "iteration": self.iteration, "state": self.state.value, "pid": self.pid,
            "exit_code": self.exit_code, "dispatched_at": self.dispatched_at,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "stdout_tail": self.stdout_tail, "stderr_tail": self.stderr_tail,
            "error": self.error,
        }
        if not tails:
            del out["stdout_tail"], out["stderr_tail"]
        return out



@dataclass
class Job:
    """A submitted test task. ``created_at``/``ended_at`` are wall times."""

    id: str
    spec: JobSpec
    created_at: float
    state: JobState = JobState.QUEUED
    ended_at: float | None = None

    def to_dict(self, runs: Iterable[Run], tails: bool = True) -> JobReply:
        """The job JSON of docs/protocol.md, with its runs."""
        spec = codec.to_dict(self.spec)
        spec.pop("name", None)
        return {
            "id": self.id,
            "name": self.spec.name,
            "state": self.state.value,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "spec": cast(JobSpecReply, spec),  # codec.to_dict of a JobSpec, less its name
            "runs": [r.to_dict(tails) for r in runs],
        }


# --- submission ---------------------------------------------------------------------


def validate_spec(spec: JobSpec) -> None:
    """Refuse specs no agent could run; raises :class:`SpecError`."""
    if not spec.command or not all(spec.command):
        raise SpecError("command is empty")
    if not 1 <= spec.repeat <= MAX_REPEAT:
        raise SpecError(f"repeat {spec.repeat} is outside 1..{MAX_REPEAT}")
    if problem := run_settings_problem(spec.timeout, spec.interval):
        raise SpecError(problem)
    if not spec.targets:
        raise SpecError("no targets: give node names, label:NAME or all")


def resolve_targets(targets: Iterable[str], nodes: Mapping[str, Node]) -> list[str]:
    """Node names for ``targets`` (names, ``label:X``, ``all``), in a stable order.

    ``all`` and labels select nodes that are not lost; a name selects a known
    node even while it is lost (its runs wait). An unknown name, or a
    selector that matches nothing, raises :class:`SpecError`.
    """
    chosen: dict[str, None] = {}
    for target in targets:
        if target == "all":
            found = [n for n, node in sorted(nodes.items()) if not node.lost]
        elif target.startswith("label:"):
            label = target[len("label:") :]
            found = [
                n
                for n, node in sorted(nodes.items())
                if not node.lost and label in node.facts.labels
            ]
        elif target in nodes:
            found = [target]
        else:
            raise SpecError(f"unknown node {target!r} (see ptap nodes)")
        if not found:
            raise SpecError(f"target {target!r} matches no live node")
        chosen.update(dict.fromkeys(found))
    return list(chosen)


def expand(job_id: str, spec: JobSpec, nodes: Mapping[str, Node]) -> list[Run]:
    """The runs of a new job: per target node, iterations 1..repeat, in order."""
    validate_spec(spec)
    names = resolve_targets(spec.targets, nodes)
    if len(names) * spec.repeat > MAX_RUNS_PER_JOB:
        raise SpecError(
            f"{len(names)} nodes × {spec.repeat} iterations is over {MAX_RUNS_PER_JOB} runs"
        )
    return [
        Run(
            id=f"{job_id}.{name}.{i}",
            job_id=job_id,
            node=name,
            iteration=i,
            exclusive=spec.exclusive,
        )
        for i in range(1, spec.repeat + 1)
        for name in names
    ]


# --- dispatch -----------------------------------------------------------------------


def next_dispatches(runs: Iterable[Run], nodes: Mapping[str, Node]) -> list[tuple[Run, Node]]:
    """Which queued runs to send now, and where.

    ``runs`` are the unfinished runs in submission order (FIFO). Per node:
    an exclusive run starts only on an idle node and nothing overtakes it;
    non-exclusive runs may share a node with each other; a job's next
    iteration waits until its previous one on that node is final. Lost
    nodes and nodes not registered get nothing.
    """
    per_node: dict[str, list[Run]] = {}
    for run in runs:
        per_node.setdefault(run.node, []).append(run)
    out: list[tuple[Run, Node]] = []
    for name, node_runs in per_node.items():
        node = nodes.get(name)
        if node is None or node.state not in (NodeState.READY, NodeState.BUSY):
            continue
        out.extend((run, node) for run in _pick_for_node(node_runs))
    return out


def _pick_for_node(runs: list[Run]) -> list[Run]:
    active = [r for r in runs if r.state in ACTIVE]
    if any(r.exclusive for r in active):
        return []
    busy_jobs = {r.job_id for r in active}
    picked: list[Run] = []
    for run in runs:
        if run.state is not RunState.QUEUED or run.cancel_requested:
            continue
        if run.job_id in busy_jobs:
            continue  # an earlier iteration of this job is still on the node
        if run.exclusive:
            if not active and not picked:
                picked.append(run)
            break  # it waits for an idle node, and nothing overtakes it
        picked.append(run)
        busy_jobs.add(run.job_id)
    return picked


# --- state changes ------------------------------------------------------------------


def check_transition(old: RunState, new: RunState) -> None:
    """Raise :class:`InvalidTransition` unless ``old → new`` is allowed."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"{old.value} → {new.value} is not allowed")


def apply_report(run: Run, report: RunReport) -> bool:
    """Take the agent's view of ``run``; True when anything changed.

    A repeat of the current state only fills in details (pid, start time).
    A report against a final run is a no-op when it is final too (a resend
    whose ack got lost), else :class:`InvalidTransition`.
    """
    if report.state in (RunState.QUEUED, RunState.DISPATCHED):
        raise InvalidTransition(f"an agent cannot report {report.state.value}")
    if run.state.final and report.state.final:
        return False
    if report.state is not run.state:
        check_transition(run.state, report.state)
    # Compared field by field as they are taken, not against a copy of the run:
    # copying it (dataclasses.replace) was a third of an update's cost.
    changed = report.state is not run.state
    run.state = report.state
    for name in _REPORTED:
        value = getattr(report, name)
        if value is None or value == "":  # not reported (tails and error: "" is unset)
            continue
        if value is not getattr(run, name) and value != getattr(run, name):
            setattr(run, name, value)
            changed = True
    return changed


#: The fields of a :class:`RunReport` that :func:`apply_report` takes when they are set.
_REPORTED = ("pid", "exit_code", "started_at", "ended_at", "stdout_tail", "stderr_tail", "error")


def set_state(run: Run, new: RunState, wall: float, error: str = "") -> None:
    """A manager-made change (dispatch, requeue, cancel, lost); checks the rules."""
    check_transition(run.state, new)
    run.state = new
    if new is RunState.DISPATCHED:
        run.dispatched_at = wall
    elif new is RunState.QUEUED:
        run.dispatched_at = None
    elif new.final and run.ended_at is None:
        run.ended_at = wall
    if error:
        run.error = error


def job_state(runs: Iterable[Run]) -> JobState:
    """``queued`` until a run leaves the queue, ``running`` until every run is
    final, then ``succeeded`` (all succeeded), ``cancelled`` (any cancelled) or
    ``failed``."""
    runs = list(runs)
    left_queue = waiting = False
    for run in runs:  # stops at the first active run: a big job's usual answer
        if not run.state.final:
            if run.state is not RunState.QUEUED:
                return JobState.RUNNING
            waiting = True
        else:
            left_queue = True
    if waiting or not runs:
        return JobState.RUNNING if left_queue else JobState.QUEUED
    states = {r.state for r in runs}
    if states == {RunState.SUCCEEDED}:
        return JobState.SUCCEEDED
    if RunState.CANCELLED in states:
        return JobState.CANCELLED
    return JobState.FAILED


def refresh_job(job: Job, runs: Iterable[Run], wall: float) -> bool:
    """Re-derive ``job.state`` from its runs; True when it changed."""
    new = job_state(runs)
    if new is job.state:
        return False
    job.state = new
    job.ended_at = wall if new.final else None
    return True


# --- reconciliation at registration ---------------------------------------------------


@dataclass
class Reconciliation:
    """What to do after node ``node`` registered with the runs it holds.

    ``reported``: known runs and the agent's report of each (apply them);
    ``requeue``: dispatched here but not reported (the dispatch was lost);
    ``lost``: running here but not reported (the agent lost them);
    ``unknown``: reports of runs this manager does not hold for this node.
    """

    reported: list[tuple[Run, RunReport]] = field(default_factory=list)
    requeue: list[Run] = field(default_factory=list)
    lost: list[Run] = field(default_factory=list)
    unknown: list[RunReport] = field(default_factory=list)


def reconcile(
    node: str, reported_runs: Iterable[RunReport], known_runs: Iterable[Run]
) -> Reconciliation:
    """Compare the runs an agent reports at registration with the manager's view.

    ``known_runs`` may hold runs of any node; only ``node``'s count. Runs the
    agent reports take the reported state; dispatched runs it does not
    report are queued again; running ones it does not report are lost.
    """
    mine = {r.id: r for r in known_runs if r.node == node}
    out = Reconciliation()
    seen: set[str] = set()
    for report in reported_runs:
        run = mine.get(report.run_id)
        if run is None:
            out.unknown.append(report)
        else:
            out.reported.append((run, report))
            seen.add(run.id)
    for run in mine.values():
        if run.id in seen:
            continue
        if run.state is RunState.DISPATCHED:
            out.requeue.append(run)
        elif run.state is RunState.RUNNING:
            out.lost.append(run)
    return out
