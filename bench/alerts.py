"""Alerting latency: event published -> message at the Slack stand-in, against bare HTTP POSTs
to the same stand-in and the bus's own latency, measured in one run.

    python bench/alerts.py [--n N] [--concurrency C]

Starts a private redis-server, a local HTTP server standing in for Slack, and a real worker
(``pitstop worker -c C``: the alert manager thread plus ``send_alert`` tasks). Routes every
alert on its own (``group_by: [...]``, ``group_wait: 0s``, no storm limit, no rate limit).

(a) bus: EventBus.publish -> Subscription, one at a time (p50);
(b) bare POST burst: N messages made at once, posted by C threads with a plain httpx client,
    latency from the burst's start to arrival at the stand-in;
(c) alert burst: N failure events published at once, latency from each publish to its
    message's arrival;
(d) one alert at a time, against one bare POST at a time;
(e) the floor of the design: the same burst as plain Celery tasks (same settings: JSON,
    acks_late, prefetch 1) that only POST, on a worker with the same concurrency.
Goal: (c) p99 < 2 s, and (c) p50 within 5x of (b) p50 plus (a) p50.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness
from pitstop import components
from pitstop.kernel.settings import Settings

MARK = re.compile(r"bench-(\w+)-(\d+)")
ALERTS_YAML = """
leader_ttl: 5s
channels:
  slack:
    type: slack
    webhook_url: ${BENCH_SLACK_URL}
    rate_limit: null
receivers:
  team: {channels: [slack], storm: {max_messages: 100000, window: 1s}}
