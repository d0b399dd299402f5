"""Encoding and decoding of bus messages: the security boundary of every socket.

Decoding never trusts a peer. Before msgpack runs, the body's size is checked
against its type's cap (:data:`MAX_BODY_BYTES`: a heartbeat has no business
being megabytes); msgpack then runs with ``strict_map_key``, ``raw=False`` and
length limits no larger than the body itself, so no header can claim more
than the frame holds; and the decoded map is checked against the message
class's type hints, because random bytes often *do* decode as msgpack. Every
failure is a :class:`bus.errors.ProtocolError`.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgpack

from bus.errors import MalformedFrame, MessageTooLarge, SchemaError, UnknownMessageType
from bus.messages import MESSAGE_CLASSES, Message, MsgType


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on what a peer may make us allocate."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_str_len: int = 1024 * 1024
    max_array_len: int = 1_000_000
    max_map_len: int = 65_536


DEFAULT_LIMITS = Limits()

KiB, MiB = 1024, 1024 * 1024
#: The largest body each type may have, whatever the socket allows: checked on
#: the frame's length before anything is decoded. Types not listed (metric
#: batches, replies, events) are bounded by :attr:`Limits.max_message_bytes`
#: alone, which each socket's owner sets. ``agent.register`` and ``run.update``
#: carry runs' output tails (up to 256 KiB a stream, each byte of which may be
#: three once decoded); a manager bounds what an unaccepted key may send far
#: lower (manager/frame_gate.py).
MAX_BODY_BYTES: dict[MsgType, int] = {
    MsgType.REGISTER: 4 * MiB,
    MsgType.WELCOME: 4 * KiB,
    MsgType.HEARTBEAT: 1 * KiB,
    MsgType.RUN_DISPATCH: 1 * MiB,
    MsgType.RUN_CANCEL: 8 * KiB,
    MsgType.RUN_UPDATE: 2 * MiB,
    MsgType.RUN_ACK: 1 * KiB,
    MsgType.METRICS_ACK: 256 * KiB,
    MsgType.NODES_LIST: 4 * KiB,
    MsgType.NODE_FORGET: 4 * KiB,
    MsgType.JOB_SUBMIT: 1 * MiB,
    MsgType.JOBS_LIST: 4 * KiB,
    MsgType.JOB_GET: 4 * KiB,
    MsgType.JOB_CANCEL: 4 * KiB,
    MsgType.KEYS: 4 * KiB,
    MsgType.REPORT_GET: 4 * KiB,
    MsgType.COMPARE_GET: 4 * KiB,
    MsgType.HISTORY_GET: 16 * KiB,
    MsgType.STATUS_GET: 4 * KiB,
    MsgType.ERROR: 64 * KiB,
}


def body_cap(msg_type: MsgType, limits: Limits = DEFAULT_LIMITS) -> int:
    """The largest body a ``msg_type`` message may have under ``limits``."""
    return min(MAX_BODY_BYTES.get(msg_type, limits.max_message_bytes), limits.max_message_bytes)


def encode(msg: Message) -> list[bytes]:
    """``[type, body]`` frames for ``msg``."""
    type_frame, plan = _encode_plan(type(msg))  # type: ignore[arg-type]  # hashable
    body = {name: (_to_wire(getattr(msg, name)) if deep else getattr(msg, name))
            for name, deep in plan}
    return [type_frame, msgpack.packb(body, use_bin_type=True)]


def encode_event(kind: str, ts: float, detail: dict[str, Any], *, node: str = "",
                 job_id: str = "", run_id: str = "", state: str = "") -> list[bytes]:
    """``encode(Event(...))`` of these fields, the same bytes, without making the
    message first: the manager publishes several events per run (a job to 1,000
    nodes, 5,000), and making the dataclass and copying it field by field into a
    map was half of each one's cost. The map's keys are Event's fields, in order
    (tests/bus/test_codec_events.py holds the two together)."""
    return [_EVENT_FRAME, msgpack.packb(
        {"kind": kind, "ts": ts, "node": node, "job_id": job_id, "run_id": run_id,
         "state": state, "detail": detail}, use_bin_type=True)]


_EVENT_FRAME = MsgType.EVENT.value.encode()


@cache
def _encode_plan(cls: type[Message]) -> tuple[bytes, tuple[tuple[str, bool], ...]]:
    """The type frame (made once: an enum's ``value`` is a slow attribute), and which
    fields hold records or enums that need converting. Plain fields (a metric batch's
    rows above all) go to msgpack untouched, which keeps encoding a batch at
    msgpack's own speed."""
    hints = typing.get_type_hints(cls)
    return cls.TYPE.value.encode(), tuple((f.name, _needs_conversion(hints[f.name]))
                                          for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def _needs_conversion(hint: Any) -> bool:
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, enum.Enum)):
        return True
    return any(_needs_conversion(a) for a in typing.get_args(hint))


