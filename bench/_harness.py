"""What the benchmarks that run pitstop for real share: a private redis-server, a project written
into a temporary home, worker processes that are always stopped, throughput rounds against raw
Celery, the web view served in-process, and the figures they print.

Private to bench/ and to docs/img/make_screenshots.py (which seeds and serves the web view the
way bench/web.py does); the scripts import it after putting the checkout on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis
import uvicorn
import yaml

from pitstop.bus.eventbus import EventBus
from pitstop.connection.server import RedisServer, free_port
from pitstop.kernel.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
READY = "ready."
"""What a Celery worker logs once it consumes (at ``-l INFO``)."""
STOP_SECONDS = 30
"""How long a stopped worker may take over its warm shutdown before it is killed."""
RAW_DONE_KEY = "bench:raw-done"
"""Where bench/_raw_router.py's ``bench.noop`` counts itself done."""


# --- a private Redis and a project on it -----------------------------------------------------------

@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A private redis-server without an AOF, its data in ``directory``; yields its URL."""
    server = RedisServer(directory, appendonly=False)
    info = server.start()
    try:
        yield info.url
    finally:
        server.stop()


def emit_workstream(event_type: str, *, step: str = "only", data: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A workstream of one ``emit`` step that publishes ``event_type`` (with ``data``): the least
    work a workstream launch can cost."""
    emit: dict[str, Any] = {"type": event_type} if data is None else {"type": event_type, "data": data}
    spec: dict[str, Any] = {} if params is None else {"params": params}
    spec["steps"] = [{"id": step, "kind": "emit", "params": emit}]
    return spec


THROUGHPUT_EVENT = "bench.many"
THROUGHPUT_COMPLETED = "workstream.ws-thr.completed"
THROUGHPUT_WORKSTREAMS = {"WS-THR": emit_workstream("bench.step")}
THROUGHPUT_TRIGGERS = [{"id": "thr", "event": THROUGHPUT_EVENT, "workstream": "WS-THR"}]
"""The project :func:`throughput_rounds` drives: each ``bench.many`` launches one ``WS-THR``."""


def write_config(home: Path, workstreams: dict[str, Any], triggers: list[dict[str, Any]]) -> None:
    """``home/config/workstreams.yaml`` and ``triggers.yaml`` holding these definitions."""
    config = home / "config"
    config.mkdir()
    (config / "workstreams.yaml").write_text(yaml.safe_dump({"workstreams": workstreams},
                                                            sort_keys=False))
    (config / "triggers.yaml").write_text(yaml.safe_dump({"triggers": triggers}, sort_keys=False))


