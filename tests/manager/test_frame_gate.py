"""manager/frame_gate.py: what a key may send, decided on frame sizes alone."""

from __future__ import annotations

import msgpack
import pytest

from bus import codec
from bus.errors import MalformedFrame, MessageTooLarge, NotPermitted, UnknownMessageType
from bus.messages import PROTOCOL_VERSION, Heartbeat, NodeFacts, NodesList, Register
from manager import frame_gate
from manager.keys import Role

FACTS = NodeFacts(hostname="h", address="10.0.0.1", cpus=2, memory_bytes=1 << 30,
                  kernel="6.1", cpu_model="x" * 48, labels=["rack1"], agent_version="1.0")


def test_a_new_agents_register_passes_the_strangers_gate() -> None:
    body = codec.encode(Register(protocol=PROTOCOL_VERSION, node="n" * 64, facts=FACTS))
    assert len(body[1]) < 1024
    assert frame_gate.refusal(Role.UNKNOWN, body) is None
    assert frame_gate.refusal(Role.PENDING, body) is None


@pytest.mark.parametrize("role", [Role.UNKNOWN, Role.PENDING])
def test_a_stranger_may_send_nothing_but_a_small_register(role: Role) -> None:
    big = [b"agent.register", b"\x80" + b"x" * (20 * 1024)]
    assert isinstance(frame_gate.refusal(role, big), MessageTooLarge)
    for msg in (Heartbeat(), NodesList(req_id="r")):
        assert isinstance(frame_gate.refusal(role, codec.encode(msg)), NotPermitted)


def test_agents_and_admins_each_send_only_their_own_types() -> None:
    assert frame_gate.refusal(Role.AGENT, codec.encode(Heartbeat())) is None
    assert isinstance(frame_gate.refusal(Role.AGENT, codec.encode(NodesList(req_id="r"))),
                      NotPermitted)
    assert frame_gate.refusal(Role.ADMIN, codec.encode(NodesList(req_id="r"))) is None
    assert isinstance(frame_gate.refusal(Role.ADMIN, codec.encode(Heartbeat())), NotPermitted)
    # A heartbeat is a few bytes; a megabyte of one is refused undecoded.
    assert isinstance(frame_gate.refusal(Role.AGENT, [b"heartbeat", b"\x80" * 2048]),
                      MessageTooLarge)


def test_bad_shapes_are_named_without_decoding() -> None:
    assert isinstance(frame_gate.refusal(Role.ADMIN, [b"nodes.list"]), MalformedFrame)
    assert isinstance(frame_gate.refusal(Role.ADMIN, [b"\xff" * 10**6, b""]), UnknownMessageType)


def test_only_the_length_counts_at_the_gate() -> None:
    # 3.5 MB claiming 2**32 array entries: refused from a stranger by its length;
    # an agent's register within its cap goes on to the codec, which refuses it.
    body = [b"agent.register", b"\xdd\xff\xff\xff\xff" + b"\x90" * 3_500_000]
    assert isinstance(frame_gate.refusal(Role.UNKNOWN, body), MessageTooLarge)
    assert frame_gate.refusal(Role.AGENT, body) is None
    with pytest.raises(MalformedFrame):
        codec.decode(body)


def test_a_header_cannot_claim_more_than_the_body_holds() -> None:
    # A map claiming 2**31 entries in 6 bytes fails at once, with no allocation.
    body = [b"nodes.list", b"\xdf\x80\x00\x00\x00" + msgpack.packb("x")]
    with pytest.raises(MalformedFrame):
        codec.decode(body)
