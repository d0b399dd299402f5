"""Jobs → runs and dispatch order, as plain function calls."""

from __future__ import annotations

import pytest

from bus.messages import JobSpec, NodeFacts, NodeState, RunReport, RunState
from manager.book import Book
from manager.registry import Node
from manager.scheduler import (
    InvalidTransition,
    Job,
    JobState,
    Run,
    SpecError,
    apply_report,
    check_transition,
    expand,
    job_state,
    next_dispatches,
    reconcile,
    refresh_job,
    set_state,
)


def node(name: str, state: NodeState = NodeState.READY, labels: tuple[str, ...] = ()) -> Node:
    facts = NodeFacts(hostname=name, address="127.0.0.1", cpus=1, memory_bytes=1,
                      kernel="6", labels=list(labels))
    return Node(name=name, routing_id=name.encode(), facts=facts, state=state,
                last_seen=0.0, registered_at=0.0)


NODES = {n.name: n for n in (node("a", labels=("x",)), node("b", labels=("x", "y")),
                             node("c", NodeState.LOST, labels=("x",)))}


def spec(**kw: object) -> JobSpec:
    return JobSpec(command=["true"], **kw)  # type: ignore[arg-type]


def ids(pairs: list[tuple[Run, Node]]) -> list[tuple[str, str]]:
    return [(r.id, n.name) for r, n in pairs]


# --- expand ------------------------------------------------------------------------


def test_expand_all_skips_lost_nodes_and_orders_iterations() -> None:
    runs = expand("j", spec(repeat=2), NODES)
    assert [r.id for r in runs] == ["j.a.1", "j.b.1", "j.a.2", "j.b.2"]
    assert all(r.state is RunState.QUEUED and r.job_id == "j" for r in runs)


def test_expand_names_and_labels_without_duplicates() -> None:
    runs = expand("j", spec(targets=["b", "label:x", "c"]), NODES)
    assert [r.node for r in runs] == ["b", "a", "c"], "a named lost node is kept; labels skip lost"
    assert [r.node for r in expand("j", spec(targets=["label:y"]), NODES)] == ["b"]


@pytest.mark.parametrize("targets, text", [
    (["nope"], "unknown node 'nope'"),
    (["label:none"], "matches no live node"),
    ([], "no targets"),
])
def test_expand_refuses_bad_targets(targets: list[str], text: str) -> None:
    with pytest.raises(SpecError, match=text):
        expand("j", spec(targets=targets), NODES)


def test_expand_all_with_no_live_nodes_is_refused() -> None:
    with pytest.raises(SpecError):
        expand("j", spec(), {"c": NODES["c"]})


@pytest.mark.parametrize("bad", [
    JobSpec(command=[]), JobSpec(command=[""]), JobSpec(command=["x"], repeat=0),
    JobSpec(command=["x"], timeout=-1), JobSpec(command=["x"], interval=0),
])
def test_expand_refuses_bad_specs(bad: JobSpec) -> None:
    with pytest.raises(SpecError):
        expand("j", bad, NODES)


# --- dispatch ------------------------------------------------------------------------


def test_one_exclusive_run_per_node_fifo_across_jobs() -> None:
    runs = expand("j1", spec(targets=["a"], repeat=2), NODES) + expand("j2", spec(), NODES)
    assert ids(next_dispatches(runs, NODES)) == [("j1.a.1", "a"), ("j2.b.1", "b")]
    runs[0].state = RunState.DISPATCHED
    runs[3].state = RunState.RUNNING
    assert next_dispatches(runs, NODES) == [], "both nodes hold a run"
    runs[0].state = RunState.SUCCEEDED
    assert ids(next_dispatches(runs, NODES)) == [("j1.a.2", "a")], "iteration 2 before job 2"
    runs[1].state = RunState.FAILED
    assert ids(next_dispatches(runs, NODES)) == [("j2.a.1", "a")]


def test_lost_and_unknown_nodes_get_nothing() -> None:
    runs = expand("j", spec(targets=["c"]), NODES)
    assert next_dispatches(runs, NODES) == []
    assert next_dispatches(runs, {}) == []
    back = dict(NODES, c=node("c", NodeState.BUSY))
    assert ids(next_dispatches(runs, back)) == [("j.c.1", "c")]


