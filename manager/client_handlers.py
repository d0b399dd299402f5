"""ROUTER handlers for client requests about jobs and agent keys (nodes:
``manager/node_handlers.py``; reports, histories and status:
``manager/report_handlers.py``).

Clients are the ``ptap`` CLI and shell, the dashboard and scripts. Every
request carries a ``req_id`` that its ``reply`` or ``error`` echoes. With
CURVE only an administrator's key gets this far (``manager/authorization.py``).
Each handler takes a :class:`ClientContext`.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from bus.errors import ErrorCode
from bus.messages import JobCancel, JobGet, JobsList, JobSubmit, Keys, RunCancel, RunState
from manager import authorization, scheduler
from manager.authorization import Access
from manager.book import Book
from manager.bookkeeper import Bookkeeper
from manager.context import Clock, Replier
from manager.keys import KeyState
from manager.registry import Registry
from manager.scheduler import Job, SpecError
from manager.state import Store

log = logging.getLogger(__name__)

MAX_JOBS_LIST = 1000
#: A node name as the key store files it: a pending duplicate gets ``~<hash>``.
KEY_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(~[0-9a-f]{8})?")


@dataclass(frozen=True)
class ClientContext:
    """What the job and key requests use; ``access`` is None with CURVE off."""

    replier: Replier
    registry: Registry
    book: Book
    bookkeeper: Bookkeeper
    store: Store
    access: Access | None
    clock: Clock = Clock()


# --- jobs ---------------------------------------------------------------------------


async def handle_job_submit(ctx: ClientContext, peer: bytes, msg: JobSubmit) -> None:
    """``job.submit``: create a job; targets are resolved now. Reply: the job, as
    stored, before its runs are dispatched (their states then come as events).

    An unknown node, a selector matching no live node, or an unusable spec
    is refused with ``bad-request``.
    """
    job_id = uuid.uuid4().hex[:12]
    # A node whose key was revoked or rejected while connected is still listed
    # until it goes lost, but gets no run: `all` and labels pass it over, and
    # naming it is refused, rather than leave a run queued for ever.
    nodes = {n.name: n for n in ctx.registry.nodes()
             if authorization.may_dispatch(ctx.access, n.name)}
    barred = [t for t in msg.spec.targets if t not in nodes and ctx.registry.get(t) is not None]
    try:
        if barred:
            raise SpecError(f"node {barred[0]}'s key is not accepted (see ptap keys list)")
        runs = scheduler.expand(job_id, msg.spec, nodes)
    except SpecError as exc:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.BAD_REQUEST, f"job refused: {exc}")
        return
    job = Job(id=job_id, spec=msg.spec, created_at=ctx.clock.wall())
    ctx.store.add_job(job, runs)
    ctx.book.add(job, runs)
    log.info("job %s submitted: %d runs on %s, command %r", job_id, len(runs),
             ",".join(sorted({r.node for r in runs})), " ".join(msg.spec.command)[:200])
    await ctx.bookkeeper.publish_job(job)
    # The reply first: the job is stored, so the client may go on (and --wait is
    # already listening) while its runs go out, one message per node.
    await ctx.replier.reply(peer, msg.req_id, ctx.bookkeeper.job_dict(job_id))
    await ctx.bookkeeper.dispatch_queued({r.node for r in runs})


async def handle_jobs_list(ctx: ClientContext, peer: bytes, msg: JobsList) -> None:
    """``jobs.list``: newest first, at most ``limit`` (≤ 1000), without output tails.
    Reply ``{"jobs": [job, ...]}``."""
    limit = max(1, min(msg.limit, MAX_JOBS_LIST))
    jobs = [job.to_dict(runs, tails=False) for job, runs in ctx.store.jobs(limit)]
    await ctx.replier.reply(peer, msg.req_id, {"jobs": jobs})


async def handle_job_get(ctx: ClientContext, peer: bytes, msg: JobGet) -> None:
    """``job.get``: one job with its runs and output tails; ``not-found`` if unknown."""
    found = ctx.bookkeeper.job_dict(msg.job_id)
    if found is None:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.NOT_FOUND, f"no job {msg.job_id[:40]!r}")
        return
    await ctx.replier.reply(peer, msg.req_id, found)


async def handle_job_cancel(ctx: ClientContext, peer: bytes, msg: JobCancel) -> None:
    """``job.cancel``: queued runs end ``cancelled`` at once; dispatched and running
    ones get ``run.cancel`` and end when their agent reports. Reply: the job
    (a finished job is returned unchanged); ``not-found`` if unknown."""
    if msg.job_id not in ctx.book.jobs:
        found = ctx.bookkeeper.job_dict(msg.job_id)
        if found is None:
            await ctx.replier.error(peer, msg.req_id, ErrorCode.NOT_FOUND, f"no job {msg.job_id[:40]!r}")
        else:
            await ctx.replier.reply(peer, msg.req_id, found)
        return
    log.info("job %s: cancel requested", msg.job_id)
    await _cancel_runs(ctx, msg.job_id)
    await ctx.replier.reply(peer, msg.req_id, ctx.bookkeeper.job_dict(msg.job_id))


async def _cancel_runs(ctx: ClientContext, job_id: str) -> None:
    changed, wall = [], ctx.clock.wall()
    for run in ctx.book.runs_of(job_id):
        if run.state.final:
            continue
        run.cancel_requested = True  # kept, so a lost node gets the cancel when it is back
        if run.state is RunState.QUEUED:
            scheduler.set_state(run, RunState.CANCELLED, wall, "cancelled before it started")
        else:
            node = ctx.registry.get(run.node)
            if node is not None:
                await ctx.replier.send(node.routing_id,
                                       RunCancel(run_id=run.id, reason="job cancelled"))
        changed.append(run)
    await ctx.bookkeeper.commit(changed)


# --- agent keys ---------------------------------------------------------------------


#: ``keys`` actions that change a key, and the state each one files it in.
_KEY_STATES = {"accept": KeyState.ACCEPTED, "reject": KeyState.REJECTED,
               "revoke": KeyState.REVOKED}


async def handle_keys(ctx: ClientContext, peer: bytes, msg: Keys) -> None:
    """``keys``: agent key acceptance (``action`` ``list|summary|accept|reject|revoke``,
    ``node``).

    Reply: for ``list`` ``{"pending": [{"node", "key"}], "accepted": [...],
    "rejected": [...], "revoked": [...]}``; for ``summary`` the count in each
    state with the bounds, ``{"pending": 1, "accepted": 3, "rejected": 0,
    "revoked": 0, "max_nodes": 10000, "max_pending": 1000}``; otherwise the
    changed entry ``{"node", "state", "key"}``. ``not-found`` for a node
    without a key; ``bad-request`` while CURVE is off, or for an ``accept``
    beyond ``[security] max_nodes``. An accepted key may open new PUB and PULL
    connections at once; a rejected or revoked one loses its node (its
    messages are refused) though ZeroMQ keeps its open connections, and stays
    refused, even by ``auto_accept``, until it is accepted again.
    """
    access = ctx.access
    if access is None:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.BAD_REQUEST,
                                "CURVE is off: keys are not used; set [security] curve = yes")
        return
    keys = access.keys
    if msg.action in ("list", "summary"):
        await ctx.replier.reply(peer, msg.req_id, keys.listing() if msg.action == "list"
                                else _key_summary(access))
        return
    if msg.action not in _KEY_STATES:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.BAD_REQUEST,
                                f"keys action {msg.action[:20]!r} is not list, summary, accept, "
                                "reject or revoke")
        return
    entry = _key_entry(keys.listing(), msg.node) if KEY_NODE_NAME.fullmatch(msg.node) else None
    if entry is None:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.NOT_FOUND,
                                f"no agent key for node {msg.node[:80]!r}; see ptap keys list")
        return
    target = _KEY_STATES[msg.action]
    full = authorization.accept_refusal(access, msg.node) \
        if target is KeyState.ACCEPTED and entry["state"] != target else ""
    if full:
        await ctx.replier.error(peer, msg.req_id, ErrorCode.BAD_REQUEST, full)
        return
    keys.set_state(msg.node, target)
    entry = _key_entry(keys.listing(), msg.node) or entry
    log.info("key of node %s: %s", msg.node, entry["state"])
    await ctx.replier.reply(peer, msg.req_id, entry)


def _key_summary(access: Access) -> dict[str, int]:
    counts = {state.value: access.keys.count(state) for state in KeyState}
    return {**counts, "max_nodes": access.security.max_nodes,
            "max_pending": access.max_pending_keys}


def _key_entry(listing: dict[str, list[dict[str, str]]], node: str) -> dict[str, str] | None:
    for state, entries in listing.items():
        for entry in entries:
            if entry["node"] == node:
                return {"node": node, "state": state, "key": entry["key"]}
    return None
