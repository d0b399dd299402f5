"""Encode wire series (``bus/metrics.py``) to InfluxDB line protocol.

This is the manager's hot path (DESIGN §5), so it works on the wire form —
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
  installed; about 0.15 µs a point). Without it, the same path runs in
  Python (about 0.8 µs): rows are formatted by an f-string compiled once per
  column layout, and a series of :data:`VECTOR_MIN` rows or more is checked
  column by column in C builtins (``_SeriesCode.block``);
* series the fast path declines (a None, a NaN, a string, a bad row) go
  row by row with the general rules below (:func:`_rows_into`);
* float text is ``repr``, taken from a cache for short values, as metric
  values repeat.

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

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any, NamedTuple

__all__ = ["encode_batch", "encode_series", "encode_lines", "encode_str_lines",
           "escape_measurement", "escape_key", "Encoded", "MIN_TS", "MAX_TS", "MAX_BATCH_CHARS",
           "PLAIN", "ENCODER"]

try:  # built by setup.py where a C compiler and Python's headers are installed
    from manager._lineproto_c import encode_rows as _compiled_rows
except ImportError:
    _compiled_rows = None  # type: ignore[assignment]
#: Which fast path :func:`encode_batch` takes: "compiled" or "python" (logged at start-up).
ENCODER = "python" if _compiled_rows is None else "compiled"

# Characters that cannot appear raw anywhere in a line: written escaped as
# Telegraf does, so a tag value with a newline cannot split a point in two.
_CONTROL = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
_MEAS_TABLE = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
# String values: InfluxDB unescapes only \\ and \"; a raw newline would still
# parse, but the payload is split on newlines when a write must be bisected.
_STR_TABLE = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})
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


# ``repr`` of floats, remembered: metric values such as psutil's percentages
# (one decimal) repeat a lot, and a lookup in an exact dict costs ~40 ns where
# ``repr`` costs ~110. Formatters index it directly (an exact dict is what the
# interpreter's fast subscript handles; a __missing__ hook would cost ~100 ns a
# row), so a miss raises KeyError and the caller learns the row's floats and
# formats it again (_learn). Cleared when full. ``-0.0`` equals ``0.0`` as a
# key and is written ``0.0`` by cached columns: the one value this loses is
# the sign of zero.
_SHORT_REPR = 7
_MAX_REPRS = 65_536
_REPRS: dict[float, str] = {0.0: "0.0"}


def _learn(rows: Iterable[list[Any]]) -> None:
    """Put the reprs of the finite floats of ``rows`` into the cache (after a miss)."""
    if len(_REPRS) >= _MAX_REPRS:
        _REPRS.clear()
    for row in rows:
        for value in row:
            if type(value) is float and value - value == 0.0 and value not in _REPRS:
                _REPRS[value] = repr(value)


# Compiled row formatters, one per column layout: a string of one code per
# value, "i" int, "f" float, "c" float through _REPRS. The generated source
# holds only names and indices, never data from the wire: the prefix, keys
# and cache are passed in as closure arguments.
_FORMATTERS: dict[str, Callable[..., Callable[[list[Any]], str]]] = {}
_MAX_FORMATTERS = 512


def _formatter_factory(codes: str) -> Callable[..., Callable[[list[Any]], str]]:
    """Compile ``make(prefix, cache, k0, k1, ...) -> (row -> line)`` for a layout.

    An f-string formats the whole row with one bytecode per value, about
    twice as fast as ``str.format`` or a loop over the values.
    """
    factory = _FORMATTERS.get(codes)
    if factory is not None:
        return factory
    templates = {
        "i": "{{k{0}}}{{r[{1}]}}i",
        "f": "{{k{0}}}{{r[{1}]!r}}",
        "c": "{{k{0}}}{{m[r[{1}]]}}",
    }
    values = ",".join(templates[code].format(i, i + 1) for i, code in enumerate(codes))
    names = ", ".join(f"k{i}" for i in range(len(codes)))
    source = f"def make(p, m, {names}):\n    return lambda r: f'{{p}}{values} {{r[0]}}'\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "<lineproto row formatter>", "exec"), namespace)
    if len(_FORMATTERS) >= _MAX_FORMATTERS:
        _FORMATTERS.clear()
    factory = _FORMATTERS[codes] = namespace["make"]
    return factory


def _row_formatter(
    prefix: str, keys: list[str], first_row: list[Any], types: list[type]
) -> Callable[[list[Any]], str] | None:
    """A compiled formatter for rows laid out as ``types`` (those of ``first_row``).

    ``None`` when the layout holds a value the fast path does not write
    (None, str, bool, subclasses): such rows take the general path. A float
    column whose first value has a short repr goes through the repr cache.
    """
    if len(types) != len(keys) + 1 or types[0] is not int or not keys:
        return None
    codes = []
    for t, value in zip(types[1:], first_row[1:], strict=True):
        if t is int:
            codes.append("i")
        elif t is float:
            codes.append("c" if len(repr(value)) <= _SHORT_REPR else "f")
        else:
            return None
    return _formatter_factory("".join(codes))(prefix, _REPRS, *keys)



def _no_formatter(row: list[Any]) -> str:
    raise AssertionError("unreachable: no row matches an empty layout")


#: Timestamps InfluxDB can store (int64 nanoseconds): the window when a caller gives none.
MIN_TS, MAX_TS = -(2**63), 2**63 - 1
#: The most text a batch's rows may repeat (series and field keys): four times the
#: largest message, far above what agents send (a few kB a tick).
MAX_BATCH_CHARS = 64 * 1024 * 1024
#: A series this long is encoded column by column (below, row by row: the set-up
#: of the column path costs about as much as formatting three rows).
VECTOR_MIN = 4
#: The value types a row may hold: a nested list or map has no line-protocol form.
PLAIN = frozenset({int, float, str, bool, type(None)})
_JUST_LIST, _JUST_INT, _JUST_FLOAT = {list}, {int}, {float}


class _SeriesCode:
    """What encoding one series needs that does not depend on its rows.

    ``types`` is the row layout ``formatter`` was compiled for (empty: none
    yet); ``keep`` lists the value columns to keep when some field has an
    empty name (InfluxDB rejects ``=value``), else None.
    """

    __slots__ = ("prefix", "keys", "width", "types", "formatter", "has_float", "keep", "uses",
                 "row_chars",
                 "node")

    def __init__(self, measurement: str, tags: dict[str, Any] | None, fields: list[str]) -> None:
        self.keep = None if all(fields) else [i + 1 for i, name in enumerate(fields) if name]
        self.node = tags.get("node") if tags else None
        self.prefix = _series_prefix(measurement, tags)
        self.keys = [escape_key(f) + "=" for f in fields if f]
        self.width = len(fields) + 1
        # What every row repeats (series key, field keys, separators, timestamp):
        # the part of a line that does not come from the row's own bytes.
        self.row_chars = len(self.prefix) + sum(map(len, self.keys)) + len(self.keys) + 21
        self.types: list[type] = []
        self.formatter: Callable[[list[Any]], str] = _no_formatter
        self.has_float = False
        self.uses = 0

    def refit(self, row: list[Any], types: list[type]) -> bool:
        """Compile the fast formatter for the layout of ``row``; False if it has none."""
        formatter = _row_formatter(self.prefix, self.keys, row, types)
        if formatter is None:
            return False
        self.types, self.formatter, self.has_float = types, formatter, float in types
        return True

    def one(self, row: Any, lo: int, hi: int) -> str | None:
        """One row as a line through the compiled formatter, or None if it needs a closer look.

        The row checks of :func:`_rows_into`, without its set-up. Every 64th
        call declines, so that _rows_into re-picks the cached float columns.
        """
        uses = self.uses + 1
        if (uses & 63 and type(row) is list and len(row) == self.width
                and type(ts := row[0]) is int and lo <= ts <= hi
                and list(map(type, row)) == self.types
                and (not self.has_float or (total := sum(row)) - total == 0.0)):
            try:
                line = self.formatter(row)
            except KeyError:  # a float not in the repr cache yet: _rows_into learns it
                return None
            self.uses = uses
            return line
        return None

    def block(self, rows: list[Any], lo: int, hi: int) -> str | None:
        """All ``rows`` as newline-separated lines, or None if any row needs a closer look.

        The checks run column by column in C — ``set(map(type, column))`` per
        column of the transposed rows, ``sum`` for NaN/±inf, ``min``/``max``
        for the window — and the compiled row formatter is mapped over the
        rows. None when a row is not a list of the right width, a timestamp
        is not an int inside ``[lo, hi]``, or a column is not all-float
        (finite) or all-int: those rows take the row-by-row path with its
        exact rules.
        """
        if set(map(type, rows)) != _JUST_LIST or set(map(len, rows)) != {self.width}:
            return None
        columns = list(zip(*rows, strict=False))  # the widths are checked above
        stamps = columns[0]
        if set(map(type, stamps)) != _JUST_INT or min(stamps) < lo or max(stamps) > hi:
            return None
        layout: list[type] = [int]
        for column in islice(columns, 1, None):
            kinds = set(map(type, column))
            if kinds == _JUST_FLOAT:
                total = sum(column)
                if total - total != 0.0:  # NaN or ±inf somewhere (or an overflowing sum)
                    return None
                layout.append(float)
            elif kinds == _JUST_INT:
                layout.append(int)
            else:
                return None
        self.uses += 1
        # As in _rows_into: every 64th batch re-picks cached or plain float columns.
        if (layout != self.types or not self.uses & 63) and not self.refit(rows[0], layout):
            return None
        try:
            return "\n".join(map(self.formatter, rows))
        except KeyError:  # a float not in the repr cache yet
            _learn(rows)
            return "\n".join(map(self.formatter, rows))


# Series seen recently, keyed by (measurement, tag items, fields): agents send
# the same series in every batch, often one row each, so building the key and
# the formatter once per series *ever* rather than per batch matters as much
# as the per-row cost. Cleared when full (pids churn through `proc` tags).
_SERIES_CACHE: dict[tuple[Any, ...], _SeriesCode] = {}
_MAX_SERIES = 20_000


def _good_header(s: list[Any]) -> bool:
    """``[measurement, {tag: str}, [field: str, ...], rows]`` with a non-empty measurement."""
    return (type(s[0]) is str and s[0] != ""
            and type(s[1]) is dict and all(type(k) is str and type(v) is str
                                           for k, v in s[1].items())
            and type(s[2]) is list and all(type(f) is str for f in s[2]))


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
    if key is not None:
        if len(_SERIES_CACHE) >= _MAX_SERIES:
            _SERIES_CACHE.clear()
        _SERIES_CACHE[key] = code
    return code


def _row_line(prefix: str, keys: list[str], row: list[Any]) -> str | None:
    """The general path: one checked row, value by value; ``None`` if no field is left."""
    parts: list[str] = []
    add = parts.append
    for key, v in zip(keys, islice(row, 1, None), strict=True):
        t = type(v)
        # Exact type checks, not isinstance: bool is an int subclass.
        if t is float:
            if v - v == 0.0:  # false for NaN and ±inf, which InfluxDB rejects
                add(key + repr(v))
        elif t is int:
            add(f"{key}{v}i")
        elif t is str:
            add(f'{key}"{v.translate(_STR_TABLE)}"')
        elif t is bool:
            add(key + ("true" if v else "false"))
        # None: left out
    return f"{prefix}{','.join(parts)} {row[0]}" if parts else None


def _rows_into(code: _SeriesCode, rows: list[Any], lo: int, hi: int, out: list[str]) -> int:
    """Check and append one line per writable row; returns the rows dropped."""
    prefix, keys, width, keep = code.prefix, code.keys, code.width, code.keep
    formatter, types, check_finite = code.formatter, code.types, code.has_float
    may_refit = keep is None  # compile at most one new layout per series and batch
    code.uses += 1
    if not code.uses & 63:
        # Every 64th batch, pick cached or plain float columns again from this
        # batch's first row: values drift (a rate's first sample is 0.0).
        types = []
    append = out.append
    dropped = 0
    for row in rows:
        if (type(row) is not list or len(row) != width or type(ts := row[0]) is not int
                or not lo <= ts <= hi):
            dropped += 1
            continue
        row_types = list(map(type, row))
        if row_types != types:
            if not PLAIN.issuperset(row_types):
                dropped += 1
                continue
            if may_refit:
                may_refit = False
                if code.refit(row, row_types):
                    formatter, types, check_finite = code.formatter, code.types, code.has_float
        # Fast path: the compiled layout, and every float finite (the sum is
        # NaN or ±inf otherwise; a sum that merely overflows sends the row
        # down the general path, which is also right).
        if row_types == types and (not check_finite or (total := sum(row)) - total == 0):
            try:
                append(formatter(row))
            except KeyError:  # a float not in the repr cache yet
                _learn((row,))
                append(formatter(row))
            continue
        if keep is not None:
            row = [ts, *[row[i] for i in keep]]
        line = _row_line(prefix, keys, row)
        if line is not None:
            append(line)
    return dropped


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

    A series with a malformed header is dropped whole; a row that is not a
    list of ``len(fields) + 1`` plain values led by an int timestamp inside
    ``[lo, hi]`` is dropped alone (both counted in ``dropped``). A row with
    no writable field (all None, NaN or ±inf) is neither written nor
    counted. With ``node`` given, a series whose ``node`` tag is anything
    else is dropped and counted in ``foreign``: a node writes only its own
    series.

    Every line repeats its series' key and field keys, so a small message
    can ask for a huge payload (a 1 MB tag value on a million one-byte
    rows). Once the rows' repeated text passes ``max_chars``, the rest of
    the batch is dropped and counted in ``oversized``: no agent sends that,
    and the manager must not run out of memory over it.
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
        dropped += _rows_into(code, rows, lo, hi, out)
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
