"""From metric series to chart columns: the one transform behind live data and backfill."""

from __future__ import annotations

import math

from dashboard.series import Update, View, extract, merge, thin

T0 = 1_700_000_000_000_000_000  # ns
S = 10**9


def by_key(updates: list[Update]) -> dict[str, Update]:
    return {u.key: u for u in updates}


def test_cpu_total_only_with_busy_and_ms_times() -> None:
    fields = ["user", "system", "iowait", "irq", "softirq", "steal", "idle"]
    series = [["cpu", {"node": "n1", "cpu": "total"}, fields, [[T0, 10.0, 5.0, 1.0, 0, 0, 0, 84.0]]],
              ["cpu", {"node": "n1", "cpu": "0"}, fields, [[T0, 99.0, 0, 0, 0, 0, 0, 1.0]]]]
    (u,) = extract(series)
    assert u.key == "node:n1"
    assert {c: u.columns[c] for c in ("t", "user", "system", "iowait", "busy")} == {
        "t": [T0 / 1e6], "user": [10.0], "system": [5.0], "iowait": [1.0], "busy": [16.0]}
    assert math.isnan(u.columns["percent"][0])  # no mem row at that time: a gap


def test_missing_fields_and_values_are_gaps_not_zeros() -> None:
    (u,) = extract([["cpu", {"node": "n1", "cpu": "total"}, ["user", "idle"],
                     [[T0, None, 50.0], [T0 + S, "x", None]]]])
    assert u.key == "node:n1"
    assert math.isnan(u.columns["user"][0]) and math.isnan(u.columns["system"][0])
    assert u.columns["busy"][0] == 50.0 and math.isnan(u.columns["busy"][1])


def test_disk_and_net_are_summed_over_devices_per_sample() -> None:
    fields = ["read_bps", "write_bps", "read_iops", "write_iops", "busy_pct"]
    series = [["disk", {"node": "n1", "dev": "sda"}, fields, [[T0, 1e6, 2e6, 1, 2, 30.0]]],
              ["disk", {"node": "n1", "dev": "sdb"}, fields, [[T0, 3e6, 0.0, 1, 2, 70.0]]],
              ["net", {"node": "n1", "nic": "eth0"}, ["rx_bps", "tx_bps"], [[T0, 5e6, 1e6]]]]
    (u,) = extract(series)
    assert {c: u.columns[c] for c in ("t", "read_mbs", "write_mbs", "busy_pct", "rx_mbs",
                                      "tx_mbs")} == {
        "t": [T0 / 1e6], "read_mbs": [4.0], "write_mbs": [2.0], "busy_pct": [70.0],
        "rx_mbs": [5.0], "tx_mbs": [1.0]}


def test_node_measurements_are_joined_on_time() -> None:
    series = [["cpu", {"node": "n1", "cpu": "total"}, ["idle"], [[T0, 90.0], [T0 + S, 80.0]]],
              ["mem", {"node": "n1"}, ["percent"], [[T0 + S, 50.0]]],
              ["mem", {"node": "n2"}, ["percent"], [[T0, 10.0]]]]
    got = by_key(extract(series))
    n1 = got["node:n1"].columns
    assert n1["t"] == [T0 / 1e6, (T0 + S) / 1e6] and n1["busy"] == [10.0, 20.0]
    assert math.isnan(n1["percent"][0]) and n1["percent"][1] == 50.0
    assert got["node:n2"].columns["percent"] == [10.0]


