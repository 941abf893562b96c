"""Following the event stream live, by stream id: what ``pitstop watch`` prints.

A :class:`StreamTail` reads the durable stream after the last entry it has read (``XREAD
BLOCK``), rather than listening on pub/sub: an event published while it was not reading (Redis
restarting, a slow terminal) is still delivered, in order, once. A Redis outage is ridden out
with backoff for a bounded time (:class:`~pitstop.connection.outage.RedisOutage`); when entries
it had not read yet were trimmed meanwhile (``MAXLEN``, or a restart that lost the stream), it
says so. An entry that is not an event is skipped with a note, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event
from pitstop.bus.patterns import compile_pattern
from pitstop.bus.streamcodec import Fields, decode_entry
from pitstop.connection.outage import RedisOutage
from pitstop.kernel.errors import ValidationError

__all__ = ["StreamTail"]

_BATCH = 200
_EMPTY_STREAM = "0-0"


def _ignore(message: str) -> None:
    del message


class StreamTail:
    """The events matching ``pattern`` published after :meth:`start`, in stream order.

    ``notify`` gets one line of text for what a watcher should be told: Redis lost and back,
    entries trimmed before they were read, malformed entries skipped. ``patience`` is how long
    (seconds) Redis may stay unreachable before :meth:`poll` raises
    :class:`~pitstop.kernel.errors.RedisUnavailable`.
    """

    def __init__(self, bus: EventBus, pattern: str = "**", *, patience: float,
                 notify: Callable[[str], None] = _ignore, after: str | None = None) -> None:
        self.bus = bus
        self.pattern = compile_pattern(pattern)
        self.notify = notify
        self.last_id = after
        self._check_gap = False
        self.outage = RedisOutage(
            patience, what="lost Redis while watching events",
            on_down=lambda exc: notify(f"Redis unreachable, retrying… (for up to "
                                       f"{patience:g}s: {exc})"),
            on_up=self._reconnected)

    def start(self) -> str:
        """Fix the starting point at the newest entry now (one try: Redis must be there)."""
        if self.last_id is None:
            self.last_id = self.bus.last_stream_id()
        return self.last_id

    def poll(self, timeout: float) -> list[Event]:
        """The matching events after the last entry read, waiting up to ``timeout`` seconds
        for the next entry to arrive (0: no waiting)."""
        after = self.start()
        block_ms = max(1, int(timeout * 1000)) if timeout > 0 else None
        entries = self.outage.call(lambda: self.bus.read_after(after, count=_BATCH,
                                                               block_ms=block_ms))
        if self._check_gap or len(entries) == _BATCH:  # back from an outage, or lagging behind
            self._check_gap = False
            self.outage.call(lambda: self._report_trimmed(after))
        return self._events(entries)

    def _events(self, entries: list[tuple[str, Fields]]) -> list[Event]:
        found: list[Event] = []
        for stream_id, fields in entries:
            self.last_id = stream_id
            try:
                event = decode_entry(fields)
            except ValidationError as exc:
                self.notify(f"skipped stream entry {stream_id}: {exc}")
                continue
            if self.pattern.matches(event.type):
                found.append(event)
        return found

    def _reconnected(self) -> None:
        self._check_gap = True
        self.notify("Redis is back; reading the events published meanwhile")

    def _report_trimmed(self, after: str) -> None:
        # The stream drops its oldest entries first: if the last one read is still there,
        # nothing after it was dropped.
        if after != _EMPTY_STREAM and not self.bus.has_entry(after):
            self.notify(f"the stream no longer holds entry {after}, the last one read: events "
                        "published after it may have been trimmed (MAXLEN) or lost with Redis "
                        "before they could be read; `pitstop events` shows what is left")
