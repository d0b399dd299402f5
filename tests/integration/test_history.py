"""A series of real jobs: a real agent's collectors, manager, InfluxDB and ``ptap history``.

Twelve short jobs of one series, tagged ``version=1.1`` … ``1.12``; from the
seventh on a tagged candidate burns 30 % more CPU in a busy loop, then every
run idles to the same length. The step is looked for in ``run.cpu_time``, the
CPU *time* of the process tree: on a loaded 2-core host the loop's share of a
CPU varies from job to job, but the CPU time it burns does not.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shlex
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_influx import InfluxFixture
from tests.integration.conftest import Cluster, wait_for

pytestmark = pytest.mark.integration

SERIES = "busy-loop"
#: Three runs a job, sampled every 0.1 s: a run's CPU time is off by up to a sample's
#: share at each end, and the median of three shrugs off one run that was.
#: Seconds of CPU the baseline burns: long enough that a sample's share at the ends and
#: interpreter start-up are small beside the step. The loop counts the process's own CPU
#: time, not iterations: on a shared host the CPU time of a fixed number of iterations
#: moved by a third within one run of this test (a busy or idle sibling hyperthread), and
#: erased the candidate's step; "burns 30 % more CPU" is then what the candidate does.
WORK = 0.6
CANDIDATE = round(WORK * 1.3, 3)
#: Then each run idles until RUN_S after its start, so that baseline and candidate are
#: sampled equally long: the tree's RSS is a mean over samples, which include the
#: interpreter's start-up at a lower RSS, and a candidate sampled 0.8 s against 0.6 s had
#: its mean RSS 7 % higher, a true step the detector found (a clean-clone CI run).
RUN_S = 1.5
LOOP = ("import time\nstart = time.monotonic()\nwhile time.process_time() < {work}:\n"
        "    pass\n"
        "time.sleep(max(0.0, start + {run_s} - time.monotonic()))  # wait-ok: a run's length\n")
STEP_FREE = ("proc.rss", "proc.threads", "proc.fds")


def submit(c: Cluster, version: int, work: float, *tags: str) -> str:
    rc, out, err = c.cli("run", "--series", SERIES, "--tag", f"version=1.{version}", *tags,
                         "--collect", "system,process", "--interval", "0.1", "--repeat", "3",
                         "--", sys.executable, "-c", LOOP.format(work=work, run_s=RUN_S))
    assert rc == 0, err
    return out.splitlines()[0]


def history(c: Cluster, *args: str) -> dict[str, Any]:
    rc, out, err = c.cli("history", SERIES, *args, "--format", "json")
    assert rc == 0, err
    return dict(json.loads(out))


def entry(h: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(e for e in h["metrics"] if e["metric"] == metric)


def test_a_30_percent_cpu_step_from_job_7_is_one_regression(
        metrics_cluster: Cluster, influxdb: InfluxFixture, influx_db: str,
        output_dir: Path) -> None:
    c = metrics_cluster
    jobs = [submit(c, v, WORK) for v in range(1, 7)]
    jobs += [submit(c, v, CANDIDATE, "--tag", "candidate=yes") for v in range(7, 13)]
    for job_id in jobs:
        assert c.wait_job_state(job_id, {"succeeded", "failed"}, 120)["state"] == "succeeded"
    ended_ns = int(c.job(jobs[-1])["ended_at"] * 1e9)
    wait_for(lambda: influxdb.query(influx_db, "SELECT last(rss) FROM agent WHERE "
                                               f"node = 'node1' AND time > {ended_ns}"),
             20, "samples after the last job")

    # Summaries are kept as jobs end (a few seconds after, once their samples are in).
    wait_for(lambda: len(summarised(c)) >= 6, 30, "the first jobs' summaries")

    h = history(c)
    (output_dir / "history-busy-loop.json").write_text(json.dumps(h, indent=2))
    assert [j["label"] for j in h["jobs"]] == [f"1.{v}" for v in range(1, 13)]
    assert h["order"] == "version"
    cpu = entry(h, "run.cpu_time")
    assert len(cpu["points"]) == 12 and all(p["runs"] == 3 for p in cpu["points"])
    assert len(cpu["change_points"]) == 1, [p["median"] for p in cpu["points"]]
    step = cpu["change_points"][0]
    assert step["job"] == jobs[6] and step["index"] == 6 and step["label"] == "1.7"
    assert step["direction"] == "regression" and step["p_value"] < h["detector"]["alpha"]
    assert 0.15 < step["step"] < 0.45 and step["ci"][0] < step["step"] < step["ci"][1]
    assert step["environment_differences"][0] == {
        "scope": "job", "key": "command", "base": _command(WORK),
        "cand": _command(CANDIDATE)}
    assert {"scope": "job", "key": "tag candidate", "base": "-", "cand": "yes"} \
        in step["environment_differences"]
    for metric in STEP_FREE:
        assert entry(h, metric)["change_points"] == [], entry(h, metric)

    _other_forms(c, jobs)
    page = output_dir / "history-busy-loop.html"
    rc, out, err = c.cli("history", SERIES, "--format", "html", "-o", str(page))
    assert rc == 0 and out.strip() == str(page), err
    assert page.read_text().lstrip().lower().startswith("<!doctype html") and SERIES in \
        page.read_text()
    # The candidate's own report says its series moved there, the next one's that run.cpu_time
    # did not. Another metric may have: the tree's CPU share (proc.cpu_pct) of sub-second
    # runs sampled once a second is noisy on a loaded host, and a clean-clone CI run found
    # it stepping at job 8 (that line said "moved at this job: proc.cpu_pct ...", which is true).
    not_here = (r"did not move at this job; last change point at job"
                r"|moved at this job: (?![^<]*run\.cpu_time)")
    for job_id, moved in ((jobs[6], r"moved at this job: [^<]*run\.cpu_time \+\d"),
                          (jobs[7], not_here)):
        rc, out, err = c.cli("report", job_id, "--format", "html")
        (output_dir / f"report-{job_id}.html").write_text(out)
        assert rc == 0 and f"Series {SERIES}" in out, err
        assert re.search(moved, html.unescape(out)), moved

    # Jobs from before summaries existed (here: summaries dropped) are summarised on first use.
    with sqlite3.connect(c.manager.db) as db:
        db.execute("DELETE FROM job_summaries WHERE job_id IN (?, ?, ?)", jobs[:3])
    assert not set(jobs[:3]) & summarised(c)
    again = history(c)
    assert entry(again, "run.cpu_time")["points"] == cpu["points"]
    assert set(jobs[:3]) <= summarised(c)


def summarised(c: Cluster) -> set[str]:
    """Ids of the jobs whose summary the manager has kept in its state database."""
    with sqlite3.connect(c.manager.db) as db:
        try:
            return {r[0] for r in db.execute("SELECT job_id FROM job_summaries")}
        except sqlite3.OperationalError:  # the table is made on the first summary
            return set()


def _command(work: float) -> str:
    """The command as environment differences show it: shell-quoted, newlines visible."""
    return shlex.join([sys.executable, "-c", LOOP.format(work=work, run_s=RUN_S)]).replace("\n", "\\n")


def _other_forms(c: Cluster, jobs: list[str]) -> None:
    """The text, CSV and --last views of the same history, and the refusals."""
    rc, out, err = c.cli("history", SERIES, "--metric", "run.cpu_time")
    assert rc == 0, err
    assert "▲ regression at 1.7" in out and out.count("◀ regression") == 1
    rc, out, err = c.cli("history", SERIES, "--metric", "run.cpu_time", "--format", "csv")
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 12 and [r["change"] for r in rows].count("regression") == 1
    assert rows[6]["job"] == jobs[6] and rows[6]["change"] == "regression"
    last = history(c, "--last", "4", "--metric", "run.cpu_time")
    assert [j["id"] for j in last["jobs"]] == jobs[-4:]

    rc, out, err = c.cli("history", "no-such-series")
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "no finished job in series 'no-such-series'" in err and "--series" in err
    rc, out, err = c.cli("history", " ")
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "series name must be 1 to 200 characters" in err
    rc, _, err = c.cli("history", SERIES, "--since", "last tuesday")
    assert rc == 2 and "--since" in err and len(err.strip().splitlines()) == 1
