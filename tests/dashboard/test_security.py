"""The dashboard's CURVE keys: real key files, a real CURVE PUB with a real ZAP
authenticator, and the real ``python -m dashboard.main`` for start-up errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from bus import codec, topics
from bus.daemon import StartupError
from bus.messages import Event
from bus.security import Gatekeeper, ensure_keypair, load_keypair, secret_path
from bus.sockets import CurveKeys, make_socket
from config.schema import DashboardSecurity
from dashboard.feed import Feed
from dashboard.security import dashboard_keys
from tests.integration.conftest import ROOT, child_env

DOMAIN = "ptap.pub"


def manager_keys_dir(path: Path) -> Path:
    """A keys_dir laid out as the manager makes it: server and admin key pairs."""
    ensure_keypair(path, "server")
    ensure_keypair(path, "admin")
    return path


def curve(keys_dir: Path | str) -> DashboardSecurity:
    return DashboardSecurity(curve=True, keys_dir=str(keys_dir))


def startup_error(sec: DashboardSecurity) -> str:
    with pytest.raises(StartupError) as info:
        dashboard_keys(sec)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_without_curve_there_are_no_keys(tmp_path: Path) -> None:
    assert dashboard_keys(DashboardSecurity()) is None
    assert dashboard_keys(DashboardSecurity(curve=False, keys_dir=str(tmp_path))) is None


def test_the_admin_key_and_the_managers_public_key(tmp_path: Path) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")
    keys = dashboard_keys(curve(keys_dir))
    assert keys is not None
    admin_public, admin_secret = load_keypair(keys_dir, "admin")
    server_public, _ = load_keypair(keys_dir, "server")
    assert keys == CurveKeys(admin_public, admin_secret, server_public=server_public)


def test_a_copy_without_the_servers_secret_is_enough(tmp_path: Path) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")
    copy = tmp_path / "copy"
    copy.mkdir(mode=0o700)
    for name in ("server.key", "admin.key", "admin.key_secret"):
        shutil.copy2(keys_dir / name, copy / name)
    assert dashboard_keys(curve(copy)) == dashboard_keys(curve(keys_dir))


def test_key_problems_are_one_line_saying_what_to_do(tmp_path: Path) -> None:
    assert startup_error(curve("")).startswith(
        "[security] curve = yes but keys_dir is empty — set [security] keys_dir to the "
        "manager's [security] keys_dir")

    empty = tmp_path / "empty"
    empty.mkdir()
    text = startup_error(curve(empty))
    assert f"no manager public key {empty / 'server.key'} — set [security] keys_dir" in text

    only_server = tmp_path / "only-server"
    only_server.mkdir()
    shutil.copy(manager_keys_dir(tmp_path / "keys") / "server.key", only_server)
    text = startup_error(curve(only_server))
    assert f"secret key {only_server / 'admin.key_secret'} does not exist" in text

    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "server.key").write_text("not a certificate\n")
    assert "cannot read public key" in startup_error(curve(garbled))


def test_a_secret_key_others_can_read_is_refused(tmp_path: Path) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")
    os.chmod(secret_path(keys_dir, "admin"), 0o640)
    text = startup_error(curve(keys_dir))
    assert text == (f"[security] keys_dir = {keys_dir}: secret key "
                    f"{secret_path(keys_dir, 'admin')} has mode 0640; it must be readable "
                    f"by its owner only — chmod 600 {secret_path(keys_dir, 'admin')}")


def test_an_unreadable_secret_key_is_one_line(tmp_path: Path) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")
    secret = secret_path(keys_dir, "admin")
    secret.unlink()
    secret.mkdir(mode=0o700)  # unreadable as a file even for root, who ignores modes
    text = startup_error(curve(keys_dir))
    assert text.startswith(f"[security] keys_dir = {keys_dir}: cannot read the admin key "
                           f"pair: {secret}: Is a directory — set [security] keys_dir")


def garble(path: Path, field: str, value: str) -> None:
    """Replace ``field = "..."`` in a pyzmq certificate file, keeping its mode."""
    lines = [f'    {field} = "{value}"' if line.strip().startswith(field) else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("name", "field", "value", "reason"), [
    ("server.key", "public-key", "abc", "3 characters"),
    ("server.key", "public-key", "", "0 characters"),
    ("admin.key_secret", "public-key", "x" * 39 + "~", "not Z85"),  # '~' is outside Z85
    ("admin.key_secret", "secret-key", "#" * 40, "not Z85"),  # decodes past 2**32
    ("admin.key_secret", "secret-key", "0" * 32, "32 characters"),
])
def test_a_malformed_key_is_one_line(tmp_path: Path, name: str, field: str, value: str,
                                     reason: str) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")
    garble(keys_dir / name, field, value)
    text = startup_error(curve(keys_dir))
    assert text.startswith(f"[security] keys_dir = {keys_dir}: {field} in {keys_dir / name} "
                           "is not a CURVE key (")
    assert reason in text and text.endswith("copy it again, or delete a damaged pair to "
                                            "have it made anew")
    if field == "secret-key":
        assert value not in text  # a secret, even a broken one, stays out of logs


@pytest.mark.parametrize("case", ["no-server-key", "loose-secret", "garbled-server-key"])
def test_the_dashboard_process_stops_with_one_line(tmp_path: Path, case: str) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")
    if case == "no-server-key":
        (keys_dir / "server.key").unlink()
        expected = f"no manager public key {keys_dir / 'server.key'}"
    elif case == "garbled-server-key":  # libzmq would refuse it only when the feed starts
        garble(keys_dir / "server.key", "public-key", "abc")
        expected = f"public-key in {keys_dir / 'server.key'} is not a CURVE key"
    else:
        os.chmod(secret_path(keys_dir, "admin"), 0o644)
        expected = f"chmod 600 {secret_path(keys_dir, 'admin')}"
    config = tmp_path / "frontendagentclient.cfg"
    config.write_text(f"[security]\ncurve = yes\nkeys_dir = {keys_dir}\n")
    done = subprocess.run(
        [sys.executable, "-m", "dashboard.main", "--config", str(config)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("ptap-dashboard: [security] keys_dir = ")
    assert expected in done.stderr


# --- the feed as a CURVE client of a real CURVE PUB --------------------------------------


@asynccontextmanager
async def curve_pub(keys_dir: Path) -> AsyncIterator[tuple[zmq.asyncio.Context, zmq.asyncio.Socket, str]]:
    """A PUB serving CURVE with the manager's server key; ZAP lets only the admin key in."""
    ctx = zmq.asyncio.Context()
    server_public, server_secret = load_keypair(keys_dir, "server")
    admin_public, _ = load_keypair(keys_dir, "admin")
    gate = Gatekeeper(ctx, lambda domain, key: domain == DOMAIN and key == admin_public,
                      (DOMAIN,))
    gate.start()
    pub = make_socket(ctx, zmq.PUB, curve=CurveKeys(server_public, server_secret, domain=DOMAIN))
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield ctx, pub, f"tcp://127.0.0.1:{port}"
    finally:
        pub.close(linger=0)
        gate.stop()
        ctx.destroy(linger=0)


