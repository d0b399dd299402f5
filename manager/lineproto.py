"""Encode wire series (``bus/metrics.py``) to InfluxDB line protocol.

This is the manager's hot path (DESIGN §5: about 1.5 µs per point), so it
works on the wire form — ``[measurement, tags, fields, rows]`` — and does
per point only what depends on the point:

* each series' key (``measurement,tag=v,... ``) and field keys (``field=``)
  are built once per series and kept across batches (agents send the same
  series in every batch, often one row each);
* rows are formatted by an f-string compiled once per column layout (int or
  float per field), one bytecode per value; rows that do not fit the layout
  (None, str, bool, NaN) take a general per-value path with the same rules;
* floats in columns whose values are short (``12.5``) take their ``repr``
  from a cache, as metric values repeat.

``scripts/bench/lineproto.py`` compares it with ``influxdb_client.Point`` in
the same run (about 5-8 times faster).

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
  with ``"`` and ``\\`` escaped; ``None`` is left out. A row with no field left
  is not written at all.
* ints outside int64 are sent as they are; InfluxDB rejects such a line and
  the write policy drops only that line (``manager/sinks/policy.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

__all__ = ["encode_series", "encode_lines", "encode_str_lines", "escape_measurement", "escape_key"]

# Characters that cannot appear raw anywhere in a line: written escaped as
# Telegraf does, so a tag value with a newline cannot split a point in two.
_CONTROL = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
_MEAS_TABLE = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
_STR_TABLE = str.maketrans({"\\": "\\\\", '"': '\\"'})
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


def _format_other(key: str, value: Any) -> str | None:
    """Slow path for value types outside the four exact wire types (subclasses)."""
    if isinstance(value, bool):
        return key + ("true" if value else "false")
    if isinstance(value, int):
        return f"{key}{int(value)}i"
    if isinstance(value, float):
        return key + repr(float(value)) if value - value == 0.0 else None
    if isinstance(value, str):
        return f'{key}"{value.translate(_STR_TABLE)}"'
    if hasattr(value, "__index__"):  # integer types that are not int (numpy's)
        return f"{key}{value.__index__()}i"
    return None


def _keep_columns(rows: list[list[Any]], keep: list[int]) -> list[list[Any]]:
    """Rows with only the timestamp and the value columns at indexes ``keep``."""
    return [[row[0], *(row[i] for i in keep if i < len(row))] for row in rows]


class _ReprCache(dict[float, str]):
    """``repr`` of short floats, remembered: a lookup costs ~70 ns, ``repr`` ~170.

    Metric values such as psutil's percentages (one decimal) repeat a lot, so
    columns that start with short values look them up here. Long reprs are
    not kept (they rarely repeat). ``-0.0`` equals ``0.0`` as a key and is
    written ``0.0`` by cached columns: the one value this loses is the sign of
    zero.
    """

    __slots__ = ()

    def __missing__(self, value: float) -> str:
        text = repr(value)
        if len(text) <= _SHORT_REPR:
            if len(self) >= _MAX_REPRS:
                self.clear()
                self[0.0] = "0.0"
            self[value] = text
        return text


_SHORT_REPR = 7
_MAX_REPRS = 65_536
_REPRS = _ReprCache({0.0: "0.0"})

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


class _SeriesCode:
    """What encoding one series needs that does not depend on its rows.

    ``types`` is the row layout ``formatter`` was compiled for (empty: none
    yet); ``keep`` lists the value columns to keep when some field has an
    empty name (InfluxDB rejects ``=value``), else None.
    """

    __slots__ = ("prefix", "keys", "types", "formatter", "has_float", "keep", "uses")

    def __init__(self, measurement: str, tags: dict[str, Any] | None, fields: list[str]) -> None:
        self.keep = None if all(fields) else [i + 1 for i, name in enumerate(fields) if name]
        self.prefix = _series_prefix(measurement, tags)
        self.keys = [escape_key(f) + "=" for f in fields if f]
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


# Series seen recently, keyed by (measurement, tag items, fields): agents send
# the same series in every batch, often one row each, so building the key and
# the formatter once per series *ever* rather than per batch matters as much
# as the per-row cost. Cleared when full (pids churn through `proc` tags).
_SERIES_CACHE: dict[tuple[Any, ...], _SeriesCode] = {}
_MAX_SERIES = 20_000


def _series_code(measurement: str, tags: dict[str, Any] | None, fields: list[str]) -> _SeriesCode:
    """The cached :class:`_SeriesCode` for a series header."""
    try:
        key = (measurement, tuple(tags.items()) if tags else (), tuple(fields))
        code = _SERIES_CACHE.get(key)
    except TypeError:  # an unhashable tag value: encode it, just don't cache it
        return _SeriesCode(measurement, tags, fields)
    if code is None:
        if len(_SERIES_CACHE) >= _MAX_SERIES:
            _SERIES_CACHE.clear()
        code = _SERIES_CACHE[key] = _SeriesCode(measurement, tags, fields)
    return code


def _row_line(prefix: str, keys: list[str], row: list[Any]) -> str | None:
    """The general path: one row, value by value; ``None`` if no field is left."""
    parts: list[str] = []
    add = parts.append
    # A short row leaves its last fields out; extra values are ignored.
    for key, v in zip(keys, islice(row, 1, None), strict=False):
        t = type(v)
        # Exact type checks, not isinstance: bool is an int subclass.
        if t is float:
            if v - v == 0.0:  # false for NaN and ±inf, which InfluxDB rejects
                add(key + repr(v))
        elif t is int:
            add(f"{key}{v}i")
        elif v is None:
            continue
        elif t is str:
            add(f'{key}"{v.translate(_STR_TABLE)}"')
        elif t is bool:
            add(key + ("true" if v else "false"))
        else:
            text = _format_other(key, v)
            if text is not None:
                add(text)
    ts: Any = row[0] if row else None
    if type(ts) is not int:
        try:
            ts = int(ts)  # a float or numpy timestamp still names a nanosecond
        except (TypeError, ValueError, OverflowError):
            return None
    return f"{prefix}{','.join(parts)} {ts}" if parts else None


def _series_lines(series: Any, out: list[str]) -> None:
    """Append one line per writable row of one wire series to ``out``."""
    measurement, tags, fields, rows = series
    if not rows:
        return
    code = _series_code(measurement, tags, fields)
    if code.keep is not None:
        rows = _keep_columns(rows, code.keep)
    prefix, keys = code.prefix, code.keys
    formatter, types, check_finite = code.formatter, code.types, code.has_float
    may_refit = True  # compile at most one new layout per series and batch
    code.uses += 1
    if not code.uses & 63:
        # Every 64th batch, pick cached or plain float columns again from this
        # batch's first row: values drift (a rate's first sample is 0.0).
        types = []
    append = out.append
    for row in rows:
        row_types = list(map(type, row))
        if row_types != types and may_refit:
            may_refit = False
            if code.refit(row, row_types):
                formatter, types, check_finite = code.formatter, code.types, code.has_float
        # Fast path: the compiled layout, and every float finite (the sum is
        # NaN or ±inf otherwise; a sum that merely overflows sends the row
        # down the general path, which is also right).
        if row_types == types and (not check_finite or (total := sum(row)) - total == 0):
            append(formatter(row))
            continue
        line = _row_line(prefix, keys, row)
        if line is not None:
            append(line)


def encode_str_lines(series_list: Iterable[Any]) -> list[str]:
    """Encode wire series to a list of line-protocol lines (``str``, no newline)."""
    out: list[str] = []
    for series in series_list:
        _series_lines(series, out)
    return out


def encode_lines(series_list: Iterable[Any]) -> list[bytes]:
    """Encode wire series to one ``bytes`` line per point (no newline).

    This is the form ``manager.sinks.policy.write_with_policy`` takes, so it
    can split a batch on 413 and find the rejected lines on 400.
    """
    return [line.encode() for line in encode_str_lines(series_list)]


def encode_series(series_list: Iterable[Any]) -> tuple[bytes, int]:
    """Encode wire series to one line-protocol payload.

    Returns ``(payload, points)``: the newline-separated lines as UTF-8 and
    how many points (lines) they hold, which is fewer than the rows given when
    rows had no writable field.
    """
    lines = encode_str_lines(series_list)
    return "\n".join(lines).encode(), len(lines)
