"""report.get and compare.get through a real Manager, reading a real InfluxDB."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bus.errors import RequestFailed
from bus.messages import JobSpec, RunDispatch, RunState
from manager.analysis.service import Analyst
from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import unused_port
from tests.manager.analysis.test_report import validate
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
