"""Text for people: tables, ages, the job view, progress and event lines.

Everything here is a pure function of the JSON shapes in docs/protocol.md
(plus ``now``), so it is tested without a manager.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bus.states import RunState

if TYPE_CHECKING:
    # Imported where used: ``ptap nodes``, ``jobs`` and ``job`` render without the
    # message classes (~25 ms to import), see manager/cli/oneshot.py.
    from bus import messages

TAIL_LINES = 10


def to_json(obj: Any) -> str:
    """The ``--json`` form: the protocol's shapes, indented, keys as the manager sent them."""
    return json.dumps(obj, indent=2, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; ``None`` shows as ``-``."""
    text_rows = [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *text_rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def span(seconds: float | None) -> str:
    """A short human duration: ``0.4s``, ``12s``, ``3m04s``, ``2h05m``, ``3d04h``."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def when(ts: float | None) -> str:
    """A local wall-clock time, or ``-``."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def command_text(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def perf_capability(facts: dict[str, Any]) -> str:
    """``hw+sw`` (PMU counters), ``sw`` (software events only) or ``none``."""
    if not facts.get("perf_available"):
        return "none"
    kind = "hw+sw" if facts.get("pmu_hardware") else "sw"
    paranoid = facts.get("perf_paranoid")
    return kind if paranoid is None else f"{kind} (paranoid {paranoid})"


def clock_offset(offset: float | None) -> str:
    """A node's ``clock_offset`` (the manager's clock minus the agent's): ``+0.4ms``,
    ``-2.50s``, or ``-`` when the agent sends no clock stamps."""
    if not isinstance(offset, (int, float)):
        return "-"
    if abs(offset) < 1:
        return f"{offset * 1000:+.1f}ms"
    return f"{offset:+.2f}s"


def nodes_table(nodes: Sequence[Mapping[str, Any]]) -> str:
    """``ptap nodes``; OFFSET is the manager's clock minus the node's (docs/protocol.md)."""
    if not nodes:
        return "no nodes registered — start one with ptap-agent --server HOST:PORT"
    rows = []
    for n in sorted(nodes, key=lambda n: n.get("name", "")):
        facts = n.get("facts") or {}
        rows.append([n.get("name"), n.get("state"), n.get("address") or facts.get("address"),
                     f"{span(n.get('silent_for'))} ago", clock_offset(n.get("clock_offset")),
                     facts.get("cpus"), perf_capability(facts), len(n.get("running") or [])])
    return table(["NAME", "STATE", "ADDRESS", "HEARTBEAT", "OFFSET", "CPUS", "PERF", "RUNNING"],
                 rows)


def run_counts(job: Mapping[str, Any]) -> str:
    """``2/3 ok`` style summary of a job's runs."""
    runs = job.get("runs") or []
    done = sum(1 for r in runs if r.get("state") == RunState.SUCCEEDED)
    return f"{done}/{len(runs)} ok"


def job_duration(job: Mapping[str, Any], now: float) -> float | None:
    started = [r["started_at"] for r in job.get("runs") or [] if r.get("started_at")]
    if not started:
        return None
    end: float = job.get("ended_at") or now
    return end - float(min(started))


def jobs_table(jobs: Sequence[Mapping[str, Any]], now: float) -> str:
    if not jobs:
        return "no jobs yet — submit one with ptap run -- CMD"
    rows = []
    for j in jobs:
        spec = j.get("spec") or {}
        rows.append([j.get("id"), j.get("name") or "-", j.get("state"), run_counts(j),
                     when(j.get("created_at")), span(job_duration(j, now)),
                     _clip(command_text(spec.get("command") or []), 50)])
    return table(["ID", "NAME", "STATE", "RUNS", "CREATED", "DURATION", "COMMAND"], rows)


def run_duration(run: dict[str, Any], now: float) -> float | None:
    start = run.get("started_at")
    if start is None:
        return None
    end: float = run.get("ended_at") or now
    return end - float(start)


def job_view(job: Mapping[str, Any], now: float) -> str:
    """``ptap job ID``: the job, its spec, and each run with state, exit code and output tails."""
    spec = job.get("spec") or {}
    tags = " ".join(f"{k}={v}" for k, v in sorted((spec.get("tags") or {}).items()))
    timeout = spec.get("timeout") or 0
    lines = [
        f"job {job.get('id')}" + (f"  ({job['name']})" if job.get("name") else "")
        + f"  {job.get('state')}",
        f"command:  {command_text(spec.get('command') or [])}",
        f"targets:  {', '.join(spec.get('targets') or [])}   repeat: {spec.get('repeat', 1)}"
        f"   timeout: {span(timeout) if timeout else 'none'}",
        f"collect:  {', '.join(spec.get('collect') or []) or '-'}"
        f"   every {spec.get('interval', 1.0):g}s",
    ]
    if tags:
        lines.append(f"tags:     {tags}")
    if spec.get("cwd"):
        lines.append(f"cwd:      {spec['cwd']}")
    lines.append(f"created:  {when(job.get('created_at'))}   ended: {when(job.get('ended_at'))}")
    runs = job.get("runs") or []
    lines += ["", table(["RUN", "NODE", "STATE", "EXIT", "PID", "DURATION"],
                        [[r.get("id"), r.get("node"), r.get("state"), r.get("exit_code"),
                          r.get("pid"), span(run_duration(r, now))] for r in runs])]
    for r in runs:
        lines += _run_output(r)
    return "\n".join(lines)


def _run_output(run: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for label, key in (("stdout", "stdout_tail"), ("stderr", "stderr_tail")):
        text = run.get(key) or ""
        if text.strip():
            out.append(f"\n{run.get('id')} {label} (last {TAIL_LINES} lines):")
            out += [f"  {line}" for line in tail_lines(text, TAIL_LINES)]
    if extra_error(run):
        out.append(f"\n{run.get('id')} error: {run['error']}")
    return out


def extra_error(run: Mapping[str, Any]) -> bool:
    """True when a run's ``error`` says more than its exit code already does."""
    error = run.get("error") or ""
    return bool(error) and error != f"exit code {run.get('exit_code')}"


def tail_lines(text: str, n: int) -> list[str]:
    return text.rstrip("\n").splitlines()[-n:]


def run_progress(job_id: str, run: Mapping[str, Any]) -> str:
    """One stderr line for ``run --wait`` when a run changes state."""
    from bus import messages  # noqa: PLC0415 - see the imports

    state = run.get("state")
    where = f"{run.get('node')} #{run.get('iteration')}"
    detail = ""
    if state == messages.RunState.RUNNING and run.get("pid"):
        detail = f" (pid {run['pid']})"
    elif state in {s.value for s in messages.RunState if s.final}:
        parts = []
        if run.get("exit_code") is not None:
            parts.append(f"exit {run['exit_code']}")
        if run.get("started_at") and run.get("ended_at"):
            parts.append(span(run["ended_at"] - run["started_at"]))
        if extra_error(run):
            parts.append(run["error"])
        detail = f" ({', '.join(parts)})" if parts else ""
    return f"job {job_id}: {where} {state}{detail}"


def event_lines(topic: str, msg: messages.Message, now: float,
                node: str | None = None) -> list[str]:
    """``ptap watch``'s lines for an event or a metric batch: one for each, but one per
    run for a ``runs`` event; only what concerns ``node`` when one is given."""
    from bus import messages  # noqa: PLC0415 - see the imports

    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    if isinstance(msg, messages.MetricBatch):
        if node and msg.node != node:
            return []
        measurements = sorted({s[0] for s in msg.series if s and isinstance(s[0], str)})
        points = sum(len(s[3]) for s in msg.series if len(s) > 3 and isinstance(s[3], list))
        return [f"{stamp} metrics {msg.node} seq={msg.seq} series={len(msg.series)} "
                f"points={points} [{' '.join(measurements)}]"]
    if not isinstance(msg, messages.Event):
        return [] if node else [f"{stamp} {topic} {msg.TYPE}"]
    if msg.kind == messages.RUNS_EVENT:
        return [_run_line(stamp, run) for run in msg.runs()
                if not node or run.get("node") == node]
    if node and node not in (msg.node, msg.detail.get("node"), msg.detail.get("name")):
        return []
    return [f"{stamp} {msg.kind} {msg.job_id or msg.node} {msg.state}"]


def _run_line(stamp: str, run: Mapping[str, Any]) -> str:
    code = run.get("exit_code")
    return (f"{stamp} run {run.get('id', '?')} {run.get('state', '?')} on "
            f"{run.get('node', '?')}" + (f" exit {code}" if code is not None else ""))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
