"""report.get and compare.get through a real Manager, reading a real InfluxDB."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bus.errors import RequestFailed
from bus.messages import JobSpec, RunAck, RunDispatch, RunState
from manager.analysis import report
from manager.analysis.query import Window, statements
from manager.analysis.service import Analyst
from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import unused_port
from tests.manager.analysis.test_report import T, job, run, series, validate
from tests.manager.test_control import harness


async def finished_job(h: Any, client: Any, started: float) -> str:
    """Submit a job to fake agent n1 and report it run from ``started`` for 2 s."""
    agent = h.agent()
    await agent.register()
    job = await client.submit(JobSpec(command=["work"], targets=["n1"], collect=["process"]))
    dispatch = await agent.expect(RunDispatch)
    await agent.update(dispatch.run_id, job["id"], RunState.RUNNING, pid=7, started_at=started)
    await agent.update(dispatch.run_id, job["id"], RunState.SUCCEEDED, exit_code=0,
                       started_at=started, ended_at=started + 2)
    for _ in range(100):  # the final state is stored once the manager handled it
        if (await client.job(job["id"]))["state"] == "succeeded":
            return str(job["id"])
        await asyncio.sleep(0.02)  # wait-ok: poll step under a deadline
    raise AssertionError("the job never finished")


def tree_lines(job_id: str, started: float, values: list[float]) -> str:
    step = 2.0 / len(values)
    return "\n".join(
        f"proc,node=n1,job={job_id},pid=tree,comm=work cpu_pct={v},rss=1000i "
        f"{int((started + i * step) * 1e9)}" for i, v in enumerate(values))


def test_report_and_compare_over_the_bus(tmp_path: Path, influxdb: InfluxFixture,
                                         influx_db: str) -> None:
    started = time.time() - 60
    where = {"influxdb.url": influxdb.url, "influxdb.database": influx_db}

    async def scenario() -> str:
        async with harness(tmp_path / "m.db", **where) as h, h.client() as client:
            job_id = await finished_job(h, client, started)
            influxdb.write(influx_db, tree_lines(job_id, started, [10, 20, 30, 40]))
            r = await client.report(job_id)
            validate(r)
            assert r["job"]["id"] == job_id and r["runs"][0]["state"] == "succeeded"
            assert r["overall"]["metrics"]["proc.cpu_pct"]["count"] == 4
            env = r["environment"]["n1"]
            assert (env["source"], env["kernel"], env["cpus"]) == ("recorded", "6.1", 1)
            text = await client.report(job_id, "text")
            assert text["format"] == "text" and "proc.cpu_pct" in text["content"]
            html = await client.report(job_id, "html")
            assert html["content"].startswith("<!DOCTYPE html>")
            c = await client.compare(job_id, job_id, "json", threshold=0.1)
            validate(c)
            assert c["threshold"] == 0.1
            same = next(e for e in c["metrics"] if e["metric"] == "proc.cpu_pct")
            assert (same["change"], same["p_value"]) == (0.0, 1.0)
            assert same["verdict"] in ("unchanged", "inconclusive")  # 4 points: a wide CI
            cases = [(client.report("nope"), "not-found"),
                     (client.report(job_id, "pdf"), "bad-request"),
                     (client.compare(job_id, "nope"), "not-found"),
                     (client.compare(job_id, job_id, threshold=-1.0), "bad-request"),
                     (client.compare(job_id, job_id, "xml"), "bad-request")]
            for call, code in cases:
                with pytest.raises(RequestFailed) as exc:
                    await call
                assert exc.value.code == code, exc.value
            assert [n["name"] for n in await client.nodes()] == ["n1"], "still serving"
            return job_id

    job_id = asyncio.run(scenario())

    async def without_influxdb() -> None:
        # The same state, but InfluxDB is not where the manager looks: a clear refusal.
        nowhere = {"influxdb.url": f"http://127.0.0.1:{unused_port()}", "influxdb.timeout": "2"}
        async with harness(tmp_path / "m.db", **nowhere) as h, h.client() as client:
            with pytest.raises(RequestFailed) as exc:
                await client.report(job_id)
            assert exc.value.code == "unavailable" and "InfluxDB" in exc.value.message

    asyncio.run(without_influxdb())


async def fleet_job(client: Any, agents: dict[str, Any], started: float) -> str:
    """A job on every node of ``agents`` (fake agents, registered), each node's run
    going from ``started`` for 2 s; returns the job id once it has finished."""
    job = await client.submit(JobSpec(command=["work"], targets=sorted(agents),
                                      collect=["process"]))
    for agent in agents.values():
        dispatch = await agent.expect(RunDispatch)
        await agent.update(dispatch.run_id, job["id"], RunState.RUNNING, pid=7,
                           started_at=started)
        await agent.update(dispatch.run_id, job["id"], RunState.SUCCEEDED, exit_code=0,
                           started_at=started, ended_at=started + 2)
        assert (await agent.expect(RunAck)).run_id == dispatch.run_id  # stored
    assert (await client.job(job["id"]))["state"] == "succeeded"
    return str(job["id"])


def node_tree_lines(job_id: str, node: str, started: float, mean: float) -> str:
    """20 tree samples over the run, around ``mean`` (±1 %, a fixed pattern)."""
    wobble = [(i * 7 % 11 - 5) / 500 for i in range(20)]
    return "\n".join(
        f"proc,node={node},job={job_id},pid=tree,comm=work cpu_pct={mean * (1 + w):.4f},"
        f"rss=1000i {int((started + i * 0.1) * 1e9)}" for i, w in enumerate(wobble))


def test_compare_per_node_needs_no_query_more(tmp_path: Path, influxdb: InfluxFixture,
                                              influx_db: str) -> None:
    """Five nodes ran the baseline, five the candidate (n5 only the first, n6 only the
    second); n2 uses 30 % more CPU in the candidate, the others the same. The pooled
    median does not move; the per-node part names n2, from the same queries."""
    started = time.time() - 60
    where = {"influxdb.url": influxdb.url, "influxdb.database": influx_db}

    async def scenario() -> dict[str, Any]:
        async with harness(tmp_path / "m.db", **where) as h, h.client() as client:
            agents = {n: h.agent(n) for n in ("n1", "n2", "n3", "n4", "n5", "n6")}
            for agent in agents.values():
                await agent.register()
            base = await fleet_job(client, {n: agents[n] for n in ("n1", "n2", "n3", "n4",
                                                                  "n5")}, started)
            cand = await fleet_job(client, {n: agents[n] for n in ("n1", "n2", "n3", "n4",
                                                                  "n6")}, started + 10)
            influxdb.write(influx_db, "\n".join(
                [node_tree_lines(base, n, started, 40.0) for n in ("n1", "n2", "n3", "n4", "n5")]
                + [node_tree_lines(cand, n, started + 10, 52.0 if n == "n2" else 40.0)
                   for n in ("n1", "n2", "n3", "n4", "n6")]))
            sent: list[str] = []
            sink = h.mgr.analyst.client
            real_query = sink.query

            async def counted(influxql: str, db: str | None = None, *,
                              epoch: str | None = "ns") -> dict[str, Any]:
                sent.append(influxql)  # the real client answers; this only counts
                return await real_query(influxql, db, epoch=epoch)

            sink.query = counted  # type: ignore[method-assign]
            c = await client.compare(base, cand, "json")
            assert len(sent) == 2 * len(statements(Window("j", ("n1",), 0, 1))), \
                "one query per measurement per job, whatever the nodes"
            text = (await client.compare(base, cand, "text"))["content"]
            page = (await client.compare(base, cand, "html"))["content"]
            return {"json": c, "text": text, "html": page}

    out = asyncio.run(scenario())
    c = out["json"]
    validate(c)
    pooled = next(e for e in c["metrics"] if e["metric"] == "proc.cpu_pct")
    assert pooled["samples"] == "iterations" and pooled["verdict"] != "regression"
    assert c["verdict"] != "regression"
    n = c["nodes"]
    assert n["shared"] == 4 and (n["only_base"], n["only_cand"]) == (["n5"], ["n6"])
    verdicts = {d["node"]: d["verdict"] for d in n["detailed"]}
    assert verdicts["n2"] == "regression" and list(verdicts) == ["n1", "n2", "n3", "n4"]
    assert [v for node, v in verdicts.items() if node != "n2"] == ["inconclusive"] * 3
    cpu = next(e for e in n["detailed"][1]["metrics"] if e["metric"] == "proc.cpu_pct")
    assert cpu["samples"] == "points" and (cpu["n_base"], cpu["n_cand"]) == (20, 20)
    assert cpu["change"] == pytest.approx(0.3, abs=0.01)
    assert [(f["node"], f["metric"], f["hidden"]) for f in n["flags"]] == [
        ("n2", "proc.cpu_pct", True)]
    assert "!! node n2: proc.cpu_pct worse by 30" in out["text"].splitlines()[2]
    assert "only in the candidate (not compared): n6" in out["text"]
    assert "node n2: proc.cpu_pct worse by 30" in out["html"]


def test_environment_comes_from_records_else_the_registry() -> None:
    facts = {"n1": ({"kernel": "6.1", "labels": ["x"]}, "recorded"),
             "n2": ({"kernel": "6.5"}, "registry")}
    analyst = Analyst(lambda j: None, lambda n, w: facts.get(n),
                      client=None)  # type: ignore[arg-type]
    job = {"runs": [{"node": "n2", "started_at": 5.0}, {"node": "n1", "started_at": 1.0},
                    {"node": "n3", "started_at": None}, {"node": "n1", "started_at": 9.0}]}
    env = analyst.environment(job)
    assert env["n1"]["kernel"] == "6.1" and env["n1"]["source"] == "recorded"
    assert "labels" not in env["n1"]
    assert env["n2"]["source"] == "registry" and env["n3"] == {"source": "unknown"}


PROC_COLUMNS = ("cpu_pct", "rss", "read_bps", "write_bps", "threads", "ctx_vol", "ctx_invol",
                "fds")


def busy_fleet(job_id: str, nodes: int = 50, points: int = 1000,
               apps: int = 0) -> report.JobAnalysis:
    """One run on each of ``nodes`` nodes, every tree metric and ``apps`` app metrics
    noisy: a full bootstrap per node and metric, about 75 ms each here (50 nodes
    without app metrics: about 15 s on two threads)."""
    rng = np.random.default_rng(len(job_id))
    runs, raw = [], {"proc": [], "app": []}
    times = [T + s * 0.01 for s in range(points)]
    for i in range(nodes):
        node = f"n{i:02d}"
        runs.append(run(node, 1, T, T + points * 0.01, job=job_id))
        raw["proc"].append(series("proc", {"node": node}, times,
                                  **{c: rng.normal(100.0, 1.0, points) for c in PROC_COLUMNS}))
        raw["app"] += [series("app", {"node": node, "name": f"m{k}"}, times,
                              value=rng.normal(100.0, 1.0, points)) for k in range(apps)]
    return report.analyse(job(runs, job_id=job_id), {}, raw, now=T + 1000)


def named(prefix: str) -> list[threading.Thread]:
    """This process's threads whose name starts with ``prefix`` (started or starting)."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


