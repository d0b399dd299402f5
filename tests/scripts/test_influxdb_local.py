"""scripts/influxdb_local.py: a private influxd, as a class and as a command."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scripts.influxdb_local as local
from config.schema import InfluxDB
from dashboard.influx import HistoryUnavailable, InfluxReader
from manager.sinks import InfluxV1Sink, SinkMisconfigured
from scripts.influxdb_local import (
    Credentials,
    InfluxdNotFound,
    InfluxServer,
    InfluxStartError,
    create_database,
    influxql,
    ping,
    read_or_create_secret,
    request,
    setup_auth,
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


# -- authentication (--auth, setup_auth) ---------------------------------------


@pytest.fixture(scope="module")
def auth_influxd(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[InfluxServer, Credentials, Credentials]]:
    """One auth-enabled influxd with database ``ptap`` and its two users."""
    tmp = tmp_path_factory.mktemp("auth")
    server = InfluxServer(tmp / "influx", auth_enabled=True, die_with_parent=True)
    server.start()
    try:
        admin, client = setup_auth(server.url, tmp, ["ptap"])
        yield server, admin, client
    finally:
        server.stop()


def write(url: str, lines: bytes, auth: Credentials | None = None) -> int:
    headers = auth.headers() if auth else {}
    status, _ = request(url, "POST", "/write", params={"db": "ptap"}, body=lines,
                        headers=headers)
    return status


def test_auth_refuses_a_write_without_credentials(
    auth_influxd: tuple[InfluxServer, Credentials, Credentials],
) -> None:
    server, admin, client = auth_influxd
    assert server.config_path.read_text().count("auth-enabled = true") == 1
    assert write(server.url, b"m v=1i 1") == 401
    wrong = Credentials(client.username, client.password + "x", client.path)
    assert write(server.url, b"m v=1i 1", wrong) == 401
    assert write(server.url, b"m v=1i 1", client) == 204
    status, doc = influxql(server.url, "SELECT count(v) FROM m", db="ptap", auth=client)
    assert status == 200 and doc["results"][0]["series"][0]["values"][0][1] == 1  # type: ignore[index]
    # ptap reads and writes its database, and nothing more.
    status, doc = influxql(server.url, 'CREATE DATABASE "other"', auth=client)
    assert status == 403 and "requires admin privilege" in str(doc)
    status, _ = influxql(server.url, "SHOW USERS", auth=admin)
    assert status == 200


def test_auth_secrets_are_owner_only_and_reused(
    auth_influxd: tuple[InfluxServer, Credentials, Credentials],
) -> None:
    server, admin, client = auth_influxd
    assert {admin.path.name, client.path.name} == {"influxdb-admin.secret", "influxdb.secret"}
    for cred in (admin, client):
        assert stat.S_IMODE(cred.path.stat().st_mode) == 0o600
        assert cred.path.read_text() == cred.password + "\n" and len(cred.password) >= 32
    assert admin.password != client.password
    assert setup_auth(server.url, client.path.parent, ["ptap"]) == (admin, client)  # idempotent
    assert write(server.url, b"m v=2i 2", client) == 204


def test_a_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "influxdb.secret"
    assert read_or_create_secret(secret) == read_or_create_secret(secret)
    secret.chmod(0o640)
    with pytest.raises(RuntimeError, match=f"chmod 600 {secret}"):
        read_or_create_secret(secret)


def test_lost_admin_password_is_one_clear_error(
    auth_influxd: tuple[InfluxServer, Credentials, Credentials], tmp_path: Path,
) -> None:
    server, _, _ = auth_influxd
    with pytest.raises(RuntimeError, match="does not have the password in"):
        setup_auth(server.url, tmp_path, ["ptap"])  # new passwords, users already there


def test_command_line_auth_survives_a_restart(tmp_path: Path) -> None:
    pidfile, data, secrets_dir = tmp_path / "influxd.pid", tmp_path / "data", tmp_path / "var"
    args = ("start", "--dir", str(data), "--port", "0", "--pidfile", str(pidfile),
            "--create-db", "ptap", "--auth", str(secrets_dir))
    started = cli(*args)
    assert started.returncode == 0, started.stderr
    url, pid = started.stdout.strip(), int(pidfile.read_text())
    try:
        password = (secrets_dir / "influxdb.secret").read_text()
        client = Credentials("ptap", password.strip(), secrets_dir / "influxdb.secret")
        assert write(url, b"m v=1i 1") == 401 and write(url, b"m v=1i 1", client) == 204
        again = cli(*args[:4], url.rsplit(":", 1)[1], *args[5:])  # running: users checked
        assert again.returncode == 0 and again.stdout.strip() == url, again.stderr
        assert cli("stop", "--pidfile", str(pidfile)).returncode == 0
        restarted = cli(*args[:4], url.rsplit(":", 1)[1], *args[5:])
        assert restarted.returncode == 0, restarted.stderr
        pid = int(pidfile.read_text())
        assert (secrets_dir / "influxdb.secret").read_text() == password
        assert write(url, b"m v=2i 2") == 401 and write(url, b"m v=2i 2", client) == 204
        status, doc = influxql(url, "SELECT count(v) FROM m", db="ptap", auth=client)
        assert doc["results"][0]["series"][0]["values"][0][1] == 2  # type: ignore[index]
    finally:
        cli("stop", "--pidfile", str(pidfile))
        stop_pid(pid)  # only if the test failed before stopping it


# The manager's sink and the dashboard's reader with the ptap user: InfluxDB 1.x reads
# credentials from the URL or an Authorization header, never from a form body.


def test_manager_sink_with_the_ptap_user(
    auth_influxd: tuple[InfluxServer, Credentials, Credentials],
) -> None:
    server, _, client = auth_influxd

    async def go() -> dict[str, Any]:
        sink = InfluxV1Sink(server.url, "ptap", username=client.username,
                            password=client.password)
        try:
            await sink.prepare()  # CREATE DATABASE is refused (403), the database is there
            await sink.write(b"sinkm v=1i 1", 1)
            return await sink.query("SELECT count(v) FROM sinkm")
        finally:
            await sink.close()

    doc = asyncio.run(go())
    assert doc["results"][0]["series"][0]["values"][0][1] == 1


@pytest.mark.parametrize(("db", "password", "status"), [("ptap", "wrong", 401),
                                                        ("elsewhere", None, 403)])
def test_manager_sink_refused(auth_influxd: tuple[InfluxServer, Credentials, Credentials],
                              db: str, password: str | None, status: int) -> None:
    server, _, client = auth_influxd

    async def go() -> None:
        sink = InfluxV1Sink(server.url, db, username=client.username,
                            password=password or client.password)
        try:
            await sink.prepare()
        finally:
            await sink.close()

    with pytest.raises(SinkMisconfigured) as info:
        asyncio.run(go())
    assert info.value.status == status


def test_dashboard_reader_with_the_ptap_user(
    auth_influxd: tuple[InfluxServer, Credentials, Credentials],
) -> None:
    server, _, client = auth_influxd
    assert write(server.url, b"readm v=7i 1", client) == 204

    async def go(password: str) -> list[list[dict[str, Any]]]:
        reader = InfluxReader(InfluxDB(url=server.url, database="ptap",
                                       username=client.username, password=password))
        try:
            return await reader.query(["SELECT v FROM readm"])
        finally:
            reader.close()

    assert asyncio.run(go(client.password))[0][0]["values"] == [[1, 7]]
    with pytest.raises(HistoryUnavailable, match="HTTP 401"):
        asyncio.run(go("wrong"))
