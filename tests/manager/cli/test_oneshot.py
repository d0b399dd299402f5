"""The blocking client of the one-shot commands (manager/cli/oneshot.py), on the wire.

The peer is a ROUTER socket on loopback that decodes what the client sends
with the real :mod:`bus.codec` and answers with it. It stands in for the
manager where the manager cannot be made to misbehave (bad frames, replies
to other requests, silence); ``tests/integration/test_oneshot.py`` runs the
commands against a real manager.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from bus import codec, messages
from bus.errors import ManagerUnreachable, RequestFailed
from bus.sockets import CurveKeys
from manager.cli.oneshot import BlockingClient, run_to_end

#: What the stand-in sends back for one request: a list of messages (each its frames).
Answer = Callable[[messages.Message], list[list[bytes]]]


class Peer:
    """A ROUTER in a thread: decodes each request with bus.codec, answers with ``answer``."""

    def __init__(self, answer: Answer, curve: tuple[bytes, bytes] | None = None) -> None:
        self.answer = answer
        self.seen: list[messages.Message] = []
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        if curve is not None:
            self.sock.curve_server = True
            self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            if not self.sock.poll(20):
                continue
            peer, *body = self.sock.recv_multipart()
            msg = codec.decode(body)
            self.seen.append(msg)
            for frames in self.answer(msg):
                self.sock.send_multipart([peer, *frames])

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def serve() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def start(answer: Answer, curve: tuple[bytes, bytes] | None = None) -> Peer:
        peers.append(Peer(answer, curve))
        return peers[-1]

    yield start
    for peer in peers:
        peer.close()


def reply(result: Any) -> Answer:
    return lambda msg: [codec.encode(messages.Reply(req_id=msg.req_id,  # type: ignore[attr-defined]
                                                    result=result))]


def ask(peer: Peer, call: Callable[[BlockingClient], Any], timeout: float = 3.0,
        curve: CurveKeys | None = None) -> Any:
    """``call(client)`` on a client of ``peer``, run as a one-shot command runs."""
    async def command() -> Any:
        async with BlockingClient(f"tcp://127.0.0.1:{peer.port}", timeout=timeout,
                                  curve=curve) as client:
            return await call(client)

    holder: list[Any] = []

    async def wrapped() -> int:
        holder.append(await command())
        return 0

    assert run_to_end(wrapped()) == 0
    return holder[0]


RESULT = {"nodes": [{"name": "n"}], "jobs": [{"id": "j"}], "id": "j"}


@pytest.mark.parametrize(("call", "expected", "returned"), [
    (lambda c: c.nodes(), messages.NodesList(req_id=""), RESULT["nodes"]),
    (lambda c: c.jobs(limit=7), messages.JobsList(req_id="", limit=7), RESULT["jobs"]),
    (lambda c: c.job("j1"), messages.JobGet(req_id="", job_id="j1"), RESULT),
    (lambda c: c.cancel("j2"), messages.JobCancel(req_id="", job_id="j2"), RESULT),
    (lambda c: c.keys("accept", "n1"), messages.Keys(req_id="", action="accept", node="n1"),
     RESULT),
    (lambda c: c.report("j3", "csv"), messages.ReportGet(req_id="", job_id="j3", format="csv"),
     RESULT),
    (lambda c: c.compare("a", "b", "html", 0.02),
     messages.CompareGet(req_id="", base="a", cand="b", format="html", threshold=0.02), RESULT),
])
def test_each_request_is_the_message_bus_codec_decodes(
        serve: Callable[..., Peer], call: Callable[[BlockingClient], Any],
        expected: messages.Message, returned: Any) -> None:
    peer = serve(reply(RESULT))
    assert ask(peer, call) == returned
    [seen] = peer.seen
    assert type(seen) is type(expected)
    assert codec.to_dict(seen) | {"req_id": ""} == codec.to_dict(expected)
    assert len(seen.req_id) == 16  # type: ignore[attr-defined]


def test_a_refusal_is_request_failed(serve: Callable[..., Peer]) -> None:
    peer = serve(lambda msg: [codec.encode(messages.Error(
        req_id=msg.req_id, code="not-found", message="no job 'x'"))])  # type: ignore[attr-defined]
    with pytest.raises(RequestFailed) as exc:
        ask(peer, lambda c: c.job("x"))
    assert (exc.value.code, exc.value.message) == ("not-found", "no job 'x'")


def test_bad_frames_and_other_requests_replies_are_skipped(
        serve: Callable[..., Peer], caplog: pytest.LogCaptureFixture) -> None:
    def answer(msg: messages.Message) -> list[list[bytes]]:
        req_id = msg.req_id  # type: ignore[attr-defined]
        return [[b"reply", b"\xc1not msgpack"],
                [b"reply", codec.encode(messages.Reply(req_id="other", result=1))[1]],
                [b"error", codec.encode(messages.Reply(req_id=req_id, result=2))[1]],
                [b"heartbeat"],
                codec.encode(messages.Reply(req_id=req_id, result={"nodes": ["mine"]}))]

    assert ask(serve(answer), lambda c: c.nodes()) == ["mine"]
    assert sum("ignoring bad frame" in r.message for r in caplog.records) == 3


def test_silence_is_unreachable_after_the_timeout(serve: Callable[..., Peer]) -> None:
    peer = serve(lambda msg: [])
    started = time.monotonic()
    with pytest.raises(ManagerUnreachable) as exc:
        ask(peer, lambda c: c.nodes(), timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert f"127.0.0.1:{peer.port}" in str(exc.value)


def test_nobody_listening_is_unreachable() -> None:
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as sock:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
    client = BlockingClient(f"tcp://127.0.0.1:{port}", timeout=0.2)
    client.open()
    try:
        with pytest.raises(ManagerUnreachable):
            client.ask("nodes.list", {})
    finally:
        run_to_end(_closed(client))


async def _closed(client: BlockingClient) -> int:
    await client.close()
    return 0


def test_curve(serve: Callable[..., Peer]) -> None:
    server_public, server_secret = zmq.curve_keypair()
    public, secret = zmq.curve_keypair()
    peer = serve(reply({"nodes": []}), curve=(server_public, server_secret))
    keys = CurveKeys(public=public, secret=secret, server_public=server_public)
    assert ask(peer, lambda c: c.nodes(), curve=keys) == []
    wrong = CurveKeys(public=public, secret=secret, server_public=zmq.curve_keypair()[0])
    with pytest.raises(ManagerUnreachable):
        ask(peer, lambda c: c.nodes(), timeout=0.3, curve=wrong)


def test_a_command_that_needs_an_event_loop_is_refused() -> None:
    async def needs_a_loop() -> int:
        await asyncio.sleep(0)  # wait-ok: one turn of the loop
        return 0

    with pytest.raises(RuntimeError, match="event loop"):
        run_to_end(needs_a_loop())
