"""Per-process resources for tasks: settings, Redis, bus, run store, state logs.

Built lazily on first use *in the process that uses them*, so prefork children never share a
socket opened by their parent.
"""

from __future__ import annotations

import os
from functools import lru_cache

import redis

from pitstop import components
from pitstop.bus import EventBus
from pitstop.connection import connect
from pitstop.redaction import Redactor
from pitstop.runs import RunStore
from pitstop.settings import Settings, load_settings


@lru_cache(maxsize=1)
def _settings_for_pid(pid: int) -> Settings:
    return load_settings()


def settings() -> Settings:
    return _settings_for_pid(os.getpid())


@lru_cache(maxsize=1)
def _client_for_pid(pid: int) -> redis.Redis:
    return connect(settings(), check=False)


def redis_client() -> redis.Redis:
    return _client_for_pid(os.getpid())


def new_redactor() -> Redactor:
    """A fresh redactor: one per run, so a run's secrets do not accumulate in the worker."""
    return components.new_redactor(settings())


@lru_cache(maxsize=1)
def _redactor_for_pid(pid: int) -> Redactor:
    return new_redactor()


def bus() -> EventBus:
    return components.event_bus(redis_client(), settings())


def run_store() -> RunStore:
    return components.run_store(redis_client(), settings(), _redactor_for_pid(os.getpid()))
