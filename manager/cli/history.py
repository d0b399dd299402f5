"""``ptap history SERIES``: a test's performance over its jobs, with change points marked.

Only the standard library is imported at the top: :func:`parse_since` is
the parser's type for ``--since``, and building the parser must stay cheap
(``manager/cli/main.py``). The history comes from the manager
(``history.get``); text, CSV and HTML are rendered here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time

from manager.cli.session import Session

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FORMATS = ("text", "json", "csv", "html")


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: an age (``90m``, ``12h``, ``7d``, ``2w``) or a UTC date or time
    (``2026-12-01``, ``2026-12-01T08:00``) → wall time in seconds."""
    now = time.time() if now is None else now
    found = _AGO.fullmatch(text.strip().lower())
    if found:
        return max(0.0, now - float(found[1]) * _UNIT_S[found[2]])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not an age (90m, 12h, 7d, 2w) nor a date "
            "(2026-12-01 or 2026-12-01T08:00, UTC)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp())


def add_parser(sub: argparse._SubParsersAction, command: object, count: object) -> None:  # type: ignore[type-arg]
    """Register ``ptap history`` on ``sub``; ``command`` runs it, ``count`` parses --last."""
    p = sub.add_parser("history", help="a series' performance over its jobs, change points "
                                       "marked (README: History)")
    p.add_argument("series", metavar="SERIES", help="a job name or a --series name")
    p.add_argument("--metric", metavar="M", action="append", default=[], dest="metrics",
                   help="a metric id (repeatable; default: the test's own run.*, proc.*, "
                        "perf.* and app.* metrics)")
    p.add_argument("--since", metavar="D", type=parse_since, default=0.0,
                   help="only jobs since an age (7d, 12h) or a UTC date (2026-12-01)")
    p.add_argument("--last", metavar="N", type=count, default=0, help="only the last N points")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE and print its path")
    p.set_defaults(func=command)


async def cmd_history(session: Session, args: argparse.Namespace) -> int:
    """``ptap history SERIES [--metric M]… [--since D] [--last N] [--format F] [-o FILE]``."""
    from manager.cli import commands  # noqa: PLC0415 - the command's own dependencies
    from manager.history import render  # noqa: PLC0415

    async with session.client() as client:
        history = await client.history(args.series, args.metrics, args.since, args.last)
    if args.format == "json":
        commands._emit(history, "json", args.output)
    else:
        commands._emit({"content": render.render(history, args.format)}, args.format,
                       args.output)
    return 0
