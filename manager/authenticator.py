"""The manager as a CURVE server: its ZAP authenticator and what keeps it honest.

With ``[security] curve = yes`` (docs/architecture.md#security) every socket is a CURVE server
whose ZAP domain (:data:`DOMAINS`) the :class:`manager.keys.KeyStore` policy
decides on. libzmq lets every key in when no authenticator answers, so the
manager starts it before anything binds, proves that it refuses a throw-away
key before serving (:func:`prove_refusal`), and stops if it ever ends
(:func:`check_running`). Without CURVE the bus must stay on loopback unless
the operator says otherwise (:func:`refuse_open_bus`).

Per-message decisions by key are ``manager/authorization.py``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq
import zmq.asyncio

from bus.daemon import StartupError
from bus.security import AuthenticatorStopped, Gatekeeper
from bus.sockets import CurveKeys
from config.schema import ServerConfig
from manager.keys import KeyState, KeyStore

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: ZAP domains of the ROUTER, PUB and PULL sockets (see KeyStore.allowed).
DOMAINS = {"router": "ptap.router", "pub": "ptap.pub", "pull": "ptap.pull"}


def refuse_open_bus(cfg: ServerConfig) -> None:
    """Raise :class:`StartupError` for a bus off loopback without CURVE, unless allowed."""
    sec = cfg.security
    if cfg.basic.bind_addr not in LOOPBACK and not sec.curve and not sec.allow_insecure:
        # Jobs are remote execution: an unauthenticated bus must not be
        # reachable from other hosts by accident (docs/architecture.md#security).
        raise StartupError(
            f"[basic] bind_addr = {cfg.basic.bind_addr} is not loopback and CURVE is "
            "off: anyone reaching it could run commands on every node — set [security] "
            "curve = yes, or bind 127.0.0.1, or set allow_insecure = yes on an "
            "isolated lab network"
        )


def server_keys(keys: KeyStore | None, which: str) -> CurveKeys | None:
    """The CURVE server keys for socket ``which`` (``router``/``pub``/``pull``), or
    None without CURVE."""
    if keys is None:
        return None
    return CurveKeys(keys.server_public, keys.server_secret, domain=DOMAINS[which])


async def prove_refusal(gate: Gatekeeper, keys: KeyStore, ctx: zmq.asyncio.Context,
                        bind_addr: str, address: Callable[[str], str]) -> None:
    """Refuse to serve unless ZAP really refuses an unknown key on PUB and PULL.

    ``address(which)`` is where a local peer connects to socket ``which``.
    """
    if ":" in bind_addr:
        ctx.setsockopt(zmq.IPV6, 1)  # the probe connects to an IPv6 address
    for which, probe in (("pub", zmq.SUB), ("pull", zmq.PUSH)):
        await gate.check(address(which), keys.server_public, DOMAINS[which], probe)


def check_running(gate: Gatekeeper | None) -> None:
    """Fail closed: without its authenticator libzmq lets every CURVE key in.

    Raises :class:`AuthenticatorStopped` once a started gate has ended.
    """
    task = gate.task if gate is not None else None
    if gate is None or (task is not None and not task.done()):
        return
    why = ("it was never started" if task is None else "it was cancelled"
           if task.cancelled() else f"it failed: {task.exception()!r}")
    raise AuthenticatorStopped(
        f"the CURVE authenticator stopped ({why}); stopping the manager rather than "
        "let unchecked keys in — see the log above, then start ptap-manager again")


def log_status(cfg: ServerConfig, keys: KeyStore | None) -> None:
    """Say at start-up how many agent keys are accepted of how many allowed, and who
    auto_accept admits; or warn of a bus anyone may reach."""
    if keys is not None:
        sec = cfg.security
        accepted = keys.count(KeyState.ACCEPTED)
        auto = (f"; new keys from {', '.join(sec.auto_accept_from)} accepted at once"
                if sec.auto_accept and sec.auto_accept_from else
                "; auto_accept is on but auto_accept_from is empty, so new keys wait"
                if sec.auto_accept else "")
        log.info("CURVE on: keys in %s (%d of at most %d agents accepted, %d pending, "
                 "%d revoked%s)", keys.dir, accepted, sec.max_nodes,
                 keys.count(KeyState.PENDING), keys.count(KeyState.REVOKED), auto)
        if accepted > sec.max_nodes:
            log.warning("%d agent keys are accepted, more than [security] max_nodes = %d: "
                        "they stay accepted, but no other key is until some are revoked "
                        "(ptap keys revoke NODE) or max_nodes is raised", accepted,
                        sec.max_nodes)
    elif cfg.basic.bind_addr not in LOOPBACK:
        log.warning(
            "bus on %s has no CURVE: anyone who reaches it can run commands on every node",
            cfg.basic.bind_addr,
        )
