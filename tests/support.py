"""Test helpers: waiting on conditions, starting real redis-servers and pitstop processes, an
orchestrator played in-process, and GitHub webhook deliveries (signature, a push's head)."""

from __future__ import annotations

import hashlib
import hmac
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
import redis

from pitstop import components
from pitstop.bus.eventbus import EventBus
from pitstop.connection.server import RedisServer, free_port
from pitstop.kernel.proc import pid_alive  # noqa: F401 - re-exported for tests
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import Settings, load_settings
from pitstop.runs.output import RunOutput
from pitstop.scripts.runner import ScriptRunner
from pitstop.workstreams import Orchestrator, StepExecutor, WorkstreamCatalog, orchestrator_from

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


GITHUB_PUSH_HEAD: dict[str, Any] = {
    "ref": "refs/heads/main",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    "created": False,
    "deleted": False,
    "compare": "https://github.com/octo-org/pitstop/compare/6113728f27ae...0d1a26e67d8f",
}
"""What a GitHub push delivery says of the ref it moved (main, 6113728 to 0d1a26e); the tests add
the commits, repository and pusher they need."""


def github_signature(body: bytes, secret: str | bytes, algo: str = "sha256") -> str:
    """The ``X-Hub-Signature-256`` header value GitHub sends for ``body`` (``sha1``: the old
    ``X-Hub-Signature``)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return f"{algo}=" + hmac.new(key, body, getattr(hashlib, algo)).hexdigest()


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


class RestartableRedis:
    """A redis-server of the test's own that can be paused, killed and started again on its port
    and password (with ``appendonly``, on its data too)."""

    def __init__(self, data_dir: Path, *, appendonly: bool = True) -> None:
        self.data_dir, self.appendonly = data_dir, appendonly
        self.server = RedisServer(data_dir, appendonly=appendonly)
        self.info: ServerInfo = self.server.start()

    @property
    def url(self) -> str:
        return self.info.url

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.info.url, socket_connect_timeout=2)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the server: connections stay open, every read times out. SIGCONT after."""
        os.kill(self.info.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.info.pid, signal.SIGCONT)

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        """SIGKILL the server (if it still runs) and start it again."""
        self.server.kill()
        self.server = RedisServer(self.data_dir, port=self.info.port,
                                  password=self.info.password, appendonly=self.appendonly)
        self.info = self.server.start()

    def close(self) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.info.pid, signal.SIGCONT)  # a stopped server cannot act on SIGTERM
        self.server.stop()


@contextmanager
def restartable_redis(data_dir: Path, *, appendonly: bool = True) -> Iterator[RestartableRedis]:
    server = RestartableRedis(data_dir, appendonly=appendonly)
    try:
        yield server
    finally:
        server.close()


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


def answers(url: str) -> bool:
    """Whether a GET of ``url`` succeeds (a refused connection is a no, not an error)."""
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.TransportError:
        return False


@contextmanager
def serving(env: Mapping[str, str], log: Path) -> Iterator[tuple[Proc, str]]:
    """``pitstop serve`` on a free port, once its ``/healthz`` answers: the process and its base
    URL; stopped on leaving."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(["serve", "--port", str(port)], env, log) as proc:
        wait_for(lambda: answers(f"{base}/healthz"), 30, interval=0.1,
                 message="pitstop serve to answer")
        yield proc, base


@dataclass
class OrchestratorRig:
    """An orchestrator and a step executor on a real Redis whose task messages land in ``sent``
    instead of a broker: the test delivers them itself (:meth:`deliver`), so every interleaving
    (redelivery, a dead holder, a crash between commit and send) is played out exactly."""

    client: redis.Redis
    settings: Settings
    orchestrator: Orchestrator
    executor: StepExecutor
    bus: EventBus
    sent: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def build(cls, client: redis.Redis, environ: Mapping[str, str],
              workstreams: dict[str, Any], *, scripts: bool = False) -> Self:
        """``environ`` is the settings' environment; with ``scripts`` the executor runs ``run``
        steps' scripts in this process too."""
        settings = load_settings(environ=dict(environ))
        redactor = components.new_redactor(settings)
        bus = components.event_bus(client, settings)
        runs = components.run_store(client, settings, redactor)
        sent: list[dict[str, Any]] = []
        orchestrator = orchestrator_from(
            settings, client, bus, runs, lambda name, **options: sent.append(options),
            catalog=WorkstreamCatalog.from_mapping({"workstreams": workstreams}),
            redactor=redactor)
        host, pid = socket.gethostname(), os.getpid()

        def script_runner() -> ScriptRunner:
            return ScriptRunner(settings, runs, RunOutput(client), bus=bus, host=host, pid=pid,
                                new_redactor=lambda: components.new_redactor(settings),
                                state_log=lambda r: components.state_log("cli", settings, r),
                                sealer=settings.sealer)

        executor = StepExecutor(orchestrator, host=host, pid=pid,
                                new_redactor=lambda: components.new_redactor(settings),
                                script_runner=script_runner if scripts else None)
        return cls(client, settings, orchestrator, executor, bus, sent)

    def deliver(self, message: dict[str, Any]) -> str:
        """Play one sent message: the attempt's status, or ``skipped`` where its claim fails."""
        kwargs = message["kwargs"]
        claimed = self.executor.claim(kwargs["run_id"], kwargs["step_id"], kwargs["attempt"])
        if claimed is None:
            return "skipped"
        return self.executor.run(claimed, kwargs["attempt"]).status


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
