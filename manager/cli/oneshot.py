"""One-shot commands without an event loop: ``ptap nodes``, ``jobs``, ``job``, ``cancel``,
``keys``, ``report``, ``compare`` and ``run`` (``--wait`` too, with
:class:`BlockingJobEvents`).

Each of these sends a request or two and prints the reply, and people run them
from the shell and from scripts, where their start-up is what they cost. Through
:mod:`bus.client` each one paid for asyncio, ``zmq.asyncio``, the message
classes and their codec (together ~90 ms of imports on a loaded 2-core host,
for a request the manager answers in well under a millisecond). Here they take
a plain blocking DEALER socket and msgpack instead, and import nothing else.

The commands themselves are the ones in :mod:`manager.cli.commands`, unchanged:
they are coroutines that only ``await`` their client. Given a
:class:`BlockingClient`, whose coroutines block and never suspend, such a
coroutine runs to its end in one step, which :func:`run_to_end` takes without
an event loop.

The wire is the protocol's (docs/protocol.md): ``[type, msgpack map]`` with the
request's fields in the order :mod:`bus.codec` writes them, answered by
``reply`` or ``error`` with the same ``req_id``. A reply is read with the
limits :mod:`bus.client` uses (a report may be megabytes); a frame that does
not decode, or answers another request, is logged and skipped, as there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from bus import topics
from bus.errors import ManagerUnreachable, RequestFailed
from manager.cli.session import Session

if TYPE_CHECKING:
    from bus.client import ManagerClient as _ClientShape
    from bus.key_files import CurveKeys
    from bus.messages import Event, JobSpec
    from bus.replies import JobReply, NodeReply
else:
    # For the type checker a BlockingClient is a ManagerClient: it checks that
    # every method here takes and returns what the async one does, so the same
    # commands run on either. At run time it is nothing of it (no asyncio).
    _ClientShape = object


def _warn(fmt: str, *args: object) -> None:
    """Log a warning; ``logging`` (about 6 ms with what it imports) is loaded only
    when there is something to say, not on every command's path."""
    import logging  # noqa: PLC0415 - see the docstring

    logging.getLogger(__name__).warning(fmt, *args)


#: As bus.client.REPLY_LIMITS: a reply may carry a whole HTML report.
MAX_REPLY_BYTES = 64 * 1024 * 1024
#: What the one-shot commands ask longer for (bus.client: at least 60 s).
ANALYSIS_TIMEOUT = 60.0