#: Each type's frame, as :func:`encode` writes it (a lookup, not the enum's call).
_TYPE_FRAMES: dict[bytes, MsgType] = {t.value.encode(): t for t in MsgType}


def decode(frames: list[bytes], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse ``[type, body]`` frames into a validated message, or raise ProtocolError."""
    if len(frames) != 2:
        raise MalformedFrame(f"expected 2 frames [type, body], got {len(frames)}")
    raw_type, body = frames
    msg_type = _TYPE_FRAMES.get(bytes(raw_type[:32]))
    if msg_type is None:
        raise UnknownMessageType(f"unknown message type {bytes(raw_type[:40])!r}")
    cap = body_cap(msg_type, limits)
    if len(body) > cap:
        raise MessageTooLarge(f"{msg_type}: {len(body)} bytes is over its {cap}-byte limit")
    data = unpack(body, limits)
    if not isinstance(data, dict):
        raise MalformedFrame(f"{msg_type}: body is {type(data).__name__}, expected a map")
    message: Message = _build(MESSAGE_CLASSES[msg_type], data, msg_type.value)
    return message


def unpack(body: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """msgpack-decode one body with the limits; raises MalformedFrame.

    Every element takes at least one byte (a map entry two), so no length
    header may claim more than the body's size. The cyclic garbage collector
    is paused meanwhile: msgpack builds no cycles, and a collection triggered
    every few hundred new containers made decoding a large batch 3-7 times
    slower, with nothing to collect.
    """
    size = len(body)
    paused = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=min(limits.max_str_len, size),
            max_bin_len=min(limits.max_str_len, size),
            max_array_len=min(limits.max_array_len, size),
            max_map_len=min(limits.max_map_len, size // 2),
            max_ext_len=0,
        )
    # msgpack signals bad input with several unrelated exception types.
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, RecursionError) as exc:
        raise MalformedFrame(f"body is not valid msgpack: {exc}") from None
    finally:
        if paused:
            gc.enable()


#: How much of a body :func:`peek_str` reads first: enough for the small fields
#: that our encoder writes before a batch's rows.
PEEK_BYTES = 512


def peek_str(frames: list[bytes], name: str, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The string field ``name`` of a ``[type, body]`` message without decoding the rest.

    None unless the body is a map in which ``name`` occurs exactly once, with a
    string value. Every key is read, so a second ``name`` further on (which
    :func:`decode` would take instead, as msgpack keeps the last) is caught,
    but the value of the *last* key is never read: the encoder writes a
    batch's rows last, so checking a batch's ``node`` costs a few µs whatever
    its size. Only the first :data:`PEEK_BYTES` are read unless more are needed.
    """
    if len(frames) != 2 or len(frames[1]) > limits.max_message_bytes:
        return None
    body = frames[1]
    view = memoryview(body)
    try:
        return _peek(view[:PEEK_BYTES], name, limits)
    except msgpack.OutOfData:
        if len(view) <= PEEK_BYTES:
            return None
    except _PEEK_ERRORS:
        return None
    try:
        return _peek(view, name, limits)
    except (msgpack.OutOfData, *_PEEK_ERRORS):
        return None


class _Duplicate(Exception):
    pass


_PEEK_ERRORS = (ValueError, TypeError, msgpack.FormatError, msgpack.StackError,
                RecursionError, _Duplicate)


def _peek(data: memoryview, name: str, limits: Limits) -> str | None:
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=True, max_buffer_size=max(len(data), 1),
        max_str_len=limits.max_str_len, max_bin_len=limits.max_str_len,
        max_array_len=limits.max_array_len, max_map_len=limits.max_map_len, max_ext_len=0)
    unpacker.feed(data)
    size = unpacker.read_map_header()
    found: str | None = None
    for i in range(size):
        key = unpacker.unpack()
        if key == name:
            if found is not None:
                raise _Duplicate(name)
            value = unpacker.unpack()
            if type(value) is not str:
                return None
            found = value
        elif i < size - 1:
            unpacker.skip()
    return found


def to_dict(obj: Any) -> Any:
    """Plain dicts/lists for a message or nested record (for JSON output too)."""
    return _to_wire(obj)


