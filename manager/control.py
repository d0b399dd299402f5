"""ROUTER handlers: one small async function per message type, in :data:`HANDLERS`.

Each handler's docstring documents its message as the manager sees it; the
wire shapes are in ``bus/messages.py`` and the rules in docs/protocol.md.
:func:`handle_frames` is the entry point for every ROUTER message: it
decodes, attributes the message to a node by routing id, and calls the
handler. Nothing a peer sends stops the loop: bad frames are counted, logged
at most once per 10 s per kind, and answered with ``error`` where a reply is
possible.

With CURVE on (``mgr.keys`` set) every message is also authorized by the key
ZAP authenticated for its connection (``User-Id``, see
:func:`authorize`): client requests need an administrator's key, agent
messages the key accepted for the node that routing id registered as, and
``agent.register`` is admitted Salt-style by :func:`admit_agent`. With CURVE
off nothing here changes what is accepted.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bus import codec
from bus.errors import ProtocolError, VersionMismatch
from bus.messages import (
    PROTOCOL_VERSION,
    CompareGet,
    Error,
    Heartbeat,
    JobCancel,
    JobGet,
    JobsList,
    JobSubmit,
    Keys,
    Message,
    MsgType,
    NodesList,
    Register,
    Reply,
    ReportGet,
    RunAck,
    RunCancel,
    RunReport,
    RunState,
    RunUpdate,
    Welcome,
)
from manager import scheduler
from manager.analysis.service import AnalysisError, check_format, check_threshold
from manager.keys import KeyState, Principal, Role
from manager.registry import valid_node_name
from manager.scheduler import InvalidTransition, Job, Run, SpecError

if TYPE_CHECKING:
    from manager.server import Manager

log = logging.getLogger(__name__)

Handler = Callable[["Manager", bytes, Any], Awaitable[None]]

#: Messages only a registered agent may send (anything else is a client request).
AGENT_ONLY = frozenset({MsgType.HEARTBEAT, MsgType.RUN_UPDATE})
#: With CURVE, only an administrator's key may send these.
CLIENT_REQUESTS = frozenset({MsgType.NODES_LIST, MsgType.JOB_SUBMIT, MsgType.JOBS_LIST,
                             MsgType.JOB_GET, MsgType.JOB_CANCEL, MsgType.KEYS,
                             MsgType.REPORT_GET, MsgType.COMPARE_GET})
MAX_JOBS_LIST = 1000
#: A node name as the key store files it: a pending duplicate gets ``~<hash>``.
KEY_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(~[0-9a-f]{8})?")
#: Unknown keys filed as pending at most: anyone may ask, so asking must not fill the disk.
MAX_PENDING_KEYS = 1000
NOT_AUTHORIZED = ("this key may not do that; use the manager's admin key "
                  "(keys_dir/admin.key_secret) with ptap --keys DIR")


async def handle_frames(mgr: Manager, frames: list[bytes], key: bytes | None = None) -> None:
    """Decode one ROUTER message ``[routing id, type, body]`` and run its handler.

    ``key`` is the z85 public key ZAP authenticated for the connection (with CURVE).
    """
    if not frames:
        return
    peer, body = bytes(frames[0]), frames[1:]
    if _speaks_for_its_node(mgr, peer, key):
        change = mgr.registry.seen(peer, time.monotonic())  # any frame proves life
        if change is not None:
            await mgr.node_changed([change])
    try:
        msg = codec.decode(body, mgr.limits)
    except ProtocolError as exc:
        await reject_frame(mgr, peer, body, exc)
        return
    if msg.TYPE in AGENT_ONLY and mgr.registry.node_for(peer) is None:
        await reply_error(mgr, peer, "", "not-registered",
                          f"{msg.TYPE.value} from a peer that has not registered: "
                          "send agent.register first")
        return
    if mgr.keys is not None and not await authorize(mgr, peer, msg, key):
        return
    if isinstance(msg, Register):
        await handle_register(mgr, peer, msg, key)
        return
    await HANDLERS.get(msg.TYPE, handle_unexpected)(mgr, peer, msg)


def _principal(mgr: Manager, key: bytes | None) -> Principal:
    assert mgr.keys is not None
    return mgr.keys.who(key) if key is not None else Principal(Role.UNKNOWN)


def _speaks_for_its_node(mgr: Manager, peer: bytes, key: bytes | None) -> bool:
    """Without CURVE, yes. With it, a routing id registered as a node proves that
    node alive only with the key accepted for it (a key rejected or revoked
    while connected keeps its connection, but not its node)."""
    if mgr.keys is None:
        return True
    node = mgr.registry.node_for(peer)
    return node is None or _principal(mgr, key) == Principal(Role.AGENT, node.name)


async def authorize(mgr: Manager, peer: bytes, msg: Message, key: bytes | None) -> bool:
    """With CURVE: may this connection's key send ``msg``? Answers ``not-authorized`` if not.

    Client requests need an administrator's key; ``heartbeat`` and ``run.update``
    the key accepted for the node this routing id registered as.
    ``agent.register`` is decided by :func:`admit_agent`.
    """
    principal = _principal(mgr, key)
    if msg.TYPE in CLIENT_REQUESTS:
        allowed, why = principal.role is Role.ADMIN, NOT_AUTHORIZED
    elif msg.TYPE in AGENT_ONLY:
        node = mgr.registry.node_for(peer)
        name = node.name if node is not None else "?"
        allowed = principal == Principal(Role.AGENT, name)
        why = (f"this key is no longer accepted for node {name}; see ptap keys list "
               "on the manager")
    else:
        return True
    if not allowed:
        mgr.bad_frames.warn("not-authorized", f"refused {msg.TYPE.value} from peer {peer.hex()}: "
                            f"key {_short(key)} is {principal.role.value}"
                            f"{' of node ' + principal.node if principal.node else ''}",
                            time.monotonic())
        await reply_error(mgr, peer, getattr(msg, "req_id", ""), "not-authorized", why)
    return allowed


def _short(key: bytes | None) -> str:
    return f"{key[:8].decode(errors='replace')}…" if key else "(none)"


async def admit_agent(mgr: Manager, peer: bytes, node: str, key: bytes | None) -> bool:
    """``agent.register`` as ``node`` with ``key``: Salt-style acceptance (DESIGN §6).

    An accepted key must name its own node (else ``key-mismatch``). An unknown
    key is filed as pending (accepted at once with ``auto_accept``); while it is
    pending the answer is ``pending``. A rejected key, or an administrator's,
    gets ``not-authorized``.
    """
    assert mgr.keys is not None
    principal = _principal(mgr, key)
    if key is not None and principal.role is Role.UNKNOWN:
        cap = mgr.max_pending_keys
        if len(mgr.keys.listing()["pending"]) >= cap:
            mgr.bad_frames.warn("keys-pending-full", f"not filing the key of node {node}: "
                                f"{cap} keys are pending already", time.monotonic())
            await reply_error(mgr, peer, "", "not-authorized",
                              f"{cap} agent keys are pending already; ask the manager's "
                              "administrator to accept, reject or revoke some")
            return False
        state = mgr.keys.request(key, node, mgr.cfg.security.auto_accept)
        principal = mgr.keys.who(key)
        if state is KeyState.REJECTED:
            await reply_error(mgr, peer, "", "not-authorized",
                              f"the key of node {node} was rejected; ptap keys revoke "
                              f"{node} on the manager lets it ask again")
            return False
    if principal.role is Role.AGENT:
        if principal.node == node:
            return True
        log.warning("refused registration as node %s from peer %s: its key is accepted "
                    "for node %s", node, peer.hex(), principal.node)
        await reply_error(mgr, peer, "", "key-mismatch",
                          f"this key is accepted for node {principal.node}, not {node}; "
                          f"start the agent as {principal.node}, or give it its own keys_dir")
        return False
    if principal.role is Role.PENDING:
        await reply_error(mgr, peer, "", "pending",
                          f"key for node {principal.node} is pending; run ptap keys accept "
                          f"{principal.node} on the manager")
        return False
    await reply_error(mgr, peer, "", "not-authorized",
                      "this key may not register an agent; an agent uses its own key pair")
    return False


async def reject_frame(mgr: Manager, peer: bytes, body: list[bytes], exc: ProtocolError) -> None:
    """Count and log a frame that does not decode, and tell the peer why."""
    mgr.bad_frames.warn(exc.code, f"bad frame from peer {peer.hex()}: {exc}", time.monotonic())
    await reply_error(mgr, peer, req_id_of(mgr, body), exc.code, str(exc)[:200])


def req_id_of(mgr: Manager, body: list[bytes]) -> str:
    """The ``req_id`` of an invalid request, when it has one, so the client
    gets the error instead of waiting for its timeout."""
    if len(body) != 2 or len(body[1]) > mgr.limits.max_message_bytes:
        return ""
    try:
        data = codec.unpack(body[1], mgr.limits)
    except ProtocolError:
        return ""
    req_id = data.get("req_id") if isinstance(data, dict) else None
    return req_id if isinstance(req_id, str) and len(req_id) <= 64 else ""


async def reply_error(mgr: Manager, peer: bytes, req_id: str, code: str, message: str) -> None:
    await mgr.send(peer, Error(req_id=req_id, code=code, message=message))


# --- agent messages ----------------------------------------------------------------


async def handle_register(mgr: Manager, peer: bytes, msg: Register,
                          key: bytes | None = None) -> None:
    """``agent.register``: a node joins with its facts and the runs it still holds.

    Answers ``agent.welcome`` (heartbeat interval, liveness, last metric
    sequence), or ``error`` ``version`` (other PROTOCOL_VERSION),
    ``name-taken`` (a live peer owns the name) or ``bad-request`` (bad name);
    with CURVE also ``pending``, ``key-mismatch`` or ``not-authorized`` (see
    :func:`admit_agent`). Then reconciles the reported runs with the
    manager's (docs/protocol.md).
    """
    if msg.protocol != PROTOCOL_VERSION:
        log.warning("refused node %r: protocol %d, manager speaks %d",
                    msg.node[:64], msg.protocol, PROTOCOL_VERSION)
        await reply_error(mgr, peer, "", VersionMismatch.code,
                          f"agent speaks protocol {msg.protocol}, manager speaks "
                          f"{PROTOCOL_VERSION}: install the same ptap version on both")
        return
    if not valid_node_name(msg.node):
        await reply_error(mgr, peer, "", "bad-request",
                          f"node name {msg.node[:80]!r} is not 1-64 letters, digits, _ . -")
        return
    if mgr.keys is not None:
        if not await admit_agent(mgr, peer, msg.node, key):
            return
        assert key is not None
        mgr.node_keys[msg.node] = key
    reg = mgr.registry.register(msg.node, peer, msg.facts, time.monotonic(), time.time())
    if not reg.accepted:
        log.warning("refused node %s from peer %s: name taken by a live peer", msg.node, peer.hex())
        await reply_error(mgr, peer, "", "name-taken",
                          f"node name {msg.node} is held by another live agent")
        return
    log.info("node %s registered from peer %s (address %r, %d runs reported)",
             msg.node, peer.hex(), msg.facts.address, len(msg.runs))
    # Kept over time, so reports of old jobs show the environment of their runs.
    mgr.store.record_facts(msg.node, codec.to_dict(msg.facts), time.time())
    await mgr.send(peer, Welcome(node=msg.node, heartbeat_interval=mgr.cfg.basic.interval,
                                 liveness=mgr.cfg.basic.liveness, last_seq=mgr.last_seq(msg.node)))
    await mgr.node_changed(reg.changes)
    await _reconcile(mgr, peer, msg)
    await mgr.sync_node(msg.node)  # a restarted manager learns here what the node holds
    await mgr.dispatch_queued()


async def _reconcile(mgr: Manager, peer: bytes, msg: Register) -> None:
    plan = scheduler.reconcile(msg.node, msg.runs, mgr.book.runs.values())
    changed: list[Run] = []
    replies: list[Message] = []
    for run, report in plan.reported:
        try:
            took, answer = _take_report(run, report)
        except InvalidTransition as exc:
            log.warning("run %s on node %s: ignoring reported %s: %s",
                        run.id, msg.node, report.state.value, exc)
            continue
        changed += [run] if took else []
        replies += answer
    wall = time.time()
    for run in plan.requeue:
        log.info("run %s queued again: node %s did not report it", run.id, msg.node)
        scheduler.set_state(run, RunState.QUEUED, wall)
        changed.append(run)
    for run in plan.lost:
        log.warning("run %s lost: node %s came back without it", run.id, msg.node)
        scheduler.set_state(run, RunState.LOST, wall, f"node {msg.node} came back without this run")
        changed.append(run)
    for report in plan.unknown:
        replies += _answer_unknown(mgr, msg.node, report)
    await mgr.commit(changed)
    for reply in replies:  # acks only once the final states are stored
        await mgr.send(peer, reply)


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
    if changed:
        log.info("run %s on node %s: %s%s", run.id, run.node, run.state.value,
                 f" (exit {run.exit_code})" if run.state.final else "")
    if run.state.final:
        return changed, [RunAck(run_id=run.id)]
    if run.cancel_requested:
        return changed, [RunCancel(run_id=run.id, reason="job cancelled")]
    return changed, []


def _answer_unknown(mgr: Manager, node: str, report: RunReport) -> list[Message]:
    """A run the manager holds no unfinished record of for this node: ack it if
    final (so the agent forgets it), cancel it if it still runs."""
    stored = mgr.store.run(report.run_id)
    if report.state.final:
        if stored is None or stored.node != node:
            log.warning("node %s reported unknown run %r (%s); acking it",
                        node, report.run_id[:80], report.state.value)
        return [RunAck(run_id=report.run_id)]
    log.warning("node %s still runs %r, which the manager holds as %s; cancelling it",
                node, report.run_id[:80], stored.state.value if stored else "unknown")
    return [RunCancel(run_id=report.run_id, reason="the manager holds no such active run")]


async def handle_heartbeat(mgr: Manager, peer: bytes, msg: Heartbeat) -> None:
    """``heartbeat``: proof of life from a registered agent (already counted); no reply."""


async def handle_run_update(mgr: Manager, peer: bytes, msg: RunUpdate) -> None:
    """``run.update``: the agent's run changed state.

    Attributed by routing id: a run that is not on the sender's node is
    refused (``bad-request``). A final state is stored, then acked with
    ``run.ack``; a resend of a stored final state is acked again. A run the
    manager holds no active record of is cancelled on the agent.
    """
    node = mgr.registry.node_for(peer)
    assert node is not None  # handle_frames checked registration
    run = mgr.book.runs.get(msg.run.run_id)
    if run is None:
        replies = _answer_unknown(mgr, node.name, msg.run)
    elif run.node != node.name:
        await reply_error(mgr, peer, "", "bad-request",
                          f"run {run.id} belongs to node {run.node}, not {node.name}")
        return
    else:
        try:
            changed, replies = _take_report(run, msg.run)
        except InvalidTransition as exc:
            await reply_error(mgr, peer, "", "bad-request", f"run {run.id}: {exc}")
            return
        await mgr.commit([run] if changed else [])
    for reply in replies:
        await mgr.send(peer, reply)
    await mgr.dispatch_queued()


# --- client requests ----------------------------------------------------------------


async def handle_nodes_list(mgr: Manager, peer: bytes, msg: NodesList) -> None:
    """``nodes.list``: every node since start-up. Reply ``{"nodes": [node, ...]}``."""
    now, wall = time.monotonic(), time.time()
    nodes = [n.to_dict(now, wall) for n in mgr.registry.nodes()]
    await mgr.send(peer, Reply(req_id=msg.req_id, result={"nodes": nodes}))


async def handle_job_submit(mgr: Manager, peer: bytes, msg: JobSubmit) -> None:
    """``job.submit``: create a job; targets are resolved now. Reply: the job.

    An unknown node, a selector matching no live node, or an unusable spec
    is refused with ``bad-request``.
    """
    job_id = uuid.uuid4().hex[:12]
    try:
        runs = scheduler.expand(job_id, msg.spec, {n.name: n for n in mgr.registry.nodes()})
    except SpecError as exc:
        await reply_error(mgr, peer, msg.req_id, "bad-request", f"job refused: {exc}")
        return
    job = Job(id=job_id, spec=msg.spec, created_at=time.time())
    mgr.store.add_job(job, runs)
    mgr.book.add(job, runs)
    log.info("job %s submitted: %d runs on %s, command %r", job_id, len(runs),
             ",".join(sorted({r.node for r in runs})), " ".join(msg.spec.command)[:200])
    await mgr.publish_job(job)
    await mgr.dispatch_queued()
    await mgr.send(peer, Reply(req_id=msg.req_id, result=mgr.job_dict(job_id)))


async def handle_jobs_list(mgr: Manager, peer: bytes, msg: JobsList) -> None:
    """``jobs.list``: newest first, at most ``limit`` (≤ 1000), without output tails.
    Reply ``{"jobs": [job, ...]}``."""
    limit = max(1, min(msg.limit, MAX_JOBS_LIST))
    jobs = [job.to_dict(runs, tails=False) for job, runs in mgr.store.jobs(limit)]
    await mgr.send(peer, Reply(req_id=msg.req_id, result={"jobs": jobs}))


async def handle_job_get(mgr: Manager, peer: bytes, msg: JobGet) -> None:
    """``job.get``: one job with its runs and output tails; ``not-found`` if unknown."""
    found = mgr.job_dict(msg.job_id)
    if found is None:
        await reply_error(mgr, peer, msg.req_id, "not-found", f"no job {msg.job_id[:40]!r}")
        return
    await mgr.send(peer, Reply(req_id=msg.req_id, result=found))


async def handle_job_cancel(mgr: Manager, peer: bytes, msg: JobCancel) -> None:
    """``job.cancel``: queued runs end ``cancelled`` at once; dispatched and running
    ones get ``run.cancel`` and end when their agent reports. Reply: the job
    (a finished job is returned unchanged); ``not-found`` if unknown."""
    if msg.job_id not in mgr.book.jobs:
        found = mgr.job_dict(msg.job_id)
        if found is None:
            await reply_error(mgr, peer, msg.req_id, "not-found", f"no job {msg.job_id[:40]!r}")
        else:
            await mgr.send(peer, Reply(req_id=msg.req_id, result=found))
        return
    log.info("job %s: cancel requested", msg.job_id)
    await _cancel_runs(mgr, msg.job_id)
    await mgr.send(peer, Reply(req_id=msg.req_id, result=mgr.job_dict(msg.job_id)))


async def _cancel_runs(mgr: Manager, job_id: str) -> None:
    changed, wall = [], time.time()
    for run in mgr.book.runs_of(job_id):
        if run.state.final:
            continue
        run.cancel_requested = True  # kept, so a lost node gets the cancel when it is back
        if run.state is RunState.QUEUED:
            scheduler.set_state(run, RunState.CANCELLED, wall, "cancelled before it started")
        else:
            node = mgr.registry.get(run.node)
            if node is not None:
                await mgr.send(node.routing_id, RunCancel(run_id=run.id, reason="job cancelled"))
        changed.append(run)
    await mgr.commit(changed)


async def handle_keys(mgr: Manager, peer: bytes, msg: Keys) -> None:
    """``keys``: agent key acceptance (``action`` ``list|accept|reject|revoke``, ``node``).

    Reply: for ``list`` ``{"pending": [{"node", "key"}], "accepted": [...],
    "rejected": [...]}``; otherwise the changed entry ``{"node", "state",
    "key"}`` (state ``revoked`` once forgotten). ``not-found`` for a node
    without a key; ``bad-request`` while CURVE is off. An accepted key may open
    new PUB and PULL connections at once; a rejected or revoked one loses its
    node (its messages are refused) though ZeroMQ keeps its open connections.
    """
    keys = mgr.keys
    if keys is None:
        await reply_error(mgr, peer, msg.req_id, "bad-request",
                          "CURVE is off: keys are not used; set [security] curve = yes")
        return
    if msg.action == "list":
        await mgr.send(peer, Reply(req_id=msg.req_id, result=keys.listing()))
        return
    if msg.action not in ("accept", "reject", "revoke"):
        await reply_error(mgr, peer, msg.req_id, "bad-request",
                          f"keys action {msg.action[:20]!r} is not list, accept, reject or revoke")
        return
    entry = _key_entry(keys.listing(), msg.node) if KEY_NODE_NAME.fullmatch(msg.node) else None
    if entry is None:
        await reply_error(mgr, peer, msg.req_id, "not-found",
                          f"no agent key for node {msg.node[:80]!r}; see ptap keys list")
        return
    if msg.action == "revoke":
        keys.revoke(msg.node)
        entry["state"] = "revoked"
    else:
        keys.set_state(msg.node, KeyState.ACCEPTED if msg.action == "accept"
                       else KeyState.REJECTED)
        entry = _key_entry(keys.listing(), msg.node) or entry
    log.info("key of node %s: %s", msg.node, entry["state"])
    await mgr.send(peer, Reply(req_id=msg.req_id, result=entry))


def _key_entry(listing: dict[str, list[dict[str, str]]], node: str) -> dict[str, str] | None:
    for state, entries in listing.items():
        for entry in entries:
            if entry["node"] == node:
                return {"node": node, "state": state, "key": entry["key"]}
    return None


async def handle_report_get(mgr: Manager, peer: bytes, msg: ReportGet) -> None:
    """``report.get``: a job's analysis report (DESIGN §9, docs/analysis.md).

    Reply: the report object (docs/report-schema.json) for ``format`` ``json``,
    else ``{"format": F, "content": str}`` for ``text``, ``csv``, ``html``.
    Errors: ``not-found`` (no such job), ``bad-request`` (unknown format),
    ``unavailable`` (InfluxDB cannot be queried). Computed in the background:
    the queries are awaited and the numpy work runs in an executor, so the
    ROUTER loop goes on serving agents meanwhile.
    """
    if await _refused(mgr, peer, msg.req_id, lambda: check_format(msg.format)):
        return
    mgr.spawn(_analysis_reply(mgr, peer, msg.req_id, mgr.analyst.report(msg.job_id, msg.format)),
              f"report {msg.job_id[:40]}")


async def handle_compare_get(mgr: Manager, peer: bytes, msg: CompareGet) -> None:
    """``compare.get``: job ``cand`` against baseline job ``base`` with ``threshold``
    (0.05 = 5 %). Reply and errors as for ``report.get`` (the comparison object
    for ``json``); ``bad-request`` also for a threshold outside 0–10."""
    def checks() -> None:
        check_format(msg.format)
        check_threshold(msg.threshold)

    if await _refused(mgr, peer, msg.req_id, checks):
        return
    work = mgr.analyst.compare(msg.base, msg.cand, msg.format, msg.threshold)
    mgr.spawn(_analysis_reply(mgr, peer, msg.req_id, work),
              f"compare {msg.base[:40]} {msg.cand[:40]}")


async def _refused(mgr: Manager, peer: bytes, req_id: str, check: Callable[[], object]) -> bool:
    """Run the cheap argument checks now, so a bad request is answered at once."""
    try:
        check()
    except AnalysisError as exc:
        await reply_error(mgr, peer, req_id, exc.code, str(exc))
        return True
    return False


async def _analysis_reply(mgr: Manager, peer: bytes, req_id: str, work: Awaitable[Any]) -> None:
    """Await a report or comparison and answer ``reply``, or ``error`` with its code."""
    started = time.monotonic()
    try:
        result = await work
    except AnalysisError as exc:
        await reply_error(mgr, peer, req_id, exc.code, str(exc))
        return
    except Exception as exc:  # a bug in the analysis must not go unanswered
        log.exception("analysis for request %s failed", req_id)
        await reply_error(mgr, peer, req_id, "internal",
                          f"the manager failed on this report ({type(exc).__name__}); see its log")
        return
    log.info("analysis for request %s done in %.2f s", req_id, time.monotonic() - started)
    await mgr.send(peer, Reply(req_id=req_id, result=result))


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
    await reply_error(mgr, peer, getattr(msg, "req_id", ""), "bad-request",
                      f"{msg.TYPE.value} is not accepted by the manager")


HANDLERS: dict[MsgType, Handler] = {
    MsgType.REGISTER: handle_register,
    MsgType.HEARTBEAT: handle_heartbeat,
    MsgType.RUN_UPDATE: handle_run_update,
    MsgType.NODES_LIST: handle_nodes_list,
    MsgType.JOB_SUBMIT: handle_job_submit,
    MsgType.JOBS_LIST: handle_jobs_list,
    MsgType.JOB_GET: handle_job_get,
    MsgType.JOB_CANCEL: handle_job_cancel,
    MsgType.KEYS: handle_keys,
    MsgType.REPORT_GET: handle_report_get,
    MsgType.COMPARE_GET: handle_compare_get,
}
