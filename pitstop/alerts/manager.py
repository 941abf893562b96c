"""The alert manager: reads the bus in its own consumer group and runs the engine.

One manager leads at a time (a Redis lock, renewed; the others stand by and take over within
``leader_ttl``): grouping is stateful, and one writer keeps it simple and correct. Every step:
read events (its own pending ones first after a restart, then new), write each alerting event to
``.state/alerts.jsonl`` *first*, decide, let time pass (group waits, intervals, digests,
escalations), commit it all in one transaction fenced by the lock, then acknowledge the events
and queue the deliveries. Overdue deliveries in the ledger are queued again (the sweeper).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis

from pitstop.alerts.ack import AckLinks
from pitstop.alerts.config import AlertsConfig
from pitstop.alerts.engine import AlertEngine, Decision, Silence
from pitstop.alerts.store import AlertStore, LeaderLost
from pitstop.bus.consumer import Delivery, GroupConsumer
from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event
from pitstop.kernel.constants import ALERTS_GROUP, EVENT_ALERTING_DEGRADED
from pitstop.kernel.errors import RedisUnavailable
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog

__all__ = ["AlertManager"]

log = logging.getLogger(__name__)

BATCH = 50
MAX_BLOCK_MS = 500
SWEEP_EVERY = 1.0
ACK_POLL_EVERY = 1.0


class AlertManager:
    def __init__(self, config: AlertsConfig, bus: EventBus, store: AlertStore, *,
                 enqueue: Callable[[str], None], clock: Callable[[], float],
                 alert_log: StateLog, activity_log: StateLog | None = None,
                 name: str = "alerts", ack_links: AckLinks | None = None,
                 redactor: Redactor | None = None) -> None:
        self.config = config
        self.bus = bus
        self.store = store
        self.enqueue = enqueue
        self.clock = clock
        self.alert_log = alert_log
        self.activity_log = activity_log
        self.name = name
        self.ack_links = ack_links
        self.redactor = redactor if redactor is not None else alert_log.redactor
        self.token = f"{name}/{uuid.uuid4().hex[:12]}"
        self.leading = False
        self.engine = self._new_engine(config)
        self.consumer: GroupConsumer = bus.consumer(ALERTS_GROUP, name)
        self._renewed = 0.0
        self._swept = 0.0
        self._acks_polled = 0.0
        self._next_config: AlertsConfig | None = None
        self._log_refused: str | None = None

    def _new_engine(self, config: AlertsConfig) -> AlertEngine:
        def ack_url(alert_id: str) -> str | None:
            return None if self.ack_links is None else self.ack_links.url(alert_id,
                                                                          now=self.clock())

        return AlertEngine(config, ack_url=ack_url)

    def reconfigure(self, config: AlertsConfig) -> None:
        """Use ``config`` from the next step on, keeping the open alerts (any thread may call
        this: the swap happens between steps, never in the middle of one)."""
        self._next_config = config

    def _apply_config(self) -> None:
        config, self._next_config = self._next_config, None
        if config is None:
            return
        engine = self._new_engine(config)
        engine.open, engine.storm = self.engine.open, self.engine.storm
        self.config, self.engine = config, engine

    # --- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Lead (or stand by) until ``stop``; Redis outages are waited out, logged once."""
        down = False
        while not stop.is_set():
            try:
                if not self.step():
                    stop.wait(max(0.2, self.config.file.leader_ttl / 3))
                if down:
                    log.info("alert manager: Redis answers again")
                    down = False
            except (RedisUnavailable, redis.RedisError) as exc:
                if not down:
                    log.warning("alert manager: Redis unavailable (%s); retrying", exc)
                down = True
                self.leading = False
                stop.wait(1.0)
            except Exception:
                log.exception("alert manager step failed; retrying")
                self.leading = False
                stop.wait(1.0)
        if self.leading:
            try:
                self.store.release(self.token)
            except Exception:
                log.debug("could not release the alert manager lock", exc_info=True)

    def step(self, *, block_ms: int | None = None) -> bool:
        """One round; False when another manager leads (nothing was done)."""
        self._apply_config()
        if not self._lead():
            return False
        now = self.clock()
        if block_ms is None:
            due = self.engine.next_due()
            block_ms = MAX_BLOCK_MS if due is None else int(min(MAX_BLOCK_MS,
                                                                max(5, (due - now) * 1000)))
        batch = self.consumer.reclaim(BATCH)
        wanted = BATCH - len(batch)
        if wanted > 0:
            batch += self.consumer.read(wanted, 0 if batch else block_ms)
        now = self.clock()
        handled, marked = self._handle(batch, now)
        if now - self._acks_polled >= ACK_POLL_EVERY:
            self._acks_polled = now
            waiting = [a.id for a in self.engine.open.values()
                       if a.status == "firing" and a.acked_at is None]
            acked = self.store.acks(waiting)
        else:
            acked = {}
        self.engine.tick(now, acked=acked)
        self._commit(handled, marked, now)
        if now - self._swept >= SWEEP_EVERY:
            self._swept = now
            self.sweep(now)
        return True

    def _lead(self) -> bool:
        ttl = self.config.file.leader_ttl
        wall = time.monotonic()
        if self.leading and wall - self._renewed < ttl / 3:
            return True
        held = self.store.acquire(self.token, ttl)
        if held and not self.leading:
            self.engine.open, self.engine.storm = self.store.load_open()
            log.info("alert manager %s leads (%d open alerts)", self.token,
                     len(self.engine.open))
        elif not held and self.leading:
            log.warning("alert manager %s lost the lead", self.token)
        self.leading = held
        if held:
            self._renewed = wall
        return held

    def _handle(self, batch: list[Delivery], now: float) -> tuple[list[Delivery], list[str]]:
        """Handle a batch; returns (the deliveries to acknowledge, the ids of the events that
        mattered: only those are remembered as seen, so the bus's other traffic costs nothing)."""
        if not batch:
            return [], []
        relevant = [d.event.id for d in batch if self.engine.kind_of(d.event) is not None]
        if not relevant:
            return batch, []
        wanted = set(relevant)
        seen = self.store.seen(relevant)
        silences = self.store.silences(now=now)  # fresh for every batch that matters
        handled, marked = [], []
        for delivery in batch:
            event = delivery.event
            if event.id not in seen:
                try:
                    self.handle(event, now=now, silences=silences)
                except Exception:
                    log.exception("alert manager could not handle %s %s; left pending",
                                  event.type, event.id)
                    continue
            if event.id in wanted:
                marked.append(event.id)
            handled.append(delivery)
        return handled, marked

    def handle(self, event: Event, *, now: float, silences: list[Silence]) -> list[Decision]:
        kind = self.engine.kind_of(event)
        if kind is not None and event.data and self.redactor is not None:
            # What reaches a message or the log never holds a secret, whoever published it.
            event = replace(event, data=self.redactor.redact(event.data))
        if kind == "alert":
            decisions = self.engine.evaluate(event, now=now, silences=silences)
            self._log_alert({
                "kind": "alert", "event": event.to_dict(), "severity": event.severity,
                "decisions": [d.to_dict() for d in decisions]})
            return decisions
        if kind == "resolve":
            for alert in self.engine.resolve(event, now=now):
                self._log_alert({
                    "kind": "resolved", "alert": alert.id, "by_event": event.id,
                    "type": event.type, "group": alert.group, "count": alert.count})
        return []

    def _commit(self, handled: list[Delivery], marked: list[str], now: float) -> None:
        changed, closed, storm, outbox = self.engine.take_changes()
        if not (changed or closed or storm or outbox or handled):
            return
        try:
            deliveries = self.store.commit(
                self.token, changed=changed, closed=closed, storm=storm, outbox=outbox,
                seen=marked, now=now,
                requeue_after=self.config.file.delivery.requeue_after)
        except LeaderLost:
            log.warning("alert manager %s lost the lead before committing; another takes over",
                        self.token)
            self.leading = False
            return
        self.consumer.ack(*handled)
        for item in outbox:
            self._activity({"kind": "notification", "notification": item.notification["id"],
                            "type": item.notification["kind"],
                            "receiver": item.notification["receiver"],
                            "channels": list(item.channels),
                            "alerts": item.notification["alert_ids"]})
        for did in deliveries:
            self._enqueue(did)

    def sweep(self, now: float) -> list[str]:
        """Queue again the deliveries overdue in the ledger (lost messages, expired leases)."""
        overdue = self.store.ledger.overdue(now)
        for did in overdue:
            self._enqueue(did)
        self.store.ledger.postpone(overdue, now + self.config.file.delivery.requeue_after)
        return overdue

    def _enqueue(self, did: str) -> None:
        try:
            self.enqueue(did)
        except Exception:
            # The ledger keeps it: the sweeper queues it again after requeue_after.
            log.exception("could not queue alert delivery %s; the sweeper will retry", did)

    def _log_alert(self, record: dict[str, Any]) -> None:
        """Write ``record`` to ``.state/alerts.jsonl``. A disk that refuses it (full, over a
        file-size limit, read-only) is said once, in one line and one ``alerting.degraded``
        event, and alerting goes on without its log: delivering the alert matters more than
        its record, and retrying the event would only fail again."""
        try:
            self.alert_log.append(record)
        except OSError as exc:
            if self._log_refused is None:
                self._log_refused = reason = f"cannot write {self.alert_log.path}: " \
                                             f"{exc.strerror or exc}"
                log.error("alert manager: %s; alerts are still delivered, without their log "
                          "line, until it can write again", reason)
                try:
                    self.bus.publish(EVENT_ALERTING_DEGRADED, {
                        "severity": "warning", "reason": reason,
                        "log": str(self.alert_log.path)}, source="pitstop-alerts")
                except Exception:
                    log.exception("could not publish %s", EVENT_ALERTING_DEGRADED)
            return
        if self._log_refused is not None:
            log.info("alert manager: %s is written again", self.alert_log.path)
            self._log_refused = None

    def _activity(self, record: dict[str, Any]) -> None:
        if self.activity_log is not None:
            try:
                self.activity_log.append(record)
            except OSError:
                log.exception("could not write the alert activity log")
