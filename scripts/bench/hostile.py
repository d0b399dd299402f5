"""Hostile input against every receiving socket of a real cluster: crashes, hangs, peak RSS.

    .venv/bin/python -m scripts.bench.hostile [--count N] [--sockets router,pull,agent,dashboard]
        [--repeat R] [--seed S] [--time-limit S]

It starts its own cluster on 127.0.0.1 (a private ``influxd``; a CURVE manager
with ``auto_accept``, heartbeat every :data:`INTERVAL` s, liveness 3; one real
agent ``node1``; the dashboard with the admin key) and floods, one socket after
another, ``--count`` messages per socket (10,000 by default) spread over the
:data:`KINDS` of bad input, each kind in a flood of its own:

* ``router`` — the manager's ROUTER, from strangers (a fresh CURVE key each,
  never registered) and from ``hostile-r``, an agent key the manager accepted,
  message by message in turn;
* ``pull`` — the manager's PULL, from a PUSH holding ``hostile-p``'s accepted
  key (ZAP lets no other key onto PULL);
* ``agent`` — a real agent's DEALER (``rogue-node``, ``python -m agent.main``):
  it connects to a rogue ROUTER bound with the manager's own server key pair,
  so its CURVE handshake succeeds, registers, and is then sent the bad input
  as if from its manager (the rogue answers registrations and heartbeats);
* ``dashboard`` — the Bokeh websocket of the dashboard's overview document
  (``/bk/overview/ws``, with a session token from its ``autoload.js``).

Then the floods the issue names: a first metric batch of 0.1, 1, 6 and 15 MB on
a fresh PUSH connection (``--repeat`` times each); ``agent.register`` bodies of
15 MB from keys that are never accepted; 15 MB batches whose msgpack headers
claim 2**32 entries; the amplification flood (batches of ~1 MB whose one 1 MB
tag value repeats on 60 rows of line protocol); and, for the agent, rogue
``run.dispatch`` messages with bad fields (none may start a process) and
``agent.welcome`` messages with absurd numbers, one at a time.

A flood ends when its receiver proves it has handled every message: each
connection used gets a last message whose answer comes only after those
before it (``nodes.list`` on the ROUTER, a good batch's ``metrics.ack`` for
PULL, a good ``run.dispatch`` for the agent, the document over a new websocket
for the dashboard). Measured per flood, from its first message until the
checks after it pass: deaths (any of the cluster's processes exiting), hangs
(no such proof within :data:`SETTLE` s, or, after it, the manager not
answering ``nodes.list``, ``node1`` not ``ready`` in it, the dashboard not
answering ``/api/status`` or the rogue's agent not heartbeating, within
:data:`ANSWER_DEADLINE` s), the slowest ``nodes.list`` of an admin client
(one request every 50 ms all along, each timed), ``node1``'s state in each
reply, each process's peak RSS (``VmHWM``, reset through
``/proc/PID/clear_refs`` as the flood starts), and the WARNING and worse
lines each process logged, per kind of trouble (the ``[kind: N in total]``
marker of the rate-limited log, else the message's first words) and per
second. A process that died is started again before the next flood.

The table has a row per flood; what missed a target (:class:`Targets`) is
listed under it with the numbers and the log lines behind it. The exit status
is 1 if any process died or hung, else 0. ``tests/hostile/`` runs the same
floods at a small count and asserts every target.

Every input is generated from ``--seed``, every flood is bounded in count and
time, and only processes this script started are stopped, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import signal
import string
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import zmq  # noqa: E402
from tornado.httpclient import HTTPRequest  # noqa: E402
from tornado.iostream import StreamClosedError  # noqa: E402
from tornado.websocket import (  # noqa: E402
    WebSocketClientConnection,
    WebSocketClosedError,
    websocket_connect,
)

from bus import codec  # noqa: E402
from bus.client import REPLY_LIMITS  # noqa: E402
from bus.errors import ProtocolError  # noqa: E402
from bus.messages import (  # noqa: E402
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    MetricAck,
    MetricBatch,
    NodeFacts,
    NodesList,
    Register,
    Reply,
    RunAck,
    RunDispatch,
    RunUpdate,
    Welcome,
)
from bus.security import client_keys, load_keypair, load_public, public_path  # noqa: E402
from bus.sockets import CurveKeys  # noqa: E402
from scripts.influxdb_local import InfluxServer, create_database  # noqa: E402
from tests.dashboard.conftest import DashboardProc  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    START_TIMEOUT,
    Cluster,
    Daemon,
    ManagerProc,
    wait_for,
)

T = TypeVar("T")
ROUTER, PULL, AGENT, DASHBOARD = "router", "pull", "agent", "dashboard"
SOCKETS = (ROUTER, PULL, AGENT, DASHBOARD)
#: Which process owns each socket (its RSS and its log are the flood's own).
OWNER = {ROUTER: "manager", PULL: "manager", AGENT: "rogue-node", DASHBOARD: "dashboard"}

#: The manager's heartbeat interval here (liveness 3: a node silent for 1.5 s is lost).
INTERVAL = 0.5
#: The heartbeat the rogue ROUTER asks of its agent.
ROGUE_BEAT = 0.2
#: After a flood, each process must answer within this many seconds (else: a hang).
ANSWER_DEADLINE = 5.0
#: How long, at most, to wait for a hung process before the next flood starts.
RECOVERY = 60.0
#: Longest wait, after a flood's last message, for the proof that it was all handled.
SETTLE = 60.0
#: New connections a flood keeps open before it settles the older half of them.
MAX_PENDING = 64
MIB = 1024 * 1024
#: The manager's largest frame by default ([spool] max_message_bytes; its ROUTER and PULL
#: may take less) and the dashboard's largest websocket message (Bokeh's default).
MAX_FRAME = 16 * MIB
MAX_WS_FRAME = 20 * MIB

NODE = "node1"  # the real agent on the real manager
NODE_R = "hostile-r"  # an accepted agent key that sends junk on the ROUTER
NODE_P = "hostile-p"  # an accepted agent key whose PUSH sends junk to PULL
ROGUE_NODE = "rogue-node"  # the real agent connected to the rogue ROUTER
#: A dispatched command that ran would leave a file named like this in the agent's workdir.
MARK = "hostile-ran"
JOB_ID = "0123456789ab"
RUN_ID = f"{JOB_ID}.{NODE_R}.1"
FACTS = NodeFacts(hostname="hostile", address="127.0.0.1", cpus=1, memory_bytes=1 << 30,
                  kernel="6.1", agent_version="0.1.0")
#: Batch sequences above anything an agent numbered before (µs since the epoch, like agents).
SEQ = itertools.count(time.time_ns() // 1000)


@dataclass(frozen=True, slots=True)
class Targets:
    """What every flood must show (the issue's targets)."""

    admin_reply_s: float = 0.5  # slowest nodes.list during a flood of the manager
    manager_rss_mb: float = 400.0  # the manager's peak RSS during any flood
    log_lines_per_s: int = 1  # manager log lines of one kind of trouble in one second


TARGETS = Targets()


# --- building blocks of the inputs ---------------------------------------------------------------

#: Stands for the value (or key) a generator breaks; replaced in the packed bytes.
SPOT = "\x00hostile-spot\x00"
_SPOT_PACKED = msgpack.packb(SPOT)
_SPOT_JSON = json.dumps(SPOT)


class RawText(bytes):
    """A websocket *text* frame carrying these bytes as they are (possibly bad UTF-8)."""


#: One message for a socket: ZeroMQ frames, or websocket fragments (str: text,
#: bytes: binary, RawText: text as raw bytes).
Frames = list[Any]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def plant(obj: Any, raw: bytes) -> bytes:
    """msgpack of ``obj``, whose one :data:`SPOT` (a value or a key) becomes ``raw``."""
    packed = pack(obj)
    assert packed.count(_SPOT_PACKED) == 1, "a shape holds exactly one spot"
    return packed.replace(_SPOT_PACKED, raw)


def plant_json(fragments: list[str], raw: str | bytes) -> Frames:
    """Websocket fragments whose one JSON :data:`SPOT` becomes ``raw`` (bytes: bad text)."""
    out: Frames = []
    for text in fragments:
        if _SPOT_JSON not in text:
            out.append(text)
        elif isinstance(raw, bytes):
            out.append(RawText(text.encode().replace(_SPOT_JSON.encode(), raw)))
        else:
            out.append(text.replace(_SPOT_JSON, raw))
    return out


def facts(**changes: Any) -> dict[str, Any]:
    return {**codec.to_dict(FACTS), **changes}


def batch_body(node: str = NODE_P, tags: dict[Any, Any] | None = None,
               row: list[Any] | None = None, measurement: Any = "hostile",
               fields: list[Any] | None = None) -> dict[str, Any]:
    """A metric batch's map (node first, as agents encode it), one series, one row."""
    now = time.time_ns()
    series = [measurement, {"node": node, **(tags or {})}, fields or ["a", "b"],
              [row or [now, 1.5, 2]]]
    return {"node": node, "seq": next(SEQ), "series": [series]}


def bokeh_header(msgtype: Any = "PULL-DOC-REQ", **extra: Any) -> str:
    return json.dumps({"msgid": f"h{next(SEQ) % 100000}", "msgtype": msgtype, **extra})


def model_changed(new: Any) -> str:
    """A PATCH-DOC content that sets an attribute of a model the client names."""
    return json.dumps({"events": [{"kind": "ModelChanged", "model": {"id": "p1001"},
                                   "attr": "start", "new": new}]})


# Where a generator may put its bad value, per socket: (role, message type, body with SPOT).
# Roles let a kind prefer a fitting place (timestamps go where times go).
Shape = tuple[str, str, Callable[[], Any]]

ROUTER_SHAPES: list[Shape] = [
    ("number", "heartbeat", lambda: {"running": SPOT}),
    ("text", "nodes.list", lambda: {"req_id": SPOT}),
    ("text", "job.get", lambda: {"req_id": "hostile", "job_id": SPOT}),
    ("number", "jobs.list", lambda: {"req_id": "hostile", "limit": SPOT}),
    # protocol 99: even a register that decodes is refused before its key is filed
    ("text", "agent.register", lambda: {"protocol": 99, "node": SPOT, "facts": facts()}),
    ("text", "agent.register", lambda: {"protocol": 99, "node": "hostile-x",
                                        "facts": facts(kernel=SPOT)}),
    ("number", "agent.register", lambda: {"protocol": 99, "node": "hostile-x",
                                          "facts": facts(cpus=SPOT)}),
    ("time", "run.update", lambda: {"run": {"run_id": RUN_ID, "job_id": JOB_ID,
                                            "state": "running", "pid": 1, "started_at": SPOT}}),
    ("time", "run.update", lambda: {"run": {"run_id": RUN_ID, "job_id": JOB_ID, "state": "failed",
                                            "exit_code": 1, "ended_at": SPOT}}),
    ("text", "run.update", lambda: {"run": {"run_id": RUN_ID, "job_id": JOB_ID,
                                            "state": "running", "stdout_tail": SPOT}}),
    ("any", "keys", lambda: {"req_id": "hostile", "action": "list", SPOT: 1}),
]

PULL_SHAPES: list[Shape] = [
    ("text", "metrics.batch", lambda: batch_body(tags={"k": SPOT})),
    ("text", "metrics.batch", lambda: batch_body(tags={SPOT: "v"})),
    ("text", "metrics.batch", lambda: batch_body(measurement=SPOT)),
    ("text", "metrics.batch", lambda: batch_body(fields=["a", SPOT])),
    ("number", "metrics.batch", lambda: batch_body(row=[time.time_ns(), SPOT, 2])),
    ("time", "metrics.batch", lambda: batch_body(row=[SPOT, 1.5, 2])),
    ("time", "metrics.batch", lambda: {"node": NODE_P, "seq": SPOT, "series": []}),
    ("text", "metrics.batch", lambda: {"node": SPOT, "seq": next(SEQ), "series": []}),
    ("any", "metrics.batch", lambda: {"node": NODE_P, "seq": next(SEQ), "series": SPOT}),
]

#: A command that is never valid (a string, not an argv): no generated dispatch may run.
BAD_COMMAND = f"touch {MARK}"

AGENT_SHAPES: list[Shape] = [
    ("number", "agent.welcome", lambda: {"node": ROGUE_NODE, "heartbeat_interval": SPOT,
                                         "liveness": 3}),
    ("number", "agent.welcome", lambda: {"node": ROGUE_NODE, "heartbeat_interval": ROGUE_BEAT,
                                         "liveness": SPOT}),
    ("time", "agent.welcome", lambda: {"node": ROGUE_NODE, "heartbeat_interval": ROGUE_BEAT,
                                       "liveness": 3, "last_seq": SPOT}),
    ("text", "agent.welcome", lambda: {"node": SPOT, "heartbeat_interval": ROGUE_BEAT,
                                       "liveness": 3}),
    ("text", "run.dispatch", lambda: {"run_id": SPOT, "job_id": "hostile", "iteration": 1,
                                      "command": BAD_COMMAND}),
    ("number", "run.dispatch", lambda: {"run_id": "hostile.rogue-node.1", "job_id": "hostile",
                                        "iteration": SPOT, "command": BAD_COMMAND}),
    ("text", "run.cancel", lambda: {"run_id": SPOT}),
    ("text", "run.ack", lambda: {"run_id": SPOT}),
    ("time", "metrics.ack", lambda: {"seqs": [1, SPOT]}),
    ("text", "error", lambda: {"req_id": "", "code": "hostile", "message": SPOT}),
    ("number", "heartbeat", lambda: {"running": SPOT}),
]

SHAPES = {ROUTER: ROUTER_SHAPES, PULL: PULL_SHAPES, AGENT: AGENT_SHAPES}

WS_SHAPES: list[tuple[str, Callable[[], list[str]]]] = [
    ("text", lambda: [json.dumps({"msgid": SPOT, "msgtype": "PULL-DOC-REQ"}), "{}", "{}"]),
    ("text", lambda: [json.dumps({"msgid": "h1", "msgtype": SPOT}), "{}", "{}"]),
    ("number", lambda: [bokeh_header("PATCH-DOC", num_buffers=SPOT), "{}", '{"events": []}']),
    ("any", lambda: [bokeh_header("PATCH-DOC"), "{}", model_changed(SPOT)]),
    ("time", lambda: [bokeh_header("PATCH-DOC"), "{}", model_changed(SPOT)]),
    ("any", lambda: [bokeh_header(), json.dumps({"hostile": SPOT}), "{}"]),
]


def deal(rng: random.Random, key: str, options: list[T]) -> T:
    """One of ``options``: each once, in an order ``rng`` shuffles, before any twice, so a
    short flood still puts every value in every place (one deck per ``key``)."""
    decks: dict[str, list[Any]] = rng.__dict__.setdefault("decks", {})
    if not decks.get(key):
        decks[key] = rng.sample(options, len(options))
    return decks[key].pop()  # type: ignore[no-any-return]


def spot_frames(rng: random.Random, target: str, raw: bytes, role: str = "any") -> Frames:
    """``[type, body]`` for ``target`` with ``raw`` (packed bytes) at a place of ``role``."""
    shapes = [s for s in SHAPES[target] if role in ("any", s[0])] or SHAPES[target]
    _, msg_type, build = deal(rng, f"shape:{role}", shapes)
    return [msg_type.encode(), plant(build(), raw)]


def spot_ws(rng: random.Random, raw: str | bytes, role: str = "any") -> Frames:
    shapes = [s for s in WS_SHAPES if role in ("any", s[0])] or WS_SHAPES
    return plant_json(deal(rng, f"shape:{role}", shapes)[1](), raw)


def template(rng: random.Random, target: str) -> Frames:
    """A well-formed message of the kind ``target``'s peer sends, for a kind to break."""
    if target == DASHBOARD:
        return [bokeh_header(), "{}", "{}"]
    role, msg_type, build = rng.choice(SHAPES[target])
    usual = {"number": 1, "time": time.time_ns()}.get(role, "hostile")
    body = json.loads(json.dumps(build()).replace(_SPOT_JSON, json.dumps(usual)))
    return [msg_type.encode(), pack(body)]


# --- the kinds of bad input: one generator each --------------------------------------------------

Generator = Callable[[random.Random, str], Frames]


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of bad input. On the sockets in ``fresh``, each message goes first on a
    new connection."""

    name: str
    make: Generator
    fresh: frozenset[str] = frozenset()


KINDS: dict[str, Kind] = {}


def kind(name: str, *, fresh: tuple[str, ...] = ()) -> Callable[[Generator], Generator]:
    def register(fn: Generator) -> Generator:
        KINDS[name] = Kind(name, fn, frozenset(fresh))
        return fn
    return register


@kind("random-bytes")
def random_bytes(rng: random.Random, target: str) -> Frames:
    """1-3 frames of 0-4 KiB of random bytes (a websocket: binary or raw 'text')."""
    if target == DASHBOARD:
        data = rng.randbytes(rng.randint(1, 4096))
        return [data if rng.random() < 0.5 else RawText(data)]
    return [rng.randbytes(rng.randint(0, 4096)) for _ in range(rng.randint(1, 3))]


@kind("truncated-msgpack")
def truncated(rng: random.Random, target: str) -> Frames:
    """A well-formed message cut short (JSON for the websocket)."""
    frames = template(rng, target)
    i = 0 if target == DASHBOARD else 1
    frames[i] = frames[i][:rng.randint(1, len(frames[i]) - 1)]
    return frames


@kind("bad-utf8")
def bad_utf8(rng: random.Random, target: str) -> Frames:
    """Invalid UTF-8 in a string (a value, a key, the type frame, a websocket text frame)."""
    junk = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                       b"ok\xe2\x82"]) + rng.randbytes(4)
    if target == DASHBOARD:
        return spot_ws(rng, b'"' + junk + b'"', "text")
    if rng.random() < 0.2:
        frames = template(rng, target)
        return [frames[0] + junk, frames[1]]
    return spot_frames(rng, target, b"\xd9" + bytes([len(junk)]) + junk, "text")


@kind("trailing-data")
def trailing(rng: random.Random, target: str) -> Frames:
    """A whole message with bytes after it (another object, or random bytes)."""
    frames = template(rng, target)
    extra = rng.choice([pack({"extra": 1}), pack("x"), rng.randbytes(rng.randint(1, 64))])
    if target == DASHBOARD:
        frames[0] += rng.choice(["garbage", "}{", ' {"msgtype": "PATCH-DOC"}', "\x00"])
        return frames
    frames[1] += extra
    return frames


@kind("deep-nesting")
def deep_nesting(rng: random.Random, target: str) -> Frames:
    """Arrays or maps nested 1,000 to 200,000 deep."""
    depth = rng.choice([1000, 5000, 50_000, 200_000])
    if target == DASHBOARD:
        return spot_ws(rng, rng.choice(["[" * depth + "]" * depth,
                                        '{"a":' * depth + "1" + "}" * depth]))
    raw = rng.choice([b"\x91" * depth + b"\xc0", b"\x81\xa1k" * depth + b"\xc0"])
    return spot_frames(rng, target, raw)


@kind("huge-length-headers")
def huge_headers(rng: random.Random, target: str) -> Frames:
    """msgpack str/bin/array/map/ext headers claiming 2**32-1 bytes or entries."""
    if target == DASHBOARD:
        return spot_ws(rng, rng.choice(["4294967295", "4294967296", "-1"]), "number")
    header = rng.choice([b"\xdb", b"\xc6", b"\xdd", b"\xdf", b"\xc9"]) + b"\xff\xff\xff\xff"
    raw = header + (b"\x01" if header[:1] == b"\xc9" else b"") + rng.randbytes(rng.randint(0, 64))
    if rng.random() < 0.25:  # the body's own map header
        frames = template(rng, target)
        return [frames[0], b"\xdf\xff\xff\xff\xff" + frames[1][1:]]
    return spot_frames(rng, target, raw)


@kind("int-map-keys")
def int_map_keys(rng: random.Random, target: str) -> Frames:
    """Maps keyed by integers, floats, nil, bytes or maps (websocket: Bokeh 'map' entries)."""
    if target == DASHBOARD:
        entries = rng.choice(['[[1, "x"]]', '[[{"a": 1}, "x"]]', '[[[1, 2], "x"]]', "[[null, 1]]"])
        return spot_ws(rng, f'{{"type": "map", "entries": {entries}}}')
    key = rng.choice([1, -1, 2**63, 1.5, None, True, b"bytes-key"])
    if rng.random() < 0.3:  # at the top of the body
        frames = template(rng, target)
        return [frames[0], _merged(msgpack.unpackb(frames[1]), key)]
    raw = b"\x82" + pack(key) + pack("x") + b"\xa1k" + pack(1)
    if key is not None and not isinstance(key, (bool, bytes)):
        raw = rng.choice([raw, b"\x81\x81\x01\x02\x03"])  # a map as a key
    return spot_frames(rng, target, raw)


def _merged(body: dict[str, Any], key: Any) -> bytes:
    """A map holding ``body``'s entries and one more under ``key`` (whatever its type)."""
    entries = b"".join(pack(k) + pack(v) for k, v in body.items())
    return map_header(len(body) + 1) + entries + pack(key) + pack("x")


def map_header(entries: int) -> bytes:
    return bytes([0x80 | entries]) if entries < 16 else b"\xde" + struct.pack(">H", entries)


@kind("ext-types")
def ext_types(rng: random.Random, target: str) -> Frames:
    """msgpack ext values (any code, timestamps, huge ext lengths); Bokeh typed values."""
    if target == DASHBOARD:
        return spot_ws(rng, rng.choice([
            '{"type": "ndarray", "array": {"type": "bytes", "data": "AAAA"}, '
            '"shape": [4294967295], "dtype": "float64", "order": "little"}',
            '{"type": "bytes", "data": "!!not base64!!"}',
            '{"type": "ref", "id": "p999999"}',
            '{"type": "object", "name": "bokeh.models.CustomJS", "attributes": {"code": "x"}}',
            '{"type": "object", "name": "os.system", "attributes": {}}',
            '{"type": "number", "value": "nan"}',
            '{"type": "slice", "start": null, "stop": 4294967295, "step": 0}',
        ]))
    raw = rng.choice([
        pack(msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 32)))),
        pack(msgpack.Timestamp(rng.randint(0, 2**34), 0)),
        b"\xd6\xff" + rng.randbytes(4),  # timestamp 32
        b"\xc9\xff\xff\xff\xff\x05",  # ext 32 claiming 4 GiB
        b"\xd4\x80\x00",  # fixext 1, code -128
    ])
    return spot_frames(rng, target, raw)


