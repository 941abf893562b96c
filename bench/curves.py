"""Scale curves, each point against a baseline measured in the same run at the same size.

    python bench/curves.py [--quick]

1. Matching cost against rule count (10 … 30,000 rules): the compiled pattern index, per event,
   against a naive ``fnmatch`` loop over every rule (``bench/patterns.py``'s rules and events).
2. End-to-end throughput against worker processes (``-c`` 1, 2, 4): events -> one-step ``emit``
   workstreams completed per second through the router and a real ``pitstop worker``, against
   raw Celery no-op tasks per second on a worker with the same settings and ``-c``
   (``bench/router.py``'s set-up).
3. Bus latency against stream length (0 … 300,000 entries already in the stream): publish ->
   a consumer group's blocking read, against a raw ``XADD`` -> ``XREADGROUP BLOCK`` at the same
   length; and publish -> live subscription against a raw ``PUBLISH``.

:func:`run` returns the figures as a dict (``bench/run_all.py`` plots them); ``main`` prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

import redis  # noqa: E402

from bench import bus as bus_bench  # noqa: E402
from bench import patterns as patterns_bench  # noqa: E402
from pitstop.bus.eventbus import EventBus  # noqa: E402
from pitstop.bus.streamcodec import EVENT_FIELD, encode_event  # noqa: E402
from pitstop.connection.server import RedisServer  # noqa: E402

WORKSTREAMS = """
    workstreams:
      WS-THR:
        steps:
          - {id: only, kind: emit, params: {type: bench.step}}
"""
TRIGGERS = """
    triggers:
      - {id: thr, event: bench.many, workstream: WS-THR}
