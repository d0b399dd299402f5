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

Policy decides and sends nothing: each check returns
:class:`~manager.context.Admit` or :class:`~manager.context.Refuse` (the code,
the message and the line to log), and the loop that asked answers the peer
(``manager/control.py``). The one side effect is the key store's: an unknown
key is filed as pending (or accepted). A key rejected or revoked while
connected keeps its ZeroMQ connection, so these checks, not the handshake
alone, are what take its node away. With CURVE off there is no :class:`Access`
(None) and none of this is consulted.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from bus import codec
from bus.codec import Limits
from bus.errors import ErrorCode
from bus.messages import MsgType
from config.schema import ServerSecurity
from manager.context import ADMIT, Decision, Refuse
from manager.keys import KeyState, KeyStore, Principal, Role
from manager.registry import Registry

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


@dataclass
class Access:
    """With CURVE, what policy consults: the key store, ``[security]``, the key each
    registered node registered with, and how many unknown keys may wait as pending."""

    keys: KeyStore
    security: ServerSecurity
    node_keys: dict[str, bytes] = field(default_factory=dict)
    max_pending_keys: int = MAX_PENDING_KEYS

    def principal(self, key: bytes | None) -> Principal:
        """Whose ``key`` is (unknown without one)."""
        return self.keys.who(key) if key is not None else Principal(Role.UNKNOWN)


def speaks_for_its_node(access: Access | None, registry: Registry, peer: bytes,
                        key: bytes | None) -> bool:
    """Without CURVE, yes. With it, a routing id registered as a node proves that
    node alive only with the key accepted for it (a key rejected or revoked
    while connected keeps its connection, but not its node)."""
    if access is None:
        return True
    node = registry.node_for(peer)
    return node is None or access.principal(key) == Principal(Role.AGENT, node.name)


def authorize(access: Access, registry: Registry, peer: bytes, msg_type: MsgType,
              key: bytes | None) -> Decision:
    """With CURVE: may this connection's key send a ``msg_type``? Refused
    ``not-authorized`` if not.

    Client requests need an administrator's key; ``heartbeat`` and ``run.update``
    the key accepted for the node this routing id registered as.
    ``agent.register`` is decided by :func:`admit_agent`.
    """
    who = access.principal(key)
    if msg_type in CLIENT_REQUESTS:
        allowed, why = who.role is Role.ADMIN, NOT_AUTHORIZED
    elif msg_type in AGENT_ONLY:
        node = registry.node_for(peer)
        name = node.name if node is not None else "?"
        allowed = who == Principal(Role.AGENT, name)
        why = (f"this key is no longer accepted for node {name}; see ptap keys list "
               "on the manager")
    else:
        return ADMIT
    if allowed:
        return ADMIT
    return Refuse(ErrorCode.NOT_AUTHORIZED, why, kind="not-authorized",
                  note=f"refused {msg_type.value} from peer {peer.hex()}: key {_short(key)} "
                       f"is {who.role.value}{' of node ' + who.node if who.node else ''}")


def _short(key: bytes | None) -> str:
    return f"{key[:8].decode(errors='replace')}…" if key else "(none)"


def admit_agent(access: Access, peer: bytes, node: str, key: bytes | None,
                address: str = "") -> Decision:
    """``agent.register`` as ``node`` with ``key`` from IP ``address``: Salt-style
    acceptance (docs/architecture.md#security).

    An accepted key must name its own node (else ``key-mismatch``). An unknown
    key is filed as pending (with ``auto_accept``, accepted at once if
    :func:`auto_accept_hold` has no objection); while it is pending the answer
    is ``pending``. A revoked or rejected key, or an administrator's, gets
    ``not-authorized``: a revoked one until ``ptap keys accept``, which its
    message names.
    """
    who, held = access.principal(key), ("", "")
    if key is not None and who.role is Role.UNKNOWN:
        refusal = _refused_until_accepted(access.keys, peer, node, key, address) \
            or _pending_full(access, node)
        if refusal is not None:
            return refusal
        held = _file_new_key(access, node, key, address)
        who = access.keys.who(key)
    if who.role is Role.AGENT:
        if who.node == node:
            return ADMIT
        return Refuse(ErrorCode.KEY_MISMATCH, f"this key is accepted for node {who.node}, not {node}; "
                      f"start the agent as {who.node}, or give it its own keys_dir",
                      note=f"refused registration as node {node} from peer {peer.hex()}: its "
                           f"key is accepted for node {who.node}")
    if who.role is Role.PENDING:
        return Refuse(ErrorCode.PENDING, f"key for node {who.node} is pending; run ptap keys accept "
                      f"{who.node} on the manager", kind=held[0], note=held[1])
    return Refuse(ErrorCode.NOT_AUTHORIZED,
                  "this key may not register an agent; an agent uses its own key pair")