@kind("schema-errors")
def schema_errors(rng: random.Random, target: str) -> Frames:
    """Well-formed msgpack (or JSON) of the wrong type in a field, or a field missing."""
    if target == DASHBOARD:
        if rng.random() < 0.3:
            return [json.dumps({"msgid": "h1"}), "{}", "{}"]  # no msgtype
        return spot_ws(rng, rng.choice(["[]", "{}", "null", "true", '"s"', "1.5", "[[[]]]"]))
    if rng.random() < 0.3:  # a required field missing
        frames = template(rng, target)
        body = msgpack.unpackb(frames[1])
        body.pop(rng.choice(list(body)), None)
        return [frames[0], pack(body)]
    wrong: Any = rng.choice([[], {}, None, True, 1.5, "s", b"bin", [1, [2]], {"a": {"b": []}}])
    return spot_frames(rng, target, pack(wrong))


@kind("wrong-frame-count")
def wrong_frame_count(rng: random.Random, target: str) -> Frames:
    """Too few or too many frames (websocket: fragments out of step with the header)."""
    frames = template(rng, target)
    if target == DASHBOARD:
        return rng.choice([
            [bokeh_header("PATCH-DOC", num_buffers=2), "{}", '{"events": []}', "not a buffer"],
            [bokeh_header(), "{}"] + [bokeh_header(), "{}", "{}"],
            [bokeh_header(), "{}", "{}", "{}", "{}", "{}"],
            [bokeh_header("PATCH-DOC", num_buffers=1), "{}", '{"events": []}',
             rng.randbytes(64), rng.randbytes(64)],
        ])
    cut = rng.randint(1, max(1, len(frames[1]) - 1))
    return rng.choice([
        frames[:1],
        [frames[0], frames[1][:cut], frames[1][cut:]],
        frames + [rng.randbytes(rng.randint(0, 32)) for _ in range(rng.randint(1, 4))],
        [frames[0], frames[0], frames[1]],
    ])


