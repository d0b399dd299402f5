"""CURVE key files and the gatekeeper, with real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from bus.security import (
    Gatekeeper,
    KeyFileError,
    ensure_keypair,
    load_keypair,
    load_public,
    peer_key,
    public_path,
    secret_path,
)
from bus.sockets import CurveKeys, make_socket


def test_key_pairs_are_created_private_and_reloaded(tmp_path: Path) -> None:
    public, secret = ensure_keypair(tmp_path / "k", "node1")
    assert len(public) == 40 and len(secret) == 40
    assert secret_path(tmp_path / "k", "node1").stat().st_mode & 0o777 == 0o600
    assert ensure_keypair(tmp_path / "k", "node1") == (public, secret)


def test_a_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    ensure_keypair(tmp_path, "node1")
    os.chmod(secret_path(tmp_path, "node1"), 0o644)
    with pytest.raises(KeyFileError, match="mode 0644.*chmod 600"):
        load_keypair(tmp_path, "node1")
    with pytest.raises(KeyFileError, match="does not exist"):
        load_keypair(tmp_path, "nobody")


def garble(path: Path, field: str, value: str) -> None:
    """Replace ``field = "..."`` in a zmq certificate file with ``value``."""
    lines = [f'    {field} = "{value}"' if line.strip().startswith(f"{field} =") else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("field", "value", "why"), [
    ("public-key", "abc", "3 characters; expected 40"),
    ("public-key", "x" * 39 + "~", "not Z85 text"),
    ("secret-key", "#" * 40, "not Z85 text"),
    ("secret-key", "0" * 32, "32 characters; expected 40"),
])
def test_a_damaged_key_file_is_refused_when_read(tmp_path: Path, field: str, value: str,
                                                 why: str) -> None:
    """zmq.auth reads anything between the quotes; libzmq would refuse such a key only
    when a socket is made, with a traceback instead of this one line."""
    ensure_keypair(tmp_path, "node1")
    garble(secret_path(tmp_path, "node1"), field, value)
    with pytest.raises(KeyFileError) as caught:
        load_keypair(tmp_path, "node1")
    assert f"{field} in {secret_path(tmp_path, 'node1')} is not a CURVE key ({why})" in str(
        caught.value)
    assert value not in str(caught.value) or field == "public-key"
    if field == "public-key":
        garble(public_path(tmp_path, "node1"), field, value)
        with pytest.raises(KeyFileError, match="is not a CURVE key"):
            load_public(public_path(tmp_path, "node1"))


def test_gatekeeper_admits_only_what_the_policy_allows(tmp_path: Path) -> None:
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        server_pub, server_sec = ensure_keypair(tmp_path, "server")
        good_pub, good_sec = ensure_keypair(tmp_path, "good")
        bad_pub, bad_sec = ensure_keypair(tmp_path, "bad")
        gate = Gatekeeper(ctx, lambda domain, key: domain == "t.rep" and key == good_pub,
                          ("t.rep",))
        gate.start()
        rep = make_socket(ctx, zmq.ROUTER, curve=CurveKeys(server_pub, server_sec, domain="t.rep"))
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        endpoint = f"tcp://127.0.0.1:{port}"
        sockets = [rep]
        try:
            await gate.check(endpoint, server_pub, "t.rep")   # a random key is refused
            for pub, sec in ((bad_pub, bad_sec), (good_pub, good_sec)):
                dealer = make_socket(ctx, zmq.DEALER, curve=CurveKeys(pub, sec, server_pub))
                sockets.append(dealer)
                dealer.connect(endpoint)
                await dealer.send(pub)
            async with asyncio.timeout(5):
                frames = await rep.recv_multipart(copy=False)
            assert frames[1].bytes == good_pub            # the bad key never got through
            assert frames[1].get("User-Id") == good_pub.decode()
        finally:
            for sock in sockets:
                sock.close(linger=0)
            gate.stop()
            ctx.term()

    asyncio.run(scenario())


def test_self_check_fails_when_nothing_authenticates(tmp_path: Path) -> None:
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        server_pub, server_sec = ensure_keypair(tmp_path, "server")
        gate = Gatekeeper(ctx, lambda domain, key: False, ("d",))  # never started: no ZAP
        rep = make_socket(ctx, zmq.ROUTER, curve=CurveKeys(server_pub, server_sec, domain="d"))
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        try:
            with pytest.raises(KeyFileError, match="unknown key was let in"):
                await gate.check(f"tcp://127.0.0.1:{port}", server_pub, "d")
        finally:
            rep.close(linger=0)
            ctx.term()

    asyncio.run(scenario())


async def _events(monitor: zmq.asyncio.Socket, until: int) -> list[int]:
    """Monitor events up to and including ``until``."""
    seen: list[int] = []
    async with asyncio.timeout(5):
        while not seen or seen[-1] != until:
            seen.append(parse_monitor_message(await monitor.recv_multipart())["event"])
    return seen


def test_gatekeeper_task_is_watchable(tmp_path: Path) -> None:
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        gate = Gatekeeper(ctx, lambda domain, key: False, ("d",))
        assert gate.task is None
        gate.start()
        task = gate.task
        assert task is not None and not task.done()
        gate.stop()
        await asyncio.wait([task], timeout=5)
        assert task.done()
        ctx.term()

    asyncio.run(scenario())


def test_a_refused_connection_is_not_retried_but_a_new_socket_gets_in(tmp_path: Path) -> None:
    """Why the agent makes a new PUSH after its key is accepted: libzmq gives up a
    connection that ZAP refused (it retries other handshake failures)."""
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        server_pub, server_sec = ensure_keypair(tmp_path, "server")
        pub, sec = ensure_keypair(tmp_path, "agent")
        accepted = False
        gate = Gatekeeper(ctx, lambda domain, key: accepted, ("t.pull",))
        gate.start()
        pull = make_socket(ctx, zmq.PULL, curve=CurveKeys(server_pub, server_sec, domain="t.pull"))
        endpoint = f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}"
        first = make_socket(ctx, zmq.PUSH, curve=CurveKeys(pub, sec, server_pub))
        monitor = first.get_monitor_socket()
        sockets = [pull, first, monitor]
        try:
            await gate.check(endpoint, server_pub, "t.pull", zmq.PUSH)  # SUB/PUSH probes too
            first.connect(endpoint)
            await first.send(b"sent while refused")
            assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in await _events(monitor,
                                                                   zmq.EVENT_DISCONNECTED)
            accepted = True
            second = make_socket(ctx, zmq.PUSH, curve=CurveKeys(pub, sec, server_pub))
            sockets.append(second)
            second.connect(endpoint)
            await second.send(b"new socket")
            async with asyncio.timeout(5):
                frames = await pull.recv_multipart(copy=False)
            assert frames[0].bytes == b"new socket"
            assert peer_key(frames[0]) == pub
            # The first socket never tried again (reconnect_ivl is 0.1 s; allow 10 of them).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    event = parse_monitor_message(await monitor.recv_multipart())["event"]
                    raise AssertionError(f"refused socket acted again: event {event}")
        finally:
            with contextlib.suppress(zmq.ZMQError):
                first.disable_monitor()
            for sock in sockets:
                sock.close(linger=0)
            gate.stop()
            ctx.term()

    asyncio.run(scenario())


def test_peer_key_is_none_without_curve() -> None:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        b.connect(f"tcp://127.0.0.1:{a.bind_to_random_port('tcp://127.0.0.1')}")
        b.send(b"x")
        assert peer_key(a.recv(copy=False)) is None
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()
