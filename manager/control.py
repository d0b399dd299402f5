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
- ``manager/client_handlers.py``: jobs and keys;
- ``manager/report_handlers.py``: reports, comparisons, histories, status.

Each handler takes its own small context (``manager/context.py``), bound once by
:func:`handler_table`; :class:`RouterContext` is what this entry point uses.
With CURVE on (``access`` set) every message is also authorized by the key
ZAP authenticated for its connection, before its handler runs: policy
(``manager/authorization.py``) decides, and this loop answers a refusal.
With CURVE off nothing here changes what is accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bus import codec
from bus.codec import Limits
from bus.errors import ErrorCode, ProtocolError
from bus.messages import Error, Message, MsgType, Register
from bus.security import peer_address, peer_key
from manager import frame_gate
from manager.agent_handlers import (
    AgentContext,
    handle_heartbeat,
    handle_register,
    handle_run_update,
)
from manager.authorization import AGENT_ONLY, Access, authorize, speaks_for_its_node
from manager.client_handlers import (
    ClientContext,
    handle_job_cancel,
    handle_job_get,
    handle_job_submit,
    handle_jobs_list,
    handle_keys,
)
from manager.context import Clock, Refuse, Replier
from manager.node_handlers import NodeContext, handle_node_forget, handle_nodes_list
from manager.registry import Registry, StateChange
from manager.report_handlers import (
    ReportContext,
    handle_compare_get,
    handle_history_get,
    handle_report_get,
    handle_status_get,
)

#: A handler bound to its context: ``await handler(peer, msg)``.
Handler = Callable[[bytes, Any], Awaitable[None]]


@dataclass(frozen=True)
class RouterContext:
    """What :func:`handle_frames` uses: the registry (to attribute a message to a
    node, and count any frame as proof of life), ``node_changed`` (the
    bookkeeper's, for a node back from lost), the codec's limits, the key
    policy (None with CURVE off), the agents' context (``agent.register`` also
    needs the key and address) and the other handlers, by type."""

    replier: Replier
    registry: Registry
    node_changed: Callable[[Iterable[StateChange]], Awaitable[None]]
    limits: Limits
    access: Access | None
    agents: AgentContext
    handlers: Mapping[MsgType, Handler]
    clock: Clock = Clock()


def handler_table(agents: AgentContext, nodes: NodeContext, clients: ClientContext,
                  reports: ReportContext) -> dict[MsgType, Handler]:
    """Each message type's handler, bound to the context it takes."""
    bind = functools.partial
    return {
        MsgType.HEARTBEAT: bind(handle_heartbeat, agents),
        MsgType.RUN_UPDATE: bind(handle_run_update, agents),
        MsgType.NODES_LIST: bind(handle_nodes_list, nodes),
        MsgType.NODE_FORGET: bind(handle_node_forget, nodes),
        MsgType.JOB_SUBMIT: bind(handle_job_submit, clients),
        MsgType.JOBS_LIST: bind(handle_jobs_list, clients),
        MsgType.JOB_GET: bind(handle_job_get, clients),
        MsgType.JOB_CANCEL: bind(handle_job_cancel, clients),
        MsgType.KEYS: bind(handle_keys, clients),
        MsgType.REPORT_GET: bind(handle_report_get, reports),
        MsgType.COMPARE_GET: bind(handle_compare_get, reports),
        MsgType.HISTORY_GET: bind(handle_history_get, reports),
        MsgType.STATUS_GET: bind(handle_status_get, reports),
    }


async def handle_message(ctx: RouterContext, parts: list[Any]) -> None:
    """One message as the ROUTER loop receives it: bytes without CURVE, else
    ``zmq.Frame`` objects, whose first body frame carries the key ZAP authenticated
    and the peer's address. A handler that fails (a bug) is logged and answered
    ``internal``, and the loop goes on."""
    key, address = None, ""
    if ctx.access is None:
        frames = parts
    else:
        key = peer_key(parts[1]) if len(parts) > 1 else None
        address = peer_address(parts[1]) if len(parts) > 1 else ""
        frames = [p.bytes for p in parts]
    try:
        await handle_frames(ctx, frames, key, address)
    except Exception as exc:  # a handler bug must not stop the loop
        peer = bytes(frames[0])
        ctx.replier.bad_frames.warn("internal", f"handler failed on a message from peer "
                                    f"{peer.hex()}: {exc!r}", ctx.clock.monotonic(),
                                    exc_info=True)
        await ctx.replier.error(peer, req_id_of(ctx.limits, frames[1:]), ErrorCode.INTERNAL,
                                "the manager failed on this request; see its log")


