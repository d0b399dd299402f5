"""The manager daemon: its sockets, the asyncio loop's tasks, and how they fit together.

One :class:`Manager` owns a ``zmq.asyncio`` context with three sockets
(docs/protocol.md "Ports", bound by ``manager/ports.py``): ROUTER for agents
and clients, PUB for events and live metrics, PULL for metric batches. Three
tasks share one loop: the ROUTER loop (``manager/control.py`` handlers), the
PULL loop (:meth:`Manager.on_metrics`) and a housekeeping tick every
``[basic] epoll_interval`` (liveness sweep, heartbeats, dispatch, runs lost
across a restart). Runs and jobs are kept by :class:`manager.bookkeeper.Bookkeeper`.
No handler sees the manager: each takes the small context of the parts it
uses (``manager/context.py``), made once at start by :meth:`Manager._router_context`.

With ``[security] curve = yes`` (docs/architecture.md#security) every socket is a CURVE server
(``manager/authenticator.py``). The authenticator starts before anything
binds, a throw-away key must be refused before the manager serves, and the
manager stops if the authenticator ever ends: each of these would otherwise
let every key in. Keys are checked per connection, so each ROUTER message and
each metric batch is attributed by the ``User-Id`` that ZAP authenticated,
never by the name a peer claims (``manager/authorization.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bus import topics
from bus.messages import Heartbeat, MetricAck
from bus.ratelimit import RateLimitedLog
from bus.security import Gatekeeper, peer_key
from bus.sockets import receive_forever
from config.schema import ServerConfig
from manager import authenticator, authorization, control, heartbeats
from manager.agent_handlers import AgentContext
from manager.analysis.query import QueryClient
from manager.analysis.service import Analyst
from manager.book import Book
from manager.bookkeeper import Bookkeeper
from manager.client_handlers import ClientContext
from manager.context import Refuse, Replier
from manager.history.service import HistoryService
from manager.influx_setup import make_query_client, make_sink, query_database
from manager.ingest import Ingest
from manager.keys import KeyStore
from manager.node_handlers import NodeContext
from manager.ports import (
    PortLayout,
    remove_ready_file,
    write_ready_file,
)
from manager.registry import Registry
from manager.report_handlers import ReportContext
from manager.sinks import Sink
from manager.sockets import ROUTER_MAX_BODY as ROUTER_MAX_BODY  # tests import it here
from manager.sockets import ManagerSockets
from manager.state import Store

log = logging.getLogger(__name__)

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
        authenticator.refuse_open_bus(cfg)
        self.cfg = cfg
        self.ready_file = Path(ready_file) if ready_file else None
        self._own_ctx = ctx is None
        self._ctx = ctx if ctx is not None else zmq.asyncio.Context()
        self.bad_frames = RateLimitedLog(log)
        self.sockets = ManagerSockets(cfg, self._ctx, self.bad_frames)
        self.limits, self.batch_limits = self.sockets.limits, self.sockets.batch_limits
        self.send = self.sockets.send
        self.publish = self.sockets.publish
        self.peer_connected = self.sockets.peer_connected
        self.replier = Replier(self.send, self.bad_frames)
        self.registry = Registry(cfg.basic.interval, cfg.basic.liveness,
                                 cfg.basic.forget_after)
        #: Unfinished jobs and their runs: handlers read it, the bookkeeper keeps it.
        self.book = Book()
        self.counters: Counter[str] = Counter()
        self._store: Store | None = None
        #: With CURVE: what the key policy consults, and the authenticator.
        self.access: authorization.Access | None = None
        self.gate: Gatekeeper | None = None
        #: The ROUTER handlers' contexts, made once the store and keys are open.
        self.router_context: control.RouterContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._next_heartbeat = 0.0
        self._closed = False
        self._make_parts(cfg, sink, query)

    def _make_parts(self, cfg: ServerConfig, sink: Sink | None, query: QueryClient | None) -> None:
        """The bookkeeper, ingest, analysis and history, wired to this manager."""
        self.bookkeeper = Bookkeeper(
            self.book,
            self.registry,
            lambda: self.store,
            send=self.send,
            publish=self.publish,
            may_dispatch=self._may_dispatch,
        )
        self.ingest = Ingest(
            sink or make_sink(cfg),
            ack=self._ack_metrics,
            publish=self._publish_metrics,
            is_known_node=lambda name: self.registry.get(name) is not None,
            limits=self.batch_limits,
            max_points=cfg.spool.max_points,
            max_bytes=cfg.spool.max_bytes,
        )
        self.query = query or make_query_client(cfg)
        self.analyst = Analyst(self.bookkeeper.job_dict, self.bookkeeper.node_facts,
                               self.query, query_database(cfg))
        self.history = HistoryService(self.analyst, lambda: self.store.path, self.spawn)
        self.bookkeeper.on_job_end = self.history.job_ended
        self.analyst.series_line = self.history.series_line

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
            self.sockets.bind(self.keys)
            if self.gate is not None:
                assert self.keys is not None
                await authenticator.prove_refusal(self.gate, self.keys, self._ctx,
                                                  self.cfg.basic.bind_addr, self._address)
            self.bookkeeper.reload()
            self.router_context = self._router_context()
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._restarting("router", self._router_loop), name="router"),
                loop.create_task(self._restarting("pull", self._pull_loop), name="pull"),
                loop.create_task(self._housekeeping(), name="housekeeping"),
                loop.create_task(self._restarting("ingest", self.ingest.run), name="ingest"),
            ]
            if self.ready_file is not None and self.ports is not None:
                write_ready_file(self.ready_file, self.ports)
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
        authenticator.log_status(self.cfg, self.keys)

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
        if self._store is not None:
            try:  # the last turn's run states, stored (and acked) before the store goes
                await self.bookkeeper.close()
            except Exception as exc:  # noqa: BLE001 - unacked: agents resend them
                log.warning("cannot store the last run states: %r", exc)
        gate_task = self.gate.task if self.gate is not None else None
        if self.sockets.all and (self.gate is None or (gate_task and not gate_task.done())):
            # Store what was accepted while the router can still ack it; the
            # rest stays in the agents' spools and is resent to the next manager.
            # (Not with a dead authenticator: then the sockets close at once.)
            await self.ingest.flush(timeout=3.0)
        await self.ingest.cancel_writes()  # before the sink they use goes
        await self.ingest.sink.close()
        await self.query.close()
        self.sockets.close()
        if self.gate is not None:
            self.gate.stop()  # only now: no server socket is left to let anyone in
        if self._own_ctx:
            self._ctx.destroy(linger=0)
        self.history.close()
        if self._store is not None:
            self._store.close()
        if self.ready_file is not None:
            remove_ready_file(self.ready_file)
        log.info("manager stopped")

    @property
    def store(self) -> Store:
        assert self._store is not None, "manager is not started"
        return self._store

    # With CURVE, the policy's state (``self.access``), as tests and tools read it.
    @property
    def keys(self) -> KeyStore | None:
        return self.access.keys if self.access is not None else None

    @property
    def node_keys(self) -> dict[str, bytes]:
        return self.access.node_keys if self.access is not None else {}

    @property
    def max_pending_keys(self) -> int:
        return self.access.max_pending_keys if self.access else authorization.MAX_PENDING_KEYS

    @max_pending_keys.setter
    def max_pending_keys(self, bound: int) -> None:
        assert self.access is not None, "without CURVE no key is filed"
        self.access.max_pending_keys = bound

    @property
    def ports(self) -> PortLayout | None:
        """The bound ports, once started."""
        return self.sockets.ports

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
        return self.sockets.address(which)

    # --- CURVE and sockets ------------------------------------------------------------

    def _start_gate(self) -> None:
        """Open the key store and start the ZAP authenticator in our context."""
        keys = KeyStore(Path(self.cfg.security.keys_dir))
        self.access = authorization.Access(keys, self.cfg.security)
        self.gate = Gatekeeper(self._ctx, keys.allowed, tuple(authenticator.DOMAINS.values()))
        self.gate.start()

    def _may_dispatch(self, node: str) -> bool:
        return authorization.may_dispatch(self.access, node)

    def _router_context(self) -> control.RouterContext:
        """Each handler's context, from the parts they use (the store is open)."""
        store, basic, replier = self.store, self.cfg.basic, self.replier
        agents = AgentContext(replier, self.registry, self.book, self.bookkeeper, store,
                              self.access, basic.interval, basic.liveness, self.last_seq,
                              self.peer_connected)
        handlers = control.handler_table(
            agents, NodeContext(replier, self.registry),
            ClientContext(replier, self.registry, self.book, self.bookkeeper, store, self.access),
            ReportContext(replier, self.analyst, self.history, self.spawn, self.cfg,
                          self.ingest, self.query, self.access))
        return control.RouterContext(replier, self.registry, self.bookkeeper.node_changed,
                                     self.limits, self.access, agents, handlers)

    def spawn(self, coro: Any, name: str) -> None:
        """Run ``coro`` beside the loops (a report being computed must not stall the
        ROUTER loop); cancelled when the manager closes."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- loops ----------------------------------------------------------------------

    async def _restarting(self, name: str, loop_fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop_fn`` for ever: a loop that fails (a bug; bad input and a socket's
        transient errors are handled inside) is logged and started again, so that it
        cannot end the manager. Housekeeping is not wrapped: it ends the manager on
        purpose when the authenticator stops."""
        while True:
            try:
                await loop_fn()
            except Exception as exc:
                self.bad_frames.warn(f"loop-{name}", f"the {name} loop failed ({exc!r}); "
                                     "starting it again", time.monotonic(), exc_info=True)
                await asyncio.sleep(0.1)  # a pause, so a loop failing at once cannot spin

    async def _router_loop(self) -> None:
        # Messages already waiting are taken without a future each (as on PULL):
        # 1,000 agents answering a dispatch at once are 1,000 messages in a burst.
        # zmq.Frame objects only where their CURVE metadata is read.
        assert self.router_context is not None
        await receive_forever(self.sockets.router,
                              functools.partial(control.handle_message, self.router_context),
                              copy=self.keys is None, drain=32)

    async def _pull_loop(self) -> None:
        # zmq.Frame objects only where their CURVE metadata is read.
        await receive_forever(self.sockets.pull, self._take_batch, copy=self.keys is None)

    async def _take_batch(self, parts: list[Any]) -> None:
        """One PULL message: checked against its CURVE key (if any), then ingested."""
        try:
            if self.access is None:
                await self.on_metrics(parts)
                return
            frames = [p.bytes for p in parts]
            decision = authorization.batch_allowed(self.access, peer_key(parts[0]) if parts
                                                   else None, frames, self.batch_limits)
            if isinstance(decision, Refuse):  # counted and logged, never acked
                self.counters["metrics.refused"] += 1
                self.counters["metrics.unauthorized"] += 1
                self.replier.note(decision)
                return
            await self.on_metrics(frames)
        except Exception as exc:
            self.bad_frames.warn(
                "internal", f"metrics hook failed: {exc!r}", time.monotonic(), exc_info=True
            )

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
            authenticator.check_running(self.gate)
            try:
                await self.tick(time.monotonic())
            except Exception as exc:
                self.bad_frames.warn(
                    "internal", f"housekeeping failed: {exc!r}", time.monotonic(), exc_info=True
                )

    async def tick(self, now: float) -> None:
        """One housekeeping pass: liveness, heartbeats, restart deadline, dispatch."""
        self.registry.heed_stall(now, self.cfg.basic.epoll_interval)  # before judging silence
        await self.bookkeeper.node_changed(self.registry.sweep(now))
        if now >= self._next_heartbeat:
            basic = self.cfg.basic
            self._next_heartbeat = now + basic.interval
            due, self.sockets.last_sent = heartbeats.due(
                self.registry.live(), self.sockets.last_sent, now, basic.interval, basic.liveness)
            for node in due:
                await self.send(node.routing_id, Heartbeat(running=len(node.running)))
        await self.bookkeeper.expire_unclaimed_runs(now)
        await self.bookkeeper.dispatch_queued()
        await self.bookkeeper.flush()  # at once, and again if a flush failed
