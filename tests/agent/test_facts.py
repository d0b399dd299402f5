"""agent.facts: what a node says about itself when it registers."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent import facts
from config import load_agent

PERF_OK = {"available": True, "paranoid": 1, "hardware_events": ["cycles", "instructions"],
           "version": "6.1", "error": ""}


def cfg(**overrides: str) -> Any:
    return load_agent(None, overrides, env={})


def test_gather_facts(tmp_path: Path) -> None:
    got = facts.gather_facts(cfg(**{"client.client_ip": "10.1.2.3", "client.labels": "a, b"}),
                             probe=lambda: PERF_OK)
    assert got.hostname == socket.gethostname()
    assert got.address == "10.1.2.3"
    assert got.cpus == os.cpu_count()
    assert got.memory_bytes == psutil.virtual_memory().total
    assert got.kernel == platform.release()
    assert got.cpu_model
    assert (got.perf_available, got.perf_paranoid, got.pmu_hardware) == (True, 1, True)
    assert got.labels == ["a", "b"]
    assert got.agent_version == facts.agent_version() == "0.1.0"


def test_gather_facts_async_matches() -> None:
    config = cfg()
    got = asyncio.run(facts.gather_facts_async(config, probe=lambda: PERF_OK))
    assert got == facts.gather_facts(config, probe=lambda: PERF_OK)


def test_address_is_the_local_end_of_the_route_to_the_manager() -> None:
    assert facts.local_address("127.0.0.1", 14321) == "127.0.0.1"
    got = facts.gather_facts(cfg(**{"remote-server.server_ip": "127.0.0.1"}),
                             probe=lambda: PERF_OK)
    assert got.address == "127.0.0.1"


def test_a_failing_probe_is_not_fatal() -> None:
    def broken() -> dict[str, Any]:
        raise OSError("perf exploded")

    available, paranoid, pmu = facts.perf_facts(broken)
    assert (available, pmu) == (False, False)
    assert paranoid == facts.read_paranoid()


@pytest.mark.parametrize("info, expected", [
    (PERF_OK, (True, 1, True)),
    ({**PERF_OK, "hardware_events": True}, (True, 1, True)),
    ({**PERF_OK, "hardware_events": []}, (True, 1, False)),
    ({**PERF_OK, "hardware_events": {"cycles": False, "instructions": False}}, (True, 1, False)),
    ({**PERF_OK, "hardware_events": {"cycles": True}}, (True, 1, True)),
    ({**PERF_OK, "available": False, "hardware_events": True}, (False, 1, False)),
    ({**PERF_OK, "paranoid": 3}, (True, 3, True)),
])
def test_probe_results_map_to_facts(info: dict[str, Any], expected: tuple[Any, ...]) -> None:
    assert facts.perf_facts(lambda: info) == expected


def test_probe_without_paranoid_reads_the_kernel() -> None:
    assert facts.perf_facts(lambda: {"available": False})[1] == facts.read_paranoid()


def test_default_probe_keeps_the_contract() -> None:
    """Real: agent.collectors.perf if present (it spawns perf), else the fallback."""
    info = facts.default_probe()
    assert {"available", "paranoid", "hardware_events", "version", "error"} <= set(info)
    assert isinstance(info["available"], bool)


def test_cpu_model_readers(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                   "model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\nprocessor\t: 1\n"
                   "model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\n"
                   "Hardware\t: Raspberry Pi\nModel\t: Raspberry Pi 4 Model B\n")
    assert facts.read_cpu_model(x86) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert facts.read_cpu_model(arm) == "Raspberry Pi 4 Model B"
    assert facts.read_cpu_model(tmp_path / "missing") == (platform.processor()
                                                          or platform.machine())


def test_governor_and_paranoid_readers(tmp_path: Path) -> None:
    gov = tmp_path / "scaling_governor"
    gov.write_text("performance\n")
    assert facts.read_governor(gov) == "performance"
    assert facts.read_governor(tmp_path / "missing") == ""
    par = tmp_path / "paranoid"
    par.write_text("2\n")
    assert facts.read_paranoid(par) == 2
    par.write_text("what\n")
    assert facts.read_paranoid(par) is None
    assert facts.read_paranoid(tmp_path / "missing") is None
