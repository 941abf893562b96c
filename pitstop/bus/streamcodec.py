"""Stream entries and Redis errors, shared by the bus and its consumer groups.

An event is stored in one stream entry, as its compact JSON envelope in the field
:data:`EVENT_FIELD`. Decoding never raises anything but :class:`ValidationError`, so one bad
entry cannot crash a consumer loop. :func:`unavailable` turns a redis-py error into a
:class:`RedisUnavailable` that names the server but never its password; :func:`redis_call` is
one command with that translation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from pitstop.bus.events import Event
from pitstop.kernel.errors import RedisUnavailable, ValidationError

__all__ = ["EVENT_FIELD", "Fields", "decode_entry", "decode_event", "encode_event",
           "redis_call", "redis_location", "text_of", "unavailable"]

EVENT_FIELD = "event"
"""The stream entry field holding the JSON envelope."""

Fields = dict[bytes | str, bytes | str]


def text_of(value: object) -> str:
    """A Redis reply value as text (bytes decoded as UTF-8, undecodable bytes replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def encode_event(event: Event) -> str:
    """The envelope as compact JSON, the same text as ``event.to_json()`` without a deep copy."""
    return event.to_json()


def decode_entry(fields: Fields) -> Event:
    """The event stored in one stream entry; :class:`ValidationError` if it is not one."""
    if not isinstance(fields, dict):
        raise ValidationError(f"stream entry is not a mapping of fields: {type(fields).__name__}")
    raw = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
    if raw is None:
        raise ValidationError(f"stream entry has no {EVENT_FIELD!r} field")
    return decode_event(raw)


def decode_event(raw: bytes | str) -> Event:
    """``Event.from_json``: the event in ``raw``, or :class:`ValidationError` saying why it is
    not one (never any other error), so one bad entry can never crash a consumer loop."""
    return Event.from_json(raw)


def redis_location(client: redis.Redis) -> str:
    """``host:port`` (or the socket path, or the Sentinel service) of ``client``: never the
    password."""
    service = getattr(client.connection_pool, "service_name", None)
    if service is not None:  # redis.sentinel.SentinelConnectionPool: wherever its primary is
        return f"the primary of sentinel service {service}"
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def unavailable(client: redis.Redis, exc: Exception, action: str) -> RedisUnavailable:
    """A :class:`RedisUnavailable` for ``exc`` that names the server but never its password."""
    detail = str(exc) or type(exc).__name__
    password = client.connection_pool.connection_kwargs.get("password")
    if password:
        detail = detail.replace(str(password), "***")
    where = redis_location(client)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return RedisUnavailable(f"cannot reach Redis at {where} to {action}: {detail}")
    return RedisUnavailable(f"Redis at {where} failed to {action}: {detail}")


def redis_call(client: redis.Redis, action: str, function: Callable[..., Any], *args: Any,
               **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, a command or script of ``client``: a redis-py error is
    raised as the :func:`unavailable` error saying it failed to ``action``."""
    try:
        return function(*args, **kwargs)
    except redis.RedisError as exc:
        raise unavailable(client, exc, action) from exc
