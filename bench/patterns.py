"""PatternIndex against a naive loop over the rules, measured in one run.

    python bench/patterns.py [--rules 10,1000,10000] [--events N] [--seed S]

Rules are a mix like triggers and alert routes: literal types, ``*`` patterns and ``**``
patterns. Events are drawn from types those rules are about plus types none names. For each rule
count it prints microseconds per event for

- the index, warm (the automaton already holds the types' steps: the steady state),
- the index, cold (a fresh index seeing each distinct type for the first time),
- a naive ``fnmatch.fnmatchcase`` loop over the rules (the yardstick; its ``*`` crosses dots, so
  it is not even right), and a loop of ``Pattern.matches`` (right, and slower),

and checks that the index returns exactly what the ``Pattern.matches`` loop returns, in order.
Goal: under 10 us per event at 10,000 rules, and at least 300x faster than the fnmatch loop.
"""

from __future__ import annotations

import argparse
import fnmatch
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pitstop.bus.patterns import Pattern, PatternIndex, compile_pattern

GOAL_US = 10.0
GOAL_RATIO = 300.0

STAGES = ["build", "test", "lint", "deploy", "package", "scan", "publish", "bench"]
OUTCOMES = ["started", "completed", "failed", "cancelled", "timed_out"]
ENVS = ["dev", "staging", "prod", "canary"]


def make_rules(count: int, rng: random.Random) -> list[str]:
    """About 60% literal, 25% with '*', 15% with '**'."""
    services = max(4, count // 20)
    rules: list[str] = []
    while len(rules) < count:
        svc = f"svc{rng.randrange(services)}"
        stage, outcome, env = rng.choice(STAGES), rng.choice(OUTCOMES), rng.choice(ENVS)
        roll = rng.random()
        if roll < 0.6:
            rules.append(rng.choice([f"{svc}.{stage}.{outcome}",
                                     f"deploy.{env}.{svc}.{outcome}",
                                     f"phase.{rng.randrange(50)}.{stage}.{outcome}"]))
        elif roll < 0.85:
            rules.append(rng.choice([f"{svc}.*.{outcome}", f"{svc}.{stage}.*",
                                     f"deploy.*.{svc}.{outcome}", f"phase.*.{stage}.{outcome}",
                                     f"*.{stage}.{outcome}"]))
        else:
            rules.append(rng.choice([f"**.{outcome}", f"{svc}.**", f"deploy.{env}.**",
                                     f"**.{stage}.**", f"{svc}.**.{outcome}",
                                     f"deploy.**.{outcome}", f"**.{svc}.**.{outcome}"]))
    return rules


def make_types(count: int, rng: random.Random, services: int) -> list[str]:
    types: list[str] = []
    for _ in range(count):
        svc = f"svc{rng.randrange(services + services // 4)}"  # some no rule names
        stage, outcome, env = rng.choice(STAGES), rng.choice(OUTCOMES), rng.choice(ENVS)
        types.append(rng.choice([f"{svc}.{stage}.{outcome}", f"deploy.{env}.{svc}.{outcome}",
                                 f"phase.{rng.randrange(60)}.{stage}.{outcome}",
                                 "github.push", f"tool.{outcome}",
                                 f"{svc}.{stage}.step{rng.randrange(9)}.{outcome}"]))
    return types


def per_event_us(call: Callable[[str], object], types: list[str]) -> float:
    started = time.perf_counter()
    for event_type in types:
        call(event_type)
    return (time.perf_counter() - started) / len(types) * 1e6


def measure(count: int, events: int, rng: random.Random) -> dict[str, float]:
    rules = make_rules(count, rng)
    compiled: list[tuple[Pattern, int]] = [(compile_pattern(r), n) for n, r in enumerate(rules)]
    started = time.perf_counter()
    index: PatternIndex[int] = PatternIndex(compiled)
    build_ms = (time.perf_counter() - started) * 1e3
    types = make_types(events, rng, max(4, count // 20))
    distinct = list(dict.fromkeys(types))

    def correct(event_type: str) -> list[int]:
        return [value for pattern, value in compiled if pattern.matches(event_type)]

    def naive(event_type: str) -> list[int]:
        return [value for value, rule in enumerate(rules) if fnmatch.fnmatchcase(event_type, rule)]

    cold = per_event_us(index.match, distinct)  # a fresh automaton: every type seen first here
    index.match(types[0])
    warm = min(per_event_us(index.match, types) for _ in range(3))
    sample = types[: max(50, min(len(types), 200_000 // count))]
    naive(sample[0])  # fnmatch compiles (and caches) each rule's regex once
    naive_us = per_event_us(naive, sample)
    correct_us = per_event_us(correct, sample)
    for event_type in distinct[:: max(1, len(distinct) // 500)]:
        if index.match(event_type) != correct(event_type):
            raise SystemExit(f"index disagrees with Pattern.matches on {event_type!r}")
    hits = sum(len(index.match(t)) for t in types) / len(types)
    return {"build_ms": build_ms, "warm": warm, "cold": cold, "naive": naive_us,
            "correct": correct_us, "hits": hits, "distinct": len(distinct)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="10,1000,10000")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"{'rules':>6} {'build ms':>9} {'warm us':>8} {'cold us':>8} {'fnmatch us':>11} "
          f"{'matches us':>11} {'x fnmatch':>10} {'x matches':>10} {'hits/ev':>8} {'types':>6}")
    verdict = 0
    for count in (int(part) for part in args.rules.split(",")):
        m = measure(count, args.events, rng)
        ratio = m["naive"] / m["warm"]
        print(f"{count:>6} {m['build_ms']:>9.1f} {m['warm']:>8.2f} {m['cold']:>8.2f} "
              f"{m['naive']:>11.1f} {m['correct']:>11.1f} {ratio:>9.0f}x "
              f"{m['correct'] / m['warm']:>9.0f}x {m['hits']:>8.1f} {m['distinct']:>6.0f}")
        if count >= 10_000 and (m["warm"] >= GOAL_US or ratio < GOAL_RATIO):
            verdict = 1
    print(f"goal at 10,000 rules: < {GOAL_US:g} us per event and >= {GOAL_RATIO:g}x the fnmatch "
          f"loop: {'met' if verdict == 0 else 'NOT met'}")
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
