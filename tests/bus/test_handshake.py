"""bus.handshake reads every code libzmq may attach to a failed handshake, and the
dashboard's line says only what that code establishes."""

from __future__ import annotations

import errno

import pytest
import zmq

from bus import handshake
from bus.handshake import Outcome
from dashboard.security import handshake_problem

PROTOCOL_CODES = sorted({getattr(zmq, n) for n in dir(zmq) if n.startswith("PROTOCOL_ERROR_")})
#: What a "no detail" failure may carry: errno at the time libzmq gave up, so any of them.
NO_DETAIL_CODES = sorted(errno.errorcode) + [0, 0x7FFF]
ADDRESS = "tcp://127.0.0.1:5"


def test_the_codes_are_libzmqs_own() -> None:
    # The monitor numbers come from libzmq's zmq.h; if pyzmq ever drops one the
    # enumeration above would silently shrink.
    assert zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH in PROTOCOL_CODES
    assert len(PROTOCOL_CODES) >= 20 and errno.EPIPE in NO_DETAIL_CODES


@pytest.mark.parametrize("code", PROTOCOL_CODES)
def test_each_protocol_code_is_read_for_what_it_is(code: int) -> None:
    outcome = handshake.classify(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, code)
    if code == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        assert outcome is Outcome.MECHANISM_MISMATCH
    else:
        assert outcome is Outcome.NOT_ZMTP
        name = handshake.code_name(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, code)
        assert getattr(zmq, f"PROTOCOL_ERROR_{name}") == code
        for curve in (False, True):
            line = handshake_problem(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, code, ADDRESS, curve)
            # Not a mismatch: saying "uses CURVE" would be a guess.
            assert "CURVE" not in line and f"({name})" in line
            assert "it may not be a ptap manager" in line and "\n" not in line


@pytest.mark.parametrize("code", NO_DETAIL_CODES)
def test_a_null_dashboard_hung_up_on_is_told_the_manager_uses_curve(code: int) -> None:
    # A CURVE manager closes on a NULL client once it has read its greeting; the
    # client sees the mismatch or just the closed connection, whatever the errno.
    mismatch = handshake_problem(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                 zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, ADDRESS, False)
    hung_up = handshake_problem(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, code, ADDRESS, False)
    for line in (mismatch, hung_up):
        assert f"the manager at {ADDRESS}" in line
        assert "uses CURVE and the dashboard does not — set [security] curve = yes" in line
        assert line.endswith("then restart the dashboard")
    assert "closed the connection during the handshake" in hung_up
    assert handshake.code_name(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, code) in hung_up


@pytest.mark.parametrize("code", [errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT, 0])
def test_a_curve_dashboard_hung_up_on_hears_both_possible_causes(code: int) -> None:
    line = handshake_problem(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, code, ADDRESS, True)
    assert "it does not use CURVE, or the server key the dashboard has is not its key" in line
    assert "set [security] curve = no here" in line and "keys_dir" in line


def test_refusal_and_mismatch_under_curve_name_the_certain_cause() -> None:
    refused = handshake_problem(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, ADDRESS, True)
    assert refused.startswith(f"the manager at {ADDRESS} refused the dashboard's key "
                              "(ZAP status 400) — set [security] keys_dir")
    mismatch = handshake_problem(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                 zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, ADDRESS, True)
    assert mismatch == (f"the manager at {ADDRESS} does not use CURVE — set [security] curve = "
                        "no here, or curve = yes in its server.cfg, then restart the dashboard")


def test_code_names_read_like_words() -> None:
    assert handshake.code_name(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, errno.EPIPE) == \
        "EPIPE, broken pipe"
    assert handshake.code_name(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0x7FFF) == "code 0x7fff"
    assert handshake.code_name(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400) == "ZAP status 400"
    assert handshake.code_name(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 1) == "protocol error 0x1"
