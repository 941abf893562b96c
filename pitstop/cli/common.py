"""Shared CLI plumbing: lazily loaded settings and Redis, output helpers."""

from __future__ import annotations

import json
import socket
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click
import redis

from pitstop.bus import EventBus
from pitstop.connection import connect, embedded_server, resolve_redis_url
from pitstop.constants import LOG_RUNS
from pitstop.redaction import Redactor
from pitstop.runs import RunStore, redis_clock
from pitstop.settings import Settings, load_settings
from pitstop.statelog import StateLog

if TYPE_CHECKING:
    from celery import Celery


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"pitstop: error: {message}", err=True)
    sys.exit(code)


class Context:
    """What commands share; nothing is loaded until a command asks for it."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._redis: redis.Redis | None = None
        self._redactor: Redactor | None = None
        self._celery: Celery | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def redactor(self) -> Redactor:
        if self._redactor is None:
            self._redactor = Redactor.from_environ(extra_names=self.settings.secret_names)
        return self._redactor

    def redis(self, *, start_embedded: bool = True) -> redis.Redis:
        if self._redis is None and start_embedded and self.settings.redis.url is None:
            server = embedded_server(self.settings)
            if server.running_info() is None:
                info = server.start(daemonize=True)
                click.echo(f"pitstop: started the embedded Redis (pid {info.pid}, data in "
                           f"{self.settings.redis_dir}); it keeps running until "
                           "`pitstop redis stop`", err=True)
        if self._redis is None:
            self._redis = connect(self.settings, start_embedded=start_embedded)
        return self._redis

    def celery_app(self) -> Celery:
        if self._celery is None:
            from workers.app import create_app

            self._celery = create_app(self.settings, resolve_redis_url(self.settings))
        return self._celery

    def bus(self) -> EventBus:
        s = self.settings
        return EventBus(self.redis(), maxlen=s.bus.stream_maxlen,
                        max_data_bytes=s.bus.max_data_bytes, max_hops=s.bus.max_hops,
                        source=f"cli@{socket.gethostname()}")

    def state_log(self, name: str) -> StateLog:
        return StateLog(name, self.settings.state_dir, redactor=self.redactor)

    def run_store(self) -> RunStore:
        client = self.redis()
        return RunStore(client, state_log=self.state_log(LOG_RUNS), clock=redis_clock(client))


pass_context = click.make_pass_decorator(Context)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str, sort_keys=False))
