"""What ``ptap doctor`` asks the cluster (the I/O half of :mod:`manager.cli.doctor`).

Everything here turns a conversation into :class:`~manager.cli.doctor.Facts`
and never judges: the checks do. The manager is first probed at the ZeroMQ
level, a DEALER watched by a socket monitor, which tells in a moment what a
request would only show by timing out: nothing listens there, the CURVE
handshake failed (and how), or the connection is fine. Only then are
``status.get`` and ``nodes.list`` asked. The dashboard's ``/api/status`` is a
plain HTTP GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.metadata
import json
import urllib.parse
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from bus import handshake as handshake_outcome
from bus.client import ManagerClient, new_request_id
from bus.errors import ManagerUnreachable, RequestFailed
from bus.messages import StatusGet
from bus.sockets import CurveKeys, SocketTuning, make_socket
from manager.cli.doctor_facts import Facts
from manager.cli.session import Session

#: Seconds to wait for the manager's connection and handshake.
HANDSHAKE_TIMEOUT = 2.0
#: ``status.get`` waits up to 3 s for each InfluxDB check on the manager's side.
STATUS_TIMEOUT = 8.0
#: Seconds to wait for the dashboard's answer.
DASHBOARD_TIMEOUT = 5.0

_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_HANDSHAKE_SUCCEEDED
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


async def gather(session: Session, dashboard_url: str | None) -> Facts:
    """Ask the manager, then the dashboard; a part that does not answer is noted in
    the facts, never raised."""
    target = session.target
    facts = Facts(manager=str(session.endpoint), keys_dir=target.keys_dir,
                  keys_from=target.keys_from, cli_version=cli_version(),
                  dashboard_url=dashboard_url)
    facts.handshake = await handshake(session.ctx, session.endpoint.router, session.curve)
    if facts.handshake["outcome"] == "failed" and session.curve is not None:
        # Either the server key is not the manager's, or it does not use CURVE at all;
        # a handshake without CURVE tells which.
        plain = await handshake(session.ctx, session.endpoint.router, None)
        if plain["outcome"] == "ok":
            facts.handshake = {**facts.handshake, "outcome": "mechanism-mismatch"}
    if facts.handshake["outcome"] == "ok":
        async with session.client() as client:
            await _ask_manager(client, facts, session.timeout)
    if dashboard_url:
        facts.dashboard, facts.dashboard_error = await asyncio.to_thread(
            dashboard_status, dashboard_url)
    return facts


async def _ask_manager(client: ManagerClient, facts: Facts, timeout: float) -> None:
    try:
        facts.status = await client.request(StatusGet(req_id=new_request_id()),
                                            timeout=max(timeout, STATUS_TIMEOUT))
    except ManagerUnreachable as exc:
        facts.manager_error = str(exc).partition(" — ")[0]
        return
    except RequestFailed as exc:  # e.g. an older manager: unknown-type
        facts.manager_error = f"{exc.code}: {exc.message}"
    try:
        facts.nodes = await client.nodes()
    except (ManagerUnreachable, RequestFailed) as exc:
        facts.manager_error = facts.manager_error or str(exc).partition(" — ")[0]


async def handshake(ctx: zmq.asyncio.Context, address: str, curve: CurveKeys | None,
                    timeout: float = HANDSHAKE_TIMEOUT) -> dict[str, Any]:
    """How far a connection to ``address`` gets: ``{"outcome": O, "event", "value"}``
    with O ``ok``; ``no-connection`` (the first attempt failed: nothing listens, or
    the host is unreachable); ``no-handshake`` (connected, no handshake in time);
    ``failed`` (the manager closed the connection during the handshake: with a
    DEALER that is all libzmq tells of a wrong server key or of one side using
    CURVE and the other not); ``refused`` (ZAP refused the key, ``value`` is its
    status); ``mechanism-mismatch`` when libzmq says so; ``not-zmtp`` when the
    peer broke ZMTP otherwise (``code`` names it).
    """
    sock = make_socket(ctx, zmq.DEALER, SocketTuning(), curve)
    monitor = sock.get_monitor_socket(_EVENTS)
    connected = False
    try:
        sock.connect(address)
        async with asyncio.timeout(timeout):
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                kind, value = int(event["event"]), int(event["value"])
                if kind == zmq.EVENT_CONNECTED:
                    connected = True
                elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return {"outcome": "ok"}
                elif kind == zmq.EVENT_CONNECT_RETRIED:
                    # Before a connection: refused (or timed out). After one: dropped
                    # by the manager mid-handshake.
                    return ({"outcome": "failed", "event": kind, "value": value}
                            if connected else {"outcome": "no-connection"})
                elif kind != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # that one is retried
                    return _failed(kind, value)
    except TimeoutError:
        return {"outcome": "no-handshake" if connected else "no-connection"}
    finally:
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def _failed(kind: int, value: int) -> dict[str, Any]:
    """A failed handshake as :mod:`bus.handshake` reads it; "no detail" is ``failed``,
    which :func:`gather` then narrows down with a second, plain attempt."""
    outcome = handshake_outcome.classify(kind, value)
    name = "failed" if outcome is handshake_outcome.Outcome.HUNG_UP else outcome.value
    return {"outcome": name, "event": kind, "value": value,
            "code": handshake_outcome.code_name(kind, value)}


def dashboard_status(url: str, timeout: float = DASHBOARD_TIMEOUT
                     ) -> tuple[dict[str, Any] | None, str]:
    """``(the JSON of URL/api/status, "")``, or ``(None, why not)`` in one line."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = parts.path.rstrip("/") + "/api/status"
    try:
        conn = kind(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            answer = conn.getresponse()
            body = answer.read(1 << 20)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return None, f"no answer ({getattr(exc, 'strerror', None) or exc})"
    if answer.status in (301, 302, 303, 401, 403):
        return None, (f"{path} answered HTTP {answer.status}: it asks for a login (a dashboard "
                      "not on loopback alone)")
    if answer.status != 200:
        return None, f"{path} answered HTTP {answer.status}"
    try:
        doc = json.loads(body)
    except ValueError:
        return None, f"{path} did not answer JSON: is this a ptap dashboard?"
    return (doc, "") if isinstance(doc, dict) else (None, f"{path} answered {type(doc).__name__}")


def cli_version() -> str:
    """This CLI's installed ptap version ("" when it runs from an uninstalled tree)."""
    try:
        return importlib.metadata.version("ptap")
    except importlib.metadata.PackageNotFoundError:
        return ""
