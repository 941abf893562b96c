"""The event bus: the envelope, the pattern syntax, publish/subscribe/replay on a durable stream,
consumer groups with reclaim and dead letters, and a live tail of the stream that rides out
outages."""

from pitstop.bus.consumer import DeadLetter, Delivery, GroupConsumer
from pitstop.bus.eventbus import EventBus, Subscription
from pitstop.bus.events import Event, make_event
from pitstop.bus.patterns import Pattern, PatternIndex, compile_pattern, matches, normalize_type
from pitstop.bus.tail import StreamTail

__all__ = ["DeadLetter", "Delivery", "Event", "EventBus", "GroupConsumer", "Pattern", "PatternIndex",
           "StreamTail", "Subscription", "compile_pattern", "make_event", "matches", "normalize_type"]