def test_non_exclusive_runs_share_a_node_but_keep_iteration_order() -> None:
    shared = expand("s", spec(targets=["a"], repeat=2, exclusive=False), NODES)
    other = expand("t", spec(targets=["a"], exclusive=False), NODES)
    excl = expand("e", spec(targets=["a"]), NODES)
    late = expand("u", spec(targets=["a"], exclusive=False), NODES)
    runs = shared + other + excl + late
    assert ids(next_dispatches(runs, NODES)) == [("s.a.1", "a"), ("t.a.1", "a")], \
        "the exclusive run waits for an idle node, and nothing overtakes it"
    shared[0].state = other[0].state = RunState.RUNNING
    assert ids(next_dispatches(runs, NODES)) == []
    shared[0].state = other[0].state = RunState.SUCCEEDED
    assert ids(next_dispatches(runs, NODES)) == [("s.a.2", "a")]
    shared[1].state = RunState.SUCCEEDED
    assert ids(next_dispatches(runs, NODES)) == [("e.a.1", "a")]
    excl[0].state = RunState.RUNNING
    assert next_dispatches(runs, NODES) == [], "nothing beside an exclusive run"


def test_cancel_requested_runs_are_not_dispatched() -> None:
    runs = expand("j", spec(targets=["a"]), NODES)
    runs[0].cancel_requested = True
    assert next_dispatches(runs, NODES) == []


# --- transitions -----------------------------------------------------------------------


def test_transitions() -> None:
    check_transition(RunState.QUEUED, RunState.DISPATCHED)
    check_transition(RunState.DISPATCHED, RunState.RUNNING)
    check_transition(RunState.DISPATCHED, RunState.QUEUED)
    check_transition(RunState.RUNNING, RunState.SUCCEEDED)
    for final in (s for s in RunState if s.final):
        for new in RunState:
            with pytest.raises(InvalidTransition):
                check_transition(final, new)
    with pytest.raises(InvalidTransition):
        check_transition(RunState.RUNNING, RunState.QUEUED)


def test_set_state_stamps_times() -> None:
    run = Run(id="j.a.1", job_id="j", node="a", iteration=1)
    set_state(run, RunState.DISPATCHED, 10.0)
    assert run.dispatched_at == 10.0
    set_state(run, RunState.QUEUED, 11.0)
    assert run.dispatched_at is None
    set_state(run, RunState.CANCELLED, 12.0, "stop")
    assert run.ended_at == 12.0 and run.error == "stop"
    with pytest.raises(InvalidTransition):
        set_state(run, RunState.QUEUED, 13.0)


def report(state: RunState, **kw: object) -> RunReport:
    return RunReport(run_id="j.a.1", job_id="j", state=state, **kw)  # type: ignore[arg-type]


def test_apply_report() -> None:
    run = Run(id="j.a.1", job_id="j", node="a", iteration=1, state=RunState.DISPATCHED)
    assert apply_report(run, report(RunState.RUNNING, pid=42, started_at=1.0))
    assert (run.state, run.pid, run.started_at) == (RunState.RUNNING, 42, 1.0)
    assert not apply_report(run, report(RunState.RUNNING, pid=42)), "a repeat changes nothing"
    assert apply_report(run, report(RunState.FAILED, exit_code=3, ended_at=2.0,
                                    stderr_tail="boom"))
    assert (run.exit_code, run.ended_at, run.stderr_tail, run.pid) == (3, 2.0, "boom", 42)
    assert not apply_report(run, report(RunState.FAILED)), "a resent final is a no-op"
    with pytest.raises(InvalidTransition):
        apply_report(run, report(RunState.RUNNING))
    with pytest.raises(InvalidTransition):
        apply_report(Run(id="x", job_id="j", node="a", iteration=1), report(RunState.DISPATCHED))


# --- job state ----------------------------------------------------------------------------


def runs_in(*states: RunState) -> list[Run]:
    return [Run(id=f"j.a.{i}", job_id="j", node="a", iteration=i, state=s)
            for i, s in enumerate(states, 1)]


@pytest.mark.parametrize("states, expected", [
    ((RunState.QUEUED, RunState.QUEUED), JobState.QUEUED),
    ((RunState.DISPATCHED, RunState.QUEUED), JobState.RUNNING),
    ((RunState.SUCCEEDED, RunState.QUEUED), JobState.RUNNING),
    ((RunState.SUCCEEDED, RunState.SUCCEEDED), JobState.SUCCEEDED),
    ((RunState.SUCCEEDED, RunState.CANCELLED, RunState.FAILED), JobState.CANCELLED),
    ((RunState.SUCCEEDED, RunState.LOST), JobState.FAILED),
    ((RunState.TIMEOUT,), JobState.FAILED),
])
def test_job_state(states: tuple[RunState, ...], expected: JobState) -> None:
    assert job_state(runs_in(*states)) is expected


