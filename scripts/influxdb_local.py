"""Run a private InfluxDB 1.x (``influxd``) for a local cluster or for tests.

As a module::

    with InfluxServer(Path("var/influxdb")) as server:   # free port
        create_database(server.url, "ptap")

As a command (used by ``scripts/start-all`` and ``scripts/stop-all``)::

    python scripts/influxdb_local.py start --dir var/influxdb --port 8086 --pidfile F
    python scripts/influxdb_local.py start ... --create-db ptap --auth var
    python scripts/influxdb_local.py stop --pidfile F

``start`` returns once ``/ping`` answers, prints the URL, and leaves influxd
running in its own session. With ``--auth DIR`` influxd runs with ``[http]
auth-enabled = true``, and :func:`setup_auth` makes sure it has two users,
with random passwords kept in DIR at mode 0600: ``admin`` (all privileges,
password in ``influxdb-admin.secret``) and ``ptap`` (READ and WRITE on each
``--create-db`` database, password in ``influxdb.secret``). A later start
reuses both, so the command can be run again and again.

Everything influxd writes — meta, data, WAL, its config and its log — stays
under the data directory, so two of them never share state. The config
turns off what a private server does not need: usage reporting, the
``_internal`` monitor database, pprof, UDP, graphite, collectd, opentsdb.

Only the standard library is used here so that ``start-all`` can run it
before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

INSTALL_HINT = "influxd not found on PATH — install it with: apt-get install -y influxdb"
_IN_USE = re.compile(r"listen tcp [^ ]*:(\d+): bind: address already in use")
_START_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1

ADMIN_USER = "admin"
CLIENT_USER = "ptap"
ADMIN_SECRET = "influxdb-admin.secret"
CLIENT_SECRET = "influxdb.secret"


class InfluxdNotFound(RuntimeError):
    """``influxd`` is not installed (the message says how to install it)."""


class InfluxStartError(RuntimeError):
    """influxd exited or did not answer ``/ping`` in time; the message names its log."""


def find_influxd() -> str:
    """Path of the ``influxd`` binary, or :class:`InfluxdNotFound`."""
    path = shutil.which("influxd")
    if path is None:
        raise InfluxdNotFound(INSTALL_HINT)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (influxd binds it itself).

    influxd cannot be handed a bound socket, so there is a window in which
    another process may take the port; :meth:`InfluxServer.start` retries.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(
    url: str,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One blocking HTTP request to ``url`` + ``path``; returns ``(status, body)``.

    Plain ``http.client`` on purpose: ``urllib`` would honour ``http_proxy``
    and send loopback requests to a proxy.
    """
    parts = urllib.parse.urlsplit(url)
    conn_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    target = parts.path.rstrip("/") + path
    if params:
        target += "?" + urllib.parse.urlencode(params)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def ping(url: str, timeout: float = 1.0) -> bool:
    """True when the InfluxDB at ``url`` answers ``GET /ping`` with 204."""
    try:
        status, _ = request(url, "GET", "/ping", timeout=timeout)
    except OSError:
        return False
    return status == 204


@dataclass(frozen=True)
class Credentials:
    """An InfluxDB 1.x user, its password, and the file that keeps the password."""

    username: str
    password: str
    path: Path

    def headers(self) -> dict[str, str]:
        """HTTP basic auth, which InfluxDB 1.x reads as well as ``u``/``p`` URL parameters
        (and not in a form body); a header stays out of URLs and logs."""
        pair = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}


def _ident(name: str) -> str:
    """An InfluxQL identifier (``"..."``)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    """An InfluxQL string literal (``'...'``)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql(
    url: str,
    statement: str,
    *,
    db: str | None = None,
    auth: Credentials | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, object]]:
    """POST one InfluxQL statement to ``/query``; returns ``(status, answer document)``.

    Credentials go in an ``Authorization`` header, so they appear in no URL and no log.
    """
    form = {"q": statement, **({"db": db} if db else {})}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body = request(
        url,
        "POST",
        "/query",
        body=urllib.parse.urlencode(form).encode(),
        headers={**headers, **(auth.headers() if auth else {})},
        timeout=timeout,
    )
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {"error": body[:200].decode(errors="replace")}
    return status, doc if isinstance(doc, dict) else {}


def _failure(status: int, doc: dict[str, object]) -> str | None:
    """Why an :func:`influxql` answer is not a success, or ``None``."""
    results = doc.get("results")
    errors = [r["error"] for r in results if "error" in r] if isinstance(results, list) else []
    if "error" in doc:
        errors.insert(0, doc["error"])
    if status == 200 and not errors:
        return None
    return f"HTTP {status}" + (f": {errors[0]}" if errors else "")


