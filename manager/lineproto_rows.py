"""Line-protocol rows in Python: the general rules for every row, and the fast
path of hosts without the compiled encoder (``manager/_lineproto_c.c``).

:class:`RowWriter` holds, per series, what writing its rows needs: the
series key and field keys (built by ``manager/lineproto.py``) and, for the
fast path, an f-string compiled once per column layout (int or float per
field, one bytecode per value) with floats' text from a cache. A series of
:data:`VECTOR_MIN` rows or more is checked column by column in C builtins
(:meth:`RowWriter.block`), one row alone inline (:meth:`RowWriter.one`);
whatever those decline goes row by row (:meth:`RowWriter.into`), where a row
that does not fit the compiled layout takes the general per-value path.
The rules themselves are in ``manager/lineproto.py``'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

__all__ = ["RowWriter", "PLAIN", "VECTOR_MIN"]

# String values: InfluxDB unescapes only \\ and \"; a raw newline would still
# parse, but the payload is split on newlines when a write must be bisected.
_STR_TABLE = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


#: A series this long is encoded column by column (below, row by row: the set-up
#: of the column path costs about as much as formatting three rows).
VECTOR_MIN = 4
#: The value types a row may hold: a nested list or map has no line-protocol form.
PLAIN = frozenset({int, float, str, bool, type(None)})
_JUST_LIST, _JUST_INT, _JUST_FLOAT = {list}, {int}, {float}


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
    made: Callable[..., Callable[[list[Any]], str]] = namespace["make"]
    _FORMATTERS[codes] = made
    return made


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


class RowWriter:
    """Writes the rows of one series: ``prefix`` is its key with a trailing space,
    ``keys`` its escaped field keys with ``=`` (named fields only), ``width``
    the length of a row (timestamp and every field).

    ``types`` is the row layout ``formatter`` was compiled for (empty: none
    yet); ``keep`` lists the value columns to keep when some field has an
    empty name (InfluxDB rejects ``=value``), else None.
    """

    __slots__ = ("prefix", "keys", "width", "keep", "types", "formatter", "has_float", "uses")

    def __init__(self, prefix: str, keys: list[str], width: int, keep: list[int] | None) -> None:
        self.prefix, self.keys, self.width, self.keep = prefix, keys, width, keep
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

        The row checks of :meth:`into`, without its set-up. Every 64th
        call declines, so that into() re-picks the cached float columns.
        """
        uses = self.uses + 1
        if (uses & 63 and type(row) is list and len(row) == self.width
                and type(ts := row[0]) is int and lo <= ts <= hi
                and list(map(type, row)) == self.types
                and (not self.has_float or (total := sum(row)) - total == 0.0)):
            try:
                line = self.formatter(row)
            except KeyError:  # a float not in the repr cache yet: into() learns it
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
        # As in into(): every 64th batch re-picks cached or plain float columns.
        if (layout != self.types or not self.uses & 63) and not self.refit(rows[0], layout):
            return None
        try:
            return "\n".join(map(self.formatter, rows))
        except KeyError:  # a float not in the repr cache yet
            _learn(rows)
            return "\n".join(map(self.formatter, rows))

    def into(self, rows: list[Any], lo: int, hi: int, out: list[str]) -> int:
        """Check and append one line per writable row; returns the rows dropped."""
        prefix, keys, width, keep = self.prefix, self.keys, self.width, self.keep
        formatter, types, check_finite = self.formatter, self.types, self.has_float
        may_refit = keep is None  # compile at most one new layout per series and batch
        self.uses += 1
        if not self.uses & 63:
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
                    if self.refit(row, row_types):
                        formatter, types, check_finite = self.formatter, self.types, self.has_float
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
