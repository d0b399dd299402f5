"""ROUTER handlers for what agents send: ``agent.register``, ``heartbeat``, ``run.update``.

Registration also reconciles the runs a node reports holding with the
manager's record (docs/protocol.md "Runs"), which is how a restarted
manager or agent picks up where it left off. ``manager/control.py`` routes
messages here; with CURVE, ``manager/authorization.py`` has already checked
the sender's key (and :func:`handle_register` asks it to admit new keys).

Each handler takes an :class:`AgentContext`: the registry, the book and its
bookkeeper, the store, the key policy, a clock and a replier
(``manager/context.py``), so it runs as a plain call in a test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bus import codec
from bus.errors import ErrorCode, VersionMismatch
from bus.messages import (
    PROTOCOL_VERSION,
    Heartbeat,
    Message,
    Register,
    RunAck,
    RunCancel,
    RunReport,
    RunState,
    RunUpdate,
    Welcome,
)
from bus.ratelimit import RateLimitedLog
from manager import scheduler
from manager.authorization import Access, admit_agent
from manager.book import Book
from manager.bookkeeper import Bookkeeper
from manager.context import Clock, Refuse, Replier
from manager.registry import Node, Registry, valid_node_name
from manager.scheduler import InvalidTransition, Run
from manager.state import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentContext:
    """What the agents' handlers use. ``access`` is None with CURVE off;
    ``last_seq`` is the highest metric sequence stored for a node (for the
    welcome); ``peer_connected`` asks ROUTER whether a routing id still has its
    connection; ``interval`` and ``liveness`` are ``[basic]``'s."""

    replier: Replier
    registry: Registry
    book: Book
    bookkeeper: Bookkeeper
    store: Store
    access: Access | None
    interval: float
    liveness: int
    last_seq: Callable[[str], int]
    peer_connected: Callable[[bytes], bool]
    clock: Clock = Clock()

    @property
    def bad_frames(self) -> RateLimitedLog:
        return self.replier.bad_frames


async def handle_register(ctx: AgentContext, peer: bytes, msg: Register,
                          key: bytes | None = None, address: str = "") -> None:
    """``agent.register``: a node joins with its facts and the runs it still holds.

    Answers ``agent.welcome`` (heartbeat interval, liveness, last metric
    sequence), or ``error`` ``version`` (other PROTOCOL_VERSION),
    ``name-taken`` (a live peer owns the name) or ``bad-request`` (bad name);
    with CURVE also ``pending``, ``key-mismatch`` or ``not-authorized`` (see
    :func:`manager.authorization.admit_agent`). Then reconciles the reported
    runs with the manager's (docs/protocol.md).
    """
    if not await _speaks_our_protocol(ctx, peer, msg):
        return
    if ctx.access is not None:
        decision = admit_agent(ctx.access, peer, msg.node, key, address)
        if isinstance(decision, Refuse):
            await ctx.replier.refuse(peer, "", decision)
            return
        assert key is not None
    takeover = _may_take_over(ctx, peer, msg.node, key)
    if key is not None and ctx.access is not None:
        ctx.access.node_keys[msg.node] = key
    reg = ctx.registry.register(msg.node, peer, msg.facts, ctx.clock.monotonic(),
                                ctx.clock.wall(), msg.sent_at, takeover=takeover)
    if not reg.accepted:
        ctx.bad_frames.warn("name-taken", f"refused node {msg.node} from peer {peer.hex()}: "
                            "name taken by a live peer")
        await ctx.replier.error(peer, "", ErrorCode.NAME_TAKEN,
                                f"node name {msg.node} is held by another live agent")
        return
    if reg.replaced is not None:
        log.info("node %s: its agent is back on a new connection (peer %s), which takes "
                 "over from peer %s at once", msg.node, peer.hex(), reg.replaced.hex())
    log.info("node %s registered from peer %s (address %r, %d runs reported)",
             msg.node, peer.hex(), msg.facts.address, len(msg.runs))
    # Kept over time, so reports of old jobs show the environment of their runs.
    ctx.store.record_facts(msg.node, codec.to_dict(msg.facts), ctx.clock.wall())
    await ctx.replier.send(peer, Welcome(node=msg.node, heartbeat_interval=ctx.interval,
                                         liveness=ctx.liveness,
                                         last_seq=ctx.last_seq(msg.node)))
    await ctx.bookkeeper.node_changed(reg.changes)
    if reg.node is not None:
        _check_clock(ctx, reg.node)
    await _reconcile(ctx, peer, msg)
    # A restarted manager learns here what the node holds.
    await ctx.bookkeeper.sync_node(msg.node)
    await ctx.bookkeeper.dispatch_queued([msg.node])