async def per_node_work_started(task: asyncio.Task[Any]) -> None:
    """Returns once the pool's threads run (they start with the per-node stage)."""
    deadline = time.monotonic() + 30
    while not any(t.is_alive() for t in named("ptap-compare-node")):
        assert time.monotonic() < deadline and not task.done(), "no per-node work began"
        await asyncio.sleep(0.01)  # wait-ok: poll step under a deadline


def all_end(prefix: str, within: float) -> bool:
    """Whether every thread named ``prefix``... has ended within ``within`` seconds
    (joined with the time left; one still starting is joined once it runs)."""
    deadline = time.monotonic() + within
    while found := named(prefix):
        if time.monotonic() >= deadline:
            return False
        for t in found:
            if t.is_alive():
                t.join(timeout=max(0.0, deadline - time.monotonic()))
    return True


def test_a_cancelled_comparison_stops_its_threads_promptly() -> None:
    """The manager closing cancels a comparison in progress: the per-node threads and
    the executor thread that awaits them stop before their next metric instead of
    computing the whole breakdown (about 15 s here) while asyncio.run waits."""
    base, cand = busy_fleet("base"), busy_fleet("cand")
    assert not named("ptap-compare-node"), "no comparison left running by an earlier test"
    analyst = Analyst(lambda j: None, lambda n, w: None, client=None,  # type: ignore[arg-type]
                      node_workers=2)
    executor = ThreadPoolExecutor(1, "test-cancel-work")

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        task = asyncio.create_task(analyst.comparison(base, cand, threshold=0.05, now=T))
        await per_node_work_started(task)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert all_end("ptap-compare-node", within=5), "the per-node threads went on computing"
        executor.shutdown(wait=False)  # its idle thread ends; a busy one ends with its work
        assert all_end("test-cancel-work", within=5), \
            "the comparison's executor thread went on waiting"

    asyncio.run(scenario())


def test_a_node_that_fails_does_not_wait_for_the_others() -> None:
    """An error on one node is the comparison's error at once: n01 fails at its first
    tree metric while n00 (before it in order) and n02 (taking its thread) have about
    8 s of bootstraps ahead (108 metrics each); they stop before their next metric,
    and the nodes after them never begin a test."""
    base, cand = busy_fleet("base", nodes=6, apps=100), busy_fleet("cand", nodes=6, apps=100)
    broken = next(rd for rd in cand.runs if rd.node == "n01")
    ts, values = broken.points["proc.cpu_pct"]
    broken.points["proc.cpu_pct"] = (ts, np.array(["garbage"] * values.size, dtype=object))
    analyst = Analyst(lambda j: None, lambda n, w: None, client=None,  # type: ignore[arg-type]
                      node_workers=2)

    async def scenario() -> None:
        task = asyncio.create_task(analyst.comparison(base, cand, threshold=0.05, now=T))
        with pytest.raises(ValueError, match="garbage"):
            await asyncio.wait_for(task, timeout=3)
        assert all_end("ptap-compare-node", within=2), "the other nodes went on computing"

    asyncio.run(scenario())
