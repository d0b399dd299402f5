"""A network namespace joined to this one by a veth pair, and the cuts made on it.

``NetNs(index)`` makes namespace ``ptapf<pid>-<index>`` with the veth pair
``pf<pid>h<index>`` (here, ``10.213.<index>.1/30``) and ``pf<pid>n<index>`` (there,
``10.213.<index>.2/30``, plus ``lo`` up for the agent's app endpoint on
127.0.0.1). The manager binds the host side's address; the agent runs inside
with ``ip netns exec``.

The cuts the issue asks for, without netem or iptables (not available here):

* :meth:`link_down` / :meth:`link_up`: ``ip link set … down`` on the host side
  (both ends lose carrier; TCP connections stay open, nothing is reset);
* :meth:`drop` / :meth:`undrop`: ``tc qdisc add dev X root pfifo limit 0`` on
  one or both ends: every packet leaving that end is silently dropped, the
  link stays up, no RST or ICMP is ever sent.

:func:`unavailable` says why the namespace cannot be made here (not root, no
``ip netns``, no ``tc``), for a clear skip. :meth:`NetNs.remove` deletes the
namespace, which also deletes the veth pair.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.integration.conftest import ManagerProc

PREFIX = f"ptapf{os.getpid()}"


def _ip(*args: str, ns: str | None = None) -> None:
    argv = [*(["ip", "netns", "exec", ns] if ns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "network faults need root (ip netns, veth, tc): run the suite as root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"network faults need {tool} (iproute2): apt-get install -y iproute2"
    probe = f"{PREFIX}-probe"
    try:
        _ip("ip", "netns", "add", probe)
        _ip("ip", "netns", "del", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"network faults need ip netns, which failed here: {exc}"
    return None


class NetNs:
    """One namespace and its veth pair (see the module docstring)."""

    def __init__(self, index: int) -> None:
        self.name = f"{PREFIX}-{index}"
        tag = f"{os.getpid() % 100000}"
        self.host_dev, self.ns_dev = f"pf{tag}h{index}", f"pf{tag}n{index}"
        self.host_ip, self.ns_ip = f"10.213.{index}.1", f"10.213.{index}.2"

    def create(self) -> None:
        _ip("ip", "netns", "add", self.name)
        _ip("ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev)
        _ip("ip", "link", "set", self.ns_dev, "netns", self.name)
        _ip("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
        _ip("ip", "link", "set", self.host_dev, "up")
        _ip("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev, ns=self.name)
        _ip("ip", "link", "set", self.ns_dev, "up", ns=self.name)
        _ip("ip", "link", "set", "lo", "up", ns=self.name)

    def exec_prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace (``ip`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name]

    def link_down(self) -> None:
        _ip("ip", "link", "set", self.host_dev, "down")

    def link_up(self) -> None:
        _ip("ip", "link", "set", self.host_dev, "up")

    def drop(self, host_side: bool = True, ns_side: bool = True) -> None:
        """Silently drop what leaves the chosen ends (both: a two-way partition)."""
        if host_side:
            _ip("tc", "qdisc", "add", "dev", self.host_dev, "root", "pfifo", "limit", "0")
        if ns_side:
            _ip("tc", "qdisc", "add", "dev", self.ns_dev, "root", "pfifo", "limit", "0",
                ns=self.name)

    def undrop(self, host_side: bool = True, ns_side: bool = True) -> None:
        if host_side:
            _ip("tc", "qdisc", "del", "dev", self.host_dev, "root")
        if ns_side:
            _ip("tc", "qdisc", "del", "dev", self.ns_dev, "root", ns=self.name)

    def remove(self) -> None:
        """Delete the namespace (and so the veth pair); quiet if it is gone already."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, timeout=10)


class HostManagerProc(ManagerProc):
    """A test manager bound to ``host`` (the veth's host side) instead of loopback.

    Without CURVE a manager refuses a non-loopback address unless ``allow_insecure``;
    here the address is reachable from this host and its namespace only."""

    def __init__(self, host: str, tmp: Path, influx_url: str, database: str) -> None:
        super().__init__(tmp, influx_url, database, security="allow_insecure = yes\n")
        self.host = host
        text = self.config.read_text().replace("bind_addr = 127.0.0.1", f"bind_addr = {host}")
        self.config.write_text(text)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.router_port}"
