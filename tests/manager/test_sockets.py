"""The manager's sockets (``manager/sockets.py``): what they hold for a peer it does not read.

Real sockets on loopback: the bound is libzmq's and the kernel's, which no stand-in has.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio

import config
from bus.ratelimit import RateLimitedLog
from manager.sockets import PULL_RCVHWM, ManagerSockets

#: A batch this large makes the kernel's share (TCP buffers, a few MB) a few dozen
#: batches, so the socket's own queue is what the count shows.
BATCH = b"x" * 64 * 1024
#: Sends tried at most: libzmq's default queue (10,000 a connection) takes them all.
TRIED = 1_000


@pytest.fixture
def sockets() -> Iterator[ManagerSockets]:
    cfg = config.load_server(None, {"basic.bind_port": "0", "basic.bind_addr": "127.0.0.1"},
                             env={})
    ctx = zmq.asyncio.Context()
    made = ManagerSockets(cfg, ctx, RateLimitedLog(logging.getLogger(__name__)))
    made.bind(None)
    try:
        yield made
    finally:
        made.close()
        ctx.destroy(linger=0)


def test_pull_holds_few_batches_of_an_agent_it_does_not_read(sockets: ManagerSockets) -> None:
    """A manager busy elsewhere (a stalled loop, a starved CPU) must not take an agent's
    whole stream into memory: 1,000 agents' batches and resends once grew it to 2.2 GB
    inside libzmq. Past a few batches the agent's send must fail, leaving the batch in
    its spool, and what was taken must all arrive once the manager reads again."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(sockets.address("pull"))
    sent = 0
    try:
        # Writable again within 0.5 s means the manager's side still takes batches.
        while sent < TRIED and push.poll(500, zmq.POLLOUT):
            try:
                push.send(BATCH, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                continue
        # PULL_RCVHWM in the socket's queue, the agent's one, and what TCP buffers hold.
        assert PULL_RCVHWM < sent < PULL_RCVHWM + 200, sent
        pull: zmq.Socket[bytes] = zmq.Socket.shadow(sockets.pull.underlying)
        received = 0
        while received < sent and pull.poll(5_000):
            assert pull.recv() == BATCH
            received += 1
        assert received == sent
    finally:
        ctx.destroy(linger=0)
