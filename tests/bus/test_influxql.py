"""The one InfluxQL reader's quoting and answer checks (its HTTP: tests/dashboard/test_influx.py)."""

from __future__ import annotations

import pytest

from bus.influxql import (
    QueryFailed,
    answer_series,
    any_of,
    quote_ident,
    quote_str,
    statement_series,
    time_window,
)


def test_values_and_names_are_quoted() -> None:
    assert quote_str("a'b\\c") == "'a\\'b\\\\c'"
    assert quote_ident('us"er') == '"us\\"er"'
    assert any_of("node", ["n1", "x' OR '1'='1"]) == \
        "(\"node\" = 'n1' OR \"node\" = 'x\\' OR \\'1\\'=\\'1')"
    assert time_window(5) == "time >= 5" and time_window(5, 9) == "time >= 5 AND time <= 9"


def test_failed_and_truncated_answers_are_never_empty_ones() -> None:
    series = [{"name": "cpu", "columns": ["time", "v"], "values": [[1, 2.0]]}]
    assert statement_series({"series": series}) == series
    assert statement_series({}) == []
    with pytest.raises(QueryFailed, match="max-row-limit"):
        statement_series({"series": series, "partial": True}, "the cpu points")
    with pytest.raises(QueryFailed, match="database not found"):
        answer_series({"results": [{"series": series}, {"error": "database not found: x"}]})
