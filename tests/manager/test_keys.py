"""The key store (manager/keys.py) as plain functions on a tmp dir: no sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq

from bus.security import KeyFileError, ensure_keypair, secret_path
from manager.keys import KeyState, KeyStore, Principal, Role


def new_key() -> bytes:
    return zmq.curve_keypair()[0]


def test_first_start_creates_private_server_and_admin_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    for name in ("server", "admin"):
        assert secret_path(tmp_path / "keys", name).stat().st_mode & 0o777 == 0o600
    for sub in ("agents/pending", "agents/accepted", "agents/rejected", "agents/revoked",
                "clients"):
        assert (tmp_path / "keys" / sub).is_dir()
    again = KeyStore(tmp_path / "keys")
    assert (again.server_public, again.admin_public) == (store.server_public, store.admin_public)
    assert store.who(store.admin_public) == Principal(Role.ADMIN)
    assert store.who(new_key()) == Principal(Role.UNKNOWN)
    assert store.listing() == {"pending": [], "accepted": [], "rejected": [], "revoked": []}


def test_a_server_secret_others_can_read_stops_the_store(tmp_path: Path) -> None:
    ensure_keypair(tmp_path, "server")
    os.chmod(secret_path(tmp_path, "server"), 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyStore(tmp_path)


def test_a_damaged_key_file_is_ignored_with_a_warning(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """One bad file an operator dropped into the folders neither stops the manager
    nor admits anyone; the keys beside it still count."""
    store = KeyStore(tmp_path)
    good = new_key()
    assert store.request(good, "node1", auto_accept=True) is KeyState.ACCEPTED
    (tmp_path / "agents" / "accepted" / "node2.key").write_text('metadata\ncurve\n'
                                                             '    public-key = "abc"\n')
    (tmp_path / "clients" / "broken.key").write_text("not a certificate at all\n")
    with caplog.at_level("WARNING", logger="manager.keys"):
        store.reload()
    assert store.who(good) == Principal(Role.AGENT, "node1")
    assert store.who(b"abc") == Principal(Role.UNKNOWN)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all("ignoring key file" in w for w in warned)
    assert any("node2.key" in w and "is not a CURVE key" in w for w in warned)


def test_request_pending_accept_and_the_zap_policy(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key = new_key()
    assert store.allowed("ptap.router", key)  # anyone may connect, to ask
    assert not store.allowed("ptap.pub", key) and not store.allowed("ptap.pull", key)
    assert store.request(key, "node1", auto_accept=False) is KeyState.PENDING
    assert (tmp_path / "agents" / "pending" / "node1.key").exists()
    assert store.who(key) == Principal(Role.PENDING, "node1")
    assert store.request(key, "other", auto_accept=True) is KeyState.PENDING  # filed once
    assert not store.allowed("ptap.pull", key)
    assert store.set_state("node1", KeyState.ACCEPTED)
    assert store.who(key) == Principal(Role.AGENT, "node1")
    assert all(store.allowed(d, key) for d in ("ptap.router", "ptap.pull"))
    assert not store.allowed("ptap.pub", key)  # other nodes' jobs are not an agent's business
    assert not store.allowed("ptap.other", key)
    assert store.listing()["accepted"] == [{"node": "node1", "key": key.decode()}]
    # Plain files: a new store (a restarted manager) reads the same decisions.
    assert KeyStore(tmp_path).who(key) == Principal(Role.AGENT, "node1")


def test_admins_may_subscribe_but_never_push_metrics(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    extra = new_key()
    (tmp_path / "clients" / "ops.key").write_text(
        f'curve\n    public-key = "{extra.decode()}"\n')
    store.reload()
    for key in (store.admin_public, extra):
        assert store.who(key) == Principal(Role.ADMIN)
        assert store.allowed("ptap.router", key) and store.allowed("ptap.pub", key)
        assert not store.allowed("ptap.pull", key)


def test_auto_accept_but_never_a_second_key_for_a_taken_name(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first, second = new_key(), new_key()
    assert store.request(first, "node1", auto_accept=True) is KeyState.ACCEPTED
    assert store.request(second, "node1", auto_accept=True) is KeyState.PENDING
    principal = store.who(second)
    assert principal.role is Role.PENDING and principal.node.startswith("node1~")
    assert store.who(first) == Principal(Role.AGENT, "node1")


def test_reject_refuses_even_the_connection_to_ask(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key = new_key()
    store.request(key, "node1", auto_accept=False)
    assert store.set_state("node1", KeyState.REJECTED)
    assert store.who(key) == Principal(Role.UNKNOWN)
    assert not store.allowed("ptap.router", key)  # not even to ask again
    assert store.request(key, "node1", auto_accept=True) is KeyState.REJECTED
    assert store.set_state("node1", KeyState.ACCEPTED)
    assert store.who(key) == Principal(Role.AGENT, "node1")
    assert not store.set_state("ghost", KeyState.ACCEPTED)


def test_a_revoked_key_stays_refused_until_accepted_again(tmp_path: Path) -> None:
    """Revoking files the key under revoked/: it is never filed afresh (so not even
    auto_accept admits it again), it may reach the ROUTER only to be told so, and
    it keeps its node name; accepting it is the one way back."""
    store = KeyStore(tmp_path)
    key, other = new_key(), new_key()
    assert store.request(key, "node1", auto_accept=True) is KeyState.ACCEPTED
    assert store.set_state("node1", KeyState.REVOKED)
    assert (tmp_path / "agents" / "revoked" / "node1.key").exists()
    assert not (tmp_path / "agents" / "accepted" / "node1.key").exists()
    assert store.who(key) == Principal(Role.UNKNOWN)
    assert store.filed(key) == (KeyState.REVOKED, "node1")
    assert store.allowed("ptap.router", key)
    assert not store.allowed("ptap.pub", key) and not store.allowed("ptap.pull", key)
    assert store.request(key, "node1", auto_accept=True) is KeyState.REVOKED
    assert store.request(key, "node2", auto_accept=True) is KeyState.REVOKED
    assert store.listing()["revoked"] == [{"node": "node1", "key": key.decode()}]
    assert [store.count(s) for s in KeyState] == [0, 0, 0, 1]
    # The name stays the revoked key's: another key asking for it waits.
    assert store.request(other, "node1", auto_accept=True) is KeyState.PENDING
    assert store.who(other).node.startswith("node1~")
    # A restarted manager reads the same decision.
    assert KeyStore(tmp_path).filed(key) == (KeyState.REVOKED, "node1")
    assert store.set_state("node1", KeyState.ACCEPTED)
    assert store.who(key) == Principal(Role.AGENT, "node1")
    assert [store.count(s) for s in KeyState] == [1, 1, 0, 0]
