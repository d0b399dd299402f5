"""Encode wire series (``bus/metrics.py``) to InfluxDB line protocol.

This is the manager's hot path (docs/architecture.md#metric-path), so it works on the wire form —
``[measurement, tags, fields, rows]`` — checks rows while it encodes them
(:func:`encode_batch`), and does per point only what depends on the point:

* each series' key (``measurement,tag=v,... ``) and field keys (``field=``)
  are built once per series and kept across batches (agents send the same
  series in every batch, often one row each); a cached series also proves
  its header was checked;
* the rows of a series go through a fast path that writes them all or
  declines the whole series: rows of finite floats and int64 ints led by a
  timestamp inside the window. That path is compiled
  (``manager/_lineproto_c.c``, built by ``setup.py`` where a C compiler is
  installed; about 0.15 µs a point, short decimals written straight from
  their digits). Without it, the same path runs in Python, at about 0.8 µs
  (``manager/lineproto_rows.py``: an f-string compiled per column layout,
  column-wise checks in C builtins, a cache of float texts);
* series the fast path declines (a None, a NaN, a string, a bad row) go
  row by row with the general rules below (``RowWriter.into``).

``scripts/bench/lineproto.py`` compares it with ``influxdb_client.Point`` in
the same run, and ``scripts/bench/ingest.py`` times it inside the ingest.

Rules (as InfluxDB 1.x parses them, and as Telegraf writes them):

* measurement: ``,`` and space are escaped; tag keys, tag values and field
  keys: ``,``, ``=`` and space. Tab, newline, CR and form feed would end or
  break the line, so they are written as the two characters ``\\t`` etc.
* a name ending in ``\\`` gets an escaped space appended (as influxdb_client
  does): InfluxDB cannot store the trailing backslash, and the line would
  not parse.
* tags are sorted by key (what InfluxDB recommends, and what it would do
  itself at a cost); a tag with an empty key or value is left out, because
  InfluxDB rejects the whole line for it.
* values: ``int`` → ``123i``, ``float`` → ``repr`` (NaN and ±inf are left out:
  InfluxDB rejects them), ``bool`` → ``true``/``false``, ``str`` → quoted
  with ``"`` and ``\\`` escaped and newline/CR written as ``\\n``/``\\r`` (so
  a payload splits into its points on newlines); ``None`` is left out. A
  row with no field left is not written at all.
* ints outside int64 are sent as they are; InfluxDB rejects such a line and
  the write policy drops only that line (``manager/sinks/policy.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from manager.lineproto_rows import VECTOR_MIN, RowWriter

__all__ = ["encode_batch", "encode_series", "encode_lines", "encode_str_lines",
           "escape_measurement", "escape_key", "Encoded", "MIN_TS", "MAX_TS", "MAX_BATCH_CHARS",
           "ENCODER"]

try:  # built by setup.py where a C compiler and Python's headers are installed
    from manager._lineproto_c import encode_rows as _compiled_rows
except ImportError:
    _compiled_rows = None
#: Which fast path :func:`encode_batch` takes: "compiled" or "python" (logged at start-up).
ENCODER = "python" if _compiled_rows is None else "compiled"

# Characters that cannot appear raw anywhere in a line: written escaped as
# Telegraf does, so a tag value with a newline cannot split a point in two.
_CONTROL = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
_MEAS_TABLE = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
_KEY_SPECIALS = frozenset(",= \t\n\r\f\\")


def _trailing_backslash(text: str) -> str:
    # A final backslash would escape the separator after it, and InfluxDB 1.x
    # cannot store a name ending in one; like influxdb_client, end it with an
    # escaped space so the line still parses (the name gets a trailing space).
    return text + " " if text.endswith("\\") else text


def escape_measurement(name: str) -> str:
    """Escape a measurement name for line protocol (commas, spaces)."""
    return _trailing_backslash(name.translate(_MEAS_TABLE))


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (commas, equals signs, spaces)."""
    # Most names need nothing; the set test is cheaper than translate().
    if _KEY_SPECIALS.isdisjoint(text):
        return text
    return _trailing_backslash(text.translate(_KEY_TABLE))


