"""Soak: pitstop under a steady load for a long while, watched for what grows.

    python bench/soak.py [--minutes 20] [--sample-every 10] [--workers 2] [--concurrency 2]
                         [--json FILE]

A private redis-server, ``--workers`` real ``pitstop worker -c C`` processes (router included)
and Beat. First the capacity is measured: bursts of events -> one-step ``emit`` workstreams
completed per second (median of three). Then events are published at half that rate for
``--minutes``, and every ``--sample-every`` seconds the soak records Redis ``used_memory``, the
key count by kind, the event stream's length, every Celery queue's length, the router's consumer
group lag and pending entries, and each worker's resident memory (main process and pool).

Judged after a warm-up (the first fifth of the run):

- **worker RSS** grows under 10%;
- **queues** do not grow without bound: the last third's mean length is not above the middle
  third's plus a small margin, and the backlog (published - completed) stays bounded;
- **keys that are not retained history** stay flat: the last third's mean count is not above
  the middle third's by more than 2% + 20 (they come and go with the runs in flight); run
  records, their launch keys and Celery results are kept on purpose (30 days and a day: ``RUN_TTL_SECONDS``,
  ``celery.result_expires``), so they, and Redis memory with them, grow with the runs: the soak
  reports their cost per 1,000 runs rather than calling that a leak;
- **the event stream** stays within its MAXLEN.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
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
from pitstop.bus.eventbus import EventBus  # noqa: E402
from pitstop.kernel.constants import EVENT_STREAM, ROUTER_GROUP  # noqa: E402

WORKSTREAMS = {"WS-SOAK": _harness.emit_workstream("soak.step")}
TRIGGERS = [{"id": "soak", "event": "soak.tick", "workstream": "WS-SOAK"}]
COMPLETED = "workstream.ws-soak.completed"
RETAINED = ("pitstop:run:", "celery-task-meta-", "pitstop:dedupe:ws-launch:", "pitstop:run-output")
"""Key kinds kept on purpose for a while (run history, results, launch keys)."""
QUEUES = ("default", "linux", "celery")


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the pool), KiB."""
    total = 0
    pids = [pid] + [int(p.name) for p in Path("/proc").iterdir()
                    if p.name.isdigit() and _ppid(p) == pid]
    for each in pids:
        try:
            for line in (Path("/proc") / str(each) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def _ppid(path: Path) -> int:
    try:
        return int((path / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def key_counts(client: redis.Redis) -> dict[str, int]:
    counts = {"retained": 0, "other": 0}
    for key in client.scan_iter(count=2000):
        name = key.decode(errors="replace")
        counts["retained" if name.startswith(RETAINED) else "other"] += 1
    return counts


def group_state(client: redis.Redis) -> dict[str, int]:
    try:
        groups = client.xinfo_groups(EVENT_STREAM)
    except redis.ResponseError:
        return {"pending": 0, "lag": 0}
    for group in groups:
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        if name == ROUTER_GROUP:
            return {"pending": int(group.get("pending") or 0), "lag": int(group.get("lag") or 0)}
    return {"pending": 0, "lag": 0}


class Load:
    """Publishes at ``rate`` per second and counts completions (its own subscription)."""

    def __init__(self, bus: EventBus, rate: float) -> None:
        self.bus, self.rate = bus, rate
        self.published = 0
        self.completed = 0
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._publish, daemon=True),
                         threading.Thread(target=self._count, daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        time.sleep(0.5)

    def _publish(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.bus.publish("soak.tick")
            self.published += 1
            next_at += 1 / self.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)

    def _count(self) -> None:
        with self.bus.subscribe(COMPLETED) as completed:
            while not self.stop.is_set() or self.completed < self.published:
                if completed.get(timeout=1) is not None:
                    self.completed += 1
                elif self.stop.is_set():
                    return


def capacity(bus: EventBus, n: int = 300) -> float:
    return statistics.median([_harness.workstream_round(bus, "soak.tick", COMPLETED, n)[0]
                              for _ in range(3)])


def sample(client: redis.Redis, load: Load, workers: list[subprocess.Popen[bytes]],
           started: float) -> dict[str, Any]:
    info = client.info("memory")
    return {"t": round(time.monotonic() - started, 1), "published": load.published,
            "completed": load.completed, "used_memory": int(info["used_memory"]),
            "keys": key_counts(client), "stream_len": int(client.xlen(EVENT_STREAM)),
            "queues": {name: int(client.llen(name)) for name in QUEUES},
            "router": group_state(client), "rss_kib": [rss_kib(w.pid) for w in workers]}


def judge(samples: list[dict[str, Any]], maxlen: int) -> dict[str, Any]:
    warm = [s for s in samples if s["t"] >= samples[-1]["t"] / 5] or samples
    first, last = warm[0], warm[-1]
    third = max(1, len(warm) // 3)
    middle, end = warm[third:2 * third] or warm, warm[-third:]

    def mean(rows: list[dict[str, Any]], value: Any) -> float:
        return statistics.mean(value(row) for row in rows)

    rss_growth = [(b - a) / a * 100 if a else 0.0
                  for a, b in zip(first["rss_kib"], last["rss_kib"], strict=True)]
    queue_len = lambda row: sum(row["queues"].values())  # noqa: E731
    backlog = lambda row: row["published"] - row["completed"]  # noqa: E731
    runs = max(1, last["completed"] - first["completed"])
    others = [row["keys"]["other"] for row in warm]
    verdict = {
        "worker_rss_growth_pct": [round(g, 1) for g in rss_growth],
        "worker_rss_ok": all(g < 10 for g in rss_growth),
        "queue_len_middle_mean": round(mean(middle, queue_len), 1),
        "queue_len_end_mean": round(mean(end, queue_len), 1),
        "queue_len_max": max(queue_len(row) for row in warm),
        "backlog_middle_mean": round(mean(middle, backlog), 1),
        "backlog_end_mean": round(mean(end, backlog), 1),
        "router_lag_max": max(row["router"]["lag"] for row in warm),
        "stream_len_max": max(row["stream_len"] for row in warm),
        "other_keys_min_max": [min(others), max(others)],
        "other_keys_middle_mean": round(statistics.mean(row["keys"]["other"] for row in middle)),
        "other_keys_end_mean": round(statistics.mean(row["keys"]["other"] for row in end)),
        "retained_keys_per_1000_runs": round((last["keys"]["retained"] - first["keys"]["retained"])
                                             / runs * 1000),
        "memory_growth_mib": round((last["used_memory"] - first["used_memory"]) / 2**20, 1),
        "memory_kib_per_1000_runs": round((last["used_memory"] - first["used_memory"])
                                          / runs * 1000 / 1024),
    }
    verdict["queues_bounded"] = (verdict["queue_len_end_mean"] <= verdict["queue_len_middle_mean"] + 20
                                 and verdict["backlog_end_mean"] <= verdict["backlog_middle_mean"] + 50)
    # Flat means no trend: these keys (in-flight runs' heartbeats, locks, claims) come and go
    # with the load, so one sample's dip or peak is not growth; the last third is judged
    # against the middle third, as the queues are.
    verdict["other_keys_flat"] = (verdict["other_keys_end_mean"]
                                  <= verdict["other_keys_middle_mean"] * 1.02 + 20)
    verdict["stream_bounded"] = verdict["stream_len_max"] <= maxlen * 1.1
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", help="write the samples and the verdict here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pitstop-soak-") as tmp:
        home = Path(tmp)
        _harness.write_config(home, WORKSTREAMS, TRIGGERS)
        with _harness.redis_server(home / "redis") as url:
            client = redis.Redis.from_url(url)
            try:
                with _harness.Processes(_harness.project_env(home, url)) as procs:
                    workers = [procs.start(_harness.pitstop_worker("-Q", "default",
                                                                   "-c", str(args.concurrency),
                                                                   "-n", f"soak{n}@%h"),
                                           home / f"worker{n}.log")
                               for n in range(args.workers)]
                    procs.start([sys.executable, "-m", "pitstop", "beat"], home / "beat.log",
                                ready=False)
                    bus = EventBus(client, source="soak")
                    cap = capacity(bus)
                    rate = cap / 2
                    print(f"capacity {cap:.1f} workstreams/s; soaking at {rate:.1f}/s for "
                          f"{args.minutes:g} min ({args.workers} workers -c {args.concurrency})",
                          flush=True)
                    load = Load(bus, rate)
                    load.start()
                    started = time.monotonic()
                    samples = []
                    while time.monotonic() - started < args.minutes * 60:
                        samples.append(sample(client, load, workers, started))
                        last = samples[-1]
                        print(f"  t={last['t']:>6}s published {last['published']:>7} completed "
                              f"{last['completed']:>7} mem {last['used_memory'] / 2**20:7.1f} MiB keys "
                              f"{last['keys']} queues {sum(last['queues'].values())} lag "
                              f"{last['router']['lag']} rss {last['rss_kib']}", flush=True)
                        time.sleep(args.sample_every)
                    load.stop.set()
                    samples.append(sample(client, load, workers, started))
                    verdict = judge(samples, 100_000)
            finally:
                client.close()
    result = {"command": "python bench/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "minutes": args.minutes, "capacity_per_s": round(cap, 1), "rate_per_s": round(rate, 1),
              "published": samples[-1]["published"], "completed": samples[-1]["completed"],
              **verdict, "samples": samples}
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    ok = verdict["worker_rss_ok"] and verdict["queues_bounded"] and verdict["other_keys_flat"] \
        and verdict["stream_bounded"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
