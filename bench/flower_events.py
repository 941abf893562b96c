"""What Celery task events (``-E``, which Flower needs) cost a pitstop worker.

    python bench/flower_events.py [N] [ROUNDS]

A real ``pitstop worker`` (prefork, one process) on a private redis-server runs N no-op tasks
(``pitstop.smoke_canary``: echo its argument, result stored), sent in one burst; throughput is N
over the time from the first send to the last result. The same worker setup runs with
``celery.task_events`` off (the baseline) and on (``PITSTOP_TASK_EVENTS=1``: ``-E`` and
``task-sent`` events), alternating ROUNDS times so drift of a shared machine hits both alike.
The ratio printed is events-on over events-off throughput (below 1: what events cost). Nobody
consumes the events here: a running Flower adds Redis load, not worker work.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from pitstop.connection.server import RedisServer  # noqa: E402 - after the path
from pitstop.kernel.constants import CANARY_TASK  # noqa: E402
from pitstop.kernel.settings import load_settings  # noqa: E402

QUEUE = "bench-events"


def _env(home: Path, url: str, events: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({"PITSTOP_HOME": str(home), "PITSTOP_REDIS_URL": url,
                "PITSTOP_TASK_EVENTS": "1" if events else "0", "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1", "PITSTOP_ROUTER": "0"})
    return env


def _start_worker(app: Any, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "pitstop", "worker", "-Q", QUEUE, "-c", "1",
                             "-n", f"bench-{os.getpid()}@%h", "-l", "warning"], env=env,
                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):  # the worker answers once it consumes
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log.read_text()[-2000:]}")
    return proc


def one_round(home: Path, url: str, events: bool, n: int) -> float:
    """Tasks per second through a fresh worker with task events on or off."""
    from workers.app import create_app

    env = _env(home, url, events)
    settings = load_settings(environ=env, cwd=home)
    app = create_app(settings, url, queues=[QUEUE])
    log = home / f"worker-{'on' if events else 'off'}.log"
    log.write_text("")
    proc = _start_worker(app, env, log)
    try:
        for result in [app.send_task(CANARY_TASK, args=["warm"], queue=QUEUE) for _ in range(50)]:
            result.get(timeout=60)
        started = time.perf_counter()
        results = [app.send_task(CANARY_TASK, args=[str(i)], queue=QUEUE) for i in range(n)]
        for result in results:
            result.get(timeout=300)
        took = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(60)
    return n / took


def main(n: int = 2000, rounds: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-events-") as tmp:
        home = Path(tmp)
        (home / "config").mkdir()
        server = RedisServer(home / "redis", appendonly=False)
        info = server.start()
        try:
            off: list[float] = []
            on: list[float] = []
            for _ in range(rounds):
                off.append(one_round(home, info.url, False, n))
                on.append(one_round(home, info.url, True, n))
        finally:
            server.stop()
    stats = {"n": n, "rounds": rounds, "off": off, "on": on,
             "off_median": statistics.median(off), "on_median": statistics.median(on)}
    stats["ratio"] = stats["on_median"] / stats["off_median"]
    print(f"no-op task throughput, one prefork worker process, {n} tasks x {rounds} rounds")
    print(f"  task events off (baseline)  {stats['off_median']:8.0f} tasks/s  "
          f"(rounds: {', '.join(f'{x:.0f}' for x in off)})")
    print(f"  task events on (-E)         {stats['on_median']:8.0f} tasks/s  "
          f"(rounds: {', '.join(f'{x:.0f}' for x in on)})")
    print(f"  ratio on/off {stats['ratio']:.2f} (events cost {100 * (1 - stats['ratio']):.0f}% of "
          "throughput)")
    return stats


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