async def handle_frames(ctx: RouterContext, frames: list[bytes], key: bytes | None = None,
                        address: str = "") -> None:
    """Decode one ROUTER message ``[routing id, type, body]`` and run its handler.

    ``key`` is the z85 public key ZAP authenticated for the connection, and
    ``address`` the connection's remote IP address (both with CURVE).
    """
    if not frames:
        return
    peer, body = bytes(frames[0]), frames[1:]
    if ctx.access is not None:
        refused = frame_gate.refusal(ctx.access.principal(key).role, body)
        if refused is not None:  # dropped before any decoding
            await reject_frame(ctx, peer, body, refused)
            return
    if speaks_for_its_node(ctx.access, ctx.registry, peer, key):
        change = ctx.registry.seen(peer, ctx.clock.monotonic())  # any frame proves life
        if change is not None:
            await ctx.node_changed([change])
    try:
        msg = codec.decode(body, ctx.limits)
    except ProtocolError as exc:
        await reject_frame(ctx, peer, body, exc)
        return
    if msg.TYPE in AGENT_ONLY and ctx.registry.node_for(peer) is None:
        await ctx.replier.error(peer, "", ErrorCode.NOT_REGISTERED,
                                f"{msg.TYPE.value} from a peer that has not registered: "
                                "send agent.register first")
        return
    if ctx.access is not None:
        decision = authorize(ctx.access, ctx.registry, peer, msg.TYPE, key)
        if isinstance(decision, Refuse):
            await ctx.replier.refuse(peer, getattr(msg, "req_id", ""), decision)
            return
    if isinstance(msg, Register):
        # The only handler that needs the key: it files or checks it.
        await handle_register(ctx.agents, peer, msg, key, address)
        return
    handler = ctx.handlers.get(msg.TYPE)
    if handler is None:
        await handle_unexpected(ctx, peer, msg)
    else:
        await handler(peer, msg)


async def reject_frame(ctx: RouterContext, peer: bytes, body: list[bytes],
                       exc: ProtocolError) -> None:
    """Count and log a frame that does not decode, and tell the peer why."""
    ctx.replier.bad_frames.warn(exc.code, f"bad frame from peer {peer.hex()}: {exc}",
                                ctx.clock.monotonic())
    await ctx.replier.error(peer, req_id_of(ctx.limits, body), exc.code, str(exc)[:200])


#: Bodies whose ``req_id`` is looked for when refusing them: a request is small.
REQ_ID_SCAN_BYTES = 64 * 1024


def req_id_of(limits: Limits, body: list[bytes]) -> str:
    """The ``req_id`` of an invalid request, when it has one, so the client
    gets the error instead of waiting for its timeout. Only that field is
    read (:func:`bus.codec.peek_str`), and only in a body of request size."""
    if len(body) != 2 or len(body[1]) > REQ_ID_SCAN_BYTES:
        return ""
    req_id = codec.peek_str(body, "req_id", limits)
    return req_id if req_id is not None and len(req_id) <= 64 else ""


async def handle_unexpected(ctx: RouterContext, peer: bytes, msg: Message) -> None:
    """Types the manager sends but never receives; an ``error`` from a peer is
    logged and never answered, so two peers cannot ping-pong errors."""
    node = ctx.registry.node_for(peer)
    who = f"node {node.name}" if node else f"peer {peer.hex()}"
    bad_frames, now = ctx.replier.bad_frames, ctx.clock.monotonic()
    if isinstance(msg, Error):
        bad_frames.warn("peer-error", f"{who} sent error {msg.code}: {msg.message[:200]}", now)
        return
    bad_frames.warn("unexpected", f"{who} sent {msg.TYPE.value}, which the manager does not "
                    "accept", now)
    await ctx.replier.error(peer, getattr(msg, "req_id", ""), ErrorCode.BAD_REQUEST,
                            f"{msg.TYPE.value} is not accepted by the manager")
