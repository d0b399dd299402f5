"""Finished runs on disk until the manager acks them, so an agent restart loses none.

A run's final report (state, exit code, times, output tails) is written to
``<state dir>/runs/<run id>.run`` *before* its ``run.update`` is sent, and
removed when ``run.ack`` arrives. An agent that starts finds the files of runs
that ended while it was away (or while the manager was), and reports them in
``agent.register`` as it reports the runs it holds: the manager then stores the
outcome the run really had, never ``lost`` (docs/protocol.md "Runs").

Each file is the msgpack body of a ``run.update``, so it is read back through
the codec's checks. A write goes to a temporary file, is fsynced, and renamed
over the final name (then the folder is fsynced): a crash leaves either the old
file or the new one, never half of one. A file that cannot be read is logged
once and skipped; nothing found here stops the agent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from bus import codec
from bus.errors import ProtocolError
from bus.messages import MsgType, RunReport, RunUpdate
from bus.ratelimit import RateLimitedLog

__all__ = ["RunJournal"]

log = logging.getLogger(__name__)

SUFFIX = ".run"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}$")
_TYPE = MsgType.RUN_UPDATE.value.encode()


class RunJournal:
    """Final run reports in ``directory`` (None: memory only, every call a no-op)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._trouble = RateLimitedLog(log, period=60.0)

    def record(self, report: RunReport) -> bool:
        """Write ``report`` durably; False (and a log line) if the disk refused."""
        if self.directory is None:
            return False
        path = self._path(report.run_id)
        tmp = path.with_name(path.name + ".tmp")
        try:
            body = codec.encode(RunUpdate(run=report))[1]
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._sync_folder()
        except OSError as exc:
            self._trouble.warn("write", f"run {report.run_id}: cannot keep its final state in "
                               f"{self.directory} ({exc.strerror or exc}); it is sent anyway, "
                               "but an agent restart before the manager's ack would lose it")
            return False
        return True

    def forget(self, run_id: str) -> None:
        """The manager acked the run: its file goes."""
        if self.directory is not None:
            self._path(run_id).unlink(missing_ok=True)

    def load(self) -> list[RunReport]:
        """Every final report kept by an earlier agent; bad files are logged and skipped."""
        if self.directory is None:
            return []
        reports: list[RunReport] = []
        try:
            paths = sorted(self.directory.iterdir())
        except OSError as exc:
            log.warning("cannot list finished runs in %s (%s); none reported", self.directory,
                        exc.strerror or exc)
            return []
        for path in paths:
            report = self._read(path)
            if report is not None:
                reports.append(report)
        if reports:
            log.info("%d finished run(s) from before this start will be reported: %s",
                     len(reports), ", ".join(r.run_id for r in reports[:10]))
        return reports

    def _read(self, path: Path) -> RunReport | None:
        if path.name.endswith(SUFFIX + ".tmp"):
            # Torn by a crash before its rename: its update was never sent either.
            log.warning("removing %s, a finished run's file left half-written by a crash", path)
            path.unlink(missing_ok=True)
            return None
        if not path.name.endswith(SUFFIX):
            log.warning("ignoring %s in the finished-runs folder: not a %s file", path, SUFFIX)
            return None
        try:
            msg = codec.decode([_TYPE, path.read_bytes()])
        except (OSError, ProtocolError) as exc:
            log.warning("ignoring %s: not a readable finished run (%s)", path, exc)
            return None
        assert isinstance(msg, RunUpdate)
        if not msg.run.state.final or self._path(msg.run.run_id) != path:
            log.warning("ignoring %s: it holds run %r in state %s, not a finished run of "
                        "that name", path, msg.run.run_id[:80], msg.run.state.value)
            return None
        return msg.run

    def _path(self, run_id: str) -> Path:
        assert self.directory is not None
        # Run ids come from the manager: one that is not a safe file name is hashed.
        name = run_id if _SAFE_NAME.match(run_id) else hashlib.sha256(
            run_id.encode()).hexdigest()
        return self.directory / (name + SUFFIX)

    def _sync_folder(self) -> None:
        assert self.directory is not None
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # the rename itself survives a power cut only once the folder is synced
        finally:
            os.close(fd)
