"""The admin shell: the CLI's own commands in a loop, with completion and history."""

from __future__ import annotations

import io
import time

import pytest

from manager.cli.main import build_parser
from manager.cli.shell import Shell


def make_shell(script: str, calls: list[list[str]], status: int = 0) -> Shell:
    def run(argv: list[str]) -> int:
        calls.append(argv)
        return status
    return Shell(build_parser(), run, "127.0.0.1:1", 1.0, stdin=io.StringIO(script),
                 stdout=io.StringIO())


def test_lines_run_as_commands_until_exit() -> None:
    calls: list[list[str]] = []
    shell = make_shell("nodes\n\n# a comment\njob 'abc def'\nexit\nnodes\n", calls, status=3)
    assert shell.loop() == 3
    assert calls == [["nodes"], ["job", "abc def"]]


def test_usage_errors_and_bad_quotes_do_not_end_the_shell(
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []
    shell = Shell(build_parser(), lambda argv: build_parser().parse_args(argv) and 0,
                  "127.0.0.1:1", 1.0, stdin=io.StringIO("frobnicate\njob 'open\nshell\n"),
                  stdout=io.StringIO())
    assert shell.loop() == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in err and "check the quotes" in err
    assert "already in the shell" in err
    assert not calls


def test_completion_candidates() -> None:
    shell = make_shell("", [])
    shell._names, shell._names_at = ["node1", "3f9a1c0e2b7d"], time.monotonic()
    assert {"cancel ", "exit ", "report ", "run "} <= set(shell.candidates("", ""))
    assert "nodes " in shell.candidates("no", "no")
    assert shell.candidates("run --wa", "--wa") == ["--wait "]
    assert shell.candidates("job 3f", "3f") == ["3f9a1c0e2b7d "]
    assert "shell " not in shell.candidates("", "")
