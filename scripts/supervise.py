"""Keep one ptap daemon running: restart it when it fails, with a back-off.

    supervise.py NAME --pidfile FILE [options] -- COMMAND [ARG...]
    supervise.py NAME --pidfile FILE --adopt PATTERN [options] -- START-COMMAND [ARG...]

``scripts/start-all`` runs one supervisor per daemon (manager, agent,
dashboard, influxd), in the daemon's session and with the daemon's log as its
stdout and stderr, so its lines land beside the daemon's own. Where systemd
runs, the units in ``scripts/systemd/`` do the same job.

When to restart is systemd's ``Restart=on-failure``: a daemon that exits 0, or
is ended by SIGTERM, SIGINT, SIGHUP or SIGPIPE, was stopped on purpose and is
not restarted (the supervisor then ends too). Any other end (a non-zero
status, SIGKILL, SIGSEGV, ...) is restarted after ``--delay`` seconds; each
failure that follows a run shorter than ``--healthy-after`` seconds doubles
the delay, up to ``--max-delay``, so a daemon that dies at once costs one
start per ``--max-delay``, never a busy loop. A run that lasted
``--healthy-after`` seconds resets the delay. Each restart is one log line
(what ended, how, after how long, and when it comes back).

``--adopt PATTERN`` is for a daemon that START-COMMAND starts in the background
and names in FILE (influxd, started by ``scripts/influxdb_local.py``): the
supervisor watches the pid in FILE (a live process whose command line holds
PATTERN) and, when it dies, runs START-COMMAND again. Such a daemon is not our
child, so how it ended cannot be known: every end we did not ask for counts as
a failure.

SIGTERM or SIGINT to the supervisor stop the daemon (SIGTERM, then SIGKILL
after ``--stop-timeout`` seconds), and then the supervisor; nothing restarts.
The daemon's pid is in FILE while it runs (``scripts/stop-all`` and start-all
read it); between a death and its restart FILE still names the dead pid.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ptap-supervise")

#: How systemd's Restart=on-failure tells "stopped on purpose" from a crash.
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


class StartFailed(Exception):
    """The daemon could not be started this time (the message says why)."""


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number ``failures`` of a run of quick failures."""

    first: float = 0.5
    cap: float = 30.0
    healthy_after: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.first * 2 ** max(0, failures - 1)))


class StopRequests:
    """SIGTERM and SIGINT as a flag plus a file descriptor that ``select`` can wait on.

    The handler only sets the flag; Python also writes the signal number to the
    wakeup pipe, so a signal that arrives just before ``select`` still wakes it.
    """

    def __init__(self) -> None:
        self.requested = False
        self._read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.requested = True

    def wait(self, fd: int | None, timeout: float | None) -> bool:
        """Until ``fd`` is readable (True), a stop request or ``timeout`` (False)."""
        watched = [self._read_fd] if fd is None else [self._read_fd, fd]
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requested:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(watched, [], [], left)
            if fd is not None and fd in ready:
                return True
            if self._read_fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._read_fd, 512)
            elif not ready:
                return False
        return False


def describe_end(status: int | None) -> str:
    """``exited with status 1``, ``was killed by SIGKILL``, or the unknown end of an adopted pid."""
    if status is None:
        return "ended"
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-status).name}"
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


def failed(status: int | None) -> bool:
    """True unless the end looks deliberate (status 0, or one of :data:`CLEAN_SIGNALS`)."""
    if status is None:
        return True
    if status < 0:
        return -status not in {int(s) for s in CLEAN_SIGNALS}
    return status != 0


def name_process(name: str) -> None:
    """``ps``, ``top`` and ``/proc/PID/comm`` show ``name`` (prctl PR_SET_NAME, 15 bytes).

    The same as ``bus.daemon.set_process_name``, repeated here on purpose: the
    supervisor imports nothing of ptap (nor, through it, asyncio), so it keeps
    running whatever state the code it restarts is in, in 16 MB instead of 23.
    """
    pr_set_name = 15
    with contextlib.suppress(OSError, AttributeError):  # not Linux: keep the name
        ctypes.CDLL(None).prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def write_pidfile(path: Path, pid: int) -> None:
    """Replace ``path`` at once: a reader never sees a half-written pid."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def remove_pidfile(path: Path, pid: int) -> None:
    """Remove ``path`` if it still names ``pid`` (a newer start may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().split()[0]) == pid:
            path.unlink()


def pid_matches(pid: int, pattern: str) -> bool:
    """A live (not zombie) process whose command line holds ``pattern``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z" and pattern.encode() in cmdline


def open_pidfd(pid: int) -> int | None:
    """A pidfd that becomes readable when ``pid`` ends; None if it has ended already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


class Child:
    """A daemon that is our child: we start COMMAND and see how it ends."""

    def __init__(self, command: list[str], pidfile: Path) -> None:
        self.command = command
        self.pidfile = pidfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        try:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise StartFailed(f"cannot run {self.command[0]}: {exc}") from exc
        write_pidfile(self.pidfile, self.proc.pid)
        return self.proc.pid

    def status(self) -> int | None:
        """How it ended (this also reaps it)."""
        assert self.proc is not None
        return self.proc.wait()