async def _speaks_our_protocol(ctx: AgentContext, peer: bytes, msg: Register) -> bool:
    """True if ``msg`` has our PROTOCOL_VERSION and a usable node name; else answers
    ``version`` or ``bad-request``."""
    if msg.protocol != PROTOCOL_VERSION:
        ctx.bad_frames.warn("version", f"refused node {msg.node[:64]!r}: protocol "
                            f"{msg.protocol}, manager speaks {PROTOCOL_VERSION}")
        await ctx.replier.error(peer, "", VersionMismatch.code,
                                f"agent speaks protocol {msg.protocol}, manager speaks "
                                f"{PROTOCOL_VERSION}: install the same ptap version on both")
        return False
    if not valid_node_name(msg.node):
        await ctx.replier.error(peer, "", ErrorCode.BAD_REQUEST,
                                f"node name {msg.node[:80]!r} is not 1-64 letters, digits, "
                                "_ . -")
        return False
    return True


def _may_take_over(ctx: AgentContext, peer: bytes, name: str, key: bytes | None) -> bool:
    """May ``peer`` take node ``name`` from the connection that holds it, which is not lost?

    After a pause or a partition the agent gives its old connection up and
    registers on a new one before the manager declares the old one lost;
    waiting for that kept the node away for seconds. So a new connection takes
    the node over at once when the old one is dead and the new one is the
    same agent. Dead: ROUTER has dropped it, or (a partition TCP has not
    noticed) it has missed two heartbeats. The same agent: with
    CURVE the key is the node's identity, so the key the node registered with
    (any other key was refused above); without CURVE there is no identity, and
    only a dropped connection counts. Two live agents sharing a key and a name
    (a cloned host) still meet ``name-taken`` rather than take turns.
    """
    owner = ctx.registry.get(name)
    if owner is None or owner.lost or owner.routing_id == peer:
        return False  # nothing live to take over
    if ctx.access is not None and (key is None or ctx.access.node_keys.get(name) != key):
        return False
    if not ctx.peer_connected(owner.routing_id):
        return True
    silent = ctx.clock.monotonic() - owner.last_seen
    return ctx.access is not None and silent >= 2 * ctx.registry.interval


async def _reconcile(ctx: AgentContext, peer: bytes, msg: Register) -> None:
    plan = scheduler.reconcile(msg.node, msg.runs, ctx.book.on_node(msg.node))
    changed: list[Run] = []
    replies: list[Message] = []
    for run, report in plan.reported:
        try:
            took, answer = _take_report(run, report)
        except InvalidTransition as exc:
            ctx.bad_frames.warn("bad-report", f"run {run.id} on node {msg.node}: ignoring "
                                f"reported {report.state.value}: {exc}")
            continue
        changed += [run] if took else []
        replies += answer
    wall = ctx.clock.wall()
    for run in plan.requeue:
        log.info("run %s queued again: node %s did not report it", run.id, msg.node)
        scheduler.set_state(run, RunState.QUEUED, wall)
        changed.append(run)
    for run in plan.lost:
        log.warning("run %s lost: node %s came back without it", run.id, msg.node)
        scheduler.set_state(run, RunState.LOST, wall, f"node {msg.node} came back without this run")
        changed.append(run)
    for report in plan.unknown:
        replies += _answer_unknown(ctx, msg.node, report)
    await ctx.bookkeeper.commit(changed)
    for reply in replies:  # acks only once the final states are stored
        await ctx.replier.send(peer, reply)


