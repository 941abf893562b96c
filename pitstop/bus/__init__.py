"""The event bus: the envelope, the pattern syntax, publish/subscribe/replay on a durable stream,
and consumer groups with reclaim and dead letters."""

from pitstop.bus.consumer import DeadLetter, Delivery, GroupConsumer
from pitstop.bus.eventbus import EventBus, Subscription
from pitstop.bus.events import Event, make_event
from pitstop.bus.patterns import Pattern, PatternIndex, compile_pattern, matches, normalize_type

__all__ = ["DeadLetter", "Delivery", "Event", "EventBus", "GroupConsumer", "Pattern", "PatternIndex",
           "Subscription", "compile_pattern", "make_event", "matches", "normalize_type"]
