"""The three configuration files of ptap, with the original platform's names (docs/architecture.md#configuration).

Each ``*Config`` class is loaded by :func:`config.loader.load`. Paths that
are relative are taken relative to the current directory of the process.
The sample files beside this module list every key with its default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from config.loader import ConfigError, key, section

# --- shared sections ------------------------------------------------------------


@dataclass(frozen=True)
class RemoteServer:
    server_ip: str = key("127.0.0.1", doc="address of ptap-manager")
    server_port: int = key(14321, lo=1, hi=65533, doc="manager ROUTER port; PUB is +1, PULL +2")
    timeout: float = key(3.0, lo=0.1, hi=300, doc="seconds to wait for a reply")


@dataclass(frozen=True)
class InfluxDB:
    url: str = key("http://127.0.0.1:8086", doc="InfluxDB base URL (v1 /write and /query)")
    database: str = key("ptap", doc="database (v1) for all measurements")
    username: str = key("", doc="v1 user; empty for none")
    password: str = key("", doc="v1 password")
    token: str = key("", doc="v2/v3 token; with org and bucket uses the v2 write API")
    org: str = key("", doc="v2 organisation")
    bucket: str = key("", doc="v2 bucket")
    timeout: float = key(10.0, lo=0.1, hi=600, doc="seconds per HTTP request")


# --- server.cfg (manager) ------------------------------------------------------------


@dataclass(frozen=True)
class ServerBasic:
    bind_addr: str = key("127.0.0.1", doc="address for the ROUTER, PUB and PULL sockets")
    bind_port: int = key(14321, lo=0, hi=65533,
                         doc="ROUTER port; PUB is +1, PULL +2; 0 picks a free base")
    epoll_interval: float = key(0.5, lo=0.01, hi=60,
                                doc="seconds between housekeeping passes (liveness, dispatch)")
    listen_max: int = key(1024, lo=1, hi=65535, doc="TCP listen backlog of each socket")
    interval: float = key(1.0, lo=0.05, hi=3600, doc="heartbeat interval, seconds")
    liveness: int = key(3, lo=1, hi=100, doc="missed heartbeats before a node is lost")
    forget_after: float = key(7 * 24 * 3600.0, lo=0, hi=10 * 365 * 24 * 3600.0,
                              doc="seconds a lost node stays listed before it is forgotten "
                                  "(its jobs and metrics stay); 0: never")


@dataclass(frozen=True)
class ServerSecurity:
    curve: bool = key(False, doc="encrypt and authenticate with CURVE (needed off loopback)")
    auto_accept: bool = key(False, doc="accept new agent keys without ptap keys accept "
                            "(only from auto_accept_from, only up to max_nodes)")
    auto_accept_from: tuple[str, ...] = key(
        ("127.0.0.0/8", "::1/128"),
        doc="networks (comma-separated) whose agents auto_accept may accept; a new key "
            "from anywhere else waits as pending")
    # Thousands of nodes is the target; 10,000 leaves room for that, while a flood
    # of keys (each one a node that targets=all jobs run on) stops there.
    max_nodes: int = key(10_000, lo=1, hi=1_000_000,
                         doc="agent keys accepted at most: auto_accept stops there, "
                             "and ptap keys accept is refused")
    keys_dir: str = key("var/keys", doc="where the manager keeps its keys and agents' keys")
    allow_insecure: bool = key(False, doc="serve a non-loopback bind_addr without CURVE "
                               "(anyone who reaches it can run commands: isolated labs only)")

    def __post_init__(self) -> None:
        for text in self.auto_accept_from:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ConfigError(f"[security] auto_accept_from: {text!r} is not a network "
                                  "— write e.g. 10.0.0.0/24, 10.0.0.5 or ::1/128") from None


@dataclass(frozen=True)
class ServerState:
    path: str = key("var/manager.db", doc="SQLite file holding jobs and runs")


@dataclass(frozen=True)
class ServerSpool:
    max_points: int = key(2_000_000, lo=1000, doc="points held in memory while InfluxDB is down")
    max_bytes: int = key(128 * 1024 * 1024, lo=1024 * 1024,
                         doc="bytes of line protocol held in memory while InfluxDB is down "
                         "(the manager's RSS is bounded by about 200 MB more than this)")
    max_message_bytes: int = key(1024 * 1024, lo=512 * 1024, hi=64 * 1024 * 1024,
                                 doc="largest metric batch accepted (agents cut theirs at "
                                 "256 KiB; decoding costs up to 60 bytes per byte)")


@dataclass(frozen=True)
class ServerConfig:
    basic: ServerBasic = section(ServerBasic)
    influxdb: InfluxDB = section(InfluxDB)
    security: ServerSecurity = section(ServerSecurity)
    state: ServerState = section(ServerState)
    spool: ServerSpool = section(ServerSpool)


# --- agentclient.cfg (agent) -----------------------------------------------------------


@dataclass(frozen=True)
class AgentDispatcher:
    workdir: str = key("var/runs", doc="default working directory for jobs")
    output_tail: int = key(65536, lo=1024, hi=256 * 1024,
                           doc="bytes of stdout and stderr kept per run (at most 256 KiB: the tail travels in one message)")
    kill_grace: float = key(3.0, lo=0, hi=600,
                            doc="seconds between SIGTERM and SIGKILL on cancel or timeout")


@dataclass(frozen=True)
class AgentHeartbeat:
    interval: float = key(1.0, lo=0.05, hi=3600,
                          doc="heartbeat interval until the manager's welcome says otherwise")
    liveness: int = key(3, lo=1, hi=100, doc="missed manager heartbeats before reconnecting")


@dataclass(frozen=True)
class AgentClient:
    client_ip: str = key("", doc="address reported to the manager; empty: found automatically")
    name: str = key("", doc="node name; empty: the host name")
    labels: tuple[str, ...] = key((), doc="comma-separated labels for job targeting")


@dataclass(frozen=True)
class AgentCollectors:
    enabled: tuple[str, ...] = key(("system",), doc="collectors that always run")
    interval: float = key(1.0, lo=0.1, hi=3600, doc="seconds between samples")
    perf_events: tuple[str, ...] = key(
        ("task-clock", "context-switches", "cpu-migrations", "page-faults",
         "cycles", "instructions"), doc="perf events; unsupported ones are reported")
    app_rcvbuf: int = key(16 * 1024 * 1024, lo=1024, hi=1024 * 1024 * 1024,
                          doc="receive buffer of each run's app metrics UDP socket, bytes: "
                          "what a paused agent can hold (16 MiB: ~40,000 small datagrams); "
                          "beyond net.core.rmem_max only as root")


@dataclass(frozen=True)
class AgentSpool:
    max_batches: int = key(10_000, lo=10, doc="unacked metric batches kept at most")
    max_bytes: int = key(64 * 1024 * 1024, lo=1024 * 1024,
                         doc="bytes of unacked metric batches kept at most; beyond, the "
                         "oldest go and their points count as samples_dropped")
    dir: str = key("var/agent-spool",
                   doc="folder of the disk spool (unacked batches, finished runs), one "
                   "subfolder per node; a leading var/ means $PTAP_VAR when that is set "
                   "(start-all's state folder); empty keeps them in memory only")


@dataclass(frozen=True)
class AgentSecurity:
    curve: bool = key(False, doc="use CURVE; the manager's public key must be known")
    keys_dir: str = key("var/agent-keys", doc="agent key pair and the manager's public key")


@dataclass(frozen=True)
class AgentConfig:
    remote_server: RemoteServer = section(RemoteServer, ini="remote-server")
    dispatcher: AgentDispatcher = section(AgentDispatcher)
    heartbeat_checker: AgentHeartbeat = section(AgentHeartbeat, ini="heartbeat-checker")
    client: AgentClient = section(AgentClient)
    collectors: AgentCollectors = section(AgentCollectors)
    spool: AgentSpool = section(AgentSpool)
    security: AgentSecurity = section(AgentSecurity)


# --- frontendagentclient.cfg (dashboard) ---------------------------------------------------


@dataclass(frozen=True)
class DashboardWeb:
    bind_addr: str = key("127.0.0.1", doc="dashboard listens here; loopback unless you mean it")
    port: int = key(5006, lo=1, hi=65535, doc="dashboard HTTP port")
    password: str = key("", doc="login password for changing things; empty: no login possible")
    cookie_secret: str = key("", doc="secret for secure cookies and Bokeh sessions; empty: random")
    allowed_origins: tuple[str, ...] = key((), doc="extra websocket origins (host:port)")


@dataclass(frozen=True)
class DashboardSecurity:
    curve: bool = key(False, doc="talk CURVE to the manager (when its [security] curve = yes), "
                      "as its administrator")
    keys_dir: str = key("", doc="the manager's keys_dir, or a copy holding its server.key "
                        "and the admin key pair (admin.key, admin.key_secret, mode 0600)")


@dataclass(frozen=True)
class DashboardConfig:
    remote_server: RemoteServer = section(RemoteServer, ini="remote-server")
    web: DashboardWeb = section(DashboardWeb)
    influxdb: InfluxDB = section(InfluxDB)
    security: DashboardSecurity = section(DashboardSecurity)
