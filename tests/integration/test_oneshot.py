"""The one-shot commands against a real CURVE manager and agent: they answer as ever, and
load neither an event loop nor the message classes (manager/cli/oneshot.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Cluster, child_env

#: What a one-shot command must not import: each costs start-up time it does not need.
HEAVY = ("asyncio", "zmq.asyncio", "bus.client", "bus.codec", "bus.messages")

#: Runs the CLI's main in this process, then says which of HEAVY it loaded.
PROBE = f"""
import json, sys
from manager.cli.main import main
status = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)
sys.exit(status)
"""


@pytest.fixture
def curve_cluster(tmp_path: Path, process_logs: list[Path]) -> Iterator[Cluster]:
    c = Cluster(tmp_path, process_logs, security="curve = yes\nauto_accept = yes\n")
    try:
        c.manager.start()
        c.add_agent("node1")
        yield c
    finally:
        c.stop()


def probe(cluster: Cluster, *args: str) -> tuple[int, str, str, list[str]]:
    """``ptap ARGS`` against ``cluster``: status, stdout, stderr, and the HEAVY modules loaded."""
    argv = ["--manager", cluster.manager.address, "--keys", str(cluster.manager.keys_dir), *args]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    *err, loaded = done.stderr.splitlines() or [""]
    return done.returncode, done.stdout, "\n".join(err), json.loads(loaded or "null")


def test_one_shot_commands_answer_without_an_event_loop(curve_cluster: Cluster) -> None:
    c = curve_cluster
    rc, out, err = c.cli("run", "--wait", "--", "true")
    assert rc == 0, err
    job_id = out.strip()

    rc, out, err, loaded = probe(c, "nodes", "--json")
    assert (rc, loaded) == (0, []), err
    assert [(n["name"], n["state"]) for n in json.loads(out)] == [("node1", "ready")]
    rc, out, err, loaded = probe(c, "nodes")
    assert (rc, loaded) == (0, []), err
    assert out.split()[8:10] == ["node1", "ready"]
    rc, out, err, loaded = probe(c, "jobs", "--json")
    assert (rc, loaded) == (0, []), err
    assert [j["id"] for j in json.loads(out)] == [job_id]
    rc, out, err, loaded = probe(c, "job", job_id)
    assert (rc, loaded) == (0, []), err
    assert job_id in out and "succeeded" in out
    rc, out, err, loaded = probe(c, "keys", "list")
    assert (rc, loaded) == (0, []), err
    assert "1 of at most" in out
    rc, out, err, _ = probe(c, "cancel", job_id)
    assert rc == 0 and out.strip() == f"job {job_id} is succeeded", err


def test_one_shot_refusals_keep_their_lines_and_statuses(curve_cluster: Cluster) -> None:
    c = curve_cluster
    rc, out, err, loaded = probe(c, "job", "nosuchjob")
    assert (rc, out, loaded) == (1, "", [])
    assert err == "ptap: no job 'nosuchjob' — list the jobs with ptap jobs"
    rc, out, err, _ = probe(c, "keys", "accept")
    assert (rc, out) == (2, "") and err.startswith("ptap: keys accept needs a NODE")
    # A key the manager does not know is refused with a line of its own; a server
    # key that is not the manager's is silence (no CURVE handshake), as no manager is.
    stranger, wrong_server = c.tmp / "stranger", c.tmp / "wrong-server"
    for folder, name in ((stranger, "admin"), (wrong_server, "server")):
        folder.mkdir(mode=0o700)
        subprocess.run([sys.executable, "-c", "import os, sys, zmq.auth; os.umask(0o077); "
                        "zmq.auth.create_certificates(sys.argv[1], sys.argv[2])", str(folder),
                        name], check=True, env=child_env())
    (stranger / "server.key").write_bytes((c.manager.keys_dir / "server.key").read_bytes())
    (wrong_server / "admin.key_secret").write_bytes(
        (c.manager.keys_dir / "admin.key_secret").read_bytes())
    (wrong_server / "admin.key_secret").chmod(0o600)
    rc, out, err, loaded = probe(c, "--keys", str(stranger), "nodes")
    assert (rc, out, loaded) == (1, "", []), err
    assert err.startswith("ptap: this key may not do that — use the manager's admin key")
    rc, out, err, _ = probe(c, "--keys", str(wrong_server), "--timeout", "0.5", "nodes")
    assert (rc, out) == (75, ""), err
    assert err.startswith(f"ptap: cannot reach manager at tcp://{c.manager.address} (no reply "
                          "in 0.5 s)")
    assert err.endswith(f"check that {wrong_server}/server.key is this manager's")
