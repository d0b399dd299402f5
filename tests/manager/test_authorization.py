"""manager/authorization.py: key policy as decisions (Admit or Refuse with its code,
message and log line), over a real key store in a temporary folder. Nothing is
sent, and no socket is opened; tests/manager/test_security.py checks the same
rules end to end over CURVE sockets."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from bus.codec import DEFAULT_LIMITS
from bus.messages import MsgType
from manager.authorization import (
    Access,
    accept_refusal,
    admit_agent,
    authorize,
    batch_allowed,
    may_dispatch,
    speaks_for_its_node,
)
from manager.context import ADMIT, Refuse
from manager.keys import KeyState, Role
from manager.registry import Registry
from tests.manager.handler_world import agent_key, curve_access, facts, no_sockets

pytestmark = pytest.mark.usefixtures("no_sockets")
__all__ = ["no_sockets"]  # the fixture, imported for pytest to find
PEER = b"\x01\x02"


@pytest.fixture
def access(tmp_path: Path) -> Access:
    return curve_access(tmp_path / "keys")


def accepted(access: Access, node: str) -> bytes:
    key = agent_key()
    access.keys.request(key, node, auto_accept=True)
    access.node_keys[node] = key
    return key


def test_client_requests_need_the_admin_key(access: Access) -> None:
    registry = Registry(1.0, 3)
    admin = access.keys.admin_public
    assert authorize(access, registry, PEER, MsgType.JOB_SUBMIT, admin) == ADMIT
    refusal = authorize(access, registry, PEER, MsgType.JOB_SUBMIT, accepted(access, "n1"))
    assert isinstance(refusal, Refuse) and refusal.code == "not-authorized"
    assert refusal.message.startswith("this key may not do that; use the manager's admin key")
    assert refusal.kind == "not-authorized" and "is agent of node n1" in refusal.note
    assert authorize(access, registry, PEER, MsgType.REGISTER, None) == ADMIT  # admit_agent's


def test_agent_messages_need_the_key_accepted_for_that_node(access: Access) -> None:
    registry = Registry(1.0, 3)
    own, other = accepted(access, "n1"), accepted(access, "n2")
    registry.register("n1", PEER, facts("n1"), 0.0, 0.0)
    assert authorize(access, registry, PEER, MsgType.HEARTBEAT, own) == ADMIT
    assert speaks_for_its_node(access, registry, PEER, own)
    refusal = authorize(access, registry, PEER, MsgType.RUN_UPDATE, other)
    assert isinstance(refusal, Refuse) and refusal.message == (
        "this key is no longer accepted for node n1; see ptap keys list on the manager")
    assert not speaks_for_its_node(access, registry, PEER, other)
    assert speaks_for_its_node(None, registry, PEER, other)  # without CURVE: anyone


def test_a_new_key_is_filed_pending_and_refused_until_accepted(access: Access) -> None:
    key = agent_key()
    decision = admit_agent(access, PEER, "n1", key, "127.0.0.1")
    assert decision == Refuse("pending", "key for node n1 is pending; run ptap keys accept "
                              "n1 on the manager")
    assert access.keys.filed(key) == (KeyState.PENDING, "n1")
    access.keys.set_state("n1", KeyState.ACCEPTED)
    assert admit_agent(access, PEER, "n1", key, "127.0.0.1") == ADMIT
    mismatch = admit_agent(access, PEER, "n9", key, "127.0.0.1")
    assert isinstance(mismatch, Refuse) and mismatch.code == "key-mismatch"
    assert mismatch.note.endswith("its key is accepted for node n1") and mismatch.kind == ""


def test_auto_accept_admits_from_its_networks_and_holds_others_with_a_reason(
        tmp_path: Path) -> None:
    access = curve_access(tmp_path / "keys", auto_accept="yes",
                          auto_accept_from="10.1.0.0/16")
    assert admit_agent(access, PEER, "n1", agent_key(), "10.1.2.3") == ADMIT
    held = admit_agent(access, PEER, "n2", agent_key(), "192.0.2.7")
    assert isinstance(held, Refuse) and held.code == "pending"
    assert held.kind == "auto-accept-address"
    assert held.note == ("key of node n2 is pending, not auto-accepted: 192.0.2.7 is outside "
                         "[security] auto_accept_from = 10.1.0.0/16 — run ptap keys accept n2 "
                         "on the manager, or widen auto_accept_from")


def test_a_revoked_key_is_refused_even_under_auto_accept(tmp_path: Path) -> None:
    access = curve_access(tmp_path / "keys", auto_accept="yes")
    key = accepted(access, "n1")
    assert may_dispatch(access, "n1")
    access.keys.set_state("n1", KeyState.REVOKED)
    refusal = admit_agent(access, PEER, "n1", key, "127.0.0.1")
    assert isinstance(refusal, Refuse) and refusal.kind == "key-revoked"
    assert refusal.message == ("the key of node n1 was revoked; ptap keys accept n1 on the "
                               "manager admits it again")
    assert not may_dispatch(access, "n1")
    assert may_dispatch(None, "n1")  # without CURVE


def test_pending_keys_are_bounded_and_the_admin_key_registers_nothing(access: Access) -> None:
    access.max_pending_keys = 1
    assert isinstance(admit_agent(access, PEER, "n1", agent_key()), Refuse)
    full = admit_agent(access, PEER, "n2", agent_key())
    assert isinstance(full, Refuse) and full.kind == "keys-pending-full"
    assert full.message.startswith("1 agent keys are pending already")
    assert access.keys.count(KeyState.PENDING) == 1
    admin = admit_agent(access, PEER, "n3", access.keys.admin_public)
    assert isinstance(admin, Refuse) and admin.code == "not-authorized"
    assert access.keys.who(access.keys.admin_public).role is Role.ADMIN


def test_accept_is_refused_at_max_nodes(tmp_path: Path) -> None:
    access = curve_access(tmp_path / "keys", max_nodes="1")
    assert accept_refusal(access, "n1") == ""
    accepted(access, "n1")
    assert accept_refusal(access, "n2").startswith(
        "cannot accept the key of node n2: 1 agent keys are accepted already")


def test_a_metric_batch_counts_only_from_its_own_nodes_key(access: Access) -> None:
    key = accepted(access, "n1")

    def batch(node: str) -> list[bytes]:
        return [b"metrics", msgpack.packb({"node": node, "seq": 1})]

    assert batch_allowed(access, key, batch("n1"), DEFAULT_LIMITS) == ADMIT
    other = batch_allowed(access, key, batch("n2"), DEFAULT_LIMITS)
    assert isinstance(other, Refuse) and other.kind == "metrics-unauthorized"
    assert other.note == "metric batch refused: key of node n1 sent a batch for node 'n2'"
    stranger = batch_allowed(access, None, batch("n1"), DEFAULT_LIMITS)
    assert isinstance(stranger, Refuse) and stranger.note.endswith("is unknown")
