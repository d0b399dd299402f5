"""agent.process_group with real process trees: spawning, who is in the group, ending it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
import pytest

from agent.process_group import (
    CannotStart,
    ProcessPipes,
    live_members,
    signal_group,
    spawn_in_new_group,
    wait_group_empty,
)

#: A tree of three: sh and two background sleeps whose pids it prints.
TREE = ["sh", "-c", "sleep 60 & echo $!; sleep 60 & echo $!; wait"]

#: Bound on any wait for a process event, far above what it takes.
EVENT_TIMEOUT = 4.0


class Output:
    """Collects what the command prints; ``ready`` is set once ``want_lines`` lines came."""

    def __init__(self, want_lines: int = 0) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._want = want_lines
        self.ready = asyncio.Event()

    def on_stdout(self, data: bytes) -> None:
        self.stdout += data
        if self.stdout.count(b"\n") >= self._want:
            self.ready.set()

    def on_stderr(self, data: bytes) -> None:
        self.stderr += data

    @property
    def pids(self) -> list[int]:
        """The numbers printed on complete stdout lines."""
        done = self.stdout[: self.stdout.rfind(b"\n") + 1]
        return [int(word) for word in done.split() if word.isdigit()]

    async def wait_ready(self) -> None:
        await asyncio.wait_for(self.ready.wait(), EVENT_TIMEOUT)


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@asynccontextmanager
async def spawned(argv: list[str], out: Output, cwd: str = "/",
                  env: dict[str, str] | None = None,
                  ) -> AsyncIterator[tuple[asyncio.SubprocessTransport, ProcessPipes, int]]:
    """Spawn ``argv`` in a new group; on the way out end it, and the pids it printed, by pid."""
    transport, pipes = await spawn_in_new_group(argv, cwd, dict(os.environ) if env is None else env,
                                                out.on_stdout, out.on_stderr)
    pid = transport.get_pid()
    try:
        yield transport, pipes, pid
    finally:
        kill_pids([pid, *out.pids])
        # A member whose pid never reached us is still in the group that pid leads.
        signal_group(pid, signal.SIGKILL)
        await asyncio.wait({pipes.exited}, timeout=EVENT_TIMEOUT)
        transport.close()


def gone(pids: list[int]) -> bool:
    """Whether none of ``pids`` runs, checked by psutil rather than the module under test."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_tree_gets_a_session_and_group_of_its_own_and_all_members_are_live() -> None:
    async def scenario() -> None:
        out = Output(want_lines=2)
        async with spawned(TREE, out) as (_, _, pid):
            await out.wait_ready()
            children = out.pids
            assert len(children) == 2
            assert os.getsid(pid) == pid and os.getpgid(pid) == pid
            assert pid != os.getpgrp()
            assert [os.getpgid(child) for child in children] == [pid, pid]
            assert sorted(live_members(pid)) == sorted([pid, *children])
            assert pid not in live_members(os.getpgrp())

    asyncio.run(scenario())


def test_signal_group_ends_the_whole_tree_and_wait_group_empty_sees_it() -> None:
    async def scenario() -> None:
        out = Output(want_lines=2)
        async with spawned(TREE, out) as (transport, pipes, pid):
            await out.wait_ready()
            signal_group(pid, signal.SIGTERM)
            assert await wait_group_empty(pid, EVENT_TIMEOUT) is True
            assert live_members(pid) == []
            assert gone([pid, *out.pids])
            await asyncio.wait_for(pipes.exited, EVENT_TIMEOUT)
            assert transport.get_returncode() == -signal.SIGTERM

    asyncio.run(scenario())


def test_wait_group_empty_times_out_while_a_member_lives() -> None:
    async def scenario() -> None:
        async with spawned(["sleep", "60"], Output()) as (_, pipes, pid):
            assert await wait_group_empty(pid, 0) is False
            started = time.monotonic()
            assert await wait_group_empty(pid, 0.3) is False
            waited = time.monotonic() - started
            assert 0.3 <= waited < 2.0
            assert live_members(pid) == [pid]
            assert not pipes.exited.done()

    asyncio.run(scenario())


def test_stopped_member_is_live_and_sigkill_to_the_group_ends_it() -> None:
    async def scenario() -> None:
        async with spawned(["sleep", "60"], Output()) as (transport, pipes, pid):
            os.kill(pid, signal.SIGSTOP)
            proc = psutil.Process(pid)
            started = time.monotonic()
            while proc.status() != psutil.STATUS_STOPPED:
                assert time.monotonic() - started < EVENT_TIMEOUT, "never stopped"
                await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline
            assert live_members(pid) == [pid]
            signal_group(pid, signal.SIGKILL)
            assert await wait_group_empty(pid, EVENT_TIMEOUT) is True
            await asyncio.wait_for(pipes.exited, EVENT_TIMEOUT)
            assert transport.get_returncode() == -signal.SIGKILL

    asyncio.run(scenario())


def test_exit_is_heard_while_a_leftover_child_still_holds_the_pipes() -> None:
    async def scenario() -> None:
        out = Output(want_lines=1)
        async with spawned(["sh", "-c", "sleep 60 & echo $!"], out) as (transport, pipes, pid):
            await asyncio.wait_for(pipes.exited, EVENT_TIMEOUT)
            assert transport.get_returncode() == 0
            await out.wait_ready()
            [child] = out.pids
            assert not pipes.closed.done()  # the sleep inherited stdout and stderr
            assert live_members(pid) == [child]
            signal_group(pid, signal.SIGTERM)
            await asyncio.wait_for(pipes.closed, EVENT_TIMEOUT)
            assert await wait_group_empty(pid, EVENT_TIMEOUT) is True

    asyncio.run(scenario())


