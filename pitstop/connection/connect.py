"""Where Redis is: ``PITSTOP_REDIS_URL`` when set, else the embedded server under ``.state/redis``.

The URL may name a Redis behind Sentinel (``sentinel://…``, see :mod:`pitstop.connection.sentinel`):
:func:`client_for_url` gives a client of its current primary, as every other URL's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis

from pitstop.connection.sentinel import SentinelURL, is_sentinel_url
from pitstop.connection.server import RedisServer
from pitstop.kernel.errors import RedisUnavailable
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import Settings


def describe_url(url: str) -> str:
    """``host:port/db`` of a Redis URL: safe to print (no credentials)."""
    if is_sentinel_url(url):
        return SentinelURL.parse(url).describe()
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def client_for_url(url: str, **kwargs: Any) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://`` or ``sentinel://``);
    ``kwargs`` as for :class:`redis.Redis`. Connects lazily."""
    if is_sentinel_url(url):
        return SentinelURL.parse(url).client(**kwargs)
    return redis.Redis.from_url(url, **kwargs)


def embedded_server(settings: Settings) -> RedisServer:
    return RedisServer(settings.redis_dir)


def resolve_redis_url(settings: Settings, *, start_embedded: bool = True,
                      on_start: Callable[[ServerInfo], None] | None = None) -> str:
    """The Redis URL to use; starts the embedded server (detached) when needed and allowed,
    and then tells ``on_start``. An embedded server that runs but does not answer (stopped,
    hung) is a :class:`RedisUnavailable` saying so: never a reason to start a second one."""
    if settings.redis.url is not None:
        return settings.redis.url.get_secret_value()
    server = embedded_server(settings)
    info = server.running_info()
    if info is None:
        if not start_embedded:
            raise RedisUnavailable(
                f"the embedded Redis under {settings.redis_dir} is not running: start it with "
                "`pitstop up` (or `pitstop redis start`), or set PITSTOP_REDIS_URL"
            )
        info = server.start(daemonize=True)
        if on_start is not None:
            on_start(info)
    server.ensure_answering(info)
    return info.url


def connect(settings: Settings, *, start_embedded: bool = True, check: bool = True,
            decode_responses: bool = False,
            on_start: Callable[[ServerInfo], None] | None = None) -> redis.Redis:
    """A client for the configured Redis; with ``check`` a failed PING raises RedisUnavailable."""
    url = resolve_redis_url(settings, start_embedded=start_embedded, on_start=on_start)
    client = client_for_url(url, decode_responses=decode_responses,
                            socket_connect_timeout=5, health_check_interval=30)
    if check:
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(f"Redis at {describe_url(url)} refused the password: {exc}") from None
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot reach Redis at {describe_url(url)}: {exc}") from None
    return client
