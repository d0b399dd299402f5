"""The dashboard's Bokeh websocket under every kind of bad input from a plain client.

Each flood must leave the dashboard alive, answering ``/api/status`` within 5 s and
serving its document over a new websocket afterwards.
"""

from __future__ import annotations

import pytest

from scripts.bench.hostile import DASHBOARD, Runner
from tests.hostile.conftest import CI_COUNT, assert_met

pytestmark = [pytest.mark.integration, pytest.mark.hostile]


def test_dashboard_websocket_survives_every_kind_of_bad_input(hostile: Runner) -> None:
    assert_met(hostile.flood_every_kind(DASHBOARD, CI_COUNT))
