"""Per-process resources for tasks: settings, Redis, bus, run store, state logs.

Built lazily on first use *in the process that uses them*, so prefork children never share a
socket opened by their parent.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

import redis

from pitstop import components
from pitstop.bus.eventbus import EventBus
from pitstop.connection.connect import connect
from pitstop.kernel.constants import LOG_CLI_EXECUTIONS
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings, load_settings
from pitstop.runs.output import RunOutput
from pitstop.runs.store import RunStore
from pitstop.scripts.runner import ScriptRunner


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


def script_runner() -> ScriptRunner:
    """The runner of ``run_script`` for this worker process."""
    config = settings()
    client = redis_client()
    return ScriptRunner(
        config, run_store(), RunOutput(client), bus=bus(), host=socket.gethostname(),
        pid=os.getpid(), new_redactor=new_redactor,
        state_log=lambda redactor: components.state_log(LOG_CLI_EXECUTIONS, config, redactor),
        sealer=config.sealer)
