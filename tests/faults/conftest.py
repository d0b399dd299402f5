"""The fault suite (issue 12): faults injected into real clusters, points counted exactly.

* ``faults`` (session): a :class:`tests.faults.runner.FaultSuite` that starts,
  at once, every scenario whose test was selected (``test_<scenario>`` in this
  folder), so their 30 s and 60 s faults overlap; each test waits for its own.
* :func:`check` prints a scenario's one-line report, keeps it in
  ``test-output/faults/<scenario>.json``, attaches the scenario's logs to a
  failing test, and fails with every problem found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import LOGS_KEY, OUTPUT_ROOT
from tests.conftest_influx import InfluxFixture
from tests.faults.harness import Outcome
from tests.faults.runner import SCENARIOS, FaultSuite
from tests.integration.conftest import (  # noqa: F401  (the hook attaches logs to failures)
    pytest_runtest_makereport,
)

HERE = Path(__file__).parent


def selected_scenarios(session: pytest.Session) -> list[str]:
    names = []
    for item in session.items:
        name = item.name.removeprefix("test_").split("[")[0]
        if Path(item.path).parent == HERE and name in SCENARIOS and name not in names:
            names.append(name)
    return names


@pytest.fixture(scope="session")
def faults(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           influxdb: InfluxFixture) -> Iterator[FaultSuite]:
    suite = FaultSuite(selected_scenarios(request.session), tmp_path_factory.mktemp("faults"),
                       influxdb)
    suite.start()
    try:
        yield suite
    finally:
        suite.stop()


@pytest.fixture
def check(request: pytest.FixtureRequest, faults: FaultSuite) -> Callable[..., Outcome]:
    """``check(name, max_cpu_gap=None, max_node_return=None, max_backlog=None)``:
    scenario ``name``'s outcome, reported and asserted (see :meth:`Outcome.problems`)."""
    def run(name: str, max_cpu_gap: float | None = None,
            max_node_return: float | None = None, max_backlog: float | None = None) -> Outcome:
        try:
            outcome = faults.outcome(name)
        finally:
            request.node.stash[LOGS_KEY] = faults.logs.get(name, [])
        folder = OUTPUT_ROOT / "faults"
        folder.mkdir(parents=True, exist_ok=True)
        outcome.save(folder)
        print(outcome.line())
        problems = outcome.problems(max_cpu_gap, max_node_return, max_backlog)
        assert not problems, outcome.line() + "\n" + "\n".join(problems)
        return outcome

    return run
