"""With CURVE: who may send what, and which agent keys are admitted (docs/architecture.md#security).

Every check here goes by the key ZAP authenticated for the connection
(``User-Id``), never by the name a peer claims, and :class:`~manager.keys.KeyStore`
says whose that key is:

- a ROUTER client request needs an administrator's key (:func:`authorize`);
- ``heartbeat`` and ``run.update`` need the key accepted for the node that
  routing id registered as (:func:`authorize`, :func:`speaks_for_its_node`);
- ``agent.register`` is admitted Salt-style by :func:`admit_agent`; with
  ``auto_accept`` a new key is accepted at once only from ``auto_accept_from``
  and below ``max_nodes`` (:func:`auto_accept_hold`), and a revoked key is
  refused until ``ptap keys accept`` (:func:`accept_refusal` keeps that within
  ``max_nodes`` too);
- runs go only to a node whose key is still accepted (:func:`may_dispatch`);
- a metric batch counts only from an agent's key, for its own node
  (:func:`batch_allowed`).

A key rejected or revoked while connected keeps its ZeroMQ connection, so
these checks, not the handshake alone, are what take its node away. With
CURVE off (``mgr.keys`` is None) none of this is consulted.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bus import codec
from bus.errors import ErrorCode
from bus.messages import Message, MsgType
from config.schema import ServerSecurity
from manager.keys import KeyState, KeyStore, Principal, Role

if TYPE_CHECKING:
    from manager.server import Manager

log = logging.getLogger(__name__)

#: Messages only a registered agent may send (anything else is a client request).
AGENT_ONLY = frozenset({MsgType.HEARTBEAT, MsgType.RUN_UPDATE})
#: With CURVE, only an administrator's key may send these.
CLIENT_REQUESTS = frozenset({MsgType.NODES_LIST, MsgType.NODE_FORGET, MsgType.JOB_SUBMIT,
                             MsgType.JOBS_LIST, MsgType.JOB_GET, MsgType.JOB_CANCEL, MsgType.KEYS,
                             MsgType.REPORT_GET, MsgType.COMPARE_GET, MsgType.HISTORY_GET,
                             MsgType.STATUS_GET})
#: Unknown keys filed as pending at most: anyone may ask, so asking must not fill the disk.
MAX_PENDING_KEYS = 1000
NOT_AUTHORIZED = ("this key may not do that; use the manager's admin key "
                  "(keys_dir/admin.key_secret) with ptap --keys DIR")


def principal(mgr: Manager, key: bytes | None) -> Principal:
    """Whose ``key`` is (unknown without one)."""
    assert mgr.keys is not None
    return mgr.keys.who(key) if key is not None else Principal(Role.UNKNOWN)


def speaks_for_its_node(mgr: Manager, peer: bytes, key: bytes | None) -> bool:
    """Without CURVE, yes. With it, a routing id registered as a node proves that
    node alive only with the key accepted for it (a key rejected or revoked
    while connected keeps its connection, but not its node)."""
    if mgr.keys is None:
        return True
    node = mgr.registry.node_for(peer)
    return node is None or principal(mgr, key) == Principal(Role.AGENT, node.name)


async def authorize(mgr: Manager, peer: bytes, msg: Message, key: bytes | None) -> bool:
    """With CURVE: may this connection's key send ``msg``? Answers ``not-authorized`` if not.

    Client requests need an administrator's key; ``heartbeat`` and ``run.update``
    the key accepted for the node this routing id registered as.
    ``agent.register`` is decided by :func:`admit_agent`.
    """
    who = principal(mgr, key)
    if msg.TYPE in CLIENT_REQUESTS:
        allowed, why = who.role is Role.ADMIN, NOT_AUTHORIZED
    elif msg.TYPE in AGENT_ONLY:
        node = mgr.registry.node_for(peer)
        name = node.name if node is not None else "?"
        allowed = who == Principal(Role.AGENT, name)
        why = (f"this key is no longer accepted for node {name}; see ptap keys list "
               "on the manager")
    else:
        return True
    if not allowed:
        mgr.bad_frames.warn("not-authorized", f"refused {msg.TYPE.value} from peer {peer.hex()}: "
                            f"key {_short(key)} is {who.role.value}"
                            f"{' of node ' + who.node if who.node else ''}",
                            time.monotonic())
        await mgr.reply_error(peer, getattr(msg, "req_id", ""), ErrorCode.NOT_AUTHORIZED, why)
    return allowed


def _short(key: bytes | None) -> str:
    return f"{key[:8].decode(errors='replace')}…" if key else "(none)"


async def admit_agent(mgr: Manager, peer: bytes, node: str, key: bytes | None,
                      address: str = "") -> bool:
    """``agent.register`` as ``node`` with ``key`` from IP ``address``: Salt-style
    acceptance (docs/architecture.md#security).

    An accepted key must name its own node (else ``key-mismatch``). An unknown
    key is filed as pending (with ``auto_accept``, accepted at once if
    :func:`auto_accept_hold` has no objection); while it is pending the answer
    is ``pending``. A revoked or rejected key, or an administrator's, gets
    ``not-authorized``: a revoked one until ``ptap keys accept``, which its
    message names.
    """
    assert mgr.keys is not None
    who = principal(mgr, key)
    if key is not None and who.role is Role.UNKNOWN:
        refusal = _refused_until_accepted(mgr, mgr.keys, peer, node, key, address) \
            or _file_new_key(mgr, mgr.keys, node, key, address)
        if refusal:
            await mgr.reply_error(peer, "", ErrorCode.NOT_AUTHORIZED, refusal)
            return False
        who = mgr.keys.who(key)
    if who.role is Role.AGENT:
        if who.node == node:
            return True
        log.warning("refused registration as node %s from peer %s: its key is accepted "
                    "for node %s", node, peer.hex(), who.node)
        await mgr.reply_error(peer, "", ErrorCode.KEY_MISMATCH,
                              f"this key is accepted for node {who.node}, not {node}; "
                              f"start the agent as {who.node}, or give it its own keys_dir")
        return False
    if who.role is Role.PENDING:
        await mgr.reply_error(peer, "", ErrorCode.PENDING,
                              f"key for node {who.node} is pending; run ptap keys accept "
                              f"{who.node} on the manager")
        return False
    await mgr.reply_error(peer, "", ErrorCode.NOT_AUTHORIZED,
                          "this key may not register an agent; an agent uses its own key pair")
    return False


def _refused_until_accepted(mgr: Manager, keys: KeyStore, peer: bytes, node: str,
                            key: bytes, address: str) -> str:
    """Why a rejected or revoked key may not register (whatever ``auto_accept`` says),
    or "" for a key never seen."""
    state, filed = keys.filed(key) or (None, "")
    if state is KeyState.REVOKED:
        mgr.bad_frames.warn("key-revoked", f"refused registration as node {node} from peer "
                            f"{peer.hex()} ({address or 'address unknown'}): the key of node "
                            f"{filed} is revoked", time.monotonic())
        return (f"the key of node {filed} was revoked; ptap keys accept {filed} on the "
                "manager admits it again")
    if state is KeyState.REJECTED:  # still connected from before it was rejected
        return (f"the key of node {filed} was rejected; ptap keys accept {filed} on the "
                "manager admits it")
    return ""


def _file_new_key(mgr: Manager, keys: KeyStore, node: str, key: bytes, address: str) -> str:
    """File a key never seen: as pending, or accepted if ``auto_accept`` may.
    Returns "" once filed, else why the agent is refused."""
    cap = mgr.max_pending_keys
    if keys.count(KeyState.PENDING) >= cap:
        mgr.bad_frames.warn("keys-pending-full", f"not filing the key of node {node}: "
                            f"{cap} keys are pending already", time.monotonic())
        return (f"{cap} agent keys are pending already; ask the manager's "
                "administrator to accept, reject or revoke some")
    sec = mgr.cfg.security
    hold = auto_accept_hold(sec, address, keys.count(KeyState.ACCEPTED)) if sec.auto_accept \
        else None
    state = keys.request(key, node, sec.auto_accept and hold is None)
    if hold is not None and state is KeyState.PENDING:
        filed = keys.who(key).node
        mgr.bad_frames.warn(hold.kind, f"key of node {filed} is pending, not auto-accepted: "
                            f"{hold.reason} — run ptap keys accept {filed} on the manager, "
                            f"or {hold.remedy}", time.monotonic())
    return ""


@dataclass(frozen=True, slots=True)
class Hold:
    """Why ``auto_accept`` leaves a new key pending: a log kind, what, and what else to do."""

    kind: str
    reason: str
    remedy: str


def auto_accept_hold(sec: ServerSecurity, address: str, accepted: int) -> Hold | None:
    """Whether ``auto_accept`` may accept a new key that connects from IP ``address``
    ("" if unknown) while ``accepted`` keys are accepted: None if it may, else why not.

    Only addresses in ``auto_accept_from`` qualify (a key from anywhere else may
    be anyone's), and only below ``max_nodes`` (every accepted key is a node that
    ``targets=all`` jobs run on).
    """
    if not address_allowed(address, networks(sec.auto_accept_from)):
        listed = ", ".join(sec.auto_accept_from) or "(empty)"
        return Hold("auto-accept-address",
                    f"{address or 'its address is unknown, so it'} is outside [security] "
                    f"auto_accept_from = {listed}", "widen auto_accept_from")
    if accepted >= sec.max_nodes:
        return Hold("auto-accept-max-nodes",
                    f"{accepted} agent keys are accepted already, the [security] max_nodes "
                    "bound", "revoke keys no longer used, or raise max_nodes")
    return None


@functools.lru_cache(maxsize=8)
def networks(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``auto_accept_from``'s networks (a bare address is a /32 or /128; host bits are
    ignored, as config/schema.py checked them already)."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in spec)


def address_allowed(address: str,
                    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """Is IP ``address`` in one of ``nets``? An unknown or unparsable address is not;
    an IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) counts as IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)


