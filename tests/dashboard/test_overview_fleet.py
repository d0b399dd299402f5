"""The overview with a fleet: 2,000 registered nodes and a real agent, in real Chromium.

The nodes are registered over the real wire by :func:`scripts.bench.overview.register_fleet`
(``agent.register`` on real DEALER sockets, labelled ``rack=r00``..``r19`` and every tenth
``gpu``), and then go ``lost``; ``node1`` is the module cluster's real agent, with
metrics in the session's influxd. The page must draw with every node counted, page
its table, filter it in the manager's terms, and draw ``node1``'s sparkline.
How long it takes to draw is a benchmark's business (``scripts/bench/overview.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.bench.overview import DRAWN, register_fleet
from tests.dashboard.cdp import Browser, Tab
from tests.dashboard.conftest import DashboardProc
from tests.dashboard.test_browser import CLICK, model
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

FLEET = 2000
#: JavaScript: a sparkline with points is in the page (inside the table's shadow root).
DRAWN_LINE = """(() => { const walk = (root) => { for (const el of root.querySelectorAll('*')) {
    if (el.tagName.toLowerCase() === 'polyline' && el.getAttribute('points')) return true;
    if (el.shadowRoot && walk(el.shadowRoot)) return true; } return false; };
  return walk(document); })()"""
#: JavaScript: the text of drawn row N (``% (N, N)``) of the node table (SlickGrid's rows).
ROW_TEXT = """(() => { const rows = []; const walk = (root) => root.querySelectorAll('*').forEach(
    (el) => { if (el.classList && el.classList.contains('slick-row')) rows.push(el);
              if (el.shadowRoot) walk(el.shadowRoot); });
  walk(document); rows.sort((a, b) => a.offsetTop - b.offsetTop);
  return rows.length > %d ? rows[%d].textContent : ''; })()"""


@pytest.fixture(scope="module")
def fleet(dash_cluster: Cluster) -> int:
    """2,000 simulated nodes besides ``node1``; the number of nodes known."""
    register_fleet(f"tcp://{dash_cluster.manager.address}", FLEET)
    return FLEET + 1


@pytest.fixture
def overview(browser: Browser, dashboard: DashboardProc, fleet: int) -> Iterator[Tab]:
    tab = browser.new_tab(f"{dashboard.url}/")
    try:
        tab.wait(DRAWN % json.dumps(f"{fleet:,}"), 60, "the overview of the whole fleet")
        yield tab
    finally:
        tab.close()


def text_of(tab: Tab, name: str) -> str:
    return str(tab.js(f"{model(name)}.text"))


def test_the_overview_of_2000_nodes_draws_summarised_and_paged(
        overview: Tab, output_dir: Path) -> None:
    tab = overview
    # node1 may miss a beat on a loaded host: counted ready again once it speaks.
    tab.wait(f"{model('summary')}.text.includes('2,000 lost') && "
             f"{model('summary')}.text.includes('1 ready')", 30,
             "the simulated nodes counted lost, node1 ready")
    summary = text_of(tab, "summary")
    assert "<b>2,001 nodes</b>" in summary
    assert "<td>gpu</td><td>0</td><td>0</td><td>200</td><td>200</td>" in summary
    assert text_of(tab, "page_info") == "nodes 1–50 of 2,001 (page 1 of 41)"
    rows = tab.js(f"{model('nodes')}.data.name")
    assert len(rows) == 50 and rows[0] == "node1", "one page, live nodes first"
    # node1's sparkline: SVG points from the one query for the page's nodes.
    tab.wait(f"{model('nodes')}.data.cpu_line[0].length > 0", 30, "node1's sparkline")
    tab.wait(DRAWN_LINE, 15, "the sparkline drawn in its row")
    # The rows as drawn follow the data: the simulated nodes show lost there too.
    tab.wait((ROW_TEXT % (1, 1)) + ".includes('lost')", 15, "the second row drawn lost")
    tab.screenshot(output_dir / "overview-2000.png")


def test_filters_and_pages_narrow_the_table(overview: Tab) -> None:
    tab = overview
    tab.js(f"{model('label_filter')}.value = 'gpu'")
    tab.wait(f"{model('page_info')}.text === 'nodes 1–50 of 200 (page 1 of 4)'", 15,
             "200 gpu nodes")
    assert tab.js(CLICK + "('next ▶')")
    tab.wait(f"{model('page_info')}.text === 'nodes 51–100 of 200 (page 2 of 4)'", 15,
             "the second page")
    # The rows come in their own message, after or before the page's line.
    names = tab.wait(f"{model('nodes')}.data.name[0] === 'sim00500' && "
                     f"{model('nodes')}.data.name", 15, "the second page's rows")
    assert len(names) == 50 and all(int(n[3:]) % 10 == 0 for n in names)
    tab.wait((ROW_TEXT % (0, 0)) + ".startsWith('sim00500')", 15, "the second page drawn")
    tab.js(f"{model('state_filter')}.value = 'up'")
    tab.wait(f"{model('page_info')}.text === 'no node matches these filters'", 15,
             "no live gpu node")
    tab.js(f"{model('label_filter')}.value = '(any label)'")
    tab.wait(f"{model('page_info')}.text === 'nodes 1–1 of 1 (page 1 of 1)'", 15,
             "node1 alone is up")
    tab.js(f"{model('name_filter')}.value = 'sim0199'")
    tab.js(f"{model('state_filter')}.value = 'lost'")
    tab.wait(f"{model('page_info')}.text === 'nodes 1–10 of 10 (page 1 of 1)'", 15,
             "sim01990..sim01999")
