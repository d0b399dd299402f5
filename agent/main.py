"""``ptap-agent``: the daemon on every test node (docs/architecture.md#processes-and-sockets, #nodes-jobs-and-runs, #commands).

Start-up: load ``agentclient.cfg`` (flag > environment > file > default), gather
the node facts once (the perf probe runs in a thread), then keep a
:class:`agent.link.Link` to the manager until SIGTERM or SIGINT, which cancel
every run still going so no test process outlives the agent.

What must outlive the process (unacked metric batches, finished runs not yet
acked) is kept in this node's folder under ``[spool] dir``
(:mod:`agent.state_dir`, on by default), opened once before anything connects.

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
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from agent.facts import PerfProbe, gather_facts_async
from agent.link import Link, LinkTiming
from agent.run_journal import RunJournal
from agent.runner import RunnerOptions
from agent.sampling import Sampler
from agent.state_dir import StateDir, open_state_dir
from bus.daemon import (
    StartupError,
    add_common_flags,
    parse_overrides,
    run,
    settle_heap,
    setup_logging,
)
from bus.ports import ManagerAddress
from bus.security import ensure_keypair, load_public, public_path
from bus.sockets import CurveKeys, SocketTuning, make_socket
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
        self.curve: CurveKeys | None = None
        self.state: StateDir | None = None
        self._sampling: asyncio.Task[None] | None = None
        self._probe = probe

    async def run(self) -> None:
        """Run until cancelled; on the way out, end every run and close every socket."""
        # Keys first: a missing or unsafe key ends start-up before anything connects.
        self.curve = agent_keys(self.cfg) if self.cfg.security.curve else None
        facts = await gather_facts_async(self.cfg, self._probe)
        self.state = open_state_dir(self.cfg.spool.dir, self.node)
        ctx = zmq.asyncio.Context()
        try:
            journal = RunJournal(self.state.runs if self.state else None)
            self.link = Link(manager_address(self.cfg), self.node, facts, ctx=ctx,
                             runner_options=runner_options(self.cfg),
                             timing=link_timing(self.cfg), curve=self.curve,
                             journal=journal)
            log.info("node %s: agent %s on %s (%d CPUs), manager %s, spool %s", self.node,
                     facts.agent_version, facts.address or "?", facts.cpus, self.link.address,
                     self.state.path if self.state else "in memory only")
            if self.curve is not None:
                # What an operator compares with ptap keys list before accepting.
                log.info("node %s: CURVE public key %s", self.node, self.curve.public.decode())
            await self.start_metrics(self.link, ctx)
            settle_heap()
            try:
                await self.link.run()
            finally:
                await self.link.aclose()
                await self.stop_metrics()
        finally:
            ctx.destroy(linger=0)
            if self.state is not None:
                self.state.close()

    async def start_metrics(self, link: Link, ctx: zmq.asyncio.Context) -> None:
        """Start the collectors and the shipper beside the link (see :mod:`agent.sampling`)."""
        self.sampler = Sampler(self.cfg, self.node, ctx, metrics_address(self.cfg), self.curve,
                               spool_dir=self.state.batches if self.state else None)
        # Before the sampler's own welcome hook, so its resend goes to the new socket.
        link.hooks.welcome.append(lambda _: self._renew_push(ctx))
        self.sampler.attach(link)
        self._sampling = asyncio.get_running_loop().create_task(self.sampler.run(),
                                                                name="sampling")

    def _renew_push(self, ctx: zmq.asyncio.Context) -> None:
        """A fresh PUSH socket after each welcome; unacked batches are resent on it.

        A welcome follows a registration, which the link makes on a new
        connection after the manager fell silent. The PUSH's old connection may
        then be dead without TCP knowing it yet (a partition or a silent drop):
        its queued batches would wait for the kernel's retransmissions, many
        seconds after the link is back. And with CURVE, ZAP decides once per
        connection and libzmq does not retry one that ZAP refused: a PUSH that
        connected while this key was pending would stay refused for ever.
        """
        sampler = self.sampler
        assert sampler is not None
        old = sampler.push
        push = make_socket(ctx, zmq.PUSH, SocketTuning(sndhwm=int(old.getsockopt(zmq.SNDHWM))),
                           self.curve)
        push.connect(metrics_address(self.cfg))
        sampler.push = push
        sampler.shipper.attach(push)
        old.close(linger=0)

    async def stop_metrics(self) -> None:
        """Stop what :meth:`start_metrics` started (after every run has ended)."""
        if self._sampling is not None:
            self._sampling.cancel()
            await asyncio.gather(self._sampling, return_exceptions=True)
        if self.sampler is not None:
            await self.sampler.close()


def manager_address(cfg: AgentConfig) -> str:
    """The manager's ROUTER endpoint from ``[remote-server]``."""
    return _manager(cfg).router


def metrics_address(cfg: AgentConfig) -> str:
    """The manager's PULL endpoint (docs/protocol.md "Ports")."""
    return _manager(cfg).pull


def _manager(cfg: AgentConfig) -> ManagerAddress:
    return ManagerAddress(cfg.remote_server.server_ip, cfg.remote_server.server_port)


def agent_keys(cfg: AgentConfig) -> CurveKeys:
    """This agent's CURVE keys from ``[security] keys_dir``: its own pair (``agent``,
    created 0600 on first start) and the manager's public key (``server.key``)."""
    keys_dir = Path(cfg.security.keys_dir)
    public, secret = ensure_keypair(keys_dir, "agent")  # refuses a secret others can read
    server_file = public_path(keys_dir, "server")
    if not server_file.exists():
        raise StartupError(f"no manager public key {server_file} — copy the manager's "
                           f"KEYS_DIR/server.key to {server_file}")
    return CurveKeys(public, secret, server_public=load_public(server_file))


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
