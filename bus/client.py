"""The async client that the CLI, the shell and the dashboard use to talk to the manager.

Requests go over a DEALER socket and are matched to replies by ``req_id``, so
one client may have many requests in flight (the dashboard does). Events and
live metrics come from the manager's PUB socket through :func:`subscribe`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from bus import codec, messages, topics
from bus.errors import ManagerUnreachable, ProtocolError, RequestFailed
from bus.replies import JobReply, NodeReply
from bus.sockets import CurveKeys, SocketTuning, make_socket, receive

log = logging.getLogger(__name__)


#: Replies may carry a whole HTML report with inline BokehJS (several MB in one
#: string), so strings from the manager may be as long as a message.
REPLY_LIMITS = codec.Limits(max_message_bytes=64 * 1024 * 1024,
                            max_str_len=64 * 1024 * 1024)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class ManagerClient:
    """Request/reply with the manager's ROUTER socket.

    Use as ``async with ManagerClient(addr) as client: await client.nodes()``.
    Every call raises :class:`ManagerUnreachable` when no reply arrives within
    ``timeout`` seconds, and :class:`RequestFailed` when the manager refuses.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 3.0,
        ctx: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._curve = curve
        self._sock: zmq.asyncio.Socket | None = None
        self._pending: dict[str, asyncio.Future[messages.Message]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ManagerClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        sock = make_socket(self._ctx, zmq.DEALER, SocketTuning(max_message_bytes=REPLY_LIMITS.max_message_bytes), self._curve)
        # Queue only on a finished connection: a request must not sit in a
        # buffer and reach a manager that starts minutes later.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(self.address)
        self._sock = sock
        self._reader = asyncio.get_running_loop().create_task(self._read_replies())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def request(self, msg: messages.Message, timeout: float | None = None) -> Any:
        """Send ``msg`` (which carries ``req_id``) and return the reply's ``result``."""
        assert self._sock is not None, "client is not open"
        req_id: str = msg.req_id  # type: ignore[attr-defined]
        fut: asyncio.Future[messages.Message] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                await self._sock.send_multipart(codec.encode(msg))
                reply = await fut
        except TimeoutError:
            raise ManagerUnreachable(self.address, wait) from None
        finally:
            self._pending.pop(req_id, None)
        if isinstance(reply, messages.Error):
            raise RequestFailed(reply.code, reply.message)
        assert isinstance(reply, messages.Reply)
        return reply.result

    async def _read_replies(self) -> None:
        assert self._sock is not None
        while True:
            frames = await receive(self._sock)
            try:
                msg = codec.decode(frames, REPLY_LIMITS)
            except ProtocolError as exc:
                log.warning("ignoring bad frame from manager %s: %s", self.address, exc)
                continue
            req_id = getattr(msg, "req_id", None)
            fut = self._pending.get(req_id) if req_id is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg)

    # --- one method per request type ------------------------------------------

    async def nodes(self, states: list[str] | None = None,
                    labels: list[str] | None = None) -> list[NodeReply]:
        """Nodes in one of ``states`` carrying every one of ``labels`` (all when empty).
        A manager older than the filters lists every node."""
        msg = messages.NodesList(req_id=new_request_id(), states=list(states or []),
                                 labels=list(labels or []))
        result = await self.request(msg)
        return list(result["nodes"])

    async def forget_node(self, node: str) -> NodeReply:
        """Forget lost node ``node`` now; the node dict it had."""
        msg = messages.NodeForget(req_id=new_request_id(), node=node)
        reply: NodeReply = await self.request(msg)
        return reply

    async def submit(self, spec: messages.JobSpec) -> JobReply:
        reply: JobReply = await self.request(messages.JobSubmit(req_id=new_request_id(), spec=spec))
        return reply

    async def jobs(self, limit: int = 100) -> list[JobReply]:
        result = await self.request(messages.JobsList(req_id=new_request_id(), limit=limit))
        return list(result["jobs"])

    async def job(self, job_id: str) -> JobReply:
        reply: JobReply = await self.request(messages.JobGet(req_id=new_request_id(), job_id=job_id))
        return reply

    async def cancel(self, job_id: str) -> JobReply:
        msg = messages.JobCancel(req_id=new_request_id(), job_id=job_id)
        reply: JobReply = await self.request(msg)
        return reply

    async def report(self, job_id: str, format: str = "json",
                     timeout: float | None = None) -> Any:
        """The job's analysis report: the report object for ``json``, else
        ``{"format": F, "content": str}`` (``text``, ``csv``, ``html``)."""
        msg = messages.ReportGet(req_id=new_request_id(), job_id=job_id, format=format)
        return await self.request(msg, timeout=timeout or max(self.timeout, 60.0))

    async def compare(self, base: str, cand: str, format: str = "json",
                      threshold: float = 0.05, timeout: float | None = None) -> Any:
        """Baseline ``base`` against candidate ``cand``; result shaped as for :meth:`report`."""
        msg = messages.CompareGet(req_id=new_request_id(), base=base, cand=cand,
                                  format=format, threshold=threshold)
        return await self.request(msg, timeout=timeout or max(self.timeout, 60.0))

    async def history(self, series: str, metrics: list[str] | None = None, since: float = 0.0,
                      last: int = 0, timeout: float | None = None) -> dict[str, Any]:
        """The performance history of ``series`` (the history object, ``ptap.history``)."""
        msg = messages.HistoryGet(req_id=new_request_id(), series=series,
                                  metrics=list(metrics or []), since=since, last=last)
        return dict(await self.request(msg, timeout=timeout or max(self.timeout, 60.0)))

    async def keys(self, action: str, node: str = "") -> Any:
        msg = messages.Keys(req_id=new_request_id(), action=action, node=node)
        return await self.request(msg)


async def subscribe(
    address: str,
    prefixes: list[str],
    *,
    ctx: zmq.asyncio.Context | None = None,
    curve: CurveKeys | None = None,
) -> AsyncIterator[tuple[str, messages.Message]]:
    """Yield ``(topic, message)`` from the manager's PUB socket for topic prefixes.

    Bad frames are logged and skipped. Metric batches arrive as
    :class:`messages.MetricBatch`.
    """
    ctx = ctx or zmq.asyncio.Context.instance()
    sock = make_socket(ctx, zmq.SUB, SocketTuning(), curve)
    for prefix in prefixes or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    sock.connect(address)
    try:
        while True:
            frames = await receive(sock)
            if len(frames) != 3:
                log.warning("ignoring PUB message with %d frames", len(frames))
                continue
            try:
                msg = codec.decode(frames[1:])
            except ProtocolError as exc:
                log.warning("ignoring bad PUB frame on %r: %s", frames[0][:60], exc)
                continue
            yield frames[0].decode(errors="replace"), msg
    finally:
        sock.close(linger=0)


__all__ = ["ManagerClient", "subscribe", "new_request_id", "topics"]