def test_refresh_job_sets_ended_at_once_final() -> None:
    job = Job(id="j", spec=spec(), created_at=1.0)
    runs = runs_in(RunState.RUNNING)
    assert refresh_job(job, runs, 5.0) and job.state is JobState.RUNNING and job.ended_at is None
    assert not refresh_job(job, runs, 6.0)
    runs[0].state = RunState.SUCCEEDED
    assert refresh_job(job, runs, 7.0) and job.ended_at == 7.0


# --- reconcile ----------------------------------------------------------------------------


def test_reconcile() -> None:
    reported = Run(id="j.a.1", job_id="j", node="a", iteration=1, state=RunState.DISPATCHED)
    requeue = Run(id="k.a.1", job_id="k", node="a", iteration=1, state=RunState.DISPATCHED)
    lost = Run(id="l.a.1", job_id="l", node="a", iteration=1, state=RunState.RUNNING)
    queued = Run(id="m.a.1", job_id="m", node="a", iteration=1)
    elsewhere = Run(id="n.b.1", job_id="n", node="b", iteration=1, state=RunState.RUNNING)
    done = Run(id="o.a.1", job_id="o", node="a", iteration=1, state=RunState.SUCCEEDED)
    rep = report(RunState.RUNNING, pid=7)
    stranger = RunReport(run_id="n.b.1", job_id="n", state=RunState.SUCCEEDED)
    plan = reconcile("a", [rep, stranger], [reported, requeue, lost, queued, elsewhere, done])
    assert plan.reported == [(reported, rep)]
    assert plan.requeue == [requeue]
    assert plan.lost == [lost]
    assert plan.unknown == [stranger], "a run of another node is not this node's to report"


# --- book ----------------------------------------------------------------------------------


def test_book() -> None:
    book = Book()
    job = Job(id="j", spec=spec(), created_at=0.0)
    runs = expand("j", spec(), NODES)
    book.add(job, runs)
    runs[0].state = RunState.RUNNING
    assert book.active_on("a") == ["j.a.1"] and book.active_on("b") == []
    assert [r.id for r in book.on_node("b")] == ["j.b.1"]
    assert book.runs_of("j") == runs
    book.drop("j")
    assert not book.jobs and not book.runs and book.runs_of("j") == []


def test_job_dict_shape() -> None:
    job = Job(id="j", spec=spec(name="n", tags={"build": "1"}), created_at=1.0)
    run = Run(id="j.a.1", job_id="j", node="a", iteration=1, stdout_tail="out")
    d = job.to_dict([run])
    assert d["name"] == "n" and "name" not in d["spec"] and d["spec"]["tags"] == {"build": "1"}
    assert d["runs"][0]["state"] == "queued" and d["runs"][0]["stdout_tail"] == "out"
    assert set(d["runs"][0]) == {"id", "job_id", "node", "iteration", "state", "pid",
                                 "exit_code", "dispatched_at", "started_at", "ended_at",
                                 "stdout_tail", "stderr_tail", "error"}
    assert "stdout_tail" not in job.to_dict([run], tails=False)["runs"][0]


def test_job_state_is_the_rule_for_every_mix_of_up_to_three_runs() -> None:
    """job_state stops at the first active run; every mix still gets the rule of
    its docstring, written out here the long way."""
    def rule(states: list[RunState]) -> JobState:
        if states and all(s.final for s in states):
            if all(s is RunState.SUCCEEDED for s in states):
                return JobState.SUCCEEDED
            return JobState.CANCELLED if RunState.CANCELLED in states else JobState.FAILED
        return JobState.RUNNING if any(s is not RunState.QUEUED for s in states) \
            else JobState.QUEUED

    mixes = [[]] + [[a] for a in RunState] + [[a, b] for a in RunState for b in RunState] \
        + [[a, b, c] for a in RunState for b in RunState for c in RunState]
    for states in mixes:
        runs = [Run(id=f"j.n.{i}", job_id="j", node="n", iteration=i, state=s)
                for i, s in enumerate(states, 1)]
        assert job_state(runs) is rule(states), states