def _series_prefix(measurement: str, tags: dict[str, Any] | None) -> str:
    """``measurement,k1=v1,k2=v2 `` with escaping, tags sorted, trailing space."""
    parts = [escape_measurement(measurement)]
    if tags:
        for key in sorted(tags):
            value = tags[key]
            if value is None:
                continue
            value = value if type(value) is str else str(value)
            if key and value:
                parts.append(f"{escape_key(key)}={escape_key(value)}")
    return ",".join(parts) + " "


#: Timestamps InfluxDB can store (int64 nanoseconds): the window when a caller gives none.
MIN_TS, MAX_TS = -(2**63), 2**63 - 1
#: The most text a batch's rows may repeat (series and field keys): four times the
#: largest message, far above what agents send (a few kB a tick).
MAX_BATCH_CHARS = 64 * 1024 * 1024


class _SeriesCode(RowWriter):
    """A series' header as line protocol, and its rows' writer (:class:`RowWriter`).

    ``node`` is its ``node`` tag (None without one); ``row_chars`` what each
    of its lines repeats (series key, field keys, separators, timestamp).
    """

    __slots__ = ("node", "row_chars")

    def __init__(self, measurement: str, tags: dict[str, Any] | None, fields: list[str]) -> None:
        keys = [escape_key(f) + "=" for f in fields if f]
        keep = None if all(fields) else [i + 1 for i, name in enumerate(fields) if name]
        super().__init__(_series_prefix(measurement, tags), keys, len(fields) + 1, keep)
        self.node = tags.get("node") if tags else None
        self.row_chars = len(self.prefix) + sum(map(len, keys)) + len(keys) + 21


# Series seen recently, keyed by (measurement, tag items, fields): agents send
# the same series in every batch, often one row each, so building the key and
# the formatter once per series *ever* rather than per batch matters as much
# as the per-row cost. Cleared when full (pids churn through `proc` tags).
_SERIES_CACHE: dict[tuple[Any, ...], _SeriesCode] = {}
_MAX_SERIES = 20_000
#: Headers longer than this are not cached: an agent's are ~100 characters, and
#: a peer sending new series with megabyte tags must not fill the cache with them
#: (it holds 20,000 × at most ~1 KiB of text this way).
_MAX_CACHED_HEADER = 512


def _good_header(s: list[Any]) -> bool:
    """``[measurement, {tag: str}, [field: str, ...], rows]`` with a non-empty
    measurement, and names InfluxDB 1.x reads back as written (:func:`_readable`)."""
    return (type(s[0]) is str and s[0] != ""
            and type(s[1]) is dict and all(type(k) is str and type(v) is str
                                           for k, v in s[1].items())
            and type(s[2]) is list and all(type(f) is str for f in s[2])
            and _readable(s[0], s[1], s[2]))


#: A backslash InfluxDB 1.x cannot read back: before an escaped character or
#: another backslash (its scanner pairs ``\\\\`` and never unescapes it, so
#: ``a\\\\ b`` cannot be written at all), or before t, n, r or f (which would
#: collide with our escaped control characters: a newline and backslash-n are
#: both written ``\\n``).
_UNREADABLE_BACKSLASH = re.compile(r"\\[\\,= \t\n\r\ftnrf]")


def _readable(measurement: str, tags: dict[str, str], fields: list[str]) -> bool:
    """False for names no escaping makes InfluxDB 1.x store as written, so that
    their series is dropped and counted instead of stored under another name or
    refused with the lines around it: a backslash as :data:`_UNREADABLE_BACKSLASH`
    says, a measurement starting with ``#`` (a comment line: nothing is stored,
    yet InfluxDB answers 204), a measurement or field key starting with NUL
    (skipped as blank)."""
    if measurement[0] in "#\x00" or _UNREADABLE_BACKSLASH.search(measurement):
        return False
    if any(_UNREADABLE_BACKSLASH.search(k) or _UNREADABLE_BACKSLASH.search(v)
           for k, v in tags.items()):
        return False
    return not any(f[:1] == "\x00" or _UNREADABLE_BACKSLASH.search(f) for f in fields)


