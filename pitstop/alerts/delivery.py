"""One attempt at one delivery (the body of the ``send_alert`` task, without Celery).

Claim the ledger record, respect the shared rate limit and any 429 block, send, record the
outcome. A failure is retried with exponential backoff and jitter (or after ``Retry-After``)
until ``max_attempts``; then the channel's ``fallback`` gets the notification and
``alerting.degraded`` is published.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pitstop.alerts import channels as channels_module
from pitstop.alerts.config import AlertsConfig, ChannelModel, SlackChannel, WebhookChannel
from pitstop.alerts.ledger import DeliveryLedger
from pitstop.alerts.store import AlertStore
from pitstop.alerts.timing import backoff_delay
from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import ALERT_DELIVERED_PREFIX, EVENT_ALERTING_DEGRADED
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog

__all__ = ["Deliverer", "Outcome"]

log = logging.getLogger(__name__)

COUNTS_AS_DELIVERY = frozenset({"firing", "repeat", "digest", "escalation"})
Sender = Callable[[ChannelModel, dict[str, Any], Callable[[], bool]],
                  channels_module.SendResult]


@dataclass
class Outcome:
    state: str
    """``delivered``, ``retry``, ``failed``, ``in_doubt`` or ``skipped``."""
    retry_in: float | None = None
    detail: str = ""
    enqueue: list[str] = field(default_factory=list)
    """Deliveries to queue now (a fallback)."""


class Deliverer:
    def __init__(self, config: AlertsConfig, store: AlertStore, *, clock: Callable[[], float],
                 redactor: Redactor, bus: EventBus | None = None,
                 activity: StateLog | None = None, sender: Sender = channels_module.send,
                 rng: Callable[[], float] = random.random,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.store = store
        self.ledger: DeliveryLedger = store.ledger
        self.clock = clock
        self.redactor = redactor
        for secret in config.secrets:
            redactor.add_secret(secret)
        self.bus = bus
        self.activity = activity
        self.sender = sender
        self.rng = rng
        self.monotonic = monotonic
        """Measures the send, so ``clock`` (Redis's TIME) is read once per attempt."""

    def attempt(self, did: str) -> Outcome:
        settings = self.config.file.delivery
        now = self.clock()
        token = uuid.uuid4().hex
        channel_name = did.rpartition(":")[2]
        channel = self.config.file.channels.get(channel_name)
        url = channels_module.channel_url(channel) if channel is not None else None
        rate = None
        if url is not None and isinstance(channel, SlackChannel | WebhookChannel):
            limit = channel.rate_limit
            rate = (url, limit.per_second if limit else None, limit.burst if limit else 1)
        claim = self.ledger.claim(did, token, now=now, lease=settings.lease, rate=rate)
        if claim.outcome == "now_in_doubt":
            self.ledger.count("in_doubt", now=now)
            detail = ("the worker sending it stopped after the message may have gone out: "
                      "not sent again (see the log)")
            self._record(did, "in_doubt", detail=detail)
            log.warning("alert delivery %s is in doubt: %s", did, detail)
            return Outcome("in_doubt", detail=detail)
        if claim.outcome == "rate" and claim.next_at is not None:
            return Outcome("retry", retry_in=claim.next_at, detail="rate limited")
        if claim.outcome != "claimed":
            return Outcome("skipped", detail=claim.outcome)
        started = self.monotonic()
        notification = claim.notification
        if channel is None or notification is None:
            why = ("channel no longer configured" if channel is None
                   else "notification expired from Redis")
            self.ledger.finish(did, token, "failed", now=now, error=why, count="failed")
            self._record(did, "failed", channel=channel_name, detail=why)
            return Outcome("failed", detail=why)
        try:
            result = self.sender(channel, notification,
                                 lambda: self.ledger.mark_posting(did, token))
        except Exception as exc:  # a bug of ours must not leave the delivery hanging
            log.exception("sending alert delivery %s failed", did)
            result = channels_module.SendResult(False, error=f"internal error: "
                                                f"{type(exc).__name__}")
        done = now + (self.monotonic() - started)
        if result.ok:
            alert_ids = (notification.get("alert_ids", [])
                         if notification.get("kind") in COUNTS_AS_DELIVERY else [])
            self.ledger.finish(did, token, "delivered", now=done, count="delivered",
                               first_delivery_keys=[ALERT_DELIVERED_PREFIX + i
                                                    for i in alert_ids],
                               first_delivery=json.dumps({"at": done,
                                                          "channel": channel_name}))
            self._record(did, "delivered", channel=channel_name, attempt=claim.attempt,
                         latency=round(done - float(notification.get("created_at", done)), 3))
            return Outcome("delivered")
        error = self.redactor.redact_text(result.error)
        if result.retry_after is not None and url is not None:
            self.ledger.block(url, until=done + result.retry_after, now=done)
        max_attempts = channel.max_attempts or settings.max_attempts
        if not result.permanent and claim.attempt < max_attempts:
            delay = (result.retry_after if result.retry_after is not None else
                     backoff_delay(claim.attempt, base=settings.backoff_base,
                                   cap=settings.backoff_max, rng=self.rng))
            self.ledger.finish(did, token, "retrying", now=done, next_at=done + delay,
                               error=error, requeue_after=settings.requeue_after,
                               count="retries")
            self._record(did, "retrying", channel=channel_name, attempt=claim.attempt,
                         detail=error, retry_in=round(delay, 3))
            return Outcome("retry", retry_in=delay, detail=error)
        self.ledger.finish(did, token, "failed", now=done, error=error, count="failed")
        self._record(did, "failed", channel=channel_name, attempt=claim.attempt, detail=error)
        return self._fall_back(did, channel_name, channel, notification, error, done)

    def _fall_back(self, did: str, channel_name: str, channel: ChannelModel,
                   notification: dict[str, Any], error: str, now: float) -> Outcome:
        outcome = Outcome("failed", detail=error)
        fallback = channel.fallback
        if fallback is not None:
            new = self.ledger.add_delivery(notification["id"], fallback, now=now,
                                           requeue_after=self.config.file.delivery.requeue_after,
                                           fallback_of=did,
                                           receiver=str(notification.get("receiver", "")))
            if new is not None:
                outcome.enqueue.append(new)
                self.ledger.count("fallbacks", now=now)
        if self.bus is not None:
            try:
                self.bus.publish(EVENT_ALERTING_DEGRADED, self.redactor.redact({
                    "severity": "warning", "channel": channel_name, "fallback": fallback,
                    "notification": notification.get("id"), "reason": error}),
                    source="pitstop-alerts")
            except Exception:
                log.exception("could not publish %s", EVENT_ALERTING_DEGRADED)
        return outcome

    def _record(self, did: str, state: str, **fields: Any) -> None:
        if self.activity is None:
            return
        try:
            self.activity.append({"kind": "delivery", "delivery": did, "state": state, **fields})
        except OSError:
            log.exception("could not write the alert activity log")
