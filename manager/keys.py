"""Agent and administrator keys, accepted Salt-style (docs/architecture.md#security).

Layout under ``[security] keys_dir``::

    server.key / server.key_secret     the manager's key pair
    admin.key / admin.key_secret       the administrators' key pair (CLI, dashboard)
    agents/pending/NODE.key            keys that asked to register, not yet accepted
    agents/accepted/NODE.key           keys allowed to act as NODE
    agents/rejected/NODE.key           keys refused, even a connection to ask
    agents/revoked/NODE.key            keys taken back: told so when they ask, never
                                       filed again (not even by auto_accept)
    clients/NAME.key                   more administrator keys (copy a public key here)

A key is bound to one node name when it is accepted; from then on the
manager attributes every message by the key that ZeroMQ authenticated
(``User-Id``), never by the name a peer claims. The store is plain files so
that an operator can inspect and repair it with ``ls`` and ``mv``.

Rejected and revoked keys both stay refused until ``ptap keys accept``. The
difference is the connection: ZAP turns a rejected key away at the handshake
(it is not worth an answer), while a revoked key may still reach the ROUTER,
so that its agent is answered why it is refused and what would admit it.
A revoked key keeps its node name, so another key asking for that name waits
as pending under a name of its own.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bus.security import KeyFileError, ensure_keypair, load_public
from bus.states import KeyState as KeyState  # its home; re-exported here

log = logging.getLogger(__name__)


class Role(StrEnum):
    """Who a connecting key is."""

    ADMIN = "admin"      # may do everything a client can
    AGENT = "agent"      # an accepted node
    PENDING = "pending"  # a node waiting for ptap keys accept
    UNKNOWN = "unknown"  # anyone else (rejected and revoked keys too): may only ask


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    node: str = ""


class KeyStore:
    """The files above, with the in-memory index the ZAP policy consults."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        for state in KeyState:
            (self.dir / "agents" / state).mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.dir / "clients").mkdir(exist_ok=True, mode=0o700)
        self.server_public, self.server_secret = ensure_keypair(self.dir, "server")
        self.admin_public, _ = ensure_keypair(self.dir, "admin")
        self._index: dict[bytes, tuple[KeyState, str]] = {}
        self._admins: set[bytes] = set()
        self.reload()

    def reload(self) -> None:
        """Re-read the folders (after an operator edited them by hand)."""
        index: dict[bytes, tuple[KeyState, str]] = {}
        for state in KeyState:
            for path in sorted((self.dir / "agents" / state).glob("*.key")):
                if (key := _readable_key(path)) is not None:
                    index[key] = (state, path.stem)
        self._index = index
        clients = (_readable_key(p) for p in sorted((self.dir / "clients").glob("*.key")))
        self._admins = {self.admin_public, *(key for key in clients if key is not None)}

    def who(self, key: bytes) -> Principal:
        """The principal behind an authenticated z85 public key (a rejected or revoked
        key is nobody's: :meth:`filed` tells those apart from keys never seen)."""
        if key in self._admins:
            return Principal(Role.ADMIN)
        state, node = self._index.get(key, (None, ""))
        if state is KeyState.ACCEPTED:
            return Principal(Role.AGENT, node)
        if state is KeyState.PENDING:
            return Principal(Role.PENDING, node)
        return Principal(Role.UNKNOWN)

    def filed(self, key: bytes) -> tuple[KeyState, str] | None:
        """The state ``key`` is filed in and the node it is filed for; None if never seen."""
        return self._index.get(key)

    def count(self, state: KeyState) -> int:
        """How many agent keys are in ``state``."""
        return sum(1 for s, _ in self._index.values() if s is state)

    def allowed(self, domain: str, key: bytes) -> bool:
        """ZAP policy: anyone not rejected may reach the ROUTER (to ask, or to be told
        that its key is revoked); PUB is for administrators, PULL for accepted agents."""
        role = self.who(key).role
        if domain == "ptap.router":
            return self._index.get(key, (None,))[0] is not KeyState.REJECTED
        if domain == "ptap.pub":
            # Events name every node's jobs: administrators only. Agents never
            # subscribe; an accepted agent key must not learn of other nodes' work.
            return role is Role.ADMIN
        if domain == "ptap.pull":
            return role is Role.AGENT
        return False

    def request(self, key: bytes, node: str, auto_accept: bool) -> KeyState:
        """An unknown key asks to register as ``node``: file it as pending, or accepted
        if ``auto_accept`` (the caller's decision: address and bound) and the name is free.
        A known key keeps its state, whatever ``auto_accept`` says."""
        state, bound = self._index.get(key, (None, ""))
        if state is not None:
            return state
        taken = any(n == node and s is not KeyState.REJECTED for s, n in self._index.values())
        target = KeyState.ACCEPTED if auto_accept and not taken else KeyState.PENDING
        if taken:
            # A second key asking for a taken name waits under a name of its own.
            node = f"{node}~{hashlib.sha256(key).hexdigest()[:8]}"
        self._write(target, node, key)
        log.info("key for node %s is %s", node, target)
        return target

    def set_state(self, node: str, target: KeyState) -> bool:
        """``ptap keys accept|reject|revoke NODE``; False if no key has that node name."""
        for state in KeyState:
            path = self.dir / "agents" / state / f"{node}.key"
            if path.exists():
                path.replace(self.dir / "agents" / target / f"{node}.key")
                self.reload()
                return True
        return False

    def listing(self) -> dict[str, list[dict[str, str]]]:
        """``{"pending": [{"node", "key"}], "accepted": [...], "rejected": [...],
        "revoked": [...]}``."""
        out: dict[str, list[dict[str, str]]] = {s.value: [] for s in KeyState}
        for key, (state, node) in sorted(self._index.items(), key=lambda kv: kv[1][1]):
            out[state.value].append({"node": node, "key": key.decode()})
        return out

    def _write(self, state: KeyState, node: str, key: bytes) -> None:
        path = self.dir / "agents" / state / f"{node}.key"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f'#   ptap agent key for node {node}\ncurve\n    public-key = "{key.decode()}"\n')
        tmp.replace(path)
        self._index[key] = (state, node)


def _readable_key(path: Path) -> bytes | None:
    """The public key in ``path``; None (and one warning) if it cannot be read.

    One damaged file an operator dropped into the folders must not stop the
    manager, nor admit anyone: its key is simply not known.
    """
    try:
        return load_public(path)
    except KeyFileError as exc:
        log.warning("ignoring key file %s: %s", path, exc)
        return None
