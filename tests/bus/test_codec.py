"""The codec is the security boundary: round trips, and every kind of bad frame."""

from __future__ import annotations

import dataclasses
import math
import os
import random

import msgpack
import pytest

from bus import codec
from bus import messages as m
from bus.errors import (
    MalformedFrame,
    MessageTooLarge,
    ProtocolError,
    SchemaError,
    UnknownMessageType,
)

FACTS = m.NodeFacts(hostname="h1", address="127.0.0.1", cpus=2, memory_bytes=1 << 30,
                    kernel="6.1", perf_paranoid=2, labels=["db", "x86"])

SAMPLES: list[m.Message] = [
    m.Register(protocol=m.PROTOCOL_VERSION, node="n1", facts=FACTS, runs=[
        m.RunReport(run_id="j.n1.1", job_id="j", state=m.RunState.RUNNING, pid=42,
                    started_at=1.5)]),
    m.Welcome(node="n1", heartbeat_interval=1.0, liveness=3, last_seq=7),
    m.Heartbeat(running=1),
    m.RunDispatch(run_id="j.n1.1", job_id="j", iteration=1, command=["sh", "-c", "exit 3"],
                  env={"A": "b"}, timeout=2.5),
    m.RunCancel(run_id="j.n1.1", reason="user"),
    m.RunUpdate(run=m.RunReport(run_id="j.n1.1", job_id="j", state=m.RunState.FAILED,
                                exit_code=3, stdout_tail="hi\n")),
    m.RunAck(run_id="j.n1.1"),
    m.MetricBatch(node="n1", seq=3, series=[["cpu", {"node": "n1"}, ["user"], [[1, 2.5]]]]),
    m.MetricAck(seqs=[1, 2, 3]),
    m.NodesList(req_id="r1"),
    m.NodesList(req_id="r1", states=["ready", "lost"], labels=["gpu", "rack=a1"]),
    m.NodeForget(req_id="r11", node="n1"),
    m.JobSubmit(req_id="r2", spec=m.JobSpec(command=["true"], tags={"build": "1.2.3"})),
    m.JobsList(req_id="r3", limit=5),
    m.JobGet(req_id="r4", job_id="j"),
    m.JobCancel(req_id="r5", job_id="j"),
    m.Keys(req_id="r6", action="list"),
    m.ReportGet(req_id="r8", job_id="j", format="html"),
    m.CompareGet(req_id="r9", base="a", cand="b", threshold=0.1),
    m.HistoryGet(req_id="r12", series="nightly", metrics=["run.cpu_seconds"], since=1.5, last=10),
    m.StatusGet(req_id="r10"),
    m.Reply(req_id="r7", result={"nodes": []}),
    m.Error(req_id="", code="malformed", message="bad"),
    m.Event(kind="node", ts=1.0, node="n1", state="ready"),
]


def test_every_type_has_a_sample() -> None:
    assert {type(s).TYPE for s in SAMPLES} == set(m.MsgType)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).TYPE.value)
def test_round_trip(msg: m.Message) -> None:
    frames = codec.encode(msg)
    assert frames[0] == type(msg).TYPE.value.encode()
    assert codec.decode(frames) == msg


def test_enum_fields_come_back_as_enums() -> None:
    msg = codec.decode(codec.encode(SAMPLES[5]))
    assert isinstance(msg, m.RunUpdate)
    assert msg.run.state is m.RunState.FAILED


def test_unknown_fields_are_ignored_for_compatibility() -> None:
    body = msgpack.packb({"run_id": "r", "reason": "x", "added_in_v2": [1, 2]})
    assert codec.decode([b"run.cancel", body]) == m.RunCancel(run_id="r", reason="x")


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"heartbeat"], MalformedFrame),                           # one frame
        ([b"heartbeat", b"", b""], MalformedFrame),                 # three frames
        ([b"no.such.type", msgpack.packb({})], UnknownMessageType),
        ([b"\xff\xfe", msgpack.packb({})], UnknownMessageType),     # not ASCII
        ([b"heartbeat", b"\xc1"], MalformedFrame),                  # reserved byte
        ([b"heartbeat", msgpack.packb({"running": 1})[:-1]], MalformedFrame),  # truncated
        ([b"heartbeat", msgpack.packb({}) + b"\x00"], MalformedFrame),  # trailing bytes
        ([b"heartbeat", msgpack.packb([1, 2])], MalformedFrame),    # not a map
        ([b"heartbeat", msgpack.packb({1: 2})], MalformedFrame),    # int map key
        ([b"run.cancel", msgpack.packb({})], SchemaError),          # missing field
        ([b"run.cancel", msgpack.packb({"run_id": 5})], SchemaError),
        ([b"heartbeat", msgpack.packb({"running": True})], SchemaError),  # bool is not int
        ([b"run.update", msgpack.packb({"run": {"run_id": "r", "job_id": "j",
                                                 "state": "exploded"}})], SchemaError),
        ([b"job.submit", msgpack.packb({"req_id": "r", "spec": {"command": "ls"}})],
         SchemaError),                                              # argv must be a list
        ([b"job.submit", msgpack.packb({"req_id": "r", "spec": {"command": ["ls"],
                                                                 "env": {"A": 1}}})],
         SchemaError),
    ],
)
def test_bad_frames_raise_protocol_errors(frames: list[bytes], error: type) -> None:
    with pytest.raises(error):
        codec.decode(frames)


