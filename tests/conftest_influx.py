"""pytest plugin: a real InfluxDB (``influxd``) for the whole test session.

Loaded from ``tests/conftest.py`` with ``pytest_plugins = ["tests.conftest_influx"]``.

* ``influxdb`` (session): one private influxd on a free 127.0.0.1 port with
  its data in a temporary directory. ``.url``, ``.query(db, influxql)``,
  ``.write(db, lines)``, ``.create_database(name)``, and ``.stop()`` /
  ``.start()`` for tests that take InfluxDB down and back (same port, same
  data). A test that stops it must start it again (``try``/``finally``);
  the ``influx_db`` fixture restarts it in any case.
* ``influx_db`` (function): a fresh, uniquely named database; dropped after.

Nothing stands in for InfluxDB here (docs/architecture.md#metric-path, #tests-and-benchmarks): without ``influxd``
the fixtures fail with the command that installs it.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.influxdb_local import InfluxdNotFound, InfluxServer, create_database, request


class InfluxFixture:
    """A running influxd and plain-HTTP helpers to check what it stored."""

    def __init__(self, server: InfluxServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; unchanged across stop/start."""
        return self.server.url

    @property
    def running(self) -> bool:
        return self.server.running

    def start(self) -> None:
        """Start influxd again on the same port with the same data.

        Call it from the main thread: influxd gets PR_SET_PDEATHSIG, which
        fires when the *thread* that started it ends, so a start from an
        executor thread dies when that thread does."""
        self.server.start()

    def stop(self) -> None:
        """Stop influxd (SIGTERM): connections are refused until :meth:`start`."""
        self.server.stop()

    def ensure_running(self) -> None:
        if not self.server.running:
            self.server.start()

    def create_database(self, name: str) -> None:
        create_database(self.url, name)

    def raw_query(self, db: str | None, influxql: str) -> dict[str, Any]:
        """POST /query; returns InfluxDB's JSON with nanosecond integer timestamps."""
        form = {"q": influxql, "epoch": "ns", **({"db": db} if db else {})}
        status, body = request(
            self.url,
            "POST",
            "/query",
            body=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        doc: dict[str, Any] = json.loads(body)
        errors = [r["error"] for r in doc.get("results", []) if "error" in r]
        if status != 200 or errors or "error" in doc:
            raise AssertionError(f"query {influxql!r} failed: HTTP {status} {body[:300]!r}")
        return doc

    def query(self, db: str | None, influxql: str) -> list[dict[str, Any]]:
        """Rows of the first statement as dicts: ``time`` (ns), the columns, and the tags
        of a ``GROUP BY`` series. Empty list when nothing matched."""
        doc = self.raw_query(db, influxql)
        rows: list[dict[str, Any]] = []
        for series in doc["results"][0].get("series", []):
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return rows

    def write(self, db: str, lines: bytes | str) -> None:
        """POST line protocol (ns precision) and require 204."""
        data = lines.encode() if isinstance(lines, str) else lines
        status, body = request(
            self.url, "POST", "/write", params={"db": db, "precision": "ns"}, body=data
        )
        if status != 204:
            raise AssertionError(f"write failed: HTTP {status} {body[:300]!r}")


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxFixture]:
    """One real influxd for the session (see the module docstring)."""
    server = InfluxServer(Path(tmp_path_factory.mktemp("influxdb")), die_with_parent=True)
    try:
        server.start()
    except InfluxdNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield InfluxFixture(server)
    finally:
        server.stop()


@pytest.fixture
def influx_db(influxdb: InfluxFixture) -> Iterator[str]:
    """A new empty database on the session's influxd; its name. Dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    influxdb.ensure_running()
    influxdb.create_database(name)
    yield name
    influxdb.ensure_running()  # a test that stopped it and failed must not break the next
    influxdb.raw_query(None, f'DROP DATABASE "{name}"')