def _series_code(s: Any) -> _SeriesCode | None:
    """The :class:`_SeriesCode` for a wire series' header; None if the header is malformed.

    A cached code proves its header was checked: only well-formed headers are
    cached, and a key made of exact ``str`` values never equals one holding
    anything else.
    """
    if type(s) is not list or len(s) != 4 or type(s[3]) is not list:
        return None
    measurement, tags, fields, _ = s
    key = None
    if type(tags) is dict and type(fields) is list:
        try:
            key = (measurement, tuple(tags.items()), tuple(fields))
            code = _SERIES_CACHE.get(key)
        except TypeError:  # an unhashable tag value: malformed, found below
            key = code = None
        if code is not None:
            return code
    if not _good_header(s):
        return None
    code = _SeriesCode(measurement, tags, fields)
    if key is not None and code.row_chars <= _MAX_CACHED_HEADER:
        if len(_SERIES_CACHE) >= _MAX_SERIES:
            _SERIES_CACHE.clear()
        _SERIES_CACHE[key] = code
    return code


class Encoded(NamedTuple):
    """One batch as line protocol, and what was left out of it (in rows)."""

    payload: bytes  # one line per point, newline-separated, UTF-8
    points: int
    dropped: int  # malformed series or rows, timestamps outside the window
    foreign: int  # series not tagged with the sending node
    oversized: int  # rows past the batch's size bound


def encode_batch(series_list: Iterable[Any], lo: int = MIN_TS, hi: int = MAX_TS,
                 node: str | None = None, max_chars: int = MAX_BATCH_CHARS) -> Encoded:
    """Check and encode the series of one batch.

    A series with a malformed header is dropped whole; a row that is not a list of
    ``len(fields) + 1`` plain values led by an int timestamp inside ``[lo, hi]`` is
    dropped alone (both counted in ``dropped``). A row with no writable field (all None,
    NaN or ±inf) is neither written nor counted. With ``node`` given, a series whose
    ``node`` tag is anything else is dropped and counted in ``foreign``: a node writes
    only its own series.

    Every line repeats its series' key and field keys, so a small message can ask for a
    huge payload (a 1 MB tag value on a million one-byte rows). Once the rows' repeated
    text passes ``max_chars``, the rest of the batch is dropped and counted in
    ``oversized``: no agent sends that, and the manager must not run out of memory over it.
    """
    out: list[str] = []
    points = dropped = foreign = oversized = 0
    compiled = _compiled_rows
    for s in series_list:
        code = _series_code(s)
        if code is None:
            dropped += len(s[3]) if type(s) is list and len(s) == 4 and type(s[3]) is list else 1
            continue
        rows = s[3]
        if node is not None and code.node != node:
            foreign += len(rows)
            continue
        max_chars -= len(rows) * code.row_chars
        if max_chars < 0:
            oversized += len(rows)
            continue
        if rows and code.keep is None:
            # The fast paths, which write every row or decline the whole series.
            if compiled is not None:
                text = compiled(code.prefix, code.keys, rows, lo, hi)
            elif len(rows) == 1:  # the usual shape: an agent sends each series once a tick
                text = code.one(rows[0], lo, hi)
            elif len(rows) >= VECTOR_MIN:
                text = code.block(rows, lo, hi)
            else:
                text = None
            if text is not None:
                out.append(text)
                points += len(rows)
                continue
        before = len(out)
        dropped += code.into(rows, lo, hi, out)
        points += len(out) - before  # one line per row written
    return Encoded("\n".join(out).encode(), points, dropped, foreign, oversized)


def encode_str_lines(series_list: Iterable[Any]) -> list[str]:
    """Encode wire series to a list of line-protocol lines (``str``, no newline)."""
    encoded = encode_batch(series_list)
    return encoded.payload.decode().split("\n") if encoded.points else []


def encode_lines(series_list: Iterable[Any]) -> list[bytes]:
    """Encode wire series to one ``bytes`` line per point (no newline)."""
    encoded = encode_batch(series_list)
    return encoded.payload.split(b"\n") if encoded.points else []


def encode_series(series_list: Iterable[Any]) -> tuple[bytes, int]:
    """Encode wire series to one line-protocol payload: ``(payload, points)``.

    ``points`` is fewer than the rows given when rows had no writable field.
    """
    encoded = encode_batch(series_list)
    return encoded.payload, encoded.points