def test_output_exit_code_and_closed_stdin() -> None:
    # cat ends at once only because stdin is /dev/null rather than inherited.
    cmd = ["sh", "-c", "cat; echo out; echo err >&2; exit 3"]

    async def scenario() -> None:
        out = Output()
        async with spawned(cmd, out) as (transport, pipes, _):
            await asyncio.wait_for(pipes.closed, EVENT_TIMEOUT)
            await asyncio.wait_for(pipes.exited, EVENT_TIMEOUT)
            assert transport.get_returncode() == 3
            assert (bytes(out.stdout), bytes(out.stderr)) == (b"out\n", b"err\n")

    asyncio.run(scenario())


def test_cwd_and_env_are_exactly_the_given_ones(tmp_path: Path) -> None:
    cmd = ["sh", "-c", 'pwd; echo "$PTAP_T"; echo "${HOME-unset}"']
    env = {"PTAP_T": "value with spaces", "PATH": os.environ["PATH"]}
    where = str(tmp_path.resolve())

    async def scenario() -> None:
        out = Output()
        async with spawned(cmd, out, cwd=str(tmp_path), env=env) as (transport, pipes, _):
            await asyncio.wait_for(pipes.closed, EVENT_TIMEOUT)
            await asyncio.wait_for(pipes.exited, EVENT_TIMEOUT)
            assert transport.get_returncode() == 0
            assert out.stdout.decode().splitlines() == [
                where, "value with spaces", "unset"]

    asyncio.run(scenario())


def test_zombie_in_a_group_is_not_a_live_member() -> None:
    # The leader forks a child that exits at once, and leaves it unreaped:
    # waitid(WNOWAIT) returns when the child is a zombie without reaping it.
    code = ("import os, signal\n"
            "child = os.fork()\n"
            "if child == 0:\n"
            "    os._exit(0)\n"
            "os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)\n"
            "print(child, flush=True)\n"
            "signal.pause()\n")

    async def scenario() -> None:
        out = Output(want_lines=1)
        async with spawned([sys.executable, "-c", code], out) as (_, _, pid):
            await out.wait_ready()
            [zombie] = out.pids
            assert psutil.Process(zombie).status() == psutil.STATUS_ZOMBIE
            assert os.getpgid(zombie) == pid
            assert live_members(pid) == [pid]
            signal_group(pid, signal.SIGKILL)
            assert await wait_group_empty(pid, EVENT_TIMEOUT) is True

    asyncio.run(scenario())


def test_group_of_only_a_zombie_is_empty() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    try:
        # Waits for the exit and leaves the zombie in place (WNOWAIT).
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        os.killpg(proc.pid, 0)  # the group still exists: the zombie is in it
        assert live_members(proc.pid) == []
        assert asyncio.run(wait_group_empty(proc.pid, 0)) is True
    finally:
        proc.kill()
        proc.wait()


def test_group_that_no_longer_exists() -> None:
    async def scenario() -> None:
        async with spawned(["true"], Output()) as (_, pipes, pid):
            # exited is set after the leader was reaped, so the group is gone.
            await asyncio.wait_for(pipes.exited, EVENT_TIMEOUT)
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)
            assert live_members(pid) == []
            signal_group(pid, signal.SIGTERM)  # not an error
            assert await wait_group_empty(pid, 0) is True

    asyncio.run(scenario())


def test_member_whose_name_looks_like_stat_fields_is_listed() -> None:
    # comm sits in parentheses in /proc/<pid>/stat and may hold ") Z": a parser that
    # split on the first ")" would read this live process as a zombie.
    code = ("import signal\n"
            "open('/proc/self/comm', 'w').write('s) Z 1 1')\n"
            "print('ready', flush=True)\n"
            "signal.pause()\n")

    async def scenario() -> None:
        out = Output(want_lines=1)
        async with spawned([sys.executable, "-c", code], out) as (_, _, pid):
            await out.wait_ready()
            assert psutil.Process(pid).name() == "s) Z 1 1"
            assert live_members(pid) == [pid]

    asyncio.run(scenario())


def write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("make_argv, reason", [
    (lambda tmp: [], "empty command"),
    (lambda tmp: ["ptap-no-such-command-here"], "command not found: ptap-no-such-command-here"),
    (lambda tmp: ["sleep", "6\x000"], "cannot start sleep: embedded null byte"),
    (lambda tmp: ["sl\x00eep", "60"], "cannot start sl\x00eep: embedded null byte"),
    (lambda tmp: [str(tmp)], "permission denied: {tmp}"),
    # Executable but no "#!" line: exec itself refuses it (ENOEXEC).
    (lambda tmp: [write_script(tmp / "no-shebang", "echo hi\n")],
     "cannot start {tmp}/no-shebang: Exec format error"),
], ids=["empty", "missing", "nul-in-arg", "nul-in-command", "directory", "no-shebang"])
def test_cannot_start(tmp_path: Path, make_argv: Callable[[Path], list[str]],
                      reason: str) -> None:
    async def scenario() -> None:
        with pytest.raises(CannotStart) as caught:
            await spawn_in_new_group(make_argv(tmp_path), "/", dict(os.environ),
                                     Output().on_stdout, Output().on_stderr)
        error = caught.value
        assert str(error) == reason.format(tmp=tmp_path)
        # One line, and no chained OSError/ValueError traceback under it.
        assert "\n" not in str(error)
        assert error.__context__ is None or error.__suppress_context__

    asyncio.run(scenario())


def test_missing_cwd_is_not_reported_as_a_missing_command(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"

    async def scenario() -> None:
        with pytest.raises(CannotStart) as caught:
            await spawn_in_new_group(["true"], str(missing), dict(os.environ),
                                     Output().on_stdout, Output().on_stderr)
        assert str(missing) in str(caught.value)

    asyncio.run(scenario())
