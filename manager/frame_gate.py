"""What each kind of key may send on the ROUTER, checked on frame sizes before decoding.

Decoding is the most a peer can make the manager do before it is authorized:
msgpack builds every object a body describes. So with CURVE, where the key
ZAP authenticated says who the peer is (:class:`manager.keys.Role`), each
message is checked against this table on its type frame and its body's
length alone: a type that role never sends, or a body over the role's cap
for the type, is dropped undecoded, counted and logged (rate-limited). A key
nobody accepted may only ask to register, in a few kilobytes: a brand-new
agent's ``agent.register`` carries its facts and no runs (about 1 KiB).

The caps per type regardless of role are :data:`bus.codec.MAX_BODY_BYTES`;
the ones here are tighter where a role needs less. Without CURVE there are
no roles, and only the codec's caps apply.
"""

from __future__ import annotations

from bus.codec import MAX_BODY_BYTES, KiB
from bus.errors import (
    MalformedFrame,
    MessageTooLarge,
    NotPermitted,
    ProtocolError,
    UnknownMessageType,
)
from bus.messages import MsgType
from manager.authorization import CLIENT_REQUESTS, NOT_AUTHORIZED
from manager.keys import Role

#: Body caps of an unaccepted key: it may only ask to register.
_STRANGER = {MsgType.REGISTER: 16 * KiB}

#: Per role, the types it may send and each one's largest body.
CAPS: dict[Role, dict[MsgType, int]] = {
    Role.UNKNOWN: _STRANGER,
    Role.PENDING: _STRANGER,
    Role.AGENT: {t: MAX_BODY_BYTES[t] for t in (MsgType.REGISTER, MsgType.HEARTBEAT,
                                                 MsgType.RUN_UPDATE, MsgType.ERROR)},
    Role.ADMIN: {t: MAX_BODY_BYTES[t] for t in (*CLIENT_REQUESTS, MsgType.ERROR)},
}


def refusal(role: Role, body: list[bytes]) -> ProtocolError | None:
    """Why ``body`` (``[type, msgpack]``) from a ``role`` key is dropped undecoded, or None.

    Reads the type frame and the body's length, nothing else.
    """
    if len(body) != 2:
        return MalformedFrame(f"expected 2 frames [type, body], got {len(body)}")
    raw_type = bytes(body[0][:32])
    try:
        msg_type = MsgType(raw_type.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return UnknownMessageType(f"unknown message type {raw_type!r}")
    cap = CAPS[role].get(msg_type)
    if cap is None:
        if msg_type in CLIENT_REQUESTS:
            return NotPermitted(NOT_AUTHORIZED)
        return NotPermitted(f"a key that is {role.value} may not send {msg_type.value}")
    if len(body[1]) > cap:
        return MessageTooLarge(f"{msg_type.value} of {len(body[1])} bytes from a key that is "
                               f"{role.value} is over its {cap}-byte limit")
    return None
