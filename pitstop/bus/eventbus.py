"""The event bus: a durable Redis stream for history and routing, plus pub/sub for live fan-out.

``publish`` appends the event to the stream (``MAXLEN ~`` trimmed) and publishes it on
``pitstop:ev:<type>`` in one round trip. Live watchers use :meth:`EventBus.subscribe`; history
comes from :meth:`EventBus.replay`; the router reads through a consumer group
(:class:`pitstop.bus.consumer.GroupConsumer`): at-least-once, stale entries reclaimed, poison entries
dead-lettered.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import redis

from pitstop.bus.consumer import DeadLetter, GroupConsumer
from pitstop.bus.events import (
    Event,
    check_ids,
    check_source,
    default_source,
    encode_data,
    make_event,
)
from pitstop.bus.patterns import Pattern, compile_pattern, normalize_type
from pitstop.bus.streamcodec import (
    EVENT_FIELD,
    Fields,
    decode_entry,
    decode_event,
    encode_event,
    redis_location,
    text_of,
    unavailable,
)
from pitstop.kernel.constants import (
    DEAD_LETTER_STREAM,
    EVENT_CHANNEL_PREFIX,
    EVENT_DATA_MAX_BYTES,
    EVENT_MAX_HOPS,
    EVENT_STREAM,
    EVENT_STREAM_MAXLEN,
    ROUTER_GROUP,
)
from pitstop.kernel.errors import HopLimitExceeded, ValidationError
from pitstop.kernel.timeparse import parse_since

__all__ = [
    "EVENT_FIELD",
    "EventBus",
    "Subscription",
    "decode_entry",
    "decode_event",
    "encode_event",
    "pack_commands",
    "redis_location",
    "stream_id_at",
    "unavailable",
]

log = logging.getLogger(__name__)


_MAX_SEQ = 2**64 - 1
_REPLAY_PAGE = 500
_SUBSCRIBE_TIMEOUT = 5.0
_consumer_numbers = itertools.count(1)



class _Wire(Protocol):
    """The part of a redis-py connection that :meth:`EventBus.publish` drives directly."""

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def pack_commands(*commands: tuple[str | int, ...]) -> bytes:
    """RESP-encode ``commands`` for one write (redis-py's packer costs more than the network)."""
    parts: list[bytes] = []
    for args in commands:
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def stream_id_at(moment: datetime) -> str:
    """The first stream id at or after ``moment`` (stream ids are server milliseconds)."""
    return f"{max(0, int(moment.timestamp() * 1000))}-0"


def _next_id(stream_id: str) -> str:
    ms, seq = (int(part) for part in stream_id.split("-"))
    if seq < _MAX_SEQ:
        return f"{ms}-{seq + 1}"
    return f"{ms + 1}-0"


def _previous_id(stream_id: str) -> str | None:
    ms, seq = (int(part) for part in stream_id.split("-"))
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{_MAX_SEQ}"
    return None


class Subscription:
    """Live events matching a pattern, from the moment :meth:`EventBus.subscribe` returned."""

    def __init__(self, pubsub: redis.client.PubSub, pattern: Pattern, *, channel_prefix: str,
                 client: redis.Redis) -> None:
        self.pattern = pattern
        self._pubsub = pubsub
        self._prefix_length = len(channel_prefix)
        self._client = client
        self._closed = False

    def get(self, timeout: float | None = None) -> Event | None:
        """The next matching event; None after ``timeout`` seconds (None waits forever) or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = timeout
        while not self._closed:
            try:
                message = self._pubsub.get_message(timeout=remaining)  # type: ignore[arg-type]
            except Exception as exc:
                if self._closed:
                    return None
                if isinstance(exc, (redis.RedisError, OSError)):
                    raise unavailable(self._client, exc, "receive events") from exc
                raise
            # Redis globs let '*' cross dots, so the server-side filter is only a prefix.
            if (message is not None and message["type"] in ("pmessage", "message")
                    and self.pattern.matches(text_of(message["channel"])[self._prefix_length:])):
                try:
                    return decode_event(message["data"])
                except ValidationError as exc:
                    log.debug("ignoring a malformed live event: %s", exc)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
        return None

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get(None)
            if event is None:
                return
            yield event

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._pubsub.close()
        except (redis.RedisError, OSError) as exc:
            log.debug("closing a subscription: %s", exc)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """Publish, watch, replay and consume pitstop events on one Redis."""

    def __init__(self, client: redis.Redis, *, stream: str = EVENT_STREAM,
                 maxlen: int = EVENT_STREAM_MAXLEN, max_data_bytes: int = EVENT_DATA_MAX_BYTES,
                 max_hops: int = EVENT_MAX_HOPS, source: str | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if maxlen < 1:
            raise ValidationError(f"maxlen must be at least 1, got {maxlen}")
        self.client = client
        self.stream = stream
        # A private stream gets private channels and dead letters, so buses never cross-talk.
        self.channel_prefix = EVENT_CHANNEL_PREFIX if stream == EVENT_STREAM else f"{stream}:ev:"
        self.dead_letter_stream = DEAD_LETTER_STREAM if stream == EVENT_STREAM else f"{stream}:dead"
        self.maxlen = maxlen
        self.max_data_bytes = max_data_bytes
        self.max_hops = max_hops
        self.source = source or default_source()
        self.clock = clock or _utcnow

    # --- publishing ----------------------------------------------------------------------------
    def publish(self, event_type: str, data: dict[str, Any] | None = None, *,
                source: str | None = None, parent: Event | None = None,
                trace_id: str | None = None) -> Event:
        """Validate, append to the stream and fan out live; return the event.

        Raises :class:`InvalidEventType`, :class:`PayloadTooLarge`, :class:`HopLimitExceeded`
        (nothing is published) or :class:`RedisUnavailable`.
        """
        event = make_event(event_type, data, source=source or self.source, parent=parent,
                           trace_id=trace_id, now=self.clock(), max_data_bytes=self.max_data_bytes,
                           max_hops=self.max_hops)
        self._send(event)
        return event

    def publish_event(self, event: Event) -> Event:
        """Publish an already-built event after the same checks as :meth:`publish`."""
        normalized = normalize_type(event.type)
        check_source(event.source)
        check_ids(event)
        encode_data(event.data, max_bytes=self.max_data_bytes)
        if event.hops > self.max_hops:
            raise HopLimitExceeded(
                f"event {normalized!r} is hop {event.hops} of trace {event.trace_id}, over the "
                f"limit of {self.max_hops}: is a trigger re-firing itself?"
            )
        if event.hops < 0:
            raise ValidationError(f"event hops must not be negative, got {event.hops}")
        if normalized != event.type:
            event = replace(event, type=normalized)
        self._send(event)
        return event

    def _send(self, event: Event) -> None:
        # A hand-rolled non-transactional pipeline: the same bytes as client.pipeline(), without
        # its ~20 us of bookkeeping, which was most of the bus's latency overhead over raw PUBLISH.
        # XADD goes first: the event is durable before anyone can see it live (and Redis then
        # writes to the subscriber before it answers us).
        payload = encode_event(event)
        packed = [pack_commands(
            ("XADD", self.stream, "MAXLEN", "~", self.maxlen, "*", EVENT_FIELD, payload),
            ("PUBLISH", self.channel_prefix + event.type, payload),
        )]
        pool = self.client.connection_pool
        action = f"publish {event.type}"
        failure: Exception | None = None
        for _attempt in range(2):
            try:
                connection = pool.get_connection()
            except (redis.RedisError, OSError) as exc:
                raise unavailable(self.client, exc, action) from exc
            wire = cast(_Wire, connection)
            try:
                wire.send_packed_command(packed)
                wire.read_response()
                wire.read_response()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # A pooled connection can be stale (Redis restarted): retry once on a fresh one,
                # as redis-py's own retry would; a duplicate is possible, as with any retry.
                wire.disconnect()
                failure = exc
            except BaseException as exc:
                wire.disconnect()  # a reply may be left unread: never reuse it
                if isinstance(exc, redis.RedisError):
                    raise unavailable(self.client, exc, action) from exc
                raise
            finally:
                pool.release(connection)
        raise unavailable(self.client, failure or redis.ConnectionError(), action) from failure

    # --- live ----------------------------------------------------------------------------------
    def subscribe(self, pattern: str = "**") -> Subscription:
        """Live events matching ``pattern`` published after this returns."""
        compiled = compile_pattern(pattern)
        glob = self.channel_prefix + compiled.literal_prefix
        if not compiled.is_literal:
            glob += "*"
        pubsub = self.client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
        try:
            pubsub.psubscribe(glob)
            # Wait for the server's confirmation: only then are later events guaranteed to arrive.
            deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
            while True:
                message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "psubscribe":
                    break
                if time.monotonic() >= deadline:
                    raise redis.TimeoutError(f"no subscribe confirmation in {_SUBSCRIBE_TIMEOUT}s")
        except (redis.RedisError, OSError) as exc:
            pubsub.close()
            raise unavailable(self.client, exc, f"subscribe to {compiled.text}") from exc
        return Subscription(pubsub, compiled, channel_prefix=self.channel_prefix,
                            client=self.client)

    # --- history -------------------------------------------------------------------------------
    def replay(self, *, since: datetime | str | None = None, pattern: str = "**",
               limit: int | None = None, reverse: bool = False,
               on_skip: Callable[[str, ValidationError], None] | None = None) -> Iterator[Event]:
        """Events from the stream, oldest first (newest first with ``reverse``).

        ``since`` is a datetime, an ISO-8601 time or a duration such as ``10m``, ``2h`` or ``1d``
        before the bus clock; ``limit`` caps the number of matching events returned. An entry
        that is not an event is skipped; ``on_skip(stream_id, error)`` is told of it.
        """
        compiled = compile_pattern(pattern)
        if limit is not None and limit < 0:
            raise ValidationError(f"limit must not be negative, got {limit}")
        start = "-" if since is None else stream_id_at(parse_since(since, now=self.clock()))
        return self._replay(start, compiled, limit, reverse, on_skip)

    def _replay(self, start: str, pattern: Pattern, limit: int | None, reverse: bool,
                on_skip: Callable[[str, ValidationError], None] | None) -> Iterator[Event]:
        if limit == 0:
            return
        page = _REPLAY_PAGE
        if limit is not None and pattern.text == "**":
            page = min(limit, _REPLAY_PAGE)
        low: str | None = start
        high: str | None = "+"
        returned = 0
        while low is not None and high is not None:
            try:
                if reverse:
                    entries = self.client.xrevrange(self.stream, max=high, min=low, count=page)
                else:
                    entries = self.client.xrange(self.stream, min=low, max=high, count=page)
            except redis.RedisError as exc:
                raise unavailable(self.client, exc, "replay events") from exc
            for entry_id, fields in entries or ():
                try:
                    event = decode_entry(fields or {})
                except ValidationError as exc:
                    log.debug("replay skips malformed entry %s: %s", text_of(entry_id), exc)
                    if on_skip is not None:
                        on_skip(text_of(entry_id), exc)
                    continue
                if pattern.matches(event.type):
                    yield event
                    returned += 1
                    if limit is not None and returned >= limit:
                        return
            if not entries or len(entries) < page:
                return
            last = text_of(entries[-1][0])
            if reverse:
                high = _previous_id(last)
            else:
                low = _next_id(last)

    def last_stream_id(self) -> str:
        """The id of the newest entry in the stream (``0-0`` when it is empty): reading after
        it gives exactly the events published from now on."""
        try:
            entries = self.client.xrevrange(self.stream, count=1)
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read the stream") from exc
        return text_of(entries[0][0]) if entries else "0-0"

    def read_after(self, stream_id: str, *, count: int = 100,
                   block_ms: int | None = None) -> list[tuple[str, Fields]]:
        """Up to ``count`` raw entries with ids after ``stream_id``, oldest first; with
        ``block_ms`` wait that long for one to arrive. Decode them with
        :func:`~pitstop.bus.streamcodec.decode_entry`."""
        if count < 1:
            raise ValidationError(f"count must be at least 1, got {count}")
        try:
            response: Any = self.client.xread({self.stream: stream_id}, count=count,
                                              block=block_ms or None)  # BLOCK 0: forever
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read events") from exc
        if not response:
            return []
        streams = response.values() if isinstance(response, dict) else (
            item[1] for item in response)
        return [(text_of(entry[0]), entry[1] or {}) for entries in streams for entry in entries]

    def has_entry(self, stream_id: str) -> bool:
        """Whether the entry ``stream_id`` is still in the stream (not trimmed, not lost)."""
        try:
            return bool(self.client.xrange(self.stream, min=stream_id, max=stream_id, count=1))
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read the stream") from exc

    def stream_length(self) -> int:
        try:
            return int(self.client.xlen(self.stream))
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read the stream length") from exc

    # --- consumer groups -----------------------------------------------------------------------
    def consumer(self, group: str = ROUTER_GROUP, name: str | None = None, *,
                 max_deliveries: int = 5, claim_idle_ms: int = 60_000) -> GroupConsumer:
        """A member of consumer group ``group``.

        Give a stable ``name`` to resume this consumer's own pending entries after a restart;
        A handler run must take less than half of ``claim_idle_ms``, or live work gets
        reclaimed (a batch stops starting handlers at half the window; see :meth:`process`).
        """
        if max_deliveries < 1:
            raise ValidationError(f"max_deliveries must be at least 1, got {max_deliveries}")
        if claim_idle_ms < 0:
            raise ValidationError(f"claim_idle_ms must not be negative, got {claim_idle_ms}")
        if name is None:
            name = f"{socket.gethostname()}-{os.getpid()}-{next(_consumer_numbers)}"
        return GroupConsumer(self, group, name, max_deliveries=max_deliveries,
                             claim_idle_ms=claim_idle_ms)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent ``limit`` dead letters, newest first."""
        try:
            entries = self.client.xrevrange(self.dead_letter_stream, count=limit)
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read dead letters") from exc
        return [DeadLetter.from_entry(text_of(entry_id), fields or {})
                for entry_id, fields in entries or ()]
