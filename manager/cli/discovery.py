"""Where the CLI finds the manager and its admin key when it is not told: the local cluster.

Salt's CLI finds its master's keys in its own configuration folder. ``ptap`` does
the same for the cluster that ``scripts/start-all`` runs from the checkout it
was installed from, so ``ptap nodes`` works with nothing exported. Each is
taken from the first place that has it:

manager address
    ``--manager HOST:PORT``; ``PTAP_MANAGER``; the ROUTER port in the local
    cluster's ``run/manager.ready`` (written by its manager while it runs), on
    127.0.0.1; ``127.0.0.1:14321``.
admin keys (a CURVE manager's ``keys_dir``)
    ``--keys DIR``; ``PTAP_KEYS`` (set but empty: none); the local cluster's
    ``keys/``, when talking to that cluster's manager; ``$XDG_CONFIG_HOME/ptap/keys``
    (``~/.config/ptap/keys``); none, which suits a manager without CURVE.

The local cluster lives in ``PTAP_VAR`` when that is set, as for
``scripts/start-all``, else in ``var/`` of the checkout. What is found there
belongs to that cluster and is used only with its manager: when the address
came from it (or is its port on loopback), not for a ``--manager`` elsewhere.
A keys folder counts as found when it holds ``server.key``. One that cannot
be read (another user's cluster: ``var/`` is 0700) is passed over; if nothing
else is found the command stops with one line. The key files themselves are
checked as ever: a secret key that others can read is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from manager.cli.address import DEFAULT_MANAGER, EXIT_USAGE, CliError, Endpoint, parse_manager

#: The manager port start-all uses unless told otherwise (PTAP_MANAGER_PORT).
LOCAL_PORT = 14321
LOCAL_HOST = "127.0.0.1"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: The dashboard port start-all uses unless told otherwise (PTAP_DASHBOARD_PORT).
DASHBOARD_PORT = 5006


# NamedTuples, not dataclasses: every command's start-up (see bus/ports.py).
class LocalCluster(NamedTuple):
    """The cluster ``scripts/start-all`` keeps in ``var``."""

    var: Path

    @property
    def keys(self) -> Path:
        return self.var / "keys"

    @property
    def run(self) -> Path:
        return self.var / "run"

    def manager_port(self) -> int:
        """The ROUTER port its manager bound (its ready file), else start-all's default."""
        info = _read_json(self.run / "manager.ready")
        port = info.get("router") if info else None
        return port if type(port) is int and 1 <= port <= 65533 else LOCAL_PORT

    def dashboard_url(self, env: Mapping[str, str]) -> str | None:
        """Its dashboard's URL: a ready file's ``url``, else the port start-all was
        given (``PTAP_DASHBOARD_PORT``, 5006) when start-all started one; None if not."""
        info = _read_json(self.run / "dashboard.ready")
        if info and isinstance(info.get("url"), str):
            return str(info["url"])
        try:
            started = (self.run / "dashboard.pid").is_file()
        except OSError:
            started = False
        if not started:
            return None
        return f"http://{LOCAL_HOST}:{env.get('PTAP_DASHBOARD_PORT') or DASHBOARD_PORT}/"


class Target(NamedTuple):
    """The manager a command talks to, and with which keys.

    ``keys_from`` says where ``keys_dir`` came from, for messages ("" for none);
    ``local`` is the local cluster when the manager is its manager.
    """

    endpoint: Endpoint
    keys_dir: str | None = None
    keys_from: str = ""
    local: LocalCluster | None = None


def resolve(manager: str | None, keys: str | None, env: Mapping[str, str],
            root: Path | None, config_home: Path) -> Target:
    """The :class:`Target` for ``--manager`` and ``--keys`` (None when not given).

    ``root`` is the checkout ptap runs from (:func:`checkout_root`), ``config_home``
    the user's config folder (:func:`config_home`). Raises :class:`CliError`
    when the only keys found cannot be read.
    """
    cluster = local_cluster(env, root)
    explicit = manager or env.get("PTAP_MANAGER") or None
    if explicit:
        endpoint = parse_manager(explicit)
        mine = cluster is not None and endpoint.host in LOOPBACK \
            and endpoint.port == cluster.manager_port()
    elif cluster is not None:
        endpoint, mine = Endpoint(LOCAL_HOST, cluster.manager_port()), True
    else:
        endpoint, mine = parse_manager(DEFAULT_MANAGER), False
    local = cluster if mine else None
    if keys is not None:
        return Target(endpoint, keys or None, "--keys" if keys else "", local)
    if "PTAP_KEYS" in env:
        return Target(endpoint, env["PTAP_KEYS"] or None,
                      "PTAP_KEYS" if env["PTAP_KEYS"] else "", local)
    places = [(local.keys, "the local cluster's keys")] if local is not None else []
    places.append((config_home / "ptap" / "keys", "your config folder"))
    unreadable: list[tuple[Path, OSError]] = []
    for directory, label in places:
        try:
            if (directory / "server.key").is_file():
                return Target(endpoint, str(directory), label, local)
        except OSError as exc:  # PermissionError: someone else's cluster
            unreadable.append((directory, exc))
    if unreadable:
        directory, error = unreadable[0]
        raise CliError(f"cannot read the keys in {directory} ({error.strerror or error}): they "
                       "belong to whoever started that cluster — run ptap as that user, or "
                       "get an administrator key of your own and pass --keys DIR", EXIT_USAGE)
    return Target(endpoint, None, "", local)


def local_cluster(env: Mapping[str, str], root: Path | None) -> LocalCluster | None:
    """``PTAP_VAR`` (relative to the working folder, as start-all reads it), else the
    checkout's ``var/``; None when ptap does not run from a checkout."""
    if env.get("PTAP_VAR"):
        return LocalCluster(Path(os.path.abspath(env["PTAP_VAR"])))
    return LocalCluster(root / "var") if root is not None else None


def checkout_root() -> Path | None:
    """The checkout ptap was installed from, recognised by ``scripts/start-all``.

    An editable install (what ``scripts/bootstrap`` makes) runs the checkout's
    own files, two folders up from here; a plain ``pip install .`` names its
    source folder in pip's ``direct_url.json``.
    """
    editable = Path(__file__).resolve().parents[2]
    if (editable / "scripts" / "start-all").is_file():
        return editable  # the usual case, without importlib.metadata (~15 ms to import)
    import importlib.metadata  # noqa: PLC0415 - only for a plain install

    try:
        text = importlib.metadata.distribution("ptap").read_text("direct_url.json")
        url = json.loads(text or "{}").get("url", "")
    except (importlib.metadata.PackageNotFoundError, ValueError, AttributeError):
        url = ""
    if isinstance(url, str) and url.startswith("file://"):
        root = Path(url.removeprefix("file://"))
        try:
            if (root / "scripts" / "start-all").is_file():
                return root
        except OSError:
            pass
    return None


def config_home(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME``, else ``~/.config`` (the XDG base directory default)."""
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):  # the spec says to ignore a relative one
        return Path(xdg)
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".config"


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