def _take_report(run: Run, report: RunReport) -> tuple[bool, list[Message]]:
    """Apply an agent's report to a run it holds: (changed, what to answer it).

    A final run is acked. A run the manager already holds as final but the
    agent still runs (it was declared lost) is cancelled there, so no
    untracked test keeps the node busy. Other refusals raise InvalidTransition.
    """
    if run.state.final and not report.state.final:
        log.warning("run %s: node %s still runs it, but it ended %s; cancelling it",
                    run.id, run.node, run.state.value)
        return False, [RunCancel(run_id=run.id, reason=f"the run ended {run.state.value}")]
    changed = scheduler.apply_report(run, report)
    # One line per run only when it ends badly; the rest at debug level (the job's
    # own lines say when it runs and ends), or 1,000 nodes would write 2,000 lines.
    level = logging.INFO if run.state.final and run.state is not RunState.SUCCEEDED \
        else logging.DEBUG
    if changed and log.isEnabledFor(level):
        log.log(level, "run %s on node %s: %s%s", run.id, run.node, run.state.value,
                f" (exit {run.exit_code})" if run.state.final else "")
    if run.state.final:
        return changed, [RunAck(run_id=run.id)]
    if run.cancel_requested:
        return changed, [RunCancel(run_id=run.id, reason="job cancelled")]
    return changed, []


def _answer_unknown(ctx: AgentContext, node: str, report: RunReport) -> list[Message]:
    """A run the manager holds no unfinished record of for this node: ack it if
    final (so the agent forgets it), cancel it if it still runs."""
    stored = ctx.store.run(report.run_id)
    if report.state.final:
        if stored is None or stored.node != node:
            ctx.bad_frames.warn("unknown-run", f"node {node} reported unknown run "
                                f"{report.run_id[:80]!r} ({report.state.value}); acking it")
        return [RunAck(run_id=report.run_id)]
    ctx.bad_frames.warn("unknown-run", f"node {node} still runs {report.run_id[:80]!r}, "
                        "which the manager holds as "
                        f"{stored.state.value if stored else 'unknown'}; cancelling it")
    return [RunCancel(run_id=report.run_id, reason="the manager holds no such active run")]


async def handle_heartbeat(ctx: AgentContext, peer: bytes, msg: Heartbeat) -> None:
    """``heartbeat``: proof of life from a registered agent (already counted); no reply.

    Its clock stamp updates the node's clock offset (a warning when it exceeds
    the sampling interval), and its spool depth and dropped samples are kept
    for ``nodes.list`` (``ptap nodes``, ``ptap doctor``).
    """
    node = ctx.registry.beat(peer, ctx.clock.wall(), msg.sent_at, msg.spool_depth,
                             msg.samples_dropped, msg.app_dropped)
    if node is not None:
        _check_clock(ctx, node)


def _check_clock(ctx: AgentContext, node: Node) -> None:
    """Warn (rate-limited) while a node's clock is off by more than the sampling
    interval: its samples then land in another interval than other nodes' do."""
    if not ctx.registry.clock_skewed(node):
        return
    offset = node.clock_offset
    assert offset is not None
    ctx.bad_frames.warn("clock-offset", f"node {node.name}: its clock is {abs(offset):.3f} s "
                        f"{'behind' if offset > 0 else 'ahead of'} the manager's, more than "
                        f"the {ctx.registry.interval:g} s sampling interval, so its samples "
                        "are misplaced on a multi-node timeline; synchronise both clocks "
                        "(chrony or systemd-timesyncd)")


async def handle_run_update(ctx: AgentContext, peer: bytes, msg: RunUpdate) -> None:
    """``run.update``: the agent's run changed state.

    Attributed by routing id: a run that is not on the sender's node is
    refused (``bad-request``). A final state is stored, then acked with
    ``run.ack``; a resend of a stored final state is acked again. A run the
    manager holds no active record of is cancelled on the agent.
    """
    node = ctx.registry.node_for(peer)
    assert node is not None  # handle_frames checked registration
    run = ctx.book.runs.get(msg.run.run_id)
    if run is None:
        replies = _answer_unknown(ctx, node.name, msg.run)
    elif run.node != node.name:
        await ctx.replier.error(peer, "", ErrorCode.BAD_REQUEST,
                                f"run {run.id} belongs to node {run.node}, not {node.name}")
        return
    else:
        try:
            changed, replies = _take_report(run, msg.run)
        except InvalidTransition as exc:
            await ctx.replier.error(peer, "", ErrorCode.BAD_REQUEST, f"run {run.id}: {exc}")
            return
        # Stored with the rest of this turn's updates; the ack waits for that commit
        # (also a resend's: its first copy may be staged still), and the node's next
        # run goes out after its ack.
        await ctx.bookkeeper.stage([run] if changed else [], [(peer, r) for r in replies],
                                   dispatch_on=[node.name] if run.state.final else [])
        return
    for reply in replies:
        await ctx.replier.send(peer, reply)
    await ctx.bookkeeper.dispatch_queued([node.name])
