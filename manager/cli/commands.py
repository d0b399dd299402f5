"""One coroutine per ``ptap`` command. Each returns the process exit status.

Commands print results on stdout and progress on stderr; failures are raised
(:class:`bus.errors.ClientError` or :class:`CliError`) and turned into one
line by :mod:`manager.cli.main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bus.errors import RequestFailed
from bus.states import KeyState
from manager.cli import render
from manager.cli.session import EXIT_USAGE, CliError, Session

if TYPE_CHECKING:
    # Imported where used: the one-shot commands run without them and without an
    # event loop (manager/cli/oneshot.py); they cost ~40 ms to import.
    from bus import messages
    from manager.cli.oneshot import OneShotSession


def _print(text: str) -> None:
    print(text, flush=True)


async def cmd_jobs(session: Session, args: argparse.Namespace) -> int:
    """``ptap jobs [--json]``: newest jobs first."""
    async with session.client() as client:
        jobs = await client.jobs(limit=args.limit)
    _print(render.to_json(jobs) if args.json else render.jobs_table(jobs, time.time()))
    return 0


async def cmd_job(session: Session, args: argparse.Namespace) -> int:
    """``ptap job ID [--json]``: one job with its runs and their output tails."""
    async with session.client() as client:
        job = await client.job(args.job_id)
    _print(render.to_json(job) if args.json else render.job_view(job, time.time()))
    return 0


async def cmd_cancel(session: Session, args: argparse.Namespace) -> int:
    """``ptap cancel ID``: ask the manager to end every unfinished run of a job."""
    async with session.client() as client:
        job = await client.cancel(args.job_id)
    from bus.messages import RunState  # noqa: PLC0415 - see the imports

    open_runs = [r for r in job.get("runs") or []
                 if not RunState(r.get("state", "queued")).final]
    if open_runs:
        _print(f"cancelling job {job.get('id')}: {len(open_runs)} run(s) being stopped "
               f"— follow with ptap job {job.get('id')}")
    else:
        _print(f"job {job.get('id')} is {job.get('state')}")
    return 0


async def cmd_report(session: Session, args: argparse.Namespace) -> int:
    """``ptap report ID [--format F] [-o FILE]``: the job's analysis report."""
    async with session.client() as client:
        result = await client.report(args.job_id, args.format)
    _emit(result, args.format, args.output)
    return 0


async def cmd_compare(session: Session, args: argparse.Namespace) -> int:
    """``ptap compare BASE CAND [--format F] [--threshold PCT] [-o FILE]``: the comparison
    of candidate CAND against baseline BASE, with its verdict."""
    async with session.client() as client:
        result = await client.compare(args.base, args.cand, args.format, args.threshold / 100.0)
    _emit(result, args.format, args.output)
    return 0


def _emit(result: Any, fmt: str, output: str | None) -> None:
    """Print a report or comparison, or write it to ``output`` and print the path."""
    text = render.to_json(result) + "\n" if fmt == "json" else str(result["content"])
    if not output:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    path = Path(output)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # a reader never sees half a report
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {output}: {exc.strerror or exc} — choose another -o path"
                       ) from None
    _print(str(path))


async def cmd_keys(session: Session, args: argparse.Namespace) -> int:
    """``ptap keys list|accept|reject|revoke [NODE]``: agent key acceptance, passed through.

    ``list`` as text ends with how many keys are accepted of how many allowed
    (the manager's ``keys summary``).
    """
    if args.action != "list" and not args.node:
        raise CliError(f"keys {args.action} needs a NODE — e.g. ptap keys {args.action} node1",
                       EXIT_USAGE)
    summary = None
    async with session.client() as client:
        result = await client.keys(args.action, args.node or "")
        if args.action == "list" and not args.json:
            try:
                summary = await client.keys("summary")
            except RequestFailed:  # a manager older than the summary: the table alone
                summary = None
    _print(render.to_json(result) if args.json else _keys_text(result, summary))
    return 0


