"""Where the agent's durable state goes: ``[spool] dir``, per node, under $PTAP_VAR."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.state_dir import open_state_dir, resolve_spool_root
from config import load_agent


def test_the_default_is_on_and_follows_ptap_var(tmp_path: Path) -> None:
    default = load_agent(None, env={}).spool.dir
    assert default == "var/agent-spool"
    assert resolve_spool_root(default, {"PTAP_VAR": str(tmp_path / "state")}) == \
        tmp_path / "state" / "agent-spool"
    assert resolve_spool_root(default, {}) == Path.cwd() / "var" / "agent-spool"
    # Only a leading var/ stands for $PTAP_VAR; other paths are what they say.
    assert resolve_spool_root("spool", {"PTAP_VAR": "/x"}) == Path.cwd() / "spool"
    assert resolve_spool_root(str(tmp_path / "abs"), {"PTAP_VAR": "/x"}) == tmp_path / "abs"
    assert resolve_spool_root("", {"PTAP_VAR": "/x"}) is None


def test_one_folder_per_node_and_one_agent_per_folder(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    env = {"PTAP_VAR": str(tmp_path)}
    a = open_state_dir("var/agent-spool", "n1", env)
    b = open_state_dir("var/agent-spool", "n2", env)
    assert a is not None and b is not None
    assert a.path == tmp_path / "agent-spool" / "n1" and a.runs.is_dir()
    assert b.path != a.path
    with caplog.at_level(logging.ERROR, logger="agent.state_dir"):
        assert open_state_dir("var/agent-spool", "n1", env) is None  # n1 is held
    assert "in use by another agent" in caplog.text
    a.close()
    again = open_state_dir("var/agent-spool", "n1", env)
    assert again is not None
    again.close()
    b.close()


def test_a_folder_that_cannot_be_made_costs_durability_not_the_agent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    with caplog.at_level(logging.ERROR, logger="agent.state_dir"):
        assert open_state_dir(str(tmp_path / "file" / "spool"), "n1", {}) is None
    assert "kept in memory only" in caplog.text
    assert open_state_dir("", "n1", {}) is None
