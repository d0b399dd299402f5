"""The manager daemon: sockets, the asyncio loop's tasks, and the bookkeeping around runs.

One :class:`Manager` owns a ``zmq.asyncio`` context with three sockets
(docs/protocol.md "Ports"): ROUTER for agents and clients, PUB for events and
live metrics, PULL for metric batches. Three tasks share one loop: the ROUTER
loop (``manager/control.py`` handlers), the PULL loop (:meth:`Manager.on_metrics`)
and a housekeeping tick every ``[basic] epoll_interval`` (liveness sweep,
heartbeats, dispatch, runs lost across a restart).

With ``[security] curve = yes`` (DESIGN §6) every socket is a CURVE server
whose ZAP domain (``ptap.router``, ``ptap.pub``, ``ptap.pull``) the
:class:`manager.keys.KeyStore` policy decides on. The authenticator starts
before anything binds, a throw-away key must be refused before the manager
serves, and the manager stops if the authenticator ever ends: each of these
would otherwise let every key in. Keys are checked per connection, so each
ROUTER message and each metric batch is attributed by the ``User-Id`` that
ZAP authenticated, never by the name a peer claims.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bus import codec, topics
from bus.codec import DEFAULT_LIMITS, Limits
from bus.daemon import StartupError
from bus.messages import (
    Event,
    Heartbeat,
    Message,
    MetricAck,
    NodeState,
    RunDispatch,
    RunState,
)
from bus.ratelimit import RateLimitedLog
from bus.security import AuthenticatorStopped, Gatekeeper, peer_key
from bus.sockets import CurveKeys, SocketTuning, make_socket, receive_forever
from config.schema import ServerConfig
from manager import control, scheduler
from manager.analysis.query import QueryClient
from manager.analysis.service import Analyst
from manager.ingest import Ingest
from manager.keys import KeyStore, Principal, Role
from manager.registry import Registry, StateChange
from manager.scheduler import ACTIVE, Book, Job, Run
from manager.sinks import InfluxV1Sink, Sink
from manager.state import Store

log = logging.getLogger(__name__)

BIND_ATTEMPTS = 50
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: ZAP domains of the ROUTER, PUB and PULL sockets (see KeyStore.allowed).
DOMAINS = {"router": "ptap.router", "pub": "ptap.pub", "pull": "ptap.pull"}


@dataclass(frozen=True, slots=True)
class Ports:
    """The bound ports: ROUTER, PUB (= router + 1) and PULL (= router + 2)."""

    router: int
    pub: int
    pull: int


class Manager:
    """The ptap manager. ``async with Manager(cfg) as m: await m.serve_forever()``.

    ``ready_file`` receives ``{"router", "pub", "pull", "pid"}`` once all
    three sockets are bound. ``ctx`` lets a test share a context; by default
    the manager makes (and destroys) its own. ``sink`` (metric writes) and
    ``query`` (InfluxQL reads for reports) default to what ``[influxdb]`` says.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        *,
        ready_file: str | Path | None = None,
        ctx: zmq.asyncio.Context | None = None,
        sink: Sink | None = None,
        query: QueryClient | None = None,
    ) -> None:
        sec = cfg.security
        if cfg.basic.bind_addr not in LOOPBACK and not sec.curve and not sec.allow_insecure:
            # Jobs are remote execution: an unauthenticated bus must not be
            # reachable from other hosts by accident (DESIGN §6).
            raise StartupError(
                f"[basic] bind_addr = {cfg.basic.bind_addr} is not loopback and CURVE is "
                "off: anyone reaching it could run commands on every node — set [security] "
                "curve = yes, or bind 127.0.0.1, or set allow_insecure = yes on an "
                "isolated lab network"
            )
        self.cfg = cfg
        self.ready_file = Path(ready_file) if ready_file else None
        size = cfg.spool.max_message_bytes
        self.limits = Limits(
            max_message_bytes=size, max_str_len=min(DEFAULT_LIMITS.max_str_len, size)
        )
        self.tuning = SocketTuning(max_message_bytes=size, backlog=cfg.basic.listen_max)
        self.registry = Registry(cfg.basic.interval, cfg.basic.liveness)
        self.book = Book()
        self.counters: Counter[str] = Counter()
        self.bad_frames = RateLimitedLog(log)
        self.ports: Ports | None = None
        self._store: Store | None = None
        #: With CURVE: the key store (who may do what) and the authenticator.
        self.keys: KeyStore | None = None
        self.gate: Gatekeeper | None = None
        #: With CURVE: the key each registered node registered with.
        self.node_keys: dict[str, bytes] = {}
        self.max_pending_keys = control.MAX_PENDING_KEYS
        self._own_ctx = ctx is None
        self._ctx = ctx if ctx is not None else zmq.asyncio.Context()
        self._sockets: list[zmq.asyncio.Socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._restart_deadline: float | None = None
        self._next_heartbeat = 0.0
        #: Monotonic time of the last message sent to each ROUTER peer (heartbeats skip
        #: nodes that just got something else); reset at every heartbeat pass.
        self._last_sent: dict[bytes, float] = {}
        self._closed = False
        self.ingest = Ingest(
            sink or make_sink(cfg),
            ack=self._ack_metrics,
            publish=self._publish_metrics,
            is_known_node=lambda name: self.registry.get(name) is not None,
            limits=self.limits,
            max_points=cfg.spool.max_points,
        )
        self.query = query or make_query_client(cfg)
        self.analyst = Analyst(self.job_dict, self.node_facts, self.query,
                               query_database(cfg))

    # --- life cycle -----------------------------------------------------------------

    async def __aenter__(self) -> Manager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the store, bind, reload unfinished jobs, start the loops, write the ready file."""
        try:
            self._store = Store.open(self.cfg.state.path)
            if self.cfg.security.curve:
                self._start_gate()  # before any bind: no moment without ZAP
            self._bind()
            if self.gate is not None:
                await self._self_check()
            self._reload()
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._router_loop(), name="router"),
                loop.create_task(self._pull_loop(), name="pull"),
                loop.create_task(self._housekeeping(), name="housekeeping"),
                loop.create_task(self.ingest.run(), name="ingest"),
            ]
            self._write_ready_file()
        except BaseException:
            await self.close()
            raise
        assert self.ports is not None
        log.info(
            "manager ready: ROUTER %s, PUB :%d, PULL :%d, state %s",
            self.router_address,
            self.ports.pub,
            self.ports.pull,
            self.cfg.state.path,
        )
        if self.keys is not None:
            listing = self.keys.listing()
            log.info("CURVE on: keys in %s (%d agents accepted, %d pending%s)",
                     self.keys.dir, len(listing["accepted"]), len(listing["pending"]),
                     ", new keys accepted at once" if self.cfg.security.auto_accept else "")
        elif self.cfg.basic.bind_addr not in LOOPBACK:
            log.warning(
                "bus on %s has no CURVE: anyone who reaches it can run commands on every node",
                self.cfg.basic.bind_addr,
            )

    async def serve_forever(self) -> None:
        """Wait until the manager is closed or cancelled (a loop never ends by itself)."""
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        """Stop the loops, close sockets, context and database. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        gate_task = self.gate.task if self.gate is not None else None
        if self._sockets and (self.gate is None or (gate_task and not gate_task.done())):
            # Store what was accepted while the router can still ack it; the
            # rest stays in the agents' spools and is resent to the next manager.
            # (Not with a dead authenticator: then the sockets close at once.)
            await self.ingest.flush(timeout=3.0)
        await self.ingest.cancel_writes()  # before the sink they use goes
        await self.ingest.sink.close()
        await self.query.close()
        for sock in self._sockets:
            sock.close(linger=0)
        if self.gate is not None:
            self.gate.stop()  # only now: no server socket is left to let anyone in
        if self._own_ctx:
            self._ctx.destroy(linger=0)
        if self._store is not None:
            self._store.close()
        self._remove_ready_file()
        log.info("manager stopped")

    @property
    def store(self) -> Store:
        assert self._store is not None, "manager is not started"
        return self._store

    @property
    def router_address(self) -> str:
        """Where clients and agents connect (``tcp://host:port``)."""
        return self._address("router")

    @property
    def pub_address(self) -> str:
        return self._address("pub")

    @property
    def pull_address(self) -> str:
        return self._address("pull")

    def _address(self, which: str) -> str:
        assert self.ports is not None, "manager is not started"
        host = self.cfg.basic.bind_addr
        host = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return _endpoint(host, getattr(self.ports, which))

    # --- CURVE ------------------------------------------------------------------------

    def _start_gate(self) -> None:
        """Open the key store and start the ZAP authenticator in our context."""
        self.keys = KeyStore(Path(self.cfg.security.keys_dir))
        self.gate = Gatekeeper(self._ctx, self.keys.allowed, tuple(DOMAINS.values()))
        self.gate.start()

    def _curve(self, which: str) -> CurveKeys | None:
        if self.keys is None:
            return None
        return CurveKeys(self.keys.server_public, self.keys.server_secret,
                         domain=DOMAINS[which])

    async def _self_check(self) -> None:
        """Refuse to serve unless ZAP really refuses an unknown key on PUB and PULL."""
        assert self.gate is not None and self.keys is not None
        if ":" in self.cfg.basic.bind_addr:
            self._ctx.setsockopt(zmq.IPV6, 1)  # the probe connects to an IPv6 address
        for which, probe in (("pub", zmq.SUB), ("pull", zmq.PUSH)):
            await self.gate.check(self._address(which), self.keys.server_public,
                                  DOMAINS[which], probe)

    def _check_gate(self) -> None:
        """Fail closed: without its authenticator libzmq lets every CURVE key in."""
        task = self.gate.task if self.gate is not None else None
        if self.gate is None or (task is not None and not task.done()):
            return
        why = ("it was never started" if task is None else "it was cancelled"
               if task.cancelled() else f"it failed: {task.exception()!r}")
        raise AuthenticatorStopped(
            f"the CURVE authenticator stopped ({why}); stopping the manager rather than "
            "let unchecked keys in — see the log above, then start ptap-manager again")

    def _may_dispatch(self, name: str) -> bool:
        """With CURVE, only to a node whose key is still accepted for it (a key
        rejected or revoked while connected keeps its connection)."""
        if self.keys is None:
            return True
        key = self.node_keys.get(name)
        return key is not None and self.keys.who(key) == Principal(Role.AGENT, name)

    # --- sockets --------------------------------------------------------------------

    def _bind(self) -> None:
        self._router = make_socket(self._ctx, zmq.ROUTER, self.tuning, self._curve("router"))
        self._pub = make_socket(self._ctx, zmq.PUB, self.tuning, self._curve("pub"))
        self._pull = make_socket(self._ctx, zmq.PULL, self.tuning, self._curve("pull"))
        self._pub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self._pub.underlying)
        self._sockets = [self._router, self._pub, self._pull]
        addr = self.cfg.basic.bind_addr
        for sock in self._sockets:
            sock.setsockopt(zmq.IPV6, int(":" in addr))
        if self.cfg.basic.bind_port:
            self.ports = self._bind_at(addr, self.cfg.basic.bind_port)
            return
        for _ in range(BIND_ATTEMPTS):
            base = self._router.bind_to_random_port(_endpoint(addr, None))
            try:
                self.ports = self._bind_at(addr, base, router_bound=True)
                return
            except StartupError:
                continue  # PUB or PULL port taken: another random base
        raise StartupError(
            f"no free three consecutive ports on {addr} after "
            f"{BIND_ATTEMPTS} tries — set [basic] bind_port"
        )

    def _bind_at(self, addr: str, base: int, router_bound: bool = False) -> Ports:
        """Bind ROUTER (unless already), PUB and PULL at base, +1, +2; all or none."""
        bound: list[tuple[zmq.asyncio.Socket, str]] = []
        plan = [(self._router, base), (self._pub, base + 1), (self._pull, base + 2)]
        if router_bound:
            bound.append((self._router, _endpoint(addr, base)))
            plan = plan[1:]
        for sock, port in plan:
            endpoint = _endpoint(addr, port)
            try:
                if port > 65535:
                    raise zmq.ZMQError(zmq.EINVAL, "port out of range")
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                for done, where in bound:
                    done.unbind(where)
                raise StartupError(
                    f"cannot bind {endpoint}: {exc.strerror} — is another "
                    "ptap-manager running? see server.cfg [basic] bind_addr "
                    "and bind_port"
                ) from None
            bound.append((sock, endpoint))
        return Ports(base, base + 1, base + 2)

    async def send(self, peer: bytes, msg: Message) -> bool:
        """Send to one ROUTER peer without blocking; False (counted) if it is gone or full."""
        try:
            await self._router.send_multipart([peer, *codec.encode(msg)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.bad_frames.warn(
                "send-failed",
                f"cannot send {msg.TYPE.value} to peer {peer.hex()}: {exc.strerror}",
                time.monotonic(),
            )
            return False
        self._last_sent[peer] = time.monotonic()
        return True

    def spawn(self, coro: Any, name: str) -> None:
        """Run ``coro`` beside the loops (a report being computed must not stall the
        ROUTER loop); cancelled when the manager closes."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def publish(self, topic: bytes, frames: list[bytes]) -> None:
        """Publish ``[topic, *frames]``; PUB drops rather than blocks for slow subscribers."""
        try:
            # A PUB socket never waits (it drops at its high-water mark), so a
            # plain send on a synchronous view is enough: no future per batch.
            self._pub_now.send_multipart([topic, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.bad_frames.warn(
                "publish-failed",
                f"cannot publish on {topic[:60]!r}: {exc.strerror}",
                time.monotonic(),
            )

    # --- loops ----------------------------------------------------------------------

    async def _router_loop(self) -> None:
        while True:
            key = None
            if self.keys is None:
                frames = await self._router.recv_multipart()
            else:
                parts = await self._router.recv_multipart(copy=False)
                # The first body frame carries the connection's metadata.
                key = peer_key(parts[1]) if len(parts) > 1 else None
                frames = [p.bytes for p in parts]
            try:
                await control.handle_frames(self, frames, key)
            except Exception as exc:  # a handler bug must not stop the loop
                self.bad_frames.warn(
                    "internal",
                    f"handler failed on a message from peer {bytes(frames[0]).hex()}: {exc!r}",
                    time.monotonic(),
                    exc_info=True,
                )
                await control.reply_error(
                    self,
                    bytes(frames[0]),
                    control.req_id_of(self, frames[1:]),
                    "internal",
                    "the manager failed on this request; see its log",
                )

    async def _pull_loop(self) -> None:
        # zmq.Frame objects only where their CURVE metadata is read.
        await receive_forever(self._pull, self._take_batch, copy=self.keys is None)

    async def _take_batch(self, parts: list[Any]) -> None:
        """One PULL message: checked against its CURVE key (if any), then ingested."""
        try:
            if self.keys is None:
                await self.on_metrics(parts)
                return
            frames = [p.bytes for p in parts]
            if self.batch_allowed(peer_key(parts[0]) if parts else None, frames):
                await self.on_metrics(frames)
        except Exception as exc:
            self.bad_frames.warn(
                "internal", f"metrics hook failed: {exc!r}", time.monotonic(), exc_info=True
            )

    def batch_allowed(self, key: bytes | None, frames: list[bytes]) -> bool:
        """With CURVE: a batch counts only from an accepted agent key, for its own node.

        Checked before ingest decodes anything; a refused batch is counted, logged
        (rate-limited) and not acked.
        """
        assert self.keys is not None
        principal = self.keys.who(key) if key is not None else Principal(Role.UNKNOWN)
        if principal.role is not Role.AGENT:
            why = f"key {key[:8].decode() if key else '?'}… is {principal.role.value}"
        else:
            node = codec.peek_str(frames, "node", self.limits)
            if node == principal.node:
                return True
            why = f"key of node {principal.node} sent a batch for node {str(node)[:64]!r}"
        self.counters["metrics.refused"] += 1
        self.counters["metrics.unauthorized"] += 1
        self.bad_frames.warn("metrics-unauthorized", f"metric batch refused: {why}",
                             time.monotonic())
        return False

    async def on_metrics(self, frames: list[bytes]) -> None:
        """One PULL message (a metric batch): handed to :class:`manager.ingest.Ingest`."""
        if await self.ingest.accept(frames):
            self.counters["metrics.batches"] += 1
        else:
            self.counters["metrics.refused"] += 1

    async def _publish_metrics(self, node: str, frames: list[bytes]) -> None:
        await self.publish(topics.metrics(node), frames)

    async def _ack_metrics(self, node: str, seqs: list[int]) -> None:
        """Ack stored batches to the node's current peer; if it is gone, the
        agent resends them after registering and InfluxDB overwrites them."""
        peer = self.registry.get(node)
        if peer is not None and not peer.lost:
            await self.send(peer.routing_id, MetricAck(seqs=seqs))

    def last_seq(self, node: str) -> int:
        """Highest stored metric sequence of ``node`` since start-up (for Welcome)."""
        return self.ingest.last_seq.get(node, -1)

    async def _housekeeping(self) -> None:
        while True:
            # A timer, not synchronisation: housekeeping runs every epoll_interval
            # (and at once when the authenticator ends, which stops the manager).
            gate_task = self.gate.task if self.gate is not None else None
            if gate_task is not None:
                await asyncio.wait([gate_task], timeout=self.cfg.basic.epoll_interval)
            else:
                await asyncio.sleep(self.cfg.basic.epoll_interval)
            self._check_gate()
            try:
                await self.tick(time.monotonic())
            except Exception as exc:
                self.bad_frames.warn(
                    "internal", f"housekeeping failed: {exc!r}", time.monotonic(), exc_info=True
                )

    async def tick(self, now: float) -> None:
        """One housekeeping pass: liveness, heartbeats, restart deadline, dispatch."""
        await self.node_changed(self.registry.sweep(now))
        if now >= self._next_heartbeat:
            interval = self.cfg.basic.interval
            self._next_heartbeat = now + interval
            # Any message is proof of life to an agent, and one shipping metrics
            # gets an ack every interval: a heartbeat beside it would only wake it
            # once more a second (at 1 Hz the agent's cost is mostly wake-ups).
            # Skipping keeps its silence under 2 intervals, so only with a
            # liveness of 3 or more, where that leaves a whole interval spare.
            recent = interval if self.cfg.basic.liveness >= 3 else 0.0
            live = self.registry.live()
            last_sent = self._last_sent
            self._last_sent = {}  # clients' and gone peers' entries go with this pass
            for node in live:
                sent = last_sent.get(node.routing_id)
                if sent is not None and now - sent < recent:
                    self._last_sent[node.routing_id] = sent
                else:
                    await self.send(node.routing_id, Heartbeat(running=len(node.running)))
        if self._restart_deadline is not None and now >= self._restart_deadline:
            self._restart_deadline = None
            await self._expire_unclaimed_runs()
        await self.dispatch_queued()

    # --- runs and jobs ----------------------------------------------------------------

    def _reload(self) -> None:
        """Take back the unfinished jobs; their nodes get a deadline to come back."""
        for job, runs in self.store.unfinished():
            self.book.add(job, runs)
        active = [r for r in self.book.runs.values() if r.state in ACTIVE]
        if active:
            # liveness × interval, plus one interval of grace for the agent's back-off.
            self._restart_deadline = (
                time.monotonic() + self.registry.timeout + self.cfg.basic.interval
            )
        if self.book.jobs:
            log.info(
                "reloaded %d unfinished jobs (%d runs dispatched or running)",
                len(self.book.jobs),
                len(active),
            )

    async def _expire_unclaimed_runs(self) -> None:
        wall, lost = time.time(), []
        for run in self.book.runs.values():
            if run.state in ACTIVE and self.registry.get(run.node) is None:
                scheduler.set_state(
                    run,
                    RunState.LOST,
                    wall,
                    f"node {run.node} did not come back after the manager restarted",
                )
                log.warning(
                    "run %s lost: node %s did not come back after the restart", run.id, run.node
                )
                lost.append(run)
        await self.commit(lost)

    async def dispatch_queued(self) -> None:
        """Send every run that may start now (see :func:`scheduler.next_dispatches`)."""
        nodes = {n.name: n for n in self.registry.nodes() if self._may_dispatch(n.name)}
        sent, wall = [], time.time()
        for run, node in scheduler.next_dispatches(self.book.runs.values(), nodes):
            spec = self.book.jobs[run.job_id].spec
            msg = RunDispatch(
                run_id=run.id,
                job_id=run.job_id,
                iteration=run.iteration,
                command=spec.command,
                env=spec.env,
                cwd=spec.cwd,
                timeout=spec.timeout,
                collect=spec.collect,
                interval=spec.interval,
            )
            if await self.send(node.routing_id, msg):
                scheduler.set_state(run, RunState.DISPATCHED, wall)
                log.info("run %s dispatched to node %s", run.id, node.name)
                sent.append(run)
        await self.commit(sent)

    async def commit(self, runs: Iterable[Run]) -> None:
        """Store changed runs, re-derive their jobs, publish events, update node states."""
        runs = list(runs)
        if not runs:
            return
        wall = time.time()
        jobs = {r.job_id: self.book.jobs[r.job_id] for r in runs if r.job_id in self.book.jobs}
        changed = [
            j for j in jobs.values() if scheduler.refresh_job(j, self.book.runs_of(j.id), wall)
        ]
        self.store.save(runs, changed)
        for run in runs:
            await self.publish(
                topics.job_events(run.job_id),
                codec.encode(
                    Event(
                        kind="run",
                        ts=wall,
                        node=run.node,
                        job_id=run.job_id,
                        run_id=run.id,
                        state=run.state.value,
                        detail=run.to_dict(),
                    )
                ),
            )
        for job in changed:
            log.info("job %s %s", job.id, job.state.value)
            await self.publish_job(job)
            if job.state.final:
                self.book.drop(job.id)
        for name in sorted({r.node for r in runs}):
            await self.sync_node(name)

    async def sync_node(self, name: str) -> None:
        """Tell the registry which runs ``name`` holds (READY ⇄ BUSY follows)."""
        change = self.registry.set_running(name, self.book.active_on(name))
        await self.node_changed([change] if change else [])

    def node_facts(self, node: str, when: float | None) -> tuple[dict[str, Any], str] | None:
        """``node``'s facts at wall time ``when``: as recorded in the store, else as the
        registry holds them now; with where they came from (``recorded``/``registry``)."""
        found = self.store.facts_at(node, when)
        if found is not None:
            return found[0], "recorded"
        live = self.registry.get(node)
        return (codec.to_dict(live.facts), "registry") if live is not None else None

    def job_dict(self, job_id: str) -> dict[str, Any] | None:
        """The job JSON (with output tails), from memory if unfinished, else the store."""
        job = self.book.jobs.get(job_id)
        if job is not None:
            return job.to_dict(self.book.runs_of(job_id))
        found = self.store.job(job_id)
        return found[0].to_dict(found[1]) if found else None

    async def publish_job(self, job: Job) -> None:
        detail = job.to_dict(self.book.runs_of(job.id), tails=False)
        await self.publish(
            topics.job_events(job.id),
            codec.encode(
                Event(
                    kind="job", ts=time.time(), job_id=job.id, state=job.state.value, detail=detail
                )
            ),
        )

    async def node_changed(self, changes: Iterable[StateChange]) -> None:
        """Log and publish node state changes (and re-registrations)."""
        now, wall = time.monotonic(), time.time()
        for change in changes:
            node = self.registry.get(change.name)
            if node is None:
                continue
            if change.new is NodeState.LOST:
                log.warning("node %s lost: silent for %.1f s", node.name, now - node.last_seen)
            elif change.old is NodeState.LOST:
                log.info("node %s is back: %s", node.name, change.new.value)
            await self.publish(
                topics.node_events(node.name),
                codec.encode(
                    Event(
                        kind="node",
                        ts=wall,
                        node=node.name,
                        state=node.state.value,
                        detail=node.to_dict(now, wall),
                    )
                ),
            )

    # --- ready file -------------------------------------------------------------------

    def _write_ready_file(self) -> None:
        """Write the ports atomically (temp file + rename): readers never see half a file."""
        if self.ready_file is None or self.ports is None:
            return
        data = {
            "router": self.ports.router,
            "pub": self.ports.pub,
            "pull": self.ports.pull,
            "pid": os.getpid(),
        }
        tmp = self.ready_file.with_name(f".{self.ready_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(tmp, self.ready_file)

    def _remove_ready_file(self) -> None:
        """Remove our ready file on shutdown, so nobody connects to a stopped manager."""
        if self.ready_file is None:
            return
        try:
            if json.loads(self.ready_file.read_text(encoding="utf-8")).get("pid") == os.getpid():
                self.ready_file.unlink()
        except (OSError, ValueError, AttributeError):
            pass


def _endpoint(host: str, port: int | None) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}" if port is None else f"tcp://{host}:{port}"


def make_sink(cfg: ServerConfig) -> Sink:
    """The InfluxDB sink ``[influxdb]`` asks for: v2 API with token, org and bucket, else v1."""
    db = cfg.influxdb
    if db.token and db.org and db.bucket:
        from manager.sinks.influx_v2 import InfluxV2Sink

        return InfluxV2Sink(db.url, db.token, db.org, db.bucket, timeout=db.timeout)
    return InfluxV1Sink(db.url, db.database, username=db.username or None,
                        password=db.password or None, token=db.token or None,
                        timeout=db.timeout)


#: Reading a long job's raw points takes longer than a write of one batch.
QUERY_TIMEOUT = 120.0


def query_database(cfg: ServerConfig) -> str:
    """The database InfluxQL reads: ``database`` (v1), or the bucket for v2 users,
    as InfluxDB 2/3 map a bucket to a v1 database of the same name."""
    db = cfg.influxdb
    return db.bucket if db.token and db.org and db.bucket else db.database


def make_query_client(cfg: ServerConfig) -> InfluxV1Sink:
    """Where reports read from: InfluxQL on ``/query`` in every case. 1.x serves it
    natively; 2.x/3.x serve it as the v1-compatible endpoint, with the token."""
    db = cfg.influxdb
    return InfluxV1Sink(db.url, query_database(cfg), username=db.username or None,
                        password=db.password or None, token=db.token or None,
                        timeout=max(db.timeout, QUERY_TIMEOUT))
