"""bus/sockets.py: receive_forever over real PUSH/PULL sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from bus.sockets import SocketTuning, make_socket, receive_forever


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
