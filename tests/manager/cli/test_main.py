"""Argument parsing, addresses, job specs, exit statuses and error lines of ``ptap``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bus.errors import ManagerUnreachable, RequestFailed
from manager.cli import commands, follow, main
from manager.cli.discovery import Target
from manager.cli.session import CliError, parse_manager
from manager.keys import KeyStore


def parse(*argv: str) -> argparse.Namespace:
    return main.build_parser().parse_args(list(argv))


def test_manager_address_from_flag_env_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTAP_MANAGER", raising=False)
    assert str(parse_manager(None)) == "127.0.0.1:14321"
    monkeypatch.setenv("PTAP_MANAGER", "10.0.0.5:6000")
    ep = parse_manager(None)
    assert (ep.router, ep.pub) == ("tcp://10.0.0.5:6000", "tcp://10.0.0.5:6001")
    assert parse_manager("tcp://h:7").router == "tcp://h:7"
    for bad in ("nohost", "h:0", "h:65535", "h:x"):
        with pytest.raises(CliError):
            parse_manager(bad)


def test_run_builds_the_job_spec() -> None:
    args = parse("--timeout", "5", "run", "--nodes", "a, label:gpu", "--collect", "system,perf",
                 "--timeout", "2", "--repeat", "3", "--tag", "build=1.2", "--env", "X=a=b",
                 "--name", "n", "--cwd", "/tmp", "--wait", "--", "sh", "-c", "exit 3")
    assert args.request_timeout == 5.0
    spec = commands.build_spec(args)
    assert spec.command == ["sh", "-c", "exit 3"]
    assert spec.targets == ["a", "label:gpu"] and spec.collect == ["system", "perf"]
    assert (spec.timeout, spec.repeat, spec.name, spec.cwd) == (2.0, 3, "n", "/tmp")
    assert spec.tags == {"build": "1.2"} and spec.env == {"X": "a=b"}
    assert commands.build_spec(parse("run", "--", "make bench")).command == [
        "/bin/sh", "-c", "make bench"]
    assert commands.build_spec(parse("run", "true")).targets == ["all"]


@pytest.mark.parametrize("argv", [["run"], ["run", "--env", "X", "--", "true"],
                                  ["run", "--tag", "=v", "--", "true"]])
def test_bad_run_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(CliError) as exc:
        commands.build_spec(parse(*argv))
    assert exc.value.exit_code == 2 and " — " in str(exc.value)


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("run", "--repeat", "0", "--", "true")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ptap: ") and " — " in err


def run(state: str, code: int | None = None) -> dict[str, object]:
    return {"state": state, "exit_code": code}


@pytest.mark.parametrize(("runs", "status"), [
    ([run("succeeded", 0), run("succeeded", 0)], 0),
    ([run("succeeded", 0), run("failed", 3)], 3),
    ([run("failed", 300)], 1),
    ([run("failed", -9)], 1),
    ([run("timeout")], 124),
    ([run("cancelled")], 130),
    ([run("lost")], 69),
    ([run("timeout"), run("failed", 2)], 124),
])
def test_wait_exit_status_follows_the_protocol(runs: list[dict[str, object]],
                                               status: int) -> None:
    assert follow.job_exit_status({"runs": runs}) == status


def test_manager_refusals_become_one_line_with_advice() -> None:
    assert main._refusal(RequestFailed("not-found", "no job 'x'"), "job") == (
        "no job 'x' — list the jobs with ptap jobs")
    assert main._refusal(RequestFailed("bad-request", "off; set curve = yes"), "keys") == (
        "off — set curve = yes")
    assert "ptap run --help" in main._refusal(RequestFailed("bad-request", "refused"), "run")


def test_report_and_compare_arguments() -> None:
    args = parse("report", "abc", "--format", "html", "-o", "r.html")
    assert (args.job_id, args.format, args.output, args.func.__qualname__) == (
        "abc", "html", "r.html", "commands.cmd_report")
    assert parse("report", "abc").format == "text"
    args = parse("compare", "a", "b", "--threshold", "2.5", "--format", "csv")
    assert (args.base, args.cand, args.threshold, args.format) == ("a", "b", 2.5, "csv")
    assert parse("compare", "a", "b").threshold == 5.0


@pytest.mark.parametrize("argv", [["report", "x", "--format", "pdf"], ["compare", "a"],
                                  ["compare", "a", "b", "--threshold", "-1"]])
def test_bad_report_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2


def test_emit_writes_the_file_and_prints_its_path(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "r.csv"
    commands._emit({"format": "csv", "content": "a,b\n"}, "csv", str(target))
    assert target.read_text() == "a,b\n" and capsys.readouterr().out == f"{target}\n"
    commands._emit({"kind": "ptap.report"}, "json", None)
    assert capsys.readouterr().out == '{\n  "kind": "ptap.report"\n}\n'
    with pytest.raises(CliError, match="cannot write"):
        commands._emit({"format": "text", "content": "x"}, "text", str(tmp_path / "no" / "f"))
    assert list(tmp_path.iterdir()) == [target], "no temporary file left behind"


def test_keys_dir_problems_are_one_line_usage_errors(tmp_path, capsys,  # type: ignore[no-untyped-def]
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTAP_KEYS", raising=False)
    assert main.main(["--keys", str(tmp_path), "nodes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no {tmp_path}/server.key — pass the manager's" in err
    keys = KeyStore(tmp_path / "keys").dir  # server and admin pairs, as a manager makes them
    (keys / "admin.key_secret").chmod(0o644)
    monkeypatch.setenv("PTAP_KEYS", str(keys))
    assert main.main(["nodes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mode 0644" in err and "chmod 600" in err


def test_no_answer_suggests_keys() -> None:
    exc = ManagerUnreachable("tcp://h:1", 3)
    endpoint = parse_manager("h:1")
    assert main._unreachable(exc, Target(endpoint)).endswith(
        " — if the manager uses CURVE, pass --keys DIR (its keys_dir)")
    assert main._unreachable(exc, Target(endpoint, "/k", "--keys")).endswith(
        " — with CURVE, check that /k/server.key is this manager's")
    found = Target(endpoint, "/c/var/keys", "the local cluster's keys")
    assert main._unreachable(exc, found).endswith(
        " — with CURVE, check that /c/var/keys/server.key (found as the local cluster's "
        "keys) is this manager's")


def test_keys_results_as_text() -> None:
    listing = {"pending": [{"node": "n2", "key": "K2"}], "accepted": [{"node": "n1", "key": "K1"}],
               "rejected": []}
    text = commands._keys_text(listing)
    assert text.splitlines()[0].split() == ["STATE", "NODE", "KEY"]
    assert ["pending", "n2", "K2"] in [line.split() for line in text.splitlines()]
    assert commands._keys_text({"pending": [], "accepted": [], "rejected": []}) == "no agent keys"
    assert commands._keys_text({"node": "n1", "state": "accepted", "key": "K1"}) == \
        "node n1: key accepted (K1)"


def test_help_and_usage_errors_import_no_command_dependencies() -> None:
    """`ptap --help`, a usage error and the shell's completion build the parser
    only: no ZeroMQ, msgpack, asyncio, analysis or web stack at start-up."""
    probe = ("import sys, manager.cli.main as m\n"
             "m.build_parser().format_help()\n"
             "heavy = {'zmq', 'msgpack', 'asyncio', 'bokeh', 'numpy', 'scipy', 'tornado'}\n"
             "print(sorted({k.split('.')[0] for k in sys.modules} & heavy))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60, cwd=Path(__file__).resolve().parents[3])
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("command", [["nodes"], ["run", "--wait", "--", "true"]])
def test_a_one_shot_command_imports_only_what_it_uses(tmp_path: Path,
                                                      command: list[str]) -> None:
    """`ptap nodes` and `ptap run --wait` with CURVE keys, to a manager that does not
    answer: the whole path (parser, key files, sockets, the error) loads no logging,
    shutil, zmq.auth or asyncio (~30 ms with what it imports), which cost every command
    part of its start, nor the heavy stacks."""
    from bus.security import ensure_keypair  # noqa: PLC0415 - makes keys in this process only

    ensure_keypair(tmp_path, "server")
    ensure_keypair(tmp_path, "admin")
    probe = ("import sys, manager.cli.main as m\n"
             "rc = m.main(['--manager', '127.0.0.1:9', '--timeout', '0.2', '--keys', sys.argv[1],"
             f" *{command!r}])\n"
             "heavy = {'logging', 'shutil', 'zmq.auth', 'asyncio', 'bokeh', 'numpy', 'scipy',"
             " 'tornado'}\n"
             "print(rc, sorted(set(sys.modules) & heavy))\n")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True,
                          text=True, check=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.stdout.strip() == f"{main.EXIT_UNREACHABLE} []", done.stdout + done.stderr
    assert "cannot reach manager at tcp://127.0.0.1:9" in done.stderr


@pytest.mark.parametrize(("argv", "named"), [
    (["nodes"], "nodes"),
    (["--manager", "h:1", "--timeout", "2", "jobs", "--limit", "3"], "jobs"),
    (["--keys", "nodes", "job", "abc"], "job"),  # a global option's value is no command
    (["--keys=x", "history", "s"], "history"),
    (["-h", "nodes"], None),  # the whole parser's help
    (["--help"], None),
    (["bogus"], None),  # the whole parser says which commands there are
    ([], None),
])
def test_the_command_a_command_line_names(argv: list[str], named: str | None) -> None:
    assert main._named_command(argv) == named


def test_one_command_s_parser_parses_as_the_whole_one_does() -> None:
    """``ptap nodes`` builds only the nodes parser; it must read every command line
    the whole parser reads, to the same namespace."""
    lines = [["nodes", "--state", "up", "--json"], ["nodes", "forget", "n1"],
             ["--timeout", "2", "run", "--nodes", "a,b", "--wait", "--", "true"],
             ["history", "s", "--since", "7d", "--metric", "run.cpu_time"],
             ["compare", "a", "b", "--threshold", "3"], ["keys", "accept", "n1"]]
    for argv in lines:
        whole = vars(main.build_parser().parse_args(argv))
        alone = vars(main.build_parser(main._named_command(argv)).parse_args(argv))
        since = whole.pop("since", None), alone.pop("since", None)  # relative to now
        assert abs((since[0] or 0) - (since[1] or 0)) < 5
        funcs = whole.pop("func"), alone.pop("func")
        assert getattr(funcs[0], "__qualname__", None) == getattr(funcs[1], "__qualname__", None)
        assert whole == alone, argv
    assert set(main.build_parser("nodes")._subparsers._group_actions[0].choices) == {"nodes"}
