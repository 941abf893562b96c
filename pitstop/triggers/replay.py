"""What a config would have launched over past events, without launching anything.

Events are taken in order; conditions are evaluated as the router would, and dedupe keys,
throttles and debounces are simulated in memory on the events' own times (a burst "launches"
when the next event comes after its quiet period, or at the end). Rules disabled at run time
(``pitstop triggers disable``) are not consulted: this asks what the config says.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pitstop.bus.events import Event
from pitstop.kernel.constants import EVENT_MAX_HOPS
from pitstop.kernel.errors import ValidationError
from pitstop.triggers.config import TriggerConfig
from pitstop.triggers.decisions import Decision
from pitstop.triggers.rules import Rule
from pitstop.triggers.templates import render_value

__all__ = ["ReplayResult", "replay"]


def _seconds(event: Event) -> float:
    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@dataclass
class ReplayResult:
    decisions: list[Decision] = field(default_factory=list)
    events: int = 0

    def launched(self) -> list[Decision]:
        return [d for d in self.decisions if d.decision == "would_launch"]

    def counts(self) -> dict[str, dict[str, int]]:
        """rule -> decision -> count."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for decision in self.decisions:
            out[decision.rule][decision.decision] += 1
        return {rule: dict(kinds) for rule, kinds in out.items()}


@dataclass
class _Burst:
    event: Event
    count: int
    due: float


def replay(config: TriggerConfig, events: Iterable[Event], *,
           max_hops: int = EVENT_MAX_HOPS) -> ReplayResult:
    result = ReplayResult()
    dedupe: dict[tuple[str, str], float] = {}
    throttle: dict[tuple[str, str], deque[float]] = defaultdict(deque)
    bursts: dict[tuple[str, str], _Burst] = {}

    def decide(kind: str, rule: Rule, event: Event, reason: str = "") -> None:
        result.decisions.append(Decision(kind, rule.id, rule.workstream, config.version,
                                         event_id=event.id, event_type=event.type,
                                         trace_id=event.trace_id, hops=event.hops,
                                         reason=reason))

    def launch(rule: Rule, event: Event, at: float, note: str = "") -> None:
        if rule.throttle is not None:
            context = {"event": event.to_dict(), "trigger": {"id": rule.id}}
            key = (rule.id, rule.throttle.key.render_text(context) if rule.throttle.key else "")
            window = throttle[key]
            while window and window[0] <= at - rule.throttle.per:
                window.popleft()
            if len(window) >= rule.throttle.max:
                decide("throttled", rule, event, f"{rule.throttle.max} launches per "
                       f"{rule.throttle.per:g}s already")
                return
            window.append(at)
        decide("would_launch", rule, event, note)

    def flush(until: float | None) -> None:
        for key, burst in sorted(bursts.items(), key=lambda item: item[1].due):
            if until is None or burst.due <= until:
                del bursts[key]
                launch(config.rules[key[0]], burst.event, burst.due,
                       f"debounced burst of {burst.count}")

    for event in events:
        result.events += 1
        at = _seconds(event)
        flush(at)
        for rule in config.candidates(event.type):
            if event.hops >= max_hops:
                decide("hop_limit", rule, event, f"hop {event.hops}, limit {max_hops}")
                continue
            if not rule.enabled:
                decide("disabled", rule, event, "disabled in the config")
                continue
            context = {"event": event.to_dict(), "trigger": {"id": rule.id}}
            try:
                if rule.condition is not None:
                    why = rule.condition.failure(context["event"])
                    if why is not None:
                        decide("condition_false", rule, event, why)
                        continue
                render_value(rule.params, context)
                if rule.dedupe is not None:
                    key = (rule.id, rule.dedupe.key.render_text(context))
                    taken = dedupe.get(key)
                    if taken is not None and at - taken < rule.dedupe.window:
                        decide("deduped", rule, event, f"dedupe key {key[1]!r} taken")
                        continue
                    dedupe[key] = at
                if rule.debounce is not None:
                    name = rule.debounce.key.render_text(context) if rule.debounce.key else ""
                    previous = bursts.get((rule.id, name))
                    count = previous.count + 1 if previous else 1
                    bursts[(rule.id, name)] = _Burst(event, count, at + rule.debounce.window)
                    decide("debounced", rule, event, f"burst of {count}")
                    continue
            except ValidationError as exc:
                decide("failed", rule, event, str(exc))
                continue
            launch(rule, event, at)
    flush(None)
    return result
