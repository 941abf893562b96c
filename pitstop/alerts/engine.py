"""The alerting decisions, in memory and pure: which events alert, where they route, which group
they join, what is silenced, inhibited or throttled, what is due to be sent and what resolves.

:class:`AlertEngine` holds the open alerts; :class:`pitstop.alerts.manager.AlertManager` feeds it
events and ``now``, persists what changed and hands the outbox to the delivery tasks. The CLI's
``dry-run`` asks the same engine without applying anything.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pitstop.alerts.config import AlertsConfig, Route
from pitstop.alerts.labels import SEVERITY_RANK, event_labels, group_values
from pitstop.alerts.model import Alert, epoch_of, group_key, iso
from pitstop.alerts.timing import (
    escalation_due_at,
    next_flush_at,
    storm_admits,
    storm_reopens_at,
)
from pitstop.bus.events import Event
from pitstop.bus.patterns import PatternIndex, compile_pattern
from pitstop.kernel.ids import new_id

__all__ = ["AlertEngine", "Decision", "Outgoing", "Silence", "StormState"]

DIGEST_MAX_ALERTS = 20
ACKED_CLOSE_AFTER = 24 * 3600.0
QUIET_CLOSE_AFTER = 7 * 86400.0
_IGNORED_PREFIX = "alerting."


@dataclass(frozen=True)
class Silence:
    id: str
    pattern: str
    starts_at: float
    ends_at: float
    reason: str = ""
    created_by: str = ""
    matchers: dict[str, str] = field(default_factory=dict)
    """Label -> value (``data.branch``: ``main``); a value may use ``*`` globs."""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: dict[str, str], now: float) -> bool:
        return (self.active(now) and compile_pattern(self.pattern).matches(labels["type"])
                and all(fnmatch.fnmatchcase(labels.get(k, ""), v)
                        for k, v in self.matchers.items()))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Silence:
        return cls(id=str(raw["id"]), pattern=str(raw["pattern"]),
                   starts_at=float(raw["starts_at"]), ends_at=float(raw["ends_at"]),
                   reason=str(raw.get("reason", "")), created_by=str(raw.get("created_by", "")),
                   matchers={str(k): str(v) for k, v in (raw.get("matchers") or {}).items()})


@dataclass(frozen=True)
class Decision:
    """What happened (or, in a dry run, would happen) to an event on one route."""

    route: str
    receiver: str
    channels: tuple[str, ...]
    group: dict[str, str]
    outcome: str
    """``new``, ``grouped``, ``throttled``, ``silenced`` or ``inhibited``."""
    alert_id: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "receiver": self.receiver, "channels": list(self.channels),
                "group": self.group, "outcome": self.outcome, "alert": self.alert_id,
                "detail": self.detail}


@dataclass
class StormState:
    sent: list[float] = field(default_factory=list)
    digest: list[str] = field(default_factory=list)
    """Group keys of alerts waiting for the receiver's next digest."""

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "digest": self.digest}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StormState:
        return cls(sent=[float(x) for x in raw.get("sent", [])],
                   digest=[str(x) for x in raw.get("digest", [])])


@dataclass(frozen=True)
class Outgoing:
    """A notification to store in the ledger and deliver on ``channels``."""

    notification: dict[str, Any]
    channels: tuple[str, ...]


