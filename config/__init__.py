"""Configuration: loader and the three config files (see :mod:`config.schema`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.loader import ConfigError, load
from config.schema import AgentConfig, DashboardConfig, ServerConfig

SAMPLES = Path(__file__).parent


def load_server(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> ServerConfig:
    """The manager's config: flags (``overrides``) > environment > file > defaults."""
    return load(ServerConfig, _path(path), env=os.environ if env is None else env,
                overrides=overrides)


def load_agent(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
               env: Mapping[str, str] | None = None) -> AgentConfig:
    """The agent's config, with the same precedence."""
    return load(AgentConfig, _path(path), env=os.environ if env is None else env,
                overrides=overrides)


def load_dashboard(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                   env: Mapping[str, str] | None = None) -> DashboardConfig:
    """The dashboard's config, with the same precedence."""
    return load(DashboardConfig, _path(path), env=os.environ if env is None else env,
                overrides=overrides)


def _path(path: str | Path | None) -> Path | None:
    return Path(path) if path is not None else None


__all__ = ["ConfigError", "load_server", "load_agent", "load_dashboard",
           "ServerConfig", "AgentConfig", "DashboardConfig", "SAMPLES"]
