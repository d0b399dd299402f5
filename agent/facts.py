"""The node facts an agent sends when it registers (docs/architecture.md#nodes-jobs-and-runs, :class:`bus.messages.NodeFacts`).

Everything here is read once at start-up. The perf probe spawns ``perf``, so
:func:`gather_facts_async` runs the whole gathering in a worker thread, off the
event loop. Every reader falls back to an empty or neutral value rather than
failing: a node with an odd ``/proc`` or no ``perf`` still registers.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import platform
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bus.messages import NodeFacts
from config.schema import AgentConfig

log = logging.getLogger(__name__)

#: The package version when the package is not installed (running from a checkout).
FALLBACK_VERSION = "0.1.0"

CPUINFO = Path("/proc/cpuinfo")
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
PARANOID = Path("/proc/sys/kernel/perf_event_paranoid")

#: A perf probe: returns ``{available, paranoid, hardware_events, version, error}``.
PerfProbe = Callable[[], dict[str, Any]]

# /proc/cpuinfo names the CPU differently per architecture; the first found wins.
_MODEL_KEYS = ("model name", "Model", "cpu model", "Processor", "Hardware", "cpu")


def gather_facts(cfg: AgentConfig, probe: PerfProbe | None = None) -> NodeFacts:
    """Facts of this node. Blocking (it may spawn ``perf``): see :func:`gather_facts_async`."""
    perf_available, paranoid, pmu = perf_facts(probe or default_probe)
    remote = cfg.remote_server
    return NodeFacts(
        hostname=socket.gethostname(),
        address=cfg.client.client_ip or local_address(remote.server_ip, remote.server_port),
        cpus=os.cpu_count() or 1,
        memory_bytes=int(psutil.virtual_memory().total),
        kernel=platform.release(),
        cpu_model=read_cpu_model(),
        governor=read_governor(),
        perf_available=perf_available,
        perf_paranoid=paranoid,
        pmu_hardware=pmu,
        labels=list(cfg.client.labels),
        agent_version=agent_version(),
    )


async def gather_facts_async(cfg: AgentConfig, probe: PerfProbe | None = None) -> NodeFacts:
    """:func:`gather_facts` in a worker thread, so spawning perf does not block the loop."""
    return await asyncio.to_thread(gather_facts, cfg, probe)


def local_address(server_ip: str, server_port: int) -> str:
    """The local address of the route to the manager ("" when there is none).

    Connecting a UDP socket only asks the kernel to choose a route and a source
    address; no packet is sent.
    """
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            server_ip, server_port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(sockaddr)
            return str(sock.getsockname()[0])
    except OSError as exc:
        log.warning("no route to manager %s found (%s); reporting no address", server_ip, exc)
        return ""


def read_cpu_model(path: Path = CPUINFO) -> str:
    """The CPU model from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        name = name.strip()
        if sep and name in _MODEL_KEYS and value.strip() and name not in found:
            found[name] = value.strip()
    for name in _MODEL_KEYS:
        if name in found:
            return found[name]
    return platform.processor() or platform.machine()


def read_governor(path: Path = GOVERNOR) -> str:
    """cpu0's frequency governor, or "" where cpufreq is not exposed (most VMs)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def read_paranoid(path: Path = PARANOID) -> int | None:
    """``kernel.perf_event_paranoid``, or None when it cannot be read."""
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def agent_version() -> str:
    """The installed ``ptap`` package version, or :data:`FALLBACK_VERSION` from a checkout."""
    try:
        return importlib.metadata.version("ptap")
    except importlib.metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def default_probe() -> dict[str, Any]:
    """``agent.collectors.perf.probe_perf()``, imported late: the collectors may be absent."""
    try:
        from agent.collectors.perf import probe_perf
    except ImportError as exc:
        return {"available": False, "paranoid": read_paranoid(), "hardware_events": False,
                "version": "", "error": f"perf probe unavailable: {exc}"}
    return probe_perf()


def perf_facts(probe: PerfProbe) -> tuple[bool, int | None, bool]:
    """``(perf_available, perf_paranoid, pmu_hardware)`` from a probe; never raises."""
    try:
        info = probe()
    except Exception as exc:  # the probe spawns perf: anything may go wrong there
        log.warning("perf probe failed: %s; reporting perf as unavailable", exc)
        info = {"error": str(exc)}
    available = info.get("available") is True
    paranoid = info.get("paranoid")
    if type(paranoid) is not int:
        paranoid = read_paranoid()
    pmu = available and _any_hardware(info.get("hardware_events"))
    log.info("perf: available=%s paranoid=%s hardware_pmu=%s version=%s%s", available,
             paranoid, pmu, info.get("version") or "?",
             f" ({info['error']})" if info.get("error") else "")
    return available, paranoid, pmu


def _any_hardware(value: Any) -> bool:
    """The probe may say ``True``, or list the hardware events, or map them to support."""
    if isinstance(value, dict):
        return any(bool(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) > 0
    return value is True