@kind("empty-frames")
def empty_frames(rng: random.Random, target: str) -> Frames:
    """Empty frames in every position."""
    frames = template(rng, target)
    if target == DASHBOARD:
        return rng.choice([[""], [b""], [frames[0], "", ""], ["", "", ""], [RawText(b"")]])
    return rng.choice([[b""], [b"", b""], [frames[0], b""], [b"", frames[1]],
                       [frames[0], frames[1], b""], [b""] * 5])


# On the ROUTER and PULL a new connection each: the manager drops a connection that
# sends an oversized frame, so on one connection they would go at one per reconnect.
@kind("oversized-frames", fresh=(ROUTER, PULL))
def oversized(rng: random.Random, target: str) -> Frames:
    """Frames over the frame limit, and frames under it that together are over it."""
    big = _big_frames()
    if target == DASHBOARD:
        return rng.choice([[big["ws-over"]], [big["ws-header"], "{}", "{}"]])
    frames = template(rng, target)
    return rng.choice([
        [frames[0], big["over"]],  # one bin over the limit
        [frames[0] + big["half"], frames[1] + big["half"]],  # together over it
        [frames[0], big["under"]],  # just under the limit, one huge bin
    ])


_BIG: dict[str, Any] = {}


def _big_frames() -> dict[str, Any]:
    """The oversized frames, made once: sent without copying, they cost no memory per
    message however many are queued."""
    if not _BIG:
        over, under = MAX_FRAME + MIB // 2, MAX_FRAME - 64
        _BIG.update(
            over=b"\xc6" + struct.pack(">I", over) + bytes(over),
            half=bytes(MAX_FRAME // 2 + 1),
            under=plant({"hostile": SPOT}, b"\xc6" + struct.pack(">I", under) + bytes(under)),
            **{"ws-over": "x" * (MAX_WS_FRAME + 1),
               "ws-header": json.dumps({"msgid": "h" * (MAX_WS_FRAME - 64),
                                        "msgtype": "PULL-DOC-REQ"})})
    return _BIG


_NAN_INF = [b"\xcb" + struct.pack(">d", v) for v in (math.nan, math.inf, -math.inf, -0.0)] + [
    b"\xca\x7f\xc0\x00\x00",  # float32 NaN
    b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x01",  # a signalling NaN with a payload
    b"\xcb\x00\x00\x00\x00\x00\x00\x00\x01",  # the smallest subnormal
]


@kind("nan-inf")
def nan_inf(rng: random.Random, target: str) -> Frames:
    """NaN, ±inf, -0.0 and subnormals where numbers go."""
    if target == DASHBOARD:
        return spot_ws(rng, deal(rng, "nan-inf", ["NaN", "Infinity", "-Infinity", "1e999", "-0.0"]),
                       "number" if rng.random() < 0.5 else "time")
    return spot_frames(rng, target, deal(rng, "nan-inf", _NAN_INF), rng.choice(["number", "time"]))


@kind("absurd-timestamps")
def absurd_timestamps(rng: random.Random, target: str) -> Frames:
    """Times at int64/uint64 bounds, 0, negative, centuries away, or floats that large."""
    values: list[Any] = [-2**63, 2**64 - 1, 2**63 - 1, 0, -1, 2**62, 1e300, -1e300,
                         time.time_ns() + 10**18, time.time_ns() - 10**18, time.time() * 1e9]
    if target == DASHBOARD:
        return spot_ws(rng, rng.choice(["1e308", "-9223372036854775809", "253402300800000",
                                        "-62135596800000", "18446744073709551615"]), "time")
    return spot_frames(rng, target, pack(deal(rng, "absurd-timestamps", values)), "time")


@kind("megabyte-tags")
def megabyte_tags(rng: random.Random, target: str) -> Frames:
    """Strings of about a megabyte (some over the 1 MiB string limit) in names, tags, ids."""
    letter = rng.choice(string.ascii_letters)
    size = rng.choice([MIB - 64, MIB, MIB + 1, 1_000_000, 2 * MIB])
    if target == DASHBOARD:
        return spot_ws(rng, json.dumps(letter * size), "text")
    return spot_frames(rng, target, pack(letter * size), "text")


@kind("wrong-type")
def wrong_type(rng: random.Random, target: str) -> Frames:
    """Unknown message types, and known ones the socket never receives."""
    if target == DASHBOARD:
        return [bokeh_header(rng.choice(["EXEC", "SERVER-INFO-REPLY", "PULL-DOC-REPLY", "ERROR",
                                         "ACK", "OK", "pull-doc-req", ""])), "{}", "{}"]
    others = {ROUTER: [MetricBatch(node=NODE_R, seq=1, series=[]), Welcome(node=NODE_R,
                       heartbeat_interval=1.0, liveness=3), Reply(req_id="x", result={}),
                       Error(req_id="", code="hostile", message="from a peer"), RunAck(run_id="x")],
              PULL: [Heartbeat(), NodesList(req_id="x"), Error(req_id="", code="x", message="x"),
                     MetricAck(seqs=[1])],
              AGENT: [NodesList(req_id="x"), MetricBatch(node=ROGUE_NODE, seq=1, series=[]),
                      Reply(req_id="x", result={"nodes": []}), Register(
                          protocol=PROTOCOL_VERSION, node="x", facts=FACTS)]}
    frames = codec.encode(rng.choice(others[target]))
    name = rng.choice([None, b"hostile.type", b"HEARTBEAT", b"heartbeat\x00", b" heartbeat",
                       b"metrics.batch\n", b"\x00"])
    return [name or frames[0], frames[1]]


@kind("duplicate-keys")
def duplicate_keys(rng: random.Random, target: str) -> Frames:
    """A map naming one key twice (the decoder keeps the last; a peek may read the first)."""
    if target == DASHBOARD:
        return [rng.choice(['{"msgid": "a", "msgtype": "PULL-DOC-REQ", "msgtype": "PATCH-DOC"}',
                            '{"msgid": "a", "msgid": {"x": 1}, "msgtype": "PULL-DOC-REQ"}']),
                "{}", "{}"]
    frames = template(rng, target)
    body = msgpack.unpackb(frames[1])
    key = "node" if target == PULL and rng.random() < 0.7 else rng.choice(list(body))
    other: Any = rng.choice(["someone-else", NODE, 7, None, [], "x" * 100])
    first, last = (body[key], other) if rng.random() < 0.5 else (other, body[key])
    rest = b"".join(pack(k) + pack(v) for k, v in body.items() if k != key)
    header = map_header(len(body) + 1)
    return [frames[0], header + pack(key) + pack(first) + rest + pack(key) + pack(last)]


@kind("big-integers")
def big_integers(rng: random.Random, target: str) -> Frames:
    """Integers at and past the 64-bit bounds where counts, sequences and ids go."""
    if target == DASHBOARD:
        return spot_ws(rng, rng.choice(["1" + "0" * 5000, "18446744073709551616",
                                        "-9223372036854775809", "1e400"]))
    raw = deal(rng, "big-integers", [pack(2**64 - 1), pack(-2**63), pack(2**63),
                                     b"\xcf" + b"\xff" * 8, b"\xd3\x80" + bytes(7)])
    return spot_frames(rng, target, raw, rng.choice(["number", "time"]))


#: Kinds cheap enough to open each new connection with.
_OPENERS = ("random-bytes", "truncated-msgpack", "bad-utf8", "trailing-data", "deep-nesting",
            "huge-length-headers", "int-map-keys", "ext-types", "schema-errors",
            "wrong-frame-count", "empty-frames", "nan-inf", "absurd-timestamps", "wrong-type",
            "duplicate-keys", "big-integers")


@kind("first-message-new-connection", fresh=tuple(SOCKETS))
def first_message(rng: random.Random, target: str) -> Frames:
    """Bad input as the very first message a new connection carries."""
    return KINDS[deal(rng, "opener", list(_OPENERS))].make(rng, target)


def kind_rng(seed: int, target: str, name: str) -> random.Random:
    """The same inputs for the same seed, socket and kind, whatever else ran."""
    return random.Random(f"{seed}/{target}/{name}")


# --- the big floods' inputs ----------------------------------------------------------------------


def batch_head(node: str = NODE_P) -> bytes:
    """A batch's map header, ``node`` and a new ``seq``, up to the ``series`` key."""
    return b"\x83" + pack("node") + pack(node) + pack("seq") + pack(next(SEQ)) + pack("series")


_SIZED: dict[int, bytes] = {}


def sized_batch(size: int) -> Frames:
    """A well-formed batch of ``size`` bytes: one series of numeric rows, an hour old."""
    if size not in _SIZED:
        t0 = time.time_ns() - 3600 * 10**9
        rows = [[t0 + i * 1000, 1.5, 2.5, 3.5, float(i)] for i in range(max(1, size // 46))]
        _SIZED[size] = pack([["hostile_big", {"node": NODE_P}, ["a", "b", "c", "d"], rows]])
    return [b"metrics.batch", batch_head() + _SIZED[size]]


_REGISTERS: dict[tuple[int, str], bytes] = {}
REGISTER_VARIANTS = ("runs-bad-name", "runs-old-protocol", "labels-bad-name")


def big_register(size: int, variant: str) -> Frames:
    """An ``agent.register`` body of ``size`` bytes that is refused before any key is filed:
    a name that is not a node name, or another protocol; its bulk is many run reports
    (costly to check) or megabyte labels."""
    if (size, variant) not in _REGISTERS:
        node, protocol = ("hostile-big", 99) if variant == "runs-old-protocol" else ("bad name!", 1)
        body: dict[str, Any] = {"protocol": protocol, "node": node, "facts": facts(), "runs": []}
        if variant.startswith("runs"):
            def run(i: int) -> dict[str, Any]:
                return {"run_id": f"{i:012x}.hostile-big.1", "job_id": f"{i:012x}",
                        "state": "running", "pid": i}
            body["runs"] = [run(i) for i in range(size // len(pack(run(2**20))))]
        else:
            body["facts"] = facts(labels=["L" * 1_000_000] * (size // 1_000_000))
        _REGISTERS[size, variant] = pack(body)
    return [b"agent.register", _REGISTERS[size, variant]]


CLAIM_VARIANTS = ("series-array32", "rows-array32", "map32", "str32")


def claiming_batch(size: int, variant: str) -> Frames:
    """A ``size``-byte batch whose msgpack headers claim 2**32-1 entries (or bytes)."""
    claim = b"\xff\xff\xff\xff"
    if variant == "series-array32":
        body = batch_head() + b"\xdd" + claim + b"\xc0" * size
    elif variant == "rows-array32":
        body = (batch_head() + b"\x91\x94" + pack("m") + pack({"node": NODE_P}) + pack(["a"])
                + b"\xdd" + claim + b"\x92\x01\xc0" * (size // 3))
    elif variant == "map32":
        body = (b"\xdf" + claim + pack("node") + pack(NODE_P) + pack("seq") + pack(1)
                + b"\xc0" * size)
    else:
        body = batch_head() + b"\xdb" + claim + b"x" * size
    return [b"metrics.batch", body]


def amplifying_batch(rng: random.Random) -> Frames:
    """~1 MB that line protocol makes 60 MB: a 1 MB tag value repeated on each of 60 rows."""
    t0 = time.time_ns()
    series = ["amplified", {"node": NODE_P, "big": rng.choice(string.ascii_letters) * 1_000_000},
              ["v"], [[t0 + j, float(j)] for j in range(60)]]
    return [b"metrics.batch", pack({"node": NODE_P, "seq": next(SEQ), "series": [series]})]


_DROP = object()  # a field left out of a dispatch
_D = b"run.dispatch"


def _dispatch(i: int, **changes: Any) -> dict[str, Any]:
    body = {"run_id": f"bad{i}.{ROGUE_NODE}.1", "job_id": f"bad{i}", "iteration": 1,
            "command": ["touch", f"{MARK}-{i}"], **changes}
    return {k: v for k, v in body.items() if v is not _DROP}


def _changed(changes: dict[str, Any]) -> Callable[[int], Frames]:
    """A dispatch with these fields changed (``_DROP``: left out)."""
    return lambda i: [_D, pack(_dispatch(i, **changes))]


_MALFORMED_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("command is a string", {"command": f"touch {MARK}"}),
    ("command holds an integer", {"command": ["touch", 7]}),
    ("command holds nil", {"command": ["touch", None]}),
    ("command is a map", {"command": {"argv": ["touch", MARK]}}),
    ("command is empty", {"command": []}),
    ("command is one empty string", {"command": [""]}),
    ("command holds a NUL byte", {"command": ["touch", f"{MARK}\x00x"]}),
    ("iteration is a string", {"iteration": "1"}),
    ("iteration is a float", {"iteration": 1.0}),
    ("iteration is a boolean", {"iteration": True}),
    ("env value is an integer", {"env": {"A": 1}}),
    ("env is a list", {"env": ["A=1"]}),
    ("env value is a map", {"env": {"A": {"b": "c"}}}),
    ("timeout is a string", {"timeout": "10"}),
    ("interval is nil", {"interval": None}),
    ("cwd is an integer", {"cwd": 0}),
    ("collect is a string", {"collect": "system"}),
    ("job_id is bytes", {"job_id": b"bad"}),
    ("run_id is missing", {"run_id": _DROP}),
    ("command is missing", {"command": _DROP}),
]
#: run.dispatch messages whose fields are malformed: each must start nothing.
MALFORMED_DISPATCHES: list[tuple[str, Callable[[int], Frames]]] = [
    (label, _changed(changes)) for label, changes in _MALFORMED_FIELDS
] + [
    ("three frames", lambda i: [_D, pack(_dispatch(i)), b"extra"]),
    ("trailing data", lambda i: [_D, pack(_dispatch(i)) + b"\xc0"]),
    ("type frame with a NUL", lambda i: [_D + b"\x00", pack(_dispatch(i))]),
    ("bad UTF-8 in the command", lambda i: [_D, plant(_dispatch(i, command=["touch", SPOT]),
                                                     b"\xa2\xff\xfe")]),
    ("an ext value in env", lambda i: [_D, plant(_dispatch(i, env={"A": SPOT}),
                                                 pack(msgpack.ExtType(1, b"x")))]),
    ("an integer key in env", lambda i: [_D, plant(_dispatch(i, env=SPOT), b"\x81\x01\xa1x")]),
    ("command twice, the last a string", lambda i: [_D, _twice(_dispatch(i), "command",
                                                               f"touch {MARK}-{i}")]),
]

#: run.dispatch messages that decode, with numbers no manager sends: each must start nothing.
ABSURD_DISPATCHES: list[tuple[str, Callable[[int], Frames]]] = [
    (f"{name} = {value!r}", _changed({name: value}))
    for name, value in [("timeout", math.nan), ("timeout", math.inf), ("timeout", -math.inf),
                        ("timeout", -1.0), ("timeout", 1e308), ("interval", math.nan),
                        ("interval", 0.0), ("interval", -1.0), ("interval", math.inf),
                        ("iteration", -1), ("iteration", 2**64 - 1), ("iteration", -2**63)]
]


#: agent.welcome messages with numbers no manager sends: the agent must live on and keep
#: heartbeating at a sane pace (its own interval, or the last sane one).
ABSURD_WELCOMES: list[tuple[str, Frames]] = [
    (f"{name} = {value!r}", [b"agent.welcome", pack(
        {"node": ROGUE_NODE, "heartbeat_interval": ROGUE_BEAT, "liveness": 3, name: value})])
    for name, value in [
        ("heartbeat_interval", math.nan), ("heartbeat_interval", math.inf),
        ("heartbeat_interval", -math.inf), ("heartbeat_interval", 0.0),
        ("heartbeat_interval", -1.0), ("heartbeat_interval", 5e-324),
        ("heartbeat_interval", 1e-9), ("heartbeat_interval", 1e300),
        ("liveness", 0), ("liveness", -1), ("liveness", 2**63 - 1), ("liveness", 2**64 - 1),
        ("liveness", -2**63), ("last_seq", 2**64 - 1), ("last_seq", -2**63),
    ]
]
#: More heartbeats a second than this, after an absurd welcome, is a busy loop.
BUSY_BEATS_PER_S = 50


def _twice(body: dict[str, Any], key: str, last: Any) -> bytes:
    rest = b"".join(pack(k) + pack(v) for k, v in body.items() if k != key)
    return map_header(len(body) + 1) + pack(key) + pack(body[key]) + rest + pack(key) + pack(last)


# --- measuring processes -------------------------------------------------------------------------


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set of ``pid`` in MB (``VmHWM``, exact), or None if it is gone."""
    return proc_status_mb(pid, "VmHWM")


def proc_status_mb(pid: int, field: str) -> float | None:
    """A kB field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MB; None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_hwm(pid: int) -> bool:
    """Start ``pid``'s peak RSS afresh (``5`` to ``clear_refs``); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


LOG_LINE = re.compile(r"^(?P<second>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ "
                      r"(?P<level>WARNING|ERROR|CRITICAL) (?P<logger>\S+): (?P<text>.*)$")
MARKER = re.compile(r"\[(?P<kind>[\w.-]+): \d+ in total\]")
_VARIABLE = re.compile(r"'[^']*'|\"[^\"]*\"|\b[0-9a-f]{8,}\b|[-+]?\d+(\.\d+)?")


def trouble_kind(logger: str, text: str) -> str:
    """The kind of trouble a log line reports: its rate-limit marker's kind, else the
    logger and the line's first four words with numbers, ids and quotes blanked (four:
    the ingest starts every refusal with "bad metric batch:", then says which)."""
    marker = MARKER.search(text)
    if marker:
        return marker["kind"]
    return f"{logger.rsplit('.', 1)[-1]}: {' '.join(_VARIABLE.sub('#', text).split()[:4])}"


@dataclass(slots=True)
class LogStats:
    """A process's WARNING and worse lines over a flood, by kind of trouble."""

    worst: dict[str, int] = field(default_factory=dict)  # kind → most lines in one second
    example: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    tracebacks: int = 0

    @property
    def peak(self) -> tuple[str, int]:
        return max(self.worst.items(), key=lambda kv: kv[1], default=("", 0))


def log_stats(path: Path, offset: int) -> LogStats:
    stats = LogStats()
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return stats
    per_second: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("Traceback"):
            stats.tracebacks += 1
        m = LOG_LINE.match(line)
        if m is None:
            continue
        stats.lines += 1
        kind_ = trouble_kind(m["logger"], m["text"])
        per_second[kind_, m["second"]] += 1
        stats.example.setdefault(kind_, line[:300])
    for (kind_, _), n in per_second.items():
        stats.worst[kind_] = max(stats.worst.get(kind_, 0), n)
    return stats


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- probes: an admin asking nodes.list, a browser asking /api/status ----------------------------


@dataclass(slots=True)
class Sample:
    """One question: when it was asked, when answered (None: never, within the timeout)."""

    sent: float
    done: float | None
    ok: bool = True
    state: str = ""  # node1's state in a nodes.list reply


class Probe(threading.Thread):
    """Asks one question every :attr:`period` s while it runs, and times each answer."""

    period = 0.05
    timeout = 30.0

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.samples: list[Sample] = []
        self.asking_since: float | None = None
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self._stop_asking = threading.Event()

    def run(self) -> None:
        try:
            self.setup()
            while not self._stop_asking.is_set():
                sent = time.monotonic()
                with self.changed:
                    self.asking_since = sent
                sample = self.ask(sent)
                with self.changed:
                    self.samples.append(sample)
                    self.asking_since = None
                    self.changed.notify_all()
                self._stop_asking.wait(self.period)  # the probe's pace, not a synchronisation
        except BaseException as exc:  # kept for the reader: a thread must not raise
            self.error = exc
        finally:
            self.teardown()

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def ask(self, sent: float) -> Sample:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop_asking.set()
        self.join(self.timeout + 5)

    def slowest(self, start: float, end: float) -> float | None:
        """The longest any question overlapping ``[start, end]`` waited (None: none asked)."""
        with self.changed:
            waits = [(s.done if s.done is not None else s.sent + self.timeout) - s.sent
                     for s in self.samples
                     if s.sent <= end and (s.done is None or s.done >= start)]
            if self.asking_since is not None and self.asking_since <= end:
                waits.append(time.monotonic() - self.asking_since)
        return max(waits, default=None)

    def states(self, start: float, end: float) -> list[tuple[float, str]]:
        with self.changed:
            return [(s.done - start, s.state) for s in self.samples
                    if s.done is not None and start <= s.done <= end]

    def answered_after(self, after: float, deadline: float,
                       accept: Callable[[Sample], bool] = lambda s: s.ok) -> Sample | None:
        """The first answer after ``after`` that ``accept`` takes, waiting until ``deadline``."""
        seen = 0
        with self.changed:
            while True:
                for sample in self.samples[seen:]:
                    if sample.done is not None and sample.done > after and accept(sample):
                        return sample
                seen = len(self.samples)
                left = deadline - time.monotonic()
                if left <= 0 or not self.is_alive():
                    return None
                self.changed.wait(left)

    def last(self) -> Sample | None:
        with self.changed:
            return self.samples[-1] if self.samples else None


class AdminProbe(Probe):
    """``nodes.list`` with the admin key; notes ``node1``'s state in every reply."""

    def __init__(self, address: str, keys: CurveKeys) -> None:
        super().__init__("admin nodes.list")
        self.address = address
        self.keys = keys

    def setup(self) -> None:
        self.ctx = zmq.Context()
        self.sock = curve_socket(self.ctx, zmq.DEALER, self.keys)
        self.sock.setsockopt(zmq.MAXMSGSIZE, REPLY_LIMITS.max_message_bytes)
        self.sock.connect(self.address)

    def teardown(self) -> None:
        self.ctx.destroy(linger=0)

    def ask(self, sent: float) -> Sample:
        req_id = uuid.uuid4().hex[:16]
        self.sock.send_multipart(codec.encode(NodesList(req_id=req_id)))
        while (left := sent + self.timeout - time.monotonic()) > 0:
            if not self.sock.poll(ms(min(left, 0.5))):
                if self._stop_asking.is_set():
                    break
                continue
            try:
                msg = codec.decode(self.sock.recv_multipart(), REPLY_LIMITS)
            except ProtocolError:
                continue
            if isinstance(msg, (Reply, Error)) and msg.req_id == req_id:
                return Sample(sent, time.monotonic(), isinstance(msg, Reply), node_state(msg))
        return Sample(sent, None, False)


def node_state(msg: Any) -> str:
    if not isinstance(msg, Reply) or not isinstance(msg.result, dict):
        return ""
    return next((str(n.get("state")) for n in msg.result.get("nodes", [])
                 if isinstance(n, dict) and n.get("name") == NODE), "")


class StatusProbe(Probe):
    """``GET /api/status`` of the dashboard."""

    timeout = 10.0

    def __init__(self, url: str) -> None:
        super().__init__("dashboard /api/status")
        self.url = url

    def ask(self, sent: float) -> Sample:
        try:
            with urllib.request.urlopen(self.url + "/api/status", timeout=self.timeout) as answer:
                answer.read()
                return Sample(sent, time.monotonic(), answer.status == 200)
        except (OSError, urllib.error.URLError):
            return Sample(sent, None if time.monotonic() - sent >= self.timeout else
                          time.monotonic(), False)


# --- sockets -------------------------------------------------------------------------------------


def curve_socket(ctx: zmq.Context[Any], kind_: int, keys: CurveKeys) -> zmq.Socket[Any]:
    """A client socket with these CURVE keys; linger 0, so closing never waits."""
    sock = ctx.socket(kind_)
    sock.linger = 0
    sock.curve_publickey, sock.curve_secretkey = keys.public, keys.secret
    sock.curve_serverkey = keys.server_public
    return sock


def new_keys(server_public: bytes) -> CurveKeys:
    public, secret = zmq.curve_keypair()
    return CurveKeys(public, secret, server_public=server_public)


def ms(seconds: float) -> int:
    """A poll timeout: ``seconds`` in whole milliseconds, at least 0."""
    return max(0, int(seconds * 1000))


def send_bounded(sock: zmq.Socket[Any], frames: Frames, until: float) -> bool:
    """Queue ``frames`` as one message, waiting for room until ``until``; False if none came."""
    while True:
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=len(frames[-1]) < 65536)
            return True
        except zmq.Again:
            left = until - time.monotonic()
            if left <= 0:
                return False
            sock.poll(ms(min(left, 0.1)), zmq.POLLOUT)


def drain(sock: zmq.Socket[Any], limit: int = 10_000) -> int:
    """Read and drop what waits on ``sock`` (replies a hostile peer does not care about)."""
    n = 0
    while n < limit and sock.poll(0):
        sock.recv_multipart()
        n += 1
    return n


def register_agent(ctx: zmq.Context[Any], address: str, node: str, keys: CurveKeys,
                   timeout: float = 15.0) -> zmq.Socket[Any]:
    """A DEALER registered as agent ``node`` with ``keys`` (auto_accept files them)."""
    sock = curve_socket(ctx, zmq.DEALER, keys)
    sock.connect(address)
    register = codec.encode(Register(protocol=PROTOCOL_VERSION, node=node, facts=FACTS))
    sock.send_multipart(register)
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        if sock.poll(ms(left)):
            try:
                if isinstance(codec.decode(sock.recv_multipart()), Welcome):
                    return sock
            except ProtocolError:
                continue
    sock.close()
    raise RuntimeError(f"agent {node} got no welcome from {address} in {timeout:g} s")


class FakeAgent(threading.Thread):
    """``hostile-p``: a registered agent that heartbeats and collects its metric acks, so
    the manager keeps it ``ready`` and acks what its PUSH sends."""

    def __init__(self, address: str, keys: CurveKeys) -> None:
        super().__init__(name=f"agent {NODE_P}", daemon=True)
        self.address = address
        self.keys = keys
        self.acked: set[int] = set()
        self.acks = threading.Condition()
        self.error: BaseException | None = None
        self._stop_beating = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            sock = register_agent(ctx, self.address, NODE_P, self.keys)
            self.ready.set()
            beat = codec.encode(Heartbeat())
            while not self._stop_beating.is_set():
                sock.send_multipart(beat)
                end = time.monotonic() + INTERVAL
                while (left := end - time.monotonic()) > 0 and sock.poll(ms(left)):
                    self._take(sock, sock.recv_multipart())
        except BaseException as exc:  # kept for the reader
            self.error = exc
            self.ready.set()
        finally:
            ctx.destroy(linger=0)

    def _take(self, sock: zmq.Socket[Any], frames: list[bytes]) -> None:
        try:
            msg = codec.decode(frames)
        except ProtocolError:
            return
        if isinstance(msg, MetricAck):
            with self.acks:
                self.acked.update(msg.seqs)
                self.acks.notify_all()
        elif isinstance(msg, Error) and msg.code == "not-registered":  # a restarted manager
            sock.send_multipart(codec.encode(Register(protocol=PROTOCOL_VERSION, node=NODE_P,
                                                      facts=FACTS)))

    def wait_acked(self, seqs: set[int], until: float) -> bool:
        """Wait until every one of ``seqs`` is acked, or ``until``."""
        with self.acks:
            return self.acks.wait_for(lambda: seqs <= self.acked,
                                      max(0.0, until - time.monotonic()))

    def stop(self) -> None:
        self._stop_beating.set()
        self.join(10)


# --- the rogue ROUTER and its agent --------------------------------------------------------------


class Rogue:
    """A ROUTER bound with the manager's own server key pair, so a real agent's CURVE
    handshake succeeds and the agent takes it for its manager.

    It welcomes every registration (with :data:`ROGUE_BEAT`), heartbeats to the
    agent's latest connection, acks final run updates, and notes everything the
    agent sends. A PULL on the port + 2 takes the agent's metric batches.
    """

    def __init__(self, ctx: zmq.Context[Any], public: bytes, secret: bytes) -> None:
        self.router = self._server(ctx, zmq.ROUTER, public, secret)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.pull = self._server(ctx, zmq.PULL, public, secret)
        self.port = self._bind()
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.pull, zmq.POLLIN)
        self.peer: bytes | None = None  # the routing id of the agent's latest connection
        self.registers: list[float] = []
        self.beats: list[float] = []
        self.updates: list[Any] = []  # RunReports the agent sent
        self.undecodable = 0
        self.batches = 0
        self.heard = time.monotonic()  # when the agent last sent anything
        #: Sent to the next registration before its welcome (first message of a session).
        self.first_reply: Frames | None = None
        self._next_beat = 0.0
        self._welcome = codec.encode(Welcome(node=ROGUE_NODE, heartbeat_interval=ROGUE_BEAT,
                                             liveness=3))

    @staticmethod
    def _server(ctx: zmq.Context[Any], kind_: int, public: bytes,
                secret: bytes) -> zmq.Socket[Any]:
        sock = ctx.socket(kind_)
        sock.linger = 0
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = public, secret
        return sock

    def _bind(self) -> int:
        """ROUTER on a random port and PULL on that port + 2, as the agent expects."""
        for _ in range(50):
            port = self.router.bind_to_random_port("tcp://127.0.0.1")
            try:
                self.pull.bind(f"tcp://127.0.0.1:{port + 2}")
                return port
            except zmq.ZMQError:
                self.router.unbind(f"tcp://127.0.0.1:{port}")
        raise RuntimeError("no free port pair for the rogue ROUTER")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.router.close()
        self.pull.close()

    def pump(self, timeout: float = 0.0) -> None:
        """Take what the agent sent (waiting up to ``timeout`` s), answer it, beat if due."""
        deadline = time.monotonic() + timeout
        while True:
            self._beat()
            wait = max(0.0, min(deadline, self._next_beat) - time.monotonic())
            for sock, _ in self.poller.poll(ms(wait)):
                for _ in range(1000):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if sock is self.router:
                        self._take(frames)
                    else:
                        self.batches += 1
            if time.monotonic() >= deadline:
                return

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Pump until ``done()``, for at most ``timeout`` s."""
        end = time.monotonic() + timeout
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.05))
        return True

    def _take(self, frames: list[bytes]) -> None:
        self.peer = frames[0]
        self.heard = time.monotonic()
        try:
            msg = codec.decode(frames[1:])
        except ProtocolError:
            self.undecodable += 1
            return
        now = time.monotonic()
        if isinstance(msg, Register):
            self.registers.append(now)
            first, self.first_reply = self.first_reply, None
            if first is not None:
                self._send_now(first)
            self._send_now(self._welcome)
        elif isinstance(msg, Heartbeat):
            self.beats.append(now)
        elif isinstance(msg, RunUpdate):
            self.updates.append(msg.run)
            if msg.run.state.final:
                self._send_now(codec.encode(RunAck(run_id=msg.run.run_id)))

    def _beat(self) -> None:
        now = time.monotonic()
        # Twice per interval, as a manager's other messages would: the agent then
        # hears from it within any liveness it may have been told, even 1.
        if self.peer is not None and now >= self._next_beat:
            self._send_now(codec.encode(Heartbeat()))
            self._next_beat = now + ROGUE_BEAT / 2
        elif self.peer is None:
            self._next_beat = now + ROGUE_BEAT / 2

    def _send_now(self, frames: Frames) -> bool:
        if self.peer is None:
            return False
        try:
            self.router.send_multipart([self.peer, *frames], flags=zmq.NOBLOCK,
                                       copy=len(frames[-1]) < 65536)
            return True
        except zmq.ZMQError:  # full, or that connection is gone: the agent reconnects
            return False

    def send(self, frames: Frames, until: float) -> bool:
        """Send to the agent's latest connection, waiting (and pumping) until ``until``."""
        while not self._send_now(frames):
            left = until - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.02))
        self.pump()
        return True

    def beat_after(self, after: float, timeout: float) -> bool:
        return self.wait(lambda: bool(self.beats) and self.beats[-1] > after, timeout)

    def run_sentinel(self, until: float, gone: Callable[[], bool] = lambda: False) -> bool:
        """Dispatch a good run (``true``) and wait for its end: the agent reads in order,
        so it has then handled everything sent before. False at ``until``, once
        ``gone()``, or when the agent says nothing for :data:`ANSWER_DEADLINE` s."""
        job = f"sentinel{next(SEQ)}"
        dispatch = RunDispatch(run_id=f"{job}.{ROGUE_NODE}.1", job_id=job, iteration=1,
                               command=["true"])
        def ended() -> bool:
            return any(u.job_id == job and u.state.final for u in self.updates)

        # Sent again every second: a connection the agent just dropped (after an
        # oversized frame) loses what was queued for it. The agent runs a run once.
        while not ended() and time.monotonic() < until and not gone():
            if time.monotonic() - self.heard > ANSWER_DEADLINE:
                return False
            self.send(codec.encode(dispatch), until)
            self.wait(ended, min(1.0, until - time.monotonic()))
        return ended()


# --- senders: one per socket, each able to open a new connection per message ---------------------


class RouterSender:
    """Strangers (a fresh key each, never registered) and ``hostile-r`` (an accepted agent
    key, registered), message by message in turn, to the manager's ROUTER.

    :meth:`settle` sends ``nodes.list`` on every connection a flood used and waits
    for the answers (``not-authorized``: no key here is an admin's); a connection's
    messages are handled in order, so the answers mean the flood was handled.
    """

    def __init__(self, ctx: zmq.Context[Any], address: str, server_public: bytes) -> None:
        self.ctx = ctx
        self.address = address
        self.server_public = server_public
        self.strangers = [self._stranger() for _ in range(2)]
        self.agent = register_agent(ctx, address, NODE_R, new_keys(server_public))
        self.fresh: list[zmq.Socket[Any]] = []  # new connections not yet settled
        self.turn = 0

    def _stranger(self) -> zmq.Socket[Any]:
        sock = curve_socket(self.ctx, zmq.DEALER, new_keys(self.server_public))
        sock.connect(self.address)
        return sock

    def send(self, frames: Frames, fresh: bool, until: float) -> bool:
        if fresh:
            if len(self.fresh) >= MAX_PENDING:
                self._settle(self.fresh[:MAX_PENDING // 2], until)
            sock = self._stranger()
            self.fresh.append(sock)
            return send_bounded(sock, frames, until)
        self.turn += 1
        sock = self.agent if self.turn % 2 else self.strangers[self.turn // 2 % 2]
        ok = send_bounded(sock, frames, until)
        drain(sock)
        return ok

    def settle(self, until: float, gone: Callable[[], bool]) -> str | None:
        socks = [*self.strangers, self.agent, *self.fresh]
        unsettled = self._settle(socks, until, gone)
        if unsettled:
            return (f"{unsettled} of {len(socks)} connections had no answer to nodes.list "
                    f"{SETTLE:g} s after the flood's last message")
        return None

    def _settle(self, socks: list[zmq.Socket[Any]], until: float,
                gone: Callable[[], bool] = lambda: False) -> int:
        """nodes.list on each of ``socks``; the number that got no answer by ``until``
        (0 once the manager is gone: that is a death, counted as such). New connections
        are closed once settled."""
        asked = {}
        for sock in socks:
            req_id = uuid.uuid4().hex[:16]
            if send_bounded(sock, codec.encode(NodesList(req_id=req_id)), until):
                asked[sock] = req_id
        asked = {sock: req_id for sock, req_id in asked.items()
                 if not await_reply(sock, req_id, until, gone)}
        if gone():
            asked = {}
        for sock in socks:
            if sock in self.fresh:
                self.fresh.remove(sock)
                sock.close()
        return len(asked)

    def close(self) -> None:
        for sock in [*self.strangers, self.agent, *self.fresh]:
            sock.close()


def await_reply(sock: zmq.Socket[Any], req_id: str, until: float,
                gone: Callable[[], bool] = lambda: False) -> bool:
    """Read ``sock`` until a reply or error for ``req_id`` comes, ``until``, or ``gone()``."""
    while (left := until - time.monotonic()) > 0 and not gone():
        if not sock.poll(ms(min(left, 0.5))):
            continue
        try:
            msg = codec.decode(sock.recv_multipart(), REPLY_LIMITS)
        except ProtocolError:
            continue
        if isinstance(msg, (Reply, Error)) and msg.req_id == req_id:
            return True
    return False


class PullSender:
    """A PUSH with ``hostile-p``'s accepted key, to the manager's PULL (ZAP lets no
    other key on), or a new such PUSH per message.

    :meth:`settle` sends a good batch on every connection a flood used and waits
    for its ``metrics.ack`` (sent after InfluxDB stored it), resending it now and
    then as agents do: PULL takes each connection's batches in order.
    """

    def __init__(self, ctx: zmq.Context[Any], address: str, fake: FakeAgent) -> None:
        self.ctx = ctx
        self.address = address
        self.fake = fake
        self.push = self._new_push()
        self.fresh: list[zmq.Socket[Any]] = []

    def _new_push(self) -> zmq.Socket[Any]:
        sock = curve_socket(self.ctx, zmq.PUSH, self.fake.keys)
        sock.connect(self.address)
        return sock

    def send(self, frames: Frames, fresh: bool, until: float) -> bool:
        if not fresh:
            return send_bounded(self.push, frames, until)
        if len(self.fresh) >= MAX_PENDING:
            self._settle(self.fresh[:MAX_PENDING // 2], until)
        sock = self._new_push()
        self.fresh.append(sock)
        return send_bounded(sock, frames, until)

    def settle(self, until: float, gone: Callable[[], bool]) -> str | None:
        socks = [self.push, *self.fresh]
        unsettled = self._settle(socks, until, gone)
        if unsettled:
            return (f"{unsettled} of {len(socks)} connections had no metrics.ack for a good "
                    f"batch {SETTLE:g} s after the flood's last message")
        return None

    def _settle(self, socks: list[zmq.Socket[Any]], until: float,
                gone: Callable[[], bool] = lambda: False) -> int:
        batches = {sock: batch_body() for sock in socks}
        resend = 0.0
        while batches and time.monotonic() < until and not gone():
            if time.monotonic() >= resend:
                for sock, body in batches.items():
                    send_bounded(sock, [b"metrics.batch", pack(body)], until)
                resend = time.monotonic() + 2.0
            self.fake.wait_acked({b["seq"] for b in batches.values()},
                                 min(resend, until, time.monotonic() + 0.5))
            batches = {s: b for s, b in batches.items() if b["seq"] not in self.fake.acked}
        for sock in socks:
            if sock in self.fresh:
                self.fresh.remove(sock)
                sock.close()
        return 0 if gone() else len(batches)

    def close(self) -> None:
        for sock in [self.push, *self.fresh]:
            sock.close()


class AgentSender:
    """Bad input to a real agent, from the rogue ROUTER it takes for its manager.

    A new connection per message: the rogue ends the agent's session (``name-taken``,
    after a welcome so its back-off stays short), and the bad input is the first
    thing the agent's next session hears, before that session's welcome.
    :meth:`settle` dispatches a good run (``true``): its update means the agent
    has read everything before it.
    """

    def __init__(self, rogue: Rogue) -> None:
        self.rogue = rogue
        self._taken = codec.encode(Error(req_id="", code="name-taken", message="hostile"))

    def send(self, frames: Frames, fresh: bool, until: float) -> bool:
        rogue = self.rogue
        if not fresh:
            return rogue.send(frames, until)
        sessions = len(rogue.registers)
        rogue.first_reply = frames
        if not rogue.send(self._taken, until):
            return False
        left = until - time.monotonic()
        return rogue.wait(lambda: len(rogue.registers) > sessions and rogue.first_reply is None,
                          left)

    def settle(self, until: float, gone: Callable[[], bool]) -> str | None:
        if self.rogue.run_sentinel(until, gone) or gone():
            return None
        return (f"agent {ROGUE_NODE} did not run a good run.dispatch after the flood's last "
                f"message (it fell silent for {ANSWER_DEADLINE:g} s, or {SETTLE:g} s passed)")

    def close(self) -> None:
        pass


class DashboardSender:
    """Bokeh websocket messages to the dashboard's overview document, from a plain client.

    A session token comes from the document's ``autoload.js``; a connection the
    server closes (as it should after bad input) is replaced by a new one.
    :meth:`settle` asks a new connection for the document (``PULL-DOC-REQ``).
    """

    PATH = "/bk/overview"

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.token = self._token()
        self.conn: WebSocketClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.received: list[str] = []  # what the newest connection was sent, as text
        self.connections = 0

    def _token(self) -> str:
        app = self.url + self.PATH
        query = urllib.parse.urlencode({"bokeh-autoload-element": "hostile",
                                        "bokeh-app-path": self.PATH, "bokeh-absolute-url": app})
        with urllib.request.urlopen(f"{app}/autoload.js?{query}", timeout=30) as answer:
            script = answer.read().decode()
        found = re.search(r'"token":\s*"([^"]+)"', script)
        if found is None:
            raise RuntimeError(f"no session token in {app}/autoload.js")
        return found.group(1)

    def send(self, frames: Frames, fresh: bool, until: float) -> bool:
        return bool(self._run(self._send(frames, fresh), until))

    def settle(self, until: float, gone: Callable[[], bool]) -> str | None:
        if self._run(self._ask_document(), until) or gone():
            return None
        return (f"the dashboard did not send its document over a new websocket within "
                f"{SETTLE:g} s after the flood's last message")

    def _run(self, coro: Any, until: float) -> Any:
        left = until - time.monotonic()
        if left <= 0:
            coro.close()
            return None
        try:
            return self.loop.run_until_complete(asyncio.wait_for(coro, left))
        except (TimeoutError, OSError, StreamClosedError, WebSocketClosedError):
            self._forget()
            return None

    async def _send(self, frames: Frames, fresh: bool) -> bool:
        if fresh or self.conn is None or self.reader is None or self.reader.done():
            # Every other new connection is sent to before the server's ACK, as no
            # browser would: the server's side of the connection may not exist yet.
            await self._connect(wait_ack=not fresh or self.connections % 2 == 1)
        assert self.conn is not None
        written = 0
        for fragment in frames:
            binary = isinstance(fragment, bytes) and not isinstance(fragment, RawText)
            try:
                await self.conn.write_message(fragment, binary=binary)
            except (WebSocketClosedError, StreamClosedError):
                break  # the server closed it (after the bad part, as it should)
            written += 1
        return written > 0

    async def _ask_document(self) -> bool:
        await self._connect()
        assert self.conn is not None
        for fragment in [bokeh_header(), "{}", "{}"]:
            await self.conn.write_message(fragment)
        while not any("PULL-DOC-REPLY" in text for text in self.received):
            if self.reader is None or self.reader.done():
                return False
            await asyncio.wait([self.reader], timeout=0.05)
        return True

    async def _connect(self, wait_ack: bool = True) -> None:
        """A new connection; with ``wait_ack``, once the server said ACK (as BokehJS waits)."""
        await self._close()
        host = self.url.removeprefix("http://")
        request = HTTPRequest(f"ws://{host}{self.PATH}/ws", headers={"Origin": self.url})
        self.conn = conn = await websocket_connect(request, subprotocols=["bokeh", self.token])
        self.connections += 1
        self.received = []
        if wait_ack:
            for _ in range(3):  # header, metadata, content
                if await conn.read_message() is None:
                    raise StreamClosedError()
        self.reader = asyncio.ensure_future(self._read(conn, self.received))

    @staticmethod
    async def _read(conn: WebSocketClientConnection, received: list[str]) -> None:
        while (message := await conn.read_message()) is not None:
            if isinstance(message, str) and len(received) < 100:
                received.append(message[:200])

    async def _close(self) -> None:
        conn, reader = self.conn, self.reader
        self.conn = self.reader = None
        if conn is not None:
            conn.close()
        if reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(reader, 2.0)

    def _forget(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self._close())

    def close(self) -> None:
        self._forget()
        self.loop.close()


# --- the cluster ---------------------------------------------------------------------------------


class HostileManager(ManagerProc):
    """The tests' manager process, beating every :data:`INTERVAL` s (theirs: 0.2 s)."""

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.spawn(["--set", f"basic.bind_port={self.router_port}",
                    "--set", f"basic.interval={INTERVAL}"])
        info = wait_for(self._ready, START_TIMEOUT, "the manager's ready file")
        self.router_port = int(info["router"])


@dataclass(slots=True)
class Watched:
    """A process a flood must not kill: how to find it, its log, how to start it again."""

    name: str
    proc: Callable[[], Any]  # the subprocess.Popen, or None before it started
    log_path: Path
    restart: Callable[[], None]

    @property
    def pid(self) -> int | None:
        proc = self.proc()
        return None if proc is None else int(proc.pid)

    @property
    def alive(self) -> bool:
        proc = self.proc()
        return proc is not None and proc.poll() is None

    def exit_status(self) -> str:
        proc = self.proc()
        return "never started" if proc is None else f"exit status {proc.poll()}"


class HostileCluster:
    """A CURVE manager with auto_accept, a real agent ``node1``, the dashboard (admin key),
    the two fake agents the senders use, the probes, and on demand the rogue ROUTER
    with its own real agent. ``influx_url`` is an influxd someone else runs."""

    def __init__(self, tmp: Path, influx_url: str, database: str, logs: list[Path]) -> None:
        self.tmp = tmp
        self.logs = logs
        self.cluster = Cluster(tmp, logs, influx_url, database,
                               security="curve = yes\nauto_accept = yes\n")
        self.cluster.manager = HostileManager(tmp, influx_url, database,
                                              "curve = yes\nauto_accept = yes\n")
        self.manager = self.cluster.manager
        self.influx_url, self.database = influx_url, database
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.dashboard: DashboardProc | None = None
        self.admin: AdminProbe | None = None
        self.status: StatusProbe | None = None
        self.fake: FakeAgent | None = None
        self.rogue: Rogue | None = None
        self.rogue_agent: Daemon | None = None
        self.rogue_workdir = tmp / "rogue" / f"runs-{ROGUE_NODE}"

    @property
    def keys_dir(self) -> Path:
        return self.manager.keys_dir

    @property
    def server_public(self) -> bytes:
        return load_public(public_path(self.keys_dir, "server"))

    def address(self, which: str = "router") -> str:
        port = self.manager.router_port + {"router": 0, "pub": 1, "pull": 2}[which]
        return f"tcp://127.0.0.1:{port}"

    def start(self) -> None:
        self.manager.start()
        self.cluster.add_agent(NODE)
        self.dashboard = DashboardProc(self.tmp, self.manager.router_port, self.influx_url,
                                       self.database,
                                       security=f"curve = yes\nkeys_dir = {self.keys_dir}\n")
        self.logs.append(self.dashboard.log_path)
        self.dashboard.start()
        self.fake = FakeAgent(self.address(), new_keys(self.server_public))
        self.fake.start()
        self.fake.ready.wait(30)
        if self.fake.error is not None:
            raise RuntimeError(f"fake agent {NODE_P}: {self.fake.error}")
        self.admin = AdminProbe(self.address(), client_keys(self.keys_dir, "admin",
                                                            self.server_public))
        self.status = StatusProbe(self.dashboard.url)
        self.admin.start()
        self.status.start()

    def start_rogue(self) -> Rogue:
        """The rogue ROUTER and a real agent connected to it, registered and beating."""
        if self.rogue is not None:
            return self.rogue
        if self.rogue_agent is not None:  # left pointed at nothing by stop_rogue
            self.rogue_agent.stop()
        public, secret = load_keypair(self.keys_dir, "server")
        self.rogue = rogue = Rogue(self.ctx, public, secret)
        # Cluster.add_agent writes the agent's config and copies the manager's server.key;
        # a cluster whose manager is never started, with the rogue's port, points it there.
        (self.tmp / "rogue").mkdir(exist_ok=True)
        stand_in = Cluster(self.tmp / "rogue", self.logs, security="curve = yes\n")
        stand_in.manager.router_port = rogue.port
        stand_in.manager.keys_dir = self.keys_dir
        self.rogue_agent = stand_in.add_agent(ROGUE_NODE, wait=False)
        if not rogue.beat_after(0.0, 30.0):
            raise RuntimeError(f"agent {ROGUE_NODE} never registered with the rogue ROUTER:\n"
                               + self.rogue_agent.log_path.read_text(errors="replace")[-3000:])
        return rogue

    def stop_rogue(self) -> None:
        """Close the rogue's sockets: its agent is pointed at nothing any more."""
        if self.rogue is not None:
            self.rogue.close()
            self.rogue = None

    def watched(self) -> dict[str, Watched]:
        agent = self.cluster.agents[NODE]
        out = {
            "manager": Watched("manager", lambda: self.manager.proc, self.manager.log_path,
                               self.manager.start),
            NODE: Watched(NODE, lambda: agent.proc, agent.log_path, agent.spawn),
        }
        if self.dashboard is not None:
            dash = self.dashboard
            out["dashboard"] = Watched("dashboard", lambda: dash.proc, dash.log_path, dash.start)
        if self.rogue_agent is not None:
            rogue = self.rogue_agent
            out[ROGUE_NODE] = Watched(ROGUE_NODE, lambda: rogue.proc, rogue.log_path, rogue.spawn)
        return out

    def stop(self) -> None:
        for probe in (self.admin, self.status, self.fake):
            if probe is not None:
                probe.stop()
        if self.rogue_agent is not None:
            self.rogue_agent.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
        self.cluster.stop()
        self.ctx.destroy(linger=0)


# --- floods and what they showed -----------------------------------------------------------------


@dataclass(slots=True)
class FloodResult:
    """What one flood of one kind against one socket showed."""

    socket: str
    kind: str
    sent: int = 0
    stalled: int = 0  # messages the socket would not take before the flood's time ran out
    seconds: float = 0.0
    deaths: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # processes a bad run.dispatch started
    admin_slowest_s: float | None = None
    lost: list[float] = field(default_factory=list)  # seconds into the flood node1 was lost
    rss_mb: dict[str, float] = field(default_factory=dict)
    logs: dict[str, LogStats] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.socket}/{self.kind}"

    def problems(self, targets: Targets = TARGETS) -> list[str]:
        """Each target this flood missed, with the numbers and the log lines behind it."""
        out = [f"{self.label}: {what}" for what in [*self.deaths, *self.hangs, *self.started]]
        if self.lost:
            out.append(f"{self.label}: {NODE} was lost in nodes.list "
                       f"{', '.join(f'{t:.1f}' for t in self.lost[:5])} s into the flood")
        slowest = self.admin_slowest_s
        if slowest is not None and slowest > targets.admin_reply_s:
            out.append(f"{self.label}: nodes.list took {slowest:.2f} s during the flood "
                       f"(target {targets.admin_reply_s:g} s)")
        rss = self.rss_mb.get("manager")
        if rss is not None and rss > targets.manager_rss_mb:
            out.append(f"{self.label}: manager peak RSS {rss:.0f} MB "
                       f"(target {targets.manager_rss_mb:g} MB)")
        manager_log = self.logs.get("manager", LogStats())
        for trouble, lines in sorted(manager_log.worst.items()):
            if lines > targets.log_lines_per_s:
                out.append(f"{self.label}: {lines} manager log lines of kind {trouble!r} in one "
                           f"second (target {targets.log_lines_per_s}), e.g. "
                           f"{manager_log.example[trouble]}")
        return out


class Runner:
    """Floods the cluster's sockets, one kind at a time, and measures each flood."""

    def __init__(self, cluster: HostileCluster, seed: int = 1, flood_time: float = 120.0,
                 deadline: float = math.inf, progress: Callable[[str], None] | None = None
                 ) -> None:
        self.cluster = cluster
        self.progress = progress
        self.seed = seed
        self.flood_time = flood_time
        self.deadline = deadline
        self._senders: dict[str, Any] = {}
        self._runs_before: tuple[int, set[Path]] = (0, set())

    def sender(self, socket: str) -> Any:
        if socket not in self._senders:
            c = self.cluster
            fake, dashboard = c.fake, c.dashboard
            assert fake is not None and dashboard is not None
            make = {ROUTER: lambda: RouterSender(c.ctx, c.address(), c.server_public),
                    PULL: lambda: PullSender(c.ctx, c.address("pull"), fake),
                    AGENT: lambda: AgentSender(c.start_rogue()),
                    DASHBOARD: lambda: DashboardSender(dashboard.url)}
            self._senders[socket] = make[socket]()
        return self._senders[socket]

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()

    def until(self) -> float:
        return min(time.monotonic() + self.flood_time, self.deadline)

    def flood(self, socket: str, name: str, count: int) -> FloodResult:
        """``count`` messages of kind ``name`` to ``socket``, as fast as it takes them."""
        kind_, rng = KINDS[name], kind_rng(self.seed, socket, name)
        with self.measure(socket, name) as res:
            self.pour(res, (kind_.make(rng, socket) for _ in range(count)),
                      socket in kind_.fresh)
        return res

    def pour(self, res: FloodResult, messages: Iterator[Frames], fresh: bool) -> None:
        """Send ``messages`` to ``res.socket`` as fast as it takes them, within the flood's
        time; then wait (bounded) until the receiver has handled them all."""
        sender, until = self.sender(res.socket), self.until()
        for frames in messages:
            if time.monotonic() >= until:
                res.notes.append(f"time limit after {res.sent + res.stalled} messages")
                break
            ok = sender.send(frames, fresh, until)
            res.sent += ok
            res.stalled += not ok
        owner = self.cluster.watched().get(OWNER[res.socket])
        problem = sender.settle(time.monotonic() + SETTLE,
                                lambda: owner is not None and not owner.alive)
        if problem:
            res.hangs.append(problem)

    def flood_every_kind(self, socket: str, count: int) -> list[FloodResult]:
        """``count`` messages to ``socket``, split evenly over every kind."""
        names = list(KINDS)
        return [self.flood(socket, name, count // len(names) + (i < count % len(names)))
                for i, name in enumerate(names)]

    @contextlib.contextmanager
    def measure(self, socket: str, name: str) -> Iterator[FloodResult]:
        """Around a flood: reset peak RSS, note log offsets; afterwards check that every
        process lives and answers, and collect what the flood did."""
        res = FloodResult(socket, name)
        self.sender(socket)  # the rogue's agent, if it is one, is watched from the start
        watched = {n: w for n, w in self.cluster.watched().items() if w.alive}
        for w in watched.values():
            if w.pid is not None and not reset_hwm(w.pid):
                res.notes.append(f"peak RSS of {w.name} is since its start (clear_refs refused)")
        offsets = {n: log_size(w.log_path) for n, w in watched.items()}
        rogue = self.cluster.rogue
        self._runs_before = (len(rogue.updates) if rogue else 0, self._marks())
        start = time.monotonic()
        try:
            yield res
        finally:
            end = time.monotonic()
            res.seconds = end - start
            self._after(res, socket, end)
            checked = time.monotonic()
            self._collect(res, watched, offsets, start, checked)
            self._recover(res, socket)
            if self.progress is not None:
                self.progress(f"{res.label}: {res.sent} sent in {res.seconds:.1f} s, "
                              f"{len(res.deaths)} deaths, {len(res.hangs)} hangs, "
                              f"{len(res.problems())} missed targets")

    def _after(self, res: FloodResult, socket: str, end: float) -> None:
        """Hangs: each process must answer within ANSWER_DEADLINE of the flood's end."""
        c = self.cluster
        assert c.admin is not None and c.status is not None
        deadline = end + ANSWER_DEADLINE
        if c.admin.answered_after(end, deadline) is None:
            res.hangs.append(f"the manager did not answer nodes.list within {ANSWER_DEADLINE:g} s "
                             "after the flood")
        elif c.admin.answered_after(end, deadline, lambda s: s.state in ("ready", "busy")) is None:
            last = c.admin.last()
            res.hangs.append(f"{NODE} was not ready within {ANSWER_DEADLINE:g} s after the flood "
                             f"(nodes.list says {last.state if last else '?'!r})")
        if c.status.answered_after(end, deadline) is None:
            res.hangs.append(f"the dashboard did not answer /api/status within "
                             f"{ANSWER_DEADLINE:g} s after the flood")
        if socket == AGENT and c.rogue is not None and not c.rogue.beat_after(
                end, max(0.0, deadline - time.monotonic())):
            res.hangs.append(f"agent {ROGUE_NODE} sent no heartbeat within {ANSWER_DEADLINE:g} s "
                             "after the flood")
        if socket == AGENT and not res.started:
            res.started += self._started_runs()

    def _collect(self, res: FloodResult, watched: dict[str, Watched], offsets: dict[str, int],
                 start: float, checked: float) -> None:
        c = self.cluster
        assert c.admin is not None
        for n, w in watched.items():
            if not w.alive:
                tail = w.log_path.read_text(errors="replace")[-1500:]
                res.deaths.append(f"{w.name} died ({w.exit_status()}); its log ends:\n{tail}")
            elif w.pid is not None and (rss := vm_hwm_mb(w.pid)) is not None:
                res.rss_mb[n] = rss
            res.logs[n] = log_stats(w.log_path, offsets[n])
        res.admin_slowest_s = c.admin.slowest(start, checked)
        res.lost = [t for t, state in c.admin.states(start, checked) if state == "lost"]
        for probe in (c.admin, c.status, c.fake):
            if probe is not None and probe.error is not None:
                res.notes.append(f"{probe.name} failed: {probe.error!r}")

    def _recover(self, res: FloodResult, socket: str) -> None:
        """Before the next flood: restart what died or stays stuck, wait (bounded) for the
        rest, so that one flood's damage is not counted again against the next."""
        restarted = [w for w in self.cluster.watched().values() if not w.alive]
        for w in restarted:
            res.notes.append(f"restarted {w.name}")
            w.restart()
            if w.name == "dashboard" and DASHBOARD in self._senders:
                self._senders.pop(DASHBOARD).close()  # its session token died with it
        if not res.hangs and not restarted:
            return
        c, since = self.cluster, time.monotonic()
        assert c.admin is not None and c.status is not None
        deadline = since + RECOVERY
        if c.rogue is not None and c.rogue_agent is not None and c.rogue_agent.alive:
            c.rogue.send(c.rogue._welcome, deadline)  # a sane welcome undoes an absurd one
            if not c.rogue.beat_after(time.monotonic(), 5.0):
                res.notes.append(f"restarted {ROGUE_NODE}: stuck, not heartbeating")
                c.rogue_agent.stop()
                c.rogue_agent.spawn()
            c.rogue.beat_after(time.monotonic(), max(0.0, deadline - time.monotonic()))
        ready = c.admin.answered_after(since, deadline, lambda s: s.state in ("ready", "busy"))
        c.status.answered_after(since, deadline)
        res.notes.append(f"answered again {time.monotonic() - since:.1f} s after the checks"
                         if ready else f"still not answering {RECOVERY:g} s after the checks")

    def _marks(self) -> set[Path]:
        return set(self.cluster.rogue_workdir.rglob(f"{MARK}*"))

    def _started_runs(self) -> list[str]:
        """Runs the rogue's agent started during the flood (a pid in a run.update, or a
        marker file that a bad dispatch's command would leave)."""
        updates, marks = self._runs_before
        rogue = self.cluster.rogue
        out = [f"agent {ROGUE_NODE} started run {u.run_id[:80]!r} (pid {u.pid}, {u.state.value})"
               for u in (rogue.updates[updates:] if rogue else [])
               if u.pid is not None and not u.job_id.startswith("sentinel")]
        out += [f"a bad run.dispatch ran: {p} exists" for p in sorted(self._marks() - marks)]
        return sorted(set(out))

    # --- the floods the issue names -----------------------------------------------------------

    def first_batches(self, repeat: int, sizes_mb: tuple[float, ...] = (0.1, 1, 6, 15)
                      ) -> FloodResult:
        """A first metric batch of each size on a fresh PUSH with an accepted key."""
        with self.measure(PULL, "first-batch-on-fresh-push") as res:
            self.pour(res, (sized_batch(int(size * 1_000_000))
                            for _ in range(repeat) for size in sizes_mb), fresh=True)
        return res

    def register_flood(self, count: int, size: int = 15_000_000) -> FloodResult:
        """``agent.register`` bodies of ``size`` bytes, each from a key never accepted."""
        with self.measure(ROUTER, "15MB-register-unaccepted-key") as res:
            self.pour(res, (big_register(size, REGISTER_VARIANTS[i % len(REGISTER_VARIANTS)])
                            for i in range(count)), fresh=True)
        return res

    def claim_flood(self, count: int, size: int = 15_000_000) -> FloodResult:
        """Batches of ``size`` bytes whose msgpack headers claim 2**32-1 entries."""
        with self.measure(PULL, "15MB-batch-claiming-2**32") as res:
            self.pour(res, (claiming_batch(size, CLAIM_VARIANTS[i % len(CLAIM_VARIANTS)])
                            for i in range(count)), fresh=False)
        return res

    def amplification(self, count: int) -> FloodResult:
        """Batches of ~1 MB whose 1 MB tag value repeats on 60 rows (60 MB of lines each)."""
        rng = kind_rng(self.seed, PULL, "amplification")
        with self.measure(PULL, "amplification-1MB-tag-x60") as res:
            self.pour(res, (amplifying_batch(rng) for _ in range(count)), fresh=False)
        return res

    def bad_dispatches(self, which: list[tuple[str, Callable[[int], Frames]]],
                       name: str) -> FloodResult:
        """Rogue ``run.dispatch`` messages with bad fields; then a good one, whose run
        ending shows the agent has handled all before it. None may start a process."""
        rogue = self.sender(AGENT).rogue
        first = next(SEQ) % 10**6 * 100  # run ids and marker files of this call only
        with self.measure(AGENT, name) as res:
            self.pour(res, (build(first + i) for i, (_, build) in enumerate(which)), fresh=False)
            res.started += [f"{ROGUE_NODE} started a process for a run.dispatch whose {label}"
                            for i, (label, _) in enumerate(which)
                            if any(u.job_id == f"bad{first + i}" and u.pid is not None
                                   for u in rogue.updates)
                            or (self.cluster.rogue_workdir / f"{MARK}-{first + i}").exists()]
        return res

    def bad_welcomes(self) -> FloodResult:
        """Welcomes with absurd numbers, one at a time, each followed by a sane one: after
        each, the agent must live, heartbeat 3 times within 2 s, and not in a busy loop."""
        rogue = self.sender(AGENT).rogue
        agent = self.cluster.rogue_agent
        assert agent is not None
        with self.measure(AGENT, "agent.welcome-absurd-numbers") as res:
            for label, frames in ABSURD_WELCOMES:
                res.sent += rogue.send(frames, self.until())
                problem = self._beating_after(f"a welcome with {label}")
                if problem:
                    res.notes.append(f"restarted {ROGUE_NODE} after a welcome with {label}")
                    (res.deaths if "died" in problem else res.hangs).append(problem)
                    agent.stop()
                    agent.spawn()
                    rogue.beat_after(time.monotonic(), START_TIMEOUT)
        return res

    def _beating_after(self, what: str) -> str | None:
        """Why the rogue's agent is not heartbeating sanely after ``what`` (None: it is)."""
        rogue, agent = self.cluster.rogue, self.cluster.rogue_agent
        assert rogue is not None and agent is not None
        sent = time.monotonic()
        # Three beats: the one the agent had already planned may still come.
        beating = rogue.wait(lambda: sum(t > sent for t in rogue.beats[-3:]) == 3, 2.0)
        if beating:
            first = len(rogue.beats)
            rogue.wait(lambda: False, 0.3)  # a window to count beats in, not a synchronisation
            rate = (len(rogue.beats) - first) / 0.3
            if rate > BUSY_BEATS_PER_S:
                return f"agent {ROGUE_NODE} heartbeat {rate:.0f} times a second after {what}"
        if not agent.alive:
            tail = agent.log_path.read_text(errors="replace")[-1200:]
            return f"agent {ROGUE_NODE} died after {what}; its log ends:\n{tail}"
        rogue.send(rogue._welcome, time.monotonic() + 2.0)  # a sane welcome, whatever came
        if not beating:
            if rogue.beat_after(time.monotonic(), 3.0):
                return f"agent {ROGUE_NODE} beat fewer than 3 times in 2 s after {what}"
            return (f"agent {ROGUE_NODE} stopped heartbeating after {what}, and a sane "
                    "welcome did not bring it back")
        return None

    def rogue_gone(self) -> FloodResult:
        """The rogue closes; its agent, pointed at nothing else, must notice and live on."""
        self.sender(AGENT)
        c = self.cluster
        agent = c.rogue_agent
        assert agent is not None
        with self.measure(AGENT, "rogue-gone") as res:
            offset = log_size(agent.log_path)
            c.stop_rogue()
            # (measure() counts it dead if it is; it must notice the silence meanwhile.)
            if not wait_quietly(lambda: b"silent for" in agent.log_path.read_bytes()[offset:],
                                10.0):
                res.hangs.append(f"agent {ROGUE_NODE} did not notice its manager was gone "
                                 "within 10 s")
        self._senders.pop(AGENT, None)
        return res


def wait_quietly(done: Callable[[], bool], timeout: float) -> bool:
    """:func:`wait_for` that answers False at the deadline instead of failing."""
    try:
        wait_for(done, timeout, "a condition", interval=0.05)
        return True
    except AssertionError:
        return False


# --- the table and the command line --------------------------------------------------------------


def format_table(results: list[FloodResult], targets: Targets = TARGETS) -> str:
    """One row per flood: the manager's figures (the targets are about it), and for the
    agent's and the dashboard's floods those of the process that owns the socket too."""
    head = (f"{'socket':<9} {'kind':<30} {'sent':>5} {'deaths':>6} {'hangs':>5} "
            f"{'slowest nodes.list':>18} {'peak RSS MB':>12}  worst log lines/s: kind")
    lines = [head, "-" * (len(head) + 30)]
    for r in results:
        slowest = "-" if r.admin_slowest_s is None else f"{r.admin_slowest_s:.3f} s"
        owner = OWNER[r.socket]
        rss = [f"{r.rss_mb[n]:.0f}" if n in r.rss_mb else "-" for n in dict.fromkeys(
            ["manager", owner])]
        logs = []
        for name in dict.fromkeys(["manager", owner]):
            worst, n = r.logs.get(name, LogStats()).peak
            logs.append(f"{'' if name == 'manager' else name + ' '}{n}{': ' + worst if n else ''}")
        lines.append(f"{r.socket:<9} {r.kind[:30]:<30} {r.sent:>5} {len(r.deaths):>6} "
                     f"{len(r.hangs):>5} {slowest:>18} {' / '.join(rss):>12}  "
                     f"{'; '.join(logs)[:110]}")
    problems = [p for r in results for p in r.problems(targets)]
    lines += ["", "peak RSS and log lines: the manager's, then (agent, dashboard) the socket "
              "owner's; log lines count WARNING and worse, per kind of trouble",
              f"targets: nodes.list <= {targets.admin_reply_s:g} s during every flood; manager "
              f"peak RSS <= {targets.manager_rss_mb:g} MB; <= {targets.log_lines_per_s} manager "
              f"log line per second per kind; no death; no hang (answers within "
              f"{ANSWER_DEADLINE:g} s after each flood); {NODE} never lost; no bad dispatch runs"]
    lines += ([f"missed ({len(problems)}):"] + [f"  - {p}" for p in problems]
              if problems else ["every target met"])
    notes = [f"  {r.label}: {n}" for r in results for n in r.notes]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def run_all(runner: Runner, sockets: list[str], count: int, repeat: int) -> list[FloodResult]:
    """Every kind against every socket in ``sockets``, then that socket's big floods."""
    results: list[FloodResult] = []
    for socket in sockets:
        if time.monotonic() >= runner.deadline:
            break
        results += runner.flood_every_kind(socket, count)
        if socket == ROUTER:
            results.append(runner.register_flood(repeat))
        elif socket == PULL:
            results.append(runner.first_batches(repeat))
            results.append(runner.claim_flood(repeat))
            results.append(runner.amplification(min(30, max(10, repeat))))
        elif socket == AGENT:
            results.append(runner.bad_dispatches(MALFORMED_DISPATCHES, "run.dispatch-malformed"))
            results.append(runner.bad_dispatches(ABSURD_DISPATCHES, "run.dispatch-absurd-numbers"))
            results.append(runner.bad_welcomes())
            results.append(runner.rogue_gone())
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.hostile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000,
                        help="messages per socket, spread over the kinds (default 10000)")
    parser.add_argument("--sockets", default=",".join(SOCKETS),
                        help="which sockets to flood (default: all four)")
    parser.add_argument("--repeat", type=int, default=20,
                        help="each first-batch size, 15 MB register and 2**32 batch this many "
                             "times; amplification batches: this, within 10-30 (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flood-time", type=float, default=300.0,
                        help="longest one flood may send, seconds (default 300)")
    parser.add_argument("--time-limit", type=float, default=3600.0,
                        help="longest the whole run may take, seconds (default 3600)")
    args = parser.parse_args(argv)
    args.sockets = [s.strip() for s in args.sockets.split(",") if s.strip()]
    unknown = sorted(set(args.sockets) - set(SOCKETS))
    if unknown:
        parser.error(f"unknown socket(s) {', '.join(unknown)}; choose from {', '.join(SOCKETS)}")
    return args


def _out_of_time(signum: int, frame: Any) -> None:
    raise TimeoutError("the --time-limit ran out")


def main(argv: list[str] | None = None) -> int:
    """Run the floods; 1 if a process died or hung (other missed targets are reported)."""
    args = parse_args(argv)
    started = time.monotonic()
    # Floods stop at the soft deadline; the alarm is the backstop for anything stuck.
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(max(1, int(args.time_limit) + 120))
    try:
        with tempfile.TemporaryDirectory(prefix="ptap-hostile-") as tmp:
            results = bench(Path(tmp), args, started + args.time_limit)
    finally:
        signal.alarm(0)
    print(format_table(results))
    print(f"\n{sum(r.sent for r in results)} messages in {time.monotonic() - started:.0f} s; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 1 if any(r.deaths or r.hangs for r in results) else 0


def bench(tmp: Path, args: argparse.Namespace, deadline: float) -> list[FloodResult]:
    influx = InfluxServer(tmp / "influxdb", die_with_parent=True)
    influx.start()
    try:
        create_database(influx.url, "ptap")
        cluster = HostileCluster(tmp, influx.url, "ptap", logs=[])
        runner = Runner(cluster, seed=args.seed, flood_time=args.flood_time, deadline=deadline,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
        try:
            cluster.start()
            return run_all(runner, args.sockets, args.count, args.repeat)
        finally:
            runner.close()
            cluster.stop()
    finally:
        influx.stop()


if __name__ == "__main__":
    sys.exit(main())
