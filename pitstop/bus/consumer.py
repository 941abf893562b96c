"""Consumer groups on the event stream: at-least-once delivery, reclaim, dead letters.

A :class:`GroupConsumer` reads new entries for its group, reclaims entries another member left
pending longer than ``claim_idle_ms`` (it died, or its handler raised), and moves an entry
delivered more than ``max_deliveries`` times, or one that is not an event, to the dead-letter
stream. Get one from :meth:`pitstop.bus.eventbus.EventBus.consumer`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from pitstop.bus.events import Event
from pitstop.bus.streamcodec import (
    EVENT_FIELD,
    Fields,
    decode_entry,
    decode_event,
    text_of,
    unavailable,
)
from pitstop.kernel.errors import ValidationError
from pitstop.kernel.ids import compact_json, utc_iso

if TYPE_CHECKING:
    from pitstop.bus.eventbus import EventBus

__all__ = ["DeadLetter", "Delivery", "GroupConsumer"]

log = logging.getLogger(__name__)

_RECLAIM_BATCH = 100
_RECLAIM_EVERY_BATCHES = 16


def _entries_of(response: Any) -> list[tuple[str, Fields | None]]:
    """The entries of an XREADGROUP reply for one stream, in either RESP2 or RESP3 shape."""
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else (item[1] for item in response)
    entries: list[tuple[str, Fields | None]] = []
    for stream_entries in streams:
        for entry in stream_entries:
            entries.append((text_of(entry[0]), entry[1] or None))
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
        values = {text_of(key): text_of(value) for key, value in fields.items()}
        try:
            deliveries = int(values.get("deliveries", "0"))
        except ValueError:
            deliveries = 0
        return cls(
            id=entry_id, stream_id=values.get("stream_id", ""), group=values.get("group", ""),
            consumer=values.get("consumer", ""), reason=values.get("reason", ""),
            deliveries=deliveries, time=values.get("time", ""), raw=values.get(EVENT_FIELD, ""),
        )


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
        # An entry becomes claimable only after claim_idle_ms: looking more often than a quarter
        # of that (at most once a second) between reads is a round trip that finds nothing.
        self._reclaim_every = min(1.0, claim_idle_ms / 4000)
        self._next_reclaim = 0.0

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
            items.append((text_of(entry["message_id"]), fields or None,
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
            # Under a backlog, reclaim only every few batches: it costs a round trip per batch;
            # caught up, at most every quarter of claim_idle_ms (see __init__).
            now = time.monotonic()
            if ((caught_up and now >= self._next_reclaim)
                    or since_reclaim >= _RECLAIM_EVERY_BATCHES):
                batch = self.reclaim(count)
                since_reclaim = 0
                self._next_reclaim = now + self._reclaim_every
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
        return {text_of(p["message_id"]): int(p["times_delivered"]) for p in pending}

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
            text = text_of(raw) if raw is not None else compact_json(
                {text_of(key): text_of(value) for key, value in fields.items()})
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