def _to_wire(obj: Any) -> Any:
    # Most values are plain (a run report's 12 fields, a spec's): returned after one
    # type lookup, not the dataclass and list checks (5x slower over a whole report).
    if type(obj) in _PLAIN:
        return obj
    names = _field_names(type(obj))  # type: ignore[arg-type]  # classes are hashable
    if names is not None:
        return {name: _to_wire(getattr(obj, name)) for name in names}
    if isinstance(obj, list):
        return [_to_wire(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


#: Types :func:`_to_wire` returns as they are (exactly these: not subclasses, as enums are).
_PLAIN = frozenset({str, int, float, bool, type(None), bytes, dict})


@cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass ``cls``, in order; None for any other type (a
    class itself is not a record: its type is ``type``, which is no dataclass)."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


# --- validation ---------------------------------------------------------------

Checker = Callable[[Any, str], Any]


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    kwargs = {}
    for name, required, check, plain in _schema(cls):
        if name in data:
            value = data[name]
            # A value of a type its hint takes as it is needs no checker (nor the
            # field's path, made for error messages): most fields of most messages.
            kwargs[name] = value if type(value) in plain else check(value, f"{where}.{name}")
        elif required:
            raise SchemaError(f"{where}: missing field {name!r}")
    return cls(**kwargs)


@cache
def _schema(cls: type) -> tuple[tuple[str, bool, Checker, frozenset[type]], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        hint = hints[f.name]
        out.append((f.name, required, _checker(hint), _plain_types(hint)))
    return tuple(out)


def _plain_types(hint: Any) -> frozenset[type]:
    """The exact types whose values :func:`_checker`'s check of ``hint`` returns
    unchanged, whatever they hold: scalars, and unions of them. An ``int`` is left
    out wherever a ``float`` is allowed, as that check turns it into a float."""
    if hint in (str, int, float, bool, type(None)):
        return frozenset({hint})
    if typing.get_origin(hint) not in (types.UnionType, typing.Union):
        return frozenset()
    args = typing.get_args(hint)
    if not all(a in (str, int, float, bool, type(None)) for a in args):
        return frozenset()
    return frozenset(a for a in args if not (a is int and float in args))


def _checker(hint: Any) -> Checker:  # noqa: C901 - one branch per kind of hint
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return lambda v, where: v
    if origin in (types.UnionType, typing.Union):
        checkers = [_checker(a) for a in args]
        if type(None) in args:  # None first: the others would each raise, and it is common
            return lambda v, where: None if v is None else _first_ok(checkers, v, where, hint)
        return lambda v, where: _first_ok(checkers, v, where, hint)
    if hint is type(None):
        return _exact(type(None), "nil")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v, where: _enum(hint, v, where)
    if dataclasses.is_dataclass(hint):
        return lambda v, where: _nested(hint, v, where)  # type: ignore[arg-type]
    if hint is bool:
        return _exact(bool, "a boolean")
    if hint is int:
        return lambda v, where: _int(v, where)
    if hint is float:
        return lambda v, where: _float(v, where)
    if hint is str:
        return _exact(str, "a string")
    if origin is list:
        item = _checker(args[0])
        return lambda v, where: [item(x, where) for x in _exact(list, "a list")(v, where)]
    if origin is dict:
        key, val = _checker(args[0]), _checker(args[1])
        return lambda v, where: {key(k, where): val(x, f"{where}.{k}")
                                 for k, x in _exact(dict, "a map")(v, where).items()}
    raise TypeError(f"codec cannot validate type hint {hint!r}")


def _exact(tp: type, what: str) -> Checker:
    def check(v: Any, where: str) -> Any:
        if type(v) is not tp:
            raise SchemaError(f"{where}: expected {what}, got {type(v).__name__}")
        return v
    return check


def _int(v: Any, where: str) -> int:
    if type(v) is not int:
        raise SchemaError(f"{where}: expected an integer, got {type(v).__name__}")
    return v


def _float(v: Any, where: str) -> float:
    if type(v) not in (int, float):
        raise SchemaError(f"{where}: expected a number, got {type(v).__name__}")
    return float(v)


def _enum(tp: type[enum.Enum], v: Any, where: str) -> Any:
    if type(v) is str:  # a lookup, not the enum's call (3x slower); the same member
        member = _members(tp).get(v)
        if member is not None:
            return member
    try:
        return tp(v)
    except ValueError:
        raise SchemaError(f"{where}: {v!r} is not one of {[e.value for e in tp]}") from None


@cache
def _members(tp: type[enum.Enum]) -> dict[str, enum.Enum]:
    """``tp``'s members by their string values."""
    return {m.value: m for m in tp if type(m.value) is str}


def _nested(cls: type, v: Any, where: str) -> Any:
    if type(v) is not dict:
        raise SchemaError(f"{where}: expected a map, got {type(v).__name__}")
    return _build(cls, v, where)


def _first_ok(checkers: list[Checker], v: Any, where: str, hint: Any) -> Any:
    for check in checkers:
        try:
            return check(v, where)
        except SchemaError:
            continue
    raise SchemaError(f"{where}: {type(v).__name__} does not match {hint}")
