"""ptap-agent's command line: flags, a bad config in one line, and a real agent process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.asyncio

from agent.main import build_parser, cli_overrides, manager_address, node_name
from bus.daemon import StartupError
from bus.messages import Register, RunState, RunUpdate, Welcome
from bus.security import ensure_keypair
from config import load_agent
from tests.agent.test_link import FakeManager, dispatch, update_of

ROOT = Path(__file__).resolve().parents[2]


def agent_env() -> dict[str, str]:
    """The test's environment without PTAP_ config variables, with the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTAP_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_flags_become_overrides() -> None:
    args = build_parser().parse_args(["--name", "n7", "--server", "10.0.0.5:6000",
                                      "--set", "dispatcher.kill_grace=1"])
    assert cli_overrides(args) == {"client.name": "n7", "remote-server.server_ip": "10.0.0.5",
                                   "remote-server.server_port": "6000",
                                   "dispatcher.kill_grace": "1"}
    v6 = cli_overrides(build_parser().parse_args(["--server", "[::1]:6000"]))
    assert v6["remote-server.server_ip"] == "::1"
    cfg = load_agent(None, v6, env={})
    assert manager_address(cfg) == "tcp://[::1]:6000"
    with pytest.raises(StartupError, match="HOST:PORT"):
        cli_overrides(build_parser().parse_args(["--server", "nowhere"]))


def test_node_name_defaults_to_the_short_host_name() -> None:
    assert node_name(load_agent(None, {"client.name": "n7"}, env={})) == "n7"
    assert node_name(load_agent(None, {}, env={})) == os.uname().nodename.split(".")[0]


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "agent.cfg"
    bad.write_text("[heartbeat-checker]\ninterval = soon\n")
    proc = subprocess.run([sys.executable, "-m", "agent.main", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, env=agent_env(),
                          cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptap-agent: ")
    assert "interval" in lines[0]


def test_a_damaged_server_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """libzmq would refuse the key only at its first socket, with a traceback."""
    keys = tmp_path / "agent-keys"
    ensure_keypair(keys, "agent")  # made already: its creation is not logged in this run
    (keys / "server.key").write_text('metadata\ncurve\n    public-key = "abc"\n')
    proc = subprocess.run([sys.executable, "-m", "agent.main", "--set", "security.curve=yes",
                           "--set", f"security.keys_dir={keys}", "--server", "127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60, env=agent_env(),
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptap-agent: ")
    assert f"public-key in {keys / 'server.key'} is not a CURVE key" in lines[0]


def test_agent_process_registers_and_runs_a_job(tmp_path: Path) -> None:
    """``python -m agent.main`` against a ROUTER speaking the real codec, then SIGTERM."""
    log = tmp_path / "agent.log"

    async def scenario() -> int:
        ctx = zmq.asyncio.Context()
        manager = FakeManager(ctx)
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.main", "--name", "e2e",
                "--server", f"127.0.0.1:{manager.port}",
                "--set", f"dispatcher.workdir={tmp_path / 'runs'}",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=agent_env(), cwd=tmp_path)
        try:
            ident, reg = await manager.expect(Register)
            assert (reg.node, reg.facts.agent_version) == ("e2e", "0.1.0")
            await manager.send(ident, Welcome(node="e2e", heartbeat_interval=0.1, liveness=5))
            await manager.send(ident, dispatch("j1.e2e.1", ["sh", "-c", "echo $PTAP_NODE"]))
            _, final = await manager.expect(RunUpdate, update_of("j1.e2e.1", RunState.SUCCEEDED))
            assert final.run.stdout_tail == "e2e\n"
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
            manager.sock.close(linger=0)
            ctx.destroy(linger=0)
        return code

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        print(log.read_text(errors="replace"))
