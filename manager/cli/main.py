"""``ptap``: the command line for a ptap cluster (docs/architecture.md#commands).

Every failure ends as one line on stderr, ``ptap: <what happened> — <what to
do>``, and a non-zero status: 2 for a usage error, 75 when the manager does
not answer, 1 for anything else. ``ptap run --wait`` exits with the job's
status instead (docs/protocol.md). Global options go before the command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from bus.errors import ErrorCode, ManagerUnreachable, PtapError, RequestFailed
from bus.states import NodeState
from manager.cli import discovery
from manager.cli.arguments import Parser, count, non_negative, positive
from manager.cli.discovery import Target
from manager.cli.session import (
    DEFAULT_MANAGER,
    DEFAULT_TIMEOUT,
    EXIT_FAILURE,
    EXIT_UNREACHABLE,
    CliError,
    Session,
    admin_keys,
)

Command = Callable[[Session, argparse.Namespace], Coroutine[Any, Any, int]]


def _command(module: str, name: str) -> Command:
    """``manager.cli.MODULE.NAME``, imported when the command runs: building the
    parser (``--help``, a usage error, the shell's completion) loads no command's
    dependencies."""
    async def run(session: Session, args: argparse.Namespace) -> int:
        handler: Command = getattr(importlib.import_module(f"manager.cli.{module}"), name)
        return await handler(session, args)

    run.__qualname__ = f"{module}.{name}"  # what it runs, for tests and tracebacks
    return run

#: What to do, by the manager's error code, when its message does not say.
_HINTS: dict[str, str] = {
    ErrorCode.NOT_FOUND: "list the jobs with ptap jobs",
    ErrorCode.BAD_REQUEST: "check the arguments (ptap {command} --help) and the nodes (ptap nodes)",
    ErrorCode.VERSION: "use the same ptap version for the CLI and the manager",
    ErrorCode.UNAVAILABLE: "check that InfluxDB runs and server.cfg [influxdb] points at it",
}


if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[Parser]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` just that command's: a command line names
    one, and building the other eleven cost every command a few ms of its start-up."""
    parser = Parser(prog="ptap", description="Command line for a ptap cluster.")
    parser.add_argument("--manager", metavar="HOST:PORT", default=None,
                        help="manager ROUTER address (env PTAP_MANAGER; default: the local "
                             f"cluster's, {DEFAULT_MANAGER} unless start-all was given a port)")
    parser.add_argument("--timeout", metavar="S", type=positive, default=DEFAULT_TIMEOUT,
                        dest="request_timeout", help="seconds to wait for each reply (default 3)")
    parser.add_argument("--keys", metavar="DIR", default=None,
                        help="a CURVE manager's keys_dir: use its admin.key_secret and "
                             "server.key (env PTAP_KEYS; default: the local cluster's var/keys, "
                             "then ~/.config/ptap/keys; '' for none)")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True,
                                parser_class=Parser)
    for name, add in _COMMANDS.items():
        if only is None or name == only:
            add(sub)
    return parser


#: The global options that take a value, as :func:`_named_command` skips them.
_GLOBAL_VALUES = frozenset({"--manager", "--timeout", "--keys"})


def _named_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, if it is one of ours; None for ``--help`` before
    it, or anything else the whole parser should answer."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_VALUES:
            next(words, None)
        elif word in ("-h", "--help", "--") or not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


def _add_jobs(sub: Sub) -> None:
    p = sub.add_parser("jobs", help="newest jobs first")
    p.add_argument("--json", action="store_true", help="print the protocol's JSON")
    p.add_argument("--limit", type=count, default=100, help="at most this many jobs")
    p.set_defaults(func=_command("commands", "cmd_jobs"), oneshot=True)


def _add_job(sub: Sub) -> None:
    p = sub.add_parser("job", help="one job with its runs and output tails")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print the protocol's JSON")
    p.set_defaults(func=_command("commands", "cmd_job"), oneshot=True)


def _add_cancel(sub: Sub) -> None:
    p = sub.add_parser("cancel", help="end every unfinished run of a job")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=_command("commands", "cmd_cancel"), oneshot=True)


def _add_watch(sub: Sub) -> None:
    p = sub.add_parser("watch", help="live tail of events and metric batches")
    p.add_argument("--node", metavar="N", help="only this node")
    p.add_argument("--count", type=count, metavar="N", help="stop after N lines")
    p.set_defaults(func=_command("commands", "cmd_watch"))


def _add_keys(sub: Sub) -> None:
    p = sub.add_parser("keys", help="agent key acceptance")
    p.add_argument("action", choices=["list", "accept", "reject", "revoke"])
    p.add_argument("node", nargs="?", metavar="NODE")
    p.add_argument("--json", action="store_true", help="print the manager's JSON")
    p.set_defaults(func=_command("commands", "cmd_keys"), oneshot=True)


