"""The codec's shortcuts give what its general path gives (bus/codec.py).

``encode_event`` writes an event without making an :class:`Event`; decoding takes a
field whose type its hint accepts as it is without calling the field's checker,
and looks enum members up by value; ``to_dict`` returns plain values after one
type lookup. Each is checked here against the general path's bytes or values, and
the general path's refusals still hold where a shortcut does not apply.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import msgpack
import pytest

from bus import codec
from bus.errors import SchemaError
from bus.messages import Event, NodeFacts, RunReport, RunState, RunUpdate

RUN_DETAIL: dict[str, Any] = {
    "id": "j1.n1.1", "job_id": "j1", "node": "n1", "iteration": 1, "state": "running",
    "pid": None, "exit_code": None, "dispatched_at": 1.5, "started_at": 2.0,
    "ended_at": None, "stdout_tail": "", "stderr_tail": "", "error": ""}


def test_encode_event_writes_the_fields_of_event_in_order() -> None:
    names = [f.name for f in dataclasses.fields(Event)]
    frames = codec.encode_event("run", 1.25, {}, node="n", job_id="j", run_id="r", state="s")
    assert list(codec.unpack(frames[1])) == names


@pytest.mark.parametrize("fields", [
    {"kind": "run", "ts": 1.7e9, "node": "n1", "job_id": "j1", "run_id": "j1.n1.1",
     "state": "running", "detail": RUN_DETAIL},
    {"kind": "node", "ts": 1.7e9, "node": "n1", "state": "busy",
     "detail": {"name": "n1", "running": ["j1.n1.1"], "facts": {"labels": ["gpu"]}}},
    {"kind": "job", "ts": 1.7e9, "job_id": "j1", "state": "succeeded",
     "detail": {"id": "j1", "runs": [RUN_DETAIL], "spec": {"command": ["true"]}}},
])
def test_encode_event_gives_the_bytes_of_encoding_an_event(fields: dict[str, Any]) -> None:
    kind, ts, detail = fields.pop("kind"), fields.pop("ts"), fields.pop("detail")
    assert codec.encode_event(kind, ts, detail, **fields) == codec.encode(
        Event(kind=kind, ts=ts, detail=detail, **fields))


def report_frames(**fields: Any) -> list[bytes]:
    body = {"run_id": "j1.n1.1", "job_id": "j1", "state": "running", **fields}
    frames = codec.encode(RunUpdate(run=RunReport(run_id="x", job_id="x",
                                                  state=RunState.RUNNING)))
    return [frames[0], msgpack.packb({"run": body}, use_bin_type=True)]


def test_a_whole_number_for_a_float_field_is_still_a_float() -> None:
    msg = codec.decode(report_frames(started_at=2, ended_at=None, pid=7))
    assert isinstance(msg, RunUpdate)
    assert msg.run.started_at == 2.0 and type(msg.run.started_at) is float
    assert msg.run.ended_at is None and msg.run.pid == 7


@pytest.mark.parametrize("fields, where", [
    ({"pid": True}, "run.update.run.pid"),        # a boolean is no integer
    ({"pid": 1.5}, "run.update.run.pid"),
    ({"started_at": "2"}, "run.update.run.started_at"),
    ({"state": "sleeping"}, "run.update.run.state"),
    ({"state": 3}, "run.update.run.state"),
    ({"state": ["running"]}, "run.update.run.state"),
    ({"run_id": None}, "run.update.run.run_id"),
])
def test_values_the_shortcuts_do_not_take_are_refused_as_before(
        fields: dict[str, Any], where: str) -> None:
    with pytest.raises(SchemaError, match=f"^{where}: "):
        codec.decode(report_frames(**fields))


def test_an_enum_value_decodes_to_its_member() -> None:
    for state in RunState:
        msg = codec.decode(report_frames(state=state.value))
        assert isinstance(msg, RunUpdate) and msg.run.state is state


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Record:
    name: str
    facts: NodeFacts
    states: list[RunState]
    colour: Colour
    raw: dict[str, Any]


def test_to_dict_converts_nested_records_lists_and_enums_only() -> None:
    facts = NodeFacts(hostname="h", address="a", cpus=2, memory_bytes=1, kernel="k",
                      labels=["x"])
    raw = {"kept": RunState.RUNNING}  # maps are not looked into
    out = codec.to_dict(Record("r", facts, [RunState.LOST], Colour.RED, raw))
    assert out == {"name": "r", "facts": {f.name: getattr(facts, f.name)
                                          for f in dataclasses.fields(NodeFacts)},
                   "states": ["lost"], "colour": 1, "raw": raw}
    assert type(out["states"][0]) is str and out["raw"] is raw
    assert codec.to_dict(Record) is Record  # a class is not a record
