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
import json
import queue
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

import redis  # noqa: E402

from bench import _harness  # noqa: E402
from bench import bus as bus_bench  # noqa: E402
from bench import patterns as patterns_bench  # noqa: E402
from pitstop.bus.eventbus import EventBus  # noqa: E402
from pitstop.bus.streamcodec import EVENT_FIELD, encode_event  # noqa: E402

RULE_COUNTS = (10, 100, 1_000, 3_000, 10_000, 30_000)
CONCURRENCY = (1, 2, 4)
STREAM_LENGTHS = (0, 1_000, 10_000, 100_000, 300_000)


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
    ``-c``, measured in alternating rounds (bench/_harness.py's ``throughput_rounds``, as
    bench/router.py measures them), then stopped."""
    from celery import Celery

    from workers import transport

    transport.install()  # the senders pay the same broker costs as pitstop's (bench/_raw_router.py)
    points = []
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-curve-") as tmp:
        home = Path(tmp)
        _harness.write_config(home, _harness.THROUGHPUT_WORKSTREAMS, _harness.THROUGHPUT_TRIGGERS)
        with _harness.redis_server(home / "redis") as url:
            raw_app = Celery("bench_curve_raw", broker=url)
            raw_app.conf.update(task_serializer="json", accept_content=["json"])
            client = redis.Redis.from_url(url)
            try:
                for concurrency in levels:
                    count = n * max(1, concurrency // 2)
                    bus = EventBus(client, source="bench")
                    with _harness.Processes(_harness.project_env(home, url)) as workers:
                        workers.start(_harness.pitstop_worker(
                            "-Q", "default", "-c", str(concurrency), "-l", "INFO",
                            "-n", f"curve{concurrency}@%h"), home / f"pitstop-{concurrency}.log")
                        workers.start(_harness.celery_worker(
                            "bench._raw_router", "-Q", "bench-raw", "-c", str(concurrency),
                            "-l", "INFO", "-n", f"raw{concurrency}@%h", "--without-mingle",
                            "--without-gossip"), home / f"raw-{concurrency}.log")
                        thr = _harness.throughput_rounds(bus, client, raw_app, count, rounds)
                    if thr["completed"] < count * rounds:
                        raise RuntimeError(f"only {thr['completed']} of {count * rounds} "
                                           "workstreams completed (300 s a round)")
                    points.append({"processes": concurrency, "n": count, "rounds": rounds,
                                   "ours_per_s": thr["ours_per_s"], "raw_per_s": thr["raw_per_s"],
                                   "ratio": thr["ours_per_s"] / thr["raw_per_s"],
                                   "ours_rounds": thr["ours_rounds"],
                                   "raw_rounds": thr["raw_rounds"]})
            finally:
                client.close()
                raw_app.close()
    return points


# --- 3. bus latency against stream length -------------------------------------------------------

def bus_latency_curve(lengths: tuple[int, ...] = STREAM_LENGTHS, n: int = 300) -> list[dict[str, Any]]:
    points = []
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-bus-") as tmp, \
            _harness.redis_server(Path(tmp) / "redis") as url:
        client = redis.Redis.from_url(url)
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
                    "group_bus_p50_us": _harness.percentile(group_bus, .5) * 1e6,
                    "group_bus_p99_us": _harness.percentile(group_bus, .99) * 1e6,
                    "group_raw_p50_us": _harness.percentile(group_raw, .5) * 1e6,
                    "group_raw_p99_us": _harness.percentile(group_raw, .99) * 1e6,
                    "live_bus_p50_us": _harness.percentile(live_bus, .5) * 1e6,
                    "live_bus_p99_us": _harness.percentile(live_bus, .99) * 1e6,
                    "live_raw_p50_us": _harness.percentile(live_raw, .5) * 1e6,
                    "live_raw_p99_us": _harness.percentile(live_raw, .99) * 1e6,
                    "ratio": (_harness.percentile(group_bus, .5)
                              / _harness.percentile(group_raw, .5)),
                    "stream_len": int(client.xlen(bus.stream)),
                })
                client.delete(bus.stream, "bench:raw-stream")
        finally:
            client.close()
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
