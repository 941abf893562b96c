"""The web view under load: each page's render time with 10,000 runs and 100,000 events stored,
and the live feed's throughput at 500 events a second.

    .venv/bin/python bench/web.py [--runs 10000] [--events 100000] [--rate 500] [--seconds 6]

A private redis-server is filled (events through the bus's own encoding, runs as the run store
writes them, trigger decisions, triage batches, alerts), then the web view is served by
uvicorn on 127.0.0.1 as ``pitstop serve`` serves it, and pages are fetched over HTTP with a
logged-in session (each 15 times after one warm-up; p50 and p95). Baseline, same run, same
server: ``GET /healthz`` (the HTTP stack and one Redis PING), so a page's ratio is what the
page itself costs. Goal: every page's p50 under 300 ms.

Live feed: a publisher paces ``--rate`` events a second for ``--seconds``; an SSE client reads
``/ui/events/live`` and a raw reader (``XREAD BLOCK`` on the stream, what the feed builds on)
reads alongside. Reported: events delivered, messages (the batching), latency publish -> browser
p50/p95 against the raw reader's. Goal: every event delivered, p95 latency under 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._harness import serve, web_project  # noqa: E402
from pitstop import components  # noqa: E402
from pitstop.alerts.model import Alert  # noqa: E402
from pitstop.alerts.store import AlertStore  # noqa: E402
from pitstop.bus.eventbus import EVENT_FIELD, encode_event  # noqa: E402
from pitstop.bus.events import make_event  # noqa: E402
from pitstop.kernel.constants import (  # noqa: E402
    EVENT_STREAM,
    LOG_TEST_TRIAGE,
    LOG_TRIGGER_EXECUTIONS,
    RUN_INDEX,
    RUN_KEY_PREFIX,
)
from pitstop.kernel.ids import new_id  # noqa: E402
from pitstop.kernel.statelog import StateLog  # noqa: E402
from pitstop.runs.store import Run  # noqa: E402
from pitstop.web import WebConfig, WebDeps, web_routes  # noqa: E402

GOAL_PAGE_MS = 300.0
GOAL_LIVE_P95 = 1.0
TOKEN = "bench-token-0123456789"  # noqa: S105 - a throw-away token of this run
TYPES = ["phase.1.completed", "phase.2.completed", "tool.invoked", "tool.succeeded",
         "tool.failed", "github.push", "git.push", "deploy.staging.succeeded",
         "workstream.ws-build.completed", "triage.completed"]
STATUSES = ["succeeded"] * 8 + ["failed", "running", "queued", "cancelled"]


def seed_events(client: redis.Redis, n: int) -> list[str]:
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(hours=6)
    ids = []
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        moment = start + timedelta(milliseconds=i * 200)
        event = make_event(rng.choice(TYPES), {"n": i, "branch": rng.choice(["main", "dev"]),
                                               "sha": f"{rng.getrandbits(40):010x}",
                                               "message": "build step finished " * 3},
                           source=f"ci-runner-{i % 17}", now=moment)
        ids.append(event.id)
        # Stored at the time it was made, as publish does (stream ids are Redis's clock).
        pipe.xadd(EVENT_STREAM, {EVENT_FIELD: encode_event(event)},
                  id=f"{int(moment.timestamp() * 1000)}-0")
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return ids


def seed_runs(client: redis.Redis, n: int) -> str:
    rng = random.Random(2)
    now = datetime.now(UTC)
    spec = {"id": "WS-BUILD", "stages": [
        [{"id": "checkout", "kind": "run"}],
        [{"id": "unit", "kind": "run"}, {"id": "lint", "kind": "run"},
         {"id": "types", "kind": "run"}],
        [{"id": "package", "kind": "run"}], [{"id": "announce", "kind": "emit"}]],
        "on_failure": [[{"id": "alert", "kind": "emit"}]]}
    workstream_id = ""
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        created = now - timedelta(seconds=(n - i) * 3)
        status = rng.choice(STATUSES)
        finished = created + timedelta(seconds=rng.uniform(1, 60))
        if i % 5 == 0:
            steps = {step["id"]: {"status": "succeeded", "attempt": 1, "queue": "linux",
                                  "started_at": created.isoformat(),
                                  "finished_at": finished.isoformat(), "host": "build-7"}
                     for stage in spec["stages"] for step in stage}
            run = Run(run_id=new_id(), kind="workstream", status=status, created_at=created,
                      updated_at=finished, started_at=created, finished_at=finished,
                      workstream_id="WS-BUILD", trace_id=new_id(), steps=steps,
                      orchestration={"spec": spec, "finalized": True})
            workstream_id = run.run_id
        else:
            run = Run(run_id=new_id(), kind="script", status=status, created_at=created,
                      updated_at=finished, started_at=created, finished_at=finished,
                      queue="linux", host=f"build-{i % 9}", attempts=1, exit_code=0,
                      params={"script": f"scripts/step_{i % 40}.sh", "args": ["--fast"]})
        pipe.set(RUN_KEY_PREFIX + run.run_id, run.model_dump_json())
        pipe.zadd(RUN_INDEX, {run.run_id: created.timestamp()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return workstream_id


def seed_state(state_dir: Path, event_ids: list[str]) -> None:
    decisions = StateLog(LOG_TRIGGER_EXECUTIONS, state_dir)
    rules = ["phase1_to_phase2", "schema_changed", "push_build", "nightly"]
    for i in range(5000):
        decisions.append({"decision": random.choice(["launched", "condition_false", "deduped"]),
                          "rule": rules[i % 4], "workstream": "WS-BUILD",
                          "config_version": "bench", "event_id": event_ids[-1 - i],
                          "event_type": "git.push", "run_id": new_id()})
    triage = StateLog(LOG_TEST_TRIAGE, state_dir)
    for batch in range(40):
        for i in range(50):
            triage.append({"kind": "result", "batch_id": f"b{batch}", "fingerprint": f"f{i % 12}",
                           "category": "assertion", "action": "investigate",
                           "auto_fixable": i % 3 == 0, "error": f"AssertionError: case {i % 12}",
                           "test_id": f"tests/test_x.py::test_{i}"})
        triage.append({"kind": "batch", "batch_id": f"b{batch}",
                       "summary": {"failures": 50, "groups": 12,
                                   "auto_fixable_share": random.random()}})


def seed_alerts(client: redis.Redis, n: int) -> None:
    store = AlertStore(client)
    now = float(client.time()[0])
    alerts = [Alert(id=new_id(), group_key=f"r:{i}", route_id="failures", receiver="ops",
                    group={"subject": f"build {i} broke"}, labels={"type": "build.failed"},
                    severity=random.choice(["error", "critical", "warning"]), source="ci",
                    created_at=now - i * 600, first_event_at=now - i * 600 - 30,
                    last_event_at=now - i * 600, count=3) for i in range(n)]
    assert store.acquire("bench", 60)
    store.commit("bench", changed=alerts, closed={}, storm={}, outbox=[], seen=[], now=now,
                 requeue_after=60)


def timed(http: httpx.Client, path: str, repeat: int) -> list[float]:
    http.get(path).raise_for_status()  # warm-up (compiles templates, fills caches)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        reply = http.get(path)
        samples.append(time.perf_counter() - started)
        if reply.status_code != 200:
            raise SystemExit(f"{path}: {reply.status_code} {reply.text[:300]}")
    return samples


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def live_feed(base: str, cookies: httpx.Cookies, client: redis.Redis, bus: Any, rate: float,
              seconds: float) -> dict[str, Any]:
    total = int(rate * seconds)
    web_latency: list[float] = []
    raw_latency: list[float] = []
    messages = [0]
    after = bus.last_stream_id()
    ready = threading.Event()

    def read_sse() -> None:
        with httpx.Client(base_url=base, cookies=cookies, timeout=30) as http, \
                http.stream("GET", f"/ui/events/live?pattern=bench.live&after={after}") as reply:
            ready.set()
            kind = ""
            for line in reply.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "events":
                    arrived = time.time()
                    messages[0] += 1
                    for event in json.loads(line[6:]):
                        web_latency.append(arrived - json.loads(event["data"])["t"])
                    if len(web_latency) >= total:
                        return

    def read_raw() -> None:
        last = after
        raw = redis.Redis(connection_pool=client.connection_pool)
        while len(raw_latency) < total:
            reply = raw.xread({EVENT_STREAM: last}, count=500, block=1000)
            arrived = time.time()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    envelope = json.loads(fields[EVENT_FIELD.encode()])
                    raw_latency.append(arrived - envelope["data"]["t"])

    readers = [threading.Thread(target=read_sse, daemon=True),
               threading.Thread(target=read_raw, daemon=True)]
    for reader in readers:
        reader.start()
    ready.wait(10)
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        bus.publish("bench.live", {"i": i, "t": time.time()})
    took = time.perf_counter() - started
    for reader in readers:
        reader.join(seconds + 15)
    return {"sent": total, "rate": total / took, "web": web_latency, "raw": raw_latency,
            "messages": messages[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    with web_project(TOKEN) as (settings, client):
        bus = components.event_bus(client, settings)
        started = time.perf_counter()
        event_ids = seed_events(client, args.events)
        workstream_run = seed_runs(client, args.runs)
        seed_state(settings.state_dir, event_ids)
        seed_alerts(client, 200)
        print(f"seeded {client.xlen(EVENT_STREAM)} events, {client.zcard(RUN_INDEX)} runs, "
              f"5000 trigger decisions, 40 triage batches, 200 alerts in "
              f"{time.perf_counter() - started:.1f}s")

        deps = WebDeps(client=client, bus=bus, settings=settings, config=WebConfig(),
                       redactor=components.new_redactor(settings),
                       worker_probe=lambda: {"bench@host": ["default", "linux"]})

        def healthz(request: Any) -> PlainTextResponse:
            del request
            client.ping()
            return PlainTextResponse("ok")

        web, base = serve(Starlette(routes=[Route("/healthz", healthz), *web_routes(deps)]))
        with httpx.Client(base_url=base, timeout=30) as http:
            form = http.get("/ui/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', form)
            assert token is not None
            http.post("/ui/login", data={"csrf": token.group(1), "password": TOKEN})
            middle = event_ids[len(event_ids) // 2]
            pages = {
                "events (newest 100)": "/ui/events",
                "events since 1h": "/ui/events?since=1h",
                "events, rare pattern (30k scanned)": "/ui/events?pattern=nothing.**",
                "event + trace": f"/ui/events/{middle}",
                "runs": "/ui/runs",
                "runs status=failed": "/ui/runs?status=failed",
                "runs page 100": "/ui/runs?offset=5000",
                "workstream run graph": f"/ui/runs/{workstream_run}",
                "triggers (5000 decisions)": "/ui/triggers",
                "alerts (200)": "/ui/alerts",
                "triage": "/ui/triage",
                "fleet": "/ui/fleet",
            }
            baseline = timed(http, "/healthz", args.repeat * 2)
            base_p50 = p(baseline, 0.5)
            print(f"\nbaseline GET /healthz: p50 {base_p50 * 1000:.1f} ms")
            print(f"{'page':38} {'p50 ms':>8} {'p95 ms':>8} {'x healthz':>10}")
            worst = 0.0
            for name, path in pages.items():
                samples = timed(http, path, args.repeat)
                worst = max(worst, p(samples, 0.5))
                print(f"{name:38} {p(samples, 0.5) * 1000:8.1f} {p(samples, 0.95) * 1000:8.1f} "
                      f"{p(samples, 0.5) / base_p50:10.1f}")
            pages_ok = worst * 1000 < GOAL_PAGE_MS
            print(f"slowest page p50 {worst * 1000:.0f} ms (goal < {GOAL_PAGE_MS:.0f} ms): "
                  f"{'met' if pages_ok else 'NOT met'}")

            result = live_feed(base, http.cookies, client, bus, args.rate, args.seconds)
        web.should_exit = True
        got, raw = result["web"], result["raw"]
        print(f"\nlive feed: {result['sent']} events published at {result['rate']:.0f}/s")
        print(f"  raw XREAD reader:  {len(raw)} received, latency p50 "
              f"{statistics.median(raw) * 1000:.1f} ms, p95 {p(raw, 0.95) * 1000:.1f} ms")
        if got:
            print(f"  web feed (SSE):    {len(got)} received in {result['messages']} messages "
                  f"({len(got) / max(1, result['messages']):.0f} events/message), latency p50 "
                  f"{statistics.median(got) * 1000:.1f} ms, p95 {p(got, 0.95) * 1000:.1f} ms "
                  f"({statistics.median(got) / statistics.median(raw):.1f}x raw p50)")
        live_ok = len(got) == result["sent"] and bool(got) and p(got, 0.95) < GOAL_LIVE_P95
        print(f"  every event delivered, p95 < {GOAL_LIVE_P95:.0f} s: "
              f"{'met' if live_ok else 'NOT met'}")
        print("verdict:", "goal met" if pages_ok and live_ok else "goal NOT met")


if __name__ == "__main__":
    main()