def _add_doctor(sub: Sub) -> None:
    p = sub.add_parser("doctor", help="check the manager, InfluxDB, nodes, keys and dashboard")
    p.add_argument("--dashboard", metavar="URL",
                   help="the dashboard to check (default: the local cluster's, if it has one)")
    p.add_argument("--json", action="store_true", help="print findings and facts as JSON")
    p.set_defaults(func=_command("doctor", "cmd_doctor"))


def _add_shell(sub: Sub) -> None:
    p = sub.add_parser("shell", help="interactive admin shell with history and completion")
    p.set_defaults(func=None)


def _add_history(sub: Sub) -> None:
    from manager.cli import history  # noqa: PLC0415 - its parser's --since type

    history.add_parser(sub, _command("history", "cmd_history"), count)


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage between 0 and 1000")
    return value


_FORMATS = ["text", "json", "csv", "html"]


def _add_report(sub: Sub) -> None:
    formats = _FORMATS
    p = sub.add_parser("report", help="a job's analysis report (docs/analysis.md)")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--format", choices=formats, default="text", help="output format (default text)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE and print its path")
    p.set_defaults(func=_command("commands", "cmd_report"), oneshot=True)


def _add_compare(sub: Sub) -> None:
    formats = _FORMATS
    p = sub.add_parser("compare", help="compare candidate job CAND with baseline job BASE")
    p.add_argument("base", metavar="BASE")
    p.add_argument("cand", metavar="CAND")
    p.add_argument("--format", choices=formats, default="text", help="output format (default text)")
    p.add_argument("--threshold", metavar="PCT", type=_percent, default=5.0,
                   help="relative change of the median that counts, in percent (default 5)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE and print its path")
    p.set_defaults(func=_command("commands", "cmd_compare"), oneshot=True)


#: ``ptap nodes --state`` values; ``up`` is either live one (manager/cli/nodes.py).
NODE_STATES = (*(s.value for s in NodeState), "up")


def _node_states(text: str) -> str:
    """``--state``: comma-separated node states."""
    for state in filter(None, (s.strip() for s in text.split(","))):
        if state not in NODE_STATES:
            raise argparse.ArgumentTypeError(f"{state!r} is not a node state "
                                             f"(one of {', '.join(NODE_STATES)})")
    return text


def _add_nodes(sub: Sub) -> None:
    p = sub.add_parser("nodes", help="nodes with state, last heartbeat, clock offset, "
                                        "capabilities")
    p.add_argument("--state", action="append", metavar="S", type=_node_states,
                   help="only nodes in state S: ready, busy, lost, or up (ready or busy); "
                        "repeat or comma-separate for several")
    p.add_argument("--label", action="append", metavar="L",
                   help="only nodes carrying label L (e.g. gpu or rack=a1); repeat to "
                        "require several")
    p.add_argument("--json", action="store_true", help="print the protocol's JSON")
    p.set_defaults(func=_command("nodes", "cmd_nodes"), oneshot=True)
    actions = p.add_subparsers(dest="nodes_action", metavar="ACTION", parser_class=Parser)
    forget = actions.add_parser("forget", help="forget a lost node now (its jobs and "
                                "metrics stay; it registers again if its agent comes back)")
    forget.add_argument("node", metavar="NAME")
    forget.add_argument("--json", action="store_true", help="print the node's JSON")
    forget.set_defaults(func=_command("nodes", "cmd_nodes_forget"), oneshot=True)


def _add_run(sub: Sub) -> None:
    p = sub.add_parser("run", help="submit a job; print its id; --wait follows it",
                       usage="ptap run [options] -- CMD...")
    p.add_argument("--nodes", metavar="SEL", default="all",
                   help="comma-separated node names, label:X, or all (default)")
    p.add_argument("--collect", metavar="LIST", default="system",
                   help="comma-separated collectors (default: system)")
    p.add_argument("--interval", metavar="S", type=positive, default=1.0,
                   help="sampling interval in seconds (default 1)")
    p.add_argument("--timeout", metavar="S", type=non_negative, default=0.0,
                   dest="job_timeout", help="end each run after S seconds (default: none)")
    p.add_argument("--repeat", metavar="N", type=count, default=1,
                   help="iterations per node (default 1)")
    p.add_argument("--tag", metavar="K=V", action="append", default=[], help="tag (repeatable)")
    p.add_argument("--name", metavar="N", default="", help="a name for the job")
    p.add_argument("--series", metavar="NAME", default="",
                   help="the history the job belongs to (default: its --name); tag it "
                        "--tag version=... or --tag commit=... (see ptap history)")
    p.add_argument("--env", metavar="K=V", action="append", default=[],
                   help="environment variable for the command (repeatable)")
    p.add_argument("--cwd", metavar="DIR", default="", help="working directory on the node")
    p.add_argument("--wait", action="store_true",
                   help="follow the job and exit with its status")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                   help="the command and its arguments, after --")
    p.set_defaults(func=_command("commands", "cmd_run"), oneshot=True)


