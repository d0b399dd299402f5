"""The exceptions ptap raises across process boundaries.

Every failure that crosses the bus is translated, at the boundary where it
happens, into one of these (the shape follows httpx's ``_exceptions.py``)::

    PtapError
     ├── ProtocolError            a frame we will not act on; the loop goes on
     │    ├── MalformedFrame      wrong frame count, not msgpack, not a map
     │    ├── UnknownMessageType  a type this version does not know
     │    ├── MessageTooLarge     over the configured byte limit
     │    ├── NotPermitted        a type this peer's key may not send
     │    ├── SchemaError         decoded, but a field is missing or mistyped
     │    └── VersionMismatch     peer speaks another PROTOCOL_VERSION
     └── ClientError              raised to users of bus.client
          ├── ManagerUnreachable  no reply within the timeout
          └── RequestFailed       the manager answered with an error

``ProtocolError.code`` is the short machine-readable name sent back to a peer
in an ``Error`` reply, so both ends agree on what went wrong.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every ``code`` an ``error`` message may carry (docs/protocol.md).

    Peers branch on these (the agent re-registers on ``not-registered``, the CLI
    picks its hint by code), so they are named once, here.
    """

    PROTOCOL = "protocol"
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown-type"
    TOO_LARGE = "too-large"
    NOT_AUTHORIZED = "not-authorized"
    SCHEMA = "schema"
    VERSION = "version"
    BAD_REQUEST = "bad-request"
    NOT_FOUND = "not-found"
    NOT_REGISTERED = "not-registered"
    NAME_TAKEN = "name-taken"
    PENDING = "pending"
    KEY_MISMATCH = "key-mismatch"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


class PtapError(Exception):
    """Base class of every ptap error."""


class ProtocolError(PtapError):
    """A frame that cannot be acted on. Receive loops count it and go on."""

    code: str = ErrorCode.PROTOCOL


class MalformedFrame(ProtocolError):
    code: str = ErrorCode.MALFORMED


class UnknownMessageType(ProtocolError):
    code: str = ErrorCode.UNKNOWN_TYPE


class MessageTooLarge(ProtocolError):
    code: str = ErrorCode.TOO_LARGE


class NotPermitted(ProtocolError):
    code: str = ErrorCode.NOT_AUTHORIZED


class SchemaError(ProtocolError):
    code: str = ErrorCode.SCHEMA


class VersionMismatch(ProtocolError):
    code: str = ErrorCode.VERSION


class ClientError(PtapError):
    """Base class of errors seen by users of :mod:`bus.client`."""


class ManagerUnreachable(ClientError):
    """No reply from the manager in time; ``str()`` is a one-line hint for people."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        super().__init__(
            f"cannot reach manager at {address} (no reply in {timeout:g} s) — "
            "is ptap-manager running? see server.cfg [basic] bind_addr and bind_port"
        )


class RequestFailed(ClientError):
    """The manager understood the request and refused it."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)
