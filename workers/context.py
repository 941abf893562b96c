"""Per-process resources for tasks: settings, Redis, bus, run store, state logs.

Built lazily on first use *in the process that uses them*, so prefork children never share a
socket opened by their parent.
"""

from __future__ import annotations

import os
from functools import lru_cache

import redis

from pitstop.bus import EventBus
from pitstop.connection import resolve_redis_url
from pitstop.constants import LOG_RUNS
from pitstop.redaction import Redactor
from pitstop.runs import RunStore, redis_clock
from pitstop.settings import Settings, load_settings
from pitstop.statelog import StateLog


@lru_cache(maxsize=1)
def _settings_for_pid(pid: int) -> Settings:
    return load_settings()


def settings() -> Settings:
    return _settings_for_pid(os.getpid())


@lru_cache(maxsize=1)
def _client_for_pid(pid: int) -> redis.Redis:
    return redis.Redis.from_url(resolve_redis_url(settings()), socket_connect_timeout=5,
                                health_check_interval=30)


def redis_client() -> redis.Redis:
    return _client_for_pid(os.getpid())


def new_redactor() -> Redactor:
    """A fresh redactor knowing this process's secret environment values."""
    return Redactor.from_environ(extra_names=settings().secret_names)


@lru_cache(maxsize=1)
def _redactor_for_pid(pid: int) -> Redactor:
    return new_redactor()


def redactor() -> Redactor:
    return _redactor_for_pid(os.getpid())


def state_log(name: str) -> StateLog:
    return StateLog(name, settings().state_dir, redactor=redactor())


def bus() -> EventBus:
    s = settings()
    return EventBus(redis_client(), maxlen=s.bus.stream_maxlen, max_data_bytes=s.bus.max_data_bytes,
                    max_hops=s.bus.max_hops)


def run_store() -> RunStore:
    client = redis_client()
    return RunStore(client, state_log=state_log(LOG_RUNS), clock=redis_clock(client))