def test_oversized_message_is_refused_before_unpacking() -> None:
    limits = codec.Limits(max_message_bytes=1024)
    body = msgpack.packb({"run_id": "x" * 2000})
    with pytest.raises(MessageTooLarge):
        codec.decode([b"run.cancel", body], limits)


def test_length_limits_bound_what_a_peer_can_allocate() -> None:
    limits = codec.Limits(max_str_len=16, max_array_len=4)
    with pytest.raises(MalformedFrame):
        codec.decode([b"run.cancel", msgpack.packb({"run_id": "y" * 17})], limits)
    with pytest.raises(MalformedFrame):
        codec.decode([b"metrics.ack", msgpack.packb({"seqs": [1, 2, 3, 4, 5]})], limits)


def test_random_bytes_never_escape_as_anything_but_protocol_errors() -> None:
    rng = random.Random(1234)
    types = [t.value.encode() for t in m.MsgType]
    for _ in range(5000):
        body = os.urandom(rng.randint(0, 64)) if rng.random() < 0.5 else msgpack.packb(
            {rng.choice(["run_id", "req_id", "node", "x"]): rng.choice([1, "a", None, [1], {}])})
        try:
            codec.decode([rng.choice(types), body])
        except ProtocolError:
            pass


def test_peek_str_reads_one_field_and_catches_a_second_copy() -> None:
    rows = [["cpu", {"cpu": str(i)}, ["user"], [[1, 0.5]] * 50] for i in range(100)]
    frames = codec.encode(m.MetricBatch(node="node1", seq=7, series=rows))
    assert len(frames[1]) > codec.PEEK_BYTES
    assert codec.peek_str(frames, "node") == "node1"
    # msgpack keeps the last of two equal keys; so must the check, or refuse.
    body = msgpack.packb({"node": "node1", "series": [], "seq": 1})
    twice = bytes([body[0] + 1]) + body[1:] + msgpack.packb("node") + msgpack.packb("node2")
    assert codec.decode([b"metrics.batch", twice]).node == "node2"  # type: ignore[attr-defined]
    assert codec.peek_str([b"metrics.batch", twice], "node") is None
    # The rows come first and are long: read past the first bytes, still found.
    late = msgpack.packb({"series": rows, "seq": 1, "node": "node1"})
    assert codec.peek_str([b"metrics.batch", late], "node") == "node1"
    for body in (b"", b"\x90", b"\x81\xa4node", msgpack.packb({"node": 5}),
                 msgpack.packb({"seq": 1}), b"\xc1" * 8):
        assert codec.peek_str([b"metrics.batch", body], "node") is None
    assert codec.peek_str([frames[1]], "node") is None


@pytest.mark.parametrize("timeout, interval, ok", [
    (0.0, 1.0, True), (3600.0, 0.1, True), (m.MAX_TIMEOUT, m.MAX_INTERVAL, True),
    (math.nan, 1.0, False), (math.inf, 1.0, False), (-1.0, 1.0, False), (1e308, 1.0, False),
    (0.0, math.nan, False), (0.0, 0.0, False), (0.0, -1.0, False), (0.0, math.inf, False),
])
def test_run_settings_refuse_what_would_break_a_timer(timeout: float, interval: float,
                                                      ok: bool) -> None:
    assert (m.run_settings_problem(timeout, interval) == "") is ok


def test_dispatch_and_welcome_numbers_are_bounded() -> None:
    good = m.RunDispatch(run_id="r", job_id="j", iteration=1, command=["true"])
    assert m.dispatch_problem(good) == ""
    for iteration in (0, -1, 2**64 - 1):
        assert "iteration" in m.dispatch_problem(dataclasses.replace(good, iteration=iteration))
    welcome = m.Welcome(node="n", heartbeat_interval=1.0, liveness=3)
    assert m.welcome_problem(welcome) == ""
    for interval in (math.inf, math.nan, 5e-324, 1e-9, 1e300):
        assert "heartbeat interval" in m.welcome_problem(
            dataclasses.replace(welcome, heartbeat_interval=interval))
    assert "liveness" in m.welcome_problem(dataclasses.replace(welcome, liveness=2**64))
