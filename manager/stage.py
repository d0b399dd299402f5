"""What one turn of the manager's loop changed and has not stored yet.

The :class:`~manager.bookkeeper.Bookkeeper` fills a :class:`Stage` while it handles
a turn's messages and empties it in one flush: one commit, then the acks that had
to wait for it, then the events in order.

Run changes are published batched: one ``runs`` event per job and turn (see
:class:`bus.messages.Event`) instead of one event per change. A job to 1,000
nodes going ``running`` was 1,000 events, each a PUB send here and a receive and
a decode in every subscriber; as a batch it is a handful. A batch takes
:data:`~bus.messages.MAX_RUNS_PER_EVENT` runs and about
:data:`MAX_TAIL_CHARS_PER_EVENT` characters of output tails at most, so no event
outgrows what a subscriber accepts (16 MiB).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from bus import codec, topics
from bus.messages import MAX_RUNS_PER_EVENT, RUNS_EVENT, Message
from bus.replies import RunReply
from manager.scheduler import Job, Run

#: Output tails per ``runs`` event: one final run's tails (up to 256 KiB a stream,
#: each character up to three bytes encoded) always fits, with room for others.
MAX_TAIL_CHARS_PER_EVENT = 1024 * 1024

#: An event ready to publish: ``(topic, frames)``.
Frames = tuple[bytes, list[bytes]]


@dataclass
class RunBatch:
    """One job's ``runs`` event of this turn, filled until it is published."""

    job_id: str
    runs: list[RunReply] = field(default_factory=list)
    ts: float = 0.0  # the manager's time of its latest change
    tail_chars: int = 0

    def takes(self, tail_chars: int) -> bool:
        return len(self.runs) < MAX_RUNS_PER_EVENT and (
            not self.runs or self.tail_chars + tail_chars <= MAX_TAIL_CHARS_PER_EVENT)

    def frames(self) -> Frames:
        return topics.job_events(self.job_id), codec.encode_event(
            RUNS_EVENT, self.ts, {"runs": cast(list[Any], self.runs)}, job_id=self.job_id)


@dataclass
class Stage:
    """What changed in this turn of the loop and is not stored yet: the runs and jobs
    to save, the events to publish then (in order), the messages that must wait for
    the store (acks of final states), and the nodes to dispatch on after them."""

    runs: dict[str, Run] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    events: list[Frames | RunBatch] = field(default_factory=list)
    after_store: list[tuple[bytes, Message]] = field(default_factory=list)
    dispatch_on: set[str] = field(default_factory=set)
    #: Each job's batch that still takes runs. A run change joins it even when other
    #: events were staged after it began: every run's changes stay in order, and a
    #: job event never comes before a change that led to it.
    _open: dict[str, RunBatch] = field(default_factory=dict, init=False, repr=False)

    @property
    def empty(self) -> bool:
        return not (self.runs or self.jobs or self.events or self.after_store
                    or self.dispatch_on)

    def add_run(self, run: Run, wall: float) -> None:
        """Stage ``run`` to store, and its state as of now to publish."""
        self.runs[run.id] = run
        entry = run.to_dict()
        tails = len(entry["stdout_tail"]) + len(entry["stderr_tail"])
        batch = self._open.get(run.job_id)
        if batch is None or not batch.takes(tails):
            batch = self._open[run.job_id] = RunBatch(run.job_id)
            self.events.append(batch)
        batch.runs.append(entry)
        batch.ts = wall
        batch.tail_chars += tails

    def published(self) -> Iterator[Frames]:
        """The events to publish, in order, each batch encoded now."""
        for event in self.events:
            yield event.frames() if isinstance(event, RunBatch) else event
