"""The shared objects, built from :class:`Settings` in one place for the CLI and the workers."""

from __future__ import annotations

import redis

from pitstop.bus.consumer import GroupConsumer
from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import LOG_RUNS, ROUTER_GROUP
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog
from pitstop.runs.store import RunStore, redis_clock


def new_redactor(settings: Settings) -> Redactor:
    """A redactor knowing this process's secret environment values and ``secret_names``."""
    return Redactor.from_environ(extra_names=settings.secret_names)


class ConfiguredEventBus(EventBus):
    """An :class:`EventBus` whose consumers default to ``bus.max_deliveries`` and
    ``bus.claim_idle_ms`` from the settings (an explicit argument still wins)."""

    def __init__(self, client: redis.Redis, *, maxlen: int, max_data_bytes: int, max_hops: int,
                 max_deliveries: int, claim_idle_ms: int, source: str | None = None) -> None:
        super().__init__(client, maxlen=maxlen, max_data_bytes=max_data_bytes,
                         max_hops=max_hops, source=source)
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms

    def consumer(self, group: str = ROUTER_GROUP, name: str | None = None, *,
                 max_deliveries: int | None = None,
                 claim_idle_ms: int | None = None) -> GroupConsumer:
        return super().consumer(
            group, name,
            max_deliveries=self.max_deliveries if max_deliveries is None else max_deliveries,
            claim_idle_ms=self.claim_idle_ms if claim_idle_ms is None else claim_idle_ms)


def event_bus(client: redis.Redis, settings: Settings, *, source: str | None = None) -> EventBus:
    return ConfiguredEventBus(client, maxlen=settings.bus.stream_maxlen,
                              max_data_bytes=settings.bus.max_data_bytes,
                              max_hops=settings.bus.max_hops, source=source,
                              max_deliveries=settings.bus.max_deliveries,
                              claim_idle_ms=settings.bus.claim_idle_ms)


def state_log(name: str, settings: Settings, redactor: Redactor) -> StateLog:
    return StateLog(name, settings.state_dir, redactor=redactor)


def run_store(client: redis.Redis, settings: Settings, redactor: Redactor) -> RunStore:
    """Runs in Redis and ``runs.jsonl``, on the Redis server's clock (one clock for all hosts)."""
    return RunStore(client, state_log=state_log(LOG_RUNS, settings, redactor),
                    clock=redis_clock(client))