#: Every command, in ``ptap --help`` order, and what adds its parser.
_COMMANDS: dict[str, Callable[[Sub], None]] = {
    "nodes": _add_nodes, "run": _add_run, "jobs": _add_jobs, "job": _add_job,
    "cancel": _add_cancel, "watch": _add_watch, "report": _add_report,
    "compare": _add_compare, "history": _add_history, "keys": _add_keys,
    "doctor": _add_doctor, "shell": _add_shell,
}


def _target(args: argparse.Namespace) -> Target:
    """The manager and keys for this command (:mod:`manager.cli.discovery`), found once."""
    target: Target | None = getattr(args, "target", None)
    if target is None:
        target = args.target = discovery.resolve(
            args.manager, args.keys, os.environ, discovery.checkout_root(),
            discovery.config_home(os.environ))
    return target


async def _dispatch(args: argparse.Namespace) -> int:
    session = Session(_target(args), args.request_timeout)
    try:
        status: int = await args.func(session, args)
        return status
    finally:
        session.close()


def _one_shot(args: argparse.Namespace) -> int:
    """A command registered with ``oneshot=True``: its requests block, and it runs
    without an event loop (manager/cli/oneshot.py), which ``ptap nodes`` would
    spend more time importing and starting than asking."""
    from manager.cli.oneshot import OneShotSession, run_to_end  # noqa: PLC0415

    session = OneShotSession(_target(args), args.request_timeout)
    try:
        return run_to_end(args.func(session, args))
    finally:
        session.close()


def _fail(message: str, code: int) -> int:
    print(f"ptap: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_named_command(words)).parse_args(words)
    if args.command_name == "shell":
        return _shell(args)
    try:
        _target(args)
        if getattr(args, "oneshot", False):
            return _one_shot(args)
        import asyncio  # noqa: PLC0415 - not for --help, usage errors, one-shot commands

        return asyncio.run(_dispatch(args))
    except ManagerUnreachable as exc:
        return _fail(_unreachable(exc, _target(args)), EXIT_UNREACHABLE)
    except RequestFailed as exc:
        return _fail(_refusal(exc, args.command_name), EXIT_FAILURE)
    except CliError as exc:
        return _fail(str(exc), exc.exit_code)
    except PtapError as exc:
        return _fail(f"{exc} — see the manager log", EXIT_FAILURE)
    except KeyboardInterrupt:
        return _interrupted(args)
    except BrokenPipeError:
        # ``ptap jobs | head``: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _unreachable(exc: ManagerUnreachable, target: Target) -> str:
    """No reply: with CURVE a wrong or missing key looks just like that."""
    if target.keys_dir:
        named = target.keys_from in ("", "--keys", "PTAP_KEYS")
        found = "" if named else f" (found as {target.keys_from})"
        return (f"{exc} — with CURVE, check that {target.keys_dir}/server.key{found} "
                "is this manager's")
    return f"{exc} — if the manager uses CURVE, pass --keys DIR (its keys_dir)"


def _shell(args: argparse.Namespace) -> int:
    """``ptap shell``: each line runs through :func:`main` with the same manager and keys."""
    try:
        target = _target(args)
        curve = admin_keys(target.keys_dir, target.keys_from) if target.keys_dir else None
    except CliError as exc:
        return _fail(str(exc), exc.exit_code)
    manager = str(target.endpoint)
    # "--keys ''" keeps a shell without keys from finding some on each line.
    prefix = ["--manager", manager, "--timeout", str(args.request_timeout),
              "--keys", target.keys_dir or ""]
    from manager.cli.shell import Shell  # noqa: PLC0415 - readline and the shell's own

    shell = Shell(build_parser(), lambda words: main([*prefix, *words]), manager,
                  args.request_timeout, curve=curve)
    return shell.loop()


def _refusal(exc: RequestFailed, command: str) -> str:
    """The manager's one-line refusal, with a hint unless it carries advice already."""
    text = exc.message or exc.code
    if " — " in text:
        return text
    head, sep, advice = text.rpartition("; ")
    if sep:  # "what happened; what to do": shown in the CLI's one form
        return f"{head} — {advice}"
    hint = _HINTS.get(exc.code, "see the manager's log").format(command=command)
    return f"{text} — {hint}"


def _interrupted(args: argparse.Namespace) -> int:
    if args.command_name == "watch":
        return 0
    job_id = getattr(args, "submitted_job_id", None)
    if job_id:
        return _fail(f"stopped following job {job_id}; it goes on — "
                     f"ptap job {job_id} shows it, ptap cancel {job_id} stops it", 130)
    return _fail("interrupted — run the command again", 130)


if __name__ == "__main__":
    sys.exit(main())
