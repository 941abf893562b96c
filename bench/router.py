"""The router's costs, each against a baseline measured in the same run.

    python bench/router.py [N]

1. Matching: the candidates of one event among 10, 1,000 and 10,000 rules (literal, ``*`` and
   ``**`` patterns mixed) through the compiled index, vs a naive loop of ``fnmatch`` over every
   rule; every event's result is checked against a loop with pitstop's own pattern semantics.
   Goals at 10,000 rules: >= 300x faster than the naive loop and < 10 us per event.
2. Latency, emit -> first step started: an event whose rule launches a workstream whose first
   step is an ``emit`` (the step announces it started) vs raw Celery ``apply_async`` -> a task
   that publishes it started; real workers with the same settings (prefork, one process).
   Goals: p50 <= 2x, p99 <= 3x.
3. Throughput, emit -> a one-step ``emit`` workstream completed, vs raw Celery no-op tasks/s,
   in alternating rounds (raw, pitstop, raw, ...); the medians are compared.
   Goal: >= 50% of raw Celery.

Both workers run with the settings :data:`SETTINGS` names (printed), on one private
redis-server; the machine's load average is printed before and after, since a shared machine's
noise moves these figures by tens of percent: run it several times.
"""

from __future__ import annotations

import fnmatch
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from bench import _harness
from pitstop.bus.patterns import compile_pattern
from pitstop.triggers.config import TriggerConfig
from pitstop.triggers.rules import Rule

SETTINGS = ("prefork -c 1, --without-mingle --without-gossip, -l INFO, JSON, acks_late, "
            "reject_on_worker_lost, prefetch 1, no result stored, task events off, kombu transport "
            "workers.transport (bench/_raw_router.py)")
"""What both workers run with."""
WORDS = ["build", "test", "deploy", "lint", "phase", "tool", "git", "triage", "alert", "nightly"]
ENDS = ["completed", "failed", "started", "error", "succeeded"]


# --- 1. matching ----------------------------------------------------------------------------------

def _rules(count: int, rng: random.Random) -> list[Rule]:
    rules = []
    for i in range(count):
        word = rng.choice(WORDS)
        end = rng.choice(ENDS)
        kind = i % 3
        if kind == 0:
            pattern = f"{word}.svc{i}.{end}"
        elif kind == 1:
            pattern = f"{word}.*.svc{i % 97}.{end}"
        else:
            pattern = f"**.svc{i % 89}.{end}" if i % 2 else f"{word}.svc{i % 83}.**"
        rules.append(Rule(id=f"r{i}", workstream="WS", pattern=compile_pattern(pattern).text))
    return rules


def _events(count: int, rng: random.Random, n_rules: int) -> list[str]:
    events = []
    for _ in range(count):
        word, end = rng.choice(WORDS), rng.choice(ENDS)
        svc = f"svc{rng.randrange(max(n_rules, 100))}"
        events.append(rng.choice([f"{word}.{svc}.{end}", f"{word}.x.{svc}.{end}",
                                  f"{word}.{svc}.a.b.{end}", f"{word}.y.z.{end}"]))
    return events


def bench_matching(sizes: tuple[int, ...] = (10, 1_000, 10_000), events: int = 2000,
                   naive_events: int = 200) -> list[dict[str, Any]]:
    rng = random.Random(7)
    results = []
    for size in sizes:
        rules = _rules(size, rng)
        config = TriggerConfig(rules, version="bench")
        types = _events(events, rng, size)
        compiled = [(rule, compile_pattern(rule.pattern or "")) for rule in rules]
        for event_type in types[:naive_events]:  # every matching rule, and only those
            expected = {rule.id for rule, pattern in compiled if pattern.matches(event_type)}
            assert {rule.id for rule in config.candidates(event_type)} == expected, event_type
        for event_type in types[:50]:
            config.candidates(event_type)  # warm the automaton
        start = time.perf_counter()
        for event_type in types:
            config.candidates(event_type)
        indexed = (time.perf_counter() - start) / len(types)
        start = time.perf_counter()
        for event_type in types[:naive_events]:
            [rule for rule in rules if fnmatch.fnmatchcase(event_type, rule.pattern or "")]
        naive = (time.perf_counter() - start) / naive_events
        results.append({"rules": size, "index_us": indexed * 1e6, "naive_us": naive * 1e6,
                        "speedup": naive / indexed})
    return results


# --- 2 and 3: through real workers ----------------------------------------------------------------

LATENCY_WORKSTREAMS = {"WS-LAT": _harness.emit_workstream("bench.started", step="first",
                                                           data={"sent": "{{ params.sent }}"},
                                                           params={"sent": 0})}
LATENCY_TRIGGERS = [{"id": "lat", "event": "bench.go", "workstream": "WS-LAT",
                     "params": {"sent": "{{ event.data.sent }}"}}]


