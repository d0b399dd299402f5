"""Where the CLI finds the local cluster's manager and admin key (manager/cli/discovery.py).

Each test builds the folders a user would have (a checkout with ``var/``, a
config folder) under tmp_path, with key pairs made as the manager makes them,
and calls :func:`discovery.resolve` with an explicit environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from manager.cli import discovery, main
from manager.cli.session import CliError, Session
from manager.keys import KeyStore

ROOT = Path(__file__).resolve().parents[3]


def checkout(tmp: Path, port: int | None = None) -> Path:
    """A checkout whose start-all made its keys (and, with ``port``, whose manager runs)."""
    root = tmp / "checkout"
    KeyStore(root / "var" / "keys")  # server and admin pairs, as the manager makes them
    if port is not None:
        (root / "var" / "run").mkdir(parents=True)
        (root / "var" / "run" / "manager.ready").write_text(
            json.dumps({"router": port, "pub": port + 1, "pull": port + 2, "pid": 1}))
    return root


def resolve(tmp: Path, root: Path | None, env: dict[str, str] | None = None,
            manager: str | None = None, keys: str | None = None) -> discovery.Target:
    return discovery.resolve(manager, keys, env or {}, root, tmp / "config")


def test_no_flags_no_env_finds_the_checkouts_cluster(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    found = resolve(tmp_path, root)
    assert str(found.endpoint) == "127.0.0.1:14321"
    assert found.keys_dir == str(root / "var" / "keys")
    assert found.keys_from.startswith("the local cluster's keys")
    assert found.local == discovery.LocalCluster(root / "var")


def test_the_ready_file_gives_a_non_default_port(tmp_path: Path) -> None:
    root = checkout(tmp_path, port=6100)
    found = resolve(tmp_path, root)
    assert str(found.endpoint) == "127.0.0.1:6100" and found.keys_dir is not None
    # Naming that same manager keeps its keys (the old advice: export PTAP_MANAGER).
    again = resolve(tmp_path, root, {"PTAP_MANAGER": "localhost:6100"})
    assert again.keys_dir == found.keys_dir and again.local is not None


def test_ptap_var_moves_the_cluster(tmp_path: Path) -> None:
    elsewhere = checkout(tmp_path, port=6200) / "var"
    found = resolve(tmp_path, None, {"PTAP_VAR": str(elsewhere)})
    assert str(found.endpoint) == "127.0.0.1:6200"
    assert found.keys_dir == str(elsewhere / "keys")


def test_another_manager_does_not_get_the_local_clusters_keys(tmp_path: Path) -> None:
    root = checkout(tmp_path, port=6100)
    for manager in ("127.0.0.1:7000", "10.0.0.5:6100"):
        found = resolve(tmp_path, root, manager=manager)
        assert (found.keys_dir, found.local) == (None, None), manager


def test_explicit_keys_win_and_empty_means_none(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert resolve(tmp_path, root, keys="/k").keys_dir == "/k"
    assert resolve(tmp_path, root, {"PTAP_KEYS": "/e"}).keys_dir == "/e"
    assert resolve(tmp_path, root, {"PTAP_KEYS": "/e"}, keys="/k").keys_dir == "/k"
    assert resolve(tmp_path, root, {"PTAP_KEYS": ""}).keys_dir is None
    assert resolve(tmp_path, root, keys="").keys_dir is None


def test_the_user_config_folder_comes_next(tmp_path: Path) -> None:
    user_keys = tmp_path / "config" / "ptap" / "keys"
    KeyStore(user_keys)
    found = resolve(tmp_path, None, manager="10.0.0.5:14321")
    assert found.keys_dir == str(user_keys) and "your config folder" in found.keys_from
    root = checkout(tmp_path)
    assert resolve(tmp_path, root).keys_dir == str(root / "var" / "keys"), "the checkout first"
    xdg = discovery.config_home({"XDG_CONFIG_HOME": "/x", "HOME": "/h"})
    assert (xdg, discovery.config_home({"XDG_CONFIG_HOME": "rel", "HOME": "/h"})) == (
        Path("/x"), Path("/h/.config"))


def test_nothing_found_means_plain(tmp_path: Path) -> None:
    found = resolve(tmp_path, None)
    assert (str(found.endpoint), found.keys_dir, found.local) == ("127.0.0.1:14321", None, None)
    empty = tmp_path / "bare"
    (empty / "var").mkdir(parents=True)  # a checkout that never ran start-all
    assert resolve(tmp_path, empty).keys_dir is None


def test_a_key_others_can_read_is_still_refused(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    (root / "var" / "keys" / "admin.key_secret").chmod(0o644)
    found = resolve(tmp_path, root)
    with pytest.raises(CliError) as exc:
        Session(found, 1.0)
    assert "mode 0644" in str(exc.value) and "chmod 600" in str(exc.value)
    assert "the local cluster's keys" in str(exc.value)


def test_the_dashboard_of_the_local_cluster(tmp_path: Path) -> None:
    local = discovery.LocalCluster(tmp_path / "var")
    assert local.dashboard_url({}) is None
    (tmp_path / "var" / "run").mkdir(parents=True)
    (tmp_path / "var" / "run" / "dashboard.pid").write_text("1\n")
    assert local.dashboard_url({}) == "http://127.0.0.1:5006/"
    assert local.dashboard_url({"PTAP_DASHBOARD_PORT": "7007"}) == "http://127.0.0.1:7007/"
    (tmp_path / "var" / "run" / "dashboard.ready").write_text('{"url": "http://h:1/"}')
    assert local.dashboard_url({}) == "http://h:1/"


def test_the_checkout_is_the_one_ptap_runs_from() -> None:
    assert discovery.checkout_root() == ROOT


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run the CLI as another user")
@pytest.mark.usefixtures("checkout_reachable_by_others")
def test_another_user_is_refused_with_one_line(tmp_path: Path) -> None:
    """The cluster's var/ is 0700 (start-all's umask 077): another user finds keys it
    may not read, and is told so at once rather than after a timeout."""
    root = checkout(tmp_path)
    os.chmod(tmp_path, 0o755)
    os.chmod(root, 0o755)
    os.chmod(root / "var", 0o700)
    code = ("import sys; from manager.cli import main; "
            "sys.argv[0] = 'ptap'; sys.exit(main.main(['nodes']))")
    env = {"PATH": os.environ.get("PATH", ""), "PTAP_VAR": str(root / "var"),
           "HOME": str(tmp_path / "nobody"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", code], env=env, cwd="/",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"ptap: cannot read the keys in {root / 'var' / 'keys'} "
                                  "(Permission denied)"), done.stderr
    assert "run ptap as that user" in done.stderr


def test_main_uses_what_it_found(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A found keys folder that is not a manager's is one line naming where it was found."""
    var = tmp_path / "var"
    (var / "keys").mkdir(parents=True)
    (var / "keys" / "server.key").write_text("not a key\n")
    monkeypatch.setenv("PTAP_VAR", str(var))
    for name in ("PTAP_KEYS", "PTAP_MANAGER"):
        monkeypatch.delenv(name, raising=False)
    assert main.main(["nodes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ptap: keys in {var / 'keys'} (the local "
                                                   "cluster's keys")
