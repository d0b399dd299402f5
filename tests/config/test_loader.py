"""Config: precedence, the original names, and one clear line per mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import config
from config.loader import ConfigError, describe
from config.schema import AgentConfig, DashboardConfig, ServerConfig


def write(tmp_path: Path, text: str, name: str = "server.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_samples_load_and_list_every_key() -> None:
    for name, cls, load in [("server.cfg", ServerConfig, config.load_server),
                            ("agentclient.cfg", AgentConfig, config.load_agent),
                            ("frontendagentclient.cfg", DashboardConfig, config.load_dashboard)]:
        path = config.SAMPLES / name
        assert load(path, env={}) == cls()  # samples show the defaults
        text = path.read_text()
        for sec, key, _, doc in describe(cls):
            assert f"[{sec}]" in text
            assert re.search(rf"^{re.escape(key)} =( |$)", text, re.M), f"{name}: {key}"
            assert doc, f"{sec}.{key} has no doc"


def test_original_section_and_key_names(tmp_path: Path) -> None:
    path = write(tmp_path, "[remote-server]\nserver_ip = 10.0.0.5\nserver_port = 6000\n"
                 "[heartbeat-checker]\ninterval = 0.5\n[client]\nclient_ip = 10.0.0.9\n"
                 "labels = db, big\n", "agentclient.cfg")
    cfg = config.load_agent(path, env={})
    assert cfg.remote_server.server_ip == "10.0.0.5"
    assert cfg.remote_server.server_port == 6000
    assert cfg.heartbeat_checker.interval == 0.5
    assert cfg.client.labels == ("db", "big")


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, "[basic]\nbind_port = 1000\ninterval = 2\n")
    env = {"PTAP_BASIC_BIND_PORT": "2000", "PTAP_BASIC_LISTEN_MAX": "7"}
    cfg = config.load_server(path, overrides={"basic.bind_port": "3000"}, env=env)
    assert cfg.basic.bind_port == 3000          # flag
    assert cfg.basic.listen_max == 7            # env
    assert cfg.basic.interval == 2.0            # file
    assert cfg.basic.liveness == 3              # default
    cfg = config.load_server(path, env=env)
    assert cfg.basic.bind_port == 2000


def test_env_name_of_dashed_section() -> None:
    cfg = config.load_agent(None, env={"PTAP_HEARTBEAT_CHECKER_INTERVAL": "0.25"})
    assert cfg.heartbeat_checker.interval == 0.25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[basic]\nbind_port = abc\n", r"server\.cfg \[basic\] bind_port: 'abc' is not an integer"),
        ("[basic]\nbind_port = 70000\n", r"\[basic\] bind_port: 70000 is above the maximum"),
        ("[basic]\ninterval = 0\n", r"\[basic\] interval: 0.0 is below the minimum"),
        ("[basic]\nbind_prot = 1\n", r"\[basic\] bind_prot: unknown key"),
        ("[bsaic]\nbind_port = 1\n", r"\[bsaic\]: unknown section"),
        ("[security]\ncurve = maybe\n", r"\[security\] curve: 'maybe' is not a boolean"),
        ("bind_port = 1\n", r"server\.cfg: cannot parse"),
    ],
)
def test_bad_values_name_file_section_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        config.load_server(path, env={})
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_bad_env_and_flag_values_name_their_source() -> None:
    with pytest.raises(ConfigError, match=r"environment PTAP_BASIC_INTERVAL \(\[basic\] interval\)"):
        config.load_server(None, env={"PTAP_BASIC_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match=r"command line \(\[basic\] bind_port\)"):
        config.load_server(None, overrides={"basic.bind_port": "x"}, env={})
    with pytest.raises(ConfigError, match=r"unknown section \[nope\]"):
        config.load_server(None, overrides={"nope.x": "1"}, env={})
    with pytest.raises(ConfigError, match=r"command line: unknown key \[basic\] bind_prot"):
        config.load_server(None, overrides={"basic.bind_prot": "1"}, env={})


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load_server(tmp_path / "absent.cfg", env={})


def test_configs_are_frozen() -> None:
    cfg = config.load_server(None, env={})
    with pytest.raises(AttributeError):
        cfg.basic.bind_port = 1  # type: ignore[misc]
