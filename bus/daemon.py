"""What every ptap daemon (manager, agent, dashboard) does the same way at start-up.

Common flags, logging, turning ``--set section.key=value`` into config
overrides, and running the main coroutine until SIGTERM or SIGINT. Expected
failures (a bad config, a busy port) end the process with one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bus.errors import PtapError

log = logging.getLogger(__name__)


class StartupError(PtapError):
    """A daemon cannot start; the message is shown to the user as one line."""


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="configuration file")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides", help="override one config key (repeatable)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["basic.bind_port=0"]`` → ``{"basic.bind_port": "0"}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or "." not in name:
            raise StartupError(f"--set {pair!r}: expected SECTION.KEY=VALUE")
        out[name.strip()] = value.strip()
    return out


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


#: prctl(2) option that names the calling thread; the main thread's name is
#: the process's ``comm``.
_PR_SET_NAME = 15
#: The kernel keeps a ``comm`` of at most 15 bytes (and a NUL).
_COMM_MAX = 15


def set_process_name(name: str) -> None:
    """Show this process as ``name`` in ``ps``, ``top`` and ``/proc/PID/comm``.

    Started as ``python -m manager.main`` a daemon would otherwise be one more
    ``python`` among the jobs' interpreters. Threads started afterwards inherit
    the name. Best effort: without Linux's prctl the name is left as it is.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no prctl in the C library
        return
    prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:_COMM_MAX]), 0, 0, 0)


def settle_heap() -> None:
    """Once start-up is done, take what is alive now (modules, classes, config: what
    lives as long as the process) out of the cyclic collector's sight.

    A full collection walks every object it tracks, and a daemon's start-up makes
    most of them, none ever garbage: in the manager serving 1,000 agents one such
    pass took up to 31 ms of CPU (10 ms once frozen), and a pause lands in whatever
    request is being served (a job's dispatch). Objects made later are collected as before; frozen ones are still
    freed when their last reference goes.
    """
    gc.collect()
    gc.freeze()


#: The umask a daemon was started with, before :func:`run` set its own; the
#: agent gives it back to the jobs it runs.
INHERITED_UMASK = os.umask(0o022)
os.umask(INHERITED_UMASK)


def run(prog: str, main: Callable[[], Awaitable[None]],
        expected: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``main()`` on a fresh asyncio loop until it returns or a stop signal arrives.

    ``expected`` lists exception types (besides :class:`PtapError` and
    ``OSError``) that mean "cannot start": they become one line and exit 2.
    Everything a daemon creates (state database and its WAL, spools, keys,
    logs it opens) is its owner's alone: job environments, commands and keys
    are in there. The process is named ``prog`` (:func:`set_process_name`).
    """
    set_process_name(prog)
    os.umask(0o077)
    catch: tuple[type[BaseException], ...] = (PtapError, OSError, *expected)
    try:
        asyncio.run(_until_signalled(main))
    except catch as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0


async def _until_signalled(main: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("stopped by signal")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