def bench_workers(n_latency: int = 60, n_throughput: int = 300, rounds: int = 3) -> dict[str, Any]:
    import redis

    from pitstop.bus.eventbus import EventBus

    with tempfile.TemporaryDirectory(prefix="pitstop-bench-router-") as tmp:
        home = Path(tmp)
        _harness.write_config(home, {**LATENCY_WORKSTREAMS, **_harness.THROUGHPUT_WORKSTREAMS},
                              [*LATENCY_TRIGGERS, *_harness.THROUGHPUT_TRIGGERS])
        with _harness.redis_server(home / "redis") as url, \
                _harness.Processes(_harness.project_env(home, url)) as workers:
            workers.start(_harness.pitstop_worker("-Q", "default", "-c", "1", "-l", "INFO"),
                          home / "pitstop.log")
            workers.start(_harness.celery_worker("bench._raw_router", "-Q", "bench-raw", "-c", "1",
                                                 "-l", "INFO", "--without-mingle",
                                                 "--without-gossip"),
                          home / "raw.log")
            os.environ["BENCH_REDIS_URL"] = url
            from bench._raw_router import app as raw_app

            client = redis.Redis.from_url(url)
            bus = EventBus(client)
            latency = _latency(bus, client, raw_app, n_latency)
            throughput = _harness.throughput_rounds(bus, client, raw_app, n_throughput, rounds)
    return {"latency": latency, "throughput": throughput}


def _latency(bus: Any, client: Any, raw_app: Any, n: int) -> dict[str, Any]:
    ours: list[float] = []
    raw: list[float] = []
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bench:raw-started")
    with bus.subscribe("bench.started") as started:
        for index in range(n + 5):
            sent = time.time()
            bus.publish("bench.go", {"sent": sent})
            event = started.get(timeout=30)
            if event is None:
                raise RuntimeError("no step started within 30 s: is the router running?")
            our_time = time.time() - sent
            sent = time.time()
            raw_app.send_task("bench.started", args=[sent], queue="bench-raw")
            message = None
            deadline = time.monotonic() + 30
            while message is None and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1.0)
            if message is None:
                raise RuntimeError("the raw task did not start within 30 s")
            raw_time = time.time() - sent
            if index >= 5:  # warm-up: imports, connections, the catalog
                ours.append(our_time)
                raw.append(raw_time)
    pubsub.close()
    return {"n": n,
            "ours_p50_ms": statistics.median(ours) * 1000,
            "ours_p99_ms": _harness.percentile(ours, .99) * 1000,
            "raw_p50_ms": statistics.median(raw) * 1000,
            "raw_p99_ms": _harness.percentile(raw, .99) * 1000}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    scale = int(args[0]) if args else 1
    ok = True
    print("matching: candidates of one event (compiled index vs a loop of fnmatch over every rule)")
    for row in bench_matching():
        print(f"  {row['rules']:>6} rules: index {row['index_us']:7.2f} us/event   naive "
              f"{row['naive_us']:9.1f} us/event   {row['speedup']:8.0f}x")
        if row["rules"] == 10_000:
            met = row["speedup"] >= 300 and row["index_us"] < 10
            ok &= met
            print(f"  goal at 10,000 rules: >= 300x and < 10 us: {'met' if met else 'NOT met'} "
                  "(every matching rule returned: checked)")
    print(f"\nworkers (pitstop and raw alike): {SETTINGS}; "
          f"load average before: {_harness.load_average()}")
    stats = bench_workers(60 * scale, 300 * scale)
    lat = stats["latency"]
    p50, p99 = lat["ours_p50_ms"] / lat["raw_p50_ms"], lat["ours_p99_ms"] / lat["raw_p99_ms"]
    print(f"\nlatency emit -> first step started, {lat['n']} events (vs raw apply_async -> task)")
    print(f"  pitstop  p50 {lat['ours_p50_ms']:7.2f} ms   p99 {lat['ours_p99_ms']:7.2f} ms")
    print(f"  raw      p50 {lat['raw_p50_ms']:7.2f} ms   p99 {lat['raw_p99_ms']:7.2f} ms")
    met = p50 <= 2 and p99 <= 3
    ok &= met
    print(f"  ratio p50 {p50:.2f}x (goal <= 2x), p99 {p99:.2f}x (goal <= 3x): "
          f"{'met' if met else 'NOT met'}")
    thr = stats["throughput"]
    share = thr["ours_per_s"] / thr["raw_per_s"]
    print(f"\nthroughput, {thr['rounds']} alternating rounds of {thr['n']} events -> one-step "
          f"emit workstreams completed ({thr['completed']} seen) vs raw no-op tasks")
    print("  rounds: pitstop " + " ".join(f"{rate:.0f}" for rate in thr["ours_rounds"])
          + "/s, raw " + " ".join(f"{rate:.0f}" for rate in thr["raw_rounds"]) + "/s")
    print(f"  median pitstop {thr['ours_per_s']:8.1f}/s   raw Celery {thr['raw_per_s']:8.1f}/s   "
          f"{share:.0%} (goal >= 50%): {'met' if share >= 0.5 else 'NOT met'}")
    ok &= share >= 0.5
    print(f"\nload average after: {_harness.load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
