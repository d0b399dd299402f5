"""bus/sockets.py: receive and receive_forever over real PUSH/PULL sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from bus.sockets import CurveKeys, SocketTuning, make_socket, receive, receive_forever


def test_receive_forever_hands_over_every_message_in_order() -> None:
    """A backlog (more than one drain's worth, so both the awaited receive and
    the non-blocking drain take part) and messages sent while it waits all
    arrive, in order, each once."""

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        pull = make_socket(ctx, zmq.PULL, SocketTuning())
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push = make_socket(ctx, zmq.PUSH, SocketTuning())
        push.connect(f"tcp://127.0.0.1:{port}")
        got: list[list[bytes]] = []
        enough = asyncio.Event()

        async def handle(frames: list[bytes]) -> None:
            got.append(frames)
            if len(got) == 400:
                enough.set()

        try:
            for i in range(300):
                await push.send_multipart([b"m", str(i).encode()])
            receiver = asyncio.create_task(receive_forever(pull, handle, drain=64))
            async with asyncio.timeout(10):
                while len(got) < 300:
                    await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline
            for i in range(300, 400):
                await push.send_multipart([b"m", str(i).encode()])
            async with asyncio.timeout(10):
                await enough.wait()
            assert [int(f[1]) for f in got] == list(range(400))
            assert all(f[0] == b"m" for f in got)
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            assert receiver.cancelled()
        finally:
            push.close(linger=0)
            pull.close(linger=0)
            ctx.term()

    asyncio.run(scenario())


def test_receive_survives_the_first_large_message_of_new_curve_connections() -> None:
    """With a ZAP handler on the same loop (as in the manager), pyzmq resolves an
    awaited receive with EAGAIN now and then when a new CURVE connection's first
    message is large: it said readable, then had nothing. That ended the
    manager's PULL loop; :func:`receive` must hand over every message instead."""
    count = 12

    def send_each_on_a_new_connection(port: int, server_public: bytes) -> None:
        ctx = zmq.Context()
        try:
            for i in range(count):
                public, secret = zmq.curve_keypair()
                push = ctx.socket(zmq.PUSH)
                push.curve_publickey, push.curve_secretkey = public, secret
                push.curve_serverkey = server_public
                push.linger = 10_000
                push.connect(f"tcp://127.0.0.1:{port}")
                push.send_multipart([b"m", bytes([i]) * 1_000_000])
                push.close()
        finally:
            ctx.term()

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        auth = AsyncioAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        public, secret = zmq.curve_keypair()
        pull = make_socket(ctx, zmq.PULL, SocketTuning(),
                           CurveKeys(public, secret, domain="test.pull"))
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        sender = threading.Thread(target=send_each_on_a_new_connection, args=(port, public))
        sender.start()
        try:
            got = []
            async with asyncio.timeout(60):
                while len(got) < count:
                    got.append((await receive(pull))[1][0])
            assert sorted(got) == list(range(count))
        finally:
            sender.join(60)
            pull.close(linger=0)
            auth.stop()
            ctx.destroy(linger=0)

    asyncio.run(scenario())