def _keys_text(result: Any, summary: Any = None) -> str:
    """``keys list`` as a table (state, node, key), then the counts and bounds of
    ``summary``; a changed entry as one line."""
    if isinstance(result, dict) and {"node", "state"} <= result.keys():
        return f"node {result['node']}: key {result['state']} ({result.get('key', '')})"
    if isinstance(result, dict) and all(isinstance(v, list) for v in result.values()):
        rows = [[state, e.get("node"), e.get("key")] for state, entries in result.items()
                for e in entries if isinstance(e, dict)]
        text = render.table(["STATE", "NODE", "KEY"], rows) if rows else "no agent keys"
        return text + (f"\n{_keys_summary(summary)}" if isinstance(summary, dict) else "")
    return result if isinstance(result, str) else render.to_json(result)


def _keys_summary(summary: dict[str, Any]) -> str:
    """``3 of at most 10000 nodes accepted ([security] max_nodes); 1 pending (at most
    1000), 0 rejected, 1 revoked``."""
    count = {state.value: summary.get(state, 0) for state in
             (KeyState.ACCEPTED, KeyState.PENDING, KeyState.REJECTED, KeyState.REVOKED)}
    return (f"{count['accepted']} of at most {summary.get('max_nodes', '?')} nodes accepted "
            f"([security] max_nodes); {count['pending']} pending (at most "
            f"{summary.get('max_pending', '?')}), {count['rejected']} rejected, "
            f"{count['revoked']} revoked")


async def cmd_run(session: OneShotSession, args: argparse.Namespace) -> int:
    """``ptap run [...] -- CMD...``: submit a job, print its id; ``--wait`` follows it."""
    from manager.cli import follow  # noqa: PLC0415 - see the imports

    spec = build_spec(args)
    # Listening before submitting: a job may be over before its id comes back.
    events = session.job_events(session.timeout) if args.wait else None
    try:
        async with session.client() as client:
            job = await client.submit(spec)
            job_id = str(job["id"])
            args.submitted_job_id = job_id
            # The id alone on the first line, so that scripts can capture it.
            _print(job_id)
            if events is None:
                return 0
            final = await follow.follow_job(client, job_id, job, events)
    finally:
        if events is not None:
            await events.close()
    return follow.job_exit_status(final)


def build_spec(args: argparse.Namespace) -> messages.JobSpec:
    """The :class:`JobSpec` for ``ptap run``'s arguments; bad values are usage errors."""
    from bus import messages  # noqa: PLC0415 - see the imports

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("run needs a command — e.g. ptap run --wait -- sleep 2", EXIT_USAGE)
    if len(command) == 1 and any(c.isspace() for c in command[0]):
        # One quoted argument with spaces is a shell string, as docs/architecture.md#nodes-jobs-and-runs allows.
        command = ["/bin/sh", "-c", command[0]]
    return messages.JobSpec(
        command=command,
        name=args.name or "",
        targets=split_list(args.nodes) or ["all"],
        collect=split_list(args.collect),
        interval=args.interval,
        timeout=args.job_timeout,
        repeat=args.repeat,
        env=parse_pairs(args.env, "--env"),
        cwd=args.cwd or "",
        tags=parse_pairs(args.tag, "--tag"),
        series=getattr(args, "series", "") or "",
    )


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["k=v", ...]`` → dict; a value may contain ``=``."""
    out: dict[str, str] = {}
    for item in values or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise CliError(f"{flag} {item!r} is not KEY=VALUE — e.g. {flag} build=1.2.3",
                           EXIT_USAGE)
        out[k.strip()] = v
    return out


async def cmd_watch(session: Session, args: argparse.Namespace) -> int:
    """``ptap watch [--node N]``: live events and metric batches until Ctrl-C."""
    from manager.cli import live  # noqa: PLC0415 - see the imports

    # Ask once first: a SUB socket waits silently forever for a manager
    # that is not there, and the user deserves to be told.
    async with session.client() as client:
        nodes = await client.nodes()
    if args.node and args.node not in {n.get("name") for n in nodes}:
        print(f"ptap: note: node {args.node} is not registered yet; waiting for it",
              file=sys.stderr, flush=True)
    await live.watch(session, args.node, args.count)
    return 0
