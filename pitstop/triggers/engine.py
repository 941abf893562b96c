"""``TriggerEngine``: events (and schedule slots) in, workstream launches out.

For one event: the rules whose pattern matches come from one index walk; for each of them, in
order: the hop limit, enabled (file and Redis), conditions, dedupe key, debounce, throttle, then
``orchestrator.launch_workstream(..., launch_key=f"{event.id}:{rule.id}")`` so that a redelivered
event never launches twice for one (event, rule) pair. Every decision is returned and appended to
``trigger_executions.jsonl``.

    engine = TriggerEngine(bus, orchestrator)
    engine.register_trigger(rule_id="phase1_to_phase2", event_pattern="phase.1.completed",
                            workstream_id="WS-PHASE-2", conditions={"field": "data.ok",
                                                                    "equals": True})
    engine.handle(event)
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pitstop.bus.events import Event
from pitstop.kernel.constants import EVENT_MAX_HOPS, EVENT_SCHEDULE_FIRED
from pitstop.kernel.errors import PitstopError, RedisUnavailable, ValidationError
from pitstop.kernel.ids import utc_iso
from pitstop.triggers import schedules
from pitstop.triggers.config import TriggerConfig, rule_from_arguments
from pitstop.triggers.decisions import Decision, Launcher
from pitstop.triggers.limits import Limits
from pitstop.triggers.rules import Rule, compile_rule
from pitstop.triggers.state import TriggerState
from pitstop.triggers.templates import render_value
from pitstop.workstreams.records import synced_clock

if TYPE_CHECKING:
    from pitstop.bus.eventbus import EventBus
    from pitstop.kernel.statelog import StateLog

__all__ = ["DUPLICATE_STATUSES", "TriggerEngine"]

log = logging.getLogger(__name__)

DUPLICATE_STATUSES = frozenset({"duplicate", "deduped", "already_launched", "exists"})
SKIPPED_STATUSES = frozenset({"skipped", "refused", "rejected"})
FIRST_CURSOR_LOOKBACK = 10.0
"""A schedule seen for the first time fires slots at most this many seconds old."""


def _seconds(clock: Callable[[], datetime]) -> Callable[[], float]:
    return lambda: clock().timestamp()


def _event_context(event: Event, rule: Rule) -> dict[str, Any]:
    return {"event": event.to_dict(), "trigger": {"id": rule.id, "workstream": rule.workstream}}


class TriggerEngine:
    """Routes events to workstreams through trigger rules (see the module)."""

    def __init__(self, event_bus: EventBus, orchestrator: Launcher | None, *,
                 config: TriggerConfig | None = None, state_log: StateLog | None = None,
                 max_hops: int | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.bus = event_bus
        self.orchestrator = orchestrator
        self.limits = Limits(event_bus.client)
        self.state = TriggerState(event_bus.client)
        self.state_log = state_log
        self.max_hops = max_hops if max_hops is not None else getattr(event_bus, "max_hops",
                                                                      EVENT_MAX_HOPS)
        # Redis's clock, read every few seconds and carried on by this host's monotonic clock:
        # the router asks it every turn, and a TIME round trip each time showed in its latency.
        self._clock = clock or _seconds(synced_clock(event_bus.client))
        self._config = config if config is not None else TriggerConfig([], version="api")

    # --- the config in force --------------------------------------------------------------------
    @property
    def config(self) -> TriggerConfig:
        return self._config

    def load(self, config: TriggerConfig) -> None:
        """Swap in ``config`` (one assignment: a batch in flight keeps the one it started with)."""
        self._config = config

    def register_trigger(self, rule_id: str, event_pattern: str, workstream_id: str,
                         conditions: Any = None, **options: Any) -> Rule:
        """Add a rule at run time (the seed's API). ``options``: ``params``, ``debounce``,
        ``throttle``, ``dedupe``, ``enabled``, ``description`` as in triggers.yaml."""
        model = rule_from_arguments({"id": rule_id, "event": event_pattern,
                                     "workstream": workstream_id, "conditions": conditions,
                                     **options})
        current = self._config
        if rule_id in current.rules:
            raise ValidationError(f"a trigger rule {rule_id!r} is already registered")
        catalog = current.catalog
        if catalog is not None and workstream_id not in set(catalog.ids()):
            raise ValidationError(f"unknown workstream {workstream_id!r}")
        rule = compile_rule(model)
        self._config = TriggerConfig([*current.rules.values(), rule], version=current.version,
                                     source=current.source, catalog=catalog)
        return rule

    def enable(self, rule_id: str) -> None:
        """Enable ``rule_id`` fleet-wide (every router reads the flag from Redis)."""
        self._config.get(rule_id)
        self.state.set_enabled(rule_id, True, at=self._now_iso())

    def disable(self, rule_id: str, reason: str = "", *, by: str | None = None) -> None:
        """Disable ``rule_id`` fleet-wide until enabled again."""
        self._config.get(rule_id)
        self.state.set_enabled(rule_id, False, at=self._now_iso(), by=by, reason=reason)

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every rule with where it fires from and whether it is enabled now."""
        disabled = self.state.disabled()
        out = []
        for rule in self._config.rules.values():
            off = disabled.get(rule.id)
            out.append({
                "id": rule.id, "on": rule.on, "workstream": rule.workstream,
                "enabled": rule.enabled and off is None,
                "disabled_by": (off or {}).get("by") if off is not None else
                ("config" if not rule.enabled else None),
                "disabled_reason": (off or {}).get("reason") if off else None,
                "description": rule.description,
            })
        return out

    # --- routing --------------------------------------------------------------------------------
    def evaluate(self, event: Event) -> builtins.list[Decision]:
        """A dry run: what :meth:`handle` would decide now, changing nothing (no launch, no
        dedupe key, throttle place or debounce taken)."""
        return self._route(event, dry_run=True)

    def handle(self, event: Event) -> builtins.list[Decision]:
        """Route one event: launch what its rules say; log and return every decision.

        Raises :class:`RedisUnavailable` (the event stays pending and is redelivered: nothing
        is launched twice for it).
        """
        return self._route(event, dry_run=False)

    def _route(self, event: Event, *, dry_run: bool) -> builtins.list[Decision]:
        config = self._config
        candidates = config.candidates(event.type)
        if not candidates:
            return []
        disabled = self.state.disabled_among([rule.id for rule in candidates])
        decisions: builtins.list[Decision] = []
        now_ms: builtins.list[int] = []

        def clock_ms() -> int:
            if not now_ms:
                now_ms.append(int(self._clock() * 1000))
            return now_ms[0]

        for rule in candidates:
            decision = self._decide(rule, event, config, disabled, clock_ms, dry_run)
            decisions.append(decision)
            self._record(decision, dry_run)
        return decisions

    def _decision(self, rule: Rule, event: Event | None, config: TriggerConfig, kind: str,
                  reason: str = "", **extra: Any) -> Decision:
        return Decision(kind, rule.id, rule.workstream, config.version,
                        event_id=event.id if event else None,
                        event_type=event.type if event else None,
                        trace_id=event.trace_id if event else None,
                        hops=event.hops if event else None, reason=reason, **extra)

    def _decide(self, rule: Rule, event: Event, config: TriggerConfig, disabled: set[str],
                clock_ms: Callable[[], int], dry_run: bool) -> Decision:
        if event.hops >= self.max_hops:
            return self._decision(rule, event, config, "hop_limit",
                                  f"event is hop {event.hops} of trace {event.trace_id}; the "
                                  f"limit is {self.max_hops}: a trigger loop?")
        if not rule.enabled or rule.id in disabled:
            where = "in the config" if not rule.enabled else "at run time (pitstop triggers enable)"
            return self._decision(rule, event, config, "disabled", f"disabled {where}")
        context = _event_context(event, rule)
        try:
            if rule.condition is not None:
                why = rule.condition.failure(context["event"])
                if why is not None:
                    return self._decision(rule, event, config, "condition_false", why)
            params = render_value(rule.params, context)
            if rule.dedupe is not None:
                key = rule.dedupe.key.render_text(context)
                winner = (self.limits.peek_dedupe(rule.id, key) if dry_run else
                          self.limits.dedupe(rule.id, key, event.id, rule.dedupe.window))
                if winner is not None and winner != event.id:
                    return self._decision(rule, event, config, "deduped",
                                          f"dedupe key {key!r} was taken by event {winner}")
            if rule.debounce is not None:
                key = rule.debounce.key.render_text(context) if rule.debounce.key else ""
                if dry_run:
                    return self._decision(rule, event, config, "debounced",
                                          f"would launch {rule.debounce.window:g}s after the "
                                          "last event of its burst")
                count = self.limits.push_burst(rule.id, key, event, window_s=rule.debounce.window,
                                               now_ms=clock_ms())
                return self._decision(rule, event, config, "debounced",
                                      f"burst of {count}: launches {rule.debounce.window:g}s "
                                      "after its last event, with that event")
        except ValidationError as exc:  # a template naming a missing value
            return self._decision(rule, event, config, "failed", str(exc))
        return self._launch(rule, event, config, params, context, clock_ms, dry_run)

    def _launch(self, rule: Rule, event: Event, config: TriggerConfig, params: Any,
                context: dict[str, Any], clock_ms: Callable[[], int], dry_run: bool,
                note: str = "") -> Decision:
        if rule.throttle is not None:
            throttle = rule.throttle
            try:
                key = throttle.key.render_text(context) if throttle.key else ""
            except ValidationError as exc:
                return self._decision(rule, event, config, "failed", str(exc))
            if dry_run:
                allowed = self.limits.peek_throttle(rule.id, key, limit=throttle.max,
                                                    per_s=throttle.per, now_ms=clock_ms())
            else:
                allowed = self.limits.throttle(rule.id, key, event.id, limit=throttle.max,
                                               per_s=throttle.per, now_ms=clock_ms())
            if not allowed:
                return self._decision(rule, event, config, "throttled",
                                      f"{throttle.max} launches per {throttle.per:g}s already")
        if dry_run:
            return self._decision(rule, event, config, "would_launch", note)
        return self._call_orchestrator(rule, event, config, params or {}, f"{event.id}:{rule.id}",
                                       note)

    def _call_orchestrator(self, rule: Rule, event: Event | None, config: TriggerConfig,
                           params: dict[str, Any], launch_key: str, note: str = "",
                           slot: str | None = None) -> Decision:
        if self.orchestrator is None:
            return self._decision(rule, event, config, "failed", "no orchestrator to launch "
                                  "with", slot=slot)
        try:
            result = self.orchestrator.launch_workstream(
                rule.workstream, event=event, params=params, trigger_id=rule.id,
                launch_key=launch_key)
        except RedisUnavailable:
            raise
        except PitstopError as exc:
            return self._decision(rule, event, config, "failed", f"launch refused: {exc}",
                                  slot=slot)
        status = str(getattr(result, "status", "launched") or "launched")
        run_id = getattr(result, "run_id", None)
        reason = str(getattr(result, "reason", "") or "")
        kind = "launched"
        if status in DUPLICATE_STATUSES or reason.startswith("already launched"):
            kind, reason = "deduped", reason or f"already launched for this (event, rule): {status}"
        elif status in SKIPPED_STATUSES:
            kind = "skipped"
        return self._decision(rule, event, config, kind, "; ".join(x for x in (note, reason) if x),
                              run_id=run_id, status=status, slot=slot)

    # --- debounced bursts --------------------------------------------------------------------
    def next_due_ms(self) -> int | None:
        return self.limits.next_due_ms()

    def fire_due(self, now_ms: int | None = None) -> builtins.list[Decision]:
        """Launch the debounced bursts whose quiet period is over (each with its last event)."""
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        config = self._config
        decisions = []
        for burst in self.limits.claim_due(now):
            rule = config.rules.get(burst.rule_id)
            if rule is None or rule.debounce is None:
                self.limits.drop(burst.member)
                decision = Decision("dropped", burst.rule_id, "", config.version,
                                    event_id=burst.event.id, event_type=burst.event.type,
                                    reason="the rule is gone, or no longer debounced, since the "
                                    "burst began")
            else:
                # An exception (Redis gone) leaves the claim to expire: another router retries.
                decision = self._fire_burst(rule, burst.event, burst.count, config)
                self.limits.settle(burst)
            decisions.append(decision)
            self._record(decision, False)
        return decisions

    def _fire_burst(self, rule: Rule, event: Event, count: int, config: TriggerConfig) -> Decision:
        if not rule.enabled or rule.id in self.state.disabled_among([rule.id]):
            return self._decision(rule, event, config, "disabled",
                                  f"disabled when its burst of {count} came due")
        context = _event_context(event, rule)
        try:
            params = render_value(rule.params, context)
        except ValidationError as exc:
            return self._decision(rule, event, config, "failed", str(exc))
        return self._launch(rule, event, config, params, context,
                            lambda: int(self._clock() * 1000), False,
                            note=f"debounced burst of {count}")

    # --- schedules ----------------------------------------------------------------------------
    def fire_schedules(self, token: str, now: float | None = None) -> builtins.list[Decision]:
        """Fire the schedule slots due by ``now`` (Redis's clock): each slot at most once
        fleet-wide (``token`` fences it: a retry of the same task may go on with it)."""
        moment = self._clock() if now is None else now
        config = self._config
        decisions: builtins.list[Decision] = []
        for rule in config.schedule_rules():
            if rule.schedule is None:
                continue
            decisions.extend(self._fire_schedule(rule, rule.schedule, config, token, moment))
        for decision in decisions:
            self._record(decision, False)
        return decisions

    def _fire_schedule(self, rule: Rule, schedule: Any, config: TriggerConfig, token: str,
                       now: float) -> Iterable[Decision]:
        cursor = self.state.cursor(rule.id)
        if cursor is None:
            cursor = now - min(schedule.grace, FIRST_CURSOR_LOOKBACK)
        due = schedules.due_slots(schedule.spec, datetime.fromtimestamp(cursor, UTC),
                                  datetime.fromtimestamp(now, UTC), grace=schedule.grace,
                                  catch_up=schedule.catch_up)
        out: builtins.list[Decision] = []
        if due.missed_from is not None and due.missed_to is not None and \
                self.state.fence_slot(f"{rule.id}:missed", int(due.missed_to.timestamp()), token):
            what = "fired once for them" if due.caught_up else "skipped"
            out.append(self._decision(
                rule, None, config, "missed", f"slots from {utc_iso(due.missed_from)} to "
                f"{utc_iso(due.missed_to)} passed unfired (Beat down?): catch_up "
                f"{schedule.catch_up}, {what}", slot=utc_iso(due.missed_to)))
        off = not rule.enabled or rule.id in self.state.disabled_among([rule.id])
        for slot in due.fire:
            epoch = int(slot.timestamp())
            if not self.state.fence_slot(rule.id, epoch, token):
                continue  # fired by another Beat's tick, or a redelivered task
            if off:
                out.append(self._decision(rule, None, config, "disabled", "disabled",
                                          slot=utc_iso(slot)))
                continue
            out.append(self._fire_slot(rule, schedule, config, slot, due.caught_up == slot))
        self.state.advance_cursor(rule.id, now)
        return out

    def _fire_slot(self, rule: Rule, schedule: Any, config: TriggerConfig, slot: datetime,
                   catch_up: bool) -> Decision:
        slot_text = utc_iso(slot)
        zone = getattr(schedule.spec, "zone", None)
        data = {"trigger": rule.id, "workstream": rule.workstream, "slot": slot_text,
                "timezone": zone.key if zone is not None else "UTC", "catch_up": catch_up}
        event = self.bus.publish(EVENT_SCHEDULE_FIRED, data)
        context = {"schedule": data, "trigger": {"id": rule.id, "workstream": rule.workstream}}
        try:
            params = render_value(rule.params, context)
        except ValidationError as exc:
            return self._decision(rule, event, config, "failed", str(exc), slot=slot_text)
        return self._call_orchestrator(rule, event, config, params or {},
                                       f"schedule:{rule.id}:{int(slot.timestamp())}",
                                       "catch-up for missed slots" if catch_up else "",
                                       slot=slot_text)

    # --- internals ----------------------------------------------------------------------------
    def _now_iso(self) -> str:
        return utc_iso(datetime.now(UTC))

    def _record(self, decision: Decision, dry_run: bool) -> None:
        if dry_run or self.state_log is None:
            return
        try:
            self.state_log.append(decision.to_record())
        except OSError as exc:  # a full disk must not stop routing
            log.warning("cannot append to %s: %s", self.state_log.path, exc)
