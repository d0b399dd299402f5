"""agent.runner with real processes: exit codes, bounded output, and no leaked process trees."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.runner import Runner, RunnerOptions
from bus.messages import RunDispatch, RunState

#: A tree of three: sh and two background sleeps whose pids it prints.
TREE = ["sh", "-c", "sleep 30 & echo $!; sleep 30 & echo $!; wait"]


def dispatch(command: list[str], **kw: Any) -> RunDispatch:
    return RunDispatch(run_id="job1.n1.1", job_id="job1", iteration=1, command=command, **kw)


def options(tmp_path: Path, **kw: Any) -> RunnerOptions:
    base: dict[str, Any] = {"workdir": str(tmp_path / "runs"), "output_tail": 65536, "kill_grace": 1.0,
            "drain_timeout": 1.0}
    base.update(kw)
    return RunnerOptions(**base)


class Recorder:
    """Collects state changes and output lines; ``pids`` are the numbers printed on stdout."""

    def __init__(self, want_pids: int = 0) -> None:
        self.states: list[RunState] = []
        self.lines: list[tuple[str, str]] = []
        self.pids: list[int] = []
        self._want = want_pids
        self.pids_seen = asyncio.Event()

    def on_change(self, runner: Runner) -> None:
        self.states.append(runner.state)

    def on_line(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        if stream == "stdout" and line.strip().isdigit():
            self.pids.append(int(line))
            if len(self.pids) >= self._want:
                self.pids_seen.set()


def make(cmd: list[str], tmp_path: Path, rec: Recorder, opts: RunnerOptions | None = None,
         **kw: Any) -> Runner:
    return Runner(dispatch(cmd, **kw), "n1", opts or options(tmp_path),
                  on_change=rec.on_change, on_line=rec.on_line)


def still_alive(pids: list[int | None]) -> list[int]:
    """Pids that still run (zombies waiting for init to reap them do not count)."""
    alive = []
    for pid in pids:
        assert pid is not None
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


async def run_to_end(runner: Runner) -> None:
    await runner.start()
    await asyncio.wait_for(runner.wait(), 30)


@pytest.mark.parametrize("cmd, state, code", [
    (["true"], RunState.SUCCEEDED, 0),
    (["sh", "-c", "exit 3"], RunState.FAILED, 3),
    (["sh", "-c", "kill -TERM $$"], RunState.FAILED, -signal.SIGTERM),
])
def test_exit_codes(tmp_path: Path, cmd: list[str], state: RunState, code: int) -> None:
    rec = Recorder()

    async def scenario() -> None:
        runner = make(cmd, tmp_path, rec)
        await run_to_end(runner)
        report = runner.report()
        assert (report.state, report.exit_code) == (state, code)
        assert report.pid and report.started_at and report.ended_at
        assert report.ended_at >= report.started_at
        assert rec.states == [RunState.RUNNING, state]

    asyncio.run(scenario())


def test_signal_exit_is_named(tmp_path: Path) -> None:
    async def scenario() -> None:
        runner = make(["sh", "-c", "kill -TERM $$"], tmp_path, Recorder())
        await run_to_end(runner)
        assert "SIGTERM" in runner.report().error

    asyncio.run(scenario())


def test_output_tail_is_bounded(tmp_path: Path) -> None:
    code = ("import sys; sys.stdout.write('x' * 100000 + 'END\\n'); "
            "sys.stderr.write('y' * 5000 + 'ERR')")

    async def scenario() -> None:
        runner = make([sys.executable, "-c", code], tmp_path, Recorder(),
                      options(tmp_path, output_tail=1024))
        await run_to_end(runner)
        report = runner.report()
        assert report.state is RunState.SUCCEEDED
        assert len(report.stdout_tail) == 1024 and report.stdout_tail.endswith("xEND\n")
        assert len(report.stderr_tail) == 1024 and report.stderr_tail.endswith("yERR")

    asyncio.run(scenario())


def test_lines_reach_the_hook_in_order(tmp_path: Path) -> None:
    rec = Recorder()
    cmd = ["sh", "-c", "echo one; echo two >&2; printf 'PTAP mark phase=x\\r\\nlast'"]

    async def scenario() -> None:
        await run_to_end(make(cmd, tmp_path, rec))

    asyncio.run(scenario())
    assert [x for x in rec.lines if x[0] == "stdout"] == [
        ("stdout", "one"), ("stdout", "PTAP mark phase=x"), ("stdout", "last")]
    assert ("stderr", "two") in rec.lines


def test_overlong_line_is_split(tmp_path: Path) -> None:
    rec = Recorder()

    async def scenario() -> None:
        await run_to_end(make(["sh", "-c", "head -c 3000 /dev/zero | tr '\\0' a"], tmp_path,
                              rec, options(tmp_path, max_line=1024)))

    asyncio.run(scenario())
    assert "".join(line for _, line in rec.lines) == "a" * 3000
    assert [len(line) for _, line in rec.lines] == [1024, 1024, 952]


def test_timeout_ends_the_whole_tree(tmp_path: Path) -> None:
    rec = Recorder(want_pids=2)

    async def scenario() -> None:
        runner = make(TREE, tmp_path, rec, timeout=0.5)
        await run_to_end(runner)
        report = runner.report()
        assert report.state is RunState.TIMEOUT
        assert report.exit_code == -signal.SIGTERM
        assert "timed out" in report.error
        assert len(rec.pids) == 2
        assert still_alive([report.pid, *rec.pids]) == []

    asyncio.run(scenario())


def test_term_ignored_escalates_to_kill(tmp_path: Path) -> None:
    rec = Recorder(want_pids=1)
    cmd = ["sh", "-c", "trap '' TERM; sleep 30 & echo $!; wait"]

    async def scenario() -> None:
        runner = make(cmd, tmp_path, rec, options(tmp_path, kill_grace=0.3))
        await runner.start()
        await asyncio.wait_for(rec.pids_seen.wait(), 10)
        runner.cancel("test")
        await asyncio.wait_for(runner.wait(), 30)
        assert runner.state is RunState.CANCELLED
        assert runner.exit_code == -signal.SIGKILL
        assert still_alive([runner.pid, *rec.pids]) == []

    asyncio.run(scenario())


def test_cancel_ends_the_whole_tree(tmp_path: Path) -> None:
    rec = Recorder(want_pids=2)

    async def scenario() -> None:
        runner = make(TREE, tmp_path, rec)
        await runner.start()
        await asyncio.wait_for(rec.pids_seen.wait(), 10)
        assert still_alive([*rec.pids]) == rec.pids
        runner.cancel("user asked")
        report = await asyncio.wait_for(runner.wait(), 30)
        assert (report.state, report.error) == (RunState.CANCELLED, "user asked")
        assert still_alive([runner.pid, *rec.pids]) == []
        runner.cancel("again")  # a no-op once final
        assert runner.report().error == "user asked"

    asyncio.run(scenario())


def test_cancel_before_start(tmp_path: Path) -> None:
    rec = Recorder()

    async def scenario() -> None:
        runner = make(["sleep", "30"], tmp_path, rec)
        runner.cancel("too late")
        await run_to_end(runner)
        assert (runner.state, runner.pid) == (RunState.CANCELLED, None)

    asyncio.run(scenario())
    assert rec.states == [RunState.CANCELLED]


def test_leftover_child_is_ended_after_main_exits(tmp_path: Path) -> None:
    """The background sleep keeps stdout open; the run must still end, and end it."""
    rec = Recorder(want_pids=1)

    async def scenario() -> None:
        runner = make(["sh", "-c", "sleep 30 & echo $!"], tmp_path, rec)
        await run_to_end(runner)
        assert (runner.state, runner.exit_code) == (RunState.SUCCEEDED, 0)
        assert len(rec.pids) == 1 and still_alive([*rec.pids]) == []

    asyncio.run(scenario())


def test_child_outside_the_group_does_not_hang_the_run(tmp_path: Path) -> None:
    """A child in a session of its own holds stdout; the runner closes the pipes."""
    rec = Recorder(want_pids=1)
    code = ("import subprocess; p = subprocess.Popen(['sleep', '30'], start_new_session=True); "
            "print(p.pid, flush=True)")

    async def scenario() -> None:
        runner = make([sys.executable, "-c", code], tmp_path, rec,
                      options(tmp_path, drain_timeout=0.2))
        await run_to_end(runner)
        assert runner.state is RunState.SUCCEEDED

    try:
        asyncio.run(scenario())
    finally:
        for pid in rec.pids:  # it left the run's group on purpose: clean up by its pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert len(rec.pids) == 1


def test_command_not_found(tmp_path: Path) -> None:
    async def scenario() -> None:
        runner = make(["ptap-no-such-command-here"], tmp_path, Recorder())
        await run_to_end(runner)
        report = runner.report()
        assert (report.state, report.exit_code, report.pid) == (RunState.FAILED, None, None)
        assert report.error == "command not found: ptap-no-such-command-here"

    asyncio.run(scenario())


def test_permission_denied(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)

    async def scenario() -> None:
        runner = make([str(script)], tmp_path, Recorder())
        await run_to_end(runner)
        assert runner.state is RunState.FAILED
        assert runner.error == f"permission denied: {script}"

    asyncio.run(scenario())


def test_empty_command_and_missing_cwd(tmp_path: Path) -> None:
    async def scenario() -> None:
        empty = make([], tmp_path, Recorder())
        await run_to_end(empty)
        assert (empty.state, empty.error) == (RunState.FAILED, "empty command")
        nodir = make(["true"], tmp_path, Recorder(), cwd="no/such/dir")
        await run_to_end(nodir)
        assert nodir.state is RunState.FAILED
        assert nodir.error.startswith("working directory") and "does not exist" in nodir.error

    asyncio.run(scenario())


def test_environment_and_working_directory(tmp_path: Path) -> None:
    cmd = ["sh", "-c", "echo $PTAP_JOB_ID $PTAP_RUN_ID $PTAP_ITERATION $PTAP_NODE $FOO; pwd"]
    workdir = tmp_path / "runs"

    async def scenario() -> tuple[str, str]:
        # The workdir does not exist yet: the runner creates it.
        first = make(cmd, tmp_path, Recorder(), env={"FOO": "bar", "PTAP_RUN_ID": "fake"})
        await run_to_end(first)
        (workdir / "sub").mkdir()
        second = make(cmd, tmp_path, Recorder(), cwd="sub")
        await run_to_end(second)
        return first.report().stdout_tail, second.report().stdout_tail

    out1, out2 = asyncio.run(scenario())
    assert out1.splitlines() == ["job1 job1.n1.1 1 n1 bar", str(workdir.resolve())]
    assert out2.splitlines()[1] == str((workdir / "sub").resolve())


def test_start_twice_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        runner = make(["true"], tmp_path, Recorder())
        await run_to_end(runner)
        with pytest.raises(RuntimeError):
            await runner.start()

    asyncio.run(scenario())
