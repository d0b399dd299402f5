"""Benchmark: the dashboard's overview drawn in headless Chromium with a fleet of known nodes.

    .venv/bin/python scripts/bench/overview.py [--nodes 100,2000] [--loads 3] [--json]

What is measured. Everything is real and private to the run: an ``influxd``
(temporary directory, free port), ``python -m manager.main``, one real agent
(``python -m agent.main``, node ``real1``, sampling every second, so the first
page has a sparkline), ``python -m dashboard.main`` and headless Chromium over
the DevTools protocol (``tests/dashboard/cdp.py``). For each N, in rising
order, the fleet grows to N simulated nodes (:func:`register_fleet`: real
``agent.register`` messages over real DEALER sockets, labelled
``rack=r00``..``r19`` and every tenth ``gpu``; they then close, so most of the
fleet is ``lost``, as in the review's 1,598 known nodes of which most were gone).
First, in a Chromium of its own with an empty cache, a user's first visit
(BokehJS fetched and compiled too) is timed; then, after one load that is not
counted (it fills the shared Chromium's cache with BokehJS, as a user's second
visit finds it), ``--loads`` times: a fresh tab opens ``/`` and the time is taken from
navigation until the page has drawn its overview, i.e. the Bokeh document is in
the browser, its summary counts every node, and the node table has drawn its
rows in the DOM (SlickGrid's ``.slick-row``). Each load is a new Bokeh session,
so the document is built and sent each time.

``ptap nodes`` wall time (a whole CLI process, as a user runs it) is taken at
each N too, beside the draw, in the same run. The target (issue 12): the
overview drawn under 2 s with 2,000 known nodes.

Used by ``scripts/bench/scale.py`` as well: :func:`register_fleet` and
:func:`overview_draw_seconds` take an address and a URL of processes it runs.
Every process started here is stopped by its pid; the temporary directory is
removed. The exit status is 1 only when the bench itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402

from bus import codec  # noqa: E402
from bus.messages import PROTOCOL_VERSION, Error, NodeFacts, Register, Welcome  # noqa: E402

#: Sockets opened at once while registering (each is a file descriptor or two).
BATCH = 250
TARGET_DRAW_S = 2.0


def fleet_labels(i: int) -> list[str]:
    """Labels of simulated node ``i``: its rack (20 of them), and ``gpu`` on every tenth."""
    return [f"rack=r{i % 20:02d}", *(["gpu"] if i % 10 == 0 else [])]


def fleet_name(i: int) -> str:
    return f"sim{i:05d}"


def register_fleet(router: str, count: int, *, first: int = 0,
                   labels: Callable[[int], list[str]] = fleet_labels,
                   timeout: float = 120.0) -> list[str]:
    """Register simulated nodes ``first``..``first+count-1`` with the manager at ``router``
    (``tcp://HOST:PORT``, CURVE off) over real DEALER sockets, :data:`BATCH` at a time;
    each sends ``agent.register`` and waits for its ``agent.welcome``, then closes, so
    the node is known and goes ``lost`` after the manager's liveness timeout. Returns
    the names; raises RuntimeError on a refusal or at ``timeout``."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    deadline = time.monotonic() + timeout
    names = [fleet_name(i) for i in range(first, first + count)]
    try:
        for start in range(0, count, BATCH):
            batch = list(range(first + start, first + min(count, start + BATCH)))
            _register_batch(ctx, router, batch, labels, deadline)
    finally:
        ctx.destroy(linger=0)
    return names


def _register_batch(ctx: zmq.Context[zmq.Socket[bytes]], router: str, batch: list[int],
                    labels: Callable[[int], list[str]], deadline: float) -> None:
    poller, waiting = zmq.Poller(), {}
    try:
        for i in batch:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(router)
            facts = NodeFacts(hostname=fleet_name(i), address=f"10.{i // 65536 % 256}."
                              f"{i // 256 % 256}.{i % 256}", cpus=8, memory_bytes=32 << 30,
                              kernel="6.1.0", labels=labels(i), agent_version="sim")
            sock.send_multipart(codec.encode(Register(
                protocol=PROTOCOL_VERSION, node=fleet_name(i), facts=facts, runs=[],
                sent_at=time.time())))
            poller.register(sock, zmq.POLLIN)
            waiting[sock] = i
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{len(waiting)} simulated nodes got no welcome in time")
            for sock, _ in poller.poll(int(left * 1000)):
                msg = codec.decode(sock.recv_multipart())
                if isinstance(msg, Error):
                    raise RuntimeError(f"node {fleet_name(waiting[sock])} refused: "
                                       f"{msg.code}: {msg.message}")
                if isinstance(msg, Welcome):
                    poller.unregister(sock)
                    del waiting[sock]
                    sock.close(linger=0)
    finally:
        for sock in waiting:
            sock.close(linger=0)


#: JavaScript: true once the overview has drawn: the document is in, its summary
#: counts ``total`` nodes, and the node table shows rows (SlickGrid draws them inside
#: the table's shadow root).
DRAWN = """((total) => {
  if (!(window.Bokeh && Bokeh.documents.length > 0)) return false;
  const doc = Bokeh.documents[0], summary = doc.get_model_by_name('summary');
  if (!summary || !summary.text.includes('<b>' + total + ' node')) return false;
  const walk = (root) => { for (const el of root.querySelectorAll('*')) {
      if (el.classList && el.classList.contains('slick-row')) return true;
      if (el.shadowRoot && walk(el.shadowRoot)) return true; } return false; };
  return walk(document);
})(%s)"""


def overview_draw_seconds(browser: Any, url: str, total: int, timeout: float = 120.0) -> float:
    """Seconds from opening ``url``/ in a new tab of ``browser`` (a
    :class:`tests.dashboard.cdp.Browser`) until the overview has drawn with ``total``
    nodes counted (``f"{total:,}"`` in its summary)."""
    tab = browser.new_tab()
    try:
        started = time.monotonic()
        tab.navigate(f"{url}/")
        tab.wait(DRAWN % json.dumps(f"{total:,}"), timeout, f"the overview of {total:,} nodes")
        return time.monotonic() - started
    finally:
        tab.close()


def ptap_nodes_seconds(router_port: int) -> float:
    """Wall time of ``ptap nodes`` (a whole process), as a user runs it."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "manager.cli.main", "--manager",
                           f"127.0.0.1:{router_port}", "nodes"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"ptap nodes failed: {done.stderr.strip()}")
    return elapsed


# --- the bench --------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from scripts.bench.live_latency import cluster  # noqa: PLC0415 - its processes
    from tests.dashboard.cdp import Browser  # noqa: PLC0415

    results: dict[str, Any] = {"host": platform.node(), "cpus": _cpus(),
                               "load_before": os.getloadavg(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="ptap-overview-") as tmp_name:
        tmp = Path(tmp_name)
        with cluster(tmp) as env:
            router = f"tcp://127.0.0.1:{env['ports']['router']}"
            browser = Browser(tmp / "chromium", tmp / "chromium.log").start()
            try:
                # A first load fills Chromium's cache with BokehJS (as any user's second
                # visit has it): not counted.
                overview_draw_seconds(browser, env["url"], 1)
                known = 0
                for n in sorted(args.nodes):
                    register_fleet(router, n - known, first=known)
                    known = n
                    total = n + 1  # and the real agent
                    cold = _cold_draw(tmp / f"chromium-cold-{n}", env["url"], total)
                    draws = [overview_draw_seconds(browser, env["url"], total)
                             for _ in range(args.loads)]
                    cli = [ptap_nodes_seconds(env["ports"]["router"])
                           for _ in range(args.loads)]
                    results["rows"].append({"nodes": total, "cold_s": cold, "draw_s": draws,
                                            "ptap_nodes_s": cli})
                    print(_row(results["rows"][-1]), file=sys.stderr, flush=True)
            finally:
                browser.stop()
    results["load_after"] = os.getloadavg()
    return results


def _cold_draw(profile: Path, url: str, total: int) -> float:
    """The draw in a Chromium with an empty cache: a user's first visit, BokehJS and all."""
    from tests.dashboard.cdp import Browser  # noqa: PLC0415

    browser = Browser(profile, profile.with_suffix(".log")).start()
    try:
        return overview_draw_seconds(browser, url, total)
    finally:
        browser.stop()


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _row(r: dict[str, Any]) -> str:
    draw, cli = statistics.median(r["draw_s"]), statistics.median(r["ptap_nodes_s"])
    verdict = ""
    if r["nodes"] >= 2000:
        verdict = "  (target < 2 s: " + ("met" if draw < TARGET_DRAW_S else "MISSED") + ")"
    return (f"{r['nodes']:>6,} known nodes   overview drawn: median {draw:.2f} s "
            f"(min {min(r['draw_s']):.2f}, max {max(r['draw_s']):.2f}){verdict}, "
            f"first visit (empty cache) {r['cold_s']:.2f} s   "
            f"ptap nodes: median {cli:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="100,2000",
                        help="comma-separated fleet sizes, simulated nodes (default 100,2000)")
    parser.add_argument("--loads", type=int, default=3, help="page loads per size (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    args.nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
    if not args.nodes or min(args.nodes) < 1 or max(args.nodes) > 10_000 or args.loads < 1:
        parser.error("--nodes takes sizes from 1 to 10000, --loads at least 1")
    try:
        results = measure(args)
    except (RuntimeError, AssertionError, OSError) as exc:
        print(f"overview bench failed: {exc}", file=sys.stderr)
        return 1
    load = (f"load average {results['load_before'][0]:.1f} before, "
            f"{results['load_after'][0]:.1f} after, {results['cpus']} CPUs")
    print(json.dumps(results, indent=2) if args.json
          else "\n".join([*(_row(r) for r in results["rows"]), load]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
