"""Redis memory per 1,000 script runs and per 1,000 events, measured (for docs/operations.md).

    python bench/redis_memory.py [RUNS] [EVENTS]

On a private redis-server (``used_memory`` from ``INFO memory``, after the work is done):

1. RUNS real script runs, sent as ``pitstop run`` sends them to a real ``pitstop worker``
   (prefork, 2 processes) with task events on: a script printing 20 lines of ~60 characters.
   What stays per run: its run record, its output stream and end marker, the Celery result, and
   its three ``tool.*`` events on the event stream (``cli_executions`` goes to a file, not Redis).
2. EVENTS events published through the bus with a 200-byte ``data`` object (what a CI
   ``pitstop emit`` or a webhook typically carries), with no consumer group behind.

Per-1,000 figures are scaled from the measured deltas; the baseline is the same server's memory
just before each part, so Redis's own overhead is not counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

import redis  # noqa: E402

from pitstop import components  # noqa: E402
from pitstop.bus.eventbus import EventBus  # noqa: E402
from pitstop.connection.server import RedisServer  # noqa: E402
from pitstop.kernel.redaction import Redactor  # noqa: E402
from pitstop.kernel.settings import load_settings  # noqa: E402
from pitstop.scripts.dispatch import ScriptDispatcher  # noqa: E402

SCRIPT = "for i in range(20):\n    print(f'line {i:02d} ' + 'x' * 50)\n"


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure_runs(home: Path, url: str, client: redis.Redis, n: int) -> int:
    from workers.app import create_app

    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({"PITSTOP_HOME": str(home), "PITSTOP_REDIS_URL": url, "PITSTOP_TASK_EVENTS": "1",
                "PYTHONPATH": str(ROOT)})
    settings = load_settings(environ=env, cwd=home)
    app = create_app(settings, url)
    log = (home / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "pitstop", "worker", "-Q", "default,linux",
                               "-c", "2", "-l", "warning"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit((home / "worker.log").read_text()[-3000:])
        runs = components.run_store(client, settings, Redactor())
        dispatcher = ScriptDispatcher(settings, runs, Redactor(), app.send_task)
        before = used(client)
        sent = [dispatcher.enqueue("lines.py", ["--flag"], queue="linux",
                                   env={"GIT_SHA": "0123456789abcdef"}).run_id
                for _ in range(n)]
        deadline = time.monotonic() + 600
        for run_id in sent:
            while runs.get_run(run_id).status in ("queued", "running"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run_id} did not finish")
                time.sleep(0.05)
        time.sleep(1)  # the last results and end entries
        return used(client) - before
    finally:
        worker.terminate()
        worker.wait(60)


def measure_events(client: redis.Redis, n: int) -> int:
    bus = EventBus(client)
    data = {"sha": "0123456789abcdef0123456789abcdef01234567", "branch": "main",
            "pipeline": "build-and-test", "status": "passed", "duration_s": 412.5,
            "url": "https://ci.example.com/jobs/123456"}
    before = used(client)
    for index in range(n):
        bus.publish("ci.build.completed", {**data, "n": index})
    return used(client) - before


def main(runs: int = 200, events: int = 5000) -> None:
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-mem-") as tmp:
        home = Path(tmp)
        (home / "config").mkdir()
        (home / "scripts").mkdir()
        (home / "scripts" / "lines.py").write_text(SCRIPT)
        server = RedisServer(home / "redis", appendonly=False)
        info = server.start()
        client = redis.Redis.from_url(info.url)
        try:
            version = client.info("server")["redis_version"]
            run_bytes = measure_runs(home, info.url, client, runs)
            event_bytes = measure_events(client, events)
        finally:
            server.stop()
    print(f"Redis {version} memory (used_memory deltas)")
    print(f"  {runs} script runs (20 output lines each, task events on): "
          f"{run_bytes / 1024:.0f} KiB -> {run_bytes / runs * 1000 / 2**20:.1f} MiB per 1,000 "
          f"runs ({run_bytes / runs / 1024:.1f} KiB a run)")
    print(f"  {events} events (~200-byte data): {event_bytes / 1024:.0f} KiB -> "
          f"{event_bytes / events * 1000 / 2**20:.2f} MiB per 1,000 events "
          f"({event_bytes / events:.0f} bytes an event)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
