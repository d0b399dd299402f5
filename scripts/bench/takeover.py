"""Benchmark: how soon a node is back after its manager was paused (SIGSTOP, then SIGCONT).

    .venv/bin/python scripts/bench/takeover.py [--pause 12] [--rounds 3]
        [--against DIR] [--json]

What is measured. A real manager (``python -m manager.main``, its own config,
state and keys in a temporary directory, an InfluxDB URL where nothing listens)
and one real agent (``python -m agent.main``, node ``n1``, heartbeat 1 s,
liveness 3, the defaults) on 127.0.0.1. Once the agent is registered, the
manager is SIGSTOPped for ``--pause`` seconds (the agent gives its connection up
after 3 s of silence and opens new ones meanwhile), then SIGCONTed; the figure
is the time from SIGCONT until the agent logs its next welcome, with the number
of ``name-taken`` refusals it logged. Each round runs with CURVE (auto-accept
from loopback) and without.

``--against DIR`` runs the same rounds, alternating, with the manager of
another checkout (``git worktree add DIR COMMIT``), always beside this
checkout's agent: the manager's share, side by side in one run. Before the
takeover (commit f473ccd) the returning connection was refused ``name-taken``
while the old one's last heartbeats kept the node alive, and came back after
the agent's back-off.

Every process started here is stopped by its pid (SIGCONT first); temporary
directories are removed. Bounded: at most 20 rounds, pauses of 1–120 s, 60 s
per return. The exit status is 1 only when the bench itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RETURN_TIMEOUT = 60.0


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_")}
    env["PYTHONPATH"] = str(tree)
    return env


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)  # polling a log file under a deadline


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def pair(manager_tree: Path, curve: bool) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A manager from ``manager_tree`` and this checkout's agent ``n1``; yields the
    manager process and the agent's log."""
    tmp = Path(tempfile.mkdtemp(prefix="ptap-takeover-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        (tmp / "server.cfg").write_text(
            f"[basic]\nbind_port = 0\n[state]\npath = {tmp / 'm.db'}\n"
            "[influxdb]\nurl = http://127.0.0.1:9\n"
            f"[security]\nkeys_dir = {tmp / 'keys'}\n"
            + ("curve = yes\nauto_accept = yes\n" if curve else ""))
        with open(tmp / "manager.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "manager.main", "--config", str(tmp / "server.cfg"),
                 "--ready-file", str(tmp / "ready")], cwd=manager_tree,
                env=_env(manager_tree), stdout=log, stderr=subprocess.STDOUT))
        _wait(lambda: (tmp / "ready").exists(), 30, "the manager")
        port = json.loads((tmp / "ready").read_text())["router"]
        agent_keys = tmp / "agent-keys"
        agent_keys.mkdir(mode=0o700)
        if curve:
            shutil.copy(tmp / "keys" / "server.key", agent_keys / "server.key")
        (tmp / "agent.cfg").write_text(
            f"[dispatcher]\nworkdir = {tmp / 'runs'}\n[spool]\ndir = {tmp / 'spool'}\n"
            f"[security]\nkeys_dir = {agent_keys}\ncurve = {'yes' if curve else 'no'}\n")
        agent_log = tmp / "agent.log"
        with open(agent_log, "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "agent.main", "--config", str(tmp / "agent.cfg"),
                 "--name", "n1", "--server", f"127.0.0.1:{port}"], cwd=ROOT, env=_env(ROOT),
                stdout=log, stderr=subprocess.STDOUT))
        _wait(lambda: "registered with" in agent_log.read_text(errors="replace"), 30,
              "the agent to register")
        yield procs[0], agent_log
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def one_return(manager_tree: Path, curve: bool, pause: float) -> dict[str, Any]:
    """Seconds from SIGCONT until the agent is welcomed again, and its refusals."""
    with pair(manager_tree, curve) as (manager, agent_log):
        def text() -> str:
            return agent_log.read_text(errors="replace")

        welcomed, refused = text().count("registered with"), text().count("name taken")
        manager.send_signal(signal.SIGSTOP)
        try:
            time.sleep(pause)  # the pause being measured, not a wait for a condition
        finally:
            manager.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        _wait(lambda: text().count("registered with") > welcomed, RETURN_TIMEOUT,
              "the agent's return")
        return {"back_s": time.monotonic() - resumed,
                "name_taken": text().count("name taken") - refused}


def run(args: argparse.Namespace) -> dict[str, Any]:
    trees = {"this checkout": ROOT,
             **({f"manager of {args.against}": args.against} if args.against else {})}
    rows: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for curve in (True, False):
            for label, tree in trees.items():
                key = f"{label}, {'CURVE' if curve else 'plain'}"
                rows.setdefault(key, []).append(one_return(tree, curve, args.pause))
                print(f"{key}: {rows[key][-1]}", file=sys.stderr, flush=True)
    return {"pause_s": args.pause, "load": os.getloadavg(), "rows": rows}


def report(results: dict[str, Any]) -> str:
    lines = [f"manager paused {results['pause_s']:g} s; node back after SIGCONT "
             f"(load average {results['load'][0]:.1f}):"]
    for key, samples in results["rows"].items():
        backs = [s["back_s"] for s in samples]
        lines.append(f"  {key:<40} median {statistics.median(backs):6.2f} s "
                     f"(min {min(backs):.2f}, max {max(backs):.2f}), name-taken refusals "
                     f"{sum(s['name_taken'] for s in samples)} in {len(samples)} rounds")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pause", type=float, default=12.0, help="seconds stopped (1-120)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setting (1-20)")
    parser.add_argument("--against", type=Path, help="another checkout's manager, alternated")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.pause <= 120 or not 1 <= args.rounds <= 20:
        parser.error("--pause takes 1-120 s and --rounds 1-20")
    if args.against is not None and not (args.against / "manager" / "main.py").exists():
        parser.error(f"{args.against} is not a ptap checkout (no manager/main.py)")
    try:
        results = run(args)
    except (RuntimeError, OSError) as exc:
        print(f"takeover bench failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
