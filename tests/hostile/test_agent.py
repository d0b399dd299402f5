"""A real agent's DEALER under bad input from a rogue peer holding the manager's server key.

The rogue ROUTER welcomes the agent and heartbeats to it; each flood must leave the
agent alive and heartbeating (within 5 s), and no bad ``run.dispatch`` may start a
process (no run update with a pid, no file its command would have made).
"""

from __future__ import annotations

import pytest

from scripts.bench.hostile import ABSURD_DISPATCHES, AGENT, MALFORMED_DISPATCHES, Runner
from tests.hostile.conftest import CI_COUNT, assert_met

pytestmark = [pytest.mark.integration, pytest.mark.hostile]


def test_agent_survives_every_kind_of_bad_input(hostile: Runner) -> None:
    assert_met(hostile.flood_every_kind(AGENT, CI_COUNT))


def test_rogue_dispatch_with_malformed_fields_starts_nothing(hostile: Runner) -> None:
    assert_met([hostile.bad_dispatches(MALFORMED_DISPATCHES, "run.dispatch-malformed")])


def test_rogue_dispatch_with_absurd_numbers_starts_nothing(hostile: Runner) -> None:
    # NaN, infinite or negative timeouts and intervals, iterations no manager numbers.
    assert_met([hostile.bad_dispatches(ABSURD_DISPATCHES, "run.dispatch-absurd-numbers")])


def test_agent_survives_welcomes_with_absurd_numbers(hostile: Runner) -> None:
    # One at a time, each followed by a sane welcome: NaN, infinite, zero, negative,
    # subnormal and huge heartbeat intervals; liveness and last_seq past int64.
    assert_met([hostile.bad_welcomes()])


def test_agent_lives_on_once_its_rogue_manager_is_gone(hostile: Runner) -> None:
    # Last in this module: it leaves the agent pointed at nothing.
    assert_met([hostile.rogue_gone()])
