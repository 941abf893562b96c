"""Shared CLI plumbing: lazily loaded settings and Redis, output helpers."""

from __future__ import annotations

import json
import socket
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click
import redis

from pitstop import components
from pitstop.bus import EventBus
from pitstop.connection import connect, resolve_redis_url
from pitstop.redaction import Redactor
from pitstop.redis_server import ServerInfo
from pitstop.runs import RunStore
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
            self._redactor = components.new_redactor(self.settings)
        return self._redactor

    def redis(self, *, start_embedded: bool = True) -> redis.Redis:
        if self._redis is None:
            self._redis = connect(self.settings, start_embedded=start_embedded,
                                  on_start=self._announce_embedded)
        return self._redis

    def _announce_embedded(self, info: ServerInfo) -> None:
        click.echo(f"pitstop: started the embedded Redis (pid {info.pid}, data in "
                   f"{self.settings.redis_dir}); it keeps running until `pitstop redis stop`",
                   err=True)

    def celery_app(self) -> Celery:
        if self._celery is None:
            from workers.app import create_app

            self._celery = create_app(self.settings, resolve_redis_url(self.settings))
        return self._celery

    def bus(self) -> EventBus:
        return components.event_bus(self.redis(), self.settings,
                                    source=f"cli@{socket.gethostname()}")

    def state_log(self, name: str) -> StateLog:
        return components.state_log(name, self.settings, self.redactor)

    def run_store(self) -> RunStore:
        return components.run_store(self.redis(), self.settings, self.redactor)


pass_context = click.make_pass_decorator(Context)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str, sort_keys=False))
