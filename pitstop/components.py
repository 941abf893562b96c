"""The shared objects, built from :class:`Settings` in one place for the CLI and the workers."""

from __future__ import annotations

import redis

from pitstop.bus import EventBus
from pitstop.constants import LOG_RUNS
from pitstop.redaction import Redactor
from pitstop.runs import RunStore, redis_clock
from pitstop.settings import Settings
from pitstop.statelog import StateLog


def new_redactor(settings: Settings) -> Redactor:
    """A redactor knowing this process's secret environment values and ``secret_names``."""
    return Redactor.from_environ(extra_names=settings.secret_names)


def event_bus(client: redis.Redis, settings: Settings, *, source: str | None = None) -> EventBus:
    return EventBus(client, maxlen=settings.bus.stream_maxlen,
                    max_data_bytes=settings.bus.max_data_bytes, max_hops=settings.bus.max_hops,
                    source=source)


def state_log(name: str, settings: Settings, redactor: Redactor) -> StateLog:
    return StateLog(name, settings.state_dir, redactor=redactor)


def run_store(client: redis.Redis, settings: Settings, redactor: Redactor) -> RunStore:
    """Runs in Redis and ``runs.jsonl``, on the Redis server's clock (one clock for all hosts)."""
    return RunStore(client, state_log=state_log(LOG_RUNS, settings, redactor),
                    clock=redis_clock(client))
