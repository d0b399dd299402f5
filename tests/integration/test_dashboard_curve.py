"""The dashboard against a CURVE manager (docs/architecture.md#security), with real processes.

A real manager with ``[security] curve = yes`` (keys auto-accepted) and one
real agent ``node1``; real ``python -m dashboard.main`` processes configured
with the manager's keys_dir, with no keys, and with a valid admin key pair
that is not the manager's. The dashboard's ``/live`` page lists the nodes it
gets from the manager (``nodes.list`` over the ROUTER), and ``/api/status``
shows what its one subscriber got from the manager's PUB.
"""

from __future__ import annotations

import html
import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.security import ensure_keypair
from tests.dashboard.conftest import DashboardProc
from tests.integration.conftest import Cluster, unused_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("attach_module_logs")]


@pytest.fixture(scope="module")
def curve_cluster(tmp_path_factory: pytest.TempPathFactory,
                  module_logs: list[Path]) -> Iterator[Cluster]:
    """A CURVE manager that accepts new agent keys at once, and a ready agent ``node1``."""
    c = Cluster(tmp_path_factory.mktemp("curve-cluster"), module_logs,
                security="curve = yes\nauto_accept = yes\n")
    try:
        c.manager.start()
        c.add_agent("node1")
        yield c
    finally:
        c.stop()


def start_dashboard(tmp: Path, cluster: Cluster, logs: list[Path], security: str) -> DashboardProc:
    d = DashboardProc(tmp, cluster.manager.router_port, f"http://127.0.0.1:{unused_port()}",
                      "ptap", security=security)
    logs.append(d.log_path)
    d.start()
    return d


def fetch(d: DashboardProc, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, html.unescape(response.read().decode(errors="replace"))
    finally:
        conn.close()


def status(d: DashboardProc) -> dict[str, Any]:
    code, body = fetch(d, "/api/status")
    assert code == 200, body
    return dict(json.loads(body))


def test_with_the_admin_key_it_lists_nodes_and_gets_live_events(
        curve_cluster: Cluster, tmp_path: Path, module_logs: list[Path]) -> None:
    c = curve_cluster
    d = start_dashboard(tmp_path, c, module_logs,
                        f"curve = yes\nkeys_dir = {c.manager.keys_dir}\n")
    try:
        code, body = fetch(d, "/live")
        assert code == 200, body
        assert '<a href="/live?node=node1">node1</a>' in body

        wait_for(lambda: status(d)["feed"].get("handshakes"), 20,
                 "the feed's CURVE handshake with the manager's PUB")
        assert status(d)["feed_problem"] == ""
        rc, _, err = c.cli("run", "--wait", "--", "true")
        assert rc == 0, err
        wait_for(lambda: status(d)["feed"].get("events", 0) >= 1, 20,
                 "the job's events to reach the dashboard over CURVE")
        assert "CURVE with the admin key in " + str(c.manager.keys_dir) in d.log()
    finally:
        d.stop()


def test_without_keys_it_says_the_manager_uses_curve(
        curve_cluster: Cluster, tmp_path: Path, module_logs: list[Path]) -> None:
    c = curve_cluster
    d = start_dashboard(tmp_path, c, module_logs, "")
    try:
        code, body = fetch(d, "/live")
        assert code == 503, body
        assert (f"The manager is not answering: cannot reach manager at "
                f"tcp://127.0.0.1:{c.manager.router_port}") in body
        assert ("— if the manager uses CURVE, set [security] curve = yes and keys_dir "
                "(its keys_dir) in the dashboard's config") in body

        problem = wait_for(lambda: status(d)["feed_problem"], 20, "the feed's handshake error")
        # libzmq says "mechanism mismatch" when the dashboard reads the manager's
        # greeting first, or only "closed" when the manager hangs up first: both
        # establish the same cause (bus/handshake.py), and either may come first.
        pub = f"the manager at tcp://127.0.0.1:{c.manager.router_port + 1}"
        fix = ("it uses CURVE and the dashboard does not — set [security] curve = yes and "
               "keys_dir (its keys_dir) in the dashboard's config, then restart the dashboard")
        assert problem in (f"{pub} {fix.removeprefix('it ')}",
                           f"{pub} closed the connection during the handshake (EPIPE, broken "
                           f"pipe): {fix}",
                           f"{pub} closed the connection during the handshake (ECONNRESET, "
                           f"connection reset by peer): {fix}"), problem
        assert d.log().count(f"feed: {problem}") == 1
    finally:
        d.stop()


def test_an_admin_key_the_manager_does_not_know_is_refused(
        curve_cluster: Cluster, tmp_path: Path, module_logs: list[Path]) -> None:
    c = curve_cluster
    stranger = tmp_path / "stranger"
    ensure_keypair(stranger, "admin")  # a valid key pair, just not this manager's admin key
    shutil.copy(c.manager.keys_dir / "server.key", stranger / "server.key")
    d = start_dashboard(tmp_path, c, module_logs, f"curve = yes\nkeys_dir = {stranger}\n")
    try:
        code, body = fetch(d, "/live")
        assert code == 400, body
        assert "The manager refused: this key may not do that" in body

        problem = wait_for(lambda: status(d)["feed_problem"], 20, "the feed's handshake error")
        assert "refused the dashboard's key (ZAP status 400)" in problem
        assert "node1" not in body
    finally:
        d.stop()