class Adopted:
    """A daemon that START-COMMAND leaves running in the background and names in FILE."""

    def __init__(self, command: list[str], pidfile: Path, pattern: str) -> None:
        self.command = command
        self.pidfile = pidfile
        self.pattern = pattern

    def named(self) -> int | None:
        """The pid in FILE if that process is alive and matches PATTERN."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_matches(pid, self.pattern) else None

    def start(self) -> int:
        pid = self.named()
        if pid is not None:  # the one start-all started: watch it
            return pid
        done = subprocess.run(self.command, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise StartFailed(f"{Path(self.command[0]).name} exited with status {done.returncode}")
        pid = self.named()
        if pid is None:
            raise StartFailed(f"{self.pidfile} names no live {self.pattern} after the start")
        return pid

    def status(self) -> int | None:
        return None  # not our child: how it ended is not ours to know


class Supervisor:
    """Start, watch, restart with back-off; stop on request (see the module docstring)."""

    def __init__(self, name: str, target: Child | Adopted, backoff: Backoff,
                 stop_timeout: float) -> None:
        self.name = name
        self.target = target
        self.backoff = backoff
        self.stop_timeout = stop_timeout
        self.requests = StopRequests()
        self.restarts = 0
        self.pid: int | None = None

    def run(self) -> int:
        """Until a stop request or a deliberate end of the daemon; the exit status."""
        failures = 0
        while not self.requests.requested:
            try:
                self.pid = pid = self.target.start()
            except StartFailed as exc:
                failures += 1
                self.pause(f"{self.name} did not start: {exc}", failures)
                continue
            started = time.monotonic()
            ended, status = self.watch(pid)
            if not ended:
                return 0
            ran = time.monotonic() - started
            if not failed(status):
                log.info("%s (pid %d) %s after %.1f s: stopped on purpose, so it is not "
                         "restarted and its supervisor ends", self.name, pid,
                         describe_end(status), ran)
                return 0
            failures = 1 if ran >= self.backoff.healthy_after else failures + 1
            self.pause(f"{self.name} (pid {pid}) {describe_end(status)} after {ran:.1f} s",
                       failures)
        return 0

    def watch(self, pid: int) -> tuple[bool, int | None]:
        """``(True, status)`` once ``pid`` ends; ``(False, None)`` after stopping it on request."""
        pidfd = open_pidfd(pid)
        try:
            if pidfd is not None and not self.requests.wait(pidfd, None):
                self.stop(pid, pidfd)
                return False, None
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return True, self.target.status()

    def pause(self, what: str, failures: int) -> None:
        """One log line for this restart, then the back-off (cut short by a stop request)."""
        delay = self.backoff.delay(failures)
        self.restarts += 1
        why = ""
        if failures > 1:
            why = (f"; {failures} failures in a row, each within "
                   f"{self.backoff.healthy_after:g} s of its start")
            if delay >= self.backoff.cap:
                why += f", so it waits the most it ever does ({self.backoff.cap:g} s)"
        log.warning("%s; restart %d in %g s%s", what, self.restarts, delay, why)
        self.requests.wait(None, delay)

    def stop(self, pid: int, pidfd: int) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; waits for the end, reaps a child."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not select.select([pidfd], [], [], self.stop_timeout)[0]:
            log.warning("%s (pid %d) ignored SIGTERM for %g s; killing it", self.name, pid,
                        self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            select.select([pidfd], [], [], 5.0)
        status = self.target.status()
        log.info("%s (pid %d) %s: stopped by its supervisor", self.name, pid,
                 describe_end(status))


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options before ``--``, the command after it."""
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SystemExit("supervise.py: no command — usage: supervise.py NAME --pidfile FILE "
                         "[options] -- COMMAND [ARG...]")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(prog="supervise.py", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("name", help="the daemon's name in log lines")
    parser.add_argument("--pidfile", required=True, type=Path, help="the daemon's pid file")
    parser.add_argument("--supervisor-pidfile", type=Path, help="where to write our own pid")
    parser.add_argument("--adopt", metavar="PATTERN",
                        help="COMMAND starts the daemon in the background; watch the pid in "
                             "--pidfile (whose command line holds PATTERN)")
    parser.add_argument("--delay", type=float, default=Backoff.first,
                        help="seconds before the first restart (default %(default)s)")
    parser.add_argument("--max-delay", type=float, default=Backoff.cap,
                        help="the most the delay grows to (default %(default)s)")
    parser.add_argument("--healthy-after", type=float, default=Backoff.healthy_after,
                        help="a run this long resets the delay (default %(default)s)")
    parser.add_argument("--stop-timeout", type=float, default=15.0,
                        help="seconds between SIGTERM and SIGKILL on stop (default %(default)s)")
    return parser.parse_args(argv[:cut]), argv[cut + 1:]


def main(argv: list[str] | None = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name_process("ptap-supervise")
    target: Child | Adopted = (Adopted(command, args.pidfile, args.adopt) if args.adopt
                               else Child(command, args.pidfile))
    backoff = Backoff(args.delay, args.max_delay, args.healthy_after)
    supervisor = Supervisor(args.name, target, backoff, args.stop_timeout)
    me = os.getpid()
    if args.supervisor_pidfile:
        write_pidfile(args.supervisor_pidfile, me)
    log.info("supervising %s: restarted when it fails, after %g s, doubling to %g s while it "
             "keeps failing within %g s of its start", args.name, backoff.first, backoff.cap,
             backoff.healthy_after)
    try:
        return supervisor.run()
    finally:
        if supervisor.pid is not None:
            remove_pidfile(args.pidfile, supervisor.pid)
        if args.supervisor_pidfile:
            remove_pidfile(args.supervisor_pidfile, me)


if __name__ == "__main__":
    sys.exit(main())