async def until(predicate: Callable[[], object], step: Callable[[], Awaitable[object]] | None = None,
                timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            if step is not None:
                await step()
            await asyncio.sleep(0.02)  # pacing while the subscription joins  # wait-ok: poll step under a deadline


def event_frames(job: str) -> list[bytes]:
    return [topics.job_events(job), *codec.encode(Event(kind="job", ts=1.0, job_id=job,
                                                        state="running"))]


def test_feed_with_the_admin_key_gets_events_over_curve(tmp_path: Path) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")

    async def scenario() -> None:
        async with curve_pub(keys_dir) as (ctx, pub, address):
            feed = Feed(address, ctx, curve=dashboard_keys(curve(keys_dir)))
            events: list[Event] = []
            feed.watch_events(events.append)
            feed.start()
            try:
                await until(lambda: events, lambda: pub.send_multipart(event_frames("j1")))
                assert events[0].job_id == "j1"
                assert feed.counters["handshakes"] >= 1 and feed.problem == ""
                assert feed.counters["handshake_failures"] == 0
            finally:
                await feed.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("keys", "problem"), [
    ("none", "uses CURVE and the dashboard does not — set [security] curve = yes and keys_dir"),
    ("stranger", "refused the dashboard's key (ZAP status 400) — set [security] keys_dir to "
                 "the manager's [security] keys_dir"),
])
def test_feed_says_why_the_managers_pub_refuses_it(tmp_path: Path, keys: str, problem: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    keys_dir = manager_keys_dir(tmp_path / "keys")
    stranger = manager_keys_dir(tmp_path / "stranger")  # a valid admin pair, not this manager's
    shutil.copy(keys_dir / "server.key", stranger / "server.key")
    own = None if keys == "none" else dashboard_keys(curve(stranger))

    async def scenario() -> None:
        async with curve_pub(keys_dir) as (ctx, pub, address):
            feed = Feed(address, ctx, curve=own)
            events: list[Event] = []
            feed.watch_events(events.append)
            feed.start()
            try:
                await until(lambda: feed.problem)
                await pub.send_multipart(event_frames("j1"))
                assert feed.problem.startswith(f"the manager at {address} ")
                assert problem in feed.problem and not events
                assert feed.problem.endswith(", then restart the dashboard")
                assert feed.counters["handshakes"] == 0
            finally:
                await feed.close()

    with caplog.at_level("WARNING", logger="dashboard.feed"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "dashboard.feed"]
    assert len(lines) == 1 and problem in lines[0], lines


def test_feed_with_curve_against_a_plain_pub_says_so() -> None:
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        pub = ctx.socket(zmq.PUB)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        public, secret = zmq.curve_keypair()
        server_public, _ = zmq.curve_keypair()
        feed = Feed(f"tcp://127.0.0.1:{port}", ctx,
                    curve=CurveKeys(public, secret, server_public=server_public))
        feed.start()
        try:
            await until(lambda: feed.problem)
            assert "does not use CURVE — set [security] curve = no here" in feed.problem
        finally:
            await feed.close()
            pub.close(linger=0)
            ctx.destroy(linger=0)

    asyncio.run(scenario())


def test_feed_logs_a_handshake_outcome_only_when_it_changes(
        caplog: pytest.LogCaptureFixture) -> None:
    ctx = zmq.asyncio.Context()
    try:
        feed = Feed("tcp://127.0.0.1:1", ctx)  # never started: outcomes are fed in directly
        refused = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400)
        with caplog.at_level("INFO", logger="dashboard.feed"):
            for event, value in [refused, refused, (zmq.EVENT_HANDSHAKE_SUCCEEDED, 0), refused]:
                feed._on_handshake(event, value)
        lines = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert [level for level, _ in lines] == ["WARNING", "INFO", "WARNING"], lines
        assert feed.counters["handshake_failures"] == 3 and feed.counters["handshakes"] == 1
        assert "refused the dashboard's key (ZAP status 400)" in feed.problem
    finally:
        ctx.term()
