"""The control plane end to end: real manager, real agents, the real ``ptap`` CLI.

Each test gets its own manager (random ports, its own state db) and agent
``node1`` from the ``cluster`` fixture. Processes a job starts are found
through the run's pid in ``ptap job ID --json`` (or as children of that
pid), never by name across the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import psutil
import pytest
import zmq

from bus.messages import JobSpec
from manager.cli.discovery import Target
from manager.cli.follow import JobFollower, follow_job
from manager.cli.oneshot import OneShotSession, run_to_end
from manager.cli.session import Endpoint
from tests.integration.conftest import (
    ROOT,
    Cluster,
    child_env,
    run_cli,
    unused_port,
    wait_for,
)

pytestmark = pytest.mark.integration


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def gone(proc: psutil.Process) -> bool:
    """Ended: no such process (``is_running`` also guards against pid reuse), or a zombie
    (after its parent died it may belong to an init that never reaps)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cli_background(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "manager.cli.main", "--manager", cluster.manager.address, *args],
        cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def first_line(proc: subprocess.Popen[str]) -> str:
    """The job id ``ptap run`` prints first; the CLI's stderr if it printed none."""
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.wait(30)
        raise AssertionError(f"ptap run printed no job id: {proc.stderr.read()}")
    return line


def running_pid(cluster: Cluster, job_id: str) -> int:
    """Wait until the job's first run is running; return its pid (the command's main process)."""
    def pid() -> int | None:
        run = cluster.job(job_id)["runs"][0]
        return int(run["pid"]) if run["state"] == "running" and run["pid"] else None

    return wait_for(pid, 20, f"job {job_id} to run")


def test_nodes_lists_the_agent_as_ready(cluster: Cluster) -> None:
    rc, out, err = cluster.cli("nodes")
    assert rc == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "ADDRESS"]
    assert [r.split()[:2] for r in rows] == [["node1", "ready"]]

    nodes = cluster.cli_json("nodes")
    assert [n["name"] for n in nodes] == ["node1"]
    assert nodes[0]["state"] == "ready"
    assert nodes[0]["facts"]["cpus"] >= 1
    assert {"last_seen", "silent_for", "registered_at", "running", "address"} <= set(nodes[0])
    # Heartbeats carry the agent's spool depth and dropped samples (ptap doctor reads them).
    beat = wait_for(lambda: next((n for n in cluster.cli_json("nodes")
                                  if n["spool_depth"] is not None), None), 15,
                    "a heartbeat with the spool's figures")
    assert beat["samples_dropped"] == 0 and beat["spool_depth"] >= 0


def test_run_wait_exits_with_the_failed_runs_code(cluster: Cluster) -> None:
    rc, out, err = cluster.cli("run", "--wait", "--tag", "build=1.2.3", "--",
                               "sh", "-c", "echo hi; exit 3")
    assert rc == 3, err
    job_id = out.splitlines()[0]
    assert job_id and " " not in job_id
    assert f"job {job_id}" in err  # progress went to stderr

    job = cluster.cli_json("job", job_id)
    assert job["id"] == job_id and job["state"] == "failed"
    assert job["spec"]["tags"] == {"build": "1.2.3"}
    [run] = job["runs"]
    assert (run["state"], run["exit_code"], run["node"]) == ("failed", 3, "node1")
    assert "hi" in run["stdout_tail"]

    rc, view, _ = cluster.cli("job", job_id)
    assert rc == 0 and "failed" in view and "  hi" in view
    assert job_id in [j["id"] for j in cluster.cli_json("jobs")]


def test_run_wait_succeeds_and_prints_only_the_id_on_stdout(cluster: Cluster) -> None:
    rc, out, err = cluster.cli("run", "--wait", "--name", "quick", "--", "true")
    assert rc == 0, err
    [job_id] = out.splitlines()
    assert cluster.job(job_id)["state"] == "succeeded"
    assert cluster.job(job_id)["name"] == "quick"