def test_process_tree_chart_and_table() -> None:
    fields = ["cpu_pct", "rss", "read_bps", "write_bps", "threads", "ctx_vol", "ctx_invol", "fds"]
    tags = {"node": "n1", "job": "j1"}
    series = [["proc", {**tags, "pid": "tree", "comm": "sh"}, fields,
               [[T0, 150.0, 30e6, 0, 0, 3, 0, 0, 9]]],
              ["proc", {**tags, "pid": "10", "comm": "old"}, fields, [[T0 - S, 1.0, 1e6, 0, 0, 1, 0, 0, 3]]],
              ["proc", {**tags, "pid": "11", "comm": "sh"}, fields, [[T0, 50.0, 10e6, 0, 0, 1, 0, 0, 3]]],
              ["proc", {**tags, "pid": "12", "comm": "worker"}, fields, [[T0, 100.0, 20e6, 0, 0, 2, 0, 0, 6]]]]
    got = by_key(extract(series))
    assert got["proc:n1"].columns == {"t": [T0 / 1e6], "cpu_pct": [150.0], "rss_mb": [30.0]}
    assert got["proc:n1"].job == "j1"
    tree = got["tree:n1"]
    assert tree.replace and tree.columns["pid"] == ["11", "12"]  # the newest sample only
    assert tree.columns["comm"] == ["sh", "worker"] and tree.columns["threads"] == [1.0, 2.0]


def test_perf_events_ipc_app_and_marks() -> None:
    pf = ["value", "per_sec", "enabled_pct"]
    series = [["perf", {"node": "n1", "job": "j1", "scope": "job", "event": "task-clock"}, pf,
               [[T0, 900.0, 1000.0, 100.0], [T0 + S, 5.0, None, 100.0]]],
              ["perf", {"node": "n1", "job": "j1", "scope": "job", "event": "ipc"}, pf,
               [[T0, 1.5, None, 100.0]]],
              ["app", {"node": "n1", "job": "j1", "name": "latency"}, ["value"], [[T0, 12.5]]],
              ["mark", {"node": "n1", "job": "j1"}, ["phase", "iteration"], [[T0, "warmup", 3.0]]]]
    got = by_key(extract(series))
    assert got["perf:n1:task-clock"].columns["value"] == [1000.0, 5.0]  # per_sec, else value
    assert got["ipc:n1"].columns == {"t": [T0 / 1e6], "ipc": [1.5]}
    assert got["app:n1:latency"].columns["value"] == [12.5]
    assert got["mark:n1"].columns["text"] == ["phase=warmup iteration=3"]


def test_bad_series_are_skipped() -> None:
    junk = [None, [], ["cpu"], ["cpu", "tags", ["idle"], [[T0, 1]]], ["nope", {}, [], [[T0]]],
            ["mem", {"node": "n1"}, ["percent"], []]]
    assert extract(junk) == []  # type: ignore[arg-type]


def test_merge_orders_rows_and_thin_keeps_the_newest() -> None:
    a = Update("node", "n1", {"t": [3.0, 4.0], "percent": [3, 4]})
    b = Update("node", "n1", {"t": [1.0, 2.0], "percent": [1, 2]})
    (m,) = merge([a, b])
    assert m.columns == {"t": [1.0, 2.0, 3.0, 4.0], "percent": [1, 2, 3, 4]}
    assert a.columns["t"] == [3.0, 4.0]  # inputs are shared with other sessions: untouched
    big = Update("node", "n1", {"t": list(range(100)), "percent": list(range(100))})
    thinned = thin(big, 10)
    assert len(thinned) == 10 and thinned.columns["t"][0] == 0 and thinned.columns["t"][-1] == 99


def test_view_filters_node_job_and_perf_scope() -> None:
    view = View(("n1",), job="j1", scope="job")
    assert view.wants(Update("node", "n1", {"t": []}))
    assert not view.wants(Update("node", "n2", {"t": []}))
    assert view.wants(Update("proc", "n1", {"t": []}, job="j1"))
    assert not view.wants(Update("proc", "n1", {"t": []}, job="j2"))
    assert not view.wants(Update("perf", "n1", {"t": []}, job="j1", scope="system"))
    node_view = View(("n1",))
    assert node_view.wants(Update("proc", "n1", {"t": []}, job="j2"))
    assert node_view.wants(Update("perf", "n1", {"t": []}, scope="system"))
