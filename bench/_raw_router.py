"""The baseline for bench/router.py: a bare Celery app configured like pitstop's (JSON, acks_late,
reject on worker lost, prefetch 1, Redis broker, no result for these tasks, task events off, and
the same kombu transport pitstop's workers use, ``workers.transport``) whose tasks do the least a
step does: publish that it started, or count itself done."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from workers import transport

transport.install()  # pitstop's mended kombu transport: both sides pay the same broker costs

app = Celery("bench_router_raw", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True,
                task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                task_default_queue="bench-raw", task_ignore_result=True)
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


@app.task(name="bench.started")
def started(sent: float) -> None:
    """Say "started" the way an emit step does: one PUBLISH."""
    _redis().publish("bench:raw-started", f"{sent} {time.time()}")


@app.task(name="bench.noop")
def noop() -> None:
    _redis().incr("bench:raw-done")
