"""The manager's address as the CLI is given it, and the CLI's own failures.

Apart from :mod:`manager.cli.session` so that :mod:`manager.cli.discovery`, which
:mod:`manager.cli.session` names for its types, needs nothing of ``session``.
"""

from __future__ import annotations

import os

from bus.errors import PtapError
from bus.ports import MAX_ROUTER_PORT, PUB_OFFSET, ManagerAddress

DEFAULT_MANAGER = "127.0.0.1:14321"

#: Exit statuses of the CLI itself (``run --wait`` passes the job's on).
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 75  # sysexits EX_TEMPFAIL: "try again later"


class CliError(PtapError):
    """A failure the user can act on; ``str()`` is one line, hint included."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: The manager's host and ROUTER port; PUB and PULL follow from it.
Endpoint = ManagerAddress


def parse_manager(text: str | None) -> Endpoint:
    """``HOST:PORT`` or ``tcp://HOST:PORT`` → :class:`Endpoint`; ``None`` uses the default."""
    if not text:
        text = os.environ.get("PTAP_MANAGER") or DEFAULT_MANAGER
    raw = text.strip().removeprefix("tcp://")
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise CliError(f"--manager {text!r} is not HOST:PORT — e.g. --manager 127.0.0.1:14321",
                       EXIT_USAGE)
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 1 <= port <= MAX_ROUTER_PORT:
        raise CliError(f"--manager {text!r}: port must be 1–{MAX_ROUTER_PORT} "
                       f"(PUB uses port+{PUB_OFFSET}) — "
                       "e.g. --manager 127.0.0.1:14321", EXIT_USAGE)
    return Endpoint(host, port)