def create_database(
    url: str, db: str, *, auth: Credentials | None = None, timeout: float = 10.0
) -> None:
    """``CREATE DATABASE "db"`` on the InfluxDB at ``url`` (a no-op if it exists)."""
    status, doc = influxql(url, f"CREATE DATABASE {_ident(db)}", auth=auth, timeout=timeout)
    failure = _failure(status, doc)
    if failure:
        raise RuntimeError(f"cannot create database {db!r} at {url}: {failure}")


def read_or_create_secret(path: Path) -> str:
    """The password kept in ``path``; a new random one, written at mode 0600, if none is.

    A file that group or others may read is refused (the password may have leaked).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def _read_secret(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RuntimeError(
            f"{path} is readable by others (mode {mode:04o}): run chmod 600 {path}, "
            "and change the password if it may have leaked"
        )
    password = path.read_text().strip()
    if not password:
        raise RuntimeError(f"{path} is empty; restore the password or delete the file")
    return password


def setup_auth(
    url: str, secret_dir: Path, databases: list[str], *, timeout: float = 10.0
) -> tuple[Credentials, Credentials]:
    """Make sure the influxd at ``url`` (``auth-enabled``) has its two users; return them.

    ``admin`` has all privileges; ``ptap`` has READ and WRITE on each of
    ``databases``, which are created. Their passwords come from (or, the
    first time, go to) ``influxdb-admin.secret`` and ``influxdb.secret`` in
    ``secret_dir``, mode 0600. Idempotent: a later call finds the users and
    leaves them with the passwords in the files.
    """
    admin = Credentials(
        ADMIN_USER, read_or_create_secret(secret_dir / ADMIN_SECRET), secret_dir / ADMIN_SECRET
    )
    client = Credentials(
        CLIENT_USER, read_or_create_secret(secret_dir / CLIENT_SECRET), secret_dir / CLIENT_SECRET
    )

    def as_admin(statement: str, what: str) -> dict[str, object]:
        # ``what`` names the statement in errors: passwords stay out of messages.
        status, doc = influxql(url, statement, auth=admin, timeout=timeout)
        failure = _failure(status, doc)
        if failure:
            raise RuntimeError(f"InfluxDB at {url} refused {what} as {admin.username}: {failure}")
        return doc

    status, doc = influxql(url, "SHOW USERS", auth=admin, timeout=timeout)
    if status in (401, 403):  # 403: "create admin user first"; 401: unknown user, or wrong password
        # InfluxDB 1.x allows this one statement without credentials while it has no user.
        status, doc = influxql(
            url,
            f"CREATE USER {_ident(admin.username)} WITH PASSWORD {_literal(admin.password)} "
            "WITH ALL PRIVILEGES",
            timeout=timeout,
        )
        if _failure(status, doc):
            raise RuntimeError(
                f"InfluxDB at {url} has users already, and {admin.username!r} does not have "
                f"the password in {admin.path}: put the right one there, or stop influxd "
                "and delete its data directory to start afresh (the data is lost)"
            )
    elif _failure(status, doc):
        raise RuntimeError(f"InfluxDB at {url}: SHOW USERS failed: {_failure(status, doc)}")
    for db in databases:
        create_database(url, db, auth=admin, timeout=timeout)
    user, password = _ident(client.username), _literal(client.password)
    if client.username in _column(as_admin("SHOW USERS", "SHOW USERS"), "user"):
        # The file decides, even if someone changed the password in InfluxDB.
        as_admin(f"SET PASSWORD FOR {user} = {password}", f"SET PASSWORD FOR {user}")
    else:
        as_admin(f"CREATE USER {user} WITH PASSWORD {password}", f"CREATE USER {user}")
    for db in databases:
        grant = f"GRANT ALL ON {_ident(db)} TO {user}"  # ALL on a database: READ and WRITE
        as_admin(grant, grant)
    status, _ = influxql(url, "SHOW DATABASES", timeout=timeout)
    if status != 401:
        raise RuntimeError(
            f"InfluxDB at {url} answers without credentials (HTTP {status}): it runs "
            "without auth-enabled: stop it (scripts/stop-all, for start-all's) and start it "
            "again with --auth"
        )
    return admin, client


def _column(doc: dict[str, object], name: str) -> list[object]:
    """The values of column ``name`` in the first series of the first result."""
    results = doc.get("results")
    first = results[0] if isinstance(results, list) and results else {}
    series = first.get("series") or [{}]
    columns = series[0].get("columns", [])
    if name not in columns:
        return []
    i = columns.index(name)
    return [row[i] for row in series[0].get("values", [])]


def _toml(text: str | Path) -> str:
    """A TOML basic string (JSON escapes are valid TOML)."""
    return json.dumps(str(text))


def _die_with_parent() -> None:
    """Child side of fork: ask Linux to SIGTERM us when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class InfluxServer:
    """One private ``influxd`` with its data, config and log under ``data_dir``.

    ``http_port=None`` picks a free port at the first start; every later
    start (after :meth:`stop`) reuses the same port and data, so a test can
    take InfluxDB down and bring it back. ``max_body_size`` sets ``[http]
    max-body-size`` (bytes), above which influxd answers 413.
    ``die_with_parent`` makes influxd exit if this process dies without
    stopping it (tests); the command line leaves it off so influxd outlives it.
    ``auth_enabled`` sets ``[http] auth-enabled``: every request but ``/ping``
    then needs a user (see :func:`setup_auth`).
    """

    def __init__(
        self,
        data_dir: Path,
        http_port: int | None = None,
        *,
        max_body_size: int | None = None,
        die_with_parent: bool = False,
        auth_enabled: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.http_port = http_port
        self.rpc_port: int | None = None
        self.max_body_size = max_body_size
        self.die_with_parent = die_with_parent
        self.auth_enabled = auth_enabled
        self.config_path = self.data_dir / "influxdb.conf"
        self.log_path = self.data_dir / "influxd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the port is known after the first start)."""
        if self.http_port is None:
            raise RuntimeError("InfluxServer has no port yet: call start() first")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """influxd's pid while it runs, else ``None``."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """True while the influxd this object started has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def write_config(self, http_port: int, rpc_port: int) -> Path:
        """Write ``influxdb.conf`` for these ports; all paths under ``data_dir``."""
        d = self.data_dir
        body = (
            "" if self.max_body_size is None else f"  max-body-size = {int(self.max_body_size)}\n"
        )
        self.config_path.write_text(
            "# written by scripts/influxdb_local.py; rewritten at every start\n"
            "reporting-disabled = true\n"  # upstream's key
            "reporting-enabled = false\n"  # Debian's build renames it
            f'bind-address = "127.0.0.1:{rpc_port}"\n'
            f"[meta]\n  dir = {_toml(d / 'meta')}\n  logging-enabled = false\n"
            f"[data]\n  dir = {_toml(d / 'data')}\n  wal-dir = {_toml(d / 'wal')}\n"
            "  query-log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{http_port}"\n'
            "  log-enabled = true\n  suppress-write-log = true\n  pprof-enabled = false\n"
            f"  auth-enabled = {'true' if self.auth_enabled else 'false'}\n"
            f"{body}"
            "[logging]\n  suppress-logo = true\n"
            "[continuous_queries]\n  log-enabled = false\n"
        )
        return self.config_path

    def start(self, timeout: float = 30.0) -> str:
        """Start influxd and return its URL once ``/ping`` answers 204.

        Retries with fresh ports when a port it picked was taken in the
        meantime; a port the caller fixed that is in use is an error.
        """
        if self.running:
            return self.url
        influxd = find_influxd()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        for _ in range(_START_ATTEMPTS):
            http_port = self.http_port or free_port()
            rpc_port = free_port()
            while rpc_port == http_port:
                rpc_port = free_port()
            busy = self._try_start(influxd, http_port, rpc_port, deadline)
            if busy is None:
                self.http_port, self.rpc_port = http_port, rpc_port
                log.info("influxd pid %s serving %s (%s)", self.pid, self.url, self.data_dir)
                return self.url
            if busy == self.http_port:
                raise InfluxStartError(
                    f"port {busy} is already in use; choose another port (see {self.log_path})"
                )
        raise InfluxStartError(f"influxd could not find free ports in {_START_ATTEMPTS} tries")

    def _try_start(
        self, influxd: str, http_port: int, rpc_port: int, deadline: float
    ) -> int | None:
        """Spawn once; ``None`` when ready, or the port that was in use."""
        self.write_config(http_port, rpc_port)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [influxd, "run", "-config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # terminal signals must not kill it under our feet
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        url = f"http://127.0.0.1:{http_port}"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return self._exited(proc, offset)
            if ping(url, timeout=0.5):
                self._proc = proc
                return None
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)  # wakes at once if influxd dies
        self._terminate(proc, 5.0)
        raise InfluxStartError(f"influxd did not answer {url}/ping in time (see {self.log_path})")

    def _exited(self, proc: subprocess.Popen[bytes], offset: int) -> int:
        """influxd exited while starting: the busy port, or InfluxStartError."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        match = _IN_USE.search(text)
        if match:
            return int(match.group(1))
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise InfluxStartError(
            f"influxd exited with code {proc.returncode}: {last[-300:]} (see {self.log_path})"
        )

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("influxd pid %s ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop influxd (SIGTERM, then SIGKILL after ``timeout``); keeps data and port."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc, timeout)
            log.info("influxd pid %s stopped", proc.pid)

    def detach(self) -> int:
        """Stop tracking influxd without stopping it (it outlives us); return its pid."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise RuntimeError("influxd is not running")
        pid = proc.pid
        with warnings.catch_warnings():
            # Popen warns when dropped while its child runs; here that is the point.
            warnings.simplefilter("ignore", ResourceWarning)
            del proc
        return pid

    def __enter__(self) -> InfluxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pid_state(pid: int) -> str | None:
    """The process state letter from /proc (``Z`` for a zombie), ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _is_influxd(pid: int) -> bool:
    """True when ``pid`` is a live influxd (a pidfile may outlive its process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and Path(cmdline[0].decode(errors="replace")).name == "influxd"


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    return _pid_state(pid) not in (None, "Z")


def _wait_gone(pid: int, timeout: float) -> bool:
    # Only a parent can wait() for a process, so poll /proc with a deadline.
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM influxd ``pid`` (not our child), SIGKILL after ``timeout``.

    Returns False when no influxd had that pid. A zombie counts as gone, as
    its parent may be an init that never reaps it.
    """
    if not _is_influxd(pid) or not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        log.warning("influxd pid %s ignored SIGTERM for %.0f s; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    return True


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _prepare(url: str, args: argparse.Namespace) -> None:
    """Create the ``--create-db`` databases, and with ``--auth`` the users too."""
    if args.auth:
        setup_auth(url, Path(args.auth), args.create_db)
        return
    for db in args.create_db:
        create_database(url, db)


def _cmd_start(args: argparse.Namespace) -> int:
    data_dir = Path(args.dir)
    pidfile = Path(args.pidfile) if args.pidfile else data_dir / "influxd.pid"
    old = _read_pid(pidfile)
    if old is not None and _is_influxd(old) and _alive(old):
        url = f"http://127.0.0.1:{args.port}"
        if not (args.port and ping(url)):
            raise RuntimeError(
                f"influxd pid {old} from {pidfile} is running but not on port {args.port}; "
                f"run: stop --pidfile {pidfile}"
            )
        _prepare(url, args)
        print(url)
        return 0
    server = InfluxServer(
        data_dir, args.port or None, max_body_size=args.max_body_size, auth_enabled=bool(args.auth)
    )
    server.start(timeout=args.timeout)
    try:
        _prepare(server.url, args)
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{server.pid}\n")
    except BaseException:
        server.stop()  # never leave an influxd running that no pidfile names
        raise
    server.detach()
    print(server.url)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    pid = _read_pid(pidfile)
    if pid is None:
        print(f"influxdb_local: no pid in {pidfile}; nothing to stop", file=sys.stderr)
        return 0
    if not stop_pid(pid, timeout=args.timeout):
        print(f"influxdb_local: influxd pid {pid} was not running", file=sys.stderr)
    pidfile.unlink(missing_ok=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run a private influxd (InfluxDB 1.x).")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start influxd in the background; print its URL")
    start.add_argument("--dir", default="var/influxdb", help="data, config and log directory")
    start.add_argument("--port", type=int, default=8086, help="HTTP port (0: a free one)")
    start.add_argument("--pidfile", help="default: DIR/influxd.pid")
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for /ping")
    start.add_argument("--max-body-size", type=int, help="[http] max-body-size in bytes")
    start.add_argument(
        "--create-db",
        action="append",
        default=[],
        metavar="NAME",
        help="create this database once it runs (repeatable)",
    )
    start.add_argument(
        "--auth",
        metavar="DIR",
        help=f"auth-enabled, with users {ADMIN_USER!r} and {CLIENT_USER!r} (READ and WRITE on "
        f"each --create-db); their passwords in DIR/{ADMIN_SECRET} and DIR/{CLIENT_SECRET}",
    )
    start.set_defaults(func=_cmd_start)
    stop = sub.add_parser("stop", help="stop the influxd named by a pidfile")
    stop.add_argument("--pidfile", required=True)
    stop.add_argument("--timeout", type=float, default=15.0, help="seconds before SIGKILL")
    stop.set_defaults(func=_cmd_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; every failure is one line on stderr and exit 1."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (RuntimeError, OSError) as exc:  # InfluxdNotFound, InfluxStartError too
        print(f"influxdb_local: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