"""
RULE_COUNTS = (10, 100, 1_000, 3_000, 10_000, 30_000)
CONCURRENCY = (1, 2, 4)
STREAM_LENGTHS = (0, 1_000, 10_000, 100_000, 300_000)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- 1. matching -----------------------------------------------------------------------------

def matching_curve(counts: tuple[int, ...] = RULE_COUNTS, events: int = 20_000) -> list[dict[str, Any]]:
    rng = random.Random(7)
    points = []
    for count in counts:
        m = patterns_bench.measure(count, events, rng)
        points.append({"rules": count, "index_us": m["warm"], "index_cold_us": m["cold"],
                       "naive_us": m["naive"], "ratio": m["warm"] / m["naive"],
                       "speedup": m["naive"] / m["warm"]})
    return points


# --- 2. throughput against worker processes ----------------------------------------------------

def throughput_curve(levels: tuple[int, ...] = CONCURRENCY, n: int = 300,
                     rounds: int = 3) -> list[dict[str, Any]]:
    """One private Redis; for each level, a pitstop worker and a raw Celery worker with that
    ``-c``, measured one after the other (bench/router.py's ``_throughput``), then stopped."""
    from celery import Celery

    from workers import transport

    transport.install()  # the senders pay the same broker costs as pitstop's (bench/_raw_router.py)
    points = []
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-curve-") as tmp:
        home = Path(tmp)
        (home / "config").mkdir()
        (home / "config" / "workstreams.yaml").write_text(textwrap.dedent(WORKSTREAMS))
        (home / "config" / "triggers.yaml").write_text(textwrap.dedent(TRIGGERS))
        server = RedisServer(home / "redis", appendonly=False)
        info = server.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
        env.update(PITSTOP_HOME=str(home), PITSTOP_REDIS_URL=info.url, BENCH_REDIS_URL=info.url,
                   PITSTOP_STATE_DIR=str(home / ".state"), PITSTOP_CONFIG_DIR=str(home / "config"),
                   PYTHONPATH=str(ROOT))
        raw_app = Celery("bench_curve_raw", broker=info.url)
        raw_app.conf.update(task_serializer="json", accept_content=["json"])
        client = redis.Redis.from_url(info.url)
        try:
            for concurrency in levels:
                count = n * max(1, concurrency // 2)
                bus = EventBus(client, source="bench")
                with _workers(home, env, concurrency):
                    raw, ours = [], []
                    for _ in range(rounds):  # alternating, so drift hits both alike
                        raw.append(_raw_round(client, raw_app, count))
                        ours.append(_our_round(bus, count))
                points.append({"processes": concurrency, "n": count, "rounds": rounds,
                               "ours_per_s": statistics.median(ours),
                               "raw_per_s": statistics.median(raw),
                               "ratio": statistics.median(ours) / statistics.median(raw),
                               "ours_rounds": ours, "raw_rounds": raw})
        finally:
            client.close()
            raw_app.close()
            server.stop()
    return points


@contextlib.contextmanager
def _workers(home: Path, env: dict[str, str], concurrency: int) -> Iterator[None]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, argv in (
            ("pitstop", [sys.executable, "-m", "pitstop", "worker", "-Q", "default",
                         "-c", str(concurrency), "-l", "INFO", "-n", f"curve{concurrency}@%h"]),
            ("raw", [sys.executable, "-m", "celery", "-A", "bench._raw_router", "worker",
                     "-Q", "bench-raw", "-c", str(concurrency), "-l", "INFO",
                     "-n", f"raw{concurrency}@%h", "--without-mingle", "--without-gossip"]),
        ):
            log = home / f"{name}-{concurrency}.log"
            proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log.open("wb"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            _wait_ready(log, proc)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def _raw_round(client: redis.Redis, raw_app: Any, n: int) -> float:
    """n raw Celery no-op tasks (bench/_raw_router.py counts each in ``bench:raw-done``)."""
    client.delete("bench:raw-done")
    started = time.perf_counter()
    for _ in range(n):
        raw_app.send_task("bench.noop", queue="bench-raw")
    deadline = time.monotonic() + 300
    while int(client.get("bench:raw-done") or 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("raw tasks did not finish in 300 s")
        time.sleep(0.005)
    return n / (time.perf_counter() - started)


def _our_round(bus: EventBus, n: int) -> float:
    """n events -> n one-step workstreams completed (their completion events counted)."""
    done = 0
    deadline = time.monotonic() + 300
    with bus.subscribe("workstream.ws-thr.completed") as completed:
        started = time.perf_counter()
        for _ in range(n):
            bus.publish("bench.many")
        while done < n and time.monotonic() < deadline:
            if completed.get(timeout=5) is not None:
                done += 1
        elapsed = time.perf_counter() - started
    if done < n:
        raise RuntimeError(f"only {done} of {n} workstreams completed in 300 s")
    return n / elapsed


# --- 3. bus latency against stream length -------------------------------------------------------

def bus_latency_curve(lengths: tuple[int, ...] = STREAM_LENGTHS, n: int = 300) -> list[dict[str, Any]]:
    points = []
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-bus-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        info = server.start()
        client = redis.Redis.from_url(info.url)
        try:
            for length in lengths:
                bus = EventBus(client, maxlen=10_000_000, source="bench")
                bus_bench.fill(client, bus.stream, length)
                client.delete("bench:raw-stream")
                bus_bench.fill(client, "bench:raw-stream", length)
                group_bus = _group_latency_bus(bus, n)
                group_raw = _group_latency_raw(client, "bench:raw-stream", n)
                live_bus = bus_bench.bus_latency(bus, n)
                live_raw = bus_bench.raw_latency(client, n)
                points.append({
                    "length": length,
                    "group_bus_p50_us": pct(group_bus, .5) * 1e6,
                    "group_bus_p99_us": pct(group_bus, .99) * 1e6,
                    "group_raw_p50_us": pct(group_raw, .5) * 1e6,
                    "group_raw_p99_us": pct(group_raw, .99) * 1e6,
                    "live_bus_p50_us": pct(live_bus, .5) * 1e6,
                    "live_bus_p99_us": pct(live_bus, .99) * 1e6,
                    "live_raw_p50_us": pct(live_raw, .5) * 1e6,
                    "live_raw_p99_us": pct(live_raw, .99) * 1e6,
                    "ratio": pct(group_bus, .5) / pct(group_raw, .5),
                    "stream_len": int(client.xlen(bus.stream)),
                })
                client.delete(bus.stream, "bench:raw-stream")
        finally:
            client.close()
            server.stop()
    return points


def _ping_pong(publish: Any, receive: Any, n: int) -> list[float]:
    results: queue.Queue[float | None] = queue.Queue()

    def reader() -> None:
        for _ in range(n):
            results.put(receive())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    samples = []
    for _ in range(n):
        sent = time.perf_counter()
        publish(sent)
        got = results.get(timeout=10)
        if got is None:
            raise RuntimeError("reader timed out")
        samples.append(got - sent)
    thread.join(10)
    return samples[min(10, n // 10):]  # warm-up


def _group_latency_bus(bus: EventBus, n: int) -> list[float]:
    consumer = bus.consumer(f"bench-{time.monotonic_ns()}", "c")
    consumer.ensure_group()
    bus.client.xgroup_setid(bus.stream, consumer.group, id="$")

    def receive() -> float | None:
        for _ in range(50):
            batch = consumer.read(count=10, block_ms=200)
            if batch:
                consumer.ack(*batch)
                return time.perf_counter()
        return None

    return _ping_pong(lambda sent: bus.publish("bench.latency", {"t": sent}), receive, n)


def _group_latency_raw(client: redis.Redis, stream: str, n: int) -> list[float]:
    group = f"raw-{time.monotonic_ns()}"
    client.xgroup_create(stream, group, id="$", mkstream=True)
    reader = redis.Redis(connection_pool=client.connection_pool)
    payload = encode_event(patterns_bench_event())

    def receive() -> float | None:
        for _ in range(50):
            response: Any = reader.xreadgroup(group, "c", {stream: ">"}, count=10, block=200)
            if response:
                reader.xack(stream, group, *(entry for entry, _ in response[0][1]))
                return time.perf_counter()
        return None

    return _ping_pong(lambda sent: client.xadd(stream, {EVENT_FIELD: payload}), receive, n)


def patterns_bench_event() -> Any:
    from pitstop.bus.events import make_event

    return make_event("bench.latency", {"t": 0.0}, source="bench")


# --- all ------------------------------------------------------------------------------------------

def run(quick: bool = False) -> dict[str, Any]:
    return {
        "matching": matching_curve((10, 1_000, 10_000) if quick else RULE_COUNTS,
                                   5_000 if quick else 20_000),
        "throughput": throughput_curve((1, 2) if quick else CONCURRENCY, 100 if quick else 300,
                                       1 if quick else 3),
        "bus_latency": bus_latency_curve((0, 10_000) if quick else STREAM_LENGTHS,
                                         100 if quick else 300),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points, smaller samples")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick)
    print(json.dumps(figures, indent=1))
    for point in figures["throughput"]:
        print(f"-c {point['processes']}: {point['ours_per_s']:.1f}/s vs raw "
              f"{point['raw_per_s']:.1f}/s ({point['ratio']:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
