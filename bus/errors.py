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


class PtapError(Exception):
    """Base class of every ptap error."""


class ProtocolError(PtapError):
    """A frame that cannot be acted on. Receive loops count it and go on."""

    code = "protocol"


class MalformedFrame(ProtocolError):
    code = "malformed"


class UnknownMessageType(ProtocolError):
    code = "unknown-type"


class MessageTooLarge(ProtocolError):
    code = "too-large"


class NotPermitted(ProtocolError):
    code = "not-authorized"


class SchemaError(ProtocolError):
    code = "schema"


class VersionMismatch(ProtocolError):
    code = "version"


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
