"""The history object from summaries: order, labels, change points, directions, environment."""

from __future__ import annotations

from typing import Any

from manager.history.build import environment_differences, history_object
from manager.history.series import ordered, version_key, wanted_metrics

CPU = [1.00, 1.02, 0.99, 1.01, 0.98, 1.00, 1.31, 1.29, 1.30, 1.32, 1.28, 1.30]


def summary(i: int, metrics: dict[str, float], *, state: str = "succeeded",
            tags: dict[str, str] | None = None, kernel: str = "6.1") -> dict[str, Any]:
    return {"version": 1,
            "job": {"id": f"job{i:02d}", "name": "nightly", "series": "nightly", "state": state,
                    "created_at": 1000.0 + i, "ended_at": 1001.0 + i, "command": ["./b"],
                    "targets": ["all"], "collect": ["process"], "interval": 1.0, "repeat": 3,
                    "tags": {"version": f"1.{i}", **(tags or {})}, "nodes": ["n1"]},
            "environment": {"n1": {"kernel": kernel, "source": "recorded"}},
            "metrics": {m: {"median": v, "low": v * 0.99, "high": v * 1.01, "runs": 3}
                        for m, v in metrics.items()}}


def series(values: list[float], metric: str = "run.cpu_seconds",
           **changed: Any) -> list[dict[str, Any]]:
    out = []
    for i, v in enumerate(values, start=1):
        extra = changed if i >= 7 else {}
        out.append(summary(i, {metric: v, "proc.threads": 4.0, "cpu.busy": 50.0 + i}, **extra))
    return out


def test_a_cpu_step_at_job_7_is_one_regression_with_its_differences_first() -> None:
    summaries = series(CPU, tags={"candidate": "yes"}, kernel="6.2")
    h = history_object("nightly", list(reversed(summaries)), [], now=5.0)
    assert h["kind"] == "ptap.history" and h["order"] == "version"
    assert [j["label"] for j in h["jobs"]] == [f"1.{i}" for i in range(1, 13)]
    cpu = next(e for e in h["metrics"] if e["metric"] == "run.cpu_seconds")
    [cp] = cpu["change_points"]
    assert list(cp)[0] == "environment_differences"
    assert cp["job"] == "job07" and cp["index"] == 6 and cp["direction"] == "regression"
    assert abs(cp["step"] - 0.3) < 0.02
    assert cp["p_value"] < 1e-3 and cp["ci"][0] < cp["step"] < cp["ci"][1]
    assert cp["environment_differences"] == [
        {"scope": "job", "key": "tag candidate", "base": "-", "cand": "yes"},
        {"scope": "node", "key": "kernel", "base": "6.1", "cand": "6.2"}]
    threads = next(e for e in h["metrics"] if e["metric"] == "proc.threads")
    assert threads["change_points"] == []
    assert "cpu.busy" not in {e["metric"] for e in h["metrics"]}  # node-wide: asked only


def test_a_drop_of_a_higher_is_better_metric_is_a_regression_and_a_rise_an_improvement() -> None:
    down = history_object("s", series([2.0] * 6 + [1.4] * 6, "run.ipc"), [], now=0.0)
    assert down["metrics"][0]["change_points"][0]["direction"] == "regression"
    up = history_object("s", series([1.0] * 6 + [0.7] * 6), ["run.cpu_seconds"], now=0.0)
    assert up["metrics"][0]["change_points"][0]["direction"] == "improvement"


def test_failed_jobs_make_no_point_and_are_counted_in_a_note() -> None:
    summaries = series(CPU)
    summaries[3]["job"]["state"] = "failed"
    h = history_object("nightly", summaries, ["run.cpu_seconds", "nope.x"], now=0.0)
    assert len(h["jobs"]) == 11 and "job04" not in {j["id"] for j in h["jobs"]}
    assert any("1 job(s) of the series did not succeed" in n for n in h["notes"])
    assert any("unknown metric 'nope.x'" in n for n in h["notes"])


def test_last_keeps_the_newest_points() -> None:
    h = history_object("nightly", series(CPU), ["run.cpu_seconds"], last=4, now=0.0)
    assert [j["id"] for j in h["jobs"]] == ["job09", "job10", "job11", "job12"]
    assert [p["index"] for p in h["metrics"][0]["points"]] == [0, 1, 2, 3]


def test_versions_order_as_numbers_and_without_one_time_orders() -> None:
    assert version_key("1.9") < version_key("1.10") < version_key("2.0")
    summaries = [summary(i, {}) for i in (10, 9, 2)]
    assert [s["job"]["id"] for s in ordered(summaries)[0]] == ["job02", "job09", "job10"]
    summaries[0]["job"]["tags"] = {"commit": "abc"}
    jobs, order = ordered(summaries)
    assert order == "time" and [s["job"]["id"] for s in jobs] == ["job02", "job09", "job10"]


def test_default_metrics_are_the_tests_own_in_report_order() -> None:
    s = summary(1, {"cpu.busy": 1, "app.latency": 1, "run.duration": 1, "proc.rss": 1,
                    "perf.task-clock": 1, "perf.system.cycles": 1})
    assert wanted_metrics([s], []) == ["run.duration", "proc.rss", "perf.task-clock",
                                       "app.latency"]
    assert wanted_metrics([s], ["cpu.busy", "cpu.busy"]) == ["cpu.busy"]


def test_environment_differences_leave_out_the_order_tags() -> None:
    a, b = summary(1, {}), summary(2, {}, tags={"commit": "abc"})
    assert environment_differences(a, b) == []
    b["job"]["command"] = ["./b", "--fast"]
    assert environment_differences(a, b) == [
        {"scope": "job", "key": "command", "base": "./b", "cand": "./b --fast"}]


def test_a_series_of_failed_jobs_has_no_points_and_says_why() -> None:
    summaries = series(CPU[:3])
    for s in summaries:
        s["job"]["state"] = "failed"
    h = history_object("nightly", summaries, [], now=0.0)
    assert h["jobs"] == [] and h["metrics"] == []
    assert h["notes"] == ["3 job(s) of the series did not succeed and make no point"]


def test_a_declared_direction_turns_a_rise_into_an_improvement() -> None:
    summaries = series([1.0] * 6 + [1.3] * 6, "app.score")
    for s in summaries:
        s["job"]["tags"]["direction.score"] = "higher"
    [entry] = history_object("s", summaries, ["app.score"], now=0.0)["metrics"]
    assert entry["direction"] == "higher"
    assert entry["change_points"][0]["direction"] == "improvement"