def _refused_until_accepted(keys: KeyStore, peer: bytes, node: str, key: bytes,
                            address: str) -> Refuse | None:
    """Why a rejected or revoked key may not register (whatever ``auto_accept`` says),
    or None for a key never seen."""
    state, filed = keys.filed(key) or (None, "")
    if state is KeyState.REVOKED:
        return Refuse(ErrorCode.NOT_AUTHORIZED,
                      f"the key of node {filed} was revoked; ptap keys accept {filed} on the "
                      "manager admits it again", kind="key-revoked",
                      note=f"refused registration as node {node} from peer {peer.hex()} "
                           f"({address or 'address unknown'}): the key of node {filed} is "
                           "revoked")
    if state is KeyState.REJECTED:  # still connected from before it was rejected
        return Refuse(ErrorCode.NOT_AUTHORIZED, f"the key of node {filed} was rejected; ptap keys "
                      f"accept {filed} on the manager admits it")
    return None


def _pending_full(access: Access, node: str) -> Refuse | None:
    """A refusal if no more keys may be filed as pending, else None."""
    cap = access.max_pending_keys
    if access.keys.count(KeyState.PENDING) < cap:
        return None
    return Refuse(ErrorCode.NOT_AUTHORIZED, f"{cap} agent keys are pending already; ask the manager's "
                  "administrator to accept, reject or revoke some", kind="keys-pending-full",
                  note=f"not filing the key of node {node}: {cap} keys are pending already")


def _file_new_key(access: Access, node: str, key: bytes, address: str) -> tuple[str, str]:
    """File a key never seen: as pending, or accepted if ``auto_accept`` may.
    Returns the log kind and line saying why ``auto_accept`` left it pending, or
    ``("", "")``."""
    keys, sec = access.keys, access.security
    hold = auto_accept_hold(sec, address, keys.count(KeyState.ACCEPTED)) if sec.auto_accept \
        else None
    state = keys.request(key, node, sec.auto_accept and hold is None)
    if hold is None or state is not KeyState.PENDING:
        return "", ""
    filed = keys.who(key).node
    return hold.kind, (f"key of node {filed} is pending, not auto-accepted: {hold.reason} — "
                       f"run ptap keys accept {filed} on the manager, or {hold.remedy}")


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


def accept_refusal(access: Access, node: str) -> str:
    """Why ``ptap keys accept NODE`` may not accept one more key (``max_nodes``), or ""."""
    accepted, bound = access.keys.count(KeyState.ACCEPTED), access.security.max_nodes
    if accepted < bound:
        return ""
    return (f"cannot accept the key of node {node}: {accepted} agent keys are accepted "
            "already, the [security] max_nodes bound; revoke keys no longer used (ptap keys "
            "revoke NODE), or raise max_nodes in server.cfg and restart the manager")


def may_dispatch(access: Access | None, name: str) -> bool:
    """With CURVE, only to a node whose key is still accepted for it (a key
    rejected or revoked while connected keeps its connection, and a revoked
    key's agent may even stay registered until its heartbeats lapse)."""
    if access is None:
        return True
    key = access.node_keys.get(name)
    return key is not None and access.keys.who(key) == Principal(Role.AGENT, name)


def batch_allowed(access: Access, key: bytes | None, frames: list[bytes],
                  limits: Limits) -> Decision:
    """With CURVE: a batch counts only from an accepted agent key, for its own node.

    Checked before ingest decodes anything; the caller counts and logs a refused
    batch (rate-limited) and does not ack it. Its ``code`` is never sent: PULL
    has no way back.
    """
    who = access.principal(key)
    if who.role is not Role.AGENT:
        why = f"key {key[:8].decode() if key else '?'}… is {who.role.value}"
    else:
        node = codec.peek_str(frames, "node", limits)
        if node == who.node:
            return ADMIT
        why = f"key of node {who.node} sent a batch for node {str(node)[:64]!r}"
    return Refuse(ErrorCode.NOT_AUTHORIZED, why, kind="metrics-unauthorized",
                  note=f"metric batch refused: {why}")
