"""Test helpers: waiting on conditions, and starting real redis-servers and pitstop processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pitstop.connection.server import RedisServer
from pitstop.kernel.proc import pid_alive  # noqa: F401 - re-exported for tests
from pitstop.kernel.serverinfo import ServerInfo

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
FIXTURE_SCRIPTS = ROOT / "tests" / "fixtures" / "scripts"


class FakeClock:
    """An injectable clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


def task_outcome(client: Any, task_id: str) -> dict[str, Any] | None:
    """A Celery task's final result record, or None while it is pending or merely STARTED
    (``task_track_started`` writes that record first)."""
    raw = client.get(f"celery-task-meta-{task_id}")
    meta = json.loads(raw) if raw else None
    return meta if meta and meta.get("status") not in ("PENDING", "STARTED") else None


def write_script(home: Path, name: str, body: str) -> str:
    """An executable script under ``home/scripts`` (an allowed root); returns its path."""
    path = home / "scripts" / name
    path.write_text(textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@contextmanager
def redis_running(data_dir: Path, *, appendonly: bool = False
                  ) -> Iterator[tuple[RedisServer, ServerInfo]]:
    """A redis-server of its own on a free loopback port, keeping its files in ``data_dir``;
    stopped on leaving."""
    server = RedisServer(data_dir, appendonly=appendonly)
    info = server.start()
    try:
        yield server, info
    finally:
        server.stop()


def pitstop_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pitstop", *args]


def run_cli(args: list[str], env: Mapping[str, str], *, timeout: float = 60,
            cwd: Path | None = None, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pitstop_cmd(*args), env=dict(env), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, input=input_text, check=False)


def worker_args(name: str, queues: str = "default", concurrency: int = 1) -> list[str]:
    """``pitstop worker`` consuming ``queues`` with ``concurrency`` pool processes, as
    ``name@<host>``."""
    return ["worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h"]


class Proc:
    """A background pitstop process whose output goes to a log file we can poll."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path,
                 cwd: Path | None = None) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(pitstop_cmd(*args), env=dict(env), stdout=self._handle,
                                      stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20) -> None:
        wait_for(lambda: text in self.output() or self.popen.poll() is not None, timeout,
                 message=f"{text!r} in {self.log.name}")
        if text not in self.output():
            raise AssertionError(f"process exited ({self.popen.returncode}) before printing "
                                 f"{text!r}:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._handle.close()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and pool children)."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


@contextmanager
def running(args: list[str], env: Mapping[str, str], log: Path, ready: str | None = None,
            timeout: float = 30) -> Iterator[Proc]:
    proc = Proc(args, env, log)
    try:
        if ready:
            proc.wait_for_output(ready, timeout)
        yield proc
    finally:
        proc.stop()


@contextmanager
def gate(path: Path) -> Iterator[Callable[[], None]]:
    """A unix socket that ``tests/fixtures/scripts/wait_for_gate.py`` blocks on; calling the
    yielded function lets the script go on."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.settimeout(30)
    server.bind(str(path))
    server.listen(1)

    def open_gate() -> None:
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"g")

    try:
        yield open_gate
    finally:
        server.close()
