"""Where the agent keeps what must outlive it: unacked metric batches and finished runs.

``[spool] dir`` (default ``var/agent-spool``) holds one folder per node, so
several agents on one host (tests, simulators, a node renamed) never share
files::

    var/agent-spool/<node>/
        .lock                 held (flock) while an agent uses the folder
        <seq>.batch           a metric batch not yet acked (agent.shipper)
        runs/<run id>.run     a finished run not yet acked (agent.run_journal)

A leading ``var/`` stands for ``$PTAP_VAR`` when that is set, the state folder
``scripts/start-all`` puts everything else in; any other relative path is taken
from the current folder, like the other paths of agentclient.cfg.

Nothing here may stop the agent: a folder that cannot be made, or one another
live agent holds, costs durability (one log line says so), not the node.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StateDir", "open_state_dir", "resolve_spool_root"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StateDir:
    """This node's durable folder, locked for this process while it lives."""

    path: Path
    lock_fd: int

    @property
    def batches(self) -> Path:
        return self.path

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    def close(self) -> None:
        os.close(self.lock_fd)  # releases the flock


def resolve_spool_root(configured: str, env: Mapping[str, str] | None = None) -> Path | None:
    """``[spool] dir`` as a path: ``var/...`` under ``$PTAP_VAR`` when set; None when empty."""
    if not configured:
        return None
    env = os.environ if env is None else env
    path = Path(configured)
    var = env.get("PTAP_VAR")
    if var and not path.is_absolute() and path.parts[:1] == ("var",):
        path = Path(var).joinpath(*path.parts[1:])
    return Path(os.path.abspath(path))


def open_state_dir(configured: str, node: str,
                   env: Mapping[str, str] | None = None) -> StateDir | None:
    """Create and lock ``<spool dir>/<node>``; None (and one log line) when it cannot be had."""
    root = resolve_spool_root(configured, env)
    if root is None:
        return None
    path = root / node
    try:
        (path / "runs").mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.error("node %s: cannot use the spool folder %s (%s); metric batches and "
                  "finished runs are kept in memory only and lost if the agent stops — "
                  "fix the folder or set [spool] dir", node, path, exc.strerror or exc)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        log.error("node %s: the spool folder %s is in use by another agent of the same "
                  "name; this one keeps its batches and runs in memory only — give each "
                  "agent its own --name or [spool] dir", node, path)
        return None
    return StateDir(path, fd)
