"""The manager's port layout: ROUTER on a base port, PUB and PULL on the next two.

Peers are told one port, the ROUTER's, and find the other two from it
(docs/protocol.md "Ports"); the manager binds them all
(``manager/ports.py``), the CLI, the dashboard and the agent connect to them.
"""

from __future__ import annotations

from typing import NamedTuple

# Value types here are NamedTuples, not dataclasses: this module is on the path of
# every ``ptap`` command, and ``dataclasses`` (with ``inspect``) costs it ~5 ms of
# start-up (manager/cli/main.py, issue 13).

#: PUB (events, live metrics) is the ROUTER port plus this.
PUB_OFFSET = 1
#: PULL (metric batches) is the ROUTER port plus this.
PULL_OFFSET = 2
#: The highest ROUTER port whose PUB and PULL ports still exist.
MAX_ROUTER_PORT = 65535 - PULL_OFFSET
#: The default ROUTER port: below the kernel's range for outgoing connections (see
#: :func:`outgoing_port_range`).
DEFAULT_ROUTER_PORT = 14321
#: The lowest port a random bind takes (ports below are commonly assigned services').
RANDOM_BIND_LOW = 10000


def outgoing_port_range() -> tuple[int, int]:
    """The kernel's range for the source ports of outgoing connections (Linux's
    ``ip_local_port_range``; its default elsewhere).

    A manager must listen outside it. A local client that reconnects to a port
    in it while nothing listens there can be handed that very port as its own
    source port: the socket connects to itself, holds the port, and leaves it in
    TIME_WAIT for a minute, so a restarted manager cannot bind it. libzmq's SUB
    then never reconnects (libzmq#4588). It happened here to a SIGKILLed
    manager's PUB port and the dashboard's feed.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split()[:2])
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def in_outgoing_range(router_port: int) -> bool:
    """Whether any of the manager's three ports falls in :func:`outgoing_port_range`."""
    low, high = outgoing_port_range()
    return router_port <= high and router_port + PULL_OFFSET >= low


class PortLayout(NamedTuple):
    """The three ports of one manager, from its ROUTER port."""

    router: int

    @property
    def pub(self) -> int:
        return self.router + PUB_OFFSET

    @property
    def pull(self) -> int:
        return self.router + PULL_OFFSET


def tcp_endpoint(host: str, port: int | None) -> str:
    """``tcp://host:port``, an IPv6 host in brackets; without a port for a random bind."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}" if port is None else f"tcp://{host}:{port}"


class ManagerAddress(NamedTuple):
    """Where a manager listens, as its peers connect to it: a host and the ROUTER port."""

    host: str
    port: int

    @property
    def ports(self) -> PortLayout:
        return PortLayout(self.port)

    @property
    def router(self) -> str:
        return tcp_endpoint(self.host, self.port)

    @property
    def pub(self) -> str:
        return tcp_endpoint(self.host, self.ports.pub)

    @property
    def pull(self) -> str:
        return tcp_endpoint(self.host, self.ports.pull)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
