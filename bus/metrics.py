"""The metric batch layout shared by collectors, the shipper and the ingest.

A batch carries *series*, not points: one series is a measurement with its tag
set and field names, followed by rows of ``[ts_ns, value1, value2, ...]``.
Grouping rows under one header makes batches about half the size of a
dict-per-point layout and lets the line-protocol encoder build the series key
once per series instead of once per point (docs/architecture.md#the-wire, #metric-path).

On the wire a series is the list ``[measurement, tags, fields, rows]``.
A value of ``None`` in a row means "this field was not measured in this
sample"; the encoder leaves it out of that line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

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


#: The most a batch's body may weigh when an agent sends it. The manager
#: accepts up to ``[spool] max_message_bytes`` (1 MiB by default, never below
#: 512 KiB), so a batch cut at this size is always taken; what the manager
#: decodes per message stays small too.
BATCH_SPLIT_BYTES = 256 * 1024
#: Room kept in a batch for what is not its series: node name, sequence, list headers.
ENVELOPE_BYTES = 256


def split_wire(wire_series: list[list[Any]], max_bytes: int = BATCH_SPLIT_BYTES
               ) -> tuple[list[list[list[Any]]], int]:
    """Cut the wire series of one batch into batches of about ``max_bytes`` each.

    Series are kept whole where they fit, and a series too large alone is cut
    between rows. Returns ``(batches, rows_dropped)``: a row that does not fit
    into ``max_bytes`` even alone with its header cannot be sent at all, so it
    is left out and counted rather than stall the spool for ever.
    """
    max_bytes -= ENVELOPE_BYTES
    batches: list[list[list[Any]]] = []
    current: list[list[Any]] = []
    size = dropped = 0
    for s in wire_series:
        measurement, tags, fields, rows = s
        header = len(msgpack.packb([measurement, tags, fields, []]))
        whole = header + sum(len(msgpack.packb(r)) for r in rows)
        if whole <= max_bytes:
            if size + whole > max_bytes and current:
                batches.append(current)
                current, size = [], 0
            current.append(s)
            size += whole
            continue
        part: list[Any] = []
        part_size = header
        for row in rows:
            row_size = len(msgpack.packb(row))
            if header + row_size > max_bytes:
                dropped += 1
                continue
            if part_size + row_size > max_bytes:
                batches.append([[measurement, tags, fields, part]])
                part, part_size = [], header
            part.append(row)
            part_size += row_size
        if part:
            batches.append([[measurement, tags, fields, part]])
    if current:
        batches.append(current)
    return batches, dropped
