"""The dashboard's CURVE keys (``[security]``), and what it says when CURVE may be why
the manager does not answer.

With ``curve = yes`` the dashboard acts as the manager's administrator, as
``ptap --keys DIR`` does: its requests and its PUB subscription use the key
pair ``admin.key``/``admin.key_secret`` and the manager's ``server.key``, all
in ``keys_dir`` (the manager's ``[security] keys_dir``, or a copy of those
three files; layout in ``manager/keys.py``). The files are read with
:mod:`bus.security`, which refuses a secret key others can read (docs/architecture.md#security).

Every problem with them stops start-up with one line (a :class:`StartupError`)
that says which file and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq.asyncio

from bus import handshake
from bus.client import ManagerClient
from bus.daemon import StartupError
from bus.errors import ManagerUnreachable
from bus.messages import Message
from bus.security import KeyFileError, client_keys, load_public, public_path
from bus.sockets import CurveKeys
from config.schema import DashboardSecurity

#: What to do when keys_dir is not the manager's, said after each problem.
WHAT_TO_DO = ("set [security] keys_dir to the manager's [security] keys_dir "
              "(or a copy of its server.key, admin.key and admin.key_secret)")


def dashboard_keys(sec: DashboardSecurity) -> CurveKeys | None:
    """The administrator's keys from ``[security] keys_dir``, or None without CURVE."""
    if not sec.curve:
        return None
    if not sec.keys_dir.strip():
        raise StartupError(f"[security] curve = yes but keys_dir is empty — {WHAT_TO_DO}")
    directory = Path(sec.keys_dir)
    where = f"[security] keys_dir = {directory}"
    server = public_path(directory, "server")
    if not server.is_file():
        raise StartupError(f"{where}: no manager public key {server} — {WHAT_TO_DO}")
    try:
        # bus.security refuses a loose secret file and a key that is not a CURVE key.
        keys = client_keys(directory, "admin", load_public(server))
    except KeyFileError as exc:
        raise StartupError(f"{where}: {exc}") from None
    except (OSError, ValueError) as exc:  # e.g. admin.key_secret is a folder, or garbled
        raise StartupError(f"{where}: cannot read the admin key pair: {_reason(exc)} — "
                           f"{WHAT_TO_DO}") from None
    return keys


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def curve_hint(keys: CurveKeys | None) -> str:
    """Why a manager may not answer the dashboard, as far as ``[security]`` goes."""
    if keys is None:
        return ("if the manager uses CURVE, set [security] curve = yes and keys_dir "
                "(its keys_dir) in the dashboard's config")
    return ("the dashboard uses CURVE ([security] curve = yes): the manager must too, "
            "and [security] keys_dir must be its keys_dir")


#: Outcomes whose libzmq code says more than the words do.
_CODE_TELLS = (handshake.Outcome.HUNG_UP, handshake.Outcome.NOT_ZMTP)


def handshake_problem(event: int, value: int, address: str, curve: bool) -> str:
    """One line on a failed ZeroMQ handshake with the manager (a socket monitor's
    ``event`` and ``value``): what the event establishes (:mod:`bus.handshake`),
    with libzmq's code, and what to change.

    libzmq does not retry a handshake the peer refused, so every fix ends with
    a restart of the dashboard.
    """
    outcome = handshake.classify(event, value)
    code = handshake.code_name(event, value) if outcome in _CODE_TELLS else ""
    what = handshake.cause(outcome, f"the manager at {address}", "the dashboard", curve, code)
    if outcome is handshake.Outcome.REFUSED:
        fix = WHAT_TO_DO
        what = f"the manager at {address} refused the dashboard's key (ZAP status {value})"
    elif outcome is handshake.Outcome.NOT_ZMTP:
        fix = "check that [remote-server] server_ip and server_port name a ptap manager"
    elif curve:
        fix = "set [security] curve = no here, or curve = yes in its server.cfg"
        if outcome is handshake.Outcome.HUNG_UP:
            fix += f"; or {WHAT_TO_DO}"
    else:
        fix = "set [security] curve = yes and keys_dir (its keys_dir) in the dashboard's config"
    return f"{what} — {fix}, then restart the dashboard"


class Unreachable(ManagerUnreachable):
    """:class:`ManagerUnreachable` that also says how ``[security]`` may be the cause."""

    def __init__(self, address: str, timeout: float, hint: str) -> None:
        super().__init__(address, timeout)
        self.hint = hint

    def __str__(self) -> str:
        return f"{super().__str__()} — {self.hint}"


class DashboardClient(ManagerClient):
    """The bus client with the dashboard's keys; a request with no reply raises
    :class:`Unreachable`, whose text every page shows as it is."""

    def __init__(self, address: str, *, timeout: float, ctx: zmq.asyncio.Context,
                 curve: CurveKeys | None) -> None:
        super().__init__(address, timeout=timeout, ctx=ctx, curve=curve)
        self.hint = curve_hint(curve)

    async def request(self, msg: Message, timeout: float | None = None) -> Any:
        try:
            return await super().request(msg, timeout)
        except ManagerUnreachable as exc:
            raise Unreachable(exc.address, exc.timeout, self.hint) from None