route: {receiver: team, group_by: ["..."], group_wait: 0s, group_interval: 1h}
"""


RAW_QUEUE = "bench-raw-alerts"
if os.environ.get("BENCH_RAW_REDIS_URL"):  # imported by the baseline worker (celery -A alerts)
    from celery import Celery

    raw_app = Celery("bench_raw_alerts", broker=os.environ["BENCH_RAW_REDIS_URL"])
    raw_app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True,
                        worker_prefetch_multiplier=1, task_default_queue=RAW_QUEUE,
                        task_ignore_result=True)
    _raw_client = httpx.Client(timeout=10)

    @raw_app.task(name="bench.raw_alert_post")
    def raw_post(url: str, text: str) -> None:
        _raw_client.post(url, content=json.dumps({"text": text}))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class StandIn:
    """Records when each marked message arrives (``bench-<run>-<n>`` anywhere in the body)."""

    def __init__(self) -> None:
        self.arrivals: queue.Queue[tuple[str, int, float]] = queue.Queue()
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Answer at once: headers and body in separate small writes would otherwise
                # wait out the client's delayed ACK (Nagle), 40 ms a reply.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                at = time.perf_counter()
                for run, n in set(MARK.findall(body.decode("utf-8", "replace"))):
                    arrivals.put((run, int(n), at))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T/B/bench"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def collect(self, run: str, n: int, timeout: float = 60.0) -> dict[int, float]:
        got: dict[int, float] = {}
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                seen_run, number, at = self.arrivals.get(timeout=0.5)
            except queue.Empty:
                continue
            if seen_run == run:
                got.setdefault(number, at)
        return got


def bus_latency(client: redis.Redis, n: int) -> list[float]:
    bus = components.event_bus(client, Settings(), source="bench")
    samples = []
    with bus.subscribe("bench.bus.ping") as subscription:
        for _ in range(n):
            start = time.perf_counter()
            bus.publish("bench.bus.ping", {})
            if subscription.get(timeout=5) is not None:
                samples.append(time.perf_counter() - start)
    return samples


def bare_burst(stand_in: StandIn, n: int, concurrency: int, run: str) -> list[float]:
    jobs: queue.Queue[int] = queue.Queue()
    start = time.perf_counter()
    for i in range(n):
        jobs.put(i)

    def sender() -> None:
        with httpx.Client(timeout=10) as client:
            while True:
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                client.post(stand_in.url, content=json.dumps({"text": f"bench-{run}-{i}"}))

    threads = [threading.Thread(target=sender) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    arrived = stand_in.collect(run, n)
    return [at - start for at in arrived.values()]


def alert_burst(client: redis.Redis, stand_in: StandIn, n: int, run: str) -> list[float]:
    bus = components.event_bus(client, Settings(), source="bench")
    sent: dict[int, float] = {}
    for i in range(n):
        sent[i] = time.perf_counter()
        bus.publish(f"bench.{run}.failed", {"summary": f"bench-{run}-{i}"})
    arrived = stand_in.collect(run, n)
    if len(arrived) < n:
        print(f"  warning: {n - len(arrived)} of {n} alerts did not arrive", file=sys.stderr)
    return [arrived[i] - sent[i] for i in arrived]


def one_at_a_time(client: redis.Redis, stand_in: StandIn, n: int) -> tuple[list[float],
                                                                             list[float]]:
    bus = components.event_bus(client, Settings(), source="bench")
    alerts, bare = [], []
    with httpx.Client(timeout=10) as http:
        for i in range(n):
            run = f"single{i}"
            start = time.perf_counter()
            bus.publish(f"bench.{run}.failed", {"summary": f"bench-{run}-0"})
            arrived = stand_in.collect(run, 1, timeout=10)
            if arrived:
                alerts.append(arrived[0] - start)
            run = f"bare{i}"
            start = time.perf_counter()
            http.post(stand_in.url, content=json.dumps({"text": f"bench-{run}-0"}))
            arrived = stand_in.collect(run, 1, timeout=10)
            if arrived:
                bare.append(arrived[0] - start)
    return alerts, bare


def raw_celery_burst(redis_url: str, stand_in: StandIn, n: int, concurrency: int,
                     env: dict[str, str], log: Path) -> list[float]:
    """The same burst as plain Celery tasks that only POST (the floor of a task per delivery)."""
    from celery import Celery

    with _harness.Processes({**env, "BENCH_RAW_REDIS_URL": redis_url}) as procs:
        # Its output after the pitstop worker's, in the same log.
        procs.start(_harness.celery_worker("alerts:raw_app", "-Q", RAW_QUEUE,
                                           "-c", str(concurrency), "-l", "warning",
                                           "--without-mingle", "--without-gossip"),
                    log, ready=False, append=True, cwd=Path(__file__).resolve().parent)
        sender = Celery("bench_raw_sender", broker=redis_url)
        sender.conf.update(task_serializer="json", task_default_queue=RAW_QUEUE)
        for i in range(3):  # warm-up: the worker is up when these arrive
            sender.send_task("bench.raw_alert_post", (stand_in.url, f"bench-rawwarm-{i}"))
        if len(stand_in.collect("rawwarm", 3, timeout=60)) < 3:
            return []
        sent: dict[int, float] = {}
        for i in range(n):
            sent[i] = time.perf_counter()
            sender.send_task("bench.raw_alert_post", (stand_in.url, f"bench-raw-{i}"))
        arrived = stand_in.collect("raw", n)
        return [arrived[i] - sent[i] for i in arrived]


def line(name: str, samples: list[float]) -> str:
    return (f"{name:<34} n={len(samples):<4} p50 {percentile(samples, 0.5) * 1000:8.1f} ms   "
            f"p99 {percentile(samples, 0.99) * 1000:8.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="alerts in the burst")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--single", type=int, default=20, help="one-at-a-time rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "config").mkdir()
        (home / "config" / "alerts.yaml").write_text(ALERTS_YAML)
        with _harness.redis_server(home / "redis") as url:
            stand_in = StandIn()
            env = _harness.worker_env(PITSTOP_REDIS_URL=url, PITSTOP_HOME=str(home),
                                      BENCH_SLACK_URL=stand_in.url,
                                      PITSTOP_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL",
                                                                       "warning"))
            log_path = Path(os.environ.get("BENCH_WORKER_LOG") or home / "worker.log")
            client = redis.Redis.from_url(url)
            try:
                with _harness.Processes(env) as procs:
                    # At log level warning it logs no "ready.": the warm-up tells instead.
                    procs.start(_harness.pitstop_worker("-Q", "default",
                                                        "-c", str(args.concurrency)),
                                log_path, ready=False)
                    warm = alert_burst(client, stand_in, 5, "warmup")
                    if len(warm) < 5:
                        print("the worker did not deliver the warm-up alerts:\n"
                              + log_path.read_text()[-3000:], file=sys.stderr)
                        return 1
                    bus = bus_latency(client, 200)
                    bare = bare_burst(stand_in, args.n, args.concurrency, "bare")
                    activity = home / ".state" / "alert_activity.jsonl"
                    before = len(activity.read_text().splitlines())
                    burst = alert_burst(client, stand_in, args.n, "burst")
                    queued_to_sent = [json.loads(entry).get("latency", 0.0) for entry in
                                      activity.read_text().splitlines()[before:]
                                      if '"state":"delivered"' in entry]
                    single_alerts, single_bare = one_at_a_time(client, stand_in, args.single)
                raw = raw_celery_burst(url, stand_in, args.n, args.concurrency, env, log_path)
            finally:
                client.close()
    print(f"alerting latency, burst of {args.n}, worker -c {args.concurrency}")
    print(line("(a) bus publish -> subscriber", bus))
    print(line("(b) bare POST burst", bare))
    print(line("(c) alert burst: event -> Slack", burst))
    if queued_to_sent:
        print(line("    of which: queued -> delivered", queued_to_sent))
    print(line("(d) one alert: event -> Slack", single_alerts))
    print(line("    one bare POST", single_bare))
    if raw:
        print(line("(e) plain Celery POST task burst", raw))
    budget = percentile(bare, 0.5) + percentile(bus, 0.5)
    ratio = percentile(burst, 0.5) / budget
    single_ratio = statistics.median(single_alerts) / (statistics.median(single_bare)
                                                       + percentile(bus, 0.5))
    p99 = percentile(burst, 0.99)
    print(f"burst p50 / (bare POST p50 + bus p50) = {ratio:.2f}x (goal <= 5x); "
          f"one-at-a-time: {single_ratio:.2f}x")
    print(f"burst p99 = {p99:.3f} s (goal < 2 s)")
    if raw:
        print(f"burst p50 / plain Celery POST task burst p50 = "
              f"{percentile(burst, 0.5) / percentile(raw, 0.5):.2f}x (what pitstop adds to a task "
              "per delivery)")
    ok = ratio <= 5 and p99 < 2
    print("verdict:", "goal met" if ok else "goal NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
