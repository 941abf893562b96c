"""``GET /metrics`` of ``pitstop serve``: Prometheus metrics computed from Redis at scrape time.

Nothing is counted in the serving process: every figure is read from what the fleet keeps in
Redis when Prometheus scrapes, so any number of ``serve`` processes report the same fleet, and a
restart loses nothing. Behind the API token (``Authorization: Bearer $PITSTOP_API_TOKEN``):
worker, queue and environment names are not for everyone. A scrape is cached for
``cache_seconds`` (several Prometheus servers scraping do not multiply the work).

Families (``pitstop_`` prefix):

- ``events_stream_length``; per consumer group (``router``: the events routed; ``alerts``):
  ``consumer_group_entries_read_total`` (Redis 7 only: ``entries-read``), ``consumer_group_lag``
  (undelivered entries; counted up to 10,000 on Redis 6), ``consumer_group_pending``,
  ``consumer_group_consumers``, ``consumer_group_oldest_undelivered_seconds``;
- ``queue_depth{queue}``: messages waiting in each Celery queue (every priority list);
- ``runs{kind,status}`` and ``run_duration_seconds{kind,status}`` (a histogram): the runs
  created in the last ``window`` (24 h) — workstream runs and script runs, by outcome;
- ``alert_deliveries{channel,state}``: notifications in the delivery ledger (kept 30 days);
- ``deployments{env,status}``, ``deploy_environment_info{env,current,previous,status}``,
  ``deploy_last_finished_timestamp_seconds{env}``.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop.bus.streamcodec import text_of
from pitstop.kernel.constants import (
    ALERT_DELIVERY_PREFIX,
    DEPLOY_ENV_PREFIX,
    DEPLOY_HISTORY_PREFIX,
    DEPLOY_RECORD_PREFIX,
    EVENT_STREAM,
    RUN_INDEX,
    RUN_KEY_PREFIX,
)

__all__ = ["FleetCollector", "metrics_routes"]

DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
LAG_COUNT_CAP = 10_000
RUNS_CAP = 20_000
"""Runs looked at per scrape at most (the newest of the window)."""
DEPLOYMENTS_PER_ENV = 500
_PRIORITY_SEP = "\x06\x16"
"""kombu's Redis transport keeps a queue's priorities in lists ``<queue>\\x06\\x16<priority>``."""
_BINDING_PREFIX = "_kombu.binding."


class FleetCollector:
    """A prometheus-client collector reading the fleet's state from Redis."""

    def __init__(self, client: redis.Redis, *, window: float = 24 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.window = window
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time; nothing to register up front

    def collect(self) -> Iterator[Metric]:
        yield from self._events()
        yield from self._queues()
        yield from self._runs()
        yield from self._alerts()
        yield from self._deployments()

    # --- events and consumer groups -----------------------------------------------------------
    def _events(self) -> Iterator[Metric]:
        length = GaugeMetricFamily("pitstop_events_stream_length",
                                   "Events kept in the durable stream (MAXLEN-trimmed).")
        length.add_metric([], float(self.client.xlen(EVENT_STREAM)))
        yield length
        read = CounterMetricFamily("pitstop_consumer_group_entries_read",
                                   "Events the group has read: for group router, the events "
                                   "routed (Redis 7 and later).", labels=["group"])
        lag = GaugeMetricFamily("pitstop_consumer_group_lag",
                                "Events not yet delivered to the group.", labels=["group"])
        pending = GaugeMetricFamily("pitstop_consumer_group_pending",
                                    "Events delivered and not yet acknowledged.",
                                    labels=["group"])
        consumers = GaugeMetricFamily("pitstop_consumer_group_consumers",
                                      "Consumers in the group.", labels=["group"])
        oldest = GaugeMetricFamily("pitstop_consumer_group_oldest_undelivered_seconds",
                                   "Age of the oldest event not yet delivered (0: none).",
                                   labels=["group"])
        try:
            groups = self.client.xinfo_groups(EVENT_STREAM)
        except redis.ResponseError:  # no stream yet
            groups = []
        now_ms = self._redis_ms()
        for info in groups:
            name = text_of(info.get("name"))
            if info.get("entries-read") is not None:
                read.add_metric([name], float(info["entries-read"]))
            waiting = self.client.xrange(EVENT_STREAM, min=f"({text_of(info['last-delivered-id'])}",
                                         max="+", count=LAG_COUNT_CAP)
            waiting = waiting or []
            behind = info.get("lag")
            lag.add_metric([name], float(behind if behind is not None else len(waiting)))
            pending.add_metric([name], float(info.get("pending") or 0))
            consumers.add_metric([name], float(info.get("consumers") or 0))
            age = (now_ms - int(text_of(waiting[0][0]).split("-")[0])) / 1000 if waiting else 0.0
            oldest.add_metric([name], max(0.0, age))
        yield from (read, lag, pending, consumers, oldest)

    def _redis_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # --- queues -------------------------------------------------------------------------------
    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("pitstop_queue_depth", "Task messages waiting in a Celery "
                                  "queue (all priorities).", labels=["queue"])
        queues = sorted({text_of(key)[len(_BINDING_PREFIX):] for key in
                         self.client.scan_iter(match=f"{_BINDING_PREFIX}*", count=1000)})
        for queue in queues:
            keys = [queue] + [f"{queue}{_PRIORITY_SEP}{step}" for step in (3, 6, 9)]
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
            depth.add_metric([queue], float(sum(pipe.execute())))
        yield depth

    # --- runs ---------------------------------------------------------------------------------
    def _runs(self) -> Iterator[Metric]:
        since = self.clock() - self.window
        ids = self.client.zrevrangebyscore(RUN_INDEX, "+inf", since, start=0, num=RUNS_CAP)
        counts: Counter[tuple[str, str]] = Counter()
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        for chunk in _chunks([f"{RUN_KEY_PREFIX}{text_of(i)}" for i in ids], 500):
            for raw in self.client.mget(chunk):
                run = _json(raw)
                if run is None:
                    continue
                key = (str(run.get("kind") or "script"), str(run.get("status") or "unknown"))
                counts[key] += 1
                seconds = _duration(run)
                if seconds is not None:
                    durations[key].append(seconds)
        runs = GaugeMetricFamily("pitstop_runs", f"Runs created in the last {self.window:g}s, "
                                 "by kind (workstream, script) and status.",
                                 labels=["kind", "status"])
        for (kind, status), count in sorted(counts.items()):
            runs.add_metric([kind, status], float(count))
        yield runs
        histogram = HistogramMetricFamily(
            "pitstop_run_duration_seconds", f"Durations of the runs created in the last "
            f"{self.window:g}s that have ended, by kind and outcome.", labels=["kind", "status"])
        for (kind, status), values in sorted(durations.items()):
            buckets = [(_le(bound), float(sum(1 for v in values if v <= bound)))
                       for bound in DURATION_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            histogram.add_metric([kind, status], buckets, sum_value=sum(values))
        yield histogram

    # --- alerts -------------------------------------------------------------------------------
    def _alerts(self) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily("pitstop_alert_deliveries", "Alert notifications in the "
                                       "delivery ledger, by channel and state (delivered, "
                                       "failed, pending …).", labels=["channel", "state"])
        counts: Counter[tuple[str, str]] = Counter()
        keys = [text_of(k) for k in self.client.scan_iter(match=f"{ALERT_DELIVERY_PREFIX}*",
                                                          count=1000)]
        for chunk in _chunks(keys, 500):
            pipe = self.client.pipeline(transaction=False)
            for key in chunk:
                pipe.hmget(key, "channel", "state")
            for channel, state in pipe.execute():
                if channel is not None:
                    counts[(text_of(channel), text_of(state or b"unknown"))] += 1
        for (channel, state), count in sorted(counts.items()):
            deliveries.add_metric([channel, state], float(count))
        yield deliveries

    # --- deployments --------------------------------------------------------------------------
    def _deployments(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("pitstop_deployments", "Deployments kept (180 days), by "
                                      "environment and outcome.", labels=["env", "status"])
        info = GaugeMetricFamily("pitstop_deploy_environment_info", "An environment's current "
                                 "and previous good versions (value 1).",
                                 labels=["env", "current", "previous", "status"])
        last = GaugeMetricFamily("pitstop_deploy_last_finished_timestamp_seconds",
                                 "When the last deployment to the environment finished.",
                                 labels=["env"])
        envs = sorted(text_of(k)[len(DEPLOY_HISTORY_PREFIX):] for k in
                      self.client.scan_iter(match=f"{DEPLOY_HISTORY_PREFIX}*", count=1000))
        for env in envs:
            ids = self.client.zrevrange(f"{DEPLOY_HISTORY_PREFIX}{env}", 0,
                                        DEPLOYMENTS_PER_ENV - 1)
            counts: Counter[str] = Counter()
            finished: list[float] = []
            for raw in self.client.mget([f"{DEPLOY_RECORD_PREFIX}{text_of(i)}" for i in ids]
                                        or ["-"]):
                record = _json(raw)
                if record is None:
                    continue
                counts[str(record.get("status"))] += 1
                stamp = _epoch(record.get("finished_at"))
                if stamp is not None:
                    finished.append(stamp)
            for status, count in sorted(counts.items()):
                by_status.add_metric([env, status], float(count))
            state = {text_of(k): text_of(v) for k, v in
                     (self.client.hgetall(f"{DEPLOY_ENV_PREFIX}{env}") or {}).items()}
            info.add_metric([env, state.get("current", ""), state.get("previous", ""),
                             state.get("status", "")], 1.0)
            if finished:
                last.add_metric([env], max(finished))
        yield from (by_status, info, last)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _json(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _duration(run: dict[str, Any]) -> float | None:
    started, ended = _epoch(run.get("started_at")), _epoch(run.get("finished_at"))
    if started is None or ended is None:
        return None
    return max(0.0, ended - started)


def _le(bound: float) -> str:
    return f"{bound:g}" if bound != int(bound) else f"{int(bound)}.0"


class _Scrape:
    def __init__(self, collector: FleetCollector, cache_seconds: float) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None

    def text(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            body = generate_latest(self.registry)
            self._cached = (now, body)
            return body


def metrics_routes(client: redis.Redis, api_token: str | None, *,
                   cache_seconds: float = 5.0) -> list[Route]:
    """``GET /metrics`` (Prometheus text format) behind the bearer ``api_token``; 503 when no
    token is configured, 401 without the right one."""
    scrape = _Scrape(FleetCollector(client), cache_seconds)
    token = api_token.encode() if api_token else None

    async def metrics(request: Request) -> Response:
        if token is None:
            return JSONResponse({"error": "metrics are off: set an API token "
                                 "(PITSTOP_API_TOKEN)"}, status_code=503)
        scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(),
                                                                 token):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            body = await run_in_threadpool(scrape.text)
        except (redis.RedisError, OSError) as exc:
            return JSONResponse({"error": f"Redis unavailable: {type(exc).__name__}"},
                                status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]
