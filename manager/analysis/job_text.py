"""A job in one line, as the text and the HTML forms of a report head it.

Apart from :mod:`manager.analysis.render` so that :mod:`manager.analysis.charts`
(which ``render`` imports only when HTML is asked for) needs nothing of ``render``.
"""

from __future__ import annotations

import shlex
from typing import Any


def command_text(argv: list[str]) -> str:
    """An argv as one shell-quoted line (newlines shown as ``\\n``)."""
    return shlex.join(argv).replace("\n", "\\n")


def job_line(job: dict[str, Any]) -> str:
    name = f' "{job["name"]}"' if job.get("name") else ""
    tags = " ".join(f"{k}={v}" for k, v in sorted(job.get("tags", {}).items()))
    return (f"job {job['id']}{name} — {job.get('state')}; "
            f"command: {command_text(job['command'])}; "
            f"nodes: {', '.join(job['nodes']) or '-'}; repeat {job.get('repeat')}; "
            f"interval {job.get('interval')} s" + (f"; tags: {tags}" if tags else ""))
