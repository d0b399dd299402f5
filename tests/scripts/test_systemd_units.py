"""scripts/systemd/: the units as install-unit renders them for this checkout.

systemd does not run here (PID 1 is not systemd), so nothing is started:
``systemd-analyze verify`` (systemd's own parser, which also checks that each
ExecStart= program exists and is executable) reads the rendered units, and
the tests parse them for the settings ptap relies on.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

INSTALL_UNIT = ROOT / "scripts" / "systemd" / "install-unit"
UNITS = {"ptap-manager": "manager.main:main", "ptap-agent": "agent.main:main",
         "ptap-dashboard": "dashboard.main:main"}
ANALYZE = shutil.which("systemd-analyze")


def render(dest: Path, *options: str) -> dict[str, configparser.ConfigParser]:
    """install-unit --dest DEST for every unit; each parsed (one value per key)."""
    done = subprocess.run(["bash", str(INSTALL_UNIT), "--dest", str(dest), *options, *UNITS],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    units = {}
    for name in UNITS:
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
        parser.read(dest / f"{name}.service")
        units[name] = parser
    return units


def verify(dest: Path, *flags: str) -> None:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); "
                    "the parsed settings are checked by the other tests")
    runtime = dest / "xdg-runtime"  # --user needs one; systemd itself is not started
    runtime.mkdir(mode=0o700, exist_ok=True)
    done = subprocess.run([ANALYZE, *flags, "verify", *sorted(map(str, dest.glob("*.service")))],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_units_as_installed_for_this_checkout_pass_systemd_analyze_verify(
        tmp_path: Path) -> None:
    render(tmp_path)
    verify(tmp_path)


def test_each_unit_runs_its_console_script_and_restarts_it_on_failure(tmp_path: Path) -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    for name, unit in render(tmp_path).items():
        service = unit["Service"]
        program = Path(service["ExecStart"].split()[0])
        assert program == ROOT / ".venv" / "bin" / name and os.access(program, os.X_OK)
        assert scripts[name] == UNITS[name]  # the entry point behind it (setup.cfg)
        assert service["Restart"] == "on-failure" and service["RestartSec"] == "2s"
        assert unit["Unit"]["StartLimitIntervalSec"] == "0"  # never gives up
        assert service["EnvironmentFile"] == f"-/etc/ptap/{name.removeprefix('ptap-')}.env"
        assert service["User"] == "ptap"
        assert "PASSWORD" not in service["ExecStart"]
        assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_only_the_agent_runs_unsandboxed_and_with_the_jobs_umask(tmp_path: Path) -> None:
    units = render(tmp_path)
    for name in ("ptap-manager", "ptap-dashboard"):
        service = units[name]["Service"]
        assert service["UMask"] == "0077"
        for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                           "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
            assert service[key] == value, (name, key)
    agent = units["ptap-agent"]["Service"]
    # Jobs inherit all of it: sudo, setuid tools and the node's /tmp must keep working.
    assert not {"NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"} & set(agent)
    assert agent["UMask"] == "0022" and agent["KillMode"] == "process"


def test_a_node_install_in_a_home_folder_as_launch_agents_renders_it(tmp_path: Path) -> None:
    state = tmp_path / "node"
    (state / "var").mkdir(parents=True)
    units = render(tmp_path / "system", "--state-dir", str(state), "--config-dir",
                   str(ROOT / "config"), "--env-file", str(state / "var" / "agent.env"),
                   "--user", "root")
    agent = units["ptap-agent"]["Service"]
    assert agent["WorkingDirectory"] == str(state) and agent["User"] == "root"
    assert agent["Environment"] == f"PTAP_VAR={state / 'var'}"
    assert agent["EnvironmentFile"] == f"-{state / 'var' / 'agent.env'}"
    assert agent["ExecStart"].endswith(f"--config {ROOT / 'config' / 'agentclient.cfg'}")
    assert "StateDirectory" not in agent  # systemd makes those under /var/lib only
    assert units["ptap-manager"]["Service"]["ReadWritePaths"] == str(state)
    verify(tmp_path / "system")

    user = render(tmp_path / "user", "--user-unit", "--state-dir", str(state))
    assert "User" not in user["ptap-agent"]["Service"]
    assert user["ptap-agent"]["Install"]["WantedBy"] == "default.target"
    verify(tmp_path / "user", "--user")


def test_install_unit_refuses_where_systemd_does_not_run(tmp_path: Path) -> None:
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd runs here: installing would change this host")
    done = subprocess.run(["bash", str(INSTALL_UNIT), "ptap-agent"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "systemd is not running here" in done.stderr
