"""``ptap nodes --state/--label`` and ``ptap nodes forget`` as a user runs them: the real
CLI against a real manager, with a real agent (``node1``) and simulated nodes registered
over the real wire (:func:`scripts.bench.overview.register_fleet`), which go lost."""

from __future__ import annotations

import json

from scripts.bench.overview import register_fleet
from tests.integration.conftest import Cluster, wait_for


def names(cluster: Cluster, *args: str) -> list[str]:
    rc, out, err = cluster.cli("nodes", *args, "--json")
    assert rc == 0, err
    return [n["name"] for n in json.loads(out)]


def test_nodes_filtered_by_state_and_label(cluster: Cluster) -> None:
    register_fleet(f"tcp://{cluster.manager.address}", 30)  # rack=r00..r19, gpu on sim00000,10,20
    wait_for(lambda: len(names(cluster, "--state", "lost")) == 30, 30, "the fleet lost")
    assert names(cluster, "--state", "up") == ["node1"]
    assert names(cluster, "--state", "ready,busy") == ["node1"]
    assert names(cluster, "--label", "gpu") == ["sim00000", "sim00010", "sim00020"]
    assert names(cluster, "--label", "gpu", "--label", "rack=r10") == ["sim00010"]
    assert names(cluster, "--state", "up", "--label", "gpu") == []
    assert len(names(cluster)) == 31
    rc, out, err = cluster.cli("nodes", "--state", "up", "--label", "gpu")
    assert rc == 0 and out.strip() == "no node matches state busy or ready and label gpu", out
    rc, out, err = cluster.cli("nodes", "--label", "rack=r01")
    assert rc == 0 and "sim00001" in out and "sim00021" in out and "NAME" in out
    rc, out, err = cluster.cli("nodes", "--state", "gone")
    assert rc == 2 and err.count("\n") == 1
    assert "'gone' is not a node state (one of ready, busy, lost, up)" in err


def test_forget_a_lost_node_now(cluster: Cluster) -> None:
    register_fleet(f"tcp://{cluster.manager.address}", 2)
    wait_for(lambda: len(names(cluster, "--state", "lost")) == 2, 30, "the two lost")
    rc, out, err = cluster.cli("nodes", "forget", "sim00001")
    assert rc == 0, err
    assert out.strip() == "node sim00001 forgotten (it was lost); its jobs and metrics stay"
    assert names(cluster) == ["node1", "sim00000"]
    for node, why in (("sim00001", "no node 'sim00001' is known — ptap nodes lists them"),
                      ("node1", "node node1 is ready, not lost — stop its agent first, or it "
                                "registers again at once")):
        rc, out, err = cluster.cli("nodes", "forget", node)
        assert rc == 1 and out == "" and err == f"ptap: {why}\n", err
    # A forgotten node that comes back registers again, as a new node.
    register_fleet(f"tcp://{cluster.manager.address}", 1, first=1)
    assert "sim00001" in names(cluster)
