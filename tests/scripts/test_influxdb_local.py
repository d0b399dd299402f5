"""scripts/influxdb_local.py: a private influxd, as a class and as a command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import scripts.influxdb_local as local
from scripts.influxdb_local import (
    InfluxdNotFound,
    InfluxServer,
    InfluxStartError,
    create_database,
    ping,
    request,
    stop_pid,
)

SCRIPT = Path(local.__file__)


def write_and_count(url: str, db: str, lines: bytes | None = None) -> int:
    if lines is not None:
        status, _ = request(url, "POST", "/write", params={"db": db}, body=lines)
        assert status == 204
    status, body = request(url, "GET", "/query", params={"db": db, "q": "SELECT count(v) FROM m"})
    assert status == 200
    series = json.loads(body)["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def test_start_stop(tmp_path: Path) -> None:
    server = InfluxServer(tmp_path / "influx", die_with_parent=True)
    try:
        url = server.start()
        assert url == server.url and ping(url)
        pid = server.pid
        assert pid is not None and Path(f"/proc/{pid}").exists()
        config = server.config_path.read_text()
        assert f'bind-address = "127.0.0.1:{server.http_port}"' in config
        assert f'bind-address = "127.0.0.1:{server.rpc_port}"' in config
        assert str(tmp_path / "influx" / "wal") in config
    finally:
        server.stop()
    assert not server.running and server.pid is None and not ping(url)
    assert not Path(f"/proc/{pid}").exists() or local._pid_state(pid) in (None, "Z")


def test_stop_then_start_keeps_port_and_data(tmp_path: Path) -> None:
    with InfluxServer(tmp_path / "influx", die_with_parent=True) as server:
        url = server.url
        create_database(url, "keep")
        assert write_and_count(url, "keep", b"m v=1i 1\nm v=2i 2") == 2
        server.stop()
        assert not ping(url)
        assert server.start() == url
        assert write_and_count(url, "keep") == 2


def test_taken_fixed_port_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        server = InfluxServer(tmp_path / "influx", http_port=port, die_with_parent=True)
        with pytest.raises(InfluxStartError, match=f"port {port} is already in use"):
            server.start()
        assert not server.running


def test_taken_picked_port_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        real_free_port = local.free_port
        ports: Iterator[int] = iter([taken])  # the first pick loses the race
        monkeypatch.setattr(local, "free_port", lambda: next(ports, None) or real_free_port())
        with InfluxServer(tmp_path / "influx", die_with_parent=True) as server:
            assert server.http_port != taken and ping(server.url)


def test_missing_influxd_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InfluxdNotFound, match="apt-get install -y influxdb"):
        InfluxServer(tmp_path / "influx").start()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "start", "--dir", str(tmp_path / "x"), "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "apt-get install -y influxdb" in result.stderr


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_command_line_start_and_stop(tmp_path: Path) -> None:
    pidfile = tmp_path / "influxd.pid"
    data = tmp_path / "data"
    started = cli("start", "--dir", str(data), "--port", "0", "--pidfile", str(pidfile),
                  "--create-db", "ptap")  # fmt: skip
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    pid = int(pidfile.read_text())
    try:
        assert ping(url) and write_and_count(url, "ptap", b"m v=1i 1") == 1
        port = url.rsplit(":", 1)[1]
        again = cli("start", "--dir", str(data), "--port", port, "--pidfile", str(pidfile))
        assert again.returncode == 0 and again.stdout.strip() == url  # already running
        stopped = cli("stop", "--pidfile", str(pidfile))
        assert stopped.returncode == 0, stopped.stderr
        assert not ping(url) and not pidfile.exists()
        assert local._pid_state(pid) in (None, "Z")
    finally:
        stop_pid(pid)  # only if the test failed before stopping it
