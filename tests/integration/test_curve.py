"""CURVE and Salt-style key acceptance end to end (docs/architecture.md#security), with real processes.

A real manager with ``[security] curve = yes`` on 127.0.0.1 and its keys in the
test's tmp dir, real agents with the manager's ``server.key`` copied to them,
and the real CLI with ``--keys`` (the admin key), without keys, and with a
valid key pair that is not the admin's. With ``auto_accept``: a key from outside
``auto_accept_from`` waits, ``max_nodes`` bounds the accepted keys, and a
revoked key is refused and gets no run until it is accepted again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.security import ensure_keypair, secret_path
from tests.integration.conftest import ROOT, Cluster, child_env, run_cli, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def curve_cluster(tmp_path: Path, process_logs: list[Path]) -> Iterator[Cluster]:
    """A running CURVE manager, no agents yet."""
    c = Cluster(tmp_path, process_logs, security="curve = yes\n")
    try:
        c.manager.start()
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def auto_accepting(tmp_path: Path, process_logs: list[Path], more: str = ""
                   ) -> Iterator[Cluster]:
    """A running CURVE manager with ``auto_accept = yes`` and ``more`` [security] lines."""
    c = Cluster(tmp_path, process_logs, security=f"curve = yes\nauto_accept = yes\n{more}")
    try:
        c.manager.start()
        yield c
    finally:
        c.stop()


def key_state(cluster: Cluster, node: str) -> str | None:
    listing = cluster.cli_json("keys", "list")
    return next((state for state, entries in listing.items()
                 for e in entries if e["node"] == node), None)


def log_of(cluster: Cluster, name: str) -> str:
    return cluster.agents[name].log_path.read_text(errors="replace")


def test_pending_accept_run_and_metrics(curve_cluster: Cluster, tmp_path: Path) -> None:
    c = curve_cluster
    c.add_agent("node1", wait=False)
    wait_for(lambda: key_state(c, "node1") == "pending", 20, "node1's key to be pending")
    assert c.node_state("node1") is None, "a pending key does not register"
    wait_for(lambda: "key for node node1 is pending; run ptap keys accept node1"
             in log_of(c, "node1"), 20, "the agent to log why it waits")

    # Nobody but the admin key can do anything, and nothing is dispatched.
    rc, out, err = run_cli(["--manager", c.manager.address, "--timeout", "1",
                            "run", "--", "true"])
    assert rc == 75 and out == ""
    assert "if the manager uses CURVE, pass --keys DIR" in err and err.count("\n") == 1
    stranger = tmp_path / "stranger"
    ensure_keypair(stranger, "admin")  # a valid key pair, just not the manager's admin key
    shutil.copy(c.manager.keys_dir / "server.key", stranger / "server.key")
    for args in (["run", "--", "true"], ["keys", "accept", "node1"], ["nodes"]):
        rc, out, err = run_cli(["--manager", c.manager.address, "--keys", str(stranger), *args])
        assert rc == 1 and out == "", (args, err)
        assert "this key may not do that — use the manager's admin key" in err, err
    assert c.cli_json("jobs") == []
    assert key_state(c, "node1") == "pending"

    rc, out, err = c.cli("keys", "accept", "node1", "--json")
    assert rc == 0, err
    assert json.loads(out)["state"] == "accepted" and json.loads(out)["node"] == "node1"
    c.wait_node_state("node1", "ready", timeout=30)  # the agent asks again by itself
    rc, out, err = c.cli("run", "--wait", "--", "true")
    assert rc == 0, err

    # Its PUSH was refused while pending; batches now get through PULL (and so PUB).
    rc, out, err = c.cli("watch", "--node", "node1", "--count", "3")
    assert rc == 0, err
    assert any(" metrics node1 seq=" in line for line in out.splitlines()), out
    assert re.search(r"runs dispatched to .*\bnode1\b", c.manager.log_path.read_text())


def test_a_key_accepted_for_one_node_cannot_be_another(curve_cluster: Cluster) -> None:
    c = curve_cluster
    c.add_agent("node1", wait=False)
    wait_for(lambda: key_state(c, "node1") == "pending", 20, "node1's key to be pending")
    assert c.cli("keys", "accept", "node1").rc == 0
    c.wait_node_state("node1", "ready", timeout=30)
    # Same key folder, other name: the key is node1's.
    c.add_agent("node2", wait=False, keys_dir=c.tmp / "agent-keys-node1")
    wait_for(lambda: "key-mismatch" in log_of(c, "node2"), 20, "node2 to be refused")
    assert "accepted for node node1, not node2" in log_of(c, "node2")
    assert c.node_state("node2") is None and c.node_state("node1") == "ready"
    assert key_state(c, "node2") is None


def test_rejected_then_revoked_key_stays_refused_until_accepted(curve_cluster: Cluster) -> None:
    c = curve_cluster
    c.add_agent("node1", wait=False)
    wait_for(lambda: key_state(c, "node1") == "pending", 20, "node1's key to be pending")
    rc, out, err = c.cli("keys", "reject", "node1")
    assert rc == 0 and "rejected" in out, err
    rc, out, err = c.cli("keys", "accept", "ghost")
    assert rc == 1 and "no agent key for node 'ghost'" in err
    rc, out, err = c.cli("keys", "revoke", "node1")
    assert rc == 0 and "key revoked" in out, err
    # Revoked, it may reach the manager again, only to be told what would admit it: at
    # once, or, if it was told "rejected" in between, at its slow retry (30 s) after that.
    wait_for(lambda: "the key of node node1 was revoked; ptap keys accept node1 on the "
             "manager admits it again" in log_of(c, "node1"), 50, "node1 to be told")
    assert key_state(c, "node1") == "revoked" and c.node_state("node1") is None
    assert c.cli("keys", "accept", "node1").rc == 0
    restart(c, "node1")  # rather than wait out its slow retry
    c.wait_node_state("node1", "ready", timeout=30)


def restart(cluster: Cluster, name: str) -> None:
    agent = cluster.agents[name]
    agent.stop()
    agent.spawn()


def run_everywhere(cluster: Cluster) -> dict[str, Any]:
    """``ptap run --nodes all --wait -- true``: the finished job."""
    rc, out, err = cluster.cli("run", "--nodes", "all", "--wait", "--", "true")
    assert rc == 0, err
    return cluster.job(out.splitlines()[0])


def test_a_revoked_agent_is_refused_and_gets_no_job(tmp_path: Path,
                                                     process_logs: list[Path]) -> None:
    """The review's finding: under auto_accept a revoked agent registered again at
    once and ran 5 of 5 later jobs. Now it is refused, and only node1 runs them."""
    with auto_accepting(tmp_path, process_logs) as c:
        c.add_agent("node1")
        c.add_agent("node2")
        assert sorted(r["node"] for r in run_everywhere(c)["runs"]) == ["node1", "node2"]
        rc, out, err = c.cli("keys", "revoke", "node2")
        assert rc == 0 and out.strip().startswith("node node2: key revoked"), err
        # Still listed (not yet lost), but passed over: the job does not wait on it.
        job = run_everywhere(c)
        assert [(r["node"], r["state"]) for r in job["runs"]] == [("node1", "succeeded")]
        wait_for(lambda: "manager refused this agent's key (not-authorized)"
                 in log_of(c, "node2"), 20, "node2's heartbeats to be refused")
        c.wait_node_state("node2", "lost")
        # Restarted, it asks at once, as a new key would: refused all the same.
        restart(c, "node2")
        wait_for(lambda: "the key of node node2 was revoked; ptap keys accept node2 on the "
                 "manager admits it again" in log_of(c, "node2"), 30, "node2 to be refused")

        def dispatches_to_node2() -> int:
            return len(re.findall(r"runs dispatched to .*\bnode2\b",
                                  c.manager.log_path.read_text()))

        dispatched_before = dispatches_to_node2()
        for _ in range(5):
            job = run_everywhere(c)
            assert [(r["node"], r["state"]) for r in job["runs"]] == [("node1", "succeeded")]
        assert key_state(c, "node2") == "revoked" and c.node_state("node2") == "lost"
        manager_log = c.manager.log_path.read_text()
        assert dispatches_to_node2() == dispatched_before
        assert "the key of node node2 is revoked" in manager_log

        assert c.cli("keys", "accept", "node2").rc == 0
        restart(c, "node2")
        c.wait_node_state("node2", "ready", timeout=30)
        assert sorted(r["node"] for r in run_everywhere(c)["runs"]) == ["node1", "node2"]


def test_auto_accept_leaves_a_key_from_elsewhere_pending(tmp_path: Path,
                                                         process_logs: list[Path]) -> None:
    """On one host every agent connects from loopback: leaving loopback out of
    auto_accept_from makes it an address auto_accept must not trust."""
    with auto_accepting(tmp_path, process_logs, "auto_accept_from = 10.255.255.0/24\n") as c:
        c.add_agent("node1", wait=False)
        wait_for(lambda: key_state(c, "node1") == "pending", 20, "node1's key to be pending")
        wait_for(lambda: "key for node node1 is pending; run ptap keys accept node1"
                 in log_of(c, "node1"), 20, "the agent to log why it waits")
        assert c.node_state("node1") is None
        assert ("key of node node1 is pending, not auto-accepted: 127.0.0.1 is outside "
                "[security] auto_accept_from = 10.255.255.0/24 — run ptap keys accept node1 "
                "on the manager, or widen auto_accept_from") in c.manager.log_path.read_text()
        assert c.cli("keys", "accept", "node1").rc == 0
        c.wait_node_state("node1", "ready", timeout=30)


def test_max_nodes_bounds_accepted_keys(tmp_path: Path, process_logs: list[Path]) -> None:
    with auto_accepting(tmp_path, process_logs, "max_nodes = 1\n") as c:
        assert ("CURVE on: keys in " in c.manager.log_path.read_text()
                and "(0 of at most 1 agents accepted, 0 pending, 0 revoked; new keys from "
                "127.0.0.0/8, ::1/128 accepted at once)" in c.manager.log_path.read_text())
        c.add_agent("node1")
        c.add_agent("node2", wait=False)
        wait_for(lambda: key_state(c, "node2") == "pending", 20, "node2's key to be pending")
        assert "1 agent keys are accepted already, the [security] max_nodes bound" \
            in c.manager.log_path.read_text()
        rc, out, err = c.cli("keys", "list")
        assert rc == 0, err
        assert out.splitlines()[-1] == ("1 of at most 1 nodes accepted ([security] max_nodes); "
                                        "1 pending (at most 1000), 0 rejected, 0 revoked")
        rc, out, err = c.cli("keys", "accept", "node2")
        assert rc == 1 and out == ""
        assert err == ("ptap: cannot accept the key of node node2: 1 agent keys are accepted "
                       "already, the [security] max_nodes bound — revoke keys no longer used "
                       "(ptap keys revoke NODE), or raise max_nodes in server.cfg and restart "
                       "the manager\n")
        assert key_state(c, "node2") == "pending" and c.node_state("node2") is None


def test_secret_key_others_can_read_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "agent-keys"
    ensure_keypair(keys, "agent")
    os.chmod(secret_path(keys, "agent"), 0o644)
    done = subprocess.run(
        [sys.executable, "-m", "agent.main", "--name", "node1", "--server", "127.0.0.1:1",
         "--set", "security.curve=yes", "--set", f"security.keys_dir={keys}"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("ptap-agent: ") and "chmod 600" in done.stderr


def test_missing_server_key_is_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "agent-keys"
    done = subprocess.run(
        [sys.executable, "-m", "agent.main", "--name", "node1", "--server", "127.0.0.1:1",
         "--set", "security.curve=yes", "--set", f"security.keys_dir={keys}"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after the log line about its new key pair
    assert last.startswith("ptap-agent: no manager public key")
    assert last.endswith(f"copy the manager's KEYS_DIR/server.key to {keys / 'server.key'}")
    assert secret_path(keys, "agent").stat().st_mode & 0o777 == 0o600


def test_auto_accept_admits_a_new_agent_at_once(tmp_path: Path,
                                                process_logs: list[Path]) -> None:
    c = Cluster(tmp_path, process_logs, security="curve = yes\nauto_accept = yes\n")
    try:
        c.manager.start()
        c.add_agent("node1")  # waits for ready
        assert key_state(c, "node1") == "accepted"
        rc, out, err = c.cli("run", "--wait", "--", "true")
        assert rc == 0, err
    finally:
        c.stop()


def test_an_accepted_agent_key_cannot_subscribe_to_events(tmp_path: Path,
                                                          process_logs: list[Path]) -> None:
    """Events name every node's jobs: an agent's key is refused at PUB's handshake
    and hears nothing of node2's job, while the admin key hears it."""
    import zmq  # noqa: PLC0415 - the one test here that speaks ZeroMQ itself
    from zmq.utils.monitor import recv_monitor_message  # noqa: PLC0415

    with auto_accepting(tmp_path, process_logs) as c:
        c.add_agent("node1")
        c.add_agent("node2")
        ctx = zmq.Context()
        server_public = zmq.auth.load_certificate(str(c.manager.keys_dir / "server.key"))[0]
        subs = {}
        try:
            for who, (directory, name) in {"agent": (tmp_path / "agent-keys-node1", "agent"),
                                           "admin": (c.manager.keys_dir, "admin")}.items():
                public, secret = zmq.auth.load_certificate(str(secret_path(directory, name)))
                sub = ctx.socket(zmq.SUB)
                sub.curve_publickey, sub.curve_secretkey = public, secret
                sub.curve_serverkey = server_public
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                 | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
                sub.connect(f"tcp://127.0.0.1:{c.manager.router_port + 1}")
                assert monitor.poll(20_000), f"no handshake outcome for the {who} key"
                subs[who] = (sub, recv_monitor_message(monitor)["event"])
                monitor.close(linger=0)
            assert subs["agent"][1] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            assert subs["admin"][1] == zmq.EVENT_HANDSHAKE_SUCCEEDED
            rc, out, err = c.cli("run", "--wait", "--nodes", "node2", "--env", "TOKEN=s3cret",
                                 "--", "true")
            assert rc == 0, err
            topic = f"evt.job.{out.strip()}".encode()
            admin_heard: list[list[bytes]] = []
            while not any(f[0] == topic and b"succeeded" in f[-1] and b"\xa3job" in f[-1]
                          for f in admin_heard):  # up to the job's final event
                assert subs["admin"][0].poll(20_000), "the admin heard no job event"
                admin_heard.append(subs["admin"][0].recv_multipart())
            assert not any(b"s3cret" in b"".join(frames) for frames in admin_heard)
            assert subs["agent"][0].poll(0) == 0  # nothing, not one message
        finally:
            for sub, _ in subs.values():
                sub.close(linger=0)
            ctx.term()
