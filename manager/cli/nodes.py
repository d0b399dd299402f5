"""``ptap nodes [--state S] [--label L] [--json]`` and ``ptap nodes forget NAME``.

The filters travel in ``nodes.list`` so that the manager sends only the rows
asked for (a fleet of 2,000 nodes is a large reply), and are applied here
again: a manager older than the filters ignores them and lists every node.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from manager.cli import render
from manager.cli.session import Session


def wanted_states(given: list[str] | None) -> list[str]:
    """``--state`` values (repeated or comma-separated, checked by the parser) as the
    manager's states: ``up`` is ``ready`` or ``busy``."""
    out: list[str] = []
    for text in given or []:
        for state in filter(None, (s.strip() for s in text.split(","))):
            out += ["ready", "busy"] if state == "up" else [state]
    return sorted(set(out))


def matches(node: Mapping[str, Any], states: list[str], labels: list[str]) -> bool:
    """The manager's filter, for a manager that ignored it."""
    node_labels = set((node.get("facts") or {}).get("labels") or [])
    return (not states or node.get("state") in states) and set(labels) <= node_labels


async def cmd_nodes(session: Session, args: argparse.Namespace) -> int:
    """``ptap nodes``: the nodes the manager knows, with liveness and capabilities;
    ``--state`` and ``--label`` keep some of them."""
    states, labels = wanted_states(args.state), list(args.label or [])
    async with session.client() as client:
        nodes = await client.nodes(states, labels)
    nodes = [n for n in nodes if matches(n, states, labels)]
    if args.json:
        print(render.to_json(nodes), flush=True)
    elif not nodes and (states or labels):
        print("no node matches " + " and ".join(
            ([f"state {' or '.join(states)}"] if states else [])
            + [f"label {label}" for label in labels]), flush=True)
    else:
        print(render.nodes_table(nodes), flush=True)
    return 0


async def cmd_nodes_forget(session: Session, args: argparse.Namespace) -> int:
    """``ptap nodes forget NAME``: the manager forgets a lost node now (its jobs and
    metrics stay; if its agent comes back, it registers again)."""
    async with session.client() as client:
        node = await client.forget_node(args.node)
    if args.json:
        print(render.to_json(node), flush=True)
    else:
        print(f"node {node.get('name', args.node)} forgotten (it was {node.get('state')}); "
              "its jobs and metrics stay", flush=True)
    return 0
