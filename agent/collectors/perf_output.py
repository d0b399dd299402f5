"""What ``perf stat -x,`` prints, parsed, and what perf can count on this host.

:mod:`agent.collectors.perf` runs perf for a job or the system and turns these
lines into the ``perf`` measurement; the agent's registration facts come from
:func:`probe_perf`.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PROBE_EVENTS = "cycles,instructions,task-clock"
PARANOID_PATH = "/proc/sys/kernel/perf_event_paranoid"


class Capability(StrEnum):
    """What perf said about an event."""

    SUPPORTED = "supported"
    NOT_SUPPORTED = "not supported"
    NOT_COUNTED = "not counted"
    UNAVAILABLE = "unavailable"  # perf itself could not run


_STATUS = {"<not supported>": Capability.NOT_SUPPORTED, "<not counted>": Capability.NOT_COUNTED}

# ts (with -I) · aggregation columns (-A: CPU0, --per-socket: S0,2, --per-thread:
# comm-pid) · value · unit · event · cgroup (-G) · variance (-r) · run_ns · pct
# · metric value and unit (absent in some versions/modes).
_LINE = re.compile(
    r"^\s*(?:(?P<ts>\d+\.\d{9}),)?"
    r"(?P<prefix>(?:[^,]*,)*?)"
    r"(?P<value>\d+(?:\.\d+)?|<not supported>|<not counted>),"
    r"(?P<unit>(?:[^,\d<][^,]*)?),"
    r"(?P<event>.+?)"
    r"(?:,(?P<cgroup>/[^,]*))?"
    r"(?:,(?P<variance>\d+(?:\.\d+)?%))?"
    r",(?P<run>\d+),(?P<pct>\d+(?:\.\d+)?)"
    r"(?:,(?P<metric>[^,]*)(?:,(?P<metric_unit>[^,]*))?)?\s*$"
)


# The line the agent's ``perf stat -x, -I`` prints for each event (no aggregation,
# cgroup or variance columns, no comma in the event name): _LINE's first way of
# matching it, without the backtracking that makes _LINE cost four times as much.
# Where this matches, _LINE gives the same fields; other lines go to _LINE.
_INTERVAL_LINE = re.compile(
    r"\s*(\d+\.\d{9}),(\d+(?:\.\d+)?|<not supported>|<not counted>),((?:[^,\d<][^,]*)?),"
    r"([^,]+),(\d+),(\d+(?:\.\d+)?)(?:,[^,]*(?:,[^,]*)?)?\s*"
)


@dataclass(frozen=True, slots=True)
class PerfSample:
    """One parsed line of ``perf stat -x,`` output."""

    ts: float | None  # seconds since perf started; None without -I
    event: str
    status: Capability
    value: float | None  # None unless status is SUPPORTED
    unit: str
    run_ns: int
    enabled_pct: float
    prefix: tuple[str, ...] = ()  # -A / --per-* / --per-thread columns
    cgroup: str | None = None


def parse_perf_line(line: str) -> PerfSample | None:
    """Parse one CSV line from ``perf stat -x,``; ``None`` for anything else.

    Handles lines with and without the interval timestamp, the aggregation
    columns, the cgroup column and the trailing metric columns.
    """
    m = _INTERVAL_LINE.fullmatch(line)
    if m is not None:
        ts, raw, unit, event, run, pct = m.groups()
        status = _STATUS.get(raw, Capability.SUPPORTED)
        return PerfSample(float(ts), event, status,
                          float(raw) if status is Capability.SUPPORTED else None,
                          unit, int(run), float(pct))
    m = _LINE.match(line)
    if m is None:
        return None
    raw = m["value"]
    status = _STATUS.get(raw, Capability.SUPPORTED)
    prefix = tuple(m["prefix"].split(",")[:-1]) if m["prefix"] else ()
    return PerfSample(
        ts=float(m["ts"]) if m["ts"] else None,
        event=m["event"],
        status=status,
        value=float(raw) if status is Capability.SUPPORTED else None,
        unit=m["unit"],
        run_ns=int(m["run"]),
        enabled_pct=float(m["pct"]),
        prefix=prefix,
        cgroup=m["cgroup"],
    )


def perf_env() -> dict[str, str]:
    """The environment perf runs in: a decimal comma in some locales would break the CSV."""
    return {**os.environ, "LC_ALL": "C"}


def read_paranoid(path: str = PARANOID_PATH) -> int | None:
    """The kernel's ``perf_event_paranoid`` level, or ``None`` if unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def probe_perf(perf_path: str = "perf") -> dict[str, Any]:
    """Check what perf can do here, for the agent's registration facts.

    Runs ``perf stat -x, -e cycles,instructions,task-clock true``. Returns
    ``{available, paranoid, hardware_events, version, error, capabilities}``;
    never raises.
    """
    facts: dict[str, Any] = {
        "available": False, "paranoid": read_paranoid(), "hardware_events": False,
        "version": None, "error": None, "capabilities": {},
    }
    try:
        ver = subprocess.run([perf_path, "--version"], capture_output=True, text=True,
                             timeout=10, env=perf_env(), check=False)
        facts["version"] = ver.stdout.strip() or None
        run = subprocess.run([perf_path, "stat", "-x,", "-e", PROBE_EVENTS, "true"],
                             capture_output=True, text=True, timeout=10, env=perf_env(),
                             check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        facts["error"] = f"cannot run {perf_path!r}: {exc}"
        return facts
    caps = {s.event: s.status for s in map(parse_perf_line, run.stderr.splitlines()) if s}
    facts["capabilities"] = {k: str(v) for k, v in caps.items()}
    facts["available"] = caps.get("task-clock") is Capability.SUPPORTED
    facts["hardware_events"] = all(
        caps.get(e) is Capability.SUPPORTED for e in ("cycles", "instructions"))
    if not facts["available"]:
        tail = " | ".join(run.stderr.strip().splitlines()[-3:])
        facts["error"] = f"perf stat exited {run.returncode}: {tail or 'no output'}"
    return facts
