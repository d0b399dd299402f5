"""The manager's ROUTER and PULL under every kind of bad input and the issue's big floods.

Each test asserts, for each of its floods: no process died; the manager, ``node1``
and the dashboard answered within 5 s after it; an admin ``nodes.list`` never took
over 0.5 s meanwhile and never showed ``node1`` lost; the manager's peak RSS stayed
under 400 MB; its log had at most one line per second per kind of trouble.
"""

from __future__ import annotations

import pytest

from scripts.bench.hostile import PULL, ROUTER, Runner
from tests.hostile.conftest import CI_COUNT, CI_REPEAT, assert_met

pytestmark = [pytest.mark.integration, pytest.mark.hostile]


def test_router_survives_every_kind_of_bad_input(hostile: Runner) -> None:
    assert_met(hostile.flood_every_kind(ROUTER, CI_COUNT))


def test_pull_survives_every_kind_of_bad_input(hostile: Runner) -> None:
    assert_met(hostile.flood_every_kind(PULL, CI_COUNT))


def test_a_first_batch_of_up_to_15MB_on_a_fresh_push_leaves_the_manager_serving(
        hostile: Runner) -> None:
    assert_met([hostile.first_batches(CI_REPEAT)])


def test_15MB_batches_claiming_2_to_the_32_entries(hostile: Runner) -> None:
    assert_met([hostile.claim_flood(CI_REPEAT * 2)])


def test_15MB_registers_from_keys_never_accepted(hostile: Runner) -> None:
    assert_met([hostile.register_flood(CI_REPEAT * 2)])


def test_amplification_flood_keeps_the_manager_under_400MB(hostile: Runner) -> None:
    # ~1 MB batches whose 1 MB tag value line protocol repeats on each of 60 rows.
    assert_met([hostile.amplification(10)])
