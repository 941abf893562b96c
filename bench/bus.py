"""Event bus overhead against raw redis-py, measured in one run on a private redis-server.

    python bench/bus.py [--n N] [--throughput-n M]

(a) raw PUBLISH -> subscriber latency, (b) EventBus.publish -> Subscription latency,
(c) raw XADD and XREADGROUP + XACK batch throughput, (d) EventBus.publish and
GroupConsumer.process throughput.
Latency rounds alternate raw and bus so machine drift hits both alike; the verdict uses the
median of the per-round p50 ratios. Goal: bus p50 latency within 1.5x of raw PUBLISH.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pitstop.bus.eventbus import EVENT_FIELD, EventBus, encode_event
from pitstop.bus.events import make_event
from pitstop.connection.server import RedisServer

GOAL_RATIO = 1.5
ROUNDS = 8
WARMUP = 100
RECEIVE_TIMEOUT = 5.0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ping_pong(publish: Callable[[], object], receive: Callable[[], float | None],
              n: int) -> list[float]:
    """Publish one message at a time; the subscriber thread reports each latency back."""
    latencies: queue.Queue[float | None] = queue.Queue()

    def subscriber() -> None:
        for _ in range(n):
            latency = receive()
            latencies.put(latency)
            if latency is None:
                return

    thread = threading.Thread(target=subscriber, daemon=True)
    thread.start()
    samples: list[float] = []
    for _ in range(n):
        publish()
        latency = latencies.get(timeout=RECEIVE_TIMEOUT)
        if latency is None:
            raise RuntimeError("subscriber timed out")
        samples.append(latency)
    thread.join(RECEIVE_TIMEOUT)
    return samples


def raw_latency(client: redis.Redis, n: int) -> list[float]:
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe("bench:raw")
    while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
        pass

    def receive() -> float | None:
        while True:
            message = pubsub.get_message(timeout=RECEIVE_TIMEOUT)
            if message is None:
                return None
            if message["type"] == "message":
                return time.perf_counter() - float(message["data"])

    try:
        return ping_pong(lambda: client.publish("bench:raw", repr(time.perf_counter())),
                         receive, n)
    finally:
        pubsub.close()


def bus_latency(bus: EventBus, n: int) -> list[float]:
    subscription = bus.subscribe("bench.**")

    def receive() -> float | None:
        event = subscription.get(RECEIVE_TIMEOUT)
        if event is None:
            return None
        return time.perf_counter() - float(event.data["t"])

    try:
        return ping_pong(lambda: bus.publish("bench.latency", {"t": time.perf_counter()}),
                         receive, n)
    finally:
        subscription.close()


def fill(client: redis.Redis, stream: str, n: int) -> None:
    payload = encode_event(make_event("bench.throughput", {"i": 0}, source="bench"))
    client.delete(stream)
    for start in range(0, n, 500):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(500, n - start)):
            pipe.xadd(stream, {EVENT_FIELD: payload})
        pipe.execute()


def raw_throughput(client: redis.Redis, n: int) -> float:
    stream = "bench:raw-stream"
    fill(client, stream, n)
    client.xgroup_create(stream, "g", id="0")
    consumed = 0
    started = time.perf_counter()
    while consumed < n:
        response: Any = client.xreadgroup("g", "c", {stream: ">"}, count=100)
        entries: list[tuple[bytes, Any]] = response[0][1] if response else []
        if not entries:
            break
        client.xack(stream, "g", *(entry_id for entry_id, _ in entries))
        consumed += len(entries)
    elapsed = time.perf_counter() - started
    client.delete(stream)
    return consumed / elapsed


def bus_throughput(bus: EventBus, n: int) -> float:
    fill(bus.client, bus.stream, n)
    consumer = bus.consumer("bench", "c")
    consumer.ensure_group()
    handled = 0
    stop = threading.Event()

    def handler(_event: object) -> None:
        nonlocal handled
        handled += 1
        if handled >= n:
            stop.set()

    started = time.perf_counter()
    consumer.process(handler, count=100, block_ms=0, stop=stop, max_batches=n // 10 + 10)
    elapsed = time.perf_counter() - started
    bus.client.delete(bus.stream)
    return handled / elapsed


def publish_rate(publish: Callable[[int], object], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        publish(i)
    return n / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="latency samples per side")
    parser.add_argument("--throughput-n", type=int, default=20_000, help="entries per drain")
    args = parser.parse_args(argv)
    if args.n < ROUNDS or args.throughput_n < 100:
        parser.error(f"--n must be at least {ROUNDS} and --throughput-n at least 100")
    per_round = max(1, args.n // ROUNDS)

    with tempfile.TemporaryDirectory(prefix="pitstop-bench-") as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        info = server.start()
        try:
            client = redis.Redis.from_url(info.url)
            bus = EventBus(client, stream="bench:events", maxlen=10_000, source="bench")
            raw_latency(client, WARMUP)
            bus_latency(bus, WARMUP)
            raw: list[float] = []
            ours: list[float] = []
            round_ratios: list[float] = []
            for _ in range(ROUNDS):
                raw_round = raw_latency(client, per_round)
                bus_round = bus_latency(bus, per_round)
                round_ratios.append(statistics.median(bus_round) / statistics.median(raw_round))
                raw += raw_round
                ours += bus_round
            publishes = min(args.throughput_n, 5000)
            raw_publish = publish_rate(
                lambda i: client.xadd("bench:raw-publish", {"i": i}, maxlen=10_000,
                                      approximate=True), publishes)
            bus_publish = publish_rate(lambda i: bus.publish("bench.publish", {"i": i}),
                                       publishes)
            raw_rate = statistics.median(raw_throughput(client, args.throughput_n)
                                         for _ in range(3))
            bus_rate = statistics.median(bus_throughput(bus, args.throughput_n)
                                         for _ in range(3))
            client.close()
        finally:
            server.stop()

    rows = [
        ("publish->receive p50 (us)", percentile(raw, 0.5) * 1e6, percentile(ours, 0.5) * 1e6),
        ("publish->receive p99 (us)", percentile(raw, 0.99) * 1e6, percentile(ours, 0.99) * 1e6),
        ("publish one at a time (calls/s)", raw_publish, bus_publish),
        ("group drain, batches of 100 (msg/s)", raw_rate, bus_rate),
    ]
    print(f"{len(raw)} latency samples per side, {args.throughput_n} entries per drain")
    print(f"{'measure':<38}{'raw':>12}{'bus':>12}{'bus/raw':>10}")
    for name, raw_value, bus_value in rows:
        print(f"{name:<38}{raw_value:>12,.0f}{bus_value:>12,.0f}{bus_value / raw_value:>10.2f}")
    print("(raw publish is a bare XADD; bus publish validates, XADDs and PUBLISHes.\n"
          " The bus drain decodes every event; the raw drain decodes nothing.)")
    # Paired per round, so a machine that speeds up or slows down mid-run does not skew it.
    ratio = statistics.median(round_ratios)
    overhead = (percentile(ours, 0.5) - percentile(raw, 0.5)) * 1e6
    verdict = "MET" if ratio <= GOAL_RATIO else "NOT MET"
    print(f"goal: bus p50 latency within {GOAL_RATIO}x of raw PUBLISH: {verdict} "
          f"(median of {ROUNDS} paired rounds {ratio:.2f}x; bus adds {overhead:.0f} us at p50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
