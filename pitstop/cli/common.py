"""Shared CLI plumbing: lazily loaded settings and Redis, output helpers, the user running it."""

from __future__ import annotations

import getpass
import inspect
import json
import math
import re
import socket
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click
import redis

from pitstop import components
from pitstop.bus.eventbus import EventBus
from pitstop.connection.connect import connect, embedded_server, resolve_redis_url
from pitstop.kernel.errors import ExitCode, RedisUnavailable
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import Settings, load_settings
from pitstop.kernel.statelog import StateLog
from pitstop.runs.store import RunStore

if TYPE_CHECKING:
    from celery import Celery


_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_REST_ROLE = re.compile(r":(?:[a-z]+:)+`([^`]+)`")
_REST_LITERAL = re.compile(r"``([^`]+)``")


def _role_text(match: re.Match[str]) -> str:
    content = match.group(1)
    if "<" in content:  # :ref:`shown text <target>`
        return content.split("<", 1)[0].strip()
    if content.startswith("~"):  # :class:`~a.b.C` shows C
        return content[1:].rsplit(".", 1)[-1]
    return content


def plain_text(text: str) -> str:
    """Docstring markup as a terminal should show it: a role such as ``:class:`~a.B``` becomes
    ``B``, a literal in double backticks becomes the text in single quotes."""
    return _REST_LITERAL.sub(r"'\1'", _REST_ROLE.sub(_role_text, text))


def first_sentence(text: str) -> str:
    """The first sentence of a command's help (of its first paragraph, at most), whole."""
    paragraph = inspect.cleandoc(text).split("\n\n", 1)[0].replace("\b", "")
    flat = " ".join(paragraph.split())
    end = _SENTENCE_END.search(flat)
    return flat[:end.start()] if end else flat


def give_summaries(group: click.Group) -> None:
    """Make the help of every command under ``group`` plain text (:func:`plain_text`: help comes
    from docstrings) and give each command without a ``short_help`` its help's first sentence,
    so ``pitstop --help`` wraps a long summary instead of cutting it mid-sentence with "..."."""
    for command in group.commands.values():
        if command.help:
            command.help = plain_text(command.help)
        if command.short_help:
            command.short_help = plain_text(command.short_help)
        elif command.help:
            command.short_help = first_sentence(command.help)
        for param in command.params:
            if isinstance(param, click.Option) and param.help:
                param.help = plain_text(param.help)
        if isinstance(command, click.Group):
            give_summaries(command)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that refuses ``nan`` and ``inf`` (click lets both through, and a
    timeout of either made commands fail with an internal error or wait forever)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number is not None and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


def fail(message: str, code: int = ExitCode.FAILURE) -> NoReturn:
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

    def redis(self, *, start_embedded: bool = False) -> redis.Redis:
        """A client for this project's Redis (one per command).

        The embedded server is started only with ``start_embedded``: commands that run or write
        things (``up``, ``serve``, ``run``, ``emit`` …) ask for it; read-only ones (``runs``,
        ``show``, ``events``, ``watch``, ``cancel``) never leave a server behind and, when none
        is running, fail with :class:`RedisUnavailable` (exit 3) saying so.
        """
        if self._redis is None:
            self._require_redis(start_embedded)
            self._redis = connect(self.settings, start_embedded=start_embedded,
                                  on_start=self._announce_embedded)
        return self._redis

    def _require_redis(self, start_embedded: bool) -> None:
        settings = self.settings
        if (start_embedded or settings.redis.url is not None
                or embedded_server(settings).running_info() is not None):
            return
        raise RedisUnavailable(
            f"pitstop is not running in {settings.project_dir} (no embedded Redis): start it "
            "with `pitstop up`, or set PITSTOP_REDIS_URL")

    def _announce_embedded(self, info: ServerInfo) -> None:
        click.echo(f"pitstop: started the embedded Redis (pid {info.pid}, data in "
                   f"{self.settings.redis_dir}); it keeps running until `pitstop redis stop`",
                   err=True)

    def celery_app(self, *, start_embedded: bool = False) -> Celery:
        """The Celery app on this project's Redis (``start_embedded`` as for :meth:`redis`)."""
        if self._celery is None:
            from workers.app import create_app

            self._require_redis(start_embedded)
            url = resolve_redis_url(self.settings, start_embedded=start_embedded,
                                    on_start=self._announce_embedded)
            self._celery = create_app(self.settings, url)
        return self._celery

    def bus(self, *, start_embedded: bool = False) -> EventBus:
        return components.event_bus(self.redis(start_embedded=start_embedded), self.settings,
                                    source=f"cli@{socket.gethostname()}")

    def state_log(self, name: str) -> StateLog:
        return components.state_log(name, self.settings, self.redactor)

    def run_store(self, *, start_embedded: bool = False) -> RunStore:
        return components.run_store(self.redis(start_embedded=start_embedded), self.settings,
                                    self.redactor)


pass_context = click.make_pass_decorator(Context)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str, sort_keys=False))


def whoami() -> str:
    """``user@host`` of whoever runs the command, as acks, silences and reviews record them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