class BlockingClient(_ClientShape):
    """Request/reply with the manager's ROUTER socket, blocking, one request at a time.

    Same calls, errors and timeouts as :class:`bus.client.ManagerClient`:
    :class:`ManagerUnreachable` when no reply arrives within ``timeout``
    seconds (the CURVE handshake included), :class:`RequestFailed` when the
    manager refuses.
    """

    def __init__(self, address: str, *, timeout: float = 3.0,
                 curve: CurveKeys | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self._curve = curve
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None  # the names differ from
        # ManagerClient's, whose asyncio sockets the type checker sees here

    async def __aenter__(self) -> BlockingClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        self._context = zmq.Context()
        sock = blocking_socket(self._context, zmq.DEALER, MAX_REPLY_BYTES, self._curve)
        # Queue only on a finished connection: a request must not sit in a
        # buffer and reach a manager that starts minutes later.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(self.address)
        self._socket = sock

    async def close(self) -> None:
        if self._context is not None:
            self._context.destroy(linger=0)
        self._context = self._socket = None

    def ask(self, msg_type: str, fields: dict[str, Any], timeout: float | None = None) -> Any:
        """Send request ``msg_type`` with ``fields`` and return the reply's ``result``."""
        assert self._socket is not None, "client is not open"
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        req_id = os.urandom(8).hex()
        body = msgpack.packb({"req_id": req_id, **fields}, use_bin_type=True)
        # With IMMEDIATE the request can go once the connection (and its CURVE
        # handshake) is done; until then the socket is not writable.
        if not self._socket.poll(_ms_until(deadline), zmq.POLLOUT):
            raise ManagerUnreachable(self.address, wait)
        self._socket.send_multipart([msg_type.encode(), body], zmq.NOBLOCK)
        while True:
            if not self._socket.poll(_ms_until(deadline), zmq.POLLIN):
                raise ManagerUnreachable(self.address, wait)
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:  # readable, then dropped (over MAXMSGSIZE): wait on
                continue
            reply = _reply(frames, self.address)
            if reply is None or reply.get("req_id") != req_id:
                continue
            if frames[0] == b"error":
                raise RequestFailed(reply["code"], reply["message"])
            return reply["result"]

    # --- one method per request type, as ManagerClient's ------------------------------

    async def nodes(self, states: list[str] | None = None,
                    labels: list[str] | None = None) -> list[NodeReply]:
        """Nodes in one of ``states`` carrying every one of ``labels`` (all when empty)."""
        filters = {"states": list(states or []), "labels": list(labels or [])}
        return list(self.ask("nodes.list", {k: v for k, v in filters.items() if v})["nodes"])

    async def forget_node(self, node: str) -> NodeReply:
        reply: NodeReply = self.ask("node.forget", {"node": node})
        return reply

    async def submit(self, spec: JobSpec) -> JobReply:
        from bus import codec  # noqa: PLC0415 - the message classes: run's alone

        reply: JobReply = self.ask("job.submit", {"spec": codec.to_dict(spec)})
        return reply

    async def jobs(self, limit: int = 100) -> list[JobReply]:
        return list(self.ask("jobs.list", {"limit": limit})["jobs"])

    async def job(self, job_id: str) -> JobReply:
        reply: JobReply = self.ask("job.get", {"job_id": job_id})
        return reply

    async def cancel(self, job_id: str) -> JobReply:
        reply: JobReply = self.ask("job.cancel", {"job_id": job_id})
        return reply

    async def report(self, job_id: str, format: str = "json",
                     timeout: float | None = None) -> Any:
        return self.ask("report.get", {"job_id": job_id, "format": format},
                        timeout or max(self.timeout, ANALYSIS_TIMEOUT))

    async def compare(self, base: str, cand: str, format: str = "json",
                      threshold: float = 0.05, timeout: float | None = None) -> Any:
        fields = {"base": base, "cand": cand, "format": format, "threshold": threshold}
        return self.ask("compare.get", fields, timeout or max(self.timeout, ANALYSIS_TIMEOUT))

    async def keys(self, action: str, node: str = "") -> Any:
        return self.ask("keys", {"action": action, "node": node})


def blocking_socket(context: zmq.Context[zmq.Socket[bytes]], kind: int, max_bytes: int,
                    curve: CurveKeys | None) -> zmq.Socket[bytes]:
    """A client socket with the options of bus.sockets.make_socket that matter for a
    short-lived command: no linger, a cap on what the manager may send, CURVE."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    if curve is not None:
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret
        sock.curve_serverkey = curve.server_public
    return sock


def _ms_until(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


#: The fields a ``reply`` and an ``error`` must carry (bus.messages.Reply, Error).
_SHAPES: dict[bytes, dict[str, type]] = {b"reply": {"req_id": str, "result": object},
           b"error": {"req_id": str, "code": str, "message": str}}


def _reply(frames: list[bytes], address: str) -> dict[str, Any] | None:
    """The body of a ``reply`` or ``error`` as bus.codec would accept it, else None (logged)."""
    shape = _SHAPES.get(frames[0]) if len(frames) == 2 else None
    if shape is None:
        _warn("ignoring bad frame from manager %s: not a reply (%d frames, type %r)",
              address, len(frames), frames[0][:40] if frames else b"")
        return None
    size = len(frames[1])  # as bus.codec.unpack: no length may claim more than the body
    try:
        body = msgpack.unpackb(frames[1], raw=False, strict_map_key=True, max_str_len=size,
                               max_bin_len=size, max_array_len=min(1_000_000, size),
                               max_map_len=min(65_536, size // 2), max_ext_len=0)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, RecursionError) as exc:
        _warn("ignoring bad frame from manager %s: body is not valid msgpack: %s",
              address, exc)
        return None
    if not isinstance(body, dict) or any(
            name not in body or not isinstance(body[name], kind) for name, kind in shape.items()):
        _warn("ignoring bad frame from manager %s: %s without its fields",
              address, frames[0].decode())
        return None
    return body


class BlockingJobEvents:
    """Every job's events on a blocking SUB socket, for ``ptap run --wait``.

    :meth:`open` returns once the subscriber's handshake with the PUB socket
    succeeded (or failed, or ``timeout`` passed: polling still follows the job).
    """

    #: A flood of other jobs' events ends a wait at its deadline all the same.
    MAX_READS_PER_WAIT = 10_000

    def __init__(self, session: Session) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = self._sock = blocking_socket(self._context, zmq.SUB, MAX_EVENT_BYTES,
                                            session.curve)
        # A wait may last hours: ZMTP pings notice a manager host that vanished without
        # a FIN, and ZeroMQ connects again (bus.sockets.SocketTuning's heartbeat).
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * HEARTBEAT_MS)
        sock.setsockopt(zmq.SUBSCRIBE, topics.JOB_EVENTS.encode())
        self._monitor = sock.get_monitor_socket(HANDSHAKE_OUTCOMES)
        sock.connect(session.endpoint.pub)

    @classmethod
    def open(cls, session: Session, timeout: float) -> BlockingJobEvents:
        events = cls(session)
        try:
            events._monitor.poll(int(timeout * 1000))  # the first outcome will do
        finally:
            events._sock.disable_monitor()
            events._monitor.close(linger=0)
        return events

    async def wait(self, job_id: str, timeout: float) -> list[Event]:
        """``job_id``'s events: from the first one to come within ``timeout`` seconds,
        with those waiting behind it; none if none came."""
        from bus import codec, messages  # noqa: PLC0415 - imported once, by the submit
        from bus.errors import ProtocolError  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        got: list[Event] = []
        for _ in range(self.MAX_READS_PER_WAIT):
            if not self._sock.poll(0 if got else _ms_until(deadline), zmq.POLLIN):
                break
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
                msg = codec.decode(frames[1:]) if len(frames) == 3 else None
            except (zmq.Again, ProtocolError):  # Again: readable, then dropped (too large)
                continue
            if isinstance(msg, messages.Event) and msg.job_id == job_id:
                got.append(msg)
            elif not got and time.monotonic() >= deadline:
                break
        return got

    async def close(self) -> None:
        self._context.destroy(linger=0)


#: The monitor events that end the wait for a subscriber's handshake.
HANDSHAKE_OUTCOMES = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
#: As bus.sockets.SocketTuning.heartbeat_ms.
HEARTBEAT_MS = 2_000
#: As a SUB socket of bus.sockets: an event may carry a turn's runs with their output.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class OneShotSession(Session):
    """A :class:`Session` whose clients block: for commands run by :func:`run_to_end`."""

    def client(self) -> BlockingClient:
        return BlockingClient(self.endpoint.router, timeout=self.timeout, curve=self.curve)

    def job_events(self, timeout: float) -> BlockingJobEvents:
        """Every job's events, subscribed and handshaken (or ``timeout`` passed)."""
        return BlockingJobEvents.open(self, timeout)


def run_to_end(command: Coroutine[Any, Any, int]) -> int:
    """The result of ``command``, a coroutine that awaits nothing but a
    :class:`BlockingClient`, so that it ends at its first step."""
    try:
        command.send(None)
    except StopIteration as done:
        return int(done.value)
    command.close()
    raise RuntimeError("a one-shot command waited for an event loop; register it "
                       "without oneshot (manager/cli/main.py)")
