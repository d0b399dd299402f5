"""scripts/bench/cli.py: its arguments, statistics and verdict (Salt itself never runs here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scripts.bench import cli


def test_percentile_is_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert cli.percentile(values, 50) == 3.0
    assert cli.percentile(values, 95) == 5.0
    assert cli.percentile(values, 0) == 1.0
    assert cli.percentile([7.0], 95) == 7.0


def test_summary_ms_in_milliseconds_or_none() -> None:
    assert cli.summary_ms([]) is None
    stats = cli.summary_ms([0.2, 0.1, 0.3])
    assert stats == {"p50": 200.0, "p95": 300.0, "min": 100.0, "max": 300.0, "count": 3}


def entry(run: float | None, cmd_run: float | None, nodes: float | None,
          ping: float | None) -> dict[str, object]:
    ms = {"ptap_run": run, "salt_cmd_run": cmd_run, "ptap_nodes": nodes,
          "salt_test_ping": ping}
    return {"ms": {k: None if v is None else {"p50": v} for k, v in ms.items()}}


def test_verdict_ratios_and_targets() -> None:
    met = cli.verdict(entry(200.0, 1000.0, 70.0, 700.0))
    assert met == {"ratio_run": 0.2, "ratio_nodes": 0.1, "target_run_met": True,
                   "target_nodes_met": True}
    missed = cli.verdict(entry(300.0, 1000.0, 81.0, 900.0))
    assert missed["target_run_met"] is False and missed["target_nodes_met"] is False
    assert missed["ratio_run"] == 0.3


def test_verdict_without_a_side_is_not_a_verdict() -> None:
    v = cli.verdict(entry(200.0, None, None, 700.0))
    assert v == {"ratio_run": None, "ratio_nodes": None, "target_run_met": None,
                 "target_nodes_met": None}


def test_parse_args_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    args = cli.parse_args([])
    assert args.nodes == [1, 10] and args.rounds == 20 and args.salt == "3007"
    assert args.salt_venv == tmp_path / "ptap-bench" / "salt-3007"
    assert not args.json


def test_parse_args_sorts_node_counts_and_takes_a_venv() -> None:
    args = cli.parse_args(["--nodes", "10, 1,10", "--salt", "3008", "--salt-venv", "/x"])
    assert args.nodes == [1, 10] and args.salt_venv == Path("/x")


@pytest.mark.parametrize("argv", [["--nodes", "0"], ["--nodes", "a"], ["--rounds", "0"],
                                  ["--salt", "latest"], ["--time-limit", "10"]])
def test_parse_args_refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_run_once_checks_status_and_names(tmp_path: Path) -> None:
    def command(script: str, names: tuple[str, ...] = ()) -> cli.Command:
        return cli.Command("k", "k", [sys.executable, "-c", script], {}, tmp_path, names)

    elapsed, error = cli.run_once(command("print('node00:\\n    True')", ("node00",)))
    assert error is None and elapsed > 0
    assert cli.run_once(command("print('node00')", ("node00", "node01")))[1] == \
        "no answer from node01"
    assert cli.run_once(command("print('node00:\\n    Minion did not return.')",
                                ("node00",)))[1] == "no answer from a minion"
    assert cli.run_once(command("import sys; sys.exit('ptap: no manager')"))[1] == \
        "exit 1: ptap: no manager"
