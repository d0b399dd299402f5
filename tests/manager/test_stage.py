"""A turn's run changes as ``runs`` events (manager/stage.py): one per job and turn,
bounded in runs and in output, every run's changes in order, and no job event
before the run changes that led to it."""

from __future__ import annotations

from typing import Any

from bus import codec
from bus.messages import MAX_RUNS_PER_EVENT, Event, RunState
from manager.scheduler import Run
from manager.stage import MAX_TAIL_CHARS_PER_EVENT, Stage


def run(job: str, i: int, state: RunState = RunState.RUNNING, tail: str = "") -> Run:
    return Run(id=f"{job}.n{i}.1", job_id=job, node=f"n{i}", iteration=1, state=state,
               stdout_tail=tail)


def published(stage: Stage) -> list[tuple[bytes, Event]]:
    out = []
    for topic, frames in stage.published():
        msg = codec.decode(frames)
        assert isinstance(msg, Event)
        out.append((topic, msg))
    return out


def test_a_jobs_changes_in_one_turn_are_one_event_per_job() -> None:
    stage = Stage()
    for i in range(3):
        stage.add_run(run("a", i), wall=10.0 + i)
        stage.add_run(run("b", i), wall=20.0 + i)
    events = published(stage)
    assert [(t, e.kind, e.job_id) for t, e in events] == [
        (b"evt.job.a", "runs", "a"), (b"evt.job.b", "runs", "b")]
    assert [r["id"] for r in events[0][1].runs()] == ["a.n0.1", "a.n1.1", "a.n2.1"]
    assert events[0][1].ts == 12.0, "stamped with the time of its latest change"
    assert set(stage.runs) == {f"{j}.n{i}.1" for j in "ab" for i in range(3)}


def test_a_run_that_changes_twice_in_a_turn_is_there_twice_in_order() -> None:
    stage = Stage()
    r = run("a", 0)
    stage.add_run(r, 1.0)
    r.state = RunState.SUCCEEDED
    stage.add_run(r, 2.0)
    [(_, event)] = published(stage)
    assert [c["state"] for c in event.runs()] == ["running", "succeeded"]
    assert list(stage.runs.values()) == [r]


def test_a_batch_takes_at_most_its_share_of_runs_and_the_rest_follow_in_order() -> None:
    stage = Stage()
    total = 2 * MAX_RUNS_PER_EVENT + 3
    for i in range(total):
        stage.add_run(run("a", i), 1.0)
    events = [e for _, e in published(stage)]
    assert [len(e.runs()) for e in events] == [MAX_RUNS_PER_EVENT, MAX_RUNS_PER_EVENT, 3]
    assert [c["node"] for e in events for c in e.runs()] == [f"n{i}" for i in range(total)]


def test_output_tails_start_a_new_batch_before_it_grows_past_its_bound() -> None:
    stage = Stage()
    tail = "x" * 300_000  # an agent sends 256 KiB of each stream at most
    for i in range(4):
        stage.add_run(run("a", i, RunState.SUCCEEDED, tail=tail), 1.0)
    both = run("a", 4, RunState.SUCCEEDED, tail="y" * 600_000)
    both.stderr_tail = "z" * 600_000  # over the bound alone: an event of its own, never dropped
    stage.add_run(both, 1.0)
    stage.add_run(run("a", 5), 1.0)
    events = [e for _, e in published(stage)]
    assert 3 * len(tail) <= MAX_TAIL_CHARS_PER_EVENT < 4 * len(tail)
    assert [[c["node"] for c in e.runs()] for e in events] == [
        ["n0", "n1", "n2"], ["n3"], ["n4"], ["n5"]]
    assert events[2].runs()[0]["stderr_tail"] == both.stderr_tail


def test_a_job_event_staged_between_changes_comes_after_every_change_before_it() -> None:
    stage = Stage()
    job_event: tuple[bytes, list[bytes]] = (b"evt.job.a", codec.encode_event(
        "job", 1.0, {}, job_id="a", state="running"))
    stage.add_run(run("a", 0), 1.0)
    stage.events.append(job_event)
    stage.add_run(run("a", 1), 2.0)  # joins the batch that is still open
    kinds: list[Any] = [(e.kind, [c["node"] for c in e.runs()]) for _, e in published(stage)]
    assert kinds == [("runs", ["n0", "n1"]), ("job", [])]


def test_other_kinds_of_event_carry_no_runs() -> None:
    assert Event(kind="job", ts=0.0, detail={"runs": [{"id": "x"}]}).runs() == []
    assert Event(kind="runs", ts=0.0, detail={"runs": "nonsense"}).runs() == []
    assert Event(kind="runs", ts=0.0, detail={"runs": [{"id": "x"}, 3]}).runs() == [{"id": "x"}]