class AlertEngine:
    def __init__(self, config: AlertsConfig, *,
                 ack_url: Callable[[str], str | None] = lambda alert_id: None,
                 id_factory: Callable[[], str] = new_id) -> None:
        self.config = config
        self.ack_url = ack_url
        self.new_id = id_factory
        self.open: dict[str, Alert] = {}
        self.storm: dict[str, StormState] = {}
        self.dirty: set[str] = set()
        self.closed: dict[str, Alert] = {}
        """Group key -> alert closed since the last :meth:`take_changes`."""
        self.storm_dirty: set[str] = set()
        self.outbox: list[Outgoing] = []
        self._subscriptions: PatternIndex[str] = PatternIndex()
        for pattern in config.file.subscriptions:
            self._subscriptions.add(pattern, pattern)
        self._resolvers: PatternIndex[str] = PatternIndex()
        for pattern in config.file.resolve_on:
            self._resolvers.add(pattern, pattern)
        self._min_rank = SEVERITY_RANK[config.file.min_severity]

    # --- classification -------------------------------------------------------------------------
    def kind_of(self, event: Event) -> str | None:
        """``alert``, ``resolve`` or None (not for alerting: too mild, or not subscribed)."""
        if event.type.startswith(_IGNORED_PREFIX):
            return None  # the alerting pipeline's own events never page about themselves
        if self._subscriptions.match(event.type):
            if SEVERITY_RANK.get(event.severity, 1) >= self._min_rank:
                return "alert"
            return None
        if self._resolvers.match(event.type):
            return "resolve"
        return None

    def route(self, labels: dict[str, str]) -> list[Route]:
        return self.config.root.match(labels)

    # --- events -----------------------------------------------------------------------------------
    def evaluate(self, event: Event, *, now: float, silences: Iterable[Silence] = (),
                 apply: bool = True) -> list[Decision]:
        labels = event_labels(event)
        active = [s for s in silences if s.active(now)]
        decisions = []
        for route in self.route(labels):
            channels = tuple(self.config.receiver_channels(route.receiver))
            group = group_values(route.group_by, labels, event.id)
            key = group_key(route.id, group)
            silence = next((s for s in active if s.matches(labels, now)), None)
            if silence is not None:
                decisions.append(Decision(route.id, route.receiver, channels, group, "silenced",
                                          detail=f"silence {silence.id} until "
                                                 f"{iso(silence.ends_at)}: {silence.reason}"))
                continue
            inhibitor = self._inhibitor(labels)
            if inhibitor is not None:
                decisions.append(Decision(route.id, route.receiver, channels, group, "inhibited",
                                          detail=f"by firing alert {inhibitor.id} "
                                                 f"({inhibitor.severity})"))
                continue
            decisions.append(self._join(event, labels, route, group, key, channels, now=now,
                                        apply=apply))
        return decisions

    def _join(self, event: Event, labels: dict[str, str], route: Route, group: dict[str, str],
              key: str, channels: tuple[str, ...], *, now: float, apply: bool) -> Decision:
        dedupe_key = "|".join(labels.get(name, "") for name in route.dedupe_by)
        alert = self.open.get(key)
        event_epoch = epoch_of(event.time) or now
        if alert is not None and alert.status == "resolved":
            if apply:  # it fails again before its resolution was told: the same alert refires
                alert.status, alert.resolved_at, alert.resolved_by = "firing", None, None
            fresh = False
        else:
            fresh = alert is None
        if alert is None:
            alert_id = self.new_id()
            if not apply:
                return Decision(route.id, route.receiver, channels, group, "new", alert_id,
                                detail=f"first message after group_wait {route.group_wait:g}s")
            alert = Alert(id=alert_id, group_key=key, route_id=route.id,
                          receiver=route.receiver, group=group, labels=labels,
                          severity=event.severity, source=event.source, created_at=now,
                          first_event_at=event_epoch, last_event_at=event_epoch)
            self.open[key] = alert
        if not apply:
            seen = alert.dedupe.get(dedupe_key)
            if seen is not None and route.throttle_window and now - seen < route.throttle_window:
                return Decision(route.id, route.receiver, channels, group, "throttled", alert.id,
                                detail=f"{dedupe_key} seen {now - seen:.0f}s ago "
                                       f"(throttle_window {route.throttle_window:g}s)")
            due = next_flush_at(alert, route) if alert.pending else None
            return Decision(route.id, route.receiver, channels, group, "grouped", alert.id,
                            detail=f"joins alert {alert.id} ({alert.count} events); next message"
                                   f" {iso(due) if due else 'after group_interval'}")
        counted = alert.add(event, event_epoch=event_epoch, dedupe_key=dedupe_key,
                            throttle_window=route.throttle_window, now=now)
        self.dirty.add(key)
        outcome = "new" if fresh else ("grouped" if counted else "throttled")
        return Decision(route.id, route.receiver, channels, group, outcome, alert.id)

    def _inhibitor(self, labels: dict[str, str]) -> Alert | None:
        for rule in self.config.file.inhibit_rules:
            if not rule.target.matcher().matches(labels):
                continue
            source = rule.source.matcher()
            for alert in self.open.values():
                if alert.status != "firing":
                    continue
                their = {**alert.labels, "severity": alert.severity}
                if source.matches(their) and all(their.get(n, "") == labels.get(n, "")
                                                  for n in rule.equal):
                    return alert
        return None

    def resolve(self, event: Event, *, now: float, apply: bool = True) -> list[Alert]:
        """Resolve every firing alert whose group key this (success) event shares."""
        labels = event_labels(event)
        resolved = []
        for key, alert in list(self.open.items()):
            route = self.config.routes.get(alert.route_id)
            if alert.status != "firing" or route is None or "..." in route.group_by:
                continue
            if group_values(route.group_by, labels, event.id) != alert.group:
                continue
            resolved.append(alert)
            if not apply:
                continue
            alert.status, alert.resolved_at, alert.resolved_by = "resolved", now, event.id
            alert.pending = 0
            self.dirty.add(key)
            if not alert.notified and not alert.in_digest:
                self._close(key)
        return resolved

    # --- time -------------------------------------------------------------------------------------
    def tick(self, now: float, *, acked: dict[str, tuple[float, str]] | None = None) -> None:
        """Queue what is due at ``now``: group messages (storm-limited per receiver), digests,
        escalations, resolutions; close what is over. ``acked``: alert id -> (time, by)."""
        for alert in self.open.values():
            ack = (acked or {}).get(alert.id)
            if ack is not None and alert.acked_at is None:
                alert.acked_at, alert.acked_by = ack
                self.dirty.add(alert.group_key)
        for key, alert in list(self.open.items()):
            route = self.config.routes.get(alert.route_id, self.config.root)
            self._escalate(alert, route, now)
            due = next_flush_at(alert, route)
            if due is not None and due <= now:
                self._flush(alert, now)
            if self._finished(alert, route, now):
                self._close(key)
        for receiver in list(self.storm):
            self._maybe_digest(receiver, now)

    def _flush(self, alert: Alert, now: float) -> None:
        kind = ("resolved" if alert.status == "resolved"
                else "firing" if alert.pending or not alert.notified else "repeat")
        storm = self.config.storm(alert.receiver)
        state = self.storm.setdefault(alert.receiver, StormState())
        if kind != "resolved" and not storm_admits(state.sent, storm.max_messages,
                                                   storm.window, now):
            alert.in_digest = True
            alert.pending = 0
            state.digest.append(alert.group_key)
            self.storm_dirty.add(alert.receiver)
            self.dirty.add(alert.group_key)
            return
        notified = alert.notified + 1
        self._send(f"{alert.id}.{notified}", kind, alert.receiver, [alert], now)
        alert.notified, alert.last_notified_at, alert.pending = notified, now, 0
        if kind == "resolved":
            alert.resolved_notified = True
        self.dirty.add(alert.group_key)

    def _maybe_digest(self, receiver: str, now: float) -> None:
        state = self.storm[receiver]
        storm = self.config.storm(receiver)
        state.sent = [t for t in state.sent if now - t < max(storm.window, 1.0)]
        if not state.digest or storm_reopens_at(state.sent, storm.max_messages, storm.window,
                                                now) > now:
            return
        alerts = [self.open[k] for k in dict.fromkeys(state.digest) if k in self.open]
        state.digest = []
        self.storm_dirty.add(receiver)
        if not alerts:
            return
        self._send(f"digest.{self.new_id()}", "digest", receiver, alerts, now)
        for alert in alerts:
            alert.in_digest = False
            alert.notified += 1
            alert.last_notified_at = now
            if alert.status == "resolved":
                alert.resolved_notified = True
            self.dirty.add(alert.group_key)

    def _escalate(self, alert: Alert, route: Route, now: float) -> None:
        due = escalation_due_at(alert, route)
        if due is None or due > now or route.escalate_to is None:
            return
        alert.escalated_at = now
        self.dirty.add(alert.group_key)
        self._send(f"{alert.id}.escalation", "escalation", route.escalate_to, [alert], now)

    def _send(self, notification_id: str, kind: str, receiver: str, alerts: list[Alert],
              now: float) -> None:
        channels = tuple(self.config.receiver_channels(receiver))
        state = self.storm.setdefault(receiver, StormState())
        state.sent.append(now)
        self.storm_dirty.add(receiver)
        ordered = sorted(alerts, key=lambda a: (-SEVERITY_RANK.get(a.severity, 1), -a.count))
        shown, hidden = ordered[:DIGEST_MAX_ALERTS], ordered[DIGEST_MAX_ALERTS:]
        notification = {
            "id": notification_id, "kind": kind, "receiver": receiver, "created_at": now,
            "alerts": [a.snapshot(self.ack_url(a.id)) for a in shown],
            "alert_ids": [a.id for a in alerts],
            "more_alerts": len(hidden), "more_events": sum(a.count for a in hidden),
        }
        if channels:  # the log-only receiver: alerts.jsonl has it all already
            self.outbox.append(Outgoing(notification, channels))

    def _finished(self, alert: Alert, route: Route, now: float) -> bool:
        if alert.in_digest:
            return False
        if alert.status == "resolved":
            return next_flush_at(alert, route) is None
        quiet = now - max(alert.last_event_at, alert.created_at)
        if alert.acked_at is not None:
            return quiet > ACKED_CLOSE_AFTER
        return quiet > QUIET_CLOSE_AFTER

    def _close(self, key: str) -> None:
        alert = self.open.pop(key, None)
        if alert is not None:
            self.closed[key] = alert

    def next_due(self) -> float | None:
        """The earliest time anything is due (to size the consumer's blocking read)."""
        times = []
        for alert in self.open.values():
            route = self.config.routes.get(alert.route_id, self.config.root)
            for due in (next_flush_at(alert, route), escalation_due_at(alert, route)):
                if due is not None:
                    times.append(due)
        for receiver, state in self.storm.items():
            if state.digest:
                storm = self.config.storm(receiver)
                times.append(storm_reopens_at(state.sent, storm.max_messages, storm.window,
                                              min(state.sent, default=0.0)))
        return min(times) if times else None

    def take_changes(self) -> tuple[list[Alert], dict[str, Alert], dict[str, StormState],
                                    list[Outgoing]]:
        """What changed since the last call: (changed open alerts, closed group key -> alert,
        storm states, notifications to queue); the engine forgets them."""
        changed = [self.open[k] for k in self.dirty if k in self.open]
        closed_alerts = dict(self.closed)
        storm = {r: self.storm[r] for r in self.storm_dirty if r in self.storm}
        outbox = self.outbox
        self.dirty, self.closed, self.storm_dirty, self.outbox = set(), {}, set(), []
        return changed, closed_alerts, storm, outbox