def accept_refusal(mgr: Manager, node: str) -> str:
    """Why ``ptap keys accept NODE`` may not accept one more key (``max_nodes``), or ""."""
    assert mgr.keys is not None
    accepted, bound = mgr.keys.count(KeyState.ACCEPTED), mgr.cfg.security.max_nodes
    if accepted < bound:
        return ""
    return (f"cannot accept the key of node {node}: {accepted} agent keys are accepted "
            "already, the [security] max_nodes bound; revoke keys no longer used (ptap keys "
            "revoke NODE), or raise max_nodes in server.cfg and restart the manager")


def may_dispatch(mgr: Manager, name: str) -> bool:
    """With CURVE, only to a node whose key is still accepted for it (a key
    rejected or revoked while connected keeps its connection, and a revoked
    key's agent may even stay registered until its heartbeats lapse)."""
    if mgr.keys is None:
        return True
    key = mgr.node_keys.get(name)
    return key is not None and mgr.keys.who(key) == Principal(Role.AGENT, name)


def batch_allowed(mgr: Manager, key: bytes | None, frames: list[bytes]) -> bool:
    """With CURVE: a batch counts only from an accepted agent key, for its own node.

    Checked before ingest decodes anything; a refused batch is counted, logged
    (rate-limited) and not acked.
    """
    who = principal(mgr, key)
    if who.role is not Role.AGENT:
        why = f"key {key[:8].decode() if key else '?'}… is {who.role.value}"
    else:
        node = codec.peek_str(frames, "node", mgr.batch_limits)
        if node == who.node:
            return True
        why = f"key of node {who.node} sent a batch for node {str(node)[:64]!r}"
    mgr.counters["metrics.refused"] += 1
    mgr.counters["metrics.unauthorized"] += 1
    mgr.bad_frames.warn("metrics-unauthorized", f"metric batch refused: {why}",
                        time.monotonic())
    return False
