"""CURVE key files: where they live, reading them, and the keys a socket is given.

Key files use pyzmq's certificate format (``NAME.key`` holds the public key,
``NAME.key_secret`` both), so ``zmq.auth`` tools can read them. A secret key
file must be readable by its owner only: a service refuses to start with a
looser one (docs/architecture.md#security), because whoever reads it can act as
that node or administrator.

This module reads the files itself rather than through
``zmq.auth.load_certificate``: importing ``zmq.auth`` loads its authenticator and
``logging`` with it, about 6 ms that every CLI command paid to read two short
files. Making keys, and the authenticator, stay in :mod:`bus.security`.
"""

from __future__ import annotations

import stat
import struct
from pathlib import Path
from typing import NamedTuple

from zmq.utils import z85

from bus.errors import PtapError


class KeyFileError(PtapError):
    """A key file that is missing, unreadable, or readable by others."""


# A NamedTuple, not a dataclass: the CLI's start-up (see bus/ports.py).
class CurveKeys(NamedTuple):
    """CURVE keys of one endpoint (z85 bytes). A server leaves ``server_public`` empty
    and names its ZAP ``domain``, which the authenticator's policy decides on."""

    public: bytes
    secret: bytes
    server_public: bytes = b""
    domain: str = ""

    @property
    def is_server(self) -> bool:
        return not self.server_public


def secret_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.key_secret"


def public_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.key"


def read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` as ``zmq.auth.load_certificate`` reads them: the text
    between the quotes of the ``public-key`` and ``secret-key`` lines, ``secret``
    None when there is none. OSError if the file cannot be read, ValueError if it
    names no public key."""
    public = secret = None
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line.startswith(b"public-key"):
                public = line.split(b"=", 1)[1].strip(b" \t'\"")
            elif line.startswith(b"secret-key"):
                secret = line.split(b"=", 1)[1].strip(b" \t'\"")
            if public and secret:
                break
    if public is None:
        raise ValueError(f"No public key found in {path}")
    return public, secret


def key_problem(key: bytes | None) -> str:
    """Why ``key`` is not a z85 CURVE key (40 characters for 32 bytes), or "".

    Never quotes the key: it may be a secret one."""
    if key is None or len(key) != 40:
        return f"{0 if key is None else len(key)} characters; expected 40"
    try:
        z85.decode(key)  # 40 characters of Z85 are 32 bytes
    except (ValueError, KeyError, struct.error):  # a character outside Z85, or overflow
        return "not Z85 text"
    return ""


def _checked(key: bytes | None, field: str, path: Path) -> bytes:
    # The file format allows any text between the quotes; libzmq refuses a bad key
    # only when a socket is made, long after start-up said it was fine.
    problem = key_problem(key)
    if problem:
        raise KeyFileError(f"{field} in {path} is not a CURVE key ({problem}) — the file is "
                           "damaged: copy it again, or delete a damaged pair to have it made anew")
    assert key is not None
    return key


def load_keypair(directory: Path, name: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` z85 keys of ``NAME``; refuses a secret file others can read,
    and keys that are not CURVE keys."""
    path = secret_path(directory, name)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"secret key {path} does not exist — is {path.parent} the "
                           "manager's [security] keys_dir (it creates its keys there)?") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"secret key {path} has mode {stat.S_IMODE(mode):04o}; "
                           f"it must be readable by its owner only — chmod 600 {path}")
    public, secret = read_certificate(path)
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key")
    return _checked(public, "public-key", path), _checked(secret, "secret-key", path)


def load_public(path: Path) -> bytes:
    """The z85 public key in a ``.key`` (or ``.key_secret``) file; KeyFileError if there
    is none, or it is not a CURVE key."""
    try:
        public, _ = read_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc}") from None
    return _checked(public, "public-key", path)


def client_keys(directory: Path, name: str, server_public: bytes) -> CurveKeys:
    """Keys for a connecting socket (agent, CLI, dashboard)."""
    public, secret = load_keypair(directory, name)
    return CurveKeys(public=public, secret=secret, server_public=server_public)
