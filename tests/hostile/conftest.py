"""The hostile-input suite: ``scripts/bench/hostile.py``'s floods at a count CI can afford.

* ``hostile`` (package): a :class:`scripts.bench.hostile.Runner` over one
  :class:`~scripts.bench.hostile.HostileCluster` for the whole folder — a CURVE
  manager with ``auto_accept`` writing to the session's influxd (a database of
  its own), a real agent ``node1``, the dashboard with the admin key, and, once
  an agent test asks for it, a rogue ROUTER holding the manager's server key
  pair with a second real agent connected to it.
* :func:`assert_met` fails with the table of every flood and each missed target,
  with its numbers and the log lines behind it.

The bench runs 10,000 messages per socket and repeats each big flood 20 times;
here :data:`CI_COUNT` and :data:`CI_REPEAT` keep the folder near a minute.
Logs of every process are attached to a failing test's report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.bench.hostile import FloodResult, HostileCluster, Runner, format_table
from tests.conftest import LOGS_KEY
from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import (  # noqa: F401  (the hook attaches logs to failures)
    pytest_runtest_makereport,
)

#: Messages per socket, 12 of each kind (the bench: 10,000): enough that each kind puts
#: a bad value in every place it has for a socket at least once.
CI_COUNT = 19 * 12
#: How often each big flood repeats (the bench: 20).
CI_REPEAT = 3
SEED = 20240601
#: Longest one flood may send here, seconds.
FLOOD_TIME = 30.0


@pytest.fixture(scope="package")
def hostile_logs() -> list[Path]:
    return []


@pytest.fixture(autouse=True)
def _attach_logs(request: pytest.FixtureRequest, hostile_logs: list[Path]) -> None:
    request.node.stash[LOGS_KEY] = hostile_logs


@pytest.fixture(scope="package")
def hostile(tmp_path_factory: pytest.TempPathFactory, influxdb: InfluxFixture,
            hostile_logs: list[Path]) -> Iterator[Runner]:
    database = f"test_hostile_{uuid.uuid4().hex[:10]}"
    influxdb.ensure_running()
    influxdb.create_database(database)
    cluster = HostileCluster(tmp_path_factory.mktemp("hostile"), influxdb.url, database,
                             hostile_logs)
    runner = Runner(cluster, seed=SEED, flood_time=FLOOD_TIME)
    try:
        cluster.start()
        yield runner
    finally:
        runner.close()
        cluster.stop()
        influxdb.ensure_running()
        influxdb.raw_query(None, f'DROP DATABASE "{database}"')


def assert_met(results: list[FloodResult]) -> None:
    """Every target met by every flood, else one failure listing what missed, with numbers."""
    problems = [problem for result in results for problem in result.problems()]
    assert not problems, "\n".join(
        [f"{len(problems)} target(s) missed:", *problems, "", format_table(results)])
