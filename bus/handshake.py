"""What a failed ZeroMQ handshake says for sure, from a socket monitor's event.

libzmq reports a failed handshake as one of three monitor events, and the value
it attaches is not one fixed code per cause:

- ``HANDSHAKE_FAILED_AUTH``: the peer's ZAP handler refused our key; the value
  is the ZAP status (400 in ptap). Certain.
- ``HANDSHAKE_FAILED_PROTOCOL``: the peer's bytes broke ZMTP; the value is a
  ``PROTOCOL_ERROR_*`` code. ``ZMTP_MECHANISM_MISMATCH`` means one side uses
  CURVE and the other NULL; the other codes mean the port does not speak ptap's
  ZMTP at all (another program, or a peer with a different key set-up).
- ``HANDSHAKE_FAILED_NO_DETAIL``: the connection ended mid-handshake; the value
  is an errno (EPIPE when the peer closed, ECONNRESET, ETIMEDOUT when the
  handshake timed out, or whatever errno held). A CURVE server that meets a NULL
  client closes the connection as soon as it reads the client's greeting, so the
  client sees either the mismatch or, when the server was quicker, EPIPE or
  ECONNRESET. A CURVE server that cannot decrypt a client's HELLO (the client
  has the wrong server key) also just closes. A restarting peer does the same
  once. So "no detail" names the likely cause for the mechanism we use, and the
  caller reports it only when it repeats.

The classification below is what callers show; ``tests/bus/test_handshake.py``
feeds it every code libzmq defines.
"""

from __future__ import annotations

import enum
import errno
import os

import zmq


class Outcome(enum.StrEnum):
    OK = "ok"
    REFUSED = "refused"                        # ZAP said no to our key
    MECHANISM_MISMATCH = "mechanism-mismatch"  # CURVE on one side, NULL on the other
    HUNG_UP = "hung-up"                        # connection ended mid-handshake, no detail
    NOT_ZMTP = "not-zmtp"                      # the peer broke ZMTP some other way


def classify(event: int, value: int) -> Outcome:
    """The outcome of one monitor event (``event`` and ``value`` as libzmq gives them)."""
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return Outcome.OK
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return Outcome.REFUSED
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return Outcome.MECHANISM_MISMATCH
        return Outcome.NOT_ZMTP
    return Outcome.HUNG_UP  # HANDSHAKE_FAILED_NO_DETAIL, or a connection dropped before one


def code_name(event: int, value: int) -> str:
    """libzmq's value in words: ``EPIPE``, ``ZMTP_MALFORMED_COMMAND_HELLO``, ``ZAP status 400``."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"ZAP status {value}"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        for attr in dir(zmq):
            if attr.startswith("PROTOCOL_ERROR_") and getattr(zmq, attr) == value:
                return attr.removeprefix("PROTOCOL_ERROR_")
        return f"protocol error {value:#x}"
    name = errno.errorcode.get(value)
    return f"{name}, {os.strerror(value).lower()}" if name else f"code {value:#x}"


def cause(outcome: Outcome, peer: str, us: str, we_use_curve: bool, code: str = "") -> str:
    """What ``outcome`` tells about ``peer`` for the mechanism ``us`` uses: only what
    the events establish, the likely cause named as the only one ptap knows of.
    ``code`` (see :func:`code_name`) is said where it adds to the words."""
    said = f" ({code})" if code else ""
    if outcome is Outcome.MECHANISM_MISMATCH:
        return (f"{peer} does not use CURVE" if we_use_curve
                else f"{peer} uses CURVE and {us} does not")
    if outcome is Outcome.HUNG_UP:
        if we_use_curve:
            return (f"{peer} closed the connection during the CURVE handshake{said}: it does not "
                    f"use CURVE, or the server key {us} has is not its key")
        return (f"{peer} closed the connection during the handshake{said}: it uses CURVE and "
                f"{us} does not")
    if outcome is Outcome.NOT_ZMTP:
        return f"{peer} broke the ZeroMQ handshake{said}: it may not be a ptap manager"
    if outcome is Outcome.REFUSED:
        return f"{peer} refused the key of {us}"
    return f"{peer} completed the handshake"
