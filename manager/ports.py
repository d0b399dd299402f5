"""Where the manager listens: three consecutive ports, their addresses, and the ready file.

ROUTER binds ``bind_port``, PUB ``bind_port + 1`` and PULL ``bind_port + 2``
(docs/protocol.md "Ports"), so a peer that knows one port knows all three.
With ``bind_port = 0`` the ROUTER takes a random free port and the other two
follow it; if either is taken, the three start again elsewhere. The ready
file tells a launcher which ports were taken, once all three are bound.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import zmq
import zmq.asyncio

from bus.daemon import StartupError
from bus.ports import MAX_ROUTER_PORT, PULL_OFFSET, RANDOM_BIND_LOW, outgoing_port_range
from bus.ports import PortLayout as PortLayout  # what bind_consecutive returns
from bus.ports import tcp_endpoint as endpoint

#: Random bases tried before giving up on ``bind_port = 0``.
BIND_ATTEMPTS = 50


def connect_host(bind_addr: str) -> str:
    """The host a local peer connects to for ``bind_addr``: a wildcard bind is
    reached over loopback, as a wildcard is no address to connect to."""
    return {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_addr, bind_addr)


def bind_consecutive(
    router: zmq.asyncio.Socket,
    pub: zmq.asyncio.Socket,
    pull: zmq.asyncio.Socket,
    addr: str,
    port: int,
) -> PortLayout:
    """Bind the three sockets at ``port``, +1, +2, or at a random free base if ``port`` is 0.

    Raises :class:`StartupError` (one line saying what to change) when that fails.
    """
    sockets = (router, pub, pull)
    for sock in sockets:
        sock.setsockopt(zmq.IPV6, int(":" in addr))
    if port:
        return _bind_at(sockets, addr, port)
    # pyzmq's default random range (49152-65535) is where the kernel picks outgoing
    # source ports; below it a restart cannot find its port taken by a
    # self-connected client (bus.ports.outgoing_port_range).
    low = outgoing_port_range()[0]
    top = low if low > RANDOM_BIND_LOW + 100 else MAX_ROUTER_PORT  # a range starting low: all
    for _ in range(BIND_ATTEMPTS):
        base = router.bind_to_random_port(endpoint(addr, None), min_port=RANDOM_BIND_LOW,
                                          max_port=top - PULL_OFFSET)
        try:
            return _bind_at(sockets, addr, base, router_bound=True)
        except StartupError:
            continue  # PUB or PULL port taken: another random base
    raise StartupError(
        f"no free three consecutive ports on {addr} after "
        f"{BIND_ATTEMPTS} tries — set [basic] bind_port"
    )


def _bind_at(
    sockets: tuple[zmq.asyncio.Socket, zmq.asyncio.Socket, zmq.asyncio.Socket],
    addr: str,
    base: int,
    router_bound: bool = False,
) -> PortLayout:
    """Bind ROUTER (unless already), PUB and PULL at base, +1, +2; all or none."""
    router, pub, pull = sockets
    bound: list[tuple[zmq.asyncio.Socket, str]] = []
    layout = PortLayout(base)
    plan = [(router, layout.router), (pub, layout.pub), (pull, layout.pull)]
    if router_bound:
        bound.append((router, endpoint(addr, base)))
        plan = plan[1:]
    for sock, port in plan:
        where = endpoint(addr, port)
        try:
            if port > 65535:  # PUB or PULL past the last port
                raise zmq.ZMQError(zmq.EINVAL, "port out of range")
            sock.bind(where)
        except zmq.ZMQError as exc:
            for done, at in bound:
                done.unbind(at)
            raise StartupError(
                f"cannot bind {where}: {exc.strerror} — is another "
                "ptap-manager running? see server.cfg [basic] bind_addr "
                "and bind_port"
            ) from None
        bound.append((sock, where))
    return layout


def write_ready_file(path: Path, ports: PortLayout) -> None:
    """Write the ports atomically (temp file + rename): readers never see half a file."""
    data = {
        "router": ports.router,
        "pub": ports.pub,
        "pull": ports.pull,
        "pid": os.getpid(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_ready_file(path: Path) -> None:
    """Remove our ready file on shutdown, so nobody connects to a stopped manager.

    Only if it is still ours: a manager started since may have replaced it.
    """
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
