"""The fault scenarios, all run at once, each against its own cluster.

A scenario is a function ``(env: Env) -> Outcome`` registered with
:func:`scenario`; its test asks :meth:`FaultSuite.outcome` for the result and
asserts on it. The suite starts every selected scenario in a thread of its own
as soon as the first fault test runs, so the 30 s and 60 s faults overlap:
the folder takes about as long as its longest scenario, not their sum.
Scenarios share nothing that a fault touches: each has its own manager and
agent, a database of its own on the session's influxd, and its own influxd
when the fault is InfluxDB's (see :meth:`Env.own_influxdb`).

``PTAP_FAULTS_PARALLEL`` (default: all) caps how many run at once, for a host
too small to hold them all.
"""

from __future__ import annotations

import os
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.influxdb_local import InfluxServer
from tests.conftest_influx import InfluxFixture
from tests.faults.harness import FaultRun, Outcome
from tests.faults.host_stalls import HostStalls

Scenario = Callable[["Env"], Outcome]
SCENARIOS: dict[str, Scenario] = {}
#: Per scenario: a function saying why it cannot run here (None: it can).
REQUIRES: dict[str, Callable[[], str | None]] = {}


def scenario(name: str, unavailable: Callable[[], str | None] | None = None
             ) -> Callable[[Scenario], Scenario]:
    """Register a scenario under ``name`` (its test is ``test_<name>``); ``unavailable``
    says why it cannot run on this host, and its test is then skipped with that reason."""
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        if unavailable is not None:
            REQUIRES[name] = unavailable
        return fn

    return register


@dataclass
class Env:
    """What a scenario may use: a folder, the session's influxd, and a way to get its own."""

    name: str
    tmp: Path
    influx: InfluxFixture
    host: HostStalls | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def own_influxdb(self) -> InfluxFixture:
        """A private influxd (the scenario stops, kills or restarts it), stopped at the end.

        Started from this scenario's thread with PR_SET_PDEATHSIG, so it also ends
        when the thread does, even if the stop below is never reached."""
        server = InfluxServer(self.tmp / "influxdb", die_with_parent=True)
        server.start()
        self.cleanups.append(server.stop)
        return InfluxFixture(server)

    def run(self, fault: str, *, rate: float, seconds: float, stream: bool = False,
            influx: InfluxFixture | None = None) -> FaultRun:
        """A :class:`FaultRun` for this scenario, stopped at the end."""
        database = f"fault_{self.name}_{uuid.uuid4().hex[:6]}"
        (self.tmp / "cluster").mkdir(parents=True, exist_ok=True)
        server = influx or self.influx
        run = FaultRun(self.name, fault, self.tmp / "cluster", server, database,
                       rate=rate, seconds=seconds, stream=stream, host=self.host)
        self.cleanups.append(lambda: drop_database(server, database))  # after the stop
        self.cleanups.append(run.stop)
        return run


def drop_database(influx: InfluxFixture, database: str) -> None:
    """Leave the session's influxd as it was (a private one goes with its folder)."""
    if influx.running:
        influx.raw_query(None, f'DROP DATABASE "{database}"')


class FaultSuite:
    """Runs the named scenarios, each in its own thread, and hands out their outcomes."""

    def __init__(self, names: list[str], tmp: Path, influx: InfluxFixture) -> None:
        self.names = names
        self.tmp, self.influx = tmp, influx
        self.outcomes: dict[str, Outcome] = {}
        self.errors: dict[str, str] = {}
        self.logs: dict[str, list[Path]] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.skipped: dict[str, str] = {}
        limit = int(os.environ.get("PTAP_FAULTS_PARALLEL", "0") or 0) or len(names) or 1
        self._slots = threading.Semaphore(limit)
        self.host = HostStalls(tmp / "host-stalls.txt")

    def start(self) -> None:
        self.host.start()
        for name in self.names:
            reason = REQUIRES[name]() if name in REQUIRES else None
            if reason:
                self.skipped[name] = reason
                continue
            thread = threading.Thread(target=self._run, args=(name,), name=f"fault {name}",
                                      daemon=True)
            self.threads[name] = thread
            thread.start()

    def _run(self, name: str) -> None:
        env = Env(name, self.tmp / name, self.influx, self.host)
        env.tmp.mkdir(parents=True, exist_ok=True)
        with self._slots:
            try:
                outcome = SCENARIOS[name](env)
                self.outcomes[name] = outcome
                self.logs[name] = outcome.logs
            except BaseException:  # reported by the scenario's test, with the traceback
                self.errors[name] = traceback.format_exc()
            finally:
                for cleanup in reversed(env.cleanups):
                    try:
                        cleanup()
                    except Exception:
                        self.errors.setdefault(name, "")
                        self.errors[name] += "\ncleanup failed:\n" + traceback.format_exc()
                self.logs.setdefault(name, sorted(env.tmp.rglob("*.log")))

    def outcome(self, name: str, timeout: float = 600.0) -> Outcome:
        """Wait for scenario ``name`` and return its outcome; its failure, if it failed."""
        if name in self.skipped:
            pytest.skip(self.skipped[name])
        thread = self.threads.get(name)
        assert thread is not None, f"scenario {name} was not started (not selected?)"
        thread.join(timeout)
        assert not thread.is_alive(), f"scenario {name} still running after {timeout:g} s"
        if name in self.errors and name not in self.outcomes:
            raise AssertionError(f"scenario {name} failed:\n{self.errors[name]}")
        return self.outcomes[name]

    def stop(self, timeout: float = 300.0) -> None:
        for thread in self.threads.values():
            thread.join(timeout)
        self.host.stop()
