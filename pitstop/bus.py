"""The event bus: a durable Redis stream for history and routing, plus pub/sub for live fan-out.

``publish`` appends the event to the stream (``MAXLEN ~`` trimmed) and publishes it on
``pitstop:ev:<type>`` in one round trip. Live watchers use :meth:`EventBus.subscribe`; history
comes from :meth:`EventBus.replay`; the router reads through a consumer group
(:class:`GroupConsumer`): at-least-once, stale entries reclaimed, poison entries dead-lettered.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import redis

from pitstop.constants import (
    DEAD_LETTER_STREAM,
    EVENT_CHANNEL_PREFIX,
    EVENT_DATA_MAX_BYTES,
    EVENT_MAX_HOPS,
    EVENT_STREAM,
    EVENT_STREAM_MAXLEN,
    ROUTER_GROUP,
)
from pitstop.errors import HopLimitExceeded, RedisUnavailable, ValidationError
from pitstop.events import (
    Event,
    check_source,
    compact_json,
    default_source,
    encode_data,
    make_event,
    utc_iso,
)
from pitstop.patterns import Pattern, compile_pattern, normalize_type
from pitstop.timeparse import parse_since

__all__ = [
    "EVENT_FIELD",
    "DeadLetter",
    "Delivery",
    "EventBus",
    "GroupConsumer",
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

EVENT_FIELD = "event"
"""The stream entry field holding the JSON envelope."""

_MAX_SEQ = 2**64 - 1
_REPLAY_PAGE = 500
_RECLAIM_BATCH = 100
_RECLAIM_EVERY_BATCHES = 16
_SUBSCRIBE_TIMEOUT = 5.0
_consumer_numbers = itertools.count(1)

Fields = dict[bytes | str, bytes | str]


class _Wire(Protocol):
    """The part of a redis-py connection that :meth:`EventBus.publish` drives directly."""

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def encode_event(event: Event) -> str:
    """The envelope as compact JSON, the same text as ``event.to_json()`` without a deep copy."""
    return event.to_json()


def pack_commands(*commands: tuple[str | int, ...]) -> bytes:
    """RESP-encode ``commands`` for one write (redis-py's packer costs more than the network)."""
    parts: list[bytes] = []
    for args in commands:
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def decode_entry(fields: Fields) -> Event:
    """The event stored in one stream entry; :class:`ValidationError` if it is not one."""
    raw = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
    if raw is None:
        raise ValidationError(f"stream entry has no {EVENT_FIELD!r} field")
    return decode_event(raw)


def decode_event(raw: bytes | str) -> Event:
    """``Event.from_json`` that also turns undecodable bytes and absurd nesting into
    :class:`ValidationError`, so one bad entry can never crash a consumer loop."""
    try:
        return Event.from_json(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValidationError(f"event is not valid JSON: {exc}") from exc


def redis_location(client: redis.Redis) -> str:
    """``host:port`` (or the socket path) of ``client``: never the password."""
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


def _entries_of(response: Any) -> list[tuple[str, Fields | None]]:
    """The entries of an XREADGROUP reply for one stream, in either RESP2 or RESP3 shape."""
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else (item[1] for item in response)
    entries: list[tuple[str, Fields | None]] = []
    for stream_entries in streams:
        for entry in stream_entries:
            entries.append((_text(entry[0]), entry[1] or None))
    return entries


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a group consumer; ``deliveries`` counts this delivery too."""

    stream_id: str
    event: Event
    deliveries: int


@dataclass(frozen=True)
class DeadLetter:
    """An entry a consumer group gave up on, as stored in the dead-letter stream."""

    id: str
    stream_id: str
    group: str
    consumer: str
    reason: str
    deliveries: int
    time: str
    raw: str

    @property
    def event(self) -> Event | None:
        """The original event, or None when the entry was malformed."""
        try:
            return decode_event(self.raw)
        except ValidationError:
            return None

    @classmethod
    def from_entry(cls, entry_id: str, fields: Fields) -> DeadLetter:
        values = {_text(key): _text(value) for key, value in fields.items()}
        try:
            deliveries = int(values.get("deliveries", "0"))
        except ValueError:
            deliveries = 0
        return cls(
            id=entry_id, stream_id=values.get("stream_id", ""), group=values.get("group", ""),
            consumer=values.get("consumer", ""), reason=values.get("reason", ""),
            deliveries=deliveries, time=values.get("time", ""), raw=values.get(EVENT_FIELD, ""),
        )


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
                    and self.pattern.matches(_text(message["channel"])[self._prefix_length:])):
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
               limit: int | None = None, reverse: bool = False) -> Iterator[Event]:
        """Events from the stream, oldest first (newest first with ``reverse``).

        ``since`` is a datetime, an ISO-8601 time or a duration such as ``10m``, ``2h`` or ``1d``
        before the bus clock; ``limit`` caps the number of matching events returned.
        """
        compiled = compile_pattern(pattern)
        if limit is not None and limit < 0:
            raise ValidationError(f"limit must not be negative, got {limit}")
        start = "-" if since is None else stream_id_at(parse_since(since, now=self.clock()))
        return self._replay(start, compiled, limit, reverse)

    def _replay(self, start: str, pattern: Pattern, limit: int | None,
                reverse: bool) -> Iterator[Event]:
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
                    log.debug("replay skips malformed entry %s: %s", _text(entry_id), exc)
                    continue
                if pattern.matches(event.type):
                    yield event
                    returned += 1
                    if limit is not None and returned >= limit:
                        return
            if not entries or len(entries) < page:
                return
            last = _text(entries[-1][0])
            if reverse:
                high = _previous_id(last)
            else:
                low = _next_id(last)

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
        return [DeadLetter.from_entry(_text(entry_id), fields or {})
                for entry_id, fields in entries or ()]


class GroupConsumer:
    """At-least-once reader of the event stream in a consumer group.

    An entry stays pending until acked. Entries idle longer than ``claim_idle_ms`` (a dead
    consumer's, or ones whose handler raised) are reclaimed and redelivered; an entry delivered
    more than ``max_deliveries`` times, or one that is not an event, goes to the dead-letter stream.
    """

    def __init__(self, bus: EventBus, group: str, name: str, *, max_deliveries: int,
                 claim_idle_ms: int) -> None:
        self.bus = bus
        self.group = group
        self.name = name
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self._client = bus.client
        self._stream = bus.stream
        self._group_ready = False
        # Where the next read of our own pending entries starts; None once they are all re-read.
        self._history_from: str | None = "0"

    def ensure_group(self) -> None:
        """Create the group at the start of the stream (so earlier events are delivered)."""
        try:
            self._client.xgroup_create(self._stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise unavailable(self._client, exc, f"create consumer group {self.group}") from exc
        except redis.RedisError as exc:
            raise unavailable(self._client, exc, f"create consumer group {self.group}") from exc
        self._group_ready = True

    def read(self, count: int = 100, block_ms: int = 1000) -> list[Delivery]:
        """Up to ``count`` entries: first our own still-pending ones (after a restart), then new."""
        if count < 1:
            raise ValidationError(f"count must be at least 1, got {count}")
        if not self._group_ready:
            self.ensure_group()
        while self._history_from is not None:
            entries = self._read_group(self._history_from, count, None)
            if not entries:
                self._history_from = None
                break
            self._history_from = entries[-1][0]
            counts = self._delivery_counts(entries[0][0], entries[-1][0], len(entries))
            accepted = self._accept([(sid, fields, counts.get(sid, 1))
                                     for sid, fields in entries])
            if accepted:
                return accepted
        # BLOCK 0 would mean "forever" to Redis.
        entries = self._read_group(">", count, block_ms if block_ms > 0 else None)
        return self._accept([(sid, fields, 1) for sid, fields in entries])

    def ack(self, *deliveries: Delivery) -> None:
        if not deliveries:
            return
        try:
            self._client.xack(self._stream, self.group, *(d.stream_id for d in deliveries))
        except redis.RedisError as exc:
            raise unavailable(self._client, exc, "acknowledge events") from exc

    def reclaim(self, count: int = _RECLAIM_BATCH) -> list[Delivery]:
        """Claim up to ``count`` entries idle longer than ``claim_idle_ms`` (any consumer's,
        ours included); dead-letter the exhausted ones instead of returning them.

        XPENDING IDLE + XCLAIM rather than XAUTOCLAIM: Redis 6.2's XAUTOCLAIM reports a trimmed
        entry as a bare nil without its id, which would leave it pending forever.
        """
        if not self._group_ready:
            self.ensure_group()
        try:
            stale = self._client.xpending_range(self._stream, self.group, "-", "+", count,
                                                idle=self.claim_idle_ms or None)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self.ensure_group()
                return []
            raise unavailable(self._client, exc, "list pending events") from exc
        except redis.RedisError as exc:
            raise unavailable(self._client, exc, "list pending events") from exc
        if not stale:
            return []
        pipe = self._client.pipeline(transaction=False)
        for entry in stale:
            # min-idle makes the claim a compare-and-set: two reclaimers never both win.
            pipe.xclaim(self._stream, self.group, self.name, self.claim_idle_ms,
                        [entry["message_id"]])
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(self._client, exc, "claim pending events") from exc
        items: list[tuple[str, Fields | None, int]] = []
        for entry, reply in zip(stale, replies, strict=True):
            if not reply:
                continue  # another consumer won it, or Redis 7 dropped a trimmed entry itself
            first = reply[0]
            fields = first[1] if isinstance(first, (tuple, list)) and first[0] is not None else None
            items.append((_text(entry["message_id"]), fields or None,
                          int(entry["times_delivered"]) + 1))
        return self._accept(items)

    def process(self, handler: Callable[[Event], None], *, count: int = 100,
                block_ms: int = 1000, stop: threading.Event | None = None,
                max_batches: int | None = None) -> int:
        """Reclaim, read, handle and ack in a loop until ``stop`` is set or ``max_batches`` ran.

        An event whose handler raises stays pending: it is retried after ``claim_idle_ms`` and
        dead-lettered after ``max_deliveries``. Returns the number of events handled.
        """
        handled = 0
        batches = 0
        caught_up = True
        since_reclaim = 0
        while ((stop is None or not stop.is_set())
               and (max_batches is None or batches < max_batches)):
            batches += 1
            batch: list[Delivery] = []
            # Under a backlog, reclaim only every few batches: it costs a round trip per batch.
            if caught_up or since_reclaim >= _RECLAIM_EVERY_BATCHES:
                batch = self.reclaim(count)
                since_reclaim = 0
            since_reclaim += 1
            wanted = count - len(batch)
            if wanted > 0:
                fresh = self.read(wanted, 0 if batch else block_ms)
                caught_up = len(fresh) < wanted
                batch += fresh
            done: list[Delivery] = []
            # Every entry of the batch has been pending (idle) since it was read. Past half the
            # claim window, leave the rest pending: another consumer (or this one, later)
            # claims each of them exactly once, instead of a slow batch being handled twice.
            give_up_at = time.monotonic() + self.claim_idle_ms / 2000
            try:
                for delivery in batch:
                    if self.claim_idle_ms and time.monotonic() > give_up_at:
                        log.info("batch ran past half of claim_idle_ms: leaving %d events for "
                                 "reclaim", len(batch) - len(done))
                        break
                    try:
                        handler(delivery.event)
                    except Exception:
                        log.exception("handler failed on %s %s (delivery %d of %d); left pending",
                                      delivery.event.type, delivery.stream_id,
                                      delivery.deliveries, self.max_deliveries)
                        continue
                    done.append(delivery)
            finally:
                # Even when interrupted mid-batch, what was handled is not redone.
                self.ack(*done)
            handled += len(done)
        return handled

    # --- internals -----------------------------------------------------------------------------
    def _read_group(self, stream_id: str, count: int,
                    block_ms: int | None) -> list[tuple[str, Fields | None]]:
        for attempt in (1, 2):
            try:
                response = self._client.xreadgroup(self.group, self.name, {self._stream: stream_id},
                                                   count=count, block=block_ms)
            except redis.ResponseError as exc:
                # The stream or group was deleted under us: recreate it once and retry.
                if "NOGROUP" in str(exc) and attempt == 1:
                    self.ensure_group()
                    continue
                raise unavailable(self._client, exc, "read events") from exc
            except redis.RedisError as exc:
                raise unavailable(self._client, exc, "read events") from exc
            return _entries_of(response)
        return []

    def _delivery_counts(self, first: str, last: str, count: int) -> dict[str, int]:
        try:
            pending = self._client.xpending_range(self._stream, self.group, first, last, count,
                                                  consumername=self.name)
        except redis.RedisError as exc:
            raise unavailable(self._client, exc, "list pending events") from exc
        return {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}

    def _accept(self, items: list[tuple[str, Fields | None, int]]) -> list[Delivery]:
        """Deliveries for the good entries; ack away trimmed ones, dead-letter the bad ones."""
        good: list[Delivery] = []
        gone: list[str] = []
        dead: list[tuple[str, Fields, int, str]] = []
        for stream_id, fields, deliveries in items:
            if not fields:
                # MAXLEN trimmed it while it was pending: it can never be handled now.
                gone.append(stream_id)
                continue
            try:
                event = decode_entry(fields)
            except ValidationError as exc:
                dead.append((stream_id, fields, deliveries, f"malformed entry: {exc}"))
                continue
            if deliveries > self.max_deliveries:
                dead.append((stream_id, fields, deliveries,
                             f"not acknowledged after {deliveries - 1} deliveries "
                             f"(max_deliveries={self.max_deliveries})"))
                continue
            good.append(Delivery(stream_id, event, deliveries))
        if gone or dead:
            self._settle(gone, dead)
        return good

    def _settle(self, gone: list[str], dead: list[tuple[str, Fields, int, str]]) -> None:
        now = utc_iso(self.bus.clock())
        # MULTI: a dead letter is written if and only if its entry is acked.
        pipe = self._client.pipeline(transaction=True)
        for stream_id in gone:
            pipe.xadd(self.bus.dead_letter_stream, {
                EVENT_FIELD: "", "group": self.group, "consumer": self.name,
                "reason": "trimmed from the stream (MAXLEN) before it was handled",
                "stream_id": stream_id, "deliveries": "0", "time": now,
            }, maxlen=self.bus.maxlen, approximate=True)
        if gone:
            log.warning("%d pending events of group %s were trimmed from the stream before "
                        "they were handled (raise the stream's MAXLEN?): %s", len(gone),
                        self.group, ", ".join(gone[:5]))
        for stream_id, fields, deliveries, reason in dead:
            raw = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
            text = _text(raw) if raw is not None else compact_json(
                {_text(key): _text(value) for key, value in fields.items()})
            pipe.xadd(self.bus.dead_letter_stream, {
                EVENT_FIELD: text, "group": self.group, "consumer": self.name, "reason": reason,
                "stream_id": stream_id, "deliveries": str(deliveries), "time": now,
            }, maxlen=self.bus.maxlen, approximate=True)
            log.warning("dead-lettered %s from group %s: %s", stream_id, self.group, reason)
        pipe.xack(self._stream, self.group, *gone, *(item[0] for item in dead))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(self._client, exc, "dead-letter events") from exc
