"""PerfCollector: the CSV parser on captured lines, and real perf runs."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from agent.collectors.perf import (
    PERF_FIELDS,
    Capability,
    PerfCollector,
    _PerfRun,
    _RunState,
    parse_perf_line,
    probe_perf,
)
from bus.metrics import Series

# Captured from perf 6.1 on this VM (no hardware PMU), one line per output mode.
CAPTURED = {
    "interval": "     0.200291046,401.29,msec,task-clock,401291940,100.00,2.006,CPUs utilized",
    "interval_count": "     0.200291046,45,,context-switches,401302914,100.00,112.138,/sec",
    "not_supported": "     0.200291046,<not supported>,,cycles,0,100.00,,",
    "no_interval": "0.71,msec,task-clock,707808,100.00,0.396,CPUs utilized",
    "no_interval_unsupported": "<not supported>,,instructions,0,100.00,,",
    "per_cpu": "     0.200426216,CPU0,201.05,msec,task-clock,201047096,100.00,1.005,CPUs utilized",
    "per_cpu_unsupported": "     0.200426216,CPU1,<not supported>,,cycles,0,100.00,,",
    "per_socket": "     0.100215039,S0,2,201.42,msec,task-clock,201414972,100.00,2.014,CPUs utilized",
    "per_core": "     0.100223868,S0-D0-C0,1,100.79,msec,task-clock,100787312,100.00,1.008,CPUs utilized",
    "per_thread_not_counted": "     0.100198013,bash-2171,<not counted>,,context-switches,0,100.00,,",
    "cgroup": "     0.100222749,<not counted>,msec,task-clock,/,0,100.00,,",
    "repeat_variance": "0.76,msec,task-clock,2.16%,760584,100.00,0.647,CPUs utilized",
    "no_metric_columns": "     0.200291046,45,,context-switches,401302914,100.00",
}


def test_parse_interval_line() -> None:
    s = parse_perf_line(CAPTURED["interval"])
    assert s is not None
    assert (s.ts, s.event, s.value, s.unit) == (0.200291046, "task-clock", 401.29, "msec")
    assert (s.status, s.run_ns, s.enabled_pct) == (Capability.SUPPORTED, 401291940, 100.0)


@pytest.mark.parametrize("key", ["not_supported", "no_interval_unsupported", "per_cpu_unsupported"])
def test_not_supported_is_never_a_zero(key: str) -> None:
    s = parse_perf_line(CAPTURED[key])
    assert s is not None and s.status is Capability.NOT_SUPPORTED and s.value is None


@pytest.mark.parametrize("key", ["per_thread_not_counted", "cgroup"])
def test_not_counted(key: str) -> None:
    s = parse_perf_line(CAPTURED[key])
    assert s is not None and s.status is Capability.NOT_COUNTED and s.value is None


@pytest.mark.parametrize(("key", "ts", "event", "value", "prefix"), [
    ("interval_count", 0.200291046, "context-switches", 45.0, ()),
    ("no_interval", None, "task-clock", 0.71, ()),
    ("per_cpu", 0.200426216, "task-clock", 201.05, ("CPU0",)),
    ("per_socket", 0.100215039, "task-clock", 201.42, ("S0", "2")),
    ("per_core", 0.100223868, "task-clock", 100.79, ("S0-D0-C0", "1")),
    ("repeat_variance", None, "task-clock", 0.76, ()),
    ("no_metric_columns", 0.200291046, "context-switches", 45.0, ()),
])
def test_parse_variants(key: str, ts: float | None, event: str, value: float,
                        prefix: tuple[str, ...]) -> None:
    s = parse_perf_line(CAPTURED[key])
    assert s is not None
    assert (s.ts, s.event, s.value, s.prefix) == (ts, event, value, prefix)


def test_cgroup_column_is_not_part_of_the_event() -> None:
    s = parse_perf_line(CAPTURED["cgroup"])
    assert s is not None and (s.event, s.cgroup) == ("task-clock", "/")


@pytest.mark.parametrize("line", [
    "", "Error:", "The cycles event is not supported.",
    " Usage: perf stat [<options>] [<command>]", "garbage,with,commas",
])
def test_other_lines_are_not_samples(line: str) -> None:
    assert parse_perf_line(line) is None


def test_run_state_rates_and_ipc() -> None:
    # Format of real interval lines; counted cycles need a PMU this VM lacks.
    lines = [
        "     1.000000000,2000000,,cycles,1000000,50.00,,",
        "     1.000000000,3000000,,instructions,1000000,75.00,1.50,insn per cycle",
        "     1.000000000,<not supported>,,cache-misses,0,100.00,,",
        "     1.500000000,1000000,,cycles,500000,100.00,,",
        "     1.500000000,<not counted>,,instructions,0,0.00,,",
        "     1.500000000,<not supported>,,cache-misses,0,100.00,,",
    ]
    state = _RunState(start_ns=10**18, n_events=3)
    samples = [parse_perf_line(line) for line in lines]
    rows = [r for s in samples if s is not None for r in state.add(s)] + state.flush()
    assert ("cache-misses" not in {r[1] for r in rows})
    first = {r[1]: r for r in rows if r[0] == 10**18 + 10**9}
    assert first["cycles"][2:] == (2000000.0, 2000000.0, 50.0)
    assert first["ipc"][2:] == (1.5, None, 50.0)
    second = {r[1]: r for r in rows if r[0] == 10**18 + 15 * 10**8}
    assert set(second) == {"cycles"}  # no ipc without instructions
    assert second["cycles"][3] == 2000000.0  # 1e6 in a 0.5 s interval


perf_missing = shutil.which("perf") is None


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


async def _until(cond: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)  # wait-ok: poll step under a deadline


def _events(series: list[Series]) -> dict[str, list[list[Any]]]:
    out: dict[str, list[list[Any]]] = {}
    for s in series:
        assert s.measurement == "perf" and s.fields == PERF_FIELDS
        out.setdefault(s.tags["event"], []).extend(s.rows)
    return out


@pytest.mark.skipif(perf_missing, reason="perf not installed")
def test_real_job_scope_run(busy: subprocess.Popen[bytes]) -> None:
    events = ["task-clock", "context-switches", "cycles", "instructions"]

    async def main() -> tuple[list[Series], dict[str, Capability]]:
        c = PerfCollector("n1", "j1", [busy.pid], events, interval_ms=100)
        await c.start()
        got: list[Series] = []
        try:
            def done() -> bool:
                got.extend(c.collect(time.time_ns()))
                return "task-clock" in _events(got) and "cycles" in c.capabilities

            await _until(done)
        finally:
            await c.stop()
        return got, c.capabilities

    series, caps = asyncio.run(main())
    assert all(s.tags["scope"] == "job" and s.tags["job"] == "j1" for s in series)
    by_event = _events(series)
    assert all(row[1] > 0 for row in by_event["task-clock"])  # a busy loop
    for event, cap in caps.items():
        if cap is not Capability.SUPPORTED:
            assert event not in by_event, f"{event} is {cap} but produced rows"
    assert set(caps) >= {"task-clock", "cycles"}


@pytest.mark.skipif(perf_missing, reason="perf not installed")
def test_real_system_scope_and_pid_refresh(busy: subprocess.Popen[bytes]) -> None:
    async def main() -> None:
        system = PerfCollector("n1", None, None, ["task-clock"], interval_ms=100)
        job = PerfCollector("n1", "j1", [busy.pid], ["task-clock"], interval_ms=100)
        await system.start()
        await job.start()
        try:
            assert await job.set_pids([busy.pid]) is False  # unchanged set
            sleeper = await asyncio.create_subprocess_exec("sleep", "30")
            try:
                # Restarts are limited to one per interval, so this may take a retry.
                await _retry_set(job, [busy.pid, sleeper.pid])
                assert job.restarts == 1 and job.running
                assert str(sleeper.pid) in (job.argv() or [""])[-1]
                got: list[Series] = []
                def done() -> bool:
                    got.extend(system.collect(time.time_ns()))
                    return bool(got)

                await _until(done)
                assert got[0].tags == {"node": "n1", "scope": "system", "event": "task-clock"}
            finally:
                sleeper.kill()
                await sleeper.wait()
        finally:
            await system.stop()
            await job.stop()
        assert not system.running and not job.running

    asyncio.run(main())


async def _retry_set(c: PerfCollector, pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while not await c.set_pids(pids):
        assert time.monotonic() < deadline, "set_pids never restarted perf"
        await asyncio.sleep(0.02)  # wait-ok: poll step under a deadline


@pytest.mark.skipif(perf_missing, reason="perf not installed")
def test_perf_exits_on_its_own_when_the_job_ends() -> None:
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; t = time.time() + 0.3\nwhile time.time() < t: pass")
        c = PerfCollector("n1", "j1", [proc.pid], ["task-clock"], interval_ms=100)
        await c.start()
        await proc.wait()
        await _until(lambda: not c.running)
        assert c.error is None
        await c.stop()

    asyncio.run(main())


def test_missing_perf_never_crashes() -> None:
    async def main() -> PerfCollector:
        c = PerfCollector("n1", None, None, ["task-clock", "cycles"], 100,
                          perf_path="/nonexistent/perf")
        await c.start()
        assert c.collect(time.time_ns()) == []
        await c.stop()
        return c

    c = asyncio.run(main())
    assert c.capabilities == {"task-clock": "unavailable", "cycles": "unavailable"}
    assert c.error and "/nonexistent/perf" in c.error
    facts = probe_perf("/nonexistent/perf")
    assert facts["available"] is False and facts["hardware_events"] is False
    assert "/nonexistent/perf" in facts["error"]


@pytest.mark.skipif(perf_missing, reason="perf not installed")
def test_perf_failing_at_start_is_recorded() -> None:
    async def main() -> PerfCollector:
        c = PerfCollector("n1", None, None, ["no-such-event"], 100)
        await c.start()
        await _until(lambda: not c.running)
        await c.stop()
        assert c.collect(time.time_ns()) == []
        return c

    c = asyncio.run(main())
    assert c.capabilities == {"no-such-event": Capability.UNAVAILABLE}
    assert c.error and "exited" in c.error


@pytest.mark.skipif(perf_missing, reason="perf not installed")
def test_probe_real_perf() -> None:
    facts = probe_perf()
    assert set(facts) >= {"available", "paranoid", "hardware_events", "version", "error"}
    assert facts["available"] is True and facts["error"] is None
    assert facts["version"].startswith("perf version")
    assert "cycles" in facts["capabilities"]
    hw = facts["capabilities"]["cycles"] == "supported" == facts["capabilities"]["instructions"]
    assert facts["hardware_events"] is hw


def test_a_partial_line_waits_for_the_rest() -> None:
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    run = _PerfRun(cast(Any, None), rfd, _RunState(0, 1))
    try:
        assert run.read_lines(final=False) == []  # nothing written yet: no blocking
        os.write(wfd, b"     0.100198013,45,,context-sw")
        assert run.read_lines(final=False) == []
        os.write(wfd, b"itches,100,100.00,,\n     0.200291046,4")
        assert run.read_lines(final=False) == [b"     0.100198013,45,,context-switches,100,100.00,,"]
        os.write(wfd, b"6,,context-switches,100,100.00,,")
        os.close(wfd)
        wfd = -1
        # At perf's exit everything is taken, even a last line without its newline.
        assert run.read_lines(final=True) == [b"     0.200291046,46,,context-switches,100,100.00,,"]
        assert run.fd is None
    finally:
        run.close()
        if wfd >= 0:
            os.close(wfd)


@pytest.mark.skipif(perf_missing, reason="perf not installed")
def test_perf_output_does_not_wake_the_loop_and_stop_keeps_it(
        busy: subprocess.Popen[bytes]) -> None:
    async def main() -> None:
        c = PerfCollector("n1", "j1", [busy.pid], ["task-clock"], interval_ms=50)
        await c.start()
        run = c._run
        assert run is not None and run.fd is not None
        fd = run.fd
        try:
            # Nothing in the loop watches perf's pipe: collect() reads it when asked.
            selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
            assert fd not in {key.fd for key in selector.get_map().values()}
            assert not os.get_blocking(fd)
            await _until(lambda: select.select([fd], [], [], 0)[0])
        finally:
            await c.stop()
        # stop() reaped perf and read what it had printed before.
        assert not c.running and run.fd is None
        assert "task-clock" in _events(c.collect(time.time_ns()))

    asyncio.run(main())
