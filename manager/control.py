"""ROUTER message handling: the entry point, the handler table, and bad frames.

:func:`handle_frames` is the entry point for every ROUTER message: it
decodes, attributes the message to a node by routing id, and calls the
handler :data:`HANDLERS` names for its type. Nothing a peer sends stops the
loop: bad frames are counted, logged at most once per 10 s per kind, and
answered with ``error`` where a reply is possible.

The handlers are one small async function per message type, whose docstring
documents the message as the manager sees it; the wire shapes are in
``bus/messages.py`` and the rules in docs/protocol.md:

- ``manager/agent_handlers.py``: ``agent.register``, ``heartbeat``, ``run.update``;
- ``manager/node_handlers.py``: ``nodes.list``, ``node.forget``;
- ``manager/client_handlers.py``: jobs, keys, reports and comparisons.

With CURVE on (``mgr.keys`` set) every message is also authorized by the key
ZAP authenticated for its connection, before its handler runs
(``manager/authorization.py``). With CURVE off nothing here changes what is
accepted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bus import codec
from bus.errors import ErrorCode, ProtocolError
from bus.messages import Error, Message, MsgType, Register
from manager import frame_gate
from manager.agent_handlers import handle_heartbeat, handle_register, handle_run_update
from manager.authorization import AGENT_ONLY, authorize, principal, speaks_for_its_node
from manager.client_handlers import (
    handle_compare_get,
    handle_history_get,
    handle_job_cancel,
    handle_job_get,
    handle_job_submit,
    handle_jobs_list,
    handle_keys,
    handle_report_get,
    handle_status_get,
)
from manager.node_handlers import handle_node_forget, handle_nodes_list

if TYPE_CHECKING:
    from manager.server import Manager

Handler = Callable[["Manager", bytes, Any], Awaitable[None]]


async def handle_frames(mgr: Manager, frames: list[bytes], key: bytes | None = None,
                        address: str = "") -> None:
    """Decode one ROUTER message ``[routing id, type, body]`` and run its handler.

    ``key`` is the z85 public key ZAP authenticated for the connection, and
    ``address`` the connection's remote IP address (both with CURVE).
    """
    if not frames:
        return
    peer, body = bytes(frames[0]), frames[1:]
    if mgr.keys is not None:
        refused = frame_gate.refusal(principal(mgr, key).role, body)
        if refused is not None:  # dropped before any decoding
            await reject_frame(mgr, peer, body, refused)
            return
    if speaks_for_its_node(mgr, peer, key):
        change = mgr.registry.seen(peer, time.monotonic())  # any frame proves life
        if change is not None:
            await mgr.bookkeeper.node_changed([change])
    try:
        msg = codec.decode(body, mgr.limits)
    except ProtocolError as exc:
        await reject_frame(mgr, peer, body, exc)
        return
    if msg.TYPE in AGENT_ONLY and mgr.registry.node_for(peer) is None:
        await mgr.reply_error(peer, "", ErrorCode.NOT_REGISTERED,
                              f"{msg.TYPE.value} from a peer that has not registered: "
                              "send agent.register first")
        return
    if mgr.keys is not None and not await authorize(mgr, peer, msg, key):
        return
    if isinstance(msg, Register):
        # The only handler that needs the key: it files or checks it.
        await handle_register(mgr, peer, msg, key, address)
        return
    await HANDLERS.get(msg.TYPE, handle_unexpected)(mgr, peer, msg)


async def reject_frame(mgr: Manager, peer: bytes, body: list[bytes], exc: ProtocolError) -> None:
    """Count and log a frame that does not decode, and tell the peer why."""
    mgr.bad_frames.warn(exc.code, f"bad frame from peer {peer.hex()}: {exc}", time.monotonic())
    await mgr.reply_error(peer, req_id_of(mgr, body), exc.code, str(exc)[:200])


#: Bodies whose ``req_id`` is looked for when refusing them: a request is small.
REQ_ID_SCAN_BYTES = 64 * 1024


def req_id_of(mgr: Manager, body: list[bytes]) -> str:
    """The ``req_id`` of an invalid request, when it has one, so the client
    gets the error instead of waiting for its timeout. Only that field is
    read (:func:`bus.codec.peek_str`), and only in a body of request size."""
    if len(body) != 2 or len(body[1]) > REQ_ID_SCAN_BYTES:
        return ""
    req_id = codec.peek_str(body, "req_id", mgr.limits)
    return req_id if req_id is not None and len(req_id) <= 64 else ""


async def handle_unexpected(mgr: Manager, peer: bytes, msg: Message) -> None:
    """Types the manager sends but never receives; an ``error`` from a peer is
    logged and never answered, so two peers cannot ping-pong errors."""
    node = mgr.registry.node_for(peer)
    who = f"node {node.name}" if node else f"peer {peer.hex()}"
    if isinstance(msg, Error):
        mgr.bad_frames.warn("peer-error", f"{who} sent error {msg.code}: {msg.message[:200]}",
                            time.monotonic())
        return
    mgr.bad_frames.warn("unexpected", f"{who} sent {msg.TYPE.value}, which the manager "
                        "does not accept", time.monotonic())
    await mgr.reply_error(peer, getattr(msg, "req_id", ""), ErrorCode.BAD_REQUEST,
                          f"{msg.TYPE.value} is not accepted by the manager")


HANDLERS: dict[MsgType, Handler] = {
    MsgType.REGISTER: handle_register,
    MsgType.HEARTBEAT: handle_heartbeat,
    MsgType.RUN_UPDATE: handle_run_update,
    MsgType.NODES_LIST: handle_nodes_list,
    MsgType.NODE_FORGET: handle_node_forget,
    MsgType.JOB_SUBMIT: handle_job_submit,
    MsgType.JOBS_LIST: handle_jobs_list,
    MsgType.JOB_GET: handle_job_get,
    MsgType.JOB_CANCEL: handle_job_cancel,
    MsgType.KEYS: handle_keys,
    MsgType.REPORT_GET: handle_report_get,
    MsgType.COMPARE_GET: handle_compare_get,
    MsgType.HISTORY_GET: handle_history_get,
    MsgType.STATUS_GET: handle_status_get,
}
