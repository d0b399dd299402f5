"""``ptap history``'s own parts: --since, the request checks, text and CSV."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io

import pytest

from manager.analysis.service import BadRequest
from manager.cli.history import parse_since
from manager.history.build import history_object
from manager.history.render import render
from manager.history.service import check_request
from tests.manager.history.test_build import CPU, series

NOW = 1_765_000_000.0
DEC_1 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", NOW - 5400), ("12h", NOW - 43200), ("7d", NOW - 7 * 86400), ("2w", NOW - 14 * 86400),
    ("1.5h", NOW - 5400), ("2026-12-01", DEC_1),
    ("2026-12-01T08:00", DEC_1 + 8 * 3600), ("2026-12-01T08:00+01:00", DEC_1 + 7 * 3600)])
def test_since_takes_an_age_or_a_utc_date(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "7 days", "-3d", "2026-13-01"])
def test_since_refuses_anything_else_in_one_line(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an age"):
        parse_since(text, NOW)


@pytest.mark.parametrize(("series", "metrics", "since", "last"), [
    ("", [], 0.0, 0), ("x" * 201, [], 0.0, 0), ("s", ["m"] * 65, 0.0, 0),
    ("s", [], float("nan"), 0), ("s", [], -1.0, 0), ("s", [], 0.0, -1)])
def test_requests_no_history_could_answer_are_bad(series: str, metrics: list[str],
                                                  since: float, last: int) -> None:
    with pytest.raises(BadRequest):
        check_request(series, metrics, since, last)


def test_text_opens_each_metric_with_its_change_points_and_marks_the_point() -> None:
    h = history_object("nightly", series(CPU, tags={"candidate": "yes"}), ["run.cpu_seconds"],
                       now=0.0)
    out = render(h, "text")
    lines = out.splitlines()
    assert lines[0].startswith("history of nightly: 12 job(s), ordered by version")
    head = lines.index(next(x for x in lines if x.startswith("run.cpu_seconds")))
    assert "1 change point(s)" in lines[head]
    assert lines[head + 1].startswith("  ▲ regression at 1.7 (job job07): +30")
    assert "differs: tag candidate (job): - → yes" in lines[head + 2]
    assert out.count("◀ regression") == 1 and "1.7" in next(x for x in lines if "◀" in x)


def test_csv_has_one_row_per_point_with_the_change_where_it_starts() -> None:
    h = history_object("nightly", series(CPU), ["run.cpu_seconds", "proc.threads"], now=0.0)
    rows = list(csv.DictReader(io.StringIO(render(h, "csv"))))
    assert len(rows) == 24
    changed = [r for r in rows if r["change"]]
    assert [(r["metric"], r["label"], r["change"]) for r in changed] == [
        ("run.cpu_seconds", "1.7", "regression")]
    assert float(changed[0]["ci_low"]) < float(changed[0]["step"]) < float(changed[0]["ci_high"])
