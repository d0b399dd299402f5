"""``ptap-agent``: the daemon on every test node (DESIGN §1, §4, §8).

Start-up: load ``agentclient.cfg`` (flag > environment > file > default), gather
the node facts once (the perf probe runs in a thread), then keep a
:class:`agent.link.Link` to the manager until SIGTERM or SIGINT, which cancel
every run still going so no test process outlives the agent.

Collectors and the metrics shipper (:class:`agent.sampling.Sampler`) start in
:meth:`Agent.start_metrics`; the link hands them what they need through
:class:`agent.link.LinkHooks` (welcomes, metric acks, runs that start and end,
and each run's output lines).

``python -m agent.main`` works as well as the console script.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

import zmq.asyncio

from agent.facts import PerfProbe, gather_facts_async
from agent.link import Link, LinkTiming
from agent.runner import RunnerOptions
from agent.sampling import Sampler
from bus.daemon import StartupError, add_common_flags, parse_overrides, run, setup_logging
from config import AgentConfig, ConfigError, load_agent

log = logging.getLogger(__name__)

PROG = "ptap-agent"


class Agent:
    """One agent process: facts, the link to the manager, and the metrics side."""

    def __init__(self, cfg: AgentConfig, node: str, *, probe: PerfProbe | None = None) -> None:
        self.cfg = cfg
        self.node = node
        self.link: Link | None = None
        self.sampler: Sampler | None = None
        self._sampling: asyncio.Task[None] | None = None
        self._probe = probe

    async def run(self) -> None:
        """Run until cancelled; on the way out, end every run and close every socket."""
        if self.cfg.security.curve:
            # Fail closed: running unauthenticated when the operator asked for CURVE
            # would open a remote-execution channel (DESIGN §6).
            raise StartupError("[security] curve = yes, but this agent cannot load CURVE "
                               "keys yet; set curve = no only on a trusted network")
        facts = await gather_facts_async(self.cfg, self._probe)
        ctx = zmq.asyncio.Context()
        try:
            self.link = Link(manager_address(self.cfg), self.node, facts, ctx=ctx,
                             runner_options=runner_options(self.cfg),
                             timing=link_timing(self.cfg))
            log.info("node %s: agent %s on %s (%d CPUs), manager %s", self.node,
                     facts.agent_version, facts.address or "?", facts.cpus, self.link.address)
            await self.start_metrics(self.link, ctx)
            try:
                await self.link.run()
            finally:
                await self.link.aclose()
                await self.stop_metrics()
        finally:
            ctx.destroy(linger=0)

    async def start_metrics(self, link: Link, ctx: zmq.asyncio.Context) -> None:
        """Start the collectors and the shipper beside the link (see :mod:`agent.sampling`)."""
        self.sampler = Sampler(self.cfg, self.node, ctx, metrics_address(self.cfg))
        self.sampler.attach(link)
        self._sampling = asyncio.get_running_loop().create_task(self.sampler.run(),
                                                                name="sampling")

    async def stop_metrics(self) -> None:
        """Stop what :meth:`start_metrics` started (after every run has ended)."""
        if self._sampling is not None:
            self._sampling.cancel()
            await asyncio.gather(self._sampling, return_exceptions=True)
        if self.sampler is not None:
            await self.sampler.close()


def manager_address(cfg: AgentConfig) -> str:
    """The manager's ROUTER endpoint from ``[remote-server]``."""
    host = cfg.remote_server.server_ip
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"tcp://{host}:{cfg.remote_server.server_port}"


def metrics_address(cfg: AgentConfig) -> str:
    """The manager's PULL endpoint: ROUTER port + 2 (docs/protocol.md "Ports")."""
    base = manager_address(cfg).rpartition(":")[0]
    return f"{base}:{cfg.remote_server.server_port + 2}"


def runner_options(cfg: AgentConfig) -> RunnerOptions:
    """Runner settings from ``[dispatcher]``."""
    d = cfg.dispatcher
    return RunnerOptions(workdir=d.workdir, output_tail=d.output_tail, kill_grace=d.kill_grace)


def link_timing(cfg: AgentConfig) -> LinkTiming:
    """Heartbeat settings from ``[heartbeat-checker]``, used until the manager's welcome."""
    hb = cfg.heartbeat_checker
    return LinkTiming(interval=hb.interval, liveness=hb.liveness)


def node_name(cfg: AgentConfig) -> str:
    """``[client] name``, else the short host name (run ids are ``<job>.<node>.<n>``)."""
    return cfg.client.name or socket.gethostname().split(".")[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run the ptap agent on this node.")
    add_common_flags(parser)
    parser.add_argument("--name", metavar="NODE", help="node name (default: the host name)")
    parser.add_argument("--server", metavar="HOST:PORT",
                        help="manager address (overrides [remote-server])")
    return parser


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from ``--set``, ``--name`` and ``--server``."""
    out = parse_overrides(args.overrides)
    if args.name:
        out["client.name"] = args.name
    if args.server:
        host, sep, port = args.server.rpartition(":")
        if not sep or not host or not port:
            raise StartupError(f"--server {args.server!r}: expected HOST:PORT")
        out["remote-server.server_ip"] = host.strip("[]")
        out["remote-server.server_port"] = port
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 with one line for a bad config)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)

    async def amain() -> None:
        cfg = load_agent(args.config, cli_overrides(args))
        await Agent(cfg, node_name(cfg)).run()

    return run(PROG, amain, expected=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
