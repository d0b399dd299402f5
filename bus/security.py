"""Making CURVE key pairs, and the ZAP authenticator shared by every ptap process.

Reading key files is :mod:`bus.key_files` (re-exported here), which the CLI
uses without this module's imports.

:class:`Gatekeeper` runs pyzmq's asyncio ZAP authenticator in the caller's
context and asks a policy callback about each connecting key, per ZAP domain.
Two ways in which CURVE fails *open* are closed here:

* without a ZAP handler, libzmq accepts every client key. The gatekeeper is
  started before any socket binds, and :meth:`Gatekeeper.check` proves it
  answers by connecting with a throw-away key that the policy must refuse;
* a dead authenticator task would leave that state behind, so the owner
  watches :attr:`Gatekeeper.task` and stops when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.auth

from bus.errors import PtapError
from bus.key_files import CurveKeys as CurveKeys
from bus.key_files import KeyFileError as KeyFileError
from bus.key_files import client_keys as client_keys
from bus.key_files import key_problem as key_problem
from bus.key_files import load_keypair as load_keypair
from bus.key_files import load_public as load_public
from bus.key_files import public_path as public_path
from bus.key_files import secret_path as secret_path

if TYPE_CHECKING:
    # The Gatekeeper's, imported where it is made: a process that only makes
    # keys (ensure_keypair) has no event loop, and asyncio costs ~15 ms.
    import asyncio

    import zmq.asyncio

log = logging.getLogger(__name__)


class AuthenticatorStopped(PtapError):
    """The ZAP authenticator ended: a server must stop rather than let every key in."""


def ensure_keypair(directory: Path, name: str) -> tuple[bytes, bytes]:
    """Load ``NAME`` from ``directory``, creating the pair first if it is missing."""
    directory = Path(directory)
    if not secret_path(directory, name).exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        old = os.umask(0o077)  # the secret file must never exist with looser modes
        try:
            zmq.auth.create_certificates(str(directory), name)
        finally:
            os.umask(old)
        log.info("created CURVE key pair %s", secret_path(directory, name))
    return load_keypair(directory, name)


def peer_key(frame: zmq.Frame) -> bytes | None:
    """The z85 public key ZAP authenticated for the connection ``frame`` came in on
    (its ``User-Id``), or None when the message carries none (no CURVE)."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return user.encode() if isinstance(user, str) and user else None


def peer_address(frame: zmq.Frame) -> str:
    """The remote IP address of the connection ``frame`` came in on (libzmq's
    ``Peer-Address``), or "" when the transport gives none."""
    try:
        address = frame.get("Peer-Address")
    except zmq.ZMQError:
        return ""
    return address if isinstance(address, str) else ""


#: ``policy(domain, z85_public_key) -> bool``: may this key connect to that socket?
Policy = Callable[[str, bytes], bool]


class _Provider:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            return bool(self.policy(domain, key))
        except Exception:  # a policy bug must deny, never allow
            log.exception("CURVE policy failed for domain %s; denying", domain)
            return False


class Gatekeeper:
    """ZAP authenticator in ``ctx`` that defers every CURVE decision to ``policy``.

    ``domains`` lists the ZAP domains of the server sockets; a connection to
    a socket of any other domain is refused.
    """

    def __init__(self, ctx: zmq.asyncio.Context, policy: Policy,
                 domains: tuple[str, ...]) -> None:
        from zmq.auth.asyncio import AsyncioAuthenticator  # noqa: PLC0415 - see the imports

        self.ctx = ctx
        self.auth = AsyncioAuthenticator(ctx)
        provider = _Provider(policy)
        for domain in domains:
            self.auth.configure_curve_callback(domain, credentials_provider=provider)

    def start(self) -> None:
        self.auth.start()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The authenticator's task (None before :meth:`start`): if it ends, CURVE no
        longer checks anything."""
        # AsyncioAuthenticator keeps it in a name-mangled private attribute.
        return getattr(self.auth, "_AsyncioAuthenticator__task", None)

    async def check(self, endpoint: str, server_public: bytes, domain: str,
                    kind: int = zmq.DEALER, timeout: float = 2.0) -> None:
        """Fail unless a random key is refused at ``endpoint`` (ZAP really answers).

        ``kind`` is the probe's socket type, one the server's type accepts
        (DEALER for ROUTER, SUB for PUB, PUSH for PULL): with a mismatched pair
        libzmq drops the connection without telling why, and the check would
        time out. Raises :class:`KeyFileError` if the throw-away key got through.
        """
        import asyncio  # noqa: PLC0415 - see the imports

        from zmq.utils.monitor import parse_monitor_message  # noqa: PLC0415

        public, secret = zmq.curve_keypair()
        probe = self.ctx.socket(kind)
        probe.curve_publickey, probe.curve_secretkey = public, secret
        probe.curve_serverkey = server_public
        monitor = probe.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        try:
            probe.connect(endpoint)
            async with asyncio.timeout(timeout):
                event = parse_monitor_message(await monitor.recv_multipart())
        except TimeoutError:
            raise KeyFileError(f"CURVE self-check on {domain}: no handshake in "
                               f"{timeout:g} s") from None
        finally:
            with contextlib.suppress(zmq.ZMQError):
                probe.disable_monitor()
            monitor.close(linger=0)
            probe.close(linger=0)
        if event["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise KeyFileError(f"CURVE self-check on {domain}: an unknown key was let in "
                               "— the authenticator is not working; refusing to serve")

    def stop(self) -> None:
        self.auth.stop()
