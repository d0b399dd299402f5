"""The compiled row encoder (manager/_lineproto_c.c) called directly, on what
an authenticated agent could send it: its lines are the reference's, it
declines (None) exactly the series outside its fast path, and no Python object
in the rows can run code under it. Regressions of an AddressSanitizer fuzz.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest

try:
    from manager._lineproto_c import encode_rows
except ImportError:
    pytest.skip("manager/_lineproto_c.c is not built here (no C compiler or Python headers)",
                allow_module_level=True)

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def reference(prefix: str, keys: list[str], rows: list[Any], lo: int, hi: int) -> str | None:
    """What encode_rows must give: None unless every row is in the fast path."""
    def fast(row: Any) -> bool:
        return (type(row) is list and len(row) == len(keys) + 1 and type(row[0]) is int
                and max(lo, I64_MIN) <= row[0] <= min(hi, I64_MAX)
                and all((type(v) is float and math.isfinite(v))
                        or (type(v) is int and I64_MIN <= v <= I64_MAX) for v in row[1:]))

    if not keys or not all(map(fast, rows)):
        return None
    return "\n".join(prefix + ",".join(k + (f"{v}i" if type(v) is int else repr(v))
                                       for k, v in zip(keys, row[1:], strict=True))
                     + f" {row[0]}" for row in rows)


def test_no_rows_is_an_empty_string() -> None:
    # Once a memcpy from the NULL of a never-grown buffer into the shared "".
    assert encode_rows("m ", ["v="], [], 0, 1) == ""
    assert encode_rows("é ", ["𝄞="], [], 0, 1) == ""
    assert encode_rows("m ", [], [[1, 1.0]], 0, 1) is None  # no field: the general rules


class _Index:
    def __init__(self, value: int | None) -> None:
        self.value = value

    def __index__(self) -> int:
        if self.value is None:
            raise ValueError("bad bound")
        return self.value


def test_window_bounds() -> None:
    row = [[I64_MAX, 1.5], [I64_MIN, 2]]
    both = f"m v=1.5 {I64_MAX}\nm v=2i {I64_MIN}"
    # Bounds past int64 are clamped: every int64 timestamp is inside.
    assert encode_rows("m ", ["v="], row, -(2**70), 2**70) == both
    assert encode_rows("m ", ["v="], row, I64_MIN, I64_MAX) == both
    # A window wholly outside int64 holds no timestamp.
    assert encode_rows("m ", ["v="], row, 2**63, 2**70) is None
    assert encode_rows("m ", ["v="], row, -(2**70), -(2**63) - 1) is None
    assert encode_rows("m ", ["v="], [[5, 1.0]], 6, 4) is None
    # An error converting one bound is raised as it is, not lost under the other
    # (once: lo=2**70 failed, hi's __index__ ran over the pending error, lo read as -1).
    assert encode_rows("m ", ["v="], [[1, 1.0]], 2**70, _Index(10**6)) is None
    with pytest.raises(ValueError, match="bad bound"):
        encode_rows("m ", ["v="], [[1, 1.0]], 2**70, _Index(None))
    with pytest.raises(ValueError, match="bad bound"):
        encode_rows("m ", ["v="], [[1, 1.0]], _Index(None), 2**70)
    with pytest.raises(TypeError):
        encode_rows("m ", ["v="], [[1, 1.0]], 0.0, 1)


_VICTIMS: list[list[Any]] = []


class _EvilInt(int):
    """Clears every list it can reach if any of its hooks runs (none may)."""

    def _strike(self) -> int:
        for victim in _VICTIMS:
            victim.clear()
        return 0

    __index__ = __int__ = _strike  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._strike()
        return "0"


class _EvilFloat(float):
    def __repr__(self) -> str:
        for victim in _VICTIMS:
            victim.clear()
        return "0.0"


def test_subclasses_are_declined_without_running_their_code() -> None:
    for odd in (_EvilInt(3), _EvilFloat(2.5)):
        for at in (0, 1, 2):
            rows = [[10, 1.0, 2], [11, 3.0, 4]]
            rows[1][at] = odd
            _VICTIMS[:] = [rows, rows[0], rows[1]]
            try:
                assert encode_rows("m ", ["a=", "b="], rows, 0, 100) is None
            finally:
                _VICTIMS.clear()
            assert len(rows) == 2 and len(rows[0]) == 3 and len(rows[1]) == 3


def test_floats_at_the_edge_of_the_short_decimal_path() -> None:
    """n / 10**k near 2**52, where v * 10**k can round to n +- 1 (the shortcut
    must then fall back to repr, not write more decimals), near 2**52 / 10 (the
    next k's limit), and neighbours of short decimals one ulp away."""
    values: list[float] = [-0.0, 0.0, 1e-4, -1e-4, 9.9999e-5, 1e-5, 2.0**52 - 0.5, 2.0**52]
    for k in range(6):
        for c in (2**52, 2**51, 2**52 // 10, 2**52 // 100):
            values += [n / 10**k for n in range(c - 300, c + 30)]
    values += [math.nextafter(v, d) for v in values[:2000:7] for d in (math.inf, -math.inf)]
    values += [-v for v in values]
    rows = [[i, v] for i, v in enumerate(values)]
    got = encode_rows("f ", ["v="], rows, I64_MIN, I64_MAX)
    assert got is not None
    assert [line.split(" ")[1][2:] for line in got.split("\n")] == list(map(repr, values))


def _value(rng: random.Random) -> Any:
    c = rng.random()
    if c < 0.3:
        return rng.randint(-10**rng.randint(0, 17), 10**rng.randint(0, 17)) / 10**rng.randint(0, 5)
    if c < 0.45:
        return struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]  # NaN, inf too
    if c < 0.7:
        return rng.choice([rng.randint(-1000, 1000), rng.randint(I64_MIN, I64_MAX)])
    if c < 0.8:
        return rng.choice([I64_MIN, I64_MAX, I64_MAX + 1, I64_MIN - 1, 10**30, -0.0, 5e-324])
    return rng.choice([True, None, "s", b"b", [1.0], (1, 2), {}, _EvilInt(1), _EvilFloat(1.0)])


def test_random_series_against_the_reference() -> None:
    rng = random.Random(20240611)
    names = ["v=", "é=", "𝄞\U0010ffff=", "a\\,b=", "x" * 300 + "="]
    written = 0
    for _ in range(1500):
        keys = [rng.choice(names) for _ in range(rng.choice([0, 1, 1, 2, 3, 9]))]
        prefix = rng.choice(["m ", "m,host=é ", "𝄞 ", "p" * 5000 + " "])
        lo = rng.choice([I64_MIN, 0, -(2**70)])
        hi = rng.choice([I64_MAX, 10**6, 2**70])
        clean = rng.random() < 0.6
        rows: list[Any] = []
        for _ in range(rng.choice([1, 2, 5, 70])):
            row: Any
            if clean:
                row = [rng.randint(0, 10**6)] + [rng.choice([rng.random() * 100, rng.randint(-9, 9),
                                                             round(rng.uniform(-1e3, 1e3), 2)])
                                                  for _ in keys]
            else:
                row = [rng.choice([rng.randint(-5, 10**6 + 5), True, 1.0, I64_MAX + 1])]
                row += [_value(rng) for _ in keys]
                if rng.random() < 0.1:
                    row = rng.choice([row[:-1], row + [1], tuple(row), None, "row"])
            rows.append(row)
        want = reference(prefix, keys, rows, lo, hi)
        _VICTIMS[:] = [rows] + [r for r in rows if type(r) is list]
        try:
            assert encode_rows(prefix, keys, rows, lo, hi) == want
        finally:
            _VICTIMS.clear()
        written += want is not None
    assert written > 500


def test_a_long_series_with_long_names() -> None:
    rng = random.Random(7)
    keys = ["k" * 10_000 + "é=", "b="]
    rows = [[i, rng.choice([0.5, -0.0, 1e300, 1 / 3]), rng.randint(I64_MIN, I64_MAX)]
            for i in range(20_000)]
    prefix = "m,t=" + "𝄞" * 1000 + " "
    assert encode_rows(prefix, keys, rows, I64_MIN, I64_MAX) == reference(prefix, keys, rows,
                                                                         I64_MIN, I64_MAX)
    rows[-1].append(1.0)  # the last row one value too wide: the whole series is declined
    assert encode_rows(prefix, keys, rows, I64_MIN, I64_MAX) is None
