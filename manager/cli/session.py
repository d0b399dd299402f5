"""How the CLI reaches the manager, and the one ZeroMQ context a command uses.

``--manager HOST:PORT`` (or ``PTAP_MANAGER``) names the manager's ROUTER
port; its PUB port is the next one (docs/protocol.md, "Ports"). ``--keys DIR``
(or ``PTAP_KEYS``) names a CURVE manager's ``keys_dir``: every request and
subscription then uses ``DIR/admin.key_secret`` and the manager's
``DIR/server.key``. Without them, :mod:`manager.cli.discovery` looks for the
local cluster's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# Re-exported: commands import them from here.
from manager.cli.address import DEFAULT_MANAGER as DEFAULT_MANAGER
from manager.cli.address import EXIT_FAILURE as EXIT_FAILURE
from manager.cli.address import EXIT_UNREACHABLE as EXIT_UNREACHABLE
from manager.cli.address import EXIT_USAGE as EXIT_USAGE
from manager.cli.address import CliError as CliError
from manager.cli.address import Endpoint as Endpoint
from manager.cli.address import parse_manager as parse_manager

# ZeroMQ, msgpack and the message classes are imported when a command needs
# them, not at start-up: `ptap --help`, a usage error and tab completion then
# cost Python's start and argparse alone.
if TYPE_CHECKING:
    import zmq.asyncio

    from bus.client import ManagerClient
    from bus.key_files import CurveKeys
    from manager.cli.discovery import Target

DEFAULT_TIMEOUT = 3.0


def admin_keys(directory: str, source: str = "") -> CurveKeys:
    """The administrator's CURVE keys from a manager's ``keys_dir`` (``--keys DIR``, or
    where ``source`` says it was found)."""
    from bus.key_files import KeyFileError, client_keys, load_public, public_path  # noqa: PLC0415

    path = Path(directory)
    server = public_path(path, "server")
    where = f"--keys {directory}" if source in ("", "--keys") else f"keys in {directory} ({source})"
    try:
        if not server.exists():
            raise CliError(f"{where}: no {server} — pass the manager's [security] keys_dir "
                           "(or a copy of its server.key and admin.key_secret)", EXIT_USAGE)
        return client_keys(path, "admin", load_public(server))
    except KeyFileError as exc:
        raise CliError(f"{where}: {exc}", EXIT_USAGE) from None
    except OSError as exc:  # not ours to read (another user's keys), or not a file
        raise CliError(f"{where}: cannot read {exc.filename or path}: "
                       f"{exc.strerror or exc} — use a keys folder of your own "
                       "(--keys DIR)", EXIT_USAGE) from None


class Session:
    """What one command needs to reach the manager. Create it inside the event loop.

    With ``target.keys_dir`` it talks CURVE with the administrator's key from there.
    """

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.endpoint = target.endpoint
        self.timeout = timeout
        self.curve: CurveKeys | None = (admin_keys(target.keys_dir, target.keys_from)
                                        if target.keys_dir else None)
        self._ctx: zmq.asyncio.Context | None = None

    @property
    def ctx(self) -> zmq.asyncio.Context:
        """The command's asyncio context, made on first use (a one-shot command,
        manager/cli/oneshot.py, never makes one)."""
        if self._ctx is None:
            import zmq.asyncio  # noqa: PLC0415 - see the module's imports

            self._ctx = zmq.asyncio.Context()
        return self._ctx

    def client(self) -> ManagerClient:
        from bus.client import ManagerClient  # noqa: PLC0415

        return ManagerClient(self.endpoint.router, timeout=self.timeout, ctx=self.ctx,
                             curve=self.curve)

    def close(self) -> None:
        # linger 0: a command that gives up must not hang on unsent requests.
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
