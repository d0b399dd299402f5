"""InfluxDB down for 60 s, paused (SIGSTOP) or killed and started again (issue 12).

The manager buffers what it cannot write and the agents keep what is not acked,
so every point arrives once InfluxDB is back; the drain time says how soon.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from tests.faults.harness import Outcome
from tests.faults.runner import Env, scenario

pytestmark = pytest.mark.integration

OUTAGE = 60.0  # as the issue measured it
MAX_CPU_GAP = 5.0


@scenario("influxdb_sigstop")
def influxdb_sigstop(env: Env) -> Outcome:
    influx = env.own_influxdb()
    run = env.run(f"InfluxDB SIGSTOP {OUTAGE:g} s at 200 points/s", rate=200,
                  seconds=OUTAGE + 10, influx=influx)
    run.start()
    run.submit()
    run.wait_flowing()
    run.at(4)
    pid = influx.server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        run.hold(OUTAGE)
    finally:
        os.kill(pid, signal.SIGCONT)
    run.cleared()
    outcome = run.finish()
    if influx.server.pid != pid:
        outcome.deaths.append(f"influxd pid {pid} is gone")
    return outcome


@scenario("influxdb_kill_restart")
def influxdb_kill_restart(env: Env) -> Outcome:
    influx = env.own_influxdb()
    run = env.run(f"InfluxDB SIGKILL, started again {OUTAGE:g} s later, at 200 points/s",
                  rate=200, seconds=OUTAGE + 10, influx=influx)
    run.start()
    run.submit()
    run.wait_flowing()
    run.at(4)
    pid = influx.server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    influx.stop()  # reaps it: it is gone already
    run.hold(OUTAGE)
    influx.start()  # same port, same data
    run.cleared()
    return run.finish()


def test_influxdb_sigstop(check: Callable[..., Outcome]) -> None:
    check("influxdb_sigstop", max_cpu_gap=MAX_CPU_GAP)


def test_influxdb_kill_restart(check: Callable[..., Outcome]) -> None:
    check("influxdb_kill_restart", max_cpu_gap=MAX_CPU_GAP)
