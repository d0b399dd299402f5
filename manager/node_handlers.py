"""ROUTER handlers for the client requests about nodes: ``nodes.list``, ``node.forget``.

Kept apart from ``manager/client_handlers.py`` (jobs, keys, reports): a fleet's
node list is filtered here, in the manager, so that a client asking for the
lost nodes of one rack among 2,000 gets those rows and no others. With CURVE
only an administrator's key gets this far (``manager/authorization.py``).
Each handler takes a :class:`NodeContext`: the registry, a replier and a clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bus.errors import ErrorCode
from bus.messages import NodeForget, NodesList, NodeState
from manager.context import Clock, Replier
from manager.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeContext:
    """What the node requests use."""

    replier: Replier
    registry: Registry
    clock: Clock = Clock()

STATE_NAMES = ", ".join(s.value for s in NodeState)


async def handle_nodes_list(ctx: NodeContext, peer: bytes, msg: NodesList) -> None:
    """``nodes.list``: the nodes known (lost ones until ``[basic] forget_after``),
    by name, in one of ``states`` and carrying every one of ``labels`` (no filter:
    all). Reply ``{"nodes": [node, ...]}``; ``bad-request`` for an unknown state."""
    try:
        states = frozenset(NodeState(s) for s in msg.states)
    except ValueError:
        bad = next(s for s in msg.states if s not in set(NodeState))
        await ctx.replier.error(peer, msg.req_id, ErrorCode.BAD_REQUEST,
                                f"no node state {bad[:40]!r}; use {STATE_NAMES}")
        return
    now, wall = ctx.clock.monotonic(), ctx.clock.wall()
    nodes = [n.to_dict(now, wall) for n in ctx.registry.select(states, frozenset(msg.labels))]
    await ctx.replier.reply(peer, msg.req_id, {"nodes": nodes})


async def handle_node_forget(ctx: NodeContext, peer: bytes, msg: NodeForget) -> None:
    """``node.forget``: forget lost node ``node`` now. Its jobs, runs and metrics
    stay; if its agent comes back it registers as a new node. Reply: the node as
    it was; ``not-found`` if unknown, ``bad-request`` if it is not lost (its
    agent would only register again)."""
    node = ctx.registry.get(msg.node)
    if node is None:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.NOT_FOUND,
                                f"no node {msg.node[:64]!r} is known; ptap nodes lists them")
        return
    if not node.lost:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.BAD_REQUEST,
                                f"node {node.name} is {node.state.value}, not lost; stop its "
                                "agent first, or it registers again at once")
        return
    shown = node.to_dict(ctx.clock.monotonic(), ctx.clock.wall())
    ctx.registry.forget(node.name)
    log.info("node %s forgotten on request (it was lost for %.0f s); its jobs and "
             "metrics stay", node.name, shown["silent_for"])
    await ctx.replier.reply(peer, msg.req_id, shown)