def test_state_is_private_and_jobs_keep_the_umask_the_agent_was_given(cluster: Cluster) -> None:
    """The manager's database (and WAL: job environments) is its owner's alone;
    a job's own files follow the umask the agent was started with, not the
    daemon's private one."""
    made = cluster.tmp / "made-by-the-job"
    rc, _, err = cluster.cli("run", "--wait", "--", "sh", "-c", 'echo > "$0"', str(made))
    assert rc == 0, err
    for path in cluster.tmp.glob("manager.db*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
    inherited = os.umask(0o022)
    os.umask(inherited)
    assert made.stat().st_mode & 0o777 == 0o666 & ~inherited


def test_run_wait_follows_a_job_that_ends_at_once_without_waiting_for_a_poll(
        cluster: Cluster) -> None:
    """The subscribe/submit race: a job over within milliseconds. The events are
    subscribed to before the submit, so every wait of the follower ends with an
    event; with the subscription made after the submit, the job's events were
    gone before anyone listened and the follower sat out its 1 s poll. Followed
    as ``ptap run --wait`` follows it: blocking, with no event loop."""
    host, port = cluster.manager.address.split(":")
    session = OneShotSession(Target(Endpoint(host, int(port))), timeout=10.0)

    async def follow_once() -> tuple[dict[str, Any], JobFollower]:
        events = session.job_events(10.0)
        try:
            async with session.client() as client:
                job = await client.submit(JobSpec(command=["true"]))
                follower = JobFollower(client, str(job["id"]))
                return await follow_job(client, str(job["id"]), job, events, follower), follower
        finally:
            await events.close()

    def followed() -> tuple[dict[str, Any], JobFollower]:
        out: list[tuple[dict[str, Any], JobFollower]] = []

        async def command() -> int:
            out.append(await follow_once())
            return 0

        assert run_to_end(command()) == 0, "it waited for an event loop"
        return out[0]

    for _ in range(3):
        final, follower = followed()
        assert final["state"] == "succeeded"
        # The job's event published while the submit was handled, before its reply:
        # only a subscription made before the submit can have it.
        assert follower.events, "the follower heard none of the job's events"
        first = follower.events[0]
        assert (first.kind, first.state) == ("job", "queued"), follower.events
        assert follower.silent_waits == 0, "the follower waited for a poll"
        # Each run change once, in order; the last may come after the final poll.
        changes = [r["state"] for e in follower.events for r in e.runs()]
        assert changes and changes == ["dispatched", "running", "succeeded"][:len(changes)], \
            changes


def test_timeout_ends_the_run_and_its_process(cluster: Cluster) -> None:
    proc = cli_background(cluster, "run", "--timeout", "2", "--wait", "--", "sleep", "30")
    agent = psutil.Process(cluster.agents["node1"].pid)
    sleeps = wait_for(lambda: [p for p in agent.children(recursive=True)
                               if cmdline(p) == ["sleep", "30"]], 20, "sleep 30 to start")
    rc, out, err = finish(proc)
    assert rc == 124, err
    wait_for(lambda: all(gone(p) for p in sleeps), 15, "sleep 30 to end")
    assert not [p for p in agent.children(recursive=True) if cmdline(p) == ["sleep", "30"]]
    [run] = cluster.job(out.splitlines()[0])["runs"]
    assert run["state"] == "timeout"


def test_cancel_ends_the_whole_process_tree(cluster: Cluster) -> None:
    proc = cli_background(cluster, "run", "--wait", "--", "sh", "-c",
                          "sleep 60 & sleep 60 & wait")
    job_id = first_line(proc)
    shell = psutil.Process(running_pid(cluster, job_id))

    def both_sleeps() -> list[psutil.Process] | None:
        found = [c for c in shell.children() if cmdline(c) == ["sleep", "60"]]
        return found if len(found) == 2 else None

    sleeps = wait_for(both_sleeps, 15, "both sleeps to start")
    rc, out, err = cluster.cli("cancel", job_id)
    assert rc == 0, err
    wait_for(lambda: all(gone(p) for p in [shell, *sleeps]), 15, "the job's tree to end")
    rc, _, err = finish(proc)
    assert rc == 130, err
    job = cluster.wait_job_state(job_id, {"cancelled"})
    assert [r["state"] for r in job["runs"]] == ["cancelled"]


def test_manager_restart_keeps_jobs_and_running_runs(cluster: Cluster) -> None:
    rc, out, err = cluster.cli("run", "--wait", "--", "true")
    assert rc == 0, err
    done_id = out.strip()
    follower = cli_background(cluster, "run", "--wait", "--", "sleep", "3")
    running_id = first_line(follower)
    running_pid(cluster, running_id)

    cluster.manager.kill()  # SIGKILL: no chance to save anything on the way out
    # Same state db, same ports. The restarted manager calls the run lost if its node
    # is not back within liveness x interval + interval: 0.8 s at the suite's 0.2 s
    # heartbeat, of which the agent took up to 0.3 s with the host loaded, so more
    # on a busier one. Coming back late is not what this test is about
    # (tests/manager/test_control.py has that case): here the deadline is 5.2 s.
    cluster.manager.start("basic.liveness=25")

    ids = [j["id"] for j in cluster.cli_json("jobs")]
    assert {done_id, running_id} <= set(ids)
    job = cluster.wait_job_state(running_id, {"succeeded", "failed", "cancelled"})
    assert job["state"] == "succeeded", job
    rc, _, err = finish(follower)
    assert rc == 0, err  # --wait rode out the restart


def test_stopped_agent_is_lost_then_ready_again(cluster: Cluster) -> None:
    agent = cluster.agents["node1"]
    agent.signal(signal.SIGSTOP)
    try:
        cluster.wait_node_state("node1", "lost")
    finally:
        agent.signal(signal.SIGCONT)
    cluster.wait_node_state("node1", "ready")


def test_second_agent_and_node_selection(cluster: Cluster) -> None:
    cluster.add_agent("node2")
    rc, out, err = cluster.cli("run", "--nodes", "node2", "--wait", "--", "true")
    assert rc == 0, err
    assert [r["node"] for r in cluster.job(out.strip())["runs"]] == ["node2"]
    rc, out, err = cluster.cli("run", "--nodes", "all", "--repeat", "2", "--wait", "--", "true")
    assert rc == 0, err
    runs = cluster.job(out.strip())["runs"]
    assert sorted((r["node"], r["iteration"]) for r in runs) == [
        ("node1", 1), ("node1", 2), ("node2", 1), ("node2", 2)]


def one_line_error(rc: int, out: str, err: str) -> str:
    assert rc != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ptap: ") and " — " in lines[0], err
    return lines[0]


def test_refusals_are_one_line(cluster: Cluster) -> None:
    line = one_line_error(*cluster.cli("run", "--nodes", "no-such-node", "--", "true"))
    assert "no-such-node" in line
    line = one_line_error(*cluster.cli("job", "ffffffffffff"))
    assert "ffffffffffff" in line
    line = one_line_error(*cluster.cli("keys", "list"))
    assert "curve" in line.lower()
    one_line_error(*cluster.cli("run", "--env", "NOEQUALS", "--", "true"))
    one_line_error(*cluster.cli("run", "--repeat", "0", "--", "true"))


def test_watch_shows_job_events(cluster: Cluster) -> None:
    watch = cli_background(cluster, "watch", "--count", "2")
    # PUB drops what is published before the subscription lands, so keep
    # submitting short jobs until watch has seen two events.
    def watch_done() -> bool:
        if watch.poll() is not None:
            return True
        assert cluster.cli("run", "--", "true").rc == 0
        return False

    wait_for(watch_done, 30, "ptap watch to see two events", interval=0.3)
    rc, out, err = finish(watch)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert all(line.split()[1] in {"run", "job", "node", "metrics"} for line in lines), lines


def test_unreachable_manager_is_one_line() -> None:
    rc, out, err = run_cli(["--manager", f"127.0.0.1:{unused_port()}", "--timeout", "0.5",
                            "nodes"])
    assert "cannot reach manager" in one_line_error(rc, out, err)


def test_silent_manager_is_one_line() -> None:
    """Something accepts the connection but never answers (a hung manager)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        rc, out, err = run_cli(["--manager", f"127.0.0.1:{port}", "--timeout", "0.5", "nodes"])
        assert "cannot reach manager" in one_line_error(rc, out, err)
        rc, out, err = run_cli(["--manager", f"127.0.0.1:{port}", "--timeout", "0.5", "jobs",
                                "--json"])
        assert "cannot reach manager" in one_line_error(rc, out, err)
    finally:
        sock.close(linger=0)
        ctx.term()


def test_json_output_is_the_protocol_shape(cluster: Cluster) -> None:
    rc, out, err = cluster.cli("run", "--wait", "--env", "X=1", "--", "sh", "-c", "echo $X")
    assert rc == 0, err
    job = cluster.cli_json("job", out.strip())
    assert set(job) >= {"id", "name", "state", "created_at", "ended_at", "spec", "runs"}
    assert job["spec"]["env"] == {"X": "1"}
    assert set(job["runs"][0]) >= {"id", "job_id", "node", "iteration", "state", "pid",
                                   "exit_code", "dispatched_at", "started_at", "ended_at",
                                   "stdout_tail", "stderr_tail", "error"}
    assert job["runs"][0]["stdout_tail"].strip() == "1"
    listed = cluster.cli_json("jobs")
    assert isinstance(listed, list) and listed[0]["id"] == job["id"]
    json.dumps(listed)  # plain JSON all the way down