def worker_env(**values: str) -> dict[str, str]:
    """This process's environment without its ``PITSTOP_*`` settings, with the checkout on
    ``PYTHONPATH`` (``bench._raw_*`` importable) and ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update(PYTHONPATH=str(ROOT), **values)
    return env


def project_env(home: Path, redis_url: str) -> dict[str, str]:
    """The environment of pitstop processes of the project in ``home`` (see :func:`write_config`)
    on ``redis_url``, which the raw Celery baselines use too (``BENCH_REDIS_URL``)."""
    return worker_env(PITSTOP_HOME=str(home), PITSTOP_REDIS_URL=redis_url,
                      BENCH_REDIS_URL=redis_url, PITSTOP_STATE_DIR=str(home / ".state"),
                      PITSTOP_CONFIG_DIR=str(home / "config"))


# --- worker processes --------------------------------------------------------------------------------

def pitstop_worker(*args: str) -> list[str]:
    """The command line of ``pitstop worker`` with ``args``, in this interpreter."""
    return [sys.executable, "-m", "pitstop", "worker", *args]


def celery_worker(app: str, *args: str) -> list[str]:
    """The command line of a bare ``celery worker`` of ``app`` with ``args`` (a baseline)."""
    return [sys.executable, "-m", "celery", "-A", app, "worker", *args]


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until ``proc`` logs :data:`READY`; an error with its log's tail if it exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


class Processes:
    """The processes a benchmark starts, in ``env``; leaving the ``with`` block stops each:
    SIGTERM to every one (a Celery worker's warm shutdown ends its pool), then SIGKILL to any
    still running after :data:`STOP_SECONDS`, so none outlives the run."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, argv: list[str], log: Path, *, ready: bool = True, append: bool = False,
              cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a session of its own, its output to ``log`` (after what is there with
        ``append``); with ``ready``, return once it serves (:func:`wait_ready`)."""
        out = log.open("ab" if append else "wb")
        proc = subprocess.Popen(argv, env=self.env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self._started.append((proc, out))
        if ready:
            wait_ready(log, proc)
        return proc

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for proc, _ in self._started:
            proc.terminate()
        for proc, out in self._started:
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.close()
        self._started.clear()


# --- throughput: pitstop against raw Celery ---------------------------------------------------------

def raw_round(client: redis.Redis, raw_app: Any, n: int, timeout: float = 300) -> float:
    """``n`` raw Celery ``bench.noop`` tasks sent at once, done per second."""
    client.delete(RAW_DONE_KEY)
    started = time.perf_counter()
    for _ in range(n):
        raw_app.send_task("bench.noop", queue="bench-raw")
    deadline = time.monotonic() + timeout
    while int(client.get(RAW_DONE_KEY) or 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw tasks did not finish in {timeout:g} s")
        time.sleep(0.005)
    return n / (time.perf_counter() - started)


def workstream_round(bus: EventBus, event_type: str, completed_type: str, n: int,
                     timeout: float = 300) -> tuple[float, int]:
    """``n`` events published at once -> the workstreams they launch completed (their
    ``completed_type`` events counted): how many per second, and how many within ``timeout``."""
    done = 0
    deadline = time.monotonic() + timeout
    with bus.subscribe(completed_type) as completed:
        started = time.perf_counter()
        for _ in range(n):
            bus.publish(event_type)
        while done < n and time.monotonic() < deadline:
            if completed.get(timeout=5) is not None:
                done += 1
        return done / (time.perf_counter() - started), done


def throughput_rounds(bus: EventBus, client: redis.Redis, raw_app: Any, n: int,
                      rounds: int) -> dict[str, Any]:
    """``rounds`` of ``n`` raw no-op tasks, then ``n`` :data:`THROUGHPUT_EVENT` events -> one-step
    workstreams, alternating so that a shared machine's drift hits both alike; the medians."""
    raw: list[float] = []
    ours: list[float] = []
    completed = 0
    for _ in range(rounds):
        raw.append(raw_round(client, raw_app, n))
        rate, done = workstream_round(bus, THROUGHPUT_EVENT, THROUGHPUT_COMPLETED, n)
        ours.append(rate)
        completed += done
    return {"n": n, "rounds": rounds, "ours_per_s": statistics.median(ours),
            "raw_per_s": statistics.median(raw), "completed": completed,
            "ours_rounds": ours, "raw_rounds": raw}


# --- the web view, served in this process ----------------------------------------------------------

@contextlib.contextmanager
def web_project(token: str) -> Iterator[tuple[Settings, redis.Redis]]:
    """A project in a temporary home on a private redis-server, with the checkout's shipped
    config and ``token`` as its API token (the web view's login): its settings and a client."""
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as url:
        settings = load_settings(environ={
            "PITSTOP_REDIS_URL": url, "PITSTOP_STATE_DIR": str(Path(tmp) / ".state"),
            "PITSTOP_CONFIG_DIR": str(ROOT / "config"), "PITSTOP_API_TOKEN": token}, cwd=Path(tmp))
        client = redis.Redis.from_url(url)
        try:
            yield settings, client
        finally:
            client.close()


def serve(app: Any, timeout: float = 20) -> tuple[uvicorn.Server, str]:
    """``app`` served by uvicorn on a free port of 127.0.0.1 in a daemon thread, as ``pitstop
    serve`` serves it; the server (``should_exit`` stops it) and its base URL, once it listens."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the web view did not start in {timeout:g} s")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


# --- what the benchmarks print ------------------------------------------------------------------------

def percentile(samples: list[float], q: float) -> float:
    """The sample nearest to rank ``q`` (0 … 1) of the sorted samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages: a shared machine's noise moves the
    figures by tens of percent, so the benchmarks print it beside them."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "unknown"
