"""The manager's three ports: a random base stays out of the kernel's range for
outgoing connections, where a self-connected client could hold it across a restart."""

from __future__ import annotations

import zmq
import zmq.asyncio

from bus.ports import DEFAULT_ROUTER_PORT, RANDOM_BIND_LOW, in_outgoing_range, outgoing_port_range
from config.schema import RemoteServer, ServerBasic
from manager.ports import bind_consecutive


def test_the_kernel_range_is_read_from_proc() -> None:
    low, high = outgoing_port_range()
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert (low, high) == tuple(int(x) for x in f.read().split())


def test_the_default_ports_are_outside_it() -> None:
    assert ServerBasic().bind_port == RemoteServer().server_port == DEFAULT_ROUTER_PORT
    assert not in_outgoing_range(DEFAULT_ROUTER_PORT)
    low, _ = outgoing_port_range()
    assert in_outgoing_range(low - 2) and in_outgoing_range(low) and not in_outgoing_range(low - 3)


def test_a_random_base_is_below_it() -> None:
    ctx = zmq.asyncio.Context()
    socks = [ctx.socket(t) for t in (zmq.ROUTER, zmq.PUB, zmq.PULL) for _ in range(20)]
    try:
        bases = [bind_consecutive(*socks[i::20], "127.0.0.1", 0).router for i in range(20)]
        assert len(set(bases)) == 20
        assert all(RANDOM_BIND_LOW <= b and not in_outgoing_range(b) for b in bases), bases
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()
