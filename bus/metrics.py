"""The metric batch layout shared by collectors, the shipper and the ingest.

A batch carries *series*, not points: one series is a measurement with its tag
set and field names, followed by rows of ``[ts_ns, value1, value2, ...]``.
Grouping rows under one header makes batches about half the size of a
dict-per-point layout and lets the line-protocol encoder build the series key
once per series instead of once per point (DESIGN §3, §5).

On the wire a series is the list ``[measurement, tags, fields, rows]``.
A value of ``None`` in a row means "this field was not measured in this
sample"; the encoder leaves it out of that line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: A value a field may take. ``bool`` is kept distinct from ``int`` by InfluxDB.
FieldValue = int | float | str | bool | None


@dataclass(slots=True)
class Series:
    """One measurement + tag set, with rows ``[ts_ns, *values]`` in ``fields`` order."""

    measurement: str
    tags: dict[str, str]
    fields: tuple[str, ...]
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, ts_ns: int, *values: FieldValue) -> None:
        """Append one sample; ``values`` follow ``fields`` in order."""
        if len(values) != len(self.fields):
            raise ValueError(
                f"series {self.measurement}: {len(values)} values for {len(self.fields)} fields"
            )
        self.rows.append([ts_ns, *values])

    def to_wire(self) -> list[Any]:
        return [self.measurement, self.tags, list(self.fields), self.rows]

    @property
    def point_count(self) -> int:
        return len(self.rows)


def series_to_wire(series: Iterable[Series]) -> list[list[Any]]:
    """The list form that goes into ``MetricBatch.series``."""
    return [s.to_wire() for s in series if s.rows]


def count_points(wire_series: list[list[Any]]) -> int:
    """Number of rows (points) in the wire form of a batch's series."""
    return sum(len(s[3]) for s in wire_series)
